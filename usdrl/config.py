"""params.yaml as typed sections: one dataclass per section, unknown keys are errors, profiles override.

The top-level sections hold the released (paper) settings; ``profiles.<name>`` overrides any of
them; ``profile`` names the default profile. ``load_params(path, profile, overrides)`` applies the
profile, then ``section.key=value`` overrides (values parsed as YAML).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from usdrl.skeleton import MODALITIES

DEFAULT_PARAMS_FILE = Path("params.yaml")  # read when no params file is named and it exists


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ModelSection:
    """The encoder's architecture: backbone, sizes, DSA gap, drop path, clip length.

    The encoder is built from this section and the dataset's skeleton layout (usdrl.model.SkeletonModel)."""

    backbone: str = "dste"  # a name in usdrl.model.BACKBONES
    hidden_size: int = 1024
    num_heads: int = 1
    num_layers: int = 2
    alpha: float = 0.5  # weight of CA against DSA in a DST layer
    gap: int = 4  # DenseShift keeps every gap-th position
    kernel_size: int = 1
    drop_path: float = 0.1
    clip_frames: int = 64


@dataclass(frozen=True)
class AugmentSection:
    """How pretraining views are made: view count, crop range and length, corrupted joints."""

    views: int = 4
    crop_scale: tuple[float, float] = (0.1, 1.0)
    minimum_crop: int = 64
    corrupted_joints: int = 15


@dataclass(frozen=True)
class LossSection:
    """The weights and constants of the pretraining loss (usdrl.losses.mgfd_loss)."""

    form: str = "released"
    similarity_weight: float = 5.0
    variance_covariance_weight: float = 1.0
    cross_correlation_weight: float = 1e-3
    tau: float = 0.5
    variance_weight: float = 5.0
    off_diagonal_weight: float = 0.005
    invariance_weight: float = 1e-3
    epsilon: float = 1e-4


@dataclass(frozen=True)
class PretrainSection:
    """The pretraining run: schedule, optimiser, checkpoints, modality, device, precision, seed, logging."""

    epochs: int = 451
    batch_size: int = 356
    learning_rate: float = 5e-4
    weight_decay: float = 1e-5
    milestones: tuple[int, ...] = (351,)
    learning_rate_decay: float = 0.1
    checkpoint_every: int = 50
    modality: str = "joint"
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where supported, fp16 + scaler on other GPUs, fp32 on CPU
    workers: int = 4
    seed: int = 0
    log_every: int = 50  # steps between JSON log lines (and one at every epoch end)


@dataclass(frozen=True)
class ProbeSection:
    """The linear probe on frozen features: schedule, learning rates by dataset, validation, normalisation."""

    epochs: int = 160
    batch_size: int = 512
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (120, 140)
    learning_rate_decay: float = 0.1
    # looked up as backbone/dataset/benchmark, then dataset/benchmark, then default (SPEC.md 5)
    learning_rates: dict = field(default_factory=lambda: {
        "default": 0.006, "ntu60/xview": 0.03, "pku2/xsub": 0.01, "sttr/ntu60/xsub": 0.03})
    validation_fraction: float = 0.0  # > 0: hold out this part of the training subjects for model selection
    seed: int = 0
    # "none" (released): the raw features. Both others use the training split's statistics only and make the
    # learning rate independent of the features' scale and offset: "center_scale" subtracts the mean and divides
    # every dimension by one scale (the root mean variance), keeping their relative sizes; "standardize" scales
    # each dimension to unit variance (a BatchNorm without affine parameters), which also amplifies dimensions
    # that hardly vary (measured: STTR synthetic probe 49.8 with center_scale, 33.5 with standardize).
    # Applied by usdrl.evaluate.linear (FEATURE_NORMALIZATIONS).
    feature_normalization: str = "none"

    def learning_rate(self, backbone: str, dataset: str, benchmark: str) -> float:
        for key in (f"{backbone}/{dataset}/{benchmark}", f"{dataset}/{benchmark}", "default"):
            if key in self.learning_rates:
                return float(self.learning_rates[key])
        raise ConfigError("probe.learning_rates needs a 'default' entry")


