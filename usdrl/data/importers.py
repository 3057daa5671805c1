"""Import processed arrays users already hold: the AGCN layout, the CTR-GCN layout and plain arrays; the
annotation pickles of pyskl / MMAction2 are ``usdrl.data.pyskl``.

Plain arrays are normalised as the built-in datasets are (SPEC.md 1) by default for 3D layouts, and stored as
given for 2D ones (``usdrl.data.import_common.default_normalise``).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.classes import NTU120_CLASS_NAMES
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import input_fingerprint, is_up_to_date
from usdrl.data.import_common import (
    BENCHMARK_ALIASES,
    check_splits,
    default_normalise,
    ids_from_names,
    normalisation_record,
    normalise_samples,
    write_samples,
)
from usdrl.data.safe_pickle import load_pickle
from usdrl.data.writer import DatasetWriter, finish_dataset
from usdrl.skeleton import SkeletonLayout, load_layout, ntu25_layout

CHUNK = 1024


def guess_benchmark(path: Path) -> str | None:
    """xsub / xview / xset from names like NTU60_CS.npz or ntu/xsub/, else None."""
    for part in reversed([p.lower() for p in path.parts] + [path.stem.lower()]):
        for token in re.split(r"[^a-z0-9]+", part):
            if token in BENCHMARK_ALIASES:
                return BENCHMARK_ALIASES[token]
    return None


def count_nonzero_frames(x: np.ndarray) -> np.ndarray:
    """Frames up to the last frame with any non-zero value: (N, C, T, V, M) -> (N,)."""
    present = np.any(x != 0, axis=(1, 3, 4))  # (N, T)
    last = x.shape[2] - 1 - np.argmax(present[:, ::-1], axis=1)
    return np.where(present.any(axis=1), last + 1, 0).astype(np.int32)


def _benchmark_of(path: Path, benchmark: str | None) -> str:
    """``benchmark``, else the one ``guess_benchmark`` reads from the path; a DataError when neither says."""
    benchmark = benchmark or guess_benchmark(path)
    if benchmark is None:
        raise DataError(f"cannot tell the benchmark of {path}; pass --benchmark xsub|xview|xset")
    return benchmark


NUMERIC_KINDS = "iuf"  # dtype kinds of coordinates, labels, frame counts and indices (not bool, complex or text)


def npz_members(path: Path) -> list[str]:
    """The array names of a .npz file, opened without pickle; a DataError naming the file when it is not one."""
    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error}); write it with numpy.savez") from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not a .npz file of named arrays; write it with numpy.savez")
    with stored:
        return list(stored.files)


def load_array(path: Path, member: str | None = None, *, kinds: str | None = NUMERIC_KINDS,
               ndim: int | None = None, mmap: bool = False) -> np.ndarray:
    """The array of a .npy file (``member`` None; memory-mapped with ``mmap``) or one member of a .npz, read
    without pickle. A DataError naming the file when it is unreadable, truncated, not an array (an object array,
    a pickled or raw member), of a dtype kind outside ``kinds`` (None: any but object) or not ``ndim``-dimensional."""
    where = str(path) if member is None else f"{path}: {member}"
    try:
        if member is None:
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as stored:
                array = stored[member]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{where}: not a readable {'.npy' if member is None else '.npz'} array ({error}); "
                        f"write it with numpy.save / numpy.savez") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise DataError(f"{where}: a .npz file, expected one .npy array; write it with numpy.save")
    if not isinstance(array, np.ndarray) or array.dtype.kind in "OV":
        raise DataError(f"{where}: not a numpy array (pickled or raw data); write it with numpy.save / numpy.savez")
    if kinds is not None and array.dtype.kind not in kinds:
        raise DataError(f"{where}: holds {array.dtype} values; expected numbers (integers or floats)")
    if ndim is not None and array.ndim != ndim:
        raise DataError(f"{where}: has shape {array.shape}; expected {ndim} dimension(s)")
    return array


def _check_samples(x: np.ndarray, source: str, layout: SkeletonLayout) -> None:
    if x.ndim != 5:
        raise DataError(f"{source}: expected 5 dimensions (N, C, T, V, M), found shape {x.shape}")
    _, coordinates, _, joints, persons = x.shape
    if (coordinates, joints, persons) != (layout.num_coordinates, layout.num_joints, layout.num_persons):
        raise DataError(f"{source}: shape {x.shape} does not fit layout {layout.name!r} "
                        f"(C={layout.num_coordinates}, V={layout.num_joints}, M={layout.num_persons}); "
                        f"pass --layout with a matching layout file")
    for start in range(0, len(x), CHUNK):
        block = np.asarray(x[start:start + CHUNK])
        finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not finite.all():
            raise DataError(f"{source}: sample {start + int(np.flatnonzero(~finite)[0])} contains NaN or inf")


def _integer_array(values: Any, what: str) -> np.ndarray:
    """values as int64, refusing floats (they would be truncated silently), booleans and text."""
    array = np.asarray(values)
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise DataError(f"{what} must be integers, found {array.dtype} (e.g. {array.flat[0]!r}); "
                        f"store them as integers (float values would be truncated)")
    return array.astype(np.int64)


def _check_num_frames(num_frames: Any, count: int, max_frames: int, what: str) -> np.ndarray:
    """num_frames (N,) as int32, each within 0..T."""
    frames = _integer_array(num_frames, what)
    if frames.shape != (count,):
        raise DataError(f"{what} has shape {frames.shape}; expected ({count},)")
    bad = np.flatnonzero((frames < 0) | (frames > max_frames))
    if bad.size:
        raise DataError(f"{what}: sample {bad[0]} has {frames[bad[0]]} frames; each must lie in 0..{max_frames} "
                        f"(T of the data)")
    return frames.astype(np.int32)


def _write_parts(out_dir: Path, parts: list[dict[str, Any]], benchmark: str, layout: SkeletonLayout,
                 class_names: list[str], inputs: list[Path], details: dict[str, Any]) -> dict:
    """parts: [{"split", "x" (n, C, T, V, M), "label", "num_frames" or None, "names"}] stored once, split by index."""
    total = sum(len(part["x"]) for part in parts)
    shape = parts[0]["x"].shape[1:]
    with DatasetWriter(out_dir, inputs) as writer:
        x = writer.open_array("x", (total, *shape))
        labels, frames, names, splits, row = [], [], [], {}, 0
        for part in parts:
            count = len(part["x"])
            for start in range(0, count, CHUNK):
                x[row + start:row + min(start + CHUNK, count)] = part["x"][start:start + CHUNK]
            splits[(benchmark, part["split"])] = np.arange(row, row + count)
            labels.append(np.asarray(part["label"], dtype=np.int64))
            frames.append(part["num_frames"] if part["num_frames"] is not None else count_nonzero_frames(x[row:row + count]))
            names.extend(part["names"])
            row += count
        x.flush()
        del x
        finish_dataset(writer, kind="trimmed", layout=layout, class_names=class_names, label=np.concatenate(labels),
                       num_frames=np.concatenate(frames), names=names, ids=ids_from_names(names), splits=splits,
                       details=details)
    return {"up_to_date": False, "out": str(out_dir), "samples": total}


def _class_names(num_classes: int) -> list[str]:
    if num_classes <= len(NTU120_CLASS_NAMES):
        return list(NTU120_CLASS_NAMES[:num_classes])
    return [f"class {i + 1}" for i in range(num_classes)]


def _load_label_pickle(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; the AGCN layout needs {{train,val}}_label.pkl beside the data")
    content = load_pickle(path)
    if not isinstance(content, (list, tuple)) or len(content) < 2:
        raise DataError(f"{path}: expected a pickle of (sample names, labels), found {type(content).__name__}")
    names, labels = content[0], _integer_array(content[1], f"{path}: labels")
    if np.ndim(names) != 1 or labels.ndim != 1:
        raise DataError(f"{path}: expected a pickle of (sample names, labels) as two flat lists")
    return [str(n) for n in names], labels


def import_agcn(path: str | Path, out_dir: str | Path, benchmark: str | None = None, dataset: str | None = None) -> dict:
    """``{train,val}_data_joint.npy`` (N, 3, 300, 25, 2), ``{train,val}_label.pkl``, optional ``*_num_frame.npy``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a directory; pass the folder holding train_data_joint.npy")
    benchmark = _benchmark_of(path, benchmark)
    files = [path / f"{s}_data_joint.npy" for s in ("train", "val")] + [path / f"{s}_label.pkl" for s in ("train", "val")]
    for file in files:
        if not file.is_file():
            raise DataError(f"{file} does not exist; the AGCN layout is {{train,val}}_data_joint.npy + {{train,val}}_label.pkl")
    fingerprint = input_fingerprint(list(path.glob("*")), {"importer": "agcn", "benchmark": benchmark})
    if is_up_to_date(Path(out_dir), fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    layout = ntu25_layout()
    parts, num_classes = [], 0
    for source, split in (("train", "train"), ("val", "test")):
        x = load_array(path / f"{source}_data_joint.npy", mmap=True)
        _check_samples(x, str(path / f"{source}_data_joint.npy"), layout)
        if len(x) == 0:
            raise DataError(f"{path / f'{source}_data_joint.npy'}: holds no samples")
        names, labels = _load_label_pickle(path / f"{source}_label.pkl")
        if len(names) != len(x) or len(labels) != len(x):
            raise DataError(f"{path / f'{source}_label.pkl'}: {len(labels)} labels for {len(x)} samples")
        frames_path = path / f"{source}_num_frame.npy"
        frames = (_check_num_frames(load_array(frames_path), len(x), x.shape[2], str(frames_path))
                  if frames_path.is_file() else None)
        num_classes = max(num_classes, int(labels.max()) + 1)
        parts.append({"split": split, "x": x, "label": labels, "num_frames": frames, "names": names})
    if min(int(part["label"].min()) for part in parts) < 0:
        raise DataError(f"{path}: negative labels; labels must be 0-based class indices")
    dataset = dataset or ("ntu60" if num_classes <= 60 else "ntu120")
    return _write_parts(Path(out_dir), parts, benchmark, layout, _class_names(60 if dataset == "ntu60" else num_classes), [path], {
        "dataset": dataset, "sources": {"importer": "agcn", "path": str(path.resolve())},
        "excluded": [], "skipped": [],
        "preprocessing": {"version": "as imported (AGCN layout)",
                          "num_frames": "from *_num_frame.npy" if parts[0]["num_frames"] is not None
                          else "counted: last non-zero frame (no *_num_frame.npy found)"},
        "input_fingerprint": fingerprint,
    })


def import_ctrgcn(path: str | Path, out_dir: str | Path, benchmark: str | None = None, dataset: str | None = None) -> dict:
    """``NTU60_CS.npz``: x_train (N, 300, 150), one-hot y_train, x_test, y_test."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass the CTR-GCN .npz file (e.g. NTU60_CS.npz)")
    benchmark = _benchmark_of(path, benchmark)
    fingerprint = input_fingerprint([path], {"importer": "ctrgcn", "benchmark": benchmark})
    if is_up_to_date(Path(out_dir), fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    layout = ntu25_layout()
    keys = set(npz_members(path))
    required = {"x_train", "y_train", "x_test", "y_test"}
    if not required <= keys:
        raise DataError(f"{path}: missing arrays {', '.join(sorted(required - keys))}; the CTR-GCN layout has "
                        f"x_train, y_train, x_test, y_test")
    parts = []
    for source, split in (("train", "train"), ("test", "test")):
        flat = load_array(path, f"x_{source}")
        if flat.ndim != 3 or flat.shape[2] != layout.num_persons * layout.num_joints * 3:
            raise DataError(f"{path}: x_{source} has shape {flat.shape}; expected (N, T, 150)")
        batch, frames, _ = flat.shape
        x = flat.reshape(batch, frames, layout.num_persons, layout.num_joints, 3).transpose(0, 4, 1, 3, 2)
        one_hot = load_array(path, f"y_{source}", kinds="b" + NUMERIC_KINDS)
        if one_hot.ndim != 2 or len(one_hot) != batch or one_hot.shape[1] == 0:
            raise DataError(f"{path}: y_{source} has shape {one_hot.shape}; expected one-hot (N, classes) with N={batch}")
        _check_samples(x, f"{path}: x_{source}", layout)
        parts.append({"split": split, "x": np.ascontiguousarray(x, dtype=np.float32), "label": one_hot.argmax(1),
                      "classes": one_hot.shape[1], "num_frames": None, "names": [f"{source}_{i:06d}" for i in range(batch)]})
    num_classes = int(parts[0]["classes"])  # the columns of y_train
    dataset = dataset or ("ntu60" if num_classes == 60 else "ntu120" if num_classes == 120 else path.stem)
    return _write_parts(Path(out_dir), parts, benchmark, layout, _class_names(num_classes), [path], {
        "dataset": dataset, "sources": {"importer": "ctrgcn", "path": str(path.resolve())},
        "excluded": [], "skipped": [],
        "preprocessing": {"version": "as imported (CTR-GCN layout)", "num_frames": "counted: last non-zero frame"},
        "input_fingerprint": fingerprint,
    })


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an arrays .npz that ``import_arrays`` reads, checked for kind; x and label required."""
    text_keys = ("names", "class_names")  # any kind of values, written as text
    members = npz_members(path)
    arrays = {key: load_array(path, key, kinds=None if key in text_keys else NUMERIC_KINDS) for key in members
              if key in ("x", "label", "num_frames", *text_keys) or key.startswith("split_")}
    for key in ("x", "label"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r}; found {', '.join(sorted(members)) or 'none'}")
    return arrays


def _array_samples(arrays: dict[str, np.ndarray], path: Path,
                   layout: SkeletonLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(x (N, C, T, V, M) float32, label (N,), num_frames (N,), whether num_frames was counted), checked."""
    x, label = arrays["x"].astype(np.float32, copy=False), _integer_array(arrays["label"], f"{path}: label")
    _check_samples(x, f"{path}: x", layout)
    if label.shape != (len(x),):
        raise DataError(f"{path}: label has shape {label.shape}; expected ({len(x)},)")
    if len(label) == 0:
        raise DataError(f"{path}: holds no samples")
    if label.min() < 0:
        raise DataError(f"{path}: labels must be 0-based class indices; found {label.min()}")
    num_frames = arrays.get("num_frames")
    if num_frames is not None:
        num_frames = _check_num_frames(num_frames, len(x), x.shape[2], f"{path}: num_frames")
    counted = num_frames is None
    if counted:
        num_frames = count_nonzero_frames(x)
    return x, label, num_frames, counted


def _array_names(arrays: dict[str, np.ndarray], label: np.ndarray, count: int,
                 path: Path) -> tuple[list[str], list[str]]:
    """(sample names, class names): the arrays' own, checked against the samples and labels, or numbered ones."""
    if "names" in arrays and arrays["names"].shape != (count,):
        raise DataError(f"{path}: names has shape {arrays['names'].shape}; expected one name per sample ({count},)")
    if "class_names" in arrays and arrays["class_names"].ndim != 1:
        raise DataError(f"{path}: class_names has shape {arrays['class_names'].shape}; expected a flat list")
    names = [str(n) for n in arrays["names"]] if "names" in arrays else [f"sample_{i:06d}" for i in range(count)]
    class_names = ([str(n) for n in arrays["class_names"]] if "class_names" in arrays
                   else [f"class {i + 1}" for i in range(int(label.max()) + 1)])
    if int(label.max()) >= len(class_names):
        raise DataError(f"{path}: label {label.max()} has no class name ({len(class_names)} class_names); "
                        f"labels must be 0-based indices into class_names")
    return names, class_names


def _array_splits(arrays: dict[str, np.ndarray], count: int, path: Path) -> dict[tuple[str, str], np.ndarray]:
    """The index lists of the ``split_<benchmark>_<split>`` arrays, checked; without any, one split ``all/all``."""
    splits = {}
    for key, value in arrays.items():
        if key.startswith("split_"):
            parts = key[len("split_"):].split("_", 1)
            if len(parts) != 2:
                raise DataError(f"{path}: split array {key!r} must be named split_<benchmark>_<split>")
            indices = _integer_array(value, f"{path}: {key}")
            if indices.ndim != 1:
                raise DataError(f"{path}: {key} has shape {indices.shape}; expected a flat list of indices")
            if indices.size and (indices.min() < 0 or indices.max() >= count):
                raise DataError(f"{path}: {key} holds indices outside 0..{count - 1}")
            splits[(parts[0], parts[1])] = indices
    check_splits(splits, str(path))
    if not splits:
        splits = {("all", "all"): np.arange(count)}
    return splits


def import_arrays(path: str | Path, out_dir: str | Path, layout: str | Path | None = None, dataset: str | None = None,
                  normalise: bool | None = None) -> dict:
    """A .npz with ``x`` (N, C, T, V, M), ``label`` (N,), optional ``num_frames``, ``names``, ``class_names``
    and index arrays ``split_<benchmark>_<split>`` (without any, one split ``all/all``).

    ``layout``: a built-in name or a YAML/JSON file (default ntu25). ``normalise``: SPEC.md 1 normalisation
    with the layout's centre joint and shoulders; None = ``default_normalise(layout)`` (on for 3D).
    num_frames, when not given, is counted on the raw data: frames up to the last non-zero one.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a .npz with x, label and split_<benchmark>_<split> arrays")
    layout = layout if layout is not None else "ntu25"
    skeleton_layout = load_layout(layout)
    normalise = default_normalise(skeleton_layout) if normalise is None else bool(normalise)
    layout_file = [Path(layout)] if Path(str(layout)).is_file() else []
    fingerprint = input_fingerprint([path] + layout_file,
                                    {"importer": "arrays", "layout": skeleton_layout.to_dict(), "normalise": normalise})
    if is_up_to_date(Path(out_dir), fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    arrays = _read_arrays(path)
    x, label, num_frames, counted = _array_samples(arrays, path, skeleton_layout)
    names, class_names = _array_names(arrays, label, len(x), path)
    splits = _array_splits(arrays, len(x), path)

    def samples(start: int, stop: int) -> np.ndarray:  # (n, C, T, V, M)
        block = x[start:stop]
        return normalise_samples(block, num_frames[start:stop], skeleton_layout) if normalise else block

    preprocessing = normalisation_record(skeleton_layout, normalise, "plain arrays")
    preprocessing["num_frames"] = ("counted: up to the last non-zero frame of the raw data" if counted
                                   else "from the num_frames array")
    with DatasetWriter(out_dir, [path] + layout_file) as writer:
        write_samples(writer, samples, len(x), x.shape[1:])
        finish_dataset(writer, kind="trimmed", layout=skeleton_layout, class_names=class_names, label=label,
                       num_frames=num_frames, names=names, ids={}, splits=splits, details={
                           "dataset": dataset or path.stem, "sources": {"importer": "arrays", "path": str(path.resolve())},
                           "excluded": [], "skipped": [], "preprocessing": preprocessing,
                           "input_fingerprint": fingerprint})
    return {"up_to_date": False, "out": str(out_dir), "samples": len(x), "normalised": normalise}
