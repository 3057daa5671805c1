"""Import processed arrays users already hold: the AGCN layout, the CTR-GCN layout, plain arrays, and the
annotation pickles of pyskl / MMAction2.

Plain arrays and pyskl annotations are normalised as the built-in datasets are (SPEC.md 1: pad null frames,
subtract the layout's centre joint, rotate its shoulders onto +x) by default for 3D layouts, and stored as
given for 2D ones (image coordinates: see ``default_normalise``).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.classes import NTU120_CLASS_NAMES
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import input_fingerprint, is_up_to_date
from usdrl.data.normalize import PREPROCESSING_VERSION, normalize_batch
from usdrl.data.ntu import NAME_PATTERN, parse_sample_name
from usdrl.data.pkummd import resample_clip
from usdrl.data.safe_pickle import load_pickle
from usdrl.data.writer import DatasetWriter, finish_dataset
from usdrl.skeleton import SkeletonLayout, load_layout, ntu25_layout

BENCHMARK_ALIASES = {"xsub": "xsub", "cs": "xsub", "csub": "xsub", "cross_subject": "xsub",
                     "xview": "xview", "cv": "xview", "cross_view": "xview",
                     "xset": "xset", "cset": "xset", "cross_setup": "xset"}
CHUNK = 1024
NORMALISE_CHUNK = 256  # samples normalised at once (the rotation works in float64)
SCORE_LAYOUT_SUFFIX = "_score"  # a layout named *_score carries a keypoint score as its last channel


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


def position_channels(layout: SkeletonLayout) -> int:
    """Channels that are positions: all of them, except the score channel of a ``*_score`` layout (coco17_score)."""
    return layout.num_coordinates - 1 if layout.name.endswith(SCORE_LAYOUT_SUFFIX) else layout.num_coordinates


def default_normalise(layout: SkeletonLayout) -> bool:
    """SPEC.md 1 normalisation by default for 3D positions, not for 2D ones.

    3D sensor coordinates (metres, the sensor somewhere in the room) tell an encoder where a body stands rather
    than how it moves; NTU is normalised for this reason. 2D keypoints are image coordinates of an upright
    camera: the lean of a body in the image means something, and the first-frame shoulder line, the rotation's
    reference, shrinks to a point (and its direction to noise) when a person is seen from the side. So 2D layouts
    (and 2D + score, coco17_score) are stored as given unless normalisation is asked for.
    """
    return position_channels(layout) == 3


def normalise_samples(x: np.ndarray, num_frames: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """SPEC.md 1 steps with the layout's centre joint and shoulders on x (N, C, T, V, M), position channels only
    (a score channel is left as is); frames past ``num_frames`` (N,) that were empty stay zero."""
    positions = position_channels(layout)
    out = np.array(x, dtype=np.float32)
    out[:, :positions] = normalize_batch(out[:, :positions], layout.center_joint, layout.shoulder_pair)
    empty = ~np.any(x != 0, axis=(1, 3, 4))  # (N, T)
    padding = empty & (np.arange(x.shape[2])[None, :] >= np.asarray(num_frames)[:, None])  # (N, T)
    out[np.broadcast_to(padding[:, None, :, None, None], out.shape)] = 0.0
    return out


def normalisation_record(layout: SkeletonLayout, normalise: bool, origin: str) -> dict[str, Any]:
    """The manifest's ``preprocessing`` for an import: the steps applied and the joints they used (1-based)."""
    if not normalise:
        return {"version": f"as imported ({origin})", "normalised": False, "steps": [],
                "default": "normalised" if default_normalise(layout) else "as imported (2D layout)"}
    names = layout.joint_names
    center, (left, right) = layout.center_joint, layout.shoulder_pair
    positions = position_channels(layout)
    return {"version": PREPROCESSING_VERSION, "normalised": True,
            "steps": ["pad null frames (move a person's frames to the front when its first frame is empty, repeat "
                      "them over its trailing empty frames)",
                      f"subtract joint {center + 1} ({names[center]}) of person 1 per frame",
                      f"rotate first-frame shoulders {left + 1}->{right + 1} ({names[left]} -> {names[right]}) "
                      f"of person 1 onto +x",
                      "frames past num_frames left at zero"],
            "center_joint": center + 1, "shoulder_pair": [left + 1, right + 1],
            "channels": f"the first {positions} (positions)" + (
                "; the score channel unchanged" if positions < layout.num_coordinates else "")}


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


