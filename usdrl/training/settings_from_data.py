"""Settings that follow from the data: the ``auto`` values of params.yaml resolved from a prepared training split.

A released value that only makes sense for NTU-sized data is written ``auto`` (or, for the schedules, bounded by a
``minimum_steps``); ``resolve_for_split`` turns it into a number from the training split and says which rule
gave it. Each rule gives the released value on data shaped like NTU RGB+D (clips longer than the model's 64
frames, thousands of clips), so the paper profile resolves to SPEC.md's settings there:

- ``model.clip_frames``: the model's clip length, the released 64, or the smallest power of two at least the
  median valid length when the median clip is shorter (resizing a short clip to 64 frames only interpolates).
- ``augment.minimum_crop``: the shortest temporal crop. The model's clip length when most clips are longer than
  it (the released regime: crops are windows of at least one model input); else the largest crop that leaves at
  most a tenth of the clips never cropped in time (a clip of n <= minimum_crop frames is never cropped).
- with ``pretrain.minimum_steps`` > 0 (0, released: the schedule as given), the schedule is counted in optimiser
  steps: ``pretrain.batch_size`` is halved while an epoch would leave out more than a tenth of the training clips
  (the last partial batch of an epoch is dropped: BatchNorm needs full batches), then ``pretrain.epochs`` is
  raised, the milestones in proportion, until the schedule holds at least ``minimum_steps`` steps of the given
  batch size (a halved batch takes twice the steps: the schedule shows as many clips).
- ``detection.epochs``: raised until the detector's training holds at least ``detection.minimum_steps`` batches of
  windows of the untrimmed training split (0: as given).

The valid lengths are the clips' of a trimmed split and the labelled action instances' of an untrimmed one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from usdrl.data.store import SkeletonSplit, load_split
from usdrl.settings.params import AUTO
from usdrl.settings.sections import ConfigError, ModelSection, Params

RELEASED_CLIP_FRAMES = ModelSection.clip_frames  # 64 (SPEC.md)
UNCROPPED_FRACTION = 0.1  # at most this part of the clips is never cropped in time
DROPPED_FRACTION = 0.1  # at most this part of the clips is left out of an epoch by the partial last batch
SMALLEST_CLIP = 8


def valid_lengths(split: SkeletonSplit) -> np.ndarray:
    """(N,) valid frame counts: of the clips (trimmed), of the labelled action instances (untrimmed)."""
    if split.untrimmed:
        instances = split.instances()
        return (instances[:, 3] - instances[:, 2]).astype(np.int64)
    return np.asarray(split.num_frames, dtype=np.int64)


def _clip_frames(lengths: np.ndarray) -> tuple[int, str]:
    median = float(np.median(lengths))
    if median >= RELEASED_CLIP_FRAMES:
        return RELEASED_CLIP_FRAMES, f"released {RELEASED_CLIP_FRAMES}: the median valid length is {median:g} frames"
    frames = max(SMALLEST_CLIP, 2 ** math.ceil(math.log2(max(median, 1.0))))
    return frames, f"median valid length {median:g} < {RELEASED_CLIP_FRAMES}: the power of two at least it"


def _minimum_crop(lengths: np.ndarray, clip_frames: int) -> tuple[int, str]:
    longer = float(np.mean(lengths > clip_frames))
    if longer > 0.5:
        return clip_frames, (f"the clip length {clip_frames} (released regime): {100 * longer:.0f}% of the clips "
                             f"are longer than it")
    ordered = np.sort(lengths)
    crop = max(1, int(ordered[int(UNCROPPED_FRACTION * len(ordered))]) - 1)  # clips of n <= crop are never cropped
    return crop, (f"only {100 * longer:.0f}% of the clips are longer than the clip length {clip_frames}: the "
                  f"largest crop that leaves at most {100 * UNCROPPED_FRACTION:.0f}% of the clips uncropped "
                  f"({100 * float(np.mean(lengths <= crop)):.0f}%)")


def _left_out(count: int, global_batch: int) -> int:
    """Clips an epoch leaves out: the partial last batch (all of them when there is no full batch)."""
    return count % global_batch if count >= global_batch else count


def _batch_size(count: int, batch_size: int, world_size: int) -> tuple[int, str]:
    chosen = batch_size
    while chosen > 2 and _left_out(count, chosen * world_size) > DROPPED_FRACTION * count:
        chosen //= 2
    dropped = _left_out(count, chosen * world_size)
    if chosen == batch_size:
        return chosen, f"as given: an epoch leaves out {dropped} of {count} clips"
    return chosen, (f"halved from {batch_size} until an epoch leaves out at most {100 * DROPPED_FRACTION:.0f}% of "
                    f"the {count} clips ({dropped})")


def _schedule(epochs: int, milestones: tuple[int, ...], steps_per_epoch: int, minimum_steps: int,
              about: str = "") -> tuple[int, tuple[int, ...], str]:
    steps = epochs * steps_per_epoch
    if minimum_steps <= 0 or epochs == 0 or steps >= minimum_steps:  # 0 epochs: the untrained baseline
        return epochs, milestones, f"as given: {epochs} epochs of {about}{steps_per_epoch} steps ({steps} steps)"
    longer = math.ceil(minimum_steps / max(steps_per_epoch, 1))
    scaled = tuple(round(milestone * longer / epochs) for milestone in milestones)
    return longer, scaled, (f"{epochs} epochs of {about}{steps_per_epoch} steps are {steps} < minimum_steps "
                            f"{minimum_steps}: {longer} epochs, milestones in proportion")


def resolve_for_split(params: Params, split: SkeletonSplit, world_size: int = 1) -> tuple[Params, dict[str, Any]]:
    """``params`` with every data-dependent setting resolved from the training split ``split``, and the record
    {"setting": {"value": ..., "rule": ...}} of what was resolved (only the settings that are ``auto`` or bounded
    by a minimum_steps)."""
    lengths = valid_lengths(split)
    if not len(lengths):
        raise ConfigError(f"{split.root}: the {split.benchmark} training split holds no clip to derive settings from")
    record: dict[str, Any] = {}
    model, augment, pretrain, detection = params.model, params.augment, params.pretrain, params.detection
    if model.clip_frames == AUTO:
        frames, rule = _clip_frames(lengths)
        model = dataclasses.replace(model, clip_frames=frames)
        record["model.clip_frames"] = {"value": frames, "rule": rule}
    if augment.minimum_crop == AUTO:
        crop, rule = _minimum_crop(lengths, model.clip_frames)
        augment = dataclasses.replace(augment, minimum_crop=crop)
        record["augment.minimum_crop"] = {"value": crop, "rule": rule}
    if not split.untrimmed and pretrain.minimum_steps > 0:
        batch, rule = _batch_size(len(split), pretrain.batch_size, world_size)
        if batch != pretrain.batch_size:
            record["pretrain.batch_size"] = {"value": batch, "rule": rule}
        steps_per_epoch = len(split) // (batch * world_size)
        minimum_steps = pretrain.minimum_steps * pretrain.batch_size // batch  # as many clips shown
        epochs, milestones, rule = _schedule(pretrain.epochs, pretrain.milestones, steps_per_epoch, minimum_steps)
        if epochs != pretrain.epochs:
            record["pretrain.epochs"] = {"value": epochs, "rule": rule}
            record["pretrain.milestones"] = {"value": list(milestones), "rule": "in proportion to the epochs"}
        pretrain = dataclasses.replace(pretrain, batch_size=batch, epochs=epochs, milestones=milestones)
    elif split.untrimmed:
        windows = int(sum(max(1, math.ceil(int(frames) / detection.stride)) for frames in split.num_frames))
        steps_per_epoch = max(1, windows // detection.batch_size)
        epochs, _, rule = _schedule(detection.epochs, (), steps_per_epoch, detection.minimum_steps, "about ")
        if epochs != detection.epochs:
            record["detection.epochs"] = {"value": epochs, "rule": rule}
        detection = dataclasses.replace(detection, epochs=epochs)
    resolved = dataclasses.replace(params, model=model, augment=augment, pretrain=pretrain, detection=detection)
    return resolved, record


def resolve_for_data(params: Params, data_root, benchmark: str, world_size: int = 1) -> tuple[Params, dict[str, Any]]:
    """``resolve_for_split`` on the training split of the prepared dataset ``data_root``."""
    return resolve_for_split(params, load_split(data_root, benchmark, "train"), world_size)


def describe(record: dict[str, Any]) -> str:
    """The record as lines ``setting = value  (rule)``, for notebooks and the command line."""
    return "\n".join(f"{name} = {entry['value']}  ({entry['rule']})" for name, entry in record.items())
