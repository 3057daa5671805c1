"""Pretraining throughput for a named model size on the current device, printed as JSON.

    python benchmarks/pretraining.py --size tiny --batch-size 64 --steps 5
    python benchmarks/pretraining.py --size paper --batch-size 356 --device cuda   # the released setting

Measures augmentation samples/s (4 views of a batch, on the device), training samples/s (views, the
encoder over all views, projectors, loss, backward, Adam step, under the run's precision) and peak
memory. Random skeletons stand in for data, so no dataset is needed.

How close to the machine's limit: the matrix-product FLOPs of one training step are counted by PyTorch's
FlopCounterMode (forward and backward; elementwise work is not counted), divided by the step time, and
compared with a measured peak: a large square matrix product in the same precision on the same device.
``--breakdown`` adds where a step's time goes (PyTorch profiler over the timed number of steps): the matrix
products' seconds per step and the rate they run at while running, the rest, and the costliest other operations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from usdrl.nn.augment import make_views
from usdrl.nn.encoders import SkeletonModel, count_parameters
from usdrl.settings.sections import AugmentSection, LossSection, ModelSection
from usdrl.skeleton import ntu25_layout
from usdrl.training.pretrain import PretrainingObjective, loss_terms
from usdrl.training.runtime import autocast_context, autocast_settings, peak_memory_megabytes, resolve_device

SIZES = {"tiny": 64, "small": 256, "paper": 1024}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a (size x size) @ (size x size) product, the best of a few timings."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        a @ b
        synchronise(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronise(device)
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * size ** 3 / best / 1e9


MATRIX_PRODUCTS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm")


def step_breakdown(step, steps: int, device: torch.device, step_flops: float, peak: float) -> dict:
    """Seconds per step in matrix products and in everything else, from the PyTorch profiler over ``steps`` steps
    (CPU: the operators' own time; CUDA: their kernels' time), with the five costliest other operators."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        synchronise(device)
    events = profiler.key_averages()
    own = {event.key: (event.self_device_time_total if on_gpu else event.self_cpu_time_total) / 1e6 / steps
           for event in events}  # seconds per step
    total = sum(own.values())
    products = sum((event.device_time_total / 1e6 / steps) if on_gpu else own[event.key]
                   for event in events if event.key in MATRIX_PRODUCTS)
    others = sorted(((key, seconds) for key, seconds in own.items()
                     if key.startswith("aten::") and key not in MATRIX_PRODUCTS), key=lambda item: -item[1])
    return {
        "step_seconds_profiled": round(total, 4),
        "matmul_seconds_per_step": round(products, 4),
        "matmul_share_of_step": round(products / total, 3),
        "matmul_gflops_while_running": round(step_flops / products / 1e9, 1),
        "matmul_fraction_of_peak_while_running": round(step_flops / products / 1e9 / peak, 3),
        "other_seconds_per_step": round(total - products, 4),
        "costliest_other_operators_ms_per_step": {key: round(1e3 * seconds, 1) for key, seconds in others[:5]},
    }


def measure(size: str = "tiny", batch_size: int = 64, steps: int = 5, device_name: str = "auto",
            precision: str = "auto", backbone: str = "dste", clip_frames: int = 64, persons: int = 2,
            breakdown: bool = False, compile_backend: str | None = None) -> dict:
    """The report of one configuration (what ``main`` prints); ``compile_backend`` (e.g. inductor): the objective
    through ``torch.compile`` with that backend (its compilation happens in the warm-up steps, before the timing)."""
    device = resolve_device(device_name)
    torch.manual_seed(0)
    config = ModelSection(hidden_size=SIZES[size], backbone=backbone, clip_frames=clip_frames)
    layout = dataclasses.replace(ntu25_layout(), num_persons=persons)
    model = SkeletonModel(config, layout).to(device)
    objective = PretrainingObjective(model).train()
    forward = torch.compile(objective, backend=compile_backend) if compile_backend else objective
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    dtype, needs_scaler = autocast_settings(device, precision)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
    generator = torch.Generator(device=device).manual_seed(0)
    batch = batch_size
    x = torch.randn(batch, 3, 300, 25, persons, device=device)
    num_frames = torch.randint(40, 301, (batch,), device=device)
    augment = AugmentSection()

    make_views(x, num_frames, generator, augment, config.clip_frames)  # warm-up
    synchronise(device)
    started = time.perf_counter()
    for _ in range(steps):
        make_views(x, num_frames, generator, augment, config.clip_frames)
    synchronise(device)
    augmentation_rate = batch * steps / (time.perf_counter() - started)

    def step(module: torch.nn.Module = forward) -> float:
        optimizer.zero_grad(set_to_none=True)
        views = make_views(x, num_frames, generator, augment, config.clip_frames)
        with autocast_context(device, dtype):
            projections = module(views, "joint")
        total = loss_terms(projections, LossSection())["total"]
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(total.detach())

    warm_started = time.perf_counter()
    step()  # warm-up (and compilation)
    if compile_backend:
        step()
    synchronise(device)
    warm_up_seconds = time.perf_counter() - warm_started
    with FlopCounterMode(display=False) as counter:  # counted uncompiled: the same products
        step(objective)
    step_flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronise(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronise(device)
    training_rate = batch * steps / (time.perf_counter() - started)
    achieved = step_flops * training_rate / batch / 1e9
    peak = matmul_peak_gflops(device, dtype or torch.float32)
    details = step_breakdown(step, steps, device, step_flops, peak) if breakdown else {}
    return {
        "size": size, "backbone": backbone, "hidden_size": config.hidden_size,
        "clip_frames": config.clip_frames, "persons": layout.num_persons,
        "parameters_millions": round(count_parameters(model) / 1e6, 2), "batch_size": batch,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "precision": str(dtype or torch.float32), "compiled": compile_backend,
        "warm_up_seconds": round(warm_up_seconds, 2),
        "augmentation_samples_per_second": round(augmentation_rate, 1),
        "training_samples_per_second": round(training_rate, 1),
        "matmul_gflop_per_sample": round(step_flops / batch / 1e9, 3),
        "achieved_matmul_gflops": round(achieved, 1),
        f"measured_{str(dtype or torch.float32).removeprefix('torch.')}_matmul_peak_gflops": round(peak, 1),
        **({} if dtype is None else {"measured_float32_matmul_peak_gflops": round(
            matmul_peak_gflops(device, torch.float32), 1)}),
        "fraction_of_peak": round(achieved / peak, 3),
        **details,
        "peak_memory_mb": round(peak_memory_megabytes(device), 1),
        "torch": torch.__version__, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--backbone", choices=("dste", "sttr"), default="dste")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--clip-frames", type=int, default=64, help="model.clip_frames (64 released)")
    parser.add_argument("--persons", type=int, default=2, help="bodies per sample (2 NTU; 1 UTKinect)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--breakdown", action="store_true", help="also profile where a step's time goes")
    parser.add_argument("--compile", action="store_true", help="the objective through torch.compile")
    arguments = parser.parse_args()
    print(json.dumps(measure(arguments.size, arguments.batch_size, arguments.steps, arguments.device,
                             arguments.precision, arguments.backbone, arguments.clip_frames, arguments.persons,
                             arguments.breakdown, "inductor" if arguments.compile else None), indent=1))


if __name__ == "__main__":
    main()