def _check_splits(splits: dict[tuple[str, str], np.ndarray], source: str) -> None:
    """No index twice in one split, and the splits of one benchmark disjoint."""
    for (benchmark, split), indices in splits.items():
        values, counts = np.unique(indices, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"{source}: split_{benchmark}_{split} holds index {values[counts > 1][0]} "
                            f"{counts[counts > 1][0]} times; each sample may appear once in a split")
    for (benchmark, split), indices in splits.items():
        for (other_benchmark, other_split), other in splits.items():
            if other_benchmark == benchmark and split < other_split:
                common = np.intersect1d(indices, other)
                if common.size:
                    raise DataError(f"{source}: split_{benchmark}_{split} and split_{benchmark}_{other_split} "
                                    f"share {common.size} sample(s) (e.g. index {common[0]}); the splits of "
                                    f"one benchmark must be disjoint")


def _ids_from_names(names: list[str]) -> dict[str, np.ndarray]:
    if not names or not all(NAME_PATTERN.match(name.split(".")[0]) for name in names):
        return {}
    parsed = [parse_sample_name(name.split(".")[0]) for name in names]
    return {key: np.array([getattr(p, key) for p in parsed], dtype=np.int32)
            for key in ("setup", "camera", "subject", "replication")}


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
    benchmark = benchmark or guess_benchmark(path)
    if benchmark is None:
        raise DataError(f"cannot tell the benchmark of {path}; pass --benchmark xsub|xview|xset")
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


