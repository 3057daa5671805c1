"""Skeletons written by pose estimators: OpenPose, the Kinetics-skeleton JSON of ST-GCN, MMPose / RTMPose and
MediaPipe Pose. One reader per format (``read_pose_clip``), used by ``usdrl import poses`` (``import_poses``)
and by the model inputs (``usdrl.deploy.inputs.read_input``).

Formats (``POSE_FORMATS``), one clip each:

- ``openpose``: a folder of per-frame ``*_keypoints.json`` (OpenPose ``--write_json``): ``people[]`` each with
  ``pose_keypoints_2d``, flat x, y, confidence triples (BODY_25: 75 numbers, COCO-18: 54); frames in the order
  of the last number in the file names;
- ``kinetics``: one JSON file (ST-GCN's Kinetics-skeleton): ``data[]`` frames with ``frame_index`` (1-based)
  and ``skeleton[]``, each with ``pose`` (flat x, y) and ``score``; ``label`` / ``label_index`` of the clip;
- ``mmpose``: one JSON file of MMPose's inferencer for a video (``pred_out_dir``): a list of ``{"frame_id",
  "instances": [{"keypoints": [[x, y], ...], "keypoint_scores": [...], ...}]}``, or a folder of the per-image
  files it writes for images (each a list of instances); 3D keypoints [[x, y, z], ...] are read as such;
- ``mediapipe``: one JSON file per clip, a list of frames named after MediaPipe's PoseLandmarkerResult fields:
  ``{"pose_landmarks": [[{"x", "y", "z", "visibility"}, ... 33], ...], "pose_world_landmarks": [...]}`` (one
  list of 33 landmarks per person; ``pose_world_landmarks`` read for the ``mediapipe33_world`` layout).

Persons are not identified by the estimators: they are tracked across frames by Hungarian assignment on joint
distances (``track_people``), and the layout's M tracks of highest summed confidence (confident and long) fill
its person slots. A joint below ``min_confidence`` (OpenPose writes 0 for undetected joints) is missing: it is
interpolated from the same joint of the same track in the frames around it (held at the track's ends), and a
joint never seen in a track takes its parent's position (a zero-length bone), so that no missing joint is a zero
that reads as a joint at the origin. Frames where a track is absent within its span are interpolated the same
way; the slots' frames outside their track stay zero (an absent person, as in NTU). A ``*_score`` layout keeps
the confidence as its last channel, 0 for every filled joint.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from usdrl.data.errors import DataError
from usdrl.data.fingerprint import input_fingerprint, is_up_to_date
from usdrl.data.import_common import (
    default_normalise,
    normalisation_record,
    normalise_samples,
    position_channels,
    write_samples,
)
from usdrl.data.layout_mapping import layout_mapping
from usdrl.data.writer import DatasetWriter, finish_dataset
from usdrl.skeleton import SkeletonLayout, load_layout

POSE_FORMATS = ("openpose", "kinetics", "mmpose", "mediapipe")
DEFAULT_MIN_CONFIDENCE = 0.05  # joints of lower confidence are missing (OpenPose and Kinetics write 0)
MOST_FRAMES_MISSED = 15  # a track not seen for more frames than this is closed; a new detection starts a new one
PROGRESS_FROM_FRAMES = 100  # folders of at least this many frame files show a progress bar
# (joints, positions) of a detection -> the built-in layout ``import poses`` picks when --layout is not given
DEFAULT_LAYOUTS = {(25, 2): "body25", (18, 2): "coco18", (17, 2): "coco17", (17, 3): "h36m17", (33, 3): "mediapipe33"}
LABELS_COLUMNS = "clip,label and optionally subject and split (e.g. train / test)"


@dataclass
class PoseClip:
    """One clip read from a pose estimator's output: x (C, T, V, M) of the layout, its name and the label the
    file itself holds (Kinetics-skeleton only; else None)."""

    name: str
    x: np.ndarray
    label: str | None = None


Frame = list[np.ndarray]  # the detections of one frame, each (V, P + 1): P positions, then the confidence
Frames = Iterator[tuple[str, Frame]]  # (where: the file and frame, for messages; the frame's detections)


def _load_json(path: Path, expected: str) -> Any:
    """The JSON content of ``path``; one-line DataErrors naming the file for unreadable or malformed JSON."""
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text JSON file ({error}); expected {expected}") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}:{error.colno}: malformed JSON ({error.msg}); expected {expected}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None


def _numbers(values: Any, where: str, what: str) -> np.ndarray:
    """values as a finite float64 array; a DataError naming ``where`` when they are not numbers."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} must be numbers; found {' '.join(str(values).split())[:60]}") from None
    if not np.all(np.isfinite(array)):
        raise DataError(f"{where}: NaN or inf in {what}")
    return array


