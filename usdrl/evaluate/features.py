"""Encoders for evaluation and their frozen features, extracted once and cached on disk.

The downstream input is deterministic (the whole valid sequence resized to the clip length), so the
instance features of a frozen encoder are computed once per (checkpoint, data, settings) and reused
by the linear probe, retrieval, t-SNE and the ensemble.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from usdrl.data.atomic_files import atomic_file
from usdrl.data.fingerprint import file_sha256
from usdrl.data.store import SkeletonSplit
from usdrl.nn.augment import resize_whole
from usdrl.nn.encoders import SkeletonModel, initialise_head
from usdrl.settings.sections import ModelSection
from usdrl.skeleton import SkeletonLayout, layout_from_dict
from usdrl.training.checkpoint import recorded_modality, recorded_model_section
from usdrl.training.checkpoint_files import CheckpointError, describe_content, load_checkpoint
from usdrl.training.released_checkpoints import load_released
from usdrl.training.runtime import autocast_context, autocast_settings, seed_everything

FEATURE_VERSION = 1
RANDOM = "random"


def checkpoint_identity(checkpoint: str | Path | None, model: ModelSection, seed: int) -> str:
    """sha256 of the checkpoint file, or a description of the random initialisation."""
    if checkpoint in (None, RANDOM):
        return f"random:{seed}:" + json.dumps(asdict(model), sort_keys=True)
    return file_sha256(Path(checkpoint))


def load_encoder(checkpoint: str | Path | None, model: ModelSection, layout: SkeletonLayout, seed: int = 0,
                 num_classes: int | None = None, modality: str | None = None,
                 backbone: str | None = None) -> SkeletonModel:
    """Our checkpoint (from usdrl pretrain), a released one, or ``"random"``: the model in eval mode."""
    return open_encoder(checkpoint, model, layout, seed, num_classes, modality, backbone)[0]


def open_encoder(checkpoint: str | Path | None, model: ModelSection, layout: SkeletonLayout, seed: int = 0,
                 num_classes: int | None = None, modality: str | None = None,
                 backbone: str | None = None, head_seed: int | None = None) -> tuple[SkeletonModel, str | None]:
    """The encoder in eval mode and the modality recorded in the checkpoint (ours; None for released and random).

    Every file is loaded safely (``usdrl.training.checkpoint.load_checkpoint``). ``modality`` and ``backbone`` are
    what the caller explicitly asked for (None: not asked, then the checkpoint's own apply); a checkpoint of
    ours recorded with another modality or backbone is refused with a CheckpointError naming both.
    ``model`` gives the sizes of a random or released encoder; ours carry their own.
    With ``num_classes``, a checkpoint's (ours or released) new head is drawn from a generator seeded with
    ``head_seed`` (None: torch's global generator); a random encoder, head included, is drawn from ``seed``.
    """
    if checkpoint in (None, RANDOM):
        seed_everything(seed)
        section = replace(model, backbone=backbone) if backbone else model
        encoder = SkeletonModel(section, layout=layout, num_classes=num_classes)
        return encoder.eval(), None
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; run usdrl pretrain first, or pass --checkpoint random")
    content = load_checkpoint(path)
    head_generator = None if head_seed is None else torch.Generator().manual_seed(head_seed)
    if isinstance(content, dict) and "encoder_config" in content:
        return _our_encoder(path, content, layout, num_classes, modality, backbone, head_generator)
    released = load_released(content if isinstance(content, dict) else path, backbone or model.backbone,
                             hidden_size=None, num_head=model.num_heads, num_layer=model.num_layers, alpha=model.alpha,
                             gap=model.gap, kernel_size=model.kernel_size, source=str(path))
    stored = released.layout
    if (stored.num_joints, stored.num_persons, stored.num_coordinates) != (
            layout.num_joints, layout.num_persons, layout.num_coordinates):
        raise CheckpointError(f"{path} holds an encoder for V={stored.num_joints}, M={stored.num_persons}, "
                              f"C={stored.num_coordinates}, which does not fit this dataset's {layout.name!r}")
    if num_classes is not None:
        released.head = initialise_head(torch.nn.Linear(2 * released.config.hidden_size, num_classes), head_generator)
    return released.eval(), None


def _our_encoder(path: Path, content: dict[str, Any], layout: SkeletonLayout, num_classes: int | None,
                 modality: str | None, backbone: str | None,
                 head_generator: torch.Generator | None = None) -> tuple[SkeletonModel, str | None]:
    if not isinstance(content.get("model"), dict) or not isinstance(content.get("layout"), dict):
        raise CheckpointError(f"{path} is not a checkpoint of usdrl pretrain (it holds {describe_content(content)})")
    stored_layout = layout_from_dict(content["layout"], source=str(path))
    if (stored_layout.num_joints, stored_layout.num_persons, stored_layout.num_coordinates) != (
            layout.num_joints, layout.num_persons, layout.num_coordinates):
        raise CheckpointError(f"{path} was trained on layout {stored_layout.name!r} "
                              f"(V={stored_layout.num_joints}, M={stored_layout.num_persons}), "
                              f"which does not fit this dataset's {layout.name!r}")
    config = recorded_model_section(content, path, stored_layout)  # checked against the stored weights and layout
    if backbone and backbone != config.backbone:
        raise CheckpointError(f"{path} holds a {config.backbone} encoder, but backbone {backbone} was asked for; pass "
                              f"a {backbone} checkpoint, or leave the backbone out to evaluate it as {config.backbone}")
    recorded = recorded_modality(content)
    if modality and recorded and modality != recorded:
        raise CheckpointError(f"{path} holds an encoder pretrained on {recorded}, but modality {modality} was asked "
                              f"for; pass the {modality} run's checkpoint, or leave --modality out to evaluate it "
                              f"on {recorded}")
    try:
        encoder = SkeletonModel(config, layout=layout, num_classes=num_classes)
    except (ValueError, AssertionError, RuntimeError) as error:  # e.g. a hidden size the heads do not divide
        raise CheckpointError(f"{path} records an encoder that cannot be built: {error}") from None
    if encoder.head is not None and head_generator is not None:
        initialise_head(encoder.head, head_generator)
    weights = {k: v for k, v in content["model"].items() if not k.startswith("head.")}  # a new head is trained
    try:
        missing, unexpected = encoder.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # a shape mismatch
        raise CheckpointError(f"{path} does not fit the model: {str(error).splitlines()[-1].strip()}") from None
    allowed_missing = {"head.weight", "head.bias"}
    if set(missing) - allowed_missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return encoder.eval(), recorded


def downstream_batches(split: SkeletonSplit, batch_size: int, clip_frames: int, device: torch.device):
    """(positions, x (n, C, clip_frames, V, M)) batches of the deterministic downstream input, in order."""
    for start in range(0, len(split), batch_size):
        positions = np.arange(start, min(start + batch_size, len(split)))
        frames = torch.as_tensor(split.num_frames[positions], dtype=torch.long)
        x = torch.from_numpy(split.valid_batch(positions)).to(device)  # resize_whole reads only valid frames
        yield positions, resize_whole(x, frames.to(device), clip_frames)


@torch.no_grad()
def extract_features(model: SkeletonModel, split: SkeletonSplit, modality: str, device: torch.device,
                     batch_size: int = 256, precision: str = "auto", progress: bool = False) -> np.ndarray:
    """Instance features (N, 2H) float32 of a split, the encoder in eval mode (BatchNorm untouched)."""
    model = model.to(device).eval()
    dtype, _ = autocast_settings(device, precision)
    features = np.zeros((len(split), 2 * model.config.hidden_size), dtype=np.float32)
    batches = downstream_batches(split, batch_size, model.config.clip_frames, device)
    for positions, x in tqdm(batches, total=-(-len(split) // batch_size), desc=f"features {split.split}",
                             disable=not progress, leave=False):
        with autocast_context(device, dtype):
            encoded = model.encode(x, modality)
        features[positions] = encoded["features"].float().cpu().numpy()
    return features


def feature_cache_key(identity: str, split: SkeletonSplit, modality: str, clip_frames: int, precision: str) -> str:
    """The cache file name of a split's features: 24 hex digits of the sha256 of everything they depend on
    (checkpoint identity, data fingerprint and the sha256 of the data's manifest, benchmark, split, modality,
    clip length, precision, FEATURE_VERSION); not where the data or the checkout is."""
    manifest = hashlib.sha256(json.dumps(split.manifest, sort_keys=True, default=str).encode()).hexdigest()
    description = {"version": FEATURE_VERSION, "checkpoint": identity, "data": split.manifest.get("input_fingerprint"),
                   "manifest": manifest, "benchmark": split.benchmark, "split": split.split,
                   "modality": modality, "clip_frames": clip_frames, "precision": precision}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


def cached_features(model: SkeletonModel, identity: str, split: SkeletonSplit, modality: str, device: torch.device,
                    cache_dir: str | Path | None, batch_size: int = 256, precision: str = "auto",
                    progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Features from ``cache_dir`` when present for the same checkpoint, data and settings; else extracted and stored."""
    key = feature_cache_key(identity, split, modality, model.config.clip_frames, precision)
    info = {"cache_key": key, "cached": False}
    if cache_dir is not None:
        path = Path(cache_dir) / f"{key}.npy"
        if path.is_file():
            return np.load(path), {**info, "cached": True, "path": str(path)}
    features = extract_features(model, split, modality, device, batch_size, precision, progress)
    if cache_dir is not None:
        with atomic_file(path, suffix=".npy") as temporary:  # numpy.save adds .npy to a name without it
            np.save(temporary, features)
        info["path"] = str(path)
    return features, info
