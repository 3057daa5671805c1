"""Skeletons from outside the pipeline, recognised by content: what ``usdrl embed``, ``recognize`` and
``detect run`` (and ``load_model(...).embed`` ...) accept.

Input kinds:

- a prepared dataset folder (``manifest.json``: usdrl prepare / import): its samples as stored, already in the
  training form; ``split="xsub/test"`` picks one split;
- a ``.npz`` of arrays (a zip archive): ``x`` (N, C, T, V, M) or one sample (C, T, V, M), optional
  ``num_frames`` (N,) and ``names`` (N,); raw coordinates (the model's preprocessing is applied);
- one NTU RGB+D ``.skeleton`` file (first line: the frame count): the M bodies of highest motion energy, as
  ``usdrl prepare ntu60`` keeps them;
- one PKU-MMD skeleton ``.txt`` (one frame a line, 150 numbers: 2 persons x 25 joints x xyz);
- COCO-17 2D keypoints as JSON, one file per video (``COCO17_SCHEMA``);
- the output of pose estimators (``usdrl.data.poses``, the reader ``usdrl import poses`` uses): a folder of
  OpenPose ``*_keypoints.json`` frames or of MMPose per-image predictions, or one Kinetics-skeleton, MMPose video
  or MediaPipe Pose JSON file; tracked into the layout's persons, missing joints filled.

The kinds carry their layout (NTU and PKU-MMD: ``ntu25``; COCO JSON: ``coco17``, with scores ``coco17_score``;
folders: their manifest; arrays: a ``layout`` member naming a built-in layout, else the built-in layout of their
joints and coordinates; pose estimator output: the built-in layout of the joints and coordinates it holds).
Skeletons of another layout than the model's are mapped to it by joint names (``usdrl.data.layout_mapping``;
``InputClips.mapping`` says how); a layout that cannot be mapped (2D and 3D, a joint without a rule) is a
DataError naming the input and the joint.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.errors import DataError
from usdrl.data.import_common import position_channels
from usdrl.data.importers import count_nonzero_frames, load_array, npz_members
from usdrl.data.layout_mapping import LayoutMapping, layout_mapping
from usdrl.data.mapped_store import is_normalised, map_samples, map_sequence
from usdrl.data.ntu import read_skeleton_file, select_bodies
from usdrl.data.pkummd import VALUES_PER_FRAME, read_pku_skeleton
from usdrl.data.poses import detect_pose_format, pick_layout, read_pose_clip
from usdrl.data.store import SkeletonSplit, available_splits, load_split, read_manifest
from usdrl.skeleton import (
    BUILTIN_LAYOUTS,
    COCO17_JOINT_NAMES,
    NTU25_JOINT_NAMES,
    SkeletonLayout,
    coco17_layout,
    layout_from_dict,
    load_layout,
    ntu25_layout,
)

COCO17_SCHEMA = ("a JSON list of frames; each frame a list of persons (possibly empty); each person a list of 17 "
                 "keypoints [x, y, score] in COCO-17 order (nose, left_eye, right_eye, left_ear, right_ear, "
                 "left_shoulder, right_shoulder, left_elbow, right_elbow, left_wrist, right_wrist, left_hip, "
                 "right_hip, left_knee, right_knee, left_ankle, right_ankle), x and y in pixels, score in 0..1")
KNOWN_KINDS = ("a prepared dataset folder, a .npz of arrays, an NTU .skeleton file, a PKU-MMD skeleton .txt, "
               "COCO-17 keypoints as JSON, or pose estimator output (a folder of OpenPose *_keypoints.json or "
               "MMPose frames, a Kinetics-skeleton, MMPose or MediaPipe JSON file)")


@dataclass
class InputClips:
    """Skeletons read from one input: a split whose samples are (C, T, V, M), valid lengths and names.

    ``preprocessed``: already in the training form (a prepared dataset); else raw coordinates.
    ``kind`` names the input kind; ``untrimmed``: sequences (streams) rather than clips.
    """

    split: SkeletonSplit
    kind: str
    preprocessed: bool
    normalised: bool | None = None  # a prepared dataset: whether its manifest says normalised
    mapping: LayoutMapping | None = None  # how skeletons of another layout were mapped to the model's

    @property
    def untrimmed(self) -> bool:
        """Whether the input is untrimmed streams (sequences stored frame by frame), not trimmed clips."""
        return self.split.untrimmed


def _in_memory_split(x: np.ndarray, num_frames: np.ndarray, names: list[str], source: str,
                     layout: SkeletonLayout) -> SkeletonSplit:
    """A split over arrays held in memory: x (N, C, T, V, M), so the pipeline's batching code reads it."""
    count = len(x)
    return SkeletonSplit(root=Path(source), benchmark="input", split="all",
                         manifest={"layout": layout.to_dict(), "class_names": []}, indices=np.arange(count),
                         label=np.zeros(count, dtype=np.int64), num_frames=np.asarray(num_frames, dtype=np.int64),
                         names=list(names), x=np.ascontiguousarray(x, dtype=np.float32))