def _frame_number(path: Path) -> int:
    """The last number in a frame file's name (OpenPose: video_000000000012_keypoints.json -> 12), else -1."""
    numbers = re.findall(r"\d+", path.name)
    return int(numbers[-1]) if numbers else -1


def frame_files(folder: Path) -> list[Path]:
    """The per-frame JSON files of a clip folder in frame order (``*_keypoints.json`` when there are any)."""
    files = sorted(folder.glob("*_keypoints.json")) or sorted(folder.glob("*.json"))
    return sorted(files, key=lambda path: (_frame_number(path), path.name))


OPENPOSE_SCHEMA = "an OpenPose frame {\"people\": [{\"pose_keypoints_2d\": [x, y, c, ...]}]}"
KINETICS_SCHEMA = ("a Kinetics-skeleton clip {\"data\": [{\"frame_index\", \"skeleton\": [{\"pose\": [x, y, ...], "
                   "\"score\": [...]}]}], \"label\", \"label_index\"}")
MMPOSE_SCHEMA = ("MMPose predictions: a list of {\"frame_id\", \"instances\": [{\"keypoints\": [[x, y], ...], "
                 "\"keypoint_scores\": [...]}]} (a video), or per image a list of instances")
MEDIAPIPE_SCHEMA = ("a MediaPipe Pose clip: a list of frames {\"pose_landmarks\": [[{\"x\", \"y\", \"z\", "
                    "\"visibility\"}, ...]], \"pose_world_landmarks\": [...]}")


def _openpose_frame(content: Any, where: str) -> Frame:
    if not isinstance(content, dict) or not isinstance(content.get("people"), list):
        raise DataError(f"{where}: not {OPENPOSE_SCHEMA}")
    people = []
    for number, person in enumerate(content["people"]):
        if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
            raise DataError(f"{where}: person {number + 1} has no pose_keypoints_2d; expected {OPENPOSE_SCHEMA}")
        flat = _numbers(person["pose_keypoints_2d"], f"{where}, person {number + 1}", "pose_keypoints_2d")
        if flat.ndim != 1 or flat.size == 0 or flat.size % 3:
            raise DataError(f"{where}, person {number + 1}: pose_keypoints_2d holds {flat.size} numbers; expected "
                            f"x, y, confidence triples (75 for BODY_25, 54 for COCO-18)")
        people.append(flat.reshape(-1, 3))
    return people


def _openpose_frames(folder: Path, progress: bool) -> Frames:
    """An OpenPose clip folder, one file at a time (only the current frame's content is held)."""
    files = frame_files(folder)
    if not files:
        raise DataError(f"{folder}: no *_keypoints.json frame files; expected a folder of OpenPose --write_json output")
    bar = tqdm(files, unit="frame", desc=f"read {folder.name}", leave=False,
               disable=not progress or len(files) < PROGRESS_FROM_FRAMES)
    for index, path in enumerate(bar):
        where = f"{path}: frame {index + 1}"
        yield where, _openpose_frame(_load_json(path, OPENPOSE_SCHEMA), where)


