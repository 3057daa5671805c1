"""Writing a dataset in the canonical form (``usdrl.data.store``): into a temporary folder, moved into place only
when complete, and only over a folder that is absent, empty or one of our datasets (``check_output_folder``)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.atomic_files import json_text, replace_folder
from usdrl.data.dataset_format import (
    DATASET_FILES,
    DATASET_KINDS,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PREPARED_ROOT_FOLDERS,
    SPLITS_FOLDER,
)
from usdrl.data.errors import DataError
from usdrl.skeleton import SkeletonLayout


def reserve_space(path: Path) -> None:
    """Allocate the disk blocks of the whole file ``path`` (os.posix_fallocate; where the file system cannot,
    the free space is compared with its size); a DataError naming the file and the space needed when the disk
    has too little room."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
        return
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(f"{path}: not enough disk space for the dataset ({size / 1e6:.1f} MB needed for this "
                            f"file); free some space or choose another --out") from None
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    free = shutil.disk_usage(path.parent).free
    if free < size:
        raise DataError(f"{path}: not enough disk space for the dataset ({size / 1e6:.1f} MB needed for this file, "
                        f"{free / 1e6:.1f} MB free); free some space or choose another --out")


def default_workers(items: int, per_worker: int, most: int = 8) -> int:
    """Processes for ``items`` units of work: one per ``per_worker`` units, at most the cores and ``most``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(most, cores, items // per_worker))


def shrink_leading_dimension(path: Path, rows: int) -> None:
    """Cut an .npy file to its first ``rows`` rows in place (header rewritten at the same length)."""
    with open(path, "r+b") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
        header_end = handle.tell()
        if fortran_order:
            raise ValueError("cannot shrink a Fortran-ordered array")
        new_shape = (rows, *shape[1:])
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": new_shape})
        prefix_length = 10 if version == (1, 0) else 12
        room = header_end - prefix_length
        header = header.ljust(room - 1) + "\n"
        if len(header) != room:
            raise ValueError("npy header does not fit")
        handle.seek(prefix_length)
        handle.write(header.encode("latin1"))
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        handle.truncate(header_end + rows * row_bytes)


def _manifest_is_ours(path: Path) -> bool:
    """True when ``path`` is a manifest written by ``DatasetWriter.finish`` (our format_version and kind)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    return (type(version) is int and 1 <= version <= FORMAT_VERSION and manifest.get("kind") in DATASET_KINDS
            and isinstance(manifest.get("layout"), dict))


def _dataset_obstacle(folder: Path) -> str | None:
    """None when ``folder`` is a dataset of ours holding only what DatasetWriter makes, else what is in the way."""
    if not (folder / MANIFEST_NAME).exists():
        return f"{folder} (no {MANIFEST_NAME})"
    if not _manifest_is_ours(folder / MANIFEST_NAME):
        return f"{folder / MANIFEST_NAME} (not a usdrl manifest)"
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            return f"{entry} (a symbolic link)"
        if entry.name == SPLITS_FOLDER and entry.is_dir():
            for split in sorted(entry.iterdir()):
                if split.is_symlink() or not split.is_file() or split.suffix != ".npy":
                    return str(split)
        elif entry.name not in DATASET_FILES or not entry.is_file():
            return str(entry)
    return None


def _output_obstacle(folder: Path) -> str | None:
    """None when the existing folder ``folder`` may be replaced, else what is in the way: it is one of our datasets,
    or a root of them as ``prepare synthetic`` / ``prepare utkinect`` write (only ``PREPARED_ROOT_FOLDERS``)."""
    if (folder / MANIFEST_NAME).exists() or (folder / MANIFEST_NAME).is_symlink():
        return _dataset_obstacle(folder)
    for entry in sorted(folder.iterdir()):
        if entry.name not in PREPARED_ROOT_FOLDERS or entry.is_symlink() or not entry.is_dir():
            return str(entry)
        obstacle = _dataset_obstacle(entry)
        if obstacle is not None:
            return obstacle
    return None


