"""Pretraining throughput for a named model size on the current device, printed as JSON.

    python benchmarks/pretraining.py --size tiny --batch-size 64 --steps 5
    python benchmarks/pretraining.py --size paper --batch-size 356 --device cuda   # the released setting

Measures augmentation samples/s (4 views of a batch, on the device), training samples/s (views, the
encoder over all views, projectors, loss, backward, Adam step, under the run's precision) and peak
memory. Random skeletons stand in for data, so no dataset is needed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from usdrl.augment import AugmentConfig, make_views
from usdrl.config import LossSection, ModelSection
from usdrl.model import EncoderConfig, SkeletonModel, count_parameters
from usdrl.train import (PretrainingObjective, autocast_context, autocast_settings, loss_terms, peak_memory_megabytes,
                         resolve_device)

SIZES = {"tiny": 64, "small": 256, "paper": 1024}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--backbone", choices=("dste", "sttr"), default="dste")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    arguments = parser.parse_args()
    device = resolve_device(arguments.device)
    torch.manual_seed(0)
    config = EncoderConfig(**{**ModelSection().__dict__, "hidden_size": SIZES[arguments.size], "backbone": arguments.backbone})
    model = SkeletonModel(config).to(device)
    objective = PretrainingObjective(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    dtype, needs_scaler = autocast_settings(device, arguments.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
    generator = torch.Generator(device=device).manual_seed(0)
    batch = arguments.batch_size
    x = torch.randn(batch, 3, 300, 25, 2, device=device)
    num_frames = torch.randint(40, 301, (batch,), device=device)
    augment = AugmentConfig()

    make_views(x, num_frames, generator, augment)  # warm-up
    synchronise(device)
    started = time.perf_counter()
    for _ in range(arguments.steps):
        make_views(x, num_frames, generator, augment)
    synchronise(device)
    augmentation_rate = batch * arguments.steps / (time.perf_counter() - started)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        views = make_views(x, num_frames, generator, augment)
        with autocast_context(device, dtype):
            projections = objective(views, "joint")
        total = loss_terms(projections, LossSection())["total"]
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(total.detach())

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronise(device)
    started = time.perf_counter()
    for _ in range(arguments.steps):
        step()
    synchronise(device)
    training_rate = batch * arguments.steps / (time.perf_counter() - started)
    print(json.dumps({
        "size": arguments.size, "backbone": arguments.backbone, "hidden_size": config.hidden_size,
        "parameters_millions": round(count_parameters(model) / 1e6, 2), "batch_size": batch,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "precision": str(dtype or torch.float32),
        "augmentation_samples_per_second": round(augmentation_rate, 1),
        "training_samples_per_second": round(training_rate, 1),
        "peak_memory_mb": round(peak_memory_megabytes(device), 1),
        "torch": torch.__version__, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }, indent=1))


if __name__ == "__main__":
    main()
