"""The canonical on-disk form of a dataset, written atomically and read memory-mapped.

One directory per dataset::

    manifest.json            layout, classes, counts, sources, exclusions, preprocessing
    x.npy                    float32 (N, C, T, V, M)   trimmed datasets, zero-padded to T
    num_frames.npy           int32 (N,)                valid frames of each sample
    frames.npy               float32 (F, C, V, M)      untrimmed datasets: all sequences' frames, concatenated
    offsets.npy              int64 (N + 1,)            sequence i is frames[offsets[i]:offsets[i + 1]]
    frame_labels.npy         int16 (F,)                0 background, c = action c (1-based class)
    instances.npy            int64 (K, 5)              sequence, label (1-based), start, end (exclusive), confidence
    label.npy                int64 (N,)                0-based class
    names.json               sample names
    ids.npz                  per-sample ids (subject, camera, setup, replication, view, ...)
    splits/<benchmark>_<split>.npy   int64 indices into the samples, never copies

Here: reading a prepared dataset (``load_split``, ``SkeletonSplit``, ``read_manifest``, ``available_splits``).
Writing is ``usdrl.data.writer``, the names and version of the form ``usdrl.data.dataset_format``, the
up-to-date check ``usdrl.data.fingerprint`` and atomic file writing ``usdrl.data.atomic_files``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.dataset_format import MANIFEST_NAME, SPLITS_FOLDER
from usdrl.data.errors import DataError
from usdrl.skeleton import SkeletonLayout, layout_from_dict
from usdrl.validation import check_manifest, read_json


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the prepared dataset in ``root``; a DataError saying how to prepare it when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset directory {root} does not exist; prepare it first (usdrl prepare ... --out {root})")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{root} has no {MANIFEST_NAME}: it is not a prepared dataset, or its preparation did not "
                        f"finish; run usdrl prepare/import again with --out {root}")
    return check_manifest(read_json(path, DataError, f"prepare the dataset again (usdrl prepare/import --out {root})"),
                          str(path), DataError)


@dataclass
class SkeletonSplit:
    """One split of a prepared dataset. Arrays are memory-mapped; samples are read on access.

    Trimmed: ``sample(i)`` -> (C, T, V, M). Untrimmed: ``sequence(i)`` -> (C, L, V, M) and ``frame_labels_of(i)``.
    """

    root: Path
    benchmark: str
    split: str
    manifest: dict[str, Any]
    indices: np.ndarray  # (n,) positions in the whole dataset
    label: np.ndarray  # (n,) 0-based
    num_frames: np.ndarray  # (n,)
    names: list[str]
    ids: dict[str, np.ndarray] = field(default_factory=dict)
    x: np.ndarray | None = None  # memory-mapped (N_all, C, T, V, M), trimmed only
    frames: np.ndarray | None = None  # memory-mapped (F, C, V, M), untrimmed only
    offsets: np.ndarray | None = None
    frame_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def layout(self) -> SkeletonLayout:
        """The skeleton layout of the manifest."""
        return layout_from_dict(self.manifest["layout"], source=str(self.root / MANIFEST_NAME))

    @property
    def class_names(self) -> list[str]:
        """The names of the classes, label c's at position c."""
        return list(self.manifest["class_names"])

    @property
    def num_classes(self) -> int:
        """How many classes the dataset has (not only those of this split)."""
        return len(self.manifest["class_names"])

    @property
    def untrimmed(self) -> bool:
        """True for untrimmed sequences (``sequence``), False for trimmed samples (``sample``, ``batch``)."""
        return self.frames is not None

    def sample(self, position: int) -> np.ndarray:
        """(C, T, V, M) of the split's sample at ``position``."""
        if self.x is None:
            raise DataError(f"{self.root} holds untrimmed sequences; use sequence() instead of sample()")
        return np.array(self.x[self.indices[position]])  # a writable copy of one sample

    def batch(self, positions: np.ndarray) -> np.ndarray:
        """(n, C, T, V, M) of several samples, read in file order."""
        if self.x is None:
            raise DataError(f"{self.root} holds untrimmed sequences; use sequence() instead of batch()")
        rows = self.indices[np.asarray(positions)]
        order = np.argsort(rows)
        out = np.empty((len(rows), *self.x.shape[1:]), dtype=np.float32)
        out[order] = self.x[rows[order]]
        return out

    def valid_batch(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n, C, T', V, M) float32 of several samples cut to T', the longest valid length among them (at least 1):
        each sample's valid frames (at least one) read from the memory map in file order, the frames after them
        zero. ``out``: a zero array of that shape to fill (e.g. fresh shared memory); only the valid frames are
        written, so the rest of it stays as it was."""
        if self.x is None:
            raise DataError(f"{self.root} holds untrimmed sequences; use sequence() instead of valid_batch()")
        positions = np.asarray(positions)
        rows = self.indices[positions]
        lengths = np.maximum(np.asarray(self.num_frames[positions], dtype=np.int64), 1)
        longest = int(lengths.max()) if len(lengths) else 1
        shape = (len(rows), self.x.shape[1], longest, *self.x.shape[3:])
        if out is None:
            out = np.zeros(shape, dtype=np.float32)  # large: fresh pages, zero without being written
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out has shape {out.shape} ({out.dtype}); valid_batch needs {shape} float32")
        for place in np.argsort(rows, kind="stable"):
            length = lengths[place]
            out[place, :, :length] = self.x[rows[place], :, :length]
        return out

    def sequence(self, position: int) -> np.ndarray:
        """(C, L, V, M) of an untrimmed sequence."""
        if self.frames is None or self.offsets is None:
            raise DataError(f"{self.root} holds trimmed samples; use sample() instead of sequence()")
        row = self.indices[position]
        return np.asarray(self.frames[self.offsets[row]:self.offsets[row + 1]]).transpose(1, 0, 2, 3)

    def frame_labels_of(self, position: int) -> np.ndarray:
        """(L,) per-frame labels of an untrimmed sequence: 0 background, c = action c (1-based)."""
        if self.frame_labels is None or self.offsets is None:
            raise DataError(f"{self.root} holds trimmed samples without frame labels")
        row = self.indices[position]
        return np.asarray(self.frame_labels[self.offsets[row]:self.offsets[row + 1]])

    def instances(self) -> np.ndarray:
        """(K, 5) rows (position in this split, label 1-based, start, end exclusive, confidence)."""
        table = np.load(self.root / "instances.npy")
        position_of_row = {int(row): position for position, row in enumerate(self.indices)}
        keep = np.array([int(row) in position_of_row for row in table[:, 0]], dtype=bool)
        table = table[keep].copy()
        table[:, 0] = [position_of_row[int(row)] for row in table[:, 0]]
        return table


def available_splits(root: str | Path) -> list[tuple[str, str]]:
    """The (benchmark, split) pairs of the dataset in ``root``, sorted."""
    return sorted(tuple(path.stem.split("_", 1)) for path in (Path(root) / SPLITS_FOLDER).glob("*.npy"))


def load_split(root: str | Path, benchmark: str, split: str) -> SkeletonSplit:
    """The split's arrays, memory-mapped; nothing large is read until a sample is accessed."""
    root = Path(root)
    manifest = read_manifest(root)
    split_path = root / SPLITS_FOLDER / f"{benchmark}_{split}.npy"
    if not split_path.is_file():
        known = ", ".join(f"{b}/{s}" for b, s in available_splits(root)) or "none"
        raise DataError(f"{root} has no split {benchmark}/{split}; it has: {known}")
    indices = np.load(split_path)
    if indices.size == 0:
        raise DataError(f"split {benchmark}/{split} of {root} is empty: the input held no sample of it "
                        f"(check that --raw holds the whole dataset)")
    label = np.load(root / "label.npy", mmap_mode="r")
    num_frames = np.load(root / "num_frames.npy", mmap_mode="r")
    names = json.loads((root / "names.json").read_text())
    _check_split(root, split_path, indices, len(names), num_frames)
    ids: dict[str, np.ndarray] = {}
    if (root / "ids.npz").is_file():
        with np.load(root / "ids.npz") as stored:
            ids = {key: stored[key][indices] for key in stored.files}
    common = dict(
        root=root, benchmark=benchmark, split=split, manifest=manifest, indices=indices,
        label=np.asarray(label[indices]), num_frames=np.asarray(num_frames[indices]),
        names=[names[i] for i in indices], ids=ids,
    )
    if manifest.get("kind") == "untrimmed":
        return SkeletonSplit(
            **common,
            frames=np.load(root / "frames.npy", mmap_mode="r"),
            offsets=np.load(root / "offsets.npy"),
            frame_labels=np.load(root / "frame_labels.npy", mmap_mode="r"),
        )
    try:
        x = np.load(root / "x.npy", mmap_mode="r")
    except (ValueError, OSError) as error:  # a truncated or damaged array file
        raise DataError(f"{root / 'x.npy'} cannot be read ({error}); the dataset is damaged: prepare it again") from None
    if x.shape[0] != len(names) or (len(x.shape) > 2 and int(np.max(num_frames[indices])) > x.shape[2]):
        raise DataError(f"{root / 'x.npy'} holds {x.shape[0]} samples of {x.shape[2] if len(x.shape) > 2 else '?'} "
                        f"frames, which do not fit names.json ({len(names)}) and num_frames.npy; prepare it again")
    return SkeletonSplit(**common, x=x)


def _check_split(root: Path, split_path: Path, indices: np.ndarray, count: int, num_frames: np.ndarray) -> None:
    """A DataError naming the file when a split's indices are not sample positions of the dataset, or when one of
    its samples has no valid frame."""
    if not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
        raise DataError(f"{split_path} must hold a list of sample indices, got {indices.dtype} of shape "
                        f"{indices.shape}; prepare the dataset again")
    outside = indices[(indices < 0) | (indices >= count)]
    if len(outside):
        raise DataError(f"{split_path}: index {int(outside[0])} is outside the {count} samples of {root}; prepare the "
                        f"dataset again")
    if len(num_frames) != count:
        raise DataError(f"{root / 'num_frames.npy'} holds {len(num_frames)} values for {count} samples; prepare the "
                        f"dataset again")
    empty = indices[np.asarray(num_frames[indices]) < 1]
    if len(empty):
        raise DataError(f"{root / 'num_frames.npy'}: sample {int(empty[0])} has {int(num_frames[empty[0]])} valid "
                        f"frames; every sample needs at least one (remove it, or prepare the dataset again)")
