"""Import processed arrays users already hold: the AGCN layout, the CTR-GCN layout, plain arrays."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.classes import NTU120_CLASS_NAMES
from usdrl.data.errors import DataError
from usdrl.data.ntu import NAME_PATTERN, parse_sample_name
from usdrl.data.store import DatasetWriter, finish_dataset, input_fingerprint, is_up_to_date
from usdrl.skeleton import SkeletonLayout, load_layout, ntu25_layout

BENCHMARK_ALIASES = {"xsub": "xsub", "cs": "xsub", "csub": "xsub", "cross_subject": "xsub",
                     "xview": "xview", "cv": "xview", "cross_view": "xview",
                     "xset": "xset", "cset": "xset", "cross_setup": "xset"}
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


def _ids_from_names(names: list[str]) -> dict[str, np.ndarray]:
    if not names or not all(NAME_PATTERN.match(name.split(".")[0]) for name in names):
        return {}
    parsed = [parse_sample_name(name.split(".")[0]) for name in names]
    return {key: np.array([getattr(p, key) for p in parsed], dtype=np.int32)
            for key in ("setup", "camera", "subject", "replication")}


def _write_parts(out_dir: Path, parts: list[dict[str, Any]], benchmark: str, layout: SkeletonLayout,
                 class_names: list[str], details: dict[str, Any]) -> dict:
    """parts: [{"split", "x" (n, C, T, V, M), "label", "num_frames" or None, "names"}] stored once, split by index."""
    total = sum(len(part["x"]) for part in parts)
    shape = parts[0]["x"].shape[1:]
    with DatasetWriter(out_dir) as writer:
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
                       num_frames=np.concatenate(frames), names=names, ids=_ids_from_names(names), splits=splits,
                       details=details)
    return {"up_to_date": False, "out": str(out_dir), "samples": total}


def _class_names(num_classes: int) -> list[str]:
    if num_classes <= len(NTU120_CLASS_NAMES):
        return list(NTU120_CLASS_NAMES[:num_classes])
    return [f"class {i + 1}" for i in range(num_classes)]


def _load_label_pickle(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; the AGCN layout needs {{train,val}}_label.pkl beside the data")
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="latin1")
        names, labels = content[0], content[1]
    except Exception as error:
        raise DataError(f"{path}: expected a pickle of (sample names, labels); {error}") from error
    return [str(n) for n in names], np.asarray(labels, dtype=np.int64)


def import_agcn(path: str | Path, out_dir: str | Path, benchmark: str | None = None, dataset: str | None = None) -> dict:
    """``{train,val}_data_joint.npy`` (N, 3, 300, 25, 2), ``{train,val}_label.pkl``, optional ``*_num_frame.npy``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a directory; pass the folder holding train_data_joint.npy")
    benchmark = benchmark or guess_benchmark(path)
    if benchmark is None:
        raise DataError(f"cannot tell the benchmark of {path}; pass --benchmark xsub|xview|xset")
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
        x = np.load(path / f"{source}_data_joint.npy", mmap_mode="r")
        _check_samples(x, str(path / f"{source}_data_joint.npy"), layout)
        names, labels = _load_label_pickle(path / f"{source}_label.pkl")
        if len(names) != len(x) or len(labels) != len(x):
            raise DataError(f"{path / f'{source}_label.pkl'}: {len(labels)} labels for {len(x)} samples")
        frames_path = path / f"{source}_num_frame.npy"
        frames = np.load(frames_path).astype(np.int32) if frames_path.is_file() else None
        if frames is not None and len(frames) != len(x):
            raise DataError(f"{frames_path}: {len(frames)} frame counts for {len(x)} samples")
        num_classes = max(num_classes, int(labels.max()) + 1)
        parts.append({"split": split, "x": x, "label": labels, "num_frames": frames, "names": names})
    if min(int(part["label"].min()) for part in parts) < 0:
        raise DataError(f"{path}: negative labels; labels must be 0-based class indices")
    dataset = dataset or ("ntu60" if num_classes <= 60 else "ntu120")
    return _write_parts(Path(out_dir), parts, benchmark, layout, _class_names(60 if dataset == "ntu60" else num_classes), {
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
    benchmark = benchmark or guess_benchmark(path)
    if benchmark is None:
        raise DataError(f"cannot tell the benchmark of {path}; pass --benchmark xsub|xview|xset")
    fingerprint = input_fingerprint([path], {"importer": "ctrgcn", "benchmark": benchmark})
    if is_up_to_date(Path(out_dir), fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    layout = ntu25_layout()
    try:
        stored = np.load(path)
        keys = set(stored.files)
    except Exception as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    required = {"x_train", "y_train", "x_test", "y_test"}
    if not required <= keys:
        raise DataError(f"{path}: missing arrays {', '.join(sorted(required - keys))}; the CTR-GCN layout has "
                        f"x_train, y_train, x_test, y_test")
    parts = []
    for source, split in (("train", "train"), ("test", "test")):
        flat = stored[f"x_{source}"]
        if flat.ndim != 3 or flat.shape[2] != layout.num_persons * layout.num_joints * 3:
            raise DataError(f"{path}: x_{source} has shape {flat.shape}; expected (N, T, 150)")
        batch, frames, _ = flat.shape
        x = flat.reshape(batch, frames, layout.num_persons, layout.num_joints, 3).transpose(0, 4, 1, 3, 2)
        one_hot = stored[f"y_{source}"]
        if one_hot.ndim != 2 or len(one_hot) != batch:
            raise DataError(f"{path}: y_{source} has shape {one_hot.shape}; expected one-hot (N, classes) with N={batch}")
        _check_samples(x, f"{path}: x_{source}", layout)
        parts.append({"split": split, "x": np.ascontiguousarray(x, dtype=np.float32), "label": one_hot.argmax(1),
                      "num_frames": None, "names": [f"{source}_{i:06d}" for i in range(batch)]})
    num_classes = int(stored["y_train"].shape[1])
    dataset = dataset or ("ntu60" if num_classes == 60 else "ntu120" if num_classes == 120 else path.stem)
    return _write_parts(Path(out_dir), parts, benchmark, layout, _class_names(num_classes), {
        "dataset": dataset, "sources": {"importer": "ctrgcn", "path": str(path.resolve())},
        "excluded": [], "skipped": [],
        "preprocessing": {"version": "as imported (CTR-GCN layout)", "num_frames": "counted: last non-zero frame"},
        "input_fingerprint": fingerprint,
    })


def import_arrays(path: str | Path, out_dir: str | Path, layout: str | Path = "ntu25", dataset: str | None = None) -> dict:
    """A .npz with ``x`` (N, C, T, V, M), ``label`` (N,), optional ``num_frames``, ``names``, ``class_names``
    and index arrays ``split_<benchmark>_<split>`` (without any, one split ``all/all``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a .npz with x, label and split_<benchmark>_<split> arrays")
    skeleton_layout = load_layout(layout)
    fingerprint = input_fingerprint([path] + ([Path(layout)] if Path(str(layout)).is_file() else []),
                                    {"importer": "arrays", "layout": skeleton_layout.to_dict()})
    if is_up_to_date(Path(out_dir), fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    try:
        stored = np.load(path, allow_pickle=False)
        arrays = {key: stored[key] for key in stored.files}
    except Exception as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    for key in ("x", "label"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r}; found {', '.join(sorted(arrays)) or 'none'}")
    x, label = arrays["x"].astype(np.float32, copy=False), arrays["label"].astype(np.int64)
    _check_samples(x, f"{path}: x", skeleton_layout)
    if label.shape != (len(x),):
        raise DataError(f"{path}: label has shape {label.shape}; expected ({len(x)},)")
    if label.min() < 0:
        raise DataError(f"{path}: labels must be 0-based class indices; found {label.min()}")
    num_frames = arrays.get("num_frames")
    if num_frames is not None and num_frames.shape != (len(x),):
        raise DataError(f"{path}: num_frames has shape {num_frames.shape}; expected ({len(x)},)")
    names = [str(n) for n in arrays["names"]] if "names" in arrays else [f"sample_{i:06d}" for i in range(len(x))]
    class_names = ([str(n) for n in arrays["class_names"]] if "class_names" in arrays
                   else [f"class {i + 1}" for i in range(int(label.max()) + 1)])
    splits = {}
    for key, value in arrays.items():
        if key.startswith("split_"):
            parts = key[len("split_"):].split("_", 1)
            if len(parts) != 2:
                raise DataError(f"{path}: split array {key!r} must be named split_<benchmark>_<split>")
            if value.size and (value.min() < 0 or value.max() >= len(x)):
                raise DataError(f"{path}: {key} holds indices outside 0..{len(x) - 1}")
            splits[(parts[0], parts[1])] = value.astype(np.int64)
    if not splits:
        splits = {("all", "all"): np.arange(len(x))}
    with DatasetWriter(out_dir) as writer:
        writer.save("x", x)
        finish_dataset(writer, kind="trimmed", layout=skeleton_layout, class_names=class_names, label=label,
                       num_frames=num_frames if num_frames is not None else count_nonzero_frames(x), names=names,
                       ids={}, splits=splits, details={
                           "dataset": dataset or path.stem, "sources": {"importer": "arrays", "path": str(path.resolve())},
                           "excluded": [], "skipped": [],
                           "preprocessing": {"version": "as imported (plain arrays)"},
                           "input_fingerprint": fingerprint})
    return {"up_to_date": False, "out": str(out_dir), "samples": len(x)}
