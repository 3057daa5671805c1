"""Throughput of NTU preparation: files/s of parsing and samples/s of normalisation, printed as JSON.

    python benchmarks/data_preparation.py --files 400 --workers 2

Writes official-format .skeleton files (two bodies, NTU's typical length) into a temporary folder,
then times (1) parsing alone in one process, (2) normalisation of batches, (3) the whole
``prepare_ntu`` with the given workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from usdrl.data.normalize import normalize_batch
from usdrl.data.ntu import prepare_ntu, read_skeleton_file, select_bodies


def write_files(folder: Path, count: int, frames: int, rng: np.random.Generator) -> None:
    line_tail = " 277.4 191.8 1036.2 519.1 -0.2 0.05 0.96 -0.12 2"
    for index in range(count):
        lines = [str(frames)]
        joints = rng.normal(size=(frames, 2, 25, 3)) * 0.3 + np.array([0, 0, 3.0])
        for t in range(frames):
            lines.append("2")
            for body in range(2):
                lines.append(f"720575940379{body:05d} 0 1 1 1 1 0 0.02 0.05 2")
                lines.append("25")
                lines.extend(f"{x:.7g} {y:.7g} {z:.7g}{line_tail}" for x, y, z in joints[t, body])
        # unique official names: 60 actions x 40 performers x 3 cameras per setup
        name = f"S{index // 7200 + 1:03d}C{index // 2400 % 3 + 1:03d}P{index // 60 % 40 + 1:03d}R001A{index % 60 + 1:03d}"
        (folder / f"{name}.skeleton").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--frames", type=int, default=100, help="frames per file (NTU-60 averages about 80)")
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as temporary:
        raw = Path(temporary) / "raw"
        raw.mkdir()
        write_files(raw, arguments.files, arguments.frames, rng)
        paths = sorted(raw.glob("*.skeleton"))
        start = time.perf_counter()
        samples = [select_bodies(read_skeleton_file(path)) for path in paths]
        parse_seconds = time.perf_counter() - start
        batch = np.zeros((len(samples), 3, 300, 25, 2), dtype=np.float32)
        for i, sample in enumerate(samples):
            batch[i, :, :sample.shape[1]] = sample
        start = time.perf_counter()
        for first in range(0, len(batch), 32):
            normalize_batch(batch[first:first + 32], 1, (4, 8))
        normalise_seconds = time.perf_counter() - start
        start = time.perf_counter()
        prepare_ntu("ntu60", raw, Path(temporary) / "out", workers=arguments.workers, progress=False)
        prepare_seconds = time.perf_counter() - start
    print(json.dumps({
        "files": len(paths), "frames_per_file": arguments.frames, "bodies_per_frame": 2,
        "parse_files_per_second": round(len(paths) / parse_seconds, 1),
        "normalise_samples_per_second": round(len(paths) / normalise_seconds, 1),
        "prepare_files_per_second": round(len(paths) / prepare_seconds, 1), "workers": arguments.workers,
        "estimated_ntu60_minutes_at_this_rate": round(56880 / (len(paths) / prepare_seconds) / 60, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }, indent=1))


if __name__ == "__main__":
    main()