def _write_samples(writer: DatasetWriter, samples: Any, count: int, shape: tuple[int, ...]) -> None:
    """x.npy (count, *shape) filled in blocks; ``samples(start, stop)`` returns the float32 block."""
    x = writer.open_array("x", (count, *shape))
    for start in range(0, count, NORMALISE_CHUNK):
        stop = min(start + NORMALISE_CHUNK, count)
        x[start:stop] = samples(start, stop)
    x.flush()
    del x


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
    text_keys = ("names", "class_names")  # any kind of values, written as text
    members = npz_members(path)
    arrays = {key: load_array(path, key, kinds=None if key in text_keys else NUMERIC_KINDS) for key in members
              if key in ("x", "label", "num_frames", *text_keys) or key.startswith("split_")}
    for key in ("x", "label"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r}; found {', '.join(sorted(members)) or 'none'}")
    x, label = arrays["x"].astype(np.float32, copy=False), _integer_array(arrays["label"], f"{path}: label")
    _check_samples(x, f"{path}: x", skeleton_layout)
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
    if "names" in arrays and arrays["names"].shape != (len(x),):
        raise DataError(f"{path}: names has shape {arrays['names'].shape}; expected one name per sample ({len(x)},)")
    if "class_names" in arrays and arrays["class_names"].ndim != 1:
        raise DataError(f"{path}: class_names has shape {arrays['class_names'].shape}; expected a flat list")
    names = [str(n) for n in arrays["names"]] if "names" in arrays else [f"sample_{i:06d}" for i in range(len(x))]
    class_names = ([str(n) for n in arrays["class_names"]] if "class_names" in arrays
                   else [f"class {i + 1}" for i in range(int(label.max()) + 1)])
    if int(label.max()) >= len(class_names):
        raise DataError(f"{path}: label {label.max()} has no class name ({len(class_names)} class_names); "
                        f"labels must be 0-based indices into class_names")
    splits = {}
    for key, value in arrays.items():
        if key.startswith("split_"):
            parts = key[len("split_"):].split("_", 1)
            if len(parts) != 2:
                raise DataError(f"{path}: split array {key!r} must be named split_<benchmark>_<split>")
            indices = _integer_array(value, f"{path}: {key}")
            if indices.ndim != 1:
                raise DataError(f"{path}: {key} has shape {indices.shape}; expected a flat list of indices")
            if indices.size and (indices.min() < 0 or indices.max() >= len(x)):
                raise DataError(f"{path}: {key} holds indices outside 0..{len(x) - 1}")
            splits[(parts[0], parts[1])] = indices
    _check_splits(splits, str(path))
    if not splits:
        splits = {("all", "all"): np.arange(len(x))}

    def samples(start: int, stop: int) -> np.ndarray:  # (n, C, T, V, M)
        block = x[start:stop]
        return normalise_samples(block, num_frames[start:stop], skeleton_layout) if normalise else block

    preprocessing = normalisation_record(skeleton_layout, normalise, "plain arrays")
    preprocessing["num_frames"] = ("counted: up to the last non-zero frame of the raw data" if counted
                                   else "from the num_frames array")
    with DatasetWriter(out_dir, [path] + layout_file) as writer:
        _write_samples(writer, samples, len(x), x.shape[1:])
        finish_dataset(writer, kind="trimmed", layout=skeleton_layout, class_names=class_names, label=label,
                       num_frames=num_frames, names=names, ids={}, splits=splits, details={
                           "dataset": dataset or path.stem, "sources": {"importer": "arrays", "path": str(path.resolve())},
                           "excluded": [], "skipped": [], "preprocessing": preprocessing,
                           "input_fingerprint": fingerprint})
    return {"up_to_date": False, "out": str(out_dir), "samples": len(x), "normalised": normalise}


# (joints, coordinates) -> the built-in layout a pyskl annotation file is read with when --layout is not given.
PYSKL_LAYOUTS = {(25, 3): "ntu25", (20, 3): "kinect_v1", (17, 2): "coco17"}
PYSKL_SPLIT_RULE = ("'<benchmark>_<part>' split at the last '_': benchmark through the usual aliases (xsub, cs, "
                    "xview, cv, xset, ...), any other kept with '_' written '-'; part train -> train, val -> test "
                    "(the split pyskl / MMAction2 evaluate on) unless the benchmark also lists a test split, then val "
                    "stays val; other parts kept; a name without '_' (train, val) belongs to benchmark 'all'")


def pyskl_split_names(names: list[str]) -> dict[str, tuple[str, str]]:
    """Our (benchmark, split) for each pyskl split name, by ``PYSKL_SPLIT_RULE``: xsub_val -> (xsub, test)."""
    divided = {}
    for name in names:
        benchmark, _, part = name.rpartition("_")
        benchmark = BENCHMARK_ALIASES.get(benchmark.lower(), benchmark.replace("_", "-")) or "all"
        divided[name] = (benchmark, part)
    with_test = {benchmark for benchmark, part in divided.values() if part == "test"}
    return {name: (benchmark, "test" if part == "val" and benchmark not in with_test else part)
            for name, (benchmark, part) in divided.items()}


def _pyskl_annotations(content: Any, path: Path) -> tuple[list[dict], dict[str, list]]:
    """(annotations, split lists) of a loaded pyskl pickle, checked for form."""
    if not isinstance(content, dict) or not {"split", "annotations"} <= set(content):
        found = f"a dict with keys {', '.join(map(str, content))}" if isinstance(content, dict) else type(content).__name__
        raise DataError(f"{path}: expected a pyskl / MMAction2 annotation pickle, a dict with 'split' (split name -> "
                        f"frame_dir list) and 'annotations' (list of dicts); found {found}")
    annotations, split_lists = content["annotations"], content["split"]
    if not isinstance(annotations, (list, tuple)) or not annotations:
        raise DataError(f"{path}: 'annotations' must be a non-empty list of dicts")
    if not isinstance(split_lists, dict):
        raise DataError(f"{path}: 'split' must be a dict of split name -> list of frame_dir names, "
                        f"found {type(split_lists).__name__}")
    return list(annotations), split_lists


