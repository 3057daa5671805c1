"""Feed rate of the pretraining input pipeline: samples/s read and collated from a memory-mapped store, as JSON.

    python benchmarks/feed_rate.py                       # 2,000 NTU-shaped samples (0.36 GB), workers 0 2 4
    python benchmarks/feed_rate.py --samples 200 --batches 3 --workers 0 --pin off   # a quick look

Writes an NTU-shaped store (N x 3 x 300 x 25 x 2 float32, valid lengths drawn from 32..300 with a median near
NTU's) through the project's writer into a temporary folder (removed afterwards unless ``--keep``), then times
the batches exactly as ``usdrl.training.pretrain`` feeds them (``epoch_batches`` and ``training_loader``) for each number of
workers and pin_memory setting (pin_memory only where CUDA is: without it pinning does nothing). The store is
read once before the timings, so every setting reads it from the page cache. An epoch spans ``--epoch-samples`` positions (default: NTU-60 xsub train's
40,091) that cycle over the stored rows, so a timed run holds as many batches as a real epoch's start without
a store of that size. ``--reference`` also times the per-sample pipeline that ``usdrl.training.pretrain`` used before
(a Dataset of single samples, ``collate_trimmed``), on the same batches, and checks both give the same batches.

Each timing is one fresh DataLoader, started as every epoch starts one: ``first_batch_seconds`` is the time to
its first batch (worker start included), ``samples_per_second`` the rate over the batches after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from usdrl.data.import_common import write_samples
from usdrl.data.store import SkeletonSplit, load_split
from usdrl.data.writer import DatasetWriter, finish_dataset
from usdrl.skeleton import ntu25_layout
from usdrl.training.pretrain import epoch_batches, training_loader
from usdrl.training.runtime import collate_trimmed

NTU60_XSUB_TRAIN = 40_091
FRAMES, JOINTS, PERSONS = 300, 25, 2


def valid_lengths(count: int, rng: np.random.Generator) -> np.ndarray:
    """NTU-like valid lengths: log-normal around 75 frames, cut to 32..300."""
    return np.clip(np.round(rng.lognormal(np.log(75), 0.45, count)), 32, FRAMES).astype(np.int32)


def write_store(out: Path, count: int, seed: int = 0) -> Path:
    """An NTU-shaped trimmed store of ``count`` random samples, zero past each valid length; one split all/train."""
    rng = np.random.default_rng(seed)
    lengths = valid_lengths(count, rng)

    def block(start: int, stop: int) -> np.ndarray:
        x = rng.standard_normal((stop - start, 3, FRAMES, JOINTS, PERSONS), dtype=np.float32)
        frame = np.arange(FRAMES)[None, :]
        x *= (frame < lengths[start:stop, None])[:, None, :, None, None]
        return x

    label = rng.integers(0, 60, count)
    with DatasetWriter(out) as writer:
        write_samples(writer, block, count, (3, FRAMES, JOINTS, PERSONS))
        finish_dataset(writer, kind="trimmed", layout=ntu25_layout(), class_names=[f"A{c + 1:03d}" for c in range(60)],
                       label=label, num_frames=lengths, names=[f"sample{i:05d}" for i in range(count)], ids={},
                       splits={("all", "train"): np.arange(count)},
                       details={"dataset": "feed-rate benchmark", "sources": {}, "excluded": [], "skipped": [],
                                "preprocessing": {}, "input_fingerprint": f"feed-rate:{count}:{seed}"})
    return out


def cycled(split: SkeletonSplit, count: int) -> SkeletonSplit:
    """The split with ``count`` positions cycling over its rows (the same memory map)."""
    take = np.arange(count) % len(split)
    return dataclasses.replace(split, indices=split.indices[take], label=split.label[take],
                               num_frames=split.num_frames[take], names=[split.names[i] for i in take])


class PerSample(torch.utils.data.Dataset):
    """The per-sample reference: one (sample (C, T, V, M), valid frames) per index, collated by collate_trimmed."""

    def __init__(self, split: SkeletonSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.split.sample(position)), int(self.split.num_frames[position])


def reference_loader(split: SkeletonSplit, batches: list[np.ndarray], workers: int, pin_memory: bool):
    return torch.utils.data.DataLoader(PerSample(split), batch_sampler=batches, collate_fn=collate_trimmed,
                                       num_workers=workers, pin_memory=pin_memory, persistent_workers=False)


def warm_read(split: SkeletonSplit, rows: int = 256) -> None:
    """Read the whole memory-mapped store once (into the page cache)."""
    for start in range(0, len(split.x), rows):
        float(np.asarray(split.x[start:start + rows]).sum())


def time_loader(loader) -> dict[str, float]:
    """Time to the first batch, and samples/s over the rest (each batch's x summed once, as a consumer touches it)."""
    started = time.perf_counter()
    iterator = iter(loader)
    x, _ = next(iterator)
    float(x[:, :, :1].sum())
    first = time.perf_counter() - started
    samples, started = 0, time.perf_counter()
    for x, frames in iterator:
        float(x[:, :, :1].sum())
        samples += len(frames)
    elapsed = time.perf_counter() - started
    return {"first_batch_seconds": round(first, 3), "samples_per_second": round(samples / elapsed, 1) if samples else None,
            "timed_samples": samples}


def same_batches(split: SkeletonSplit, batches: list[np.ndarray]) -> bool:
    """Whether training_loader and the per-sample reference give the same frames and valid lengths."""
    for (x, frames), (y, reference_frames) in zip(training_loader(split, batches, 0, False),
                                                   reference_loader(split, batches, 0, False)):
        if not torch.equal(frames, reference_frames) or x.shape != y.shape:
            return False
        valid = torch.arange(x.shape[2])[None, :] < frames.clamp(min=1)[:, None]  # (N, T')
        if not torch.equal(x * valid[:, None, :, None, None], y * valid[:, None, :, None, None]):
            return False
    return True


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="rows written to the store (2,000: 0.36 GB)")
    parser.add_argument("--epoch-samples", type=int, default=NTU60_XSUB_TRAIN,
                        help="positions of the timed split, cycling over the rows")
    parser.add_argument("--batch-size", type=int, default=356, help="pretrain.batch_size (356 released)")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per setting (after the first)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--pin", choices=("on", "off", "both"), default="both", help="pin_memory")
    parser.add_argument("--reference", action="store_true", help="also time the per-sample pipeline")
    parser.add_argument("--root", help="write the store here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store")
    arguments = parser.parse_args(argv)
    if arguments.samples < 1 or arguments.batch_size < 1 or arguments.batches < 0:
        parser.error("--samples and --batch-size must be positive, --batches at least 0")
    if any(workers < 0 for workers in arguments.workers):
        parser.error("--workers takes numbers of at least 0")
    if arguments.epoch_samples < arguments.batch_size * (arguments.batches + 1):
        arguments.epoch_samples = arguments.batch_size * (arguments.batches + 1)
    return arguments


