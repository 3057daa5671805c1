"""Semi-supervised evaluation (SPEC.md 5): fine-tune the whole network on a fixed-seed random 1% or 10%
of the labelled training split, evaluate on the full test split.

The paper does not publish its recipe; the default is the standard one of MAMP's semi-supervised
configs: AdamW with layer-wise learning-rate decay, warm-up then cosine, label smoothing, drop path,
random crops of ratio U(0.5, 1) and small random rotations. Every number lives in params.yaml.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from usdrl.data.store import SkeletonSplit
from usdrl.evaluate.features import downstream_batches
from usdrl.nn.augment import random_crop_resize
from usdrl.nn.encoders import SkeletonModel
from usdrl.settings.sections import AugmentSection, FinetuneSection
from usdrl.training.loop import MixedPrecision, RunningTotals, progress_bar, set_learning_rate, warmup_cosine_rate
from usdrl.training.runtime import autocast_context, autocast_settings, collate_trimmed


def labelled_subset(num_samples: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a fixed-seed random ``fraction`` of the training split (at least 2)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    count = max(2, int(round(fraction * num_samples)))
    return np.sort(np.random.default_rng(seed).choice(num_samples, size=count, replace=False))


def layer_parameter_groups(model: SkeletonModel, settings: FinetuneSection) -> list[dict]:
    """Head at the full rate; layer k of L at rate * decay^(L - k); embeddings and positions at decay^(L + 1)."""
    layers = model.config.num_layers
    groups: dict[int, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or "projector" in name:
            continue
        if name.startswith("head."):
            depth = 0
        elif ".temporal_layers." in name or ".spatial_layers." in name:
            depth = layers - int(name.split("_layers.")[1].split(".")[0])
        else:
            depth = layers + 1
        groups.setdefault(depth, []).append(parameter)
    return [{"params": params, "lr_scale": settings.layer_decay ** depth} for depth, params in sorted(groups.items())]


def random_rotation(x: torch.Tensor, max_radians: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each sample (N, C=3, T, V, M) by random angles in [-max, max] about x, y and z."""
    if x.shape[1] != 3 or max_radians == 0:
        return x
    angles = (torch.rand((x.shape[0], 3), generator=generator, device=x.device) * 2 - 1) * max_radians
    cosine, sine = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cosine[:, 0]), torch.zeros_like(cosine[:, 0])
    rotate_x = torch.stack([one, zero, zero, zero, cosine[:, 0], -sine[:, 0], zero, sine[:, 0], cosine[:, 0]], 1).view(-1, 3, 3)
    rotate_y = torch.stack([cosine[:, 1], zero, sine[:, 1], zero, one, zero, -sine[:, 1], zero, cosine[:, 1]], 1).view(-1, 3, 3)
    rotate_z = torch.stack([cosine[:, 2], -sine[:, 2], zero, sine[:, 2], cosine[:, 2], zero, zero, zero, one], 1).view(-1, 3, 3)
    rotation = (rotate_z @ rotate_y @ rotate_x).to(x.dtype)
    return torch.einsum("ndc,nctvm->ndtvm", rotation, x)


@torch.no_grad()
def evaluate_classifier(model: SkeletonModel, split: SkeletonSplit, modality: str, device: torch.device,
                        batch_size: int = 256, precision: str = "auto") -> np.ndarray:
    """Class scores (N, classes) of the split on the deterministic downstream input."""
    model.eval()
    dtype, _ = autocast_settings(device, precision)
    scores = []
    for _, x in downstream_batches(split, batch_size, model.config.clip_frames, device):
        with autocast_context(device, dtype):
            scores.append(model(x, modality)["logits"].float().cpu())
    return torch.cat(scores).numpy()


def finetune(model: SkeletonModel, train: SkeletonSplit, test: SkeletonSplit, positions: np.ndarray,
             settings: FinetuneSection, device: torch.device, seed: int, modality: str = "joint",
             precision: str = "auto", progress: bool = False) -> dict:
    """Fine-tune ``model`` (with a head) on ``train`` positions; returns metrics, history and test scores."""
    if model.head is None:
        raise ValueError("fine-tuning needs a model with a classification head")
    model = model.to(device)
    optimizer = torch.optim.AdamW(layer_parameter_groups(model, settings), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    mixed_precision = MixedPrecision(device, precision)
    augment = AugmentSection(crop_scale=tuple(settings.crop_scale), minimum_crop=1)
    generator = torch.Generator(device=device).manual_seed(seed)
    order_rng = np.random.default_rng(seed)
    steps_per_epoch = max(1, math.ceil(len(positions) / settings.batch_size))
    total_steps, warmup_steps = settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch
    torch.manual_seed(seed)
    history, step = [], 0
    for epoch in progress_bar(range(settings.epochs), "fine-tune", progress):
        model.train()
        shuffled = order_rng.permutation(positions)
        totals = RunningTotals("train_loss")
        for start in range(0, len(shuffled), settings.batch_size):
            batch = shuffled[start:start + settings.batch_size]
            if len(batch) < 2:  # BatchNorm-free model, but one sample gives a degenerate step; skip it
                continue
            rate = warmup_cosine_rate(settings.learning_rate, step, warmup_steps, total_steps)
            set_learning_rate(optimizer, rate)  # times each group's layer-wise lr_scale
            x, frames = collate_trimmed([(torch.from_numpy(train.sample(p)), int(train.num_frames[p])) for p in batch])
            x = random_crop_resize(x.to(device), frames.to(device), generator, augment, model.config.clip_frames)
            x = random_rotation(x, settings.rotation_radians, generator)
            labels = torch.as_tensor(train.label[batch], device=device)
            with mixed_precision.autocast():
                logits = model(x, modality)["logits"]
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)
            mixed_precision.step(loss, optimizer)
            totals.add(len(batch), train_loss=loss.item())
            step += 1
        history.append({"epoch": epoch + 1, "lr": rate, **totals.means(len(positions))})
    scores = evaluate_classifier(model, test, modality, device, precision=precision)
    top1 = float((scores.argmax(1) == test.label).mean())
    return {"metrics": {"top1": top1}, "history": history, "test_scores": scores}
