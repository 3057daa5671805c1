"""Linear probe on frozen features (SPEC.md 5): the released settings, trained on cached features.

Headline: the accuracy after the last epoch. Model selection, when asked for, uses a validation part
held out from the training split (whole subjects when the dataset has subject ids), never the test
split. The best test accuracy over epochs (what the released code reports) is kept only under a
name that says so.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from usdrl.nn.encoders import initialise_head
from usdrl.settings.sections import FEATURE_NORMALIZATIONS, ProbeSection
from usdrl.training.loop import MixedPrecision, RunningTotals, set_learning_rate, step_decay_rate


def feature_statistics(features: torch.Tensor, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), scale (D,)) that ``(x - mean) / scale`` applies; identity for ``"none"``."""
    if normalization not in FEATURE_NORMALIZATIONS:
        raise ValueError(f"probe feature_normalization {normalization!r}; choose one of {', '.join(FEATURE_NORMALIZATIONS)}")
    dimensions = features.shape[1]
    if normalization == "none":
        return torch.zeros(dimensions, device=features.device), torch.ones(dimensions, device=features.device)
    mean = features.mean(dim=0)
    scale = features.std(dim=0, unbiased=False)
    if normalization == "center_scale":  # one scale for every dimension: their relative sizes are kept
        return mean, torch.full_like(scale, float(scale.pow(2).mean().sqrt().clamp_min(1e-12)))
    # a constant dimension stays constant (0) instead of dividing by zero; relative so scale never matters
    return mean, scale.clamp_min(1e-6 * float(scale.max().clamp_min(1e-12)))


def validation_split(labels: np.ndarray, subjects: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions) of a training split; whole subjects go to validation."""
    rng = np.random.default_rng(seed)
    positions = np.arange(len(labels))
    if subjects is not None and len(np.unique(subjects)) > 1:
        unique = rng.permutation(np.unique(subjects))
        count = max(1, int(round(fraction * len(unique))))
        held_out = np.isin(subjects, unique[:count])
    else:
        held_out = np.zeros(len(labels), dtype=bool)
        held_out[rng.permutation(len(labels))[:max(1, int(round(fraction * len(labels))))]] = True
    return positions[~held_out], positions[held_out]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of logits (N, classes) against labels (N,)."""
    return (logits.argmax(dim=1) == labels).float().mean().item()


def train_linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                       test_labels: np.ndarray, num_classes: int, settings: ProbeSection, learning_rate: float,
                       device: torch.device = torch.device("cpu"),
                       validation: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Train Linear(2H, classes) with SGD on features; returns metrics, the per-epoch history and test scores.

    ``settings``: the probe section (schedule, momentum, weight decay, seed, feature normalisation; its
    ``validation_fraction`` is the caller's, see ``validation_split``); ``learning_rate``: the base rate, the one
    ``ProbeSection.learning_rate(backbone, dataset, benchmark)`` resolves. ``validation`` = (features, labels)
    held out from the training split, for model selection.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    x_train = torch.as_tensor(train_features, dtype=torch.float32, device=device)  # (N, D)
    mean, scale = feature_statistics(x_train, settings.feature_normalization)  # training statistics only
    x_train = (x_train - mean) / scale
    y_train = torch.as_tensor(train_labels, dtype=torch.long, device=device)
    test = _normalised(test_features, test_labels, mean, scale, device)
    if int(y_train.max()) >= num_classes or int(test[1].max()) >= num_classes:
        raise ValueError(f"labels exceed the {num_classes} classes of the head")
    head = initialise_head(nn.Linear(x_train.shape[1], num_classes), generator).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=learning_rate, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    mixed_precision = MixedPrecision(device, "fp32")  # float32 features: no autocast, no scaler
    held_out = _normalised(*validation, mean, scale, device) if validation is not None else None
    history = []
    for epoch in range(settings.epochs):
        rate = step_decay_rate(learning_rate, settings.learning_rate_decay, settings.milestones, epoch)
        set_learning_rate(optimizer, rate)
        order = torch.randperm(len(x_train), generator=generator).to(device)
        totals = RunningTotals("train_loss")
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            loss = F.cross_entropy(head(x_train[batch]), y_train[batch])
            mixed_precision.step(loss, optimizer)
            totals.add(len(batch), train_loss=loss.item())
        with torch.no_grad():
            record = {"epoch": epoch + 1, "lr": rate, **totals.means(len(order)),
                      "test_accuracy": accuracy(head(test[0]), test[1])}
            if held_out is not None:
                record["validation_accuracy"] = accuracy(head(held_out[0]), held_out[1])
        history.append(record)
    with torch.no_grad():
        scores = head(test[0]).float().cpu().numpy()
    head_state = {**head.cpu().state_dict(), "feature_mean": mean.cpu(), "feature_scale": scale.cpu()}
    return {"metrics": _probe_metrics(history, scores, test_labels), "history": history, "test_scores": scores,
            "head": head_state}


def _normalised(features: np.ndarray, labels: np.ndarray, mean: torch.Tensor, scale: torch.Tensor,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) normalised with the training statistics, labels (N,)) on ``device``."""
    return ((torch.as_tensor(features, dtype=torch.float32, device=device) - mean) / scale,
            torch.as_tensor(labels, dtype=torch.long, device=device))


def _probe_metrics(history: list[dict], scores: np.ndarray, test_labels: np.ndarray) -> dict:
    """The last epoch's accuracy (the headline), top-5, and the epoch validation selects when there is one."""
    metrics = {
        "top1": history[-1]["test_accuracy"],
        "top5": _top_k(scores, test_labels, 5),
        "best_test_accuracy_over_epochs_NOT_a_result": max(r["test_accuracy"] for r in history),
    }
    if "validation_accuracy" in history[-1]:
        chosen = max(history, key=lambda r: (r["validation_accuracy"], r["epoch"]))
        metrics["selected_epoch_by_validation"] = chosen["epoch"]
        metrics["test_accuracy_at_selected_epoch"] = chosen["test_accuracy"]
        metrics["validation_accuracy_at_selected_epoch"] = chosen["validation_accuracy"]
    return metrics


def _top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == np.asarray(labels)[:, None]).any(axis=1).mean())
