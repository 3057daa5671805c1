"""What a run needs of its machine: the device, the autocast precision, the seeds, peak memory, batch collation.

Training and every evaluation protocol take these from here (never from each other), so a device or precision
rule is written once.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource

import numpy as np
import torch

from usdrl.settings.sections import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """The device a setting names (auto: this process's GPU if there is one, else the CPU); a ConfigError for
    a device this machine does not have."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: no CUDA GPU is available here (or this PyTorch has no CUDA); use cpu or "
                          f"auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")
    return device


def autocast_settings(device: torch.device, precision: str = "auto") -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed).

    auto: bf16 on a GPU that supports it (else fp16 with a scaler); float32 on a CPU, where bf16 is used only when
    asked for (precision bf16; docs/benchmarks.md says why)."""
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None, False
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    if precision in ("fp16", "auto") and device.type == "cuda":
        return torch.float16, True
    raise ConfigError(f"precision {precision!r} is not available on {device} (fp16 needs a CUDA GPU); use auto, fp32 "
                      f"or bf16")


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``; no autocast (float32) when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def collate_trimmed(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples cut to the longest valid length of the batch (less to copy to the device)."""
    frames = torch.tensor([n for _, n in items])
    longest = max(int(frames.max()), 1)
    return torch.stack([x[:, :longest] for x, _ in items]), frames


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (once per run)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def peak_memory_megabytes(device: torch.device) -> float:
    """Peak memory of this process so far: allocated on a GPU, resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