@dataclass(frozen=True)
class RetrievalSection:
    """kNN retrieval on frozen features: the k values and the chunk size of the similarity matrix."""

    k: tuple[int, ...] = (1,)
    chunk_size: int = 4096


@dataclass(frozen=True)
class FinetuneSection:
    """Semi-supervised fine-tuning: labelled fractions, seeds, schedule, layer decay and its augmentation."""

    fractions: tuple[float, ...] = (0.01, 0.1)
    seeds: tuple[int, ...] = (0,)
    epochs: int = 100
    warmup_epochs: int = 5
    batch_size: int = 24
    learning_rate: float = 5e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.8
    label_smoothing: float = 0.1
    crop_scale: tuple[float, float] = (0.5, 1.0)
    rotation_radians: float = 0.3


@dataclass(frozen=True)
class EnsembleSection:
    """usdrl ensemble's defaults: the score files are given in the order of ``streams``, ``weights`` one per stream."""

    streams: tuple[str, ...] = ("joint", "bone", "motion")
    weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    normalise: str = "none"


@dataclass(frozen=True)
class DetectionSection:
    """Dense action detection: the frame head's training, proposal rule and mAP thresholds."""

    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 0.0
    stride: int = 32
    random_offset: bool = True
    proposal_rule: str = "threshold"
    threshold: float = 0.02
    smoothing_window: int = 20
    activity: float = 0.4
    thetas: tuple[float, ...] = (0.1, 0.3, 0.5)
    modality: str = "joint"
    seed: int = 0


@dataclass(frozen=True)
class AblationSection:
    """The alpha and loss-term ablations: the values tried and their shorter pretraining schedule."""

    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    loss_variants: tuple[str, ...] = ("none", "vac_mg", "vac_xc", "all")
    epochs: int = 451
    milestones: tuple[int, ...] = (351,)


@dataclass(frozen=True)
class PipelineSection:
    """What ``dvc repro`` runs; dvc.yaml expands its stages over these names."""

    runs: dict = field(default_factory=dict)  # name -> {dataset, benchmark, backbone, modality}
    ensembles: dict = field(default_factory=dict)  # name -> {dataset, benchmark, joint, bone, motion}
    semi_supervised: dict = field(default_factory=dict)  # run name -> its settings, as in runs
    detection: dict = field(default_factory=dict)  # name -> {run, dataset, benchmark}
    embeddings: dict = field(default_factory=dict)  # run name -> its settings, as in runs
    ablations: dict = field(default_factory=dict)  # name -> {dataset, benchmark}


@dataclass(frozen=True)
class EvaluationSection:
    """What every evaluation shares: device, precision, feature batch size and the feature cache."""

    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 256
    cache_dir: str = "cache/features"


@dataclass(frozen=True)
class SyntheticSection:
    """The synthetic demo dataset: its seed, number of subjects and replications."""

    seed: int = 0
    subjects: int = 12
    replications: int = 2


@dataclass(frozen=True)
class UTKinectSection:
    """Where the pipeline reads UTKinect-Action3D from (relative: from the project root)."""

    raw: str = "../shared/data/utkinect"  # the folder of joints_sSS_eEE.txt and actionLabel.txt
    labels: str = "original"  # original: actionLabel.txt; modified: actionLabel_modified.txt


@dataclass(frozen=True)
class DataSection:
    """Where prepared datasets live and how the demo datasets are made or read."""

    root: str = "data"
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    utkinect: UTKinectSection = field(default_factory=UTKinectSection)