def _kinetics_frames(path: Path) -> tuple[list[tuple[str, Frame]], str | None]:
    content = _load_json(path, KINETICS_SCHEMA)
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise DataError(f"{path}: not {KINETICS_SCHEMA}")
    frames_by_index: dict[int, Frame] = {}
    for position, frame in enumerate(content["data"]):
        where = f"{path}: frame {position + 1}"
        if not isinstance(frame, dict) or not isinstance(frame.get("skeleton"), list):
            raise DataError(f"{where}: a frame must be {{\"frame_index\", \"skeleton\": [...]}}")
        index = frame.get("frame_index", position + 1)
        if not isinstance(index, int) or isinstance(index, bool) or index < 1:
            raise DataError(f"{where}: frame_index must be a positive integer (1-based), found {index!r:.40}")
        people = []
        for number, skeleton in enumerate(frame["skeleton"]):
            if not isinstance(skeleton, dict) or "pose" not in skeleton or "score" not in skeleton:
                raise DataError(f"{where}, person {number + 1}: needs pose and score; expected {KINETICS_SCHEMA}")
            pose = _numbers(skeleton["pose"], f"{where}, person {number + 1}", "pose")
            score = _numbers(skeleton["score"], f"{where}, person {number + 1}", "score")
            if pose.ndim != 1 or score.ndim != 1 or pose.size != 2 * score.size or score.size == 0:
                raise DataError(f"{where}, person {number + 1}: pose holds {pose.size} numbers and score {score.size}; "
                                f"expected x, y per joint and one score per joint")
            people.append(np.concatenate([pose.reshape(-1, 2), score[:, None]], axis=1))
        frames_by_index.setdefault(index, []).extend(people)
    count = max(frames_by_index, default=0)
    label = content.get("label")
    frames = [(f"{path}: frame {index}", frames_by_index.get(index, [])) for index in range(1, count + 1)]
    return frames, None if label is None else str(label)


def _mmpose_instances(instances: Any, where: str) -> Frame:
    if not isinstance(instances, list):
        raise DataError(f"{where}: instances must be a list; expected {MMPOSE_SCHEMA}")
    people = []
    for number, instance in enumerate(instances):
        here = f"{where}, instance {number + 1}"
        if not isinstance(instance, dict) or "keypoints" not in instance:
            raise DataError(f"{here}: no keypoints; expected {MMPOSE_SCHEMA}")
        keypoints = _numbers(instance["keypoints"], here, "keypoints")
        if keypoints.ndim != 2 or keypoints.shape[1] not in (2, 3) or len(keypoints) == 0:
            raise DataError(f"{here}: keypoints have shape {keypoints.shape}; expected [[x, y], ...] or [[x, y, z], ...]")
        scores = (_numbers(instance["keypoint_scores"], here, "keypoint_scores") if "keypoint_scores" in instance
                  else np.ones(len(keypoints)))
        if scores.shape != (len(keypoints),):
            raise DataError(f"{here}: {scores.size} keypoint_scores for {len(keypoints)} keypoints")
        people.append(np.concatenate([keypoints, scores[:, None]], axis=1))
    return people


def _mmpose_frames(path: Path, progress: bool) -> Frames:
    """A video's predictions file, or a folder of per-image files read one at a time."""
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise DataError(f"{path}: no .json frame files; expected a folder of MMPose per-image predictions")
        bar = tqdm(files, unit="frame", desc=f"read {path.name}", leave=False,
                   disable=not progress or len(files) < PROGRESS_FROM_FRAMES)
        for index, file in enumerate(bar):
            content = _load_json(file, MMPOSE_SCHEMA)
            if isinstance(content, dict) and "instances" in content:
                content = content["instances"]
            yield f"{file}: frame {index + 1}", _mmpose_instances(content, f"{file}: frame {index + 1}")
        return
    content = _load_json(path, MMPOSE_SCHEMA)
    if not isinstance(content, list) or not all(isinstance(frame, dict) and "instances" in frame for frame in content):
        raise DataError(f"{path}: not {MMPOSE_SCHEMA}")
    frames_by_index: dict[int, Frame] = {}
    for position, frame in enumerate(content):
        index = frame.get("frame_id", position)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise DataError(f"{path}: frame {position + 1}: frame_id must be an integer from 0, found {index!r:.40}")
        frames_by_index.setdefault(index, []).extend(_mmpose_instances(frame["instances"], f"{path}: frame {position + 1}"))
    for index in range(max(frames_by_index, default=-1) + 1):
        yield f"{path}: frame {index + 1}", frames_by_index.get(index, [])


