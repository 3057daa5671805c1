"""Dense frame-wise fine-tuning for temporal action detection (DETECTION.md steps 2-4).

Windows of the clip length cut from untrimmed sequences; per frame the feature concat(y_t[t],
pooled spatial tokens[t]) (the 50 spatial tokens adaptive-average-pooled to the window length, as the
released downstream model) and Linear(2H, classes + 1); the whole network is fine-tuned with SGD and
cross-entropy over frames, padding ignored. Test sequences are tiled with non-overlapping windows
(the last one padded, its padding masked) and turned into frame probabilities, then proposals.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from usdrl.data.atomic_files import check_replaceable, claim_entries, replace_folder
from usdrl.data.errors import DataError
from usdrl.data.store import SkeletonSplit, load_split
from usdrl.evaluate.detection_metrics import (
    dataset_action_classes,
    detection_metrics,
    smoothed_proposals,
    threshold_proposals,
    write_proposals,
)
from usdrl.evaluate.features import checkpoint_identity, open_encoder
from usdrl.evaluate.results import provenance, write_results
from usdrl.nn.encoders import SkeletonModel, initialise_head
from usdrl.plots import plot_timeline
from usdrl.settings.sections import DetectionSection as DetectionSettings
from usdrl.settings.sections import Params
from usdrl.training.checkpoint_files import save_tensors_atomically
from usdrl.training.loop import MixedPrecision, RunningTotals, progress_bar
from usdrl.training.runtime import autocast_context, autocast_settings, resolve_device

IGNORE = -100


class DenseDetector(nn.Module):
    """Encoder + per-frame head: x (N, C, T, V, M) -> logits (N, T, classes + 1)."""

    def __init__(self, encoder: SkeletonModel, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = initialise_head(nn.Linear(2 * encoder.config.hidden_size, num_classes + 1))

    def forward(self, x: torch.Tensor, modality: str = "joint") -> torch.Tensor:
        """Per-frame logits (N, T, classes + 1) of x (N, C, T, V, M): the temporal dense features beside the spatial
        ones pooled to T."""
        encoded = self.encoder.encode(x, modality)
        dense_t, dense_s = encoded["dense_t"], encoded["dense_s"]  # (N, T, H), (N, M*V, H)
        pooled_s = F.adaptive_avg_pool1d(dense_s.transpose(1, 2), dense_t.shape[1]).transpose(1, 2)  # (N, T, H)
        return self.head(torch.cat([dense_t, pooled_s], dim=-1))


def training_windows(lengths: np.ndarray, window: int, stride: int, offset: int = 0) -> list[tuple[int, int]]:
    """(sequence position, start) of sliding windows; a sequence shorter than a window gives one padded window."""
    windows = []
    for position, length in enumerate(lengths):
        starts = list(range(min(offset, max(length - window, 0)), max(length - window, 0) + 1, stride)) or [0]
        windows.extend((position, start) for start in starts)
    return windows


def cut_window(split: SkeletonSplit, position: int, start: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, window, V, M) frames and (window,) labels; frames past the end are zero with label IGNORE."""
    sequence, labels = split.sequence(position), split.frame_labels_of(position)
    piece = sequence[:, start:start + window]
    frames = np.zeros((piece.shape[0], window, *piece.shape[2:]), dtype=np.float32)
    frames[:, :piece.shape[1]] = piece
    target = np.full(window, IGNORE, dtype=np.int64)
    target[:piece.shape[1]] = labels[start:start + window]
    return frames, target


@torch.no_grad()
def window_probabilities(model: DenseDetector, windows: Callable[[int], np.ndarray], length: int, window: int,
                         modality: str, device: torch.device, precision: str = "auto",
                         batch_size: int = 64) -> np.ndarray:
    """(L, classes + 1) softmax probabilities of a sequence of ``length`` frames from non-overlapping windows,
    padding dropped. ``windows(start)`` gives the (C, window, V, M) frames from ``start``, zero past the end:
    only ``batch_size`` windows are in memory at once, whatever the length."""
    model.eval()
    dtype, _ = autocast_settings(device, precision)
    starts = list(range(0, length, window))
    outputs = []
    for first in range(0, len(starts), batch_size):
        x = torch.from_numpy(np.stack([windows(start) for start in starts[first:first + batch_size]])).to(device)
        with autocast_context(device, dtype):
            logits = model(x, modality)
        outputs.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(outputs).reshape(-1, outputs[0].shape[-1])[:length].numpy()


