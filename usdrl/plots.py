"""The figures of the notebooks: one function per figure, each saved under figures/ by ``save_figure``.

Every function takes what its notebook already holds (results files, metrics, rows, arrays), draws with
matplotlib's Agg backend and returns the path of the PNG it wrote. The 2-D maps of feature spaces (t-SNE,
UMAP) are here too: they exist only to be drawn.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.atomic_files import atomic_file
from usdrl.data.store import available_splits, load_split
from usdrl.skeleton import SkeletonLayout

SOFTWARE_TAG = "usdrl"  # the PNG "Software" text of every figure save_figure writes (is_figure_of_ours)
EMBEDDING_METHODS = ("tsne", "umap")  # embed_in_plane's methods, in the order notebook 07 draws them


def _pyplot():
    """matplotlib.pyplot on the Agg backend (figures go to files; the notebooks show the files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure to a temporary name, rename it into place, close it; a PNG carries the
    "Software" text ``SOFTWARE_TAG``."""
    import matplotlib.pyplot as plt

    path = Path(path)
    metadata = {"Software": SOFTWARE_TAG} if path.suffix.lower() == ".png" else None
    try:
        with atomic_file(path, suffix=path.suffix) as temporary:  # savefig takes the format from the extension
            figure.savefig(temporary, dpi=dpi, metadata=metadata)
    finally:
        plt.close(figure)
    return path


def is_figure_of_ours(path: str | Path) -> bool:
    """Whether ``path`` is a PNG that ``save_figure`` wrote (its "Software" text is ``SOFTWARE_TAG``)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.format == "PNG" and image.info.get("Software") == SOFTWARE_TAG


def copy_figure(source: str | Path, path: str | Path) -> Path:
    """Copy a figure another function wrote (e.g. a detection timeline) to ``path``, atomically."""
    with atomic_file(path) as temporary:
        shutil.copyfile(source, temporary)
    return Path(path)


def plot_loss_curves(history: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Total loss and its three parts per epoch, from the epoch records of a run's log
    (``usdrl.project.report.pretraining_history``)."""
    plt = _pyplot()
    epochs = [record["epoch"] for record in history]
    figure, axes = plt.subplots(1, 4, figsize=(13, 2.8))
    for axis, key in zip(axes, ("total", "similarity", "variance_covariance", "cross_correlation")):
        axis.plot(epochs, [record[key] for record in history], marker="o", markersize=3)
        axis.set_title(key.replace("_", " "), fontsize=9)
        axis.set_xlabel("epoch")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_probe_curves(results_files: Mapping[str, str | Path], path: str | Path, title: str) -> Path:
    """Test accuracy per probe epoch, one curve per linear-probe results file (label -> file).

    The curves show the history only; the probe's result is its last epoch (the results file's top1)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3))
    for label, results_file in results_files.items():
        history = json.loads(Path(results_file).read_text())["metrics"]["history"]
        axis.plot([h["epoch"] for h in history], [100 * h["test_accuracy"] for h in history], label=label)
    axis.set_xlabel("probe epoch")
    axis.set_ylabel("test accuracy (%)")
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_semi_supervised(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Top-1 accuracy against the labelled fraction, one line per encoder (in name order).

    ``rows``: one per fine-tuning result, with ``labels`` (the fraction as text, e.g. "10%", the x position),
    ``encoder`` and ``top1`` (a fraction)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    for encoder in sorted({row["encoder"] for row in rows}):
        group = [row for row in rows if row["encoder"] == encoder]
        axis.plot([row["labels"] for row in group], [100 * row["top1"] for row in group], marker="o", label=encoder)
    axis.set_ylabel("test accuracy (%)")
    axis.set_xlabel("labelled fraction")
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_retrieval(metrics: Mapping[str, Mapping[str, float]], path: str | Path, title: str) -> Path:
    """kNN accuracies as bars, one colour per encoder: ``metrics`` maps the encoder's short name
    ("pretrained", "random") to its retrieval metrics (knn1, knn5 ..., fractions)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4, 3))
    for encoder, values in metrics.items():
        axis.bar([f"{name}\n{encoder}" for name in values], [100 * value for value in values.values()])
    axis.set_ylabel("accuracy (%)")
    axis.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path)


def subsample_positions(count: int, most: int, seed: int = 0) -> np.ndarray:
    """At most ``most`` of ``count`` positions, drawn once by a seeded permutation: the same clips for every
    encoder and every map of a figure."""
    return np.random.default_rng(seed).permutation(count)[:most]


def cache_compiled_umap() -> int:
    """Keep UMAP's numba-compiled functions on disk, so that only the first process on a machine compiles them.

    umap-learn and pynndescent compile about 250 functions without numba's ``cache=True``, in every process that
    fits a UMAP; cached, later processes load them (docs/benchmarks.md).
    The cache lives where numba keeps caches (the package's __pycache__, or the user's cache folder when that
    is not writable) and numba recompiles when the source or the CPU changes. Returns how many functions it
    switched on. A numba without these internals, or a cache folder that cannot be made, leaves UMAP uncached
    (slower, same result); an error while writing the cache (a full disk) surfaces from the UMAP fit. Two
    processes filling the same cache at once may at worst recompile; ``dvc repro`` runs one stage at a time."""
    import sys

    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return 0
    switched = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in ("umap", "pynndescent"):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(getattr(value, "_cache", None), NullCache):
                try:
                    value.enable_caching()
                    switched += 1
                except Exception:  # a function numba cannot cache (e.g. a closure) stays compiled per process
                    continue
    return switched


def embed_in_plane(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, D) features to (N, 2) points: ``"tsne"`` (PCA start, perplexity 30) or ``"umap"`` (15 neighbours)."""
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(features)
    if method == "umap":
        import umap

        cache_compiled_umap()
        return umap.UMAP(n_neighbors=15, random_state=seed, n_jobs=1).fit_transform(features)  # seeded: one job
    raise ValueError(f"unknown embedding method {method!r}; one of {', '.join(EMBEDDING_METHODS)}")


def plot_embedding(points: np.ndarray, labels: np.ndarray, class_names: list[str], axis, title: str) -> None:
    """(N, 2) points on ``axis``, coloured by class (20 colours, repeated past 20 classes)."""
    colours = _pyplot().get_cmap("tab20")
    for label in np.unique(labels):
        chosen = labels == label
        axis.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours(int(label) % 20),
                     label=class_names[int(label)][:18])
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])