MEDIAPIPE_FIELDS = ("x", "y", "z")


def _mediapipe_frames(path: Path, world: bool) -> Frames:
    field = "pose_world_landmarks" if world else "pose_landmarks"
    content = _load_json(path, MEDIAPIPE_SCHEMA)
    if not isinstance(content, list) or not all(isinstance(frame, dict) for frame in content):
        raise DataError(f"{path}: not {MEDIAPIPE_SCHEMA}")
    for index, frame in enumerate(content):
        where = f"{path}: frame {index + 1}"
        if "pose_landmarks" not in frame and "pose_world_landmarks" not in frame:
            raise DataError(f"{where}: no pose_landmarks; expected {MEDIAPIPE_SCHEMA}")
        poses = frame.get(field)
        if poses is None:
            raise DataError(f"{where}: no {field} (the layout {'mediapipe33_world' if world else 'mediapipe33'} "
                            f"reads them)")
        if not isinstance(poses, list):
            raise DataError(f"{where}: {field} must be a list of persons, each a list of landmarks")
        if poses and isinstance(poses[0], dict):  # one person given as a flat list of landmarks
            poses = [poses]
        people = []
        for number, landmarks in enumerate(poses):
            here = f"{where}, person {number + 1}"
            if not isinstance(landmarks, list) or not all(isinstance(mark, dict) for mark in landmarks):
                raise DataError(f"{here}: landmarks must be a list of {{x, y, z, visibility}}")
            try:
                rows = [[mark[key] for key in MEDIAPIPE_FIELDS] + [mark.get("visibility", 1.0)] for mark in landmarks]
            except KeyError as error:
                raise DataError(f"{here}: a landmark has no {error.args[0]}; each needs x, y, z (visibility optional)") from None
            people.append(_numbers(rows, here, "landmarks").reshape(len(landmarks), 4))
        yield where, people


def clip_frames(path: Path, pose_format: str, layout: SkeletonLayout | None,
                progress: bool = False) -> tuple[Frames | list[tuple[str, Frame]], str | None]:
    """The frames of one clip in ``pose_format`` and the label the clip file holds (Kinetics only)."""
    if pose_format == "openpose":
        if not path.is_dir():
            raise DataError(f"{path}: an OpenPose clip is a folder of *_keypoints.json frame files")
        return _openpose_frames(path, progress), None
    if pose_format == "kinetics":
        return _kinetics_frames(path)
    if pose_format == "mmpose":
        return _mmpose_frames(path, progress), None
    if pose_format == "mediapipe":
        return _mediapipe_frames(path, world=layout is not None and layout.name.endswith("_world")), None
    raise DataError(f"unknown pose format {pose_format!r}; choose one of {', '.join(POSE_FORMATS)}")


@dataclass
class Track:
    """One person followed across frames: its first frame and its detections (V, P + 1), one per frame of its span
    (None where it was not seen)."""

    start: int
    poses: list[np.ndarray | None]

    @property
    def last(self) -> np.ndarray:
        return next(pose for pose in reversed(self.poses) if pose is not None)

    @property
    def last_frame(self) -> int:
        return self.start + max(i for i, pose in enumerate(self.poses) if pose is not None)

    def confidence(self, min_confidence: float) -> float:
        """The summed mean confidence of its frames (confident joints only): long and confident tracks score high."""
        return float(sum(np.where(pose[:, -1] >= min_confidence, pose[:, -1], 0.0).mean()
                         for pose in self.poses if pose is not None))


def _distance_cost(track_pose: np.ndarray, detection: np.ndarray, min_confidence: float) -> float:
    """Mean distance of the joints confident in both poses, in units of the track's body size; inf without any."""
    both = (track_pose[:, -1] >= min_confidence) & (detection[:, -1] >= min_confidence)
    if not both.any():
        return np.inf
    sizes = [float(np.ptp(pose[pose[:, -1] >= min_confidence, :-1], axis=0).max()) for pose in (track_pose, detection)]
    return float(np.linalg.norm(track_pose[both, :-1] - detection[both, :-1], axis=1).mean()) / max(*sizes, 1e-6)


