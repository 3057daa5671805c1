"""params.yaml as typed sections: one dataclass per section, unknown keys are errors, profiles override.

The top-level sections hold the released (paper) settings; ``profiles.<name>`` overrides any of
them; ``profile`` names the default profile. ``load_params(path, profile, overrides)`` applies the
profile, then ``section.key=value`` overrides (values parsed as YAML).

Here: reading, merging and checking the settings (the allowed values of each in ``ALLOWED``). The
sections themselves are ``usdrl.settings.sections``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from usdrl.settings.sections import (
    BACKBONE_NAMES,
    ENSEMBLE_NORMALISATIONS,
    FEATURE_NORMALIZATIONS,
    LOSS_VARIANT_NAMES,
    MAX_TEMPORAL_POSITIONS,
    PRECISIONS,
    AblationSection,
    AugmentSection,
    ConfigError,
    DetectionSection,
    EnsembleSection,
    EvaluationSection,
    FinetuneSection,
    LossSection,
    ModelSection,
    Params,
    PipelineSection,
    PretrainSection,
    ProbeSection,
    RetrievalSection,
    UTKinectSection,
)
from usdrl.skeleton import MODALITIES
from usdrl.validation import load_yaml

DEFAULT_PARAMS_FILE = Path("params.yaml")  # read when no params file is named and it exists

AUTO = "auto"  # a setting resolved from the training split (usdrl.training.settings_from_data)


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
    auto: bool = False  # the string "auto" is allowed too

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is allowed."""
        if self.auto and value == AUTO:
            return None
        if self.auto and isinstance(value, str):
            return f"{AUTO} or {self._bounds()}"
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, float) and not math.isfinite(item) and (self.low is not None or self.high is not None):
                return f"a finite number, {self._bounds()}"
            if self.choices and item not in self.choices:
                return f"one of {', '.join(map(str, self.choices))}"
            if self.pattern and not (isinstance(item, str) and re.fullmatch(self.pattern, item)):
                return self.meaning
            too_low = self.low is not None and (item < self.low if self.low_included else item <= self.low)
            too_high = self.high is not None and (item > self.high if self.high_included else item >= self.high)
            if too_low or too_high:
                return self._bounds()
        return None

    def _bounds(self) -> str:
        bounds = []
        if self.low is not None:
            bounds.append(f"{'at least' if self.low_included else 'greater than'} {self.low}")
        if self.high is not None:
            bounds.append(f"{'at most' if self.high_included else 'below'} {self.high}")
        return " and ".join(bounds)


def _at_least(low: int) -> Allowed:
    return Allowed(low=low)


def _fraction(low_included: bool = True, high_included: bool = True) -> Allowed:
    """A number from 0 to 1, either end included or not."""
    return Allowed(low=0, high=1, low_included=low_included, high_included=high_included)


MOST_HIDDEN_SIZE = 4096  # the largest encoder width accepted (the released models have 1024)
DEVICE = Allowed(pattern=r"auto|cpu|cuda(:\d+)?", meaning="auto, cpu, cuda or cuda:N (GPU N)")