def main(argv: list[str] | None = None) -> dict:
    arguments = parse_arguments(argv)
    folder = Path(arguments.root) if arguments.root else Path(tempfile.mkdtemp(prefix="usdrl-feed-rate-"))
    store = folder / "store"
    try:
        started = time.perf_counter()
        write_store(store, arguments.samples)
        written = time.perf_counter() - started
        split = cycled(load_split(store, "all", "train"), arguments.epoch_samples)
        batches = epoch_batches(len(split), arguments.batch_size, 0, 0, 0, 1)[:arguments.batches + 1]
        pins = {"on": [True], "off": [False], "both": [False, True]}[arguments.pin]
        if not torch.cuda.is_available():
            pins = [False]
        started = time.perf_counter()
        warm_read(split)
        warmed = time.perf_counter() - started
        results = []
        for workers in arguments.workers:
            for pin in pins:
                row = {"workers": workers, "pin_memory": pin,
                       **time_loader(training_loader(split, batches, workers, pin))}
                if arguments.reference:
                    reference = time_loader(reference_loader(split, batches, workers, pin))
                    row["reference"] = reference
                    if row["samples_per_second"] and reference["samples_per_second"]:
                        row["speedup_over_reference"] = round(row["samples_per_second"]
                                                              / reference["samples_per_second"], 2)
                results.append(row)
        report = {
            "store": {"rows": arguments.samples, "gigabytes": round(os.path.getsize(store / "x.npy") / 1e9, 2),
                      "write_seconds": round(written, 1), "first_read_seconds": round(warmed, 2), "median_valid_frames": float(np.median(split.num_frames))},
            "epoch_samples": arguments.epoch_samples, "pin_memory_timed": pins, "batch_size": arguments.batch_size,
            "timed_batches": max(len(batches) - 1, 0),
            **({"same_batches_as_reference": same_batches(split, batches[:2])} if arguments.reference else {}),
            "results": results,
            "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        }
    finally:
        if not arguments.keep:
            shutil.rmtree(store if arguments.root else folder, ignore_errors=True)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