GATE = 1.0  # a detection farther from a track than one body size (mean joint distance) starts a new track


def track_people(frames: Frames | list[tuple[str, Frame]], joints: int, positions: int,
                 min_confidence: float) -> tuple[list[Track], int]:
    """Tracks over the frames, detections assigned to the open tracks by the Hungarian algorithm on joint
    distances (``linear_sum_assignment``); the tracks and the frame count. A detection of another joint count or
    coordinate count than the layout's is a DataError naming the frame; detections without a confident joint
    are dropped."""
    from scipy.optimize import linear_sum_assignment  # here, not at the top: scipy would slow every usdrl command

    tracks: list[Track] = []
    count = 0
    for index, (where, frame) in enumerate(frames):
        count = index + 1
        detections = []
        for number, pose in enumerate(frame):
            if pose.shape != (joints, positions + 1):
                raise DataError(f"{where}, person {number + 1}: {pose.shape[0]} joints with "
                                f"{pose.shape[1] - 1} coordinates; the layout has {joints} joints with {positions}")
            if (pose[:, -1] >= min_confidence).any():
                detections.append(pose.astype(np.float32))
        open_tracks = [track for track in tracks if index - track.last_frame <= MOST_FRAMES_MISSED]
        assigned: set[int] = set()
        if open_tracks and detections:
            cost = np.array([[_distance_cost(track.last, detection, min_confidence) for detection in detections]
                             for track in open_tracks])
            rows, columns = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e9))
            for row, column in zip(rows, columns):
                if cost[row, column] <= GATE:
                    track = open_tracks[row]
                    track.poses.extend([None] * (index - track.start - len(track.poses)))
                    track.poses.append(detections[column])
                    assigned.add(column)
        for column, detection in enumerate(detections):
            if column not in assigned:
                tracks.append(Track(start=index, poses=[detection]))
    return tracks, count


def _fill_missing(poses: list[np.ndarray | None], layout: SkeletonLayout, min_confidence: float) -> np.ndarray:
    """(F, V, P + 1) over a track's span: missing joints (and frames) interpolated over time from the same joint,
    held at the ends; a joint never confident takes its parent's position; filled joints get confidence 0."""
    span, joints, channels = len(poses), layout.num_joints, poses[0].shape[1]
    out = np.zeros((span, joints, channels), dtype=np.float32)
    seen = np.zeros((span, joints), dtype=bool)
    for frame, pose in enumerate(poses):
        if pose is not None:
            seen[frame] = pose[:, -1] >= min_confidence
            out[frame] = np.where(seen[frame][:, None], pose, 0.0)
    time = np.arange(span)
    for joint in range(joints):
        known = seen[:, joint]
        if known.any() and not known.all():
            for channel in range(channels - 1):
                out[:, joint, channel] = np.interp(time, time[known], out[known, joint, channel])
    never = ~seen.any(axis=0)
    parents = layout.parent_index()
    for _ in range(joints):  # a parent filled from its own parent first, up the tree
        for joint in np.flatnonzero(never):
            if not never[parents[joint]]:
                out[:, joint, :-1] = out[:, parents[joint], :-1]
                never[joint] = False
    if never.any():  # the whole chain to the root unseen: the mean of the seen joints
        seen_joints = seen.any(axis=0)
        out[:, never, :-1] = out[:, seen_joints, :-1].mean(axis=1, keepdims=True)
    out[..., -1] = np.where(seen, out[..., -1], 0.0)
    return out