@dataclass(frozen=True)
class Params:
    """Every setting of params.yaml, one section per concern; unknown keys in any section are an error."""

    profile: str = "paper"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    loss: LossSection = field(default_factory=LossSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    probe: ProbeSection = field(default_factory=ProbeSection)
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    detection: DetectionSection = field(default_factory=DetectionSection)
    ablation: AblationSection = field(default_factory=AblationSection)
    pipeline: PipelineSection = field(default_factory=PipelineSection)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Allowed:
    """What values a setting may take (every item of a list setting): one of ``choices``, a string matching
    ``pattern`` (described by ``meaning``), or a number within ``low`` and ``high`` (each bound included or not)."""

    choices: tuple = ()
    pattern: str = ""
    meaning: str = ""
    low: float | None = None
    high: float | None = None
    low_included: bool = True
    high_included: bool = True

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is allowed."""
        for item in value if isinstance(value, tuple) else (value,):
            if self.choices and item not in self.choices:
                return f"one of {', '.join(map(str, self.choices))}"
            if self.pattern and not (isinstance(item, str) and re.fullmatch(self.pattern, item)):
                return self.meaning
            too_low = self.low is not None and (item < self.low if self.low_included else item <= self.low)
            too_high = self.high is not None and (item > self.high if self.high_included else item >= self.high)
            if too_low or too_high:
                bounds = []
                if self.low is not None:
                    bounds.append(f"{'at least' if self.low_included else 'greater than'} {self.low}")
                if self.high is not None:
                    bounds.append(f"{'at most' if self.high_included else 'below'} {self.high}")
                return " and ".join(bounds)
        return None


def _at_least(low: int) -> Allowed:
    return Allowed(low=low)


def _fraction(low_included: bool = True, high_included: bool = True) -> Allowed:
    """A number from 0 to 1, either end included or not."""
    return Allowed(low=0, high=1, low_included=low_included, high_included=high_included)


DEVICE = Allowed(pattern=r"auto|cpu|cuda(:\d+)?", meaning="auto, cpu, cuda or cuda:N (GPU N)")


# The allowed values of the settings that have limits, checked whenever a section is built (params.yaml, a
# profile, a dataset's settings, --set); a setting not listed takes any value of its type.
ALLOWED: dict[tuple[type, str], Allowed] = {
    **{(ModelSection, name): _at_least(1) for name in ("hidden_size", "num_heads", "num_layers", "gap", "kernel_size")},
    (ModelSection, "backbone"): Allowed(choices=("dste", "sttr")),
    (ModelSection, "alpha"): _fraction(),
    (ModelSection, "drop_path"): _fraction(high_included=False),
    (ModelSection, "clip_frames"): Allowed(low=1, high=200),  # usdrl.model.MAX_TEMPORAL_POSITIONS
    (AugmentSection, "views"): _at_least(2),
    (AugmentSection, "crop_scale"): _fraction(low_included=False),
    (AugmentSection, "minimum_crop"): _at_least(1),
    (AugmentSection, "corrupted_joints"): _at_least(0),
    (LossSection, "form"): Allowed(choices=("released", "paper")),
    **{(LossSection, name): _at_least(0) for name in ("similarity_weight", "variance_covariance_weight",
                                                       "cross_correlation_weight", "variance_weight",
                                                       "off_diagonal_weight", "invariance_weight", "epsilon",
                                                       "tau")},  # tau 0: the ablation without XC
    (PretrainSection, "epochs"): _at_least(1),
    (PretrainSection, "batch_size"): _at_least(2),  # BatchNorm needs two samples
    **{(PretrainSection, name): _at_least(0) for name in ("learning_rate", "weight_decay", "milestones",
                                                           "learning_rate_decay", "workers", "log_every")},
    (PretrainSection, "checkpoint_every"): _at_least(1),
    (PretrainSection, "modality"): Allowed(choices=MODALITIES),
    (PretrainSection, "device"): DEVICE,
    (PretrainSection, "precision"): Allowed(choices=PRECISIONS),
    (EvaluationSection, "device"): DEVICE,
    (EvaluationSection, "precision"): Allowed(choices=PRECISIONS),
    (EvaluationSection, "batch_size"): _at_least(1),
    **{(ProbeSection, name): _at_least(1) for name in ("epochs", "batch_size")},
    **{(ProbeSection, name): _at_least(0) for name in ("weight_decay", "milestones", "learning_rate_decay")},
    (ProbeSection, "momentum"): _fraction(),
    (ProbeSection, "validation_fraction"): _fraction(high_included=False),
    (ProbeSection, "feature_normalization"): Allowed(choices=("none", "center_scale", "standardize")),
    (RetrievalSection, "k"): _at_least(1),
    (RetrievalSection, "chunk_size"): _at_least(1),
    (FinetuneSection, "fractions"): _fraction(low_included=False),
    **{(FinetuneSection, name): _at_least(1) for name in ("epochs", "batch_size")},
    **{(FinetuneSection, name): _at_least(0) for name in ("warmup_epochs", "learning_rate", "weight_decay",
                                                           "layer_decay", "rotation_radians")},
    (FinetuneSection, "label_smoothing"): _fraction(high_included=False),
    (FinetuneSection, "crop_scale"): _fraction(low_included=False),
    (EnsembleSection, "streams"): Allowed(choices=MODALITIES),
    (EnsembleSection, "normalise"): Allowed(choices=("none", "softmax")),
    (DetectionSection, "epochs"): _at_least(0),  # 0: the untrained detector, a baseline
    **{(DetectionSection, name): _at_least(1) for name in ("batch_size", "stride", "smoothing_window")},
    **{(DetectionSection, name): _at_least(0) for name in ("learning_rate", "weight_decay")},
    (DetectionSection, "momentum"): _fraction(),
    (DetectionSection, "proposal_rule"): Allowed(choices=("threshold", "smoothed")),
    (DetectionSection, "thetas"): _fraction(low_included=False),
    (DetectionSection, "modality"): Allowed(choices=MODALITIES),
    (AblationSection, "alphas"): _fraction(),
    (AblationSection, "loss_variants"): Allowed(choices=("none", "vac_mg", "vac_xc", "all")),
    (AblationSection, "epochs"): _at_least(1),
    (AblationSection, "milestones"): _at_least(0),
    (UTKinectSection, "labels"): Allowed(choices=("original", "modified")),
}


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is tuple:
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
            return f"a list of {plural.get(arguments[0], _describe(arguments[0]))}"
        return f"a list of {len(arguments)} values ({', '.join(_describe(a) for a in arguments)})"
    return getattr(hint, "__name__", str(hint))


def _check_value(hint: Any, value: Any, key: str, source: str) -> Any:
    """``value`` checked against the field type ``hint`` (lists become tuples, ints become floats where a
    float belongs); a ConfigError naming ``key`` otherwise."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(hint)
        if value is None and type(None) in arguments:
            return None
        hint = next(argument for argument in arguments if argument is not type(None))
        origin = typing.get_origin(hint)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            try:
                return float(value)
            except ValueError:
                pass
    if hint is str and isinstance(value, str):
        return value
    if (hint is dict or origin is dict) and isinstance(value, dict):
        return copy.deepcopy(value)
    if origin is tuple and isinstance(value, (list, tuple)):
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_check_value(arguments[0], item, f"{key}[{i}]", source) for i, item in enumerate(value))
        if len(value) == len(arguments):
            return tuple(_check_value(a, item, f"{key}[{i}]", source) for i, (a, item) in enumerate(zip(arguments, value)))
    raise ConfigError(f"{source(key)}: {key} must be {_describe(hint)}, got {value!r}")