# The allowed values of the settings that have limits, checked whenever a section is built (params.yaml, a
# profile, a dataset's settings, --set); a setting not listed takes any value of its type.
ALLOWED: dict[tuple[type, str], Allowed] = {
    # upper bounds: a recorded or given size never builds a model of gigabytes before anything else is checked
    (ModelSection, "hidden_size"): Allowed(low=1, high=MOST_HIDDEN_SIZE),
    (ModelSection, "num_heads"): Allowed(low=1, high=64),
    (ModelSection, "num_layers"): Allowed(low=1, high=64),
    **{(ModelSection, name): Allowed(low=1, high=200) for name in ("gap", "kernel_size")},
    (ModelSection, "backbone"): Allowed(choices=BACKBONE_NAMES),
    (ModelSection, "alpha"): _fraction(),
    (ModelSection, "drop_path"): _fraction(high_included=False),
    (ModelSection, "clip_frames"): Allowed(low=1, high=MAX_TEMPORAL_POSITIONS, auto=True),
    (AugmentSection, "views"): _at_least(2),
    (AugmentSection, "crop_scale"): _fraction(low_included=False),
    (AugmentSection, "minimum_crop"): Allowed(low=1, auto=True),
    (AugmentSection, "corrupted_joints"): _at_least(0),
    (LossSection, "form"): Allowed(choices=("released", "paper")),
    **{(LossSection, name): _at_least(0) for name in ("similarity_weight", "variance_covariance_weight",
                                                       "cross_correlation_weight", "variance_weight",
                                                       "off_diagonal_weight", "invariance_weight", "epsilon",
                                                       "tau")},  # tau 0: the ablation without XC
    (PretrainSection, "epochs"): _at_least(1),
    (PretrainSection, "batch_size"): _at_least(2),  # BatchNorm needs two samples
    **{(PretrainSection, name): _at_least(0) for name in ("learning_rate", "weight_decay", "milestones",
                                                           "learning_rate_decay", "workers", "log_every",
                                                           "last_checkpoint_seconds", "minimum_steps",
                                                           "gain_check_seeds")},
    (PretrainSection, "checkpoint_every"): _at_least(1),
    **{(section, "seed"): _at_least(0) for section in (PretrainSection, ProbeSection, DetectionSection)},
    (FinetuneSection, "seeds"): _at_least(0),
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
    (ProbeSection, "feature_normalization"): Allowed(choices=FEATURE_NORMALIZATIONS),
    (RetrievalSection, "k"): _at_least(1),
    (RetrievalSection, "chunk_size"): _at_least(1),
    (FinetuneSection, "fractions"): _fraction(low_included=False),
    **{(FinetuneSection, name): _at_least(1) for name in ("epochs", "batch_size")},
    **{(FinetuneSection, name): _at_least(0) for name in ("warmup_epochs", "learning_rate", "weight_decay",
                                                           "layer_decay", "rotation_radians")},
    (FinetuneSection, "label_smoothing"): _fraction(high_included=False),
    (FinetuneSection, "crop_scale"): _fraction(low_included=False),
    (EnsembleSection, "streams"): Allowed(choices=MODALITIES),
    (EnsembleSection, "normalise"): Allowed(choices=ENSEMBLE_NORMALISATIONS),
    (DetectionSection, "epochs"): _at_least(0),  # 0: the untrained detector, a baseline
    (DetectionSection, "minimum_steps"): _at_least(0),
    **{(DetectionSection, name): _at_least(1) for name in ("batch_size", "stride", "smoothing_window")},
    **{(DetectionSection, name): _at_least(0) for name in ("learning_rate", "weight_decay")},
    (DetectionSection, "momentum"): _fraction(),
    (DetectionSection, "proposal_rule"): Allowed(choices=("threshold", "smoothed")),
    (DetectionSection, "thetas"): _fraction(low_included=False),
    (DetectionSection, "modality"): Allowed(choices=MODALITIES),
    (AblationSection, "alphas"): _fraction(),
    (AblationSection, "loss_variants"): Allowed(choices=LOSS_VARIANT_NAMES),
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
        alternatives = [argument for argument in arguments if argument is not type(None)]
        for alternative in alternatives[:-1]:  # int | str: an integer, else a string (such as "auto")
            try:
                return _check_value(alternative, value, key, source)
            except ConfigError:
                pass
        hint = alternatives[-1]
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
            raise ConfigError(f"{origin}: {where or 'model'}.hidden_size ({hidden}) must be even and a multiple of "
                              f"{where or 'model'}.num_heads ({heads})")
        clip = built.get("clip_frames", ModelSection.clip_frames)
        gap = built.get("gap", ModelSection.gap)
        if isinstance(clip, int) and gap > clip:  # DenseShift keeps every gap-th of the clip's frames
            origins = [source(f"{where}.{name}") for name in ("gap", "clip_frames") if name in built]
            origin = next((text for text in origins if text.startswith("--set")), origins[0])
            raise ConfigError(f"{origin}: {where or 'model'}.gap ({gap}) must be at most {where or 'model'}.clip_frames "
                              f"({clip})")
    if cls is PipelineSection:  # dvc.yaml expands its stages over name -> {setting: value}
        for name, entries in built.items():
            for entry, settings in entries.items():
                if not isinstance(entry, str) or not isinstance(settings, dict):
                    key = f"{where}.{name}.{entry}"
                    raise ConfigError(f"{source(key)}: {key} must be a mapping of settings ({{dataset: ..., "
                                      f"benchmark: ...}}), got {settings!r}")
    return cls(**built)


def build_section(cls: type, values: Any, where: str, source: Callable[[str], str]) -> Any:
    """The section ``cls`` from a mapping, checked as params.yaml is (types, ``ALLOWED``); a ConfigError naming
    ``source(key)`` and the key otherwise. Used for the settings checkpoints and bundles record too."""
    return _build(cls, values, where, source)


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
        raw = load_yaml(path.read_text(), str(path), ConfigError)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (binary data), so not a params file; pass a YAML file "
                          f"like params.yaml") from None
    if raw is None:
        raise ConfigError(f"{path} is empty; a params file holds a mapping of sections (model:, pretrain:, ...), or "
                          f"leave --params out for the package defaults")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, pretrain:, ...), got {type(raw).__name__}")
    return raw


def load_params(path: str | Path | None = DEFAULT_PARAMS_FILE, profile: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read params.yaml (or the package defaults, the released settings, when ``path`` is None), apply a
    profile, then ``section.key=value`` overrides; every key and value is checked against the sections.
    Settings that follow from the data (``auto``) stay ``auto`` here: ``usdrl.training.settings_from_data`` resolves them."""
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
    if not isinstance(chosen, str):
        raise ConfigError(f"{name}: profile must be the name of a profile (paper, or one under profiles:), got {chosen!r}")
    if chosen != "paper" or chosen in profiles:
        if chosen not in profiles:
            known = ", ".join(sorted({"paper", *map(str, profiles)}))
            raise ConfigError(f"profile {chosen!r} is not in {name}; known: {known}")
        if not isinstance(profiles[chosen] or {}, dict):
            raise ConfigError(f"{name}: profiles.{chosen} must be a mapping of sections")
        raw = _merge(raw, profiles[chosen] or {})
    raw["profile"] = chosen
    overridden = {_apply_override(raw, assignment): assignment for assignment in overrides}

    def source(key: str) -> str:
        """Where a key's value came from, for error messages."""
        for dotted, assignment in overridden.items():
            if key == dotted or key.startswith((dotted + ".", dotted + "[")) or dotted.startswith(key + "."):
                return f"--set {assignment}"
        return f"{name} (profile {chosen})" if chosen in profiles else name

    return _build(Params, raw, "", source)