def layout_mismatch(source: str, held: str, layout: SkeletonLayout) -> DataError:
    """The DataError for input of another skeleton layout than the model's (``held`` names the input's)."""
    return DataError(f"{source}: holds {held} skeletons, but the model was trained on layout {layout.name!r} "
                     f"(V={layout.num_joints} joints, C={layout.num_coordinates} coordinates, "
                     f"M={layout.num_persons} persons); pass {layout.name} skeletons, or use a model trained on "
                     f"{held.split()[0]}")


def mapping_to_model(source: SkeletonLayout, layout: SkeletonLayout, where: str) -> LayoutMapping | None:
    """None when skeletons of ``source`` are the model's already (same joints and channels), else the mapping by
    joint names; a DataError naming ``where`` when there is none."""
    if tuple(source.joint_names) == tuple(layout.joint_names) and source.num_coordinates == layout.num_coordinates:
        return None
    try:
        return layout_mapping(source, layout)
    except DataError as error:
        raise DataError(f"{where}: holds {source.name} skeletons and the model was trained on {layout.name}; "
                        f"{error}") from None


def _ntu25_mapping(source: str, layout: SkeletonLayout) -> LayoutMapping | None:
    """None for a model of the ntu25 joints, else the mapping of NTU-25 skeletons (two persons) to its layout."""
    if tuple(layout.joint_names) == NTU25_JOINT_NAMES and layout.num_coordinates == 3:
        return None
    return mapping_to_model(ntu25_layout(), layout, source)


def _one_sequence(sequence: np.ndarray, name: str, source: str, layout: SkeletonLayout) -> SkeletonSplit:
    """One raw sequence (C, T, V, M) as a split of one sample of all its T frames (as prepare counts them)."""
    if sequence.shape[1] == 0 or int(count_nonzero_frames(sequence[None])[0]) == 0:
        raise DataError(f"{source}: no skeleton in any frame; nothing to recognise")
    return _in_memory_split(sequence[None], np.array([sequence.shape[1]]), [name], source, layout)


def _fit_persons(sequence: np.ndarray, persons: int) -> np.ndarray:
    """(C, T, V, M') -> (C, T, V, persons): the first ``persons`` kept, zero persons added."""
    out = np.zeros((*sequence.shape[:3], persons), dtype=np.float32)
    kept = min(persons, sequence.shape[3])
    out[..., :kept] = sequence[..., :kept]
    return out


def read_ntu_file(path: Path, layout: SkeletonLayout) -> InputClips:
    """An NTU RGB+D .skeleton file as one clip of all its frames, mapped to the model's layout when it is not ntu25."""
    mapping = _ntu25_mapping(str(path), layout)
    persons = layout.num_persons if mapping is None else mapping.source.num_persons
    bodies = read_skeleton_file(path)  # (4, T, V, 3)
    sequence = _fit_persons(select_bodies(bodies, keep=min(persons, len(bodies))), persons)  # (C, T, V, M)
    sequence = sequence if mapping is None else mapping.apply(sequence)
    split = _one_sequence(sequence, path.stem, str(path), layout)
    return InputClips(split, "ntu_skeleton", preprocessed=False, mapping=mapping)