def check_output_folder(out_dir: Path, inputs: Iterable[str | Path] = ()) -> bool:
    """True when ``out_dir`` holds a dataset of ours that may be replaced, False when it is absent or empty.

    Anything else (a file, a symbolic link, a folder holding anything our writer did not make, a folder holding one
    of ``inputs``) is a DataError naming what is in the way: nothing of the user's is ever deleted or moved.
    """
    out_dir = Path(out_dir)
    if out_dir.name in ("", ".", ".."):
        raise DataError(f"--out {str(out_dir)!r} names no new folder; name the dataset's own folder, e.g. "
                        f"--out data/my_dataset")
    for parent in out_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise DataError(f"--out {out_dir}: {parent} is a file, not a folder; choose another --out")
    if out_dir.is_symlink():
        raise DataError(f"--out {out_dir} is a symbolic link (to {os.readlink(out_dir)}); it is left alone: pass the "
                        f"folder it points to, or a new folder")
    resolved = out_dir.resolve()
    for source in inputs:
        source_path = Path(source).resolve()
        if source_path == resolved or resolved in source_path.parents:
            raise DataError(f"--out {out_dir} holds the input {source}; it is left alone: choose an --out folder "
                            f"outside the input")
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is an existing file; it is left alone: choose a new folder or remove the "
                        f"file yourself")
    if not any(out_dir.iterdir()):
        return False
    obstacle = _output_obstacle(out_dir)
    if obstacle is not None:
        raise DataError(f"--out {out_dir}: {obstacle} is in the way (only a dataset folder holding nothing but what "
                        f"usdrl writes is replaced); it is left alone: choose a new or empty folder")
    return True


