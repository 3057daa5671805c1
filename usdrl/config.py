"""params.yaml as typed sections: one dataclass per section, unknown keys are errors, profiles override.

The top-level sections hold the released (paper) settings; ``profiles.<name>`` overrides any of
them; ``profile`` names the default profile. ``load_params(path, profile, overrides)`` applies the
profile, then ``section.key=value`` overrides (values parsed as YAML).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ModelSection:
    backbone: str = "dste"
    hidden_size: int = 1024
    num_heads: int = 1
    num_layers: int = 2
    alpha: float = 0.5
    gap: int = 4
    kernel_size: int = 1
    drop_path: float = 0.1
    clip_frames: int = 64


@dataclass(frozen=True)
class AugmentSection:
    views: int = 4
    crop_scale: tuple[float, float] = (0.1, 1.0)
    minimum_crop: int = 64
    corrupted_joints: int = 15


@dataclass(frozen=True)
class LossSection:
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

    def learning_rate(self, backbone: str, dataset: str, benchmark: str) -> float:
        for key in (f"{backbone}/{dataset}/{benchmark}", f"{dataset}/{benchmark}", "default"):
            if key in self.learning_rates:
                return float(self.learning_rates[key])
        raise ConfigError("probe.learning_rates needs a 'default' entry")


@dataclass(frozen=True)
class RetrievalSection:
    k: tuple[int, ...] = (1,)
    chunk_size: int = 4096


@dataclass(frozen=True)
class FinetuneSection:
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
    streams: tuple[str, ...] = ("joint", "bone", "motion")
    weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    normalise: str = "none"


@dataclass(frozen=True)
class DetectionSection:
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
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 256
    cache_dir: str = "cache/features"


@dataclass(frozen=True)
class SyntheticSection:
    seed: int = 0
    subjects: int = 12
    replications: int = 2


@dataclass(frozen=True)
class DataSection:
    root: str = "data"
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)


@dataclass(frozen=True)
class Params:
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


def _build(cls: type, values: Any, where: str) -> Any:
    if not dataclasses.is_dataclass(cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    built = {}
    for name, value in values.items():
        kind = fields[name].type
        nested = next((c for c in SECTIONS if c.__name__ == str(kind)), None)
        if nested is not None:
            built[name] = _build(nested, value, f"{where}.{name}")
        elif isinstance(value, list):
            built[name] = tuple(value)
        else:
            built[name] = value
    return cls(**built)


SECTIONS = (DataSection, SyntheticSection, ModelSection, AugmentSection, LossSection, PretrainSection,
            EvaluationSection, ProbeSection, RetrievalSection, FinetuneSection, EnsembleSection, DetectionSection,
            AblationSection, PipelineSection)


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    target = raw
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {assignment!r}: {key} is not a section")
    target[keys[-1]] = yaml.safe_load(text)


def load_params(path: str | Path | None = "params.yaml", profile: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read params.yaml (or the defaults when ``path`` is None), apply a profile and overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"params file {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
    profiles = raw.pop("profiles", {}) or {}
    chosen = profile or raw.get("profile", "paper")
    if chosen != "paper" or chosen in profiles:
        if chosen not in profiles:
            raise ConfigError(f"profile {chosen!r} is not in {path}; known: paper, {', '.join(profiles)}")
        raw = _merge(raw, profiles[chosen])
    raw["profile"] = chosen
    for assignment in overrides:
        _apply_override(raw, assignment)
    return _build(Params, raw, str(path or "params"))


def to_dict(section: Any) -> dict:
    return dataclasses.asdict(section)
