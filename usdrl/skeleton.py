"""Skeleton layouts, bone and motion modalities, and the token views of the encoder.

Dimension letters, used in every shape comment of the package:
    N batch (samples), C coordinates (2 or 3), T frames, V joints, M persons, D or H features.

The canonical sample tensor is ``(N, C, T, V, M)`` (SPEC.md 1). Bone and motion are implemented once
here, in batched torch, and used everywhere (data inspection, augmentation, encoder input).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from usdrl.validation import load_yaml

MODALITIES = ("joint", "bone", "motion")

NTU25_JOINT_NAMES = (
    "spine_base", "spine_mid", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
    "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
)

# SPEC.md 1: (child, parent), 1-based as in the data files; (21, 21) is the zero bone.
NTU25_BONES_ONE_BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
    (22, 23), (23, 8), (24, 25), (25, 12),
)

# Kinect v1 SDK order (UTKinect-Action3D, MSR Action3D): 1-based as in the data files.
KINECT_V1_JOINT_NAMES = (
    "hip_center", "spine", "shoulder_center", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)
# (child, parent), 1-based, as the UTKinect README lists them; joint 1 (hip centre) is the root (zero bone).
KINECT_V1_BONES_ONE_BASED = (
    (2, 1), (3, 2), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10), (12, 11), (13, 1),
    (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19),
)

COCO17_JOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
# (child, parent), 1-based: the spanning tree, rooted at the nose, of the 19 links of the standard COCO
# skeleton; the three links that close a cycle (eye-eye, shoulder-shoulder, hip-hip) are left out, since a
# joint has one parent.
COCO17_BONES_ONE_BASED = (
    (2, 1), (3, 1), (4, 2), (5, 3), (6, 4), (7, 5), (8, 6), (9, 7), (10, 8), (11, 9), (12, 6), (13, 7),
    (14, 12), (15, 13), (16, 14), (17, 15),
)


# OpenPose BODY_25 (pose_keypoints_2d order).
BODY25_JOINT_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
    "right_small_toe", "right_heel",
)
# (child, parent), 1-based: OpenPose's BODY_25 pairs as a tree rooted at the neck.
BODY25_BONES_ONE_BASED = (
    (1, 2), (3, 2), (4, 3), (5, 4), (6, 2), (7, 6), (8, 7), (9, 2), (10, 9), (11, 10), (12, 11), (13, 9),
    (14, 13), (15, 14), (16, 1), (17, 1), (18, 16), (19, 17), (20, 15), (21, 20), (22, 15), (23, 12),
    (24, 23), (25, 12),
)

# OpenPose COCO-18 (the 18 keypoints of the Kinetics-skeleton data of ST-GCN).
COCO18_JOINT_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
)
# (child, parent), 1-based: ST-GCN's "openpose" graph, rooted at the neck.
COCO18_BONES_ONE_BASED = (
    (1, 2), (3, 2), (4, 3), (5, 4), (6, 2), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10), (12, 6), (13, 12),
    (14, 13), (15, 1), (16, 1), (17, 15), (18, 16),
)

# MediaPipe Pose (BlazePose) landmarks, in the order of PoseLandmark.
MEDIAPIPE33_JOINT_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
# (child, parent), 1-based: a tree over MediaPipe's pose connections rooted at the nose (shoulders hang from
# the ears, as in COCO17_BONES_ONE_BASED; the links that close cycles are left out).
MEDIAPIPE33_BONES_ONE_BASED = (
    (2, 1), (3, 2), (4, 3), (8, 4), (5, 1), (6, 5), (7, 6), (9, 7), (10, 1), (11, 10), (12, 8), (13, 9),
    (14, 12), (16, 14), (18, 16), (20, 16), (22, 16), (15, 13), (17, 15), (19, 17), (21, 17), (23, 17),
    (24, 12), (25, 13), (26, 24), (28, 26), (30, 28), (32, 28), (27, 25), (29, 27), (31, 29), (33, 29),
)

# Human3.6M 17 joints, as the 3D lifters (VideoPose3D, MotionBERT, MMPose pose3d) write them.
H36M17_JOINT_NAMES = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "spine", "thorax",
    "neck", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)
# (child, parent), 1-based, rooted at the pelvis.
H36M17_BONES_ONE_BASED = (
    (2, 1), (3, 2), (4, 3), (5, 1), (6, 5), (7, 6), (8, 1), (9, 8), (10, 9), (11, 10), (12, 9), (13, 12),
    (14, 13), (15, 9), (16, 15), (17, 16),
)


MOST_JOINTS = 256  # the most joints a layout may have (NTU has 25)
MOST_PERSONS = 16  # the most persons per frame a layout may have (NTU has 2)


class LayoutError(ValueError):
    """A layout description that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class SkeletonLayout:
    """Joints, bones and the reference joints used by normalisation. Indices are 0-based."""

    name: str
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]  # (child, parent)
    center_joint: int
    shoulder_pair: tuple[int, int]  # (left, right): left -> right is aligned with the x axis
    num_persons: int
    num_coordinates: int

    def __post_init__(self) -> None:
        joint_count = len(self.joint_names)
        if joint_count == 0:
            raise LayoutError(f"layout {self.name!r}: no joints")
        if len(set(self.joint_names)) != joint_count:
            raise LayoutError(f"layout {self.name!r}: joint names must be unique")
        if self.num_coordinates not in (2, 3):
            raise LayoutError(f"layout {self.name!r}: coordinates must be 2 or 3, got {self.num_coordinates}")
        if joint_count > MOST_JOINTS:
            raise LayoutError(f"layout {self.name!r}: {joint_count} joints, at most {MOST_JOINTS} are accepted")
        if not 1 <= self.num_persons <= MOST_PERSONS:
            raise LayoutError(f"layout {self.name!r}: persons must be from 1 to {MOST_PERSONS}, got {self.num_persons}")
        referenced = [self.center_joint, *self.shoulder_pair, *(j for pair in self.bones for j in pair)]
        for joint in referenced:
            if not 0 <= joint < joint_count:
                raise LayoutError(f"layout {self.name!r}: joint index {joint + 1} (1-based) is outside 1..{joint_count}")
        children = [child for child, _ in self.bones]
        if len(set(children)) != len(children):
            raise LayoutError(f"layout {self.name!r}: a joint is the child of two bones")
        parents = self.parent_index()
        for start in range(joint_count):  # following the parents from any joint must end at a root (its own parent)
            joint, steps = start, 0
            while parents[joint] != joint:
                joint, steps = parents[joint], steps + 1
                if steps > joint_count:
                    raise LayoutError(f"layout {self.name!r}: the bones form a cycle through joint {start + 1} "
                                      f"({self.joint_names[start]}); bones must form a tree (child -> parent)")

    @property
    def num_joints(self) -> int:
        """V, the number of joints."""
        return len(self.joint_names)

    def parent_index(self) -> list[int]:
        """parent_index()[v] is the parent of joint v; a joint without a bone is its own parent (zero bone)."""
        parents = list(range(self.num_joints))
        for child, parent in self.bones:
            parents[child] = parent
        return parents

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description with 1-based joint numbers, the form of layout files."""
        data = asdict(self)
        data["joint_names"] = list(self.joint_names)
        data["bones"] = [[child + 1, parent + 1] for child, parent in self.bones]
        data["center_joint"] = self.center_joint + 1
        data["shoulder_pair"] = [self.shoulder_pair[0] + 1, self.shoulder_pair[1] + 1]
        return data


def ntu25_layout() -> SkeletonLayout:
    """The Kinect v2 layout of NTU RGB+D and PKU-MMD: centre joint 2, shoulders 5 and 9, two persons."""
    return SkeletonLayout(
        name="ntu25",
        joint_names=NTU25_JOINT_NAMES,
        bones=tuple((child - 1, parent - 1) for child, parent in NTU25_BONES_ONE_BASED),
        center_joint=1,
        shoulder_pair=(4, 8),
        num_persons=2,
        num_coordinates=3,
    )


def kinect_v1_layout() -> SkeletonLayout:
    """Kinect v1 (UTKinect-Action3D): 20 joints, one person; centre joint 2 (spine, the v1 joint at NTU's
    spine mid), shoulders 5 and 9, as NTU."""
    return SkeletonLayout(
        name="kinect_v1",
        joint_names=KINECT_V1_JOINT_NAMES,
        bones=tuple((child - 1, parent - 1) for child, parent in KINECT_V1_BONES_ONE_BASED),
        center_joint=1,
        shoulder_pair=(4, 8),
        num_persons=1,
        num_coordinates=3,
    )


def coco17_layout(with_scores: bool = False) -> SkeletonLayout:
    """COCO-17 2D keypoints, one person; centre joint 1 (nose: COCO has no torso joint; the root of the bone
    tree, as in the usual COCO graphs), shoulders 6 and 7. ``with_scores``: ``coco17_score``, three channels
    (x, y, keypoint score). The score is then treated as a third coordinate by normalisation and by the
    augmentations' shear, as ST-GCN treats Kinetics (x, y, score); use ``coco17`` to leave scores out."""
    return SkeletonLayout(
        name="coco17_score" if with_scores else "coco17",
        joint_names=COCO17_JOINT_NAMES,
        bones=tuple((child - 1, parent - 1) for child, parent in COCO17_BONES_ONE_BASED),
        center_joint=0,
        shoulder_pair=(5, 6),
        num_persons=1,
        num_coordinates=3 if with_scores else 2,
    )