def _build(cls: type, values: Any, where: str, source: Callable[[str], str]) -> Any:
    """The dataclass ``cls`` from a mapping, every value type-checked, sections found from the type hints."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source(where)}: {where or 'the file'} must be a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    built = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else str(name)
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            advice = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(names)}"
            raise ConfigError(f"{source(key)}: unknown key {key!r}; {advice}")
        built[name] = _check_value(hints[name], value, key, source)
        allowed = ALLOWED.get((cls, name))
        problem = allowed.problem(built[name]) if allowed else None
        if problem:
            raise ConfigError(f"{source(key)}: {key} must be {problem}, got {value!r}")
    if cls is EnsembleSection and len(built.get("weights", EnsembleSection.weights)) != len(
            built.get("streams", EnsembleSection.streams)):
        raise ConfigError(f"{source(where + '.weights')}: ensemble.weights must hold one weight per stream of "
                          f"ensemble.streams")
    if cls is ModelSection:  # the sinusoidal positions need an even hidden size, the attention heads a share each
        hidden = built.get("hidden_size", ModelSection.hidden_size)
        heads = built.get("num_heads", ModelSection.num_heads)
        if hidden % 2 or hidden % heads:
            origins = [source(f"{where}.{name}") for name in ("num_heads", "hidden_size") if name in built]
            origin = next((text for text in origins if text.startswith("--set")), origins[0])  # the override, if any
            raise ConfigError(f"{origin}: model.hidden_size ({hidden}) must be even and a multiple of "
                              f"model.num_heads ({heads})")
    return cls(**built)


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict, assignment: str) -> str:
    """Set ``section.key=value`` (value parsed as YAML) in ``raw``; returns the dotted key."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r} must look like section.key=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    target = raw
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {assignment!r}: {key} is not a section")
    try:
        target[keys[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({' '.join(str(error).split())})") from None
    return ".".join(keys)


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (binary data), so not a params file; pass a YAML file "
                          f"like params.yaml") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, pretrain:, ...), got {type(raw).__name__}")
    return raw