def read_pku_file(path: Path, layout: SkeletonLayout) -> InputClips:
    """A PKU-MMD skeleton .txt file as one clip of all its frames, mapped to the model's layout when it is not ntu25."""
    mapping = _ntu25_mapping(str(path), layout)
    persons = layout.num_persons if mapping is None else mapping.source.num_persons
    sequence = _fit_persons(read_pku_skeleton(path), persons)  # (C, T, V, M)
    sequence = sequence if mapping is None else mapping.apply(sequence)
    return InputClips(_one_sequence(sequence, path.stem, str(path), layout), "pkummd_skeleton", preprocessed=False,
                      mapping=mapping)


def _coco_person(person: Any, where: str) -> np.ndarray:
    """(17, 3) keypoints of one person of a COCO JSON file; a DataError naming frame and person when malformed."""
    try:
        keypoints = np.asarray(person, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: a person must be 17 [x, y, score] keypoints; found {str(person)[:60]}") from None
    if keypoints.shape != (len(COCO17_JOINT_NAMES), 3):
        raise DataError(f"{where}: a person must be 17 [x, y, score] keypoints; found shape {keypoints.shape}")
    if not np.all(np.isfinite(keypoints)):
        raise DataError(f"{where}: NaN or inf in the keypoints")
    return keypoints


def parse_coco_frames(frames: Any, source: str, persons: int) -> np.ndarray:
    """COCO-17 frames (``COCO17_SCHEMA``) -> (C=3, T, V=17, persons) x, y, score; per frame the ``persons`` of
    highest total score (detections are not tracked across frames), absent persons zero."""
    if not isinstance(frames, list):
        raise DataError(f"{source}: expected {COCO17_SCHEMA}; found a JSON {type(frames).__name__}")
    if not frames:
        raise DataError(f"{source}: holds no frames; expected {COCO17_SCHEMA}")
    out = np.zeros((3, len(frames), len(COCO17_JOINT_NAMES), persons), dtype=np.float32)
    for index, frame in enumerate(frames):
        if not isinstance(frame, list):
            raise DataError(f"{source}: frame {index + 1} must be a list of persons; found {str(frame)[:60]}")
        people = [_coco_person(person, f"{source}: frame {index + 1}, person {number + 1}")
                  for number, person in enumerate(frame)]
        people.sort(key=lambda keypoints: -keypoints[:, 2].sum())
        for slot, keypoints in enumerate(people[:persons]):
            out[:, index, :, slot] = keypoints.T
    return out


def read_coco_json(path: Path, layout: SkeletonLayout) -> InputClips:
    """COCO-17 keypoints JSON (``COCO17_SCHEMA``) as one clip of all its frames, mapped to the model's layout
    when it is not a COCO-17 one (keeping the score for a model with a score channel)."""
    mapping = None
    if tuple(layout.joint_names) != COCO17_JOINT_NAMES:
        scored = position_channels(layout) < layout.num_coordinates
        source = replace(coco17_layout(with_scores=scored), num_persons=layout.num_persons)
        mapping = mapping_to_model(source, layout, str(path))
    try:
        frames = json.loads(path.read_text())
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text JSON file ({error})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}:{error.colno}: malformed JSON ({error.msg}); expected "
                        f"{COCO17_SCHEMA}") from None
    sequence = parse_coco_frames(frames, str(path), layout.num_persons)  # (3, T, 17, M): x, y, score
    if mapping is not None:
        sequence = mapping.apply(sequence[:mapping.source.num_coordinates])
    elif layout.num_coordinates == 2:  # coco17: positions only; coco17_score keeps the score as a third channel
        sequence = sequence[:2]
    return InputClips(_one_sequence(sequence, path.stem, str(path), layout), "coco17_json", preprocessed=False,
                      mapping=mapping)