def _zero_based(bones: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    return tuple((child - 1, parent - 1) for child, parent in bones)


def body25_layout(with_scores: bool = False) -> SkeletonLayout:
    """OpenPose BODY_25 2D keypoints, two persons; centre joint 2 (neck, the root), shoulders 6 (left) and 3
    (right). ``with_scores``: ``body25_score``, the keypoint confidence as a third channel (as coco17_score)."""
    return SkeletonLayout(name="body25_score" if with_scores else "body25", joint_names=BODY25_JOINT_NAMES,
                          bones=_zero_based(BODY25_BONES_ONE_BASED), center_joint=1, shoulder_pair=(5, 2),
                          num_persons=2, num_coordinates=3 if with_scores else 2)


def coco18_layout(with_scores: bool = False) -> SkeletonLayout:
    """OpenPose COCO-18 2D keypoints (Kinetics-skeleton of ST-GCN), two persons as ST-GCN keeps them; centre
    joint 2 (neck), shoulders 6 (left) and 3 (right). ``with_scores``: ``coco18_score``, (x, y, score) as ST-GCN
    feeds Kinetics."""
    return SkeletonLayout(name="coco18_score" if with_scores else "coco18", joint_names=COCO18_JOINT_NAMES,
                          bones=_zero_based(COCO18_BONES_ONE_BASED), center_joint=1, shoulder_pair=(5, 2),
                          num_persons=2, num_coordinates=3 if with_scores else 2)


def mediapipe33_layout(world: bool = False) -> SkeletonLayout:
    """MediaPipe Pose, 33 landmarks (x, y, z), one person; centre joint 1 (nose: no torso landmark, the root),
    shoulders 12 and 13. ``mediapipe33``: image coordinates (x, y in 0..1 of the image, z relative depth);
    ``world`` (``mediapipe33_world``): world coordinates in metres, origin between the hips."""
    return SkeletonLayout(name="mediapipe33_world" if world else "mediapipe33", joint_names=MEDIAPIPE33_JOINT_NAMES,
                          bones=_zero_based(MEDIAPIPE33_BONES_ONE_BASED), center_joint=0, shoulder_pair=(11, 12),
                          num_persons=1, num_coordinates=3)


def h36m17_layout() -> SkeletonLayout:
    """Human3.6M 17 joints in 3D (x, y, z), one person; centre joint 1 (pelvis), shoulders 12 and 15."""
    return SkeletonLayout(name="h36m17", joint_names=H36M17_JOINT_NAMES, bones=_zero_based(H36M17_BONES_ONE_BASED),
                          center_joint=0, shoulder_pair=(11, 14), num_persons=1, num_coordinates=3)


BUILTIN_LAYOUTS = {
    "ntu25": ntu25_layout,
    "kinect_v1": kinect_v1_layout,
    "coco17": coco17_layout,
    "coco17_score": lambda: coco17_layout(with_scores=True),
    "body25": body25_layout,
    "body25_score": lambda: body25_layout(with_scores=True),
    "coco18": coco18_layout,
    "coco18_score": lambda: coco18_layout(with_scores=True),
    "mediapipe33": mediapipe33_layout,
    "mediapipe33_world": lambda: mediapipe33_layout(world=True),
    "h36m17": h36m17_layout,
}


def _joint_index(value: Any, joint_names: Sequence[str], where: str) -> int:
    if isinstance(value, bool):
        raise LayoutError(f"{where}: {value!r} is not a joint number or name")
    if isinstance(value, int):
        if not 1 <= value <= len(joint_names):
            raise LayoutError(f"{where}: joint number {value} is outside 1..{len(joint_names)} (numbers are 1-based)")
        return value - 1
    if isinstance(value, str) and value in joint_names:
        return list(joint_names).index(value)
    raise LayoutError(f"{where}: {value!r} is neither a 1-based joint number nor one of the joint names")


def layout_from_dict(data: dict[str, Any], source: str = "layout") -> SkeletonLayout:
    """Build a layout from its file form: joints by 1-based number or by name; a LayoutError naming ``source``
    and the field for a value of the wrong type."""
    if not isinstance(data, dict):
        raise LayoutError(f"{source}: the layout must be a mapping with joint_names, bones, center_joint, "
                          f"shoulder_pair, got {type(data).__name__}")
    required = ("joint_names", "bones", "center_joint", "shoulder_pair")
    missing = [key for key in required if key not in data]
    if missing:
        raise LayoutError(f"{source}: missing key(s) {', '.join(missing)}; a layout needs {', '.join(required)}")
    known = set(required) | {"name", "num_persons", "num_coordinates"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LayoutError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    if not isinstance(data["joint_names"], list) or not all(
            isinstance(name, (str, int)) and not isinstance(name, bool) for name in data["joint_names"]):
        raise LayoutError(f"{source}: joint_names must be a list of names (strings), got "
                          f"{' '.join(repr(data['joint_names']).split())[:60]}")
    if not isinstance(data["bones"], list):
        raise LayoutError(f"{source}: bones must be a list of [child, parent] pairs, got {data['bones']!r:.60}")
    for key in ("num_persons", "num_coordinates"):
        if key in data and not (isinstance(data[key], int) and not isinstance(data[key], bool)):
            raise LayoutError(f"{source}: {key} must be an integer, got {data[key]!r:.60}")
    if "name" in data and not isinstance(data["name"], str):
        raise LayoutError(f"{source}: name must be a string, got {data['name']!r:.60}")
    names = tuple(str(name) for name in data["joint_names"])
    bones = []
    for position, pair in enumerate(data["bones"]):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise LayoutError(f"{source}: bone {position + 1} must be a pair [child, parent], got {pair!r}")
        where = f"{source}: bone {position + 1}"
        bones.append((_joint_index(pair[0], names, where), _joint_index(pair[1], names, where)))
    shoulders = data["shoulder_pair"]
    if not isinstance(shoulders, (list, tuple)) or len(shoulders) != 2:
        raise LayoutError(f"{source}: shoulder_pair must be [left, right], got {shoulders!r}")
    return SkeletonLayout(
        name=str(data.get("name", Path(source).stem)),
        joint_names=names,
        bones=tuple(bones),
        center_joint=_joint_index(data["center_joint"], names, f"{source}: center_joint"),
        shoulder_pair=(
            _joint_index(shoulders[0], names, f"{source}: shoulder_pair"),
            _joint_index(shoulders[1], names, f"{source}: shoulder_pair"),
        ),
        num_persons=int(data.get("num_persons", 1)),
        num_coordinates=int(data.get("num_coordinates", 3)),
    )


def load_layout(path_or_name: str | Path) -> SkeletonLayout:
    """A built-in layout by name (``BUILTIN_LAYOUTS``: ntu25, kinect_v1, coco17, coco17_score, body25, coco18,
    mediapipe33, h36m17 and the score / world variants) or a YAML/JSON
    layout file (see README, "Layouts")."""
    if str(path_or_name) in BUILTIN_LAYOUTS:
        return BUILTIN_LAYOUTS[str(path_or_name)]()
    path = Path(path_or_name)
    if not path.is_file():
        raise LayoutError(f"layout file {path} does not exist; pass a built-in layout "
                          f"({', '.join(BUILTIN_LAYOUTS)}) or a YAML/JSON layout file")
    try:
        text = path.read_text()
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = load_yaml(text, f"layout file {path}", LayoutError)
    except LayoutError:
        raise
    except Exception as error:  # the parser's own message names the line; one line of it
        raise LayoutError(f"layout file {path} could not be parsed: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise LayoutError(f"layout file {path} must hold a mapping with joint_names, bones, center_joint, shoulder_pair")
    layout = layout_from_dict(data, source=str(path))
    for position, (child, parent) in enumerate(layout.bones):
        if child == parent:  # a file's self-bone is a slip: a joint without a bone already gets the zero bone
            raise LayoutError(f"{path}: bone {position + 1} joins joint {child + 1} ({layout.joint_names[child]}) "
                              f"to itself; remove it (a joint without a bone gets the zero bone)")
    return layout


def to_bone(x: torch.Tensor, layout: SkeletonLayout) -> torch.Tensor:
    """Bone vectors joint(child) - joint(parent); x (N, C, T, V, M) -> (N, C, T, V, M)."""
    parents = torch.as_tensor(layout.parent_index(), device=x.device)
    return x - x.index_select(3, parents)


def to_motion(x: torch.Tensor) -> torch.Tensor:
    """Frame differences m[:, :, t] = x[:, :, t+1] - x[:, :, t], last frame 0; (N, C, T, V, M) -> same."""
    motion = torch.zeros_like(x)
    motion[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return motion


def apply_modality(x: torch.Tensor, modality: str, layout: SkeletonLayout) -> torch.Tensor:
    """joint (identity), bone or motion of x (N, C, T, V, M)."""
    if modality == "joint":
        return x
    if modality == "bone":
        return to_bone(x, layout)
    if modality == "motion":
        return to_motion(x)
    raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")


def temporal_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, V, M) -> (N, T, M*V*C), features flattened in (M, V, C) order (SPEC.md 3)."""
    batch, _, frames, _, _ = x.shape
    return x.permute(0, 2, 4, 3, 1).reshape(batch, frames, -1)


def spatial_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, V, M) -> (N, M*V, T*C), tokens M outer / V inner, features in (T, C) order."""
    batch, _, _, joints, persons = x.shape
    return x.permute(0, 4, 3, 2, 1).reshape(batch, persons * joints, -1)