def load_params(path: str | Path | None = DEFAULT_PARAMS_FILE, profile: str | None = None,
                overrides: list[str] | tuple[str, ...] = (), dataset: str | None = None) -> Params:
    """Read params.yaml (or the package defaults, the released settings, when ``path`` is None), apply a
    profile, then the settings of ``dataset`` under ``datasets:`` (of the file or of the profile), then
    ``section.key=value`` overrides; every key and value is checked against the sections."""
    raw: dict = {}
    name = "the package defaults"
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"params file {path} is a folder; pass a YAML file like params.yaml")
        if not path.is_file():
            raise ConfigError(f"params file {path} does not exist; check the path (without --params, "
                              f"./params.yaml or else the package defaults are used)")
        raw = _read_yaml(path)
        name = str(path)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{name}: profiles must be a mapping of profile names to settings")
    chosen = profile or raw.get("profile", "paper")
    if chosen != "paper" or chosen in profiles:
        if chosen not in profiles:
            known = ", ".join(sorted({"paper", *map(str, profiles)}))
            raise ConfigError(f"profile {chosen!r} is not in {name}; known: {known}")
        if not isinstance(profiles[chosen] or {}, dict):
            raise ConfigError(f"{name}: profiles.{chosen} must be a mapping of sections")
        raw = _merge(raw, profiles[chosen] or {})
    raw["profile"] = chosen
    per_dataset = raw.pop("datasets", {}) or {}
    if not isinstance(per_dataset, dict) or not all(isinstance(v or {}, dict) for v in per_dataset.values()):
        raise ConfigError(f"{name}: datasets must map dataset names to sections, e.g. datasets: {{utkinect: "
                          f"{{pretrain: {{batch_size: 32}}}}}}")
    for other, settings in per_dataset.items():  # every dataset's settings are checked, used or not
        _build(Params, _merge(raw, settings or {}), "", lambda key, other=other: f"{name} (datasets.{other})")
    if dataset is not None and dataset in per_dataset:
        raw = _merge(raw, per_dataset[dataset] or {})
    overridden = {_apply_override(raw, assignment): assignment for assignment in overrides}

    def source(key: str) -> str:
        """Where a key's value came from, for error messages."""
        for dotted, assignment in overridden.items():
            if key == dotted or key.startswith((dotted + ".", dotted + "[")) or dotted.startswith(key + "."):
                return f"--set {assignment}"
        return f"{name} (profile {chosen})" if chosen in profiles else name

    return _build(Params, raw, "", source)
