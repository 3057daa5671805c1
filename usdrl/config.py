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
        nested = next((c for c in (DataSection, SyntheticSection, ModelSection, AugmentSection, LossSection,
                                   PretrainSection) if c.__name__ == str(kind)), None)
        if nested is not None:
            built[name] = _build(nested, value, f"{where}.{name}")
        elif isinstance(value, list):
            built[name] = tuple(value)
        else:
            built[name] = value
    return cls(**built)


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