def poses_to_clip(frames: Frames | list[tuple[str, Frame]], source: str, layout: SkeletonLayout,
                  min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> np.ndarray:
    """x (C, T, V, M) for ``layout`` from a clip's frames: tracked, the M best tracks kept, missing joints filled."""
    positions = position_channels(layout)
    with_score = positions < layout.num_coordinates
    tracks, count = track_people(frames, layout.num_joints, positions, min_confidence)
    if count == 0:
        raise DataError(f"{source}: holds no frames; nothing to read")
    if not tracks:
        raise DataError(f"{source}: no person with a joint of confidence {min_confidence} or more in any of its "
                        f"{count} frames; an empty track is not a clip")
    kept = sorted(tracks, key=lambda track: -track.confidence(min_confidence))[:layout.num_persons]
    x = np.zeros((layout.num_coordinates, count, layout.num_joints, layout.num_persons), dtype=np.float32)
    for slot, track in enumerate(kept):
        filled = _fill_missing(track.poses, layout, min_confidence)  # (F, V, P + 1)
        values = filled if with_score else filled[..., :-1]
        x[:, track.start:track.start + len(filled), :, slot] = values.transpose(2, 0, 1)
    return x


def read_pose_clip(path: str | Path, pose_format: str, layout: SkeletonLayout,
                   min_confidence: float = DEFAULT_MIN_CONFIDENCE, progress: bool = False) -> PoseClip:
    """One clip (a file or a folder of frames) of ``pose_format`` as x (C, T, V, M) of ``layout``."""
    path = Path(path)
    frames, label = clip_frames(path, pose_format, layout, progress)
    return PoseClip(path.stem if path.is_file() else path.name, poses_to_clip(frames, str(path), layout, min_confidence),
                    label)


def detect_pose_format(path: Path) -> str | None:
    """The pose format of a clip file or frame folder from its content (the first frame file of a folder), or
    None when it is none of them."""
    if path.is_dir():
        files = frame_files(path)
        if not files:
            return None
        if files[0].name.endswith("_keypoints.json"):
            return "openpose"
        path = files[0]
    with open(path, "rb") as handle:
        head = handle.read(8192).decode("utf-8", errors="replace")
    if '"pose_keypoints_2d"' in head or re.match(r'\s*\{\s*"version"[^{]*"people"', head):
        return "openpose"
    if '"instances"' in head or ('"keypoint_scores"' in head and head.lstrip().startswith("[")):
        return "mmpose"
    if '"pose_landmarks"' in head or '"pose_world_landmarks"' in head:
        return "mediapipe"
    if '"data"' in head and ('"skeleton"' in head or '"frame_index"' in head):
        return "kinetics"
    return None


def _clip_paths(root: Path, pose_format: str) -> list[Path]:
    """The clips under ``root``: subfolders (OpenPose; MMPose per-image folders) and .json files."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder of clips (one subfolder or file per clip)")
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    files = sorted(root.glob("*.json"))
    clips = folders if pose_format == "openpose" else folders + files if pose_format == "mmpose" else files
    if not clips:
        what = "subfolders of *_keypoints.json" if pose_format == "openpose" else ".json files"
        raise DataError(f"{root}: no clips found ({what}, one per clip) for --format {pose_format}")
    names = [path.stem if path.is_file() else path.name for path in clips]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise DataError(f"{root}: clip {doubled[0]!r} is both a folder and a file; keep one")
    return clips


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """LABELS.csv: {clip: {"label", "subject"?, "split"?}}; one-line DataErrors naming the file and row."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            rows = [{key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: not a readable CSV file ({error}); expected columns {LABELS_COLUMNS}") from None
    missing = [name for name in ("clip", "label") if name not in columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing)} (found {', '.join(columns) or 'none'}); expected "
                        f"columns {LABELS_COLUMNS}")
    labels: dict[str, dict[str, str]] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        if not row.get("clip") or not row.get("label"):
            raise DataError(f"{path}:{number}: empty clip or label")
        if row["clip"] in labels:
            raise DataError(f"{path}:{number}: clip {row['clip']!r} listed twice")
        if "split" in columns and not row.get("split"):
            raise DataError(f"{path}:{number}: clip {row['clip']!r} has no split; give every clip a split, or drop "
                            f"the split column")
        labels[row["clip"]] = {key: row.get(key, "") for key in ("label", "subject", "split") if key in columns}
    if not labels:
        raise DataError(f"{path}: no rows; expected one row per clip with columns {LABELS_COLUMNS}")
    return labels