def read_pose_estimator_output(path: Path, layout: SkeletonLayout, pose_format: str) -> InputClips:
    """One clip of pose estimator output (``usdrl.data.poses``) for a model trained on ``layout``: read in the
    model's layout when it holds the model's number of joints, else in the built-in layout of its joints and
    coordinates (the score variant for a model with scores) and mapped to the model's."""
    try:
        detected = pick_layout(None, path, pose_format)
    except DataError:  # no built-in layout of these joints: read as the model's, whose reader names the problem
        detected = layout
    mapping = None
    if detected.num_joints != layout.num_joints:
        scored = position_channels(layout) < layout.num_coordinates
        if scored and f"{detected.name}_score" in BUILTIN_LAYOUTS:
            detected = load_layout(f"{detected.name}_score")
        mapping = mapping_to_model(replace(detected, num_persons=layout.num_persons), layout, str(path))
    clip = read_pose_clip(path, pose_format, layout if mapping is None else mapping.source)
    x = clip.x if mapping is None else mapping.apply(clip.x)
    return InputClips(_one_sequence(x, clip.name, str(path), layout), f"{pose_format}_poses", preprocessed=False,
                      mapping=mapping)


def arrays_layout(path: Path, members: list[str], shape: tuple[int, ...]) -> SkeletonLayout | None:
    """The layout of a .npz of arrays x of ``shape`` (N, C, T, V, M): its member ``layout`` (a built-in layout's
    name), else the first built-in layout without a score or world variant of its V and C; None when none has them."""
    if "layout" in members:
        name = str(load_array(path, "layout", kinds="U", ndim=0))
        if name not in BUILTIN_LAYOUTS:
            raise DataError(f"{path}: layout {name!r} is not a built-in layout; name one of {', '.join(BUILTIN_LAYOUTS)}")
        return load_layout(name)
    for name in BUILTIN_LAYOUTS:
        if name.endswith(("_score", "_world")):
            continue
        layout = load_layout(name)
        if (layout.num_coordinates, layout.num_joints) == (shape[1], shape[3]):
            return layout
    return None


def read_arrays(path: Path, layout: SkeletonLayout) -> InputClips:
    """A .npz with ``x`` (N, C, T, V, M) or (C, T, V, M), optional ``num_frames`` and ``names``."""
    members = npz_members(path)
    if "x" not in members:
        raise DataError(f"{path}: no array 'x' (found {', '.join(members) or 'none'}); save the skeletons as x "
                        f"(N, C, T, V, M) with numpy.savez")
    x = load_array(path, "x").astype(np.float32, copy=False)
    x = x[None] if x.ndim == 4 else x
    if x.ndim != 5:
        raise DataError(f"{path}: x has shape {x.shape}; expected (N, C, T, V, M) or one sample (C, T, V, M)")
    if len(x) == 0 or x.shape[2] == 0:
        raise DataError(f"{path}: x holds no samples (shape {x.shape}); nothing to recognise")
    mapping = None
    if x.shape[1] != layout.num_coordinates or x.shape[3] != layout.num_joints or "layout" in members:
        source = arrays_layout(path, members, x.shape)
        if source is None or (source.num_coordinates, source.num_joints) != (x.shape[1], x.shape[3]):
            raise layout_mismatch(str(path), f"(C={x.shape[1]}, V={x.shape[3]}, M={x.shape[4]})", layout)
        mapping = mapping_to_model(replace(source, num_persons=min(max(x.shape[4], 1), 16)), layout, str(path))
    if mapping is None and x.shape[4] > layout.num_persons:
        raise layout_mismatch(str(path), f"(C={x.shape[1]}, V={x.shape[3]}, M={x.shape[4]})", layout)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: x holds NaN or inf; fix or drop those samples")
    if mapping is not None:
        x = mapping.apply(x)
    x = np.stack([_fit_persons(sample, layout.num_persons) for sample in x])
    counted = count_nonzero_frames(x)
    num_frames = load_array(path, "num_frames", kinds="iu", ndim=1) if "num_frames" in members else counted
    if num_frames.shape != (len(x),) or (num_frames < 0).any() or (num_frames > x.shape[2]).any():
        raise DataError(f"{path}: num_frames must hold one length in 0..{x.shape[2]} per sample ({len(x)})")
    names = ([str(name) for name in load_array(path, "names", kinds=None, ndim=1)] if "names" in members
             else [f"{path.stem}_{i:04d}" for i in range(len(x))])
    if len(names) != len(x):
        raise DataError(f"{path}: {len(names)} names for {len(x)} samples")
    empty = np.flatnonzero(np.minimum(num_frames, counted) == 0)
    if empty.size:
        raise DataError(f"{path}: sample {empty[0]} ({names[empty[0]]}) has no skeleton in any frame; drop it")
    return InputClips(_in_memory_split(x, num_frames, names, str(path), layout), "arrays", preprocessed=False,
                      mapping=mapping)


