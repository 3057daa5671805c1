"""Summary of a prepared dataset and a picture of a few skeleton frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.store import available_splits, load_split, read_manifest
from usdrl.plots import save_figure
from usdrl.skeleton import SkeletonLayout

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


def _draw_skeleton(axis, frame: np.ndarray, layout: SkeletonLayout, colour: str) -> None:
    """frame (C, V) of one person, drawn as x (horizontal) against y (vertical)."""
    if not np.any(frame):
        return
    for child, parent in layout.bones:
        if child == parent:
            continue
        axis.plot([frame[0, child], frame[0, parent]], [frame[1, child], frame[1, parent]], color=colour, linewidth=1.5)
    axis.scatter(frame[0], frame[1], s=6, color=colour)


def plot_samples(root: str | Path, path: str | Path, count: int = 4, frames_per_sample: int = 5) -> Path:
    """A PNG grid: ``count`` samples of the first split, each at ``frames_per_sample`` evenly spaced frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in available_splits(root)]
    for benchmark, split in splits:
        try:
            data = load_split(root, benchmark, split)
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"{root}: no non-empty split to draw")
    layout = data.layout
    count = min(count, len(data))
    figure, axes = plt.subplots(count, frames_per_sample, figsize=(2.2 * frames_per_sample, 2.6 * count), squeeze=False)
    chosen = np.linspace(0, len(data) - 1, count).round().astype(int)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for row, position in enumerate(chosen):
        sample = data.sequence(position) if data.untrimmed else data.sample(position)  # (C, T, V, M)
        valid = int(data.num_frames[position])
        for column, time in enumerate(np.linspace(0, max(valid - 1, 0), frames_per_sample).round().astype(int)):
            axis = axes[row, column]
            for person in range(sample.shape[3]):
                _draw_skeleton(axis, sample[:, time, :, person], layout, colours[person % len(colours)])
            axis.set_aspect("equal")
            axis.set_xticks([])
            axis.set_yticks([])
            title = f"frame {time + 1}"
            if column == 0:
                title = f"{data.names[position]}\n{data.class_names[data.label[position]][:24]}\n" + title
            axis.set_title(title, fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path, dpi=90)