def frame_probabilities(model: DenseDetector, split: SkeletonSplit, position: int, window: int, modality: str,
                        device: torch.device, precision: str = "auto", batch_size: int = 64) -> np.ndarray:
    """(L, classes + 1) softmax probabilities of one sequence of a split (``window_probabilities``)."""
    return window_probabilities(model, lambda start: cut_window(split, position, start, window)[0],
                                int(split.num_frames[position]), window, modality, device, precision, batch_size)


def proposals_of(probabilities: np.ndarray, video: str, settings: DetectionSettings) -> list[tuple]:
    """Proposals of one video from its (L, classes + 1) frame probabilities, by the settings' proposal rule."""
    if settings.proposal_rule == "threshold":
        return threshold_proposals(probabilities, video, settings.threshold)
    if settings.proposal_rule == "smoothed":
        return smoothed_proposals(probabilities, video, settings.smoothing_window, settings.activity)
    raise ValueError(f"unknown proposal rule {settings.proposal_rule!r}; choose threshold or smoothed")


def train_detector(model: DenseDetector, train: SkeletonSplit, settings: DetectionSettings, device: torch.device,
                   precision: str = "auto", progress: bool = False) -> list[dict[str, float]]:
    """Fine-tune encoder and head on training windows; returns the per-epoch history."""
    model = model.to(device)
    window = model.encoder.config.clip_frames
    rate = settings.learning_rate * settings.batch_size / 512
    optimizer = torch.optim.SGD(model.parameters(), lr=rate, momentum=settings.momentum, weight_decay=settings.weight_decay)
    mixed_precision = MixedPrecision(device, precision)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    history = []
    for epoch in progress_bar(range(settings.epochs), "detection fine-tune", progress):
        model.train()
        offset = int(rng.integers(0, settings.stride)) if settings.random_offset else 0
        windows = training_windows(train.num_frames, window, settings.stride, offset)
        order = rng.permutation(len(windows))
        totals, frames_seen = RunningTotals("train_loss", "train_frame_accuracy"), 0
        for first in range(0, len(order), settings.batch_size):
            chosen = [windows[i] for i in order[first:first + settings.batch_size]]
            pieces = [cut_window(train, position, start, window) for position, start in chosen]
            x = torch.from_numpy(np.stack([p[0] for p in pieces])).to(device)
            target = torch.from_numpy(np.stack([p[1] for p in pieces])).to(device)  # (N, T)
            with mixed_precision.autocast():
                logits = model(x, settings.modality)
            loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE)
            mixed_precision.step(loss, optimizer)
            valid = target != IGNORE
            totals.add(int(valid.sum()), train_loss=loss.item())
            totals.add(train_frame_accuracy=int((logits.argmax(-1) == target)[valid].sum()))  # frames right
            frames_seen += int(valid.sum())
        history.append({"epoch": epoch + 1, "lr": rate, **totals.means(max(frames_seen, 1))})
    return history


def ground_truth_of(split: SkeletonSplit) -> list[tuple]:
    """Instances of a split as (label, start, end, confidence, video)."""
    return [(int(label), int(start), int(end), int(confidence), split.names[int(position)])
            for position, label, start, end, confidence in split.instances()]


def replace_proposals(proposals: list[tuple], directory: Path, results: Path) -> None:
    """Write the proposal files into ``DIRECTORY.tmp-<pid>``, then swap that folder in for ``directory``.

    The folder holding ``directory`` must be ours (``check_replaceable``); ``results`` and the proposal files are
    claimed in its marker (``claim_entries``) before they are written. ``results`` (the results file of the
    previous run, if any) is removed before the swap, so an interrupted run leaves either the old proposals with
    their results or the new proposals without results, never new proposals beside a results file that looks
    complete.
    """
    check_replaceable(directory.parent)
    claim_entries(directory.parent, [results.name, directory.name,
                                     *(f"{directory.name}/{p[4]}.txt" for p in proposals)])
    temporary = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    write_proposals(proposals, temporary)
    results.unlink(missing_ok=True)
    replace_folder(temporary, directory)