def read_prepared(root: Path, layout: SkeletonLayout, split: str | None) -> InputClips:
    """A prepared dataset: one split (``benchmark/split``) or all samples, memory-mapped; a dataset of another
    layout is mapped to the model's in memory (``mapped_split``)."""
    manifest = read_manifest(root)
    stored = layout_from_dict(manifest["layout"], source=str(root / MANIFEST_NAME))
    mapping = None
    if (tuple(stored.joint_names), stored.num_coordinates, stored.num_persons) != (
            tuple(layout.joint_names), layout.num_coordinates, layout.num_persons):
        mapping = mapping_to_model(stored, layout, str(root)) or layout_mapping(stored, layout)
    normalised = is_normalised(manifest)
    if split is not None:
        benchmark, _, part = split.partition("/")
        if not part:
            known = ", ".join(f"{b}/{s}" for b, s in available_splits(root))
            raise DataError(f"split {split!r}: name it benchmark/split, one of {known}")
        chosen = load_split(root, benchmark, part)
        if mapping is not None:
            chosen = mapped_split(chosen, mapping, normalised)
        return InputClips(chosen, "prepared", True, normalised, mapping)
    untrimmed = manifest.get("kind") == "untrimmed"
    count = int(manifest["num_samples"])
    names = json.loads((root / "names.json").read_text())
    whole = SkeletonSplit(root=root, benchmark="all", split="all", manifest=manifest, indices=np.arange(count),
                          label=np.load(root / "label.npy"), num_frames=np.load(root / "num_frames.npy"), names=names,
                          x=None if untrimmed else np.load(root / "x.npy", mmap_mode="r"),
                          frames=np.load(root / "frames.npy", mmap_mode="r") if untrimmed else None,
                          offsets=np.load(root / "offsets.npy") if untrimmed else None)
    if mapping is not None:
        whole = mapped_split(whole, mapping, normalised)
    return InputClips(whole, "prepared", True, normalised, mapping)


def mapped_split(split: SkeletonSplit, mapping: LayoutMapping, normalised: bool) -> SkeletonSplit:
    """A split of a prepared dataset in the mapping's target layout, in memory (normalised again with the target's
    joints when the dataset is normalised, as ``usdrl import store`` writes it). Untrimmed: the split's streams
    only; the offsets give the other streams no frames, so sample rows (and ``instances``) keep their numbers."""
    manifest = {**split.manifest, "layout": mapping.target.to_dict()}
    if not split.untrimmed:
        x = map_samples(split.batch(np.arange(len(split))), split.num_frames, mapping, normalised)  # (n, C, T, V, M)
        return replace(split, manifest=manifest, indices=np.arange(len(split)), x=x)
    lengths = np.zeros(len(split.offsets) - 1, dtype=np.int64)
    sequences, labels = [], []
    for position in sorted(range(len(split)), key=lambda place: split.indices[place]):
        sequences.append(map_sequence(split.sequence(position), mapping, normalised).transpose(1, 0, 2, 3))
        if split.frame_labels is not None:
            labels.append(split.frame_labels_of(position))
        lengths[split.indices[position]] = len(sequences[-1])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return replace(split, manifest=manifest, frames=np.concatenate(sequences), offsets=offsets,
                   frame_labels=np.concatenate(labels) if labels else None)


