"""Import the annotation pickles of pyskl / MMAction2 (``ntu60_3danno.pkl``, ``ntu60_hrnet.pkl``, ...).

A pickle is a dict with ``split`` (name -> frame_dir list) and ``annotations`` (dicts with frame_dir, label,
keypoint (M, T, V, C), optional keypoint_score (M, T, V)), read with the restricted unpickler. Normalisation as
for plain arrays (``usdrl.data.import_common``); splits are renamed by ``PYSKL_SPLIT_RULE``.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.classes import NTU120_CLASS_NAMES
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import input_fingerprint, is_up_to_date
from usdrl.data.import_common import (
    BENCHMARK_ALIASES,
    SCORE_LAYOUT_SUFFIX,
    check_splits,
    default_normalise,
    ids_from_names,
    normalisation_record,
    normalise_samples,
    position_channels,
    write_samples,
)
from usdrl.data.ntu import NAME_PATTERN
from usdrl.data.pkummd import resample_clip
from usdrl.data.safe_pickle import load_pickle
from usdrl.data.writer import DatasetWriter, finish_dataset
from usdrl.skeleton import SkeletonLayout, load_layout

# (joints, coordinates) -> the built-in layout a pyskl annotation file is read with when --layout is not given.
PYSKL_LAYOUTS = {(25, 3): "ntu25", (20, 3): "kinect_v1", (17, 2): "coco17"}
PYSKL_SPLIT_RULE = ("'<benchmark>_<part>' split at the last '_': benchmark through the usual aliases (xsub, cs, "
                    "xview, cv, xset, ...), any other kept with '_' written '-'; part train -> train, val -> test "
                    "(the split pyskl / MMAction2 evaluate on) unless the benchmark also lists a test split, then val "
                    "stays val; other parts kept; a name without '_' (train, val) belongs to benchmark 'all'")

# One checked annotation: (frame_dir, keypoint (M, T, V, C), keypoint_score (M, T, V) or None).
Keypoints = tuple[str, np.ndarray, np.ndarray | None]


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


def _pyskl_keypoint(annotation: Any, index: int, path: Path) -> Keypoints:
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


def _read_keypoints(path: Path) -> tuple[list[dict], dict[str, list], list[Keypoints]]:
    """(annotations, split lists, each annotation checked) of a pyskl pickle whose annotations share V and C."""
    annotations, split_lists = _pyskl_annotations(load_pickle(path), path)
    checked = [_pyskl_keypoint(annotation, index, path) for index, annotation in enumerate(annotations)]
    first_name, first_keypoint, _ = checked[0]
    joints, coordinates = first_keypoint.shape[2:]
    for index, (frame_dir, keypoint, _) in enumerate(checked):
        if keypoint.shape[2:] != (joints, coordinates):
            raise DataError(f"{path}: annotation {index} ({frame_dir}) has V={keypoint.shape[2]}, C={keypoint.shape[3]}; "
                            f"annotation 0 ({first_name}) has V={joints}, C={coordinates}: one file holds one layout")
    return annotations, split_lists, checked


def _pyskl_layout(layout: str | Path | None, joints: int, coordinates: int, path: Path) -> SkeletonLayout:
    """The layout asked for, or the built-in one of (V, C) (``PYSKL_LAYOUTS``)."""
    if layout is None:
        if (joints, coordinates) not in PYSKL_LAYOUTS:
            raise DataError(f"{path}: no built-in layout has {joints} joints with {coordinates} coordinates; pass "
                            f"--layout with a YAML/JSON layout file of {joints} joints and num_coordinates {coordinates}")
        layout = PYSKL_LAYOUTS[(joints, coordinates)]
    return load_layout(layout)


def _fitting_layout(layout: str | Path | None, checked: list[Keypoints], path: Path) -> tuple[SkeletonLayout, bool]:
    """(the layout, whether it takes keypoint_score as its last channel), refused unless it fits the keypoints."""
    joints, coordinates = checked[0][1].shape[2:]
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
    missing_scores = [name for name, _, score in checked if score is None]
    if with_scores and missing_scores:
        raise DataError(f"{path}: layout {skeleton_layout.name!r} takes keypoint_score as channel {coordinates + 1}, "
                        f"but {len(missing_scores)} annotation(s) have none (e.g. {missing_scores[0]}); pass a "
                        f"layout of {coordinates} coordinates")
    return skeleton_layout, with_scores


def _check_unique(names: list[str], path: Path) -> None:
    """A DataError naming the first frame_dir that names two annotations."""
    if len(set(names)) != len(names):
        duplicate = next(name for name, count in Counter(names).items() if count > 1)
        raise DataError(f"{path}: frame_dir {duplicate!r} names two annotations; frame_dir names must be unique")


def _pyskl_splits(split_lists: dict[str, list], names: list[str], path: Path) -> tuple[dict, dict, int]:
    """(index lists by our (benchmark, split), our name of each pyskl split, samples in no split)."""
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
    check_splits(splits, str(path))
    assigned = np.unique(np.concatenate([np.zeros(0, np.int64), *splits.values()]))
    in_no_split = int(len(names) - len(assigned)) if split_lists else 0
    if not splits:
        splits = {("all", "all"): np.arange(len(names))}
    return splits, renamed, in_no_split


def _pyskl_block(checked: list[Keypoints], start: int, stop: int, *, layout: SkeletonLayout, frames: int,
                 with_scores: bool, num_frames: np.ndarray, normalise: bool) -> np.ndarray:
    """Samples ``start:stop`` as (n, C, T, V, M): zero-padded or subsampled to ``frames``, persons past M dropped."""
    persons = layout.num_persons
    block = np.zeros((stop - start, layout.num_coordinates, frames, layout.num_joints, persons), dtype=np.float32)
    for row in range(start, stop):
        _, keypoint, score = checked[row]
        channels = np.concatenate([keypoint, score[..., None]], axis=-1) if with_scores else keypoint
        clip = channels[:persons].astype(np.float32).transpose(3, 1, 2, 0)  # (M, T, V, C) -> (C, T, V, M)
        block[row - start, :, :, :, :clip.shape[3]] = resample_clip(clip, frames)
    return normalise_samples(block, num_frames[start:stop], layout) if normalise else block


def _pyskl_class_names(names: list[str], label: np.ndarray) -> list[str]:
    """NTU's class names when every name is an NTU sample name and the labels fit, else class_0, class_1, ..."""
    num_classes = int(label.max()) + 1
    recognised = all(NAME_PATTERN.match(name) for name in names) and num_classes <= len(NTU120_CLASS_NAMES)
    return (list(NTU120_CLASS_NAMES[:60 if num_classes <= 60 else len(NTU120_CLASS_NAMES)]) if recognised
            else [f"class_{index}" for index in range(num_classes)])


