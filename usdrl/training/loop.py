"""What every training loop of the package shares: the learning-rate schedules, the head initialisation, the
step (autocast forward, scaled backward, optimiser step), the running totals of an epoch and its progress bar.

Pretraining (``usdrl.training.pretrain``), fine-tuning (``usdrl.evaluate.finetune``), dense detection fine-tuning
(``usdrl.evaluate.detector``) and the linear probe (``usdrl.evaluate.linear``) take these from here; each keeps its
own data order, loss and records. Nothing here draws a random number unless given a generator to draw from.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from usdrl.training.runtime import autocast_context, autocast_settings


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad resume); the message says what was kept."""


def step_decay_rate(base_rate: float, decay: float, milestones: Sequence[int], epoch: int) -> float:
    """The step schedule: the base rate times ``decay`` for every milestone reached (epochs 0-based, as released)."""
    passed = sum(epoch >= milestone for milestone in milestones)
    return base_rate * decay ** passed


def warmup_cosine_rate(base_rate: float, step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` optimiser steps (step 0-based), then cosine decay to 0 at
    ``total_steps``."""
    if step < warmup_steps:
        return base_rate * (step + 1) / max(1, warmup_steps)
    return base_rate * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    """Every parameter group at ``rate``, times the group's ``lr_scale`` where it has one (layer-wise decay)."""
    for group in optimizer.param_groups:
        group["lr"] = rate * group["lr_scale"] if "lr_scale" in group else rate


class MixedPrecision:
    """The precision of one training run: ``with precision.autocast():`` around the forward pass, then
    ``precision.step(loss, optimizer)`` for the backward pass and the optimiser step.

    ``precision`` as ``usdrl.training.runtime.autocast_settings`` takes it (a ConfigError for one the device lacks); the
    gradient scaler is on only where float16 needs it, and off it is a plain ``loss.backward(); optimizer.step()``.
    """

    def __init__(self, device: torch.device, precision: str = "auto") -> None:
        self.device = device
        self.dtype, needs_scaler = autocast_settings(device, precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to this run's dtype (nothing in float32)."""
        return autocast_context(self.device, self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Gradients of ``loss`` alone (earlier ones cleared), scaled where needed; one optimiser step. The
        gradients are released after the step, so the next forward pass does not hold them (peak memory)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)


class RunningTotals:
    """Weighted sums of per-step values over an epoch (a loss times its samples or frames, say), for its record."""

    def __init__(self, *names: str) -> None:
        self.sums: dict[str, float] = dict.fromkeys(names, 0.0)  # these first, at 0 even with no step; others as added

    def add(self, weight: float = 1, /, **values: float) -> None:
        """Add each value times ``weight`` to its sum (weight 1: the value itself)."""
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight

    def means(self, count: float) -> dict[str, float]:
        """Every sum divided by ``count``."""
        return {name: total / count for name, total in self.sums.items()}


def progress_bar(iterable: Iterable, description: str, enabled: bool, **options) -> tqdm:
    """A progress bar over epochs or batches that goes away when done (none when not ``enabled``)."""
    return tqdm(iterable, desc=description, disable=not enabled, leave=False, **options)