def _pyskl_keypoint(annotation: Any, index: int, path: Path) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(frame_dir, keypoint (M, T, V, C), keypoint_score (M, T, V) or None) of one annotation, checked."""
    if not isinstance(annotation, dict):
        raise DataError(f"{path}: annotation {index} is a {type(annotation).__name__}, not a dict")
    frame_dir = str(annotation.get("frame_dir", f"#{index}"))
    where = f"{path}: annotation {index} ({frame_dir})"
    for key in ("frame_dir", "label", "keypoint"):
        if key not in annotation:
            raise DataError(f"{where} has no {key!r}; each annotation needs frame_dir, label and keypoint (M, T, V, C)")
    label = annotation["label"]
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
        raise DataError(f"{where}: label {label!r} is not a 0-based class index (a non-negative integer)")
    keypoint = np.asarray(annotation["keypoint"])
    if keypoint.ndim != 4 or keypoint.dtype.kind not in "fiu":
        raise DataError(f"{where}: keypoint must be a numeric array (M, T, V, C); found {keypoint.dtype} "
                        f"of shape {keypoint.shape}")
    if 0 in keypoint.shape:
        raise DataError(f"{where}: keypoint has shape (M, T, V, C) = {keypoint.shape}, with no person, frame, joint "
                        f"or coordinate; drop this annotation or fix it")
    score = annotation.get("keypoint_score")
    if score is not None:
        score = np.asarray(score)
        if score.shape != keypoint.shape[:3] or score.dtype.kind not in "fiu":
            raise DataError(f"{where}: keypoint_score has shape {score.shape}; expected (M, T, V) = {keypoint.shape[:3]}")
    for name, values in (("keypoint", keypoint), ("keypoint_score", score)):
        if values is not None and not np.isfinite(values).all():
            raise DataError(f"{where}: {name} contains NaN or inf; fix or drop this annotation")
    return frame_dir, keypoint, score


def _pyskl_layout(layout: str | Path | None, joints: int, coordinates: int, path: Path) -> SkeletonLayout:
    if layout is None:
        if (joints, coordinates) not in PYSKL_LAYOUTS:
            raise DataError(f"{path}: no built-in layout has {joints} joints with {coordinates} coordinates; pass "
                            f"--layout with a YAML/JSON layout file of {joints} joints and num_coordinates {coordinates}")
        layout = PYSKL_LAYOUTS[(joints, coordinates)]
    return load_layout(layout)


def import_pyskl(path: str | Path, out_dir: str | Path, layout: str | Path | None = None, normalise: bool | None = None,
                 max_frames: int | None = None, dataset: str | None = None) -> dict:
    """A pyskl / MMAction2 annotation pickle (``ntu60_3danno.pkl``, ``ntu60_hrnet.pkl``, ...): a dict with
    ``split`` (name -> frame_dir list) and ``annotations`` (dicts with frame_dir, label, keypoint (M, T, V, C),
    optional keypoint_score (M, T, V)), read with the restricted unpickler.

    ``layout``: default from (V, C) (``PYSKL_LAYOUTS``); a layout with C + 1 channels (coco17_score) takes the
    keypoint scores as its last channel. Samples are zero-padded to the longest sequence, or to ``max_frames``
    with longer ones subsampled uniformly; persons beyond the layout's M are dropped (both counted in the
    manifest). ``normalise`` as in ``import_arrays``. Splits are renamed by ``PYSKL_SPLIT_RULE``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a pyskl / MMAction2 annotation pickle (e.g. ntu60_3danno.pkl)")
    if max_frames is not None and max_frames < 1:
        raise DataError(f"--max-frames must be at least 1, got {max_frames}")
    layout_file = [Path(layout)] if layout is not None and Path(str(layout)).is_file() else []
    fingerprint = input_fingerprint([path] + layout_file, {"importer": "pyskl", "layout": layout,
                                                           "normalise": normalise, "max_frames": max_frames})
    if is_up_to_date(Path(out_dir), fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    annotations, split_lists = _pyskl_annotations(load_pickle(path), path)
    checked = [_pyskl_keypoint(annotation, index, path) for index, annotation in enumerate(annotations)]
    names = [frame_dir for frame_dir, _, _ in checked]
    joints, coordinates = checked[0][1].shape[2:]
    for index, (frame_dir, keypoint, _) in enumerate(checked):
        if keypoint.shape[2:] != (joints, coordinates):
            raise DataError(f"{path}: annotation {index} ({frame_dir}) has V={keypoint.shape[2]}, C={keypoint.shape[3]}; "
                            f"annotation 0 ({names[0]}) has V={joints}, C={coordinates}: one file holds one layout")
    skeleton_layout = _pyskl_layout(layout, joints, coordinates, path)
    with_scores = skeleton_layout.num_coordinates == coordinates + 1
    if skeleton_layout.num_joints != joints or skeleton_layout.num_coordinates not in (coordinates, coordinates + 1):
        raise DataError(f"{path}: keypoints of V={joints}, C={coordinates} do not fit layout {skeleton_layout.name!r} "
                        f"(V={skeleton_layout.num_joints}, C={skeleton_layout.num_coordinates}; C + 1 takes "
                        f"keypoint_score as the last channel); pass --layout with a matching layout")
    if with_scores and position_channels(skeleton_layout) != coordinates:
        raise DataError(f"{path}: layout {skeleton_layout.name!r} would take keypoint_score as channel "
                        f"{coordinates + 1}; name such a layout *{SCORE_LAYOUT_SUFFIX} (as coco17_score) so that "
                        f"normalisation leaves the score alone, or give it {coordinates} coordinates")
    missing_scores = [name for name, (_, _, score) in zip(names, checked) if score is None]
    if with_scores and missing_scores:
        raise DataError(f"{path}: layout {skeleton_layout.name!r} takes keypoint_score as channel {coordinates + 1}, "
                        f"but {len(missing_scores)} annotation(s) have none (e.g. {missing_scores[0]}); pass a "
                        f"layout of {coordinates} coordinates")
    if len(set(names)) != len(names):
        duplicate = next(name for name, count in Counter(names).items() if count > 1)
        raise DataError(f"{path}: frame_dir {duplicate!r} names two annotations; frame_dir names must be unique")
    normalise = default_normalise(skeleton_layout) if normalise is None else bool(normalise)
    label = np.array([int(annotation["label"]) for annotation in annotations], dtype=np.int64)
    lengths = np.array([keypoint.shape[1] for _, keypoint, _ in checked], dtype=np.int64)
    frames = int(max_frames) if max_frames is not None else max(int(lengths.max()), 1)
    num_frames = np.minimum(lengths, frames).astype(np.int32)
    persons = skeleton_layout.num_persons

    position = {name: row for row, name in enumerate(names)}
    renamed = pyskl_split_names([str(name) for name in split_lists])
    splits: dict[tuple[str, str], np.ndarray] = {}
    for name, members in split_lists.items():
        if not isinstance(members, (list, tuple, np.ndarray)):
            raise DataError(f"{path}: split {name!r} must be a list of frame_dir names, found {type(members).__name__}")
        absent = [str(member) for member in members if str(member) not in position]
        if absent:
            raise DataError(f"{path}: split {name!r} lists {len(absent)} frame_dir(s) with no annotation (e.g. "
                            f"{absent[0]!r}); the split lists and the annotations must come from the same file")
        key = renamed[str(name)]
        if key in splits:
            other = next(n for n in split_lists if renamed[str(n)] == key and n != name)
            raise DataError(f"{path}: splits {other!r} and {name!r} both become {key[0]}/{key[1]} "
                            f"({PYSKL_SPLIT_RULE}); rename one")
        splits[key] = np.array([position[str(member)] for member in members], dtype=np.int64)
    _check_splits(splits, str(path))
    assigned = np.unique(np.concatenate([np.zeros(0, np.int64), *splits.values()]))
    if not splits:
        splits = {("all", "all"): np.arange(len(names))}

    def samples(start: int, stop: int) -> np.ndarray:  # (n, C, T, V, M)
        block = np.zeros((stop - start, skeleton_layout.num_coordinates, frames, joints, persons), dtype=np.float32)
        for row in range(start, stop):
            _, keypoint, score = checked[row]
            channels = np.concatenate([keypoint, score[..., None]], axis=-1) if with_scores else keypoint
            clip = channels[:persons].astype(np.float32).transpose(3, 1, 2, 0)  # (M, T, V, C) -> (C, T, V, M)
            block[row - start, :, :, :, :clip.shape[3]] = resample_clip(clip, frames)
        return normalise_samples(block, num_frames[start:stop], skeleton_layout) if normalise else block

    num_classes = int(label.max()) + 1
    recognised = all(NAME_PATTERN.match(name) for name in names) and num_classes <= len(NTU120_CLASS_NAMES)
    class_names = (list(NTU120_CLASS_NAMES[:60 if num_classes <= 60 else len(NTU120_CLASS_NAMES)]) if recognised
                   else [f"class_{index}" for index in range(num_classes)])
    longer = int((lengths > frames).sum())
    extra_persons = int(sum(keypoint.shape[0] > persons for _, keypoint, _ in checked))
    scores_note = ("not in the file" if len(missing_scores) == len(names) else
                   f"channel {coordinates + 1}" if with_scores else
                   f"dropped (layout {skeleton_layout.name!r} has {coordinates} channels; a layout with "
                   f"{coordinates + 1}, e.g. coco17_score, keeps them)")
    preprocessing = normalisation_record(skeleton_layout, normalise, "pyskl annotations")
    preprocessing.update({"max_frames": frames, "num_frames": "the annotation's frames, at most max_frames",
                          "padding": f"zero-padded to {frames} frames and {persons} person(s)",
                          "longer": f"sequences longer than {frames} frames subsampled uniformly"})
    with DatasetWriter(out_dir, [path] + layout_file) as writer:
        _write_samples(writer, samples, len(names), (skeleton_layout.num_coordinates, frames, joints, persons))
        finish_dataset(writer, kind="trimmed", layout=skeleton_layout, class_names=class_names, label=label,
                       num_frames=num_frames, names=names, ids=_ids_from_names(names), splits=splits, details={
                           "dataset": dataset or path.stem,
                           "sources": {"importer": "pyskl", "path": str(path.resolve())},
                           "split_names": {name: "/".join(renamed[str(name)]) for name in split_lists},
                           "split_rule": PYSKL_SPLIT_RULE,
                           "in_no_split": int(len(names) - len(assigned)) if split_lists else 0,
                           "keypoint_score": scores_note,
                           "clips_longer_than_max": longer,
                           "samples_with_persons_dropped": extra_persons,
                           "excluded": [], "skipped": [], "preprocessing": preprocessing,
                           "input_fingerprint": fingerprint})
    return {"up_to_date": False, "out": str(out_dir), "samples": len(names), "layout": skeleton_layout.name,
            "splits": {name: "/".join(renamed[str(name)]) for name in split_lists}, "normalised": normalise,
            "clips_longer_than_max": longer, "samples_with_persons_dropped": extra_persons}