def _class_indices(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer labels (0-based class indices) as given; names numbered in sorted order."""
    if all(re.fullmatch(r"\d+", label) for label in labels):
        indices = np.array([int(label) for label in labels], dtype=np.int64)
        return indices, [f"class {index + 1}" for index in range(int(indices.max()) + 1)]
    names = sorted(set(labels))
    return np.array([names.index(label) for label in labels], dtype=np.int64), names


def _subject_ids(subjects: list[str]) -> np.ndarray:
    """Subjects as integers: as given when all are numbers, else 1.. in sorted order of the names."""
    if all(re.fullmatch(r"\d+", subject) for subject in subjects):
        return np.array([int(subject) for subject in subjects], dtype=np.int32)
    names = sorted(set(subjects))
    return np.array([names.index(subject) + 1 for subject in subjects], dtype=np.int32)


def pick_layout(layout: str | Path | None, first_clip: Path, pose_format: str) -> SkeletonLayout:
    """``layout``, else the built-in layout of the first detection's joint and coordinate counts."""
    if layout is not None:
        return load_layout(layout)
    if pose_format == "mediapipe":
        return load_layout("mediapipe33")
    frames, _ = clip_frames(first_clip, pose_format, None)
    for _, frame in frames:
        for pose in frame:
            shape = (pose.shape[0], pose.shape[1] - 1)
            if shape in DEFAULT_LAYOUTS:
                return load_layout(DEFAULT_LAYOUTS[shape])
            raise DataError(f"{first_clip}: {shape[0]} joints with {shape[1]} coordinates match no built-in layout; "
                            f"pass --layout (a YAML/JSON layout file)")
    raise DataError(f"{first_clip}: no person in any frame; cannot tell the layout, pass --layout")


def import_poses(path: str | Path, out_dir: str | Path, pose_format: str, labels: str | Path | None = None,
                 layout: str | Path | None = None, normalise: bool | None = None, benchmark: str = "custom",
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, dataset: str | None = None,
                 progress: bool = True, to_layout: str | Path | None = None) -> dict:
    """A folder of clips of ``pose_format`` (``POSE_FORMATS``) into the canonical store.

    ``labels``: LABELS.csv with columns clip, label, optional subject and split; split values (train, test, ...)
    become the splits ``<benchmark>/<value>``; without a split column the store has one split ``all/all`` and a
    split column must be added to train and probe on a benchmark. Without ``labels`` (Kinetics-skeleton only) the
    clips' own ``label``. Clips are zero-padded to the longest; clips without a label row are skipped (listed in
    the manifest). ``normalise``: None = ``default_normalise(layout)`` (on for 3D, off for 2D). ``to_layout``: the
    store is in that layout, each clip mapped by joint names (``usdrl.data.layout_mapping``) before normalisation;
    the manifest's ``layout_mapping`` records how.
    """
    path, out_dir = Path(path), Path(out_dir)
    if pose_format not in POSE_FORMATS:
        raise DataError(f"unknown --format {pose_format!r}; choose one of {', '.join(POSE_FORMATS)}")
    if not 0.0 <= min_confidence:
        raise DataError(f"--min-confidence must be 0 or more, got {min_confidence}")
    clips = _clip_paths(path, pose_format)
    table = read_labels(Path(labels)) if labels is not None else None
    skeleton_layout = pick_layout(layout, clips[0], pose_format)
    mapping = layout_mapping(skeleton_layout, load_layout(to_layout)) if to_layout is not None else None
    stored_layout = mapping.target if mapping is not None else skeleton_layout
    normalise = default_normalise(stored_layout) if normalise is None else bool(normalise)
    inputs = [*clips, *([Path(labels)] if labels is not None else []),
              *(Path(name) for name in (layout, to_layout) if name is not None and Path(str(name)).is_file())]
    stamped = [file for clip in clips for file in (frame_files(clip) if clip.is_dir() else [clip])] + inputs[len(clips):]
    fingerprint = input_fingerprint(stamped, {"importer": "poses", "format": pose_format, "layout": skeleton_layout.to_dict(),
                                              "normalise": normalise, "benchmark": benchmark,
                                              "min_confidence": min_confidence,
                                              "to_layout": None if mapping is None else stored_layout.to_dict()})
    if is_up_to_date(out_dir, fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    names = [clip.stem if clip.is_file() else clip.name for clip in clips]
    if table is not None:
        unknown = sorted(set(table) - set(names))
        if unknown:
            raise DataError(f"{labels}: clip {unknown[0]!r} is not in {path} ({len(unknown)} such row(s)); the clip "
                            f"column names a subfolder or a file without .json")
    samples, rows, skipped = [], [], []
    for clip, name in tqdm(list(zip(clips, names)), unit="clip", desc="import poses", disable=not progress):
        if table is not None and name not in table:
            skipped.append({"name": name, "reason": f"no row in {Path(labels).name}"})
            continue
        read = read_pose_clip(clip, pose_format, skeleton_layout, min_confidence, progress)
        row = table[name] if table is not None else {"label": read.label or ""}
        if not row["label"]:
            raise DataError(f"{clip}: no label in the file; pass --labels LABELS.csv (columns {LABELS_COLUMNS})")
        samples.append(read.x if mapping is None else mapping.apply(read.x))
        rows.append((name, row))
    if not samples:
        raise DataError(f"{path}: none of the {len(clips)} clips has a row in {labels}")
    label, class_names = _class_indices([row["label"] for _, row in rows])
    num_frames = np.array([sample.shape[1] for sample in samples], dtype=np.int32)
    longest = int(num_frames.max())
    has_splits = all("split" in row for _, row in rows)
    splits = ({(benchmark, value): np.array([i for i, (_, row) in enumerate(rows) if row["split"] == value])
               for value in sorted({row["split"] for _, row in rows})} if has_splits
              else {("all", "all"): np.arange(len(rows))})
    ids = ({"subject": _subject_ids([row["subject"] for _, row in rows])}
           if all(row.get("subject") for _, row in rows) else {})

    def block(start: int, stop: int) -> np.ndarray:  # (n, C, T, V, M), zero-padded to the longest clip
        out = np.zeros((stop - start, stored_layout.num_coordinates, longest, stored_layout.num_joints,
                        stored_layout.num_persons), dtype=np.float32)
        for row_index in range(start, stop):
            out[row_index - start, :, :num_frames[row_index]] = samples[row_index]
        return normalise_samples(out, num_frames[start:stop], stored_layout) if normalise else out

    preprocessing = normalisation_record(stored_layout, normalise, f"{pose_format} poses")
    preprocessing.update({"num_frames": "the clip's frames; shorter clips zero-padded to the longest",
                          "min_confidence": min_confidence,
                          "tracking": "Hungarian assignment on joint distances; the tracks of highest summed "
                                      "confidence kept",
                          "missing_joints": "interpolated over time in their track; never seen: the parent's "
                                            "position; score 0 in a score channel"})
    with DatasetWriter(out_dir, inputs) as writer:
        write_samples(writer, block, len(samples), (stored_layout.num_coordinates, longest,
                                                     stored_layout.num_joints, stored_layout.num_persons))
        finish_dataset(writer, kind="trimmed", layout=stored_layout, class_names=class_names, label=label,
                       num_frames=num_frames, names=[name for name, _ in rows], ids=ids, splits=splits, details={
                           "dataset": dataset or path.name,
                           "sources": {"importer": "poses", "format": pose_format, "path": str(path.resolve()),
                                       "labels": str(Path(labels).resolve()) if labels is not None else None},
                           "excluded": [], "skipped": skipped, "preprocessing": preprocessing,
                           "input_fingerprint": fingerprint,
                           **({"layout_mapping": mapping.record()} if mapping is not None else {})})
    summary = {"up_to_date": False, "out": str(out_dir), "samples": len(samples), "layout": stored_layout.name,
               "normalised": normalise, "splits": [f"{b}/{s}" for b, s in splits]}
    if mapping is not None:
        summary["mapping"] = mapping.summary_line()
    if not has_splits:
        summary["note"] = (f"no split column in the labels: one split all/all; add a split column (train / test) to "
                           f"LABELS.csv to pretrain and probe on benchmark {benchmark!r}")
    return summary