def plot_embeddings(points: Mapping[str, np.ndarray], labels: np.ndarray, class_names: list[str], method: str,
                    path: str | Path, title: str) -> Path:
    """One map per encoder side by side (``points`` maps its name to (N, 2) points of the same N clips), with
    the class legend beside the last one."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(points), figsize=(5.5 * len(points), 4.8), squeeze=False)
    for axis, (name, encoder_points) in zip(axes[0], points.items()):
        plot_embedding(encoder_points, labels, class_names, axis, f"{method.upper()}: {name}")
    axes[0, -1].legend(fontsize=6, markerscale=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_alpha_curve(alphas: list[float], linear: list[float], retrieval: list[float], path: str | Path,
                     title: str) -> Path:
    """Linear-probe and kNN-1 accuracy against alpha (the CA weight of a DST layer), the paper's Figure 4."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(alphas, [100 * v for v in linear], marker="o", label="linear probe")
    axis.plot(alphas, [100 * v for v in retrieval], marker="s", label="kNN-1")
    axis.set_xlabel("alpha (CA weight)")
    axis.set_ylabel("accuracy (%)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


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
    plt = _pyplot()
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


def plot_timeline(probabilities: np.ndarray, truth: list[tuple], proposals: list[tuple], class_names: list[str],
                  path: str | Path, title: str, top: int = 30) -> Path:
    """Ground truth and the top-scoring predicted segments of one video on one timeline, coloured by class."""
    plt = _pyplot()
    colours = plt.get_cmap("tab20")
    figure, axes = plt.subplots(3, 1, figsize=(12, 4.2), sharex=True, gridspec_kw={"height_ratios": [1, 1, 1.4]})
    for row, (segments, name) in enumerate(((truth, "ground truth"), (sorted(proposals, key=lambda p: -p[3])[:top], f"top {top} proposals"))):
        for label, start, end, score, _ in segments:
            axes[row].broken_barh([(start, end - start)], (0, 1), color=colours((label - 1) % 20),
                                  alpha=1.0 if row == 0 else min(1.0, 0.3 + float(score)))
            if row == 0:
                axes[row].text((start + end) / 2, 0.5, class_names[label - 1][:12], ha="center", va="center", fontsize=6)
        axes[row].set_yticks([])
        axes[row].set_ylabel(name, rotation=0, ha="right", fontsize=8)
    axes[2].plot(1 - probabilities[:, 0], color="black", linewidth=0.8)
    axes[2].set_ylabel("P(action)", rotation=0, ha="right", fontsize=8)
    axes[2].set_ylim(0, 1)
    axes[2].set_xlabel("frame")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path, dpi=90)