class DatasetWriter:
    """Writes a dataset into ``<out>.tmp-<pid>`` and renames it to ``out`` only when complete.

    Used as a context manager: an exception leaves no partial dataset under ``out``. Every prepare and
    import writes through here: ``out`` may be absent, empty or one of our datasets holding nothing but
    ``DATASET_FILES`` and splits (replaced, said on stderr); anything else, or an ``out`` holding one of ``inputs``,
    is refused before anything is written (``check_output_folder``).
    """

    def __init__(self, out_dir: str | Path, inputs: Iterable[str | Path] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.inputs = list(inputs)  # files read to make the dataset: an --out holding one is refused
        self.work_dir = self.out_dir.parent / f"{self.out_dir.name or 'dataset'}.tmp-{os.getpid()}"  # --out . refused

    def __enter__(self) -> DatasetWriter:
        check_output_folder(self.out_dir, self.inputs)
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        try:
            (self.work_dir / SPLITS_FOLDER).mkdir(parents=True)
        except OSError as error:
            raise DataError(f"--out {self.out_dir}: cannot write there ({error.strerror}: {error.filename}); "
                            f"choose a writable folder") from None
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where the dataset file ``name`` goes; only names of ``DATASET_FILES`` (the folder must stay ours)."""
        if name not in DATASET_FILES:
            raise ValueError(f"{name} is not one of dataset_format.DATASET_FILES; add it there first")
        return self.work_dir / name

    def save(self, name: str, array: np.ndarray) -> None:
        """Save ``array`` as ``<name>.npy``."""
        np.save(self.path(f"{name}.npy"), array)

    def open_array(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.memmap:
        """A new ``<name>.npy`` of ``shape``, memory-mapped for writing, its disk space reserved first: writing
        to a memory map on a full disk kills the process (SIGBUS), so a disk without room is a DataError here
        (and the ``with`` block then removes the partial dataset)."""
        path = self.path(f"{name}.npy")
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # a sparse file of full size
        try:
            reserve_space(path)
        except BaseException:
            del array
            raise
        return array

    def save_split(self, benchmark: str, split: str, indices: np.ndarray) -> None:
        """Save a split's sample indices (n,) as ``splits/<benchmark>_<split>.npy``."""
        file_name = f"{benchmark}_{split}.npy"
        if Path(file_name).name != file_name or file_name.startswith("."):
            raise DataError(f"split {benchmark}/{split}: its name cannot be a file name; rename it (no '/')")
        indices = np.asarray(indices, dtype=np.int64)
        np.save(self.work_dir / SPLITS_FOLDER / file_name, indices)

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest last, then move the directory into place."""
        manifest = {"format_version": FORMAT_VERSION, **manifest}
        self.path(MANIFEST_NAME).write_text(json_text(manifest))
        if check_output_folder(self.out_dir, self.inputs):
            print(f"replacing the dataset in {self.out_dir} (made by usdrl)", file=sys.stderr)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        return replace_folder(self.work_dir, self.out_dir)


def split_counts(labels: np.ndarray, splits: dict[str, np.ndarray], num_classes: int) -> dict[str, Any]:
    """{"benchmark/split": {"total": n, "per_class": [...]}} for the manifest."""
    counts = {}
    for key, indices in splits.items():
        per_class = np.bincount(labels[indices], minlength=num_classes)
        counts[key] = {"total": int(len(indices)), "per_class": per_class.tolist()}
    return counts


def finish_dataset(
    writer: DatasetWriter,
    *,
    kind: str,
    layout: SkeletonLayout,
    class_names: list[str],
    label: np.ndarray,
    num_frames: np.ndarray,
    names: list[str],
    ids: dict[str, np.ndarray],
    splits: dict[tuple[str, str], np.ndarray],
    details: dict[str, Any],
) -> Path:
    """Save the per-sample arrays and split indices beside x/frames, write the manifest, move into place."""
    label = np.asarray(label, dtype=np.int64)
    if len(label) == 0:
        raise DataError(f"no samples to write to {writer.out_dir}: every input was excluded or skipped")
    if label.min() < 0 or label.max() >= len(class_names):
        raise DataError(f"labels must lie in 0..{len(class_names) - 1}; found {label.min()}..{label.max()}")
    writer.save("label", label)
    writer.save("num_frames", np.asarray(num_frames, dtype=np.int32))
    writer.path("names.json").write_text(json.dumps(list(names)))
    if ids:
        np.savez(writer.path("ids.npz"), **{key: np.asarray(value) for key, value in ids.items()})
    for (benchmark, split), indices in splits.items():
        writer.save_split(benchmark, split, indices)
    empty = [f"{benchmark}/{split}" for (benchmark, split), indices in splits.items() if len(indices) == 0]
    manifest = {
        "kind": kind,
        "layout": layout.to_dict(),
        "class_names": list(class_names),
        "num_samples": int(len(label)),
        "counts": split_counts(label, {f"{b}/{s}": idx for (b, s), idx in splits.items()}, len(class_names)),
        "empty_splits": empty,
        **details,
    }
    return writer.finish(manifest)


def first_instance_labels(instance_rows: Iterable[Sequence[int]], count: int) -> np.ndarray:
    """The label (N,) of each of ``count`` untrimmed sequences: its first instance's class (0-based), 0 without
    instances; rows are (sequence, label 1-based, ...). Only the manifest's per-class counts use it."""
    first: dict[int, int] = {}
    for row, label, *_ in instance_rows:
        first.setdefault(int(row), int(label) - 1)
    return np.array([first.get(index, 0) for index in range(count)], dtype=np.int64)


def write_sequences(
    writer: DatasetWriter,
    sequences: Iterable[tuple[np.ndarray, np.ndarray]],
    frame_bound: int,
    sample_shape: tuple[int, int, int],
) -> np.ndarray:
    """Append untrimmed sequences ((C, L, V, M), frame labels (L,)) to frames.npy / frame_labels.npy.

    ``frame_bound`` is an upper bound on the total frames (the files are cut to size at the end).
    Returns offsets (N + 1,), also saved as offsets.npy.
    """
    coordinates, joints, persons = sample_shape
    frames = writer.open_array("frames", (frame_bound, coordinates, joints, persons))  # (F, C, V, M)
    frame_labels = writer.open_array("frame_labels", (frame_bound,), np.int16)
    offsets = [0]
    for sequence, labels in sequences:
        length = sequence.shape[1]
        start = offsets[-1]
        if start + length > frame_bound:
            raise ValueError("frame_bound is smaller than the frames written")
        frames[start:start + length] = sequence.transpose(1, 0, 2, 3)
        frame_labels[start:start + length] = labels
        offsets.append(start + length)
    frames.flush()
    frame_labels.flush()
    del frames, frame_labels
    shrink_leading_dimension(writer.path("frames.npy"), offsets[-1])
    shrink_leading_dimension(writer.path("frame_labels.npy"), offsets[-1])
    offsets_array = np.asarray(offsets, dtype=np.int64)
    writer.save("offsets", offsets_array)
    return offsets_array