def _scores_note(checked: list[Keypoints], layout: SkeletonLayout, with_scores: bool) -> str:
    """What became of keypoint_score, for the manifest."""
    coordinates = checked[0][1].shape[3]
    if all(score is None for _, _, score in checked):
        return "not in the file"
    if with_scores:
        return f"channel {coordinates + 1}"
    return (f"dropped (layout {layout.name!r} has {coordinates} channels; a layout with {coordinates + 1}, "
            f"e.g. coco17_score, keeps them)")


def _pyskl_preprocessing(layout: SkeletonLayout, normalise: bool, frames: int) -> dict[str, Any]:
    """The manifest's ``preprocessing``: the normalisation, and how clips were padded or subsampled."""
    preprocessing = normalisation_record(layout, normalise, "pyskl annotations")
    preprocessing.update({"max_frames": frames, "num_frames": "the annotation's frames, at most max_frames",
                          "padding": f"zero-padded to {frames} frames and {layout.num_persons} person(s)",
                          "longer": f"sequences longer than {frames} frames subsampled uniformly"})
    return preprocessing


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
    annotations, split_lists, checked = _read_keypoints(path)
    names = [frame_dir for frame_dir, _, _ in checked]
    skeleton_layout, with_scores = _fitting_layout(layout, checked, path)
    _check_unique(names, path)
    normalise = default_normalise(skeleton_layout) if normalise is None else bool(normalise)
    label = np.array([int(annotation["label"]) for annotation in annotations], dtype=np.int64)
    lengths = np.array([keypoint.shape[1] for _, keypoint, _ in checked], dtype=np.int64)
    frames = int(max_frames) if max_frames is not None else max(int(lengths.max()), 1)
    num_frames = np.minimum(lengths, frames).astype(np.int32)
    splits, renamed, in_no_split = _pyskl_splits(split_lists, names, path)
    samples = partial(_pyskl_block, checked, layout=skeleton_layout, frames=frames, with_scores=with_scores,
                      num_frames=num_frames, normalise=normalise)
    longer = int((lengths > frames).sum())
    extra_persons = int(sum(keypoint.shape[0] > skeleton_layout.num_persons for _, keypoint, _ in checked))
    split_names = {name: "/".join(renamed[str(name)]) for name in split_lists}
    with DatasetWriter(out_dir, [path] + layout_file) as writer:
        write_samples(writer, samples, len(names), (skeleton_layout.num_coordinates, frames,
                                                    skeleton_layout.num_joints, skeleton_layout.num_persons))
        finish_dataset(writer, kind="trimmed", layout=skeleton_layout, class_names=_pyskl_class_names(names, label),
                       label=label, num_frames=num_frames, names=names, ids=ids_from_names(names), splits=splits,
                       details={
                           "dataset": dataset or path.stem,
                           "sources": {"importer": "pyskl", "path": str(path.resolve())},
                           "split_names": split_names,
                           "split_rule": PYSKL_SPLIT_RULE,
                           "in_no_split": in_no_split,
                           "keypoint_score": _scores_note(checked, skeleton_layout, with_scores),
                           "clips_longer_than_max": longer,
                           "samples_with_persons_dropped": extra_persons,
                           "excluded": [], "skipped": [],
                           "preprocessing": _pyskl_preprocessing(skeleton_layout, normalise, frames),
                           "input_fingerprint": fingerprint})
    return {"up_to_date": False, "out": str(out_dir), "samples": len(names), "layout": skeleton_layout.name,
            "splits": split_names, "normalised": normalise,
            "clips_longer_than_max": longer, "samples_with_persons_dropped": extra_persons}