def timeline_entries(videos: list[str]) -> list[str]:
    """The timeline pictures of these videos, as entries of a detection folder's marker."""
    return [f"timelines/{video}.png" for video in videos]


def run_detection(data_root: str | Path, benchmark: str, checkpoint: str | Path | None, out_dir: str | Path,
                  params: Params, modality: str | None = None, figures: int = 2, progress: bool = False) -> dict[str, Any]:
    """Fine-tune, then infer every test sequence: proposals per video, metrics, timelines, results.json.

    ``out_dir`` must be absent, empty or a detection folder of ours holding nothing but what usdrl wrote there
    (``check_replaceable``); anything else is refused before training."""
    started = time.perf_counter()
    train, test = load_split(data_root, benchmark, "train"), load_split(data_root, benchmark, "test")
    if not train.untrimmed:
        raise DataError(f"{data_root} holds trimmed clips; detection needs untrimmed sequences "
                        f"(usdrl prepare pku1, or the synthetic streams: data/synthetic/streams)")
    check_replaceable(out_dir)  # before training, not after
    device = resolve_device(params.evaluation.device)
    # the modality asked for, else the one the checkpoint was pretrained on, else params.detection.modality
    encoder, recorded = open_encoder(checkpoint, params.model, train.layout, seed=params.pretrain.seed, modality=modality)
    settings = dataclasses.replace(params.detection, modality=modality or recorded or params.detection.modality)
    torch.manual_seed(settings.seed)  # the head's initial weights: the same whatever ran before in the process
    model = DenseDetector(encoder, train.num_classes)
    history = train_detector(model, train, settings, device, params.evaluation.precision, progress)
    out_dir = Path(out_dir)
    claim_entries(out_dir, ["results.json", DETECTOR_FILE, *timeline_entries(test.names[:max(figures, 0)])])
    (out_dir / "results.json").unlink(missing_ok=True)  # never a results file beside another run's weights
    detector_file = save_detector(model, out_dir, train.class_names, settings.modality)
    proposals, figures_written = [], []
    truth = ground_truth_of(test)
    window = encoder.config.clip_frames
    for position in progress_bar(range(len(test)), "detect", progress):
        probabilities = frame_probabilities(model, test, position, window, settings.modality, device,
                                            params.evaluation.precision)
        video = test.names[position]
        found = proposals_of(probabilities, video, settings)
        proposals.extend(found)
        if position < figures:
            figures_written.append(str(plot_timeline(
                probabilities, [t for t in truth if t[4] == video], found, test.class_names,
                out_dir / "timelines" / f"{video}.png", f"{video}: ground truth and predictions ({settings.proposal_rule} rule)")))
    replace_proposals(proposals, out_dir / "proposals", out_dir / "results.json")
    classes = dataset_action_classes(test.class_names)  # official: every action class of the dataset
    metrics = detection_metrics(proposals, truth, settings.thetas, classes=classes, videos=test.names)
    identity = checkpoint_identity(checkpoint, params.model, params.pretrain.seed)
    write_results(out_dir / "results.json", "detection",
                  {"by_overlap": metrics, "headline": "final epoch; mAP_a / mAP_v are the official PKU-MMD definition, "
                   "*_voc the VOC-style AP (not comparable)", "proposals": len(proposals), "history": history},
                  {"detection": asdict(settings), "model": encoder.encoder_record(),
                   "test_windows": f"non-overlapping windows of {window} frames, last one padded and masked",
                   "classes_averaged": classes},
                  {**provenance(checkpoint, identity, train), "figures": figures_written,
                   "detector": str(detector_file)},
                  device, started)
    return {"metrics": metrics, "out": str(out_dir), "proposals": len(proposals), "figures": figures_written}


DETECTOR_FILE = "detector.safetensors"


def save_detector(model: DenseDetector, out_dir: str | Path, class_names: list[str], modality: str) -> Path:
    """The fine-tuned encoder and frame head as safetensors in the detection folder (what ``usdrl export
    --detector`` puts in a model bundle); the pretraining projectors, unused here, are left out."""
    weights = {name: value for name, value in model.state_dict().items() if "_projector." not in name}
    return save_tensors_atomically(weights, Path(out_dir) / DETECTOR_FILE,
                                   {"class_names": json.dumps(list(class_names)), "modality": modality})
