"""Results files: metrics with the exact settings, checksums, revision, device and time."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from usdrl.data.atomic_files import write_json_atomically
from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.fingerprint import file_sha256
from usdrl.data.project_paths import paths_relative_to_project, project_root_of
from usdrl.data.store import SkeletonSplit, load_split
from usdrl.evaluate.features import RANDOM

RESULTS_FIELDS = ("protocol", "metrics", "settings", "provenance", "device", "elapsed_seconds")  # write_results'
SOURCES = ("usdrl", "notebooks", "params.yaml", "dvc.yaml")  # what makes a result; not results/ or figures/
def write_project_json(path: str | Path, content: dict[str, Any]) -> Path:
    """A results JSON written atomically, its paths inside the project it lies in recorded relative to that root."""
    return write_json_atomically(path, paths_relative_to_project(content, project_root_of(path)))


def git_revision() -> str | None:
    """HEAD, with "+modified" when the sources (not the pipeline's own outputs) differ from it."""
    try:
        package = Path(__file__).resolve().parent
        output = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=package)
        lines = output.stdout.split()
        if len(lines) != 2:
            return None
        top, revision = lines
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *SOURCES],
                               capture_output=True, text=True, timeout=5, cwd=top).stdout.strip()
        return revision + ("+modified" if dirty else "") if revision else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(device: torch.device) -> str:
    """The device as results files record it: the GPU's name, or ``cpu (<machine>, <threads> threads)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(checkpoint: str | Path | None, identity: str, split: SkeletonSplit) -> dict[str, Any]:
    """Where a result came from: the checkpoint (and its sha256), the data and its manifest's sha256."""
    random = checkpoint in (None, RANDOM)
    return {"checkpoint": RANDOM if random else str(checkpoint), "checkpoint_sha256": None if random else identity,
            "data_root": str(split.root),
            "data_manifest_sha256": file_sha256(split.root / MANIFEST_NAME),
            "dataset": split.manifest.get("dataset"), "benchmark": split.benchmark,
            "samples": {name: split.manifest.get("counts", {}).get(f"{split.benchmark}/{name}", {}).get("total")
                        for name in ("train", "test")}}  # the benchmark's split sizes, for the tables


def recorded_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """The provenance every results file records: where the result came from (``provenance``, with what else a
    protocol adds), the git revision and the torch version."""
    return {**provenance, "git_revision": git_revision(), "torch": torch.__version__}


def results_provenance(checkpoint: str | Path, data_root: str | Path, benchmark: str) -> dict[str, Any]:
    """The recorded provenance (``recorded_provenance``) of a result computed from a checkpoint of ours and the
    ``train`` split of a prepared dataset: the fields a protocol's results file holds."""
    return recorded_provenance(provenance(checkpoint, file_sha256(Path(checkpoint)),
                                          load_split(data_root, benchmark, "train")))


def write_results(path: str | Path, protocol: str, metrics: dict[str, Any], settings: dict[str, Any],
                  provenance: dict[str, Any], device: torch.device, started: float) -> Path:
    """One JSON file per command run; written atomically, paths inside the project relative to its root."""
    content = {
        "protocol": protocol,
        "metrics": metrics,
        "settings": settings,
        "provenance": recorded_provenance(provenance),
        "device": device_description(device),
        "elapsed_seconds": round(time.perf_counter() - started, 3),
    }
    return write_project_json(path, content)


def is_results_file(path: str | Path) -> bool:
    """Whether ``path`` is a results file of ``write_results``: a JSON object with every field it writes."""
    content = json.loads(Path(path).read_text())
    return isinstance(content, dict) and set(RESULTS_FIELDS) <= set(content)
