"""Summary of a prepared dataset (its picture is ``usdrl.plots.plot_samples``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.store import read_manifest

SUMMARY_FIELDS = ("dataset", "kind", "layout", "samples", "classes", "frames", "splits", "per_class")


def is_summary_file(path: str | Path) -> bool:
    """Whether ``path`` is a JSON summary that ``usdrl inspect --json`` wrote: an object with summarize's fields."""
    import json

    content = json.loads(Path(path).read_text())
    return isinstance(content, dict) and set(SUMMARY_FIELDS) <= set(content)


def summarize(root: str | Path) -> dict[str, Any]:
    """Counts per split and class and length statistics, from the manifest and the frame counts."""
    root = Path(root)
    manifest = read_manifest(root)
    num_frames = np.load(root / "num_frames.npy")
    summary = {
        "dataset": manifest.get("dataset"),
        "kind": manifest.get("kind"),
        "layout": manifest["layout"]["name"],
        "samples": manifest["num_samples"],
        "classes": len(manifest["class_names"]),
        "frames": {"min": int(num_frames.min()), "median": float(np.median(num_frames)),
                   "mean": float(num_frames.mean()), "max": int(num_frames.max())},
        "splits": {key: value["total"] for key, value in manifest["counts"].items()},
        "empty_splits": manifest.get("empty_splits", []),
        "excluded": len(manifest.get("excluded", [])),
        "skipped": len(manifest.get("skipped", [])),
    }
    counts = {key: value["per_class"] for key, value in manifest["counts"].items()}
    summary["per_class"] = {name: {key: per_class[index] for key, per_class in counts.items()}
                            for index, name in enumerate(manifest["class_names"])}
    return summary