def input_kind(path: Path) -> str:
    """``prepared``, ``arrays``, ``coco17_json``, ``ntu_skeleton``, ``pkummd_skeleton`` or ``poses:<format>``
    (``usdrl.data.poses.POSE_FORMATS``), from the content."""
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return "prepared"
        pose_format = detect_pose_format(path)
        if pose_format in ("openpose", "mmpose"):
            return f"poses:{pose_format}"
        raise DataError(f"{path} is a folder without {MANIFEST_NAME} nor OpenPose / MMPose frame files; pass {KNOWN_KINDS}")
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass {KNOWN_KINDS}")
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        raise DataError(f"{path} is empty; pass {KNOWN_KINDS}")
    if zipfile.is_zipfile(path):
        return "arrays"
    text = head.decode("ascii", errors="replace").lstrip()
    if text[:1] in "[{":
        pose_format = detect_pose_format(path)
        return f"poses:{pose_format}" if pose_format in ("kinetics", "mmpose", "mediapipe") else "coco17_json"
    first = text.split("\n", 1)[0].split()
    if len(first) == 1 and first[0].isdigit():
        return "ntu_skeleton"
    if len(first) == VALUES_PER_FRAME:
        return "pkummd_skeleton"
    raise DataError(f"{path}: not recognised (its first line {' '.join(first)[:40]!r} is neither an NTU frame count "
                    f"nor a PKU-MMD frame of {VALUES_PER_FRAME} numbers); pass {KNOWN_KINDS}")


def read_input(path: str | Path, layout: SkeletonLayout, split: str | None = None) -> InputClips:
    """The skeletons of ``path`` (any kind above) for a model trained on ``layout``."""
    path = Path(path)
    kind = input_kind(path)
    if split is not None and kind != "prepared":
        raise DataError(f"--split {split} applies to a prepared dataset folder; {path} is a single file")
    if kind == "prepared":
        return read_prepared(path, layout, split)
    if kind.startswith("poses:"):
        return read_pose_estimator_output(path, layout, kind.split(":", 1)[1])
    readers = {"arrays": read_arrays, "coco17_json": read_coco_json, "ntu_skeleton": read_ntu_file,
               "pkummd_skeleton": read_pku_file}
    return readers[kind](path, layout)


def clips_from_array(x: np.ndarray, layout: SkeletonLayout, num_frames: np.ndarray | None = None,
                     names: list[str] | None = None) -> InputClips:
    """Raw skeletons given as an array (N, C, T, V, M) or (C, T, V, M)."""
    x = np.asarray(x, dtype=np.float32)
    x = x[None] if x.ndim == 4 else x
    if x.ndim != 5 or x.shape[1] != layout.num_coordinates or x.shape[3] != layout.num_joints or (
            x.shape[4] > layout.num_persons):
        raise layout_mismatch("array", f"shape {x.shape} (expected N, C, T, V, M)", layout)
    x = np.stack([_fit_persons(sample, layout.num_persons) for sample in x])
    frames = count_nonzero_frames(x) if num_frames is None else np.asarray(num_frames)
    names = names or [f"sample_{i:04d}" for i in range(len(x))]
    if len(x) == 0 or (frames == 0).any():
        raise DataError("array: no samples, or a sample without any skeleton; nothing to recognise")
    return InputClips(_in_memory_split(x, frames, names, "array", layout), "array", preprocessed=False)
