"""Skeletons of one layout in another, by joint names (``usdrl import ... --to-layout``, and ``usdrl embed`` /
``recognize`` on input of another layout than the model's).

Every joint of the target layout is either copied from a source joint of the same body point (the same name, or
a name of ``EQUIVALENT_JOINTS``: NTU's spine_base is Kinect v1's hip_center, OpenPose's mid_hip and H36M's
pelvis) or derived, as a weighted mean, from named source joints by the first rule of ``DERIVATION_RULES`` whose
joints the source has (NTU's spine_mid from the hips and shoulders, the head from the ears). Derived joints are
invented: the mapping records which they are and from what (``LayoutMapping.record``). A target joint that can be
neither copied nor derived is a DataError naming it.

Values: a NaN source joint gives a NaN (missing) target joint, never a zero; an absent joint or person (all zeros,
as the store and COCO keep them) stays all zeros, and a joint derived from an absent one is absent. Positions keep their channel count:
2D and 3D layouts are not mapped into each other. A ``*_score`` layout's score channel maps to a ``*_score``
target (a derived joint takes the lowest score of its sources) or is dropped for a target without scores; a target
with scores is refused for a source without them. Persons: the first M of the target kept, absent persons (zeros)
added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from usdrl.data.errors import DataError
from usdrl.data.import_common import position_channels
from usdrl.skeleton import SkeletonLayout

# Names of one body point in the built-in layouts (usdrl.skeleton); a name not listed is its own group.
EQUIVALENT_JOINTS = (
    ("spine_base", "hip_center", "mid_hip", "pelvis"),
    ("spine_mid", "spine"),
    ("spine_shoulder", "shoulder_center", "thorax"),
    ("left_foot", "left_foot_index"),
    ("right_foot", "right_foot_index"),
    ("left_hand_tip", "left_index"),
    ("right_hand_tip", "right_index"),
)

# target joint (any name of its group) -> alternatives, the first whose joints the source has (directly or by an
# equivalent name) is used: {source joint: weight}, weights summing to 1.
DERIVATION_RULES: dict[str, tuple[dict[str, float], ...]] = {
    "spine_base": ({"left_hip": 0.5, "right_hip": 0.5},),
    "spine_mid": ({"left_hip": 0.25, "right_hip": 0.25, "left_shoulder": 0.25, "right_shoulder": 0.25},),
    "spine_shoulder": ({"left_shoulder": 0.5, "right_shoulder": 0.5},),
    "neck": ({"spine_shoulder": 0.5, "head": 0.5},
             {"left_shoulder": 0.375, "right_shoulder": 0.375, "nose": 0.25}),
    "head": ({"left_ear": 0.5, "right_ear": 0.5}, {"left_eye": 0.5, "right_eye": 0.5}, {"nose": 1.0}),
    "nose": ({"head": 1.0},),
    "left_eye": ({"head": 1.0},),
    "right_eye": ({"head": 1.0},),
    "left_ear": ({"head": 1.0},),
    "right_ear": ({"head": 1.0},),
    "left_eye_inner": ({"left_eye": 1.0}, {"head": 1.0}),
    "left_eye_outer": ({"left_eye": 1.0}, {"head": 1.0}),
    "right_eye_inner": ({"right_eye": 1.0}, {"head": 1.0}),
    "right_eye_outer": ({"right_eye": 1.0}, {"head": 1.0}),
    "mouth_left": ({"nose": 1.0}, {"head": 1.0}),
    "mouth_right": ({"nose": 1.0}, {"head": 1.0}),
    "left_hand": ({"left_wrist": 0.5, "left_index": 0.25, "left_pinky": 0.25}, {"left_wrist": 1.0}),
    "right_hand": ({"right_wrist": 0.5, "right_index": 0.25, "right_pinky": 0.25}, {"right_wrist": 1.0}),
    "left_hand_tip": ({"left_hand": 1.0}, {"left_wrist": 1.0}),
    "right_hand_tip": ({"right_hand": 1.0}, {"right_wrist": 1.0}),
    "left_thumb": ({"left_hand": 1.0}, {"left_wrist": 1.0}),
    "right_thumb": ({"right_hand": 1.0}, {"right_wrist": 1.0}),
    "left_pinky": ({"left_hand": 1.0}, {"left_wrist": 1.0}),
    "right_pinky": ({"right_hand": 1.0}, {"right_wrist": 1.0}),
    "left_foot": ({"left_big_toe": 0.5, "left_small_toe": 0.5}, {"left_ankle": 1.0}),
    "right_foot": ({"right_big_toe": 0.5, "right_small_toe": 0.5}, {"right_ankle": 1.0}),
    "left_big_toe": ({"left_foot": 1.0}, {"left_ankle": 1.0}),
    "right_big_toe": ({"right_foot": 1.0}, {"right_ankle": 1.0}),
    "left_small_toe": ({"left_foot": 1.0}, {"left_ankle": 1.0}),
    "right_small_toe": ({"right_foot": 1.0}, {"right_ankle": 1.0}),
    "left_heel": ({"left_ankle": 1.0},),
    "right_heel": ({"right_ankle": 1.0},),
}


# rules of one target layout (its name without ``_score``), tried before DERIVATION_RULES: OpenPose's neck is the
# midpoint of the shoulders (NTU's Kinect neck lies above it, towards the head).
TARGET_RULES: dict[str, dict[str, tuple[dict[str, float], ...]]] = {
    "body25": {"neck": ({"left_shoulder": 0.5, "right_shoulder": 0.5},)},
    "coco18": {"neck": ({"left_shoulder": 0.5, "right_shoulder": 0.5},)},
}

# a source layout whose positions are not in the metric space of other 3D layouts -> what to use instead
NOT_METRIC_3D = {"mediapipe33": "MediaPipe's image landmarks (x, y in 0..1 of the image, z relative to the hips) are "
                                "not metric 3D; read pose_world_landmarks with --layout mediapipe33_world"}


def equivalent_names(name: str) -> tuple[str, ...]:
    """The names of the body point ``name``, itself first."""
    for group in EQUIVALENT_JOINTS:
        if name in group:
            return (name, *(other for other in group if other != name))
    return (name,)


def find_joint(name: str, layout: SkeletonLayout) -> int | None:
    """The index of the joint of ``layout`` that is ``name`` or an equivalent of it, None when it has none."""
    for candidate in equivalent_names(name):
        if candidate in layout.joint_names:
            return layout.joint_names.index(candidate)
    return None


def derivation_of(name: str, source: SkeletonLayout, target: str = "") -> dict[int, float] | None:
    """{source joint index: weight} of the first rule for ``name`` whose joints ``source`` has (the rules of the
    target layout named ``target`` first), None if none."""
    target_rules = TARGET_RULES.get(target.removesuffix("_score"), {})
    for candidate in equivalent_names(name):
        for rule in (*target_rules.get(candidate, ()), *DERIVATION_RULES.get(candidate, ())):
            found = {joint: find_joint(joint, source) for joint in rule}
            if all(index is not None for index in found.values()):
                weights: dict[int, float] = {}
                for joint, index in found.items():
                    weights[index] = weights.get(index, 0.0) + rule[joint]
                return weights
    return None


@dataclass(frozen=True)
class LayoutMapping:
    """How each target joint is made from the source: ``sources[v]`` is {source joint: weight}; one joint of
    weight 1 named as the target (or an equivalent) is a copy, anything else a derived (invented) joint."""

    source: SkeletonLayout
    target: SkeletonLayout
    sources: tuple[dict[int, float], ...]  # (V_target,)
    copied: tuple[bool, ...]  # (V_target,)

    @property
    def invented(self) -> list[str]:
        """The target joints that no source joint is: derived from others."""
        return [name for name, copy in zip(self.target.joint_names, self.copied) if not copy]

    @property
    def identity(self) -> bool:
        """Whether the mapping changes nothing (same joints, channels and persons)."""
        return (self.source.joint_names == self.target.joint_names and self.source.num_persons == self.target.num_persons
                and self.source.num_coordinates == self.target.num_coordinates)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, T, V, M) or (C, T, V, M) of the source -> the same of the target, float32."""
        if x.ndim not in (4, 5) or x.shape[-4] != self.source.num_coordinates or x.shape[-2] != self.source.num_joints:
            raise DataError(f"mapping {self.source.name} -> {self.target.name}: skeletons of shape {x.shape} are not "
                            f"(N, C, T, V, M) or (C, T, V, M) of {self.source.name} (C={self.source.num_coordinates}, "
                            f"V={self.source.num_joints})")
        x = np.asarray(x, dtype=np.float32)
        positions = position_channels(self.source)
        scored = position_channels(self.target) < self.target.num_coordinates
        persons = min(self.source.num_persons, self.target.num_persons, x.shape[-1])
        shape = (*x.shape[:-4], self.target.num_coordinates, x.shape[-3], self.target.num_joints,
                 self.target.num_persons)
        out = np.zeros(shape, dtype=np.float32)
        kept = x[..., :persons]  # (..., C, T, V_source, M')
        for joint, weights in enumerate(self.sources):
            indices = list(weights)
            values = kept[..., :positions, :, indices, :]  # (..., P, T, k, M')
            mean = np.tensordot(values, np.array(list(weights.values()), dtype=np.float32), ([-2], [0]))
            if len(indices) > 1:  # a source joint absent (all zeros) makes the derived joint absent, not pulled to 0
                absent = np.any(np.all(values == 0, axis=-4), axis=-2)  # (..., T, M')
                mean = np.where(absent[..., None, :, :], np.float32(0), mean)
            out[..., :positions, :, joint, :persons] = mean
            if scored:  # the source's last channel is its score: the lowest of the joints used
                out[..., -1:, :, joint, :persons] = kept[..., -1:, :, indices, :].min(axis=-2)
        return out

    def record(self) -> dict[str, Any]:
        """What the manifest keeps (``layout_mapping``): per target joint where it comes from, and the invented ones."""
        names = self.source.joint_names
        joints = {}
        for target, weights, copy in zip(self.target.joint_names, self.sources, self.copied):
            if copy:
                joints[target] = {"copied_from": names[next(iter(weights))]}
            else:
                joints[target] = {"derived_from": {names[index]: round(weight, 6) for index, weight in weights.items()}}
        scores = position_channels(self.target) < self.target.num_coordinates
        dropped = position_channels(self.source) < self.source.num_coordinates and not scores
        return {"source": self.source.name, "target": self.target.name, "source_layout": self.source.to_dict(),
                "joints": joints, "invented": self.invented,
                "copied": self.target.num_joints - len(self.invented), "derived": len(self.invented),
                "persons": f"{self.source.num_persons} -> {self.target.num_persons} (first kept, absent persons zero)",
                "score_channel": ("lowest score of the joints used" if scores else
                                  "dropped" if dropped else "none"),
                "rule": "a derived joint is the weighted mean of its source joints; NaN sources give NaN"}

    def summary_line(self) -> str:
        """One line: how many joints were copied and derived, and from what."""
        names = self.source.joint_names
        derived = [f"{target} from {'+'.join(names[index] for index in weights)}"
                   for target, weights, copy in zip(self.target.joint_names, self.sources, self.copied) if not copy]
        line = (f"mapped {self.source.name} -> {self.target.name}: {self.target.num_joints - len(derived)} joints "
                f"copied, {len(derived)} derived")
        return line + (f" ({', '.join(derived)})" if derived else "")


def layout_mapping(source: SkeletonLayout, target: SkeletonLayout) -> LayoutMapping:
    """The mapping of ``source`` skeletons to ``target`` by joint names; a DataError naming the first target joint
    that can be neither copied nor derived, or the channels that do not match."""
    source_positions, target_positions = position_channels(source), position_channels(target)
    if source_positions != target_positions:
        raise DataError(f"cannot map {source.name} ({source_positions}D positions) to {target.name} "
                        f"({target_positions}D): 2D and 3D skeletons are not mapped into each other; use a model or "
                        f"layout of {source_positions}D positions")
    if source.name in NOT_METRIC_3D and target_positions == 3 and not target.name.startswith(source.name):
        raise DataError(f"cannot map {source.name} to {target.name}: {NOT_METRIC_3D[source.name]}")
    if target_positions < target.num_coordinates and source_positions == source.num_coordinates:
        raise DataError(f"cannot map {source.name} to {target.name}: the target has a score channel and the source "
                        f"has no scores; map to {target.name.removesuffix('_score')} instead")
    sources, copied = [], []
    for name in target.joint_names:
        index = find_joint(name, source)
        if index is not None:
            sources.append({index: 1.0})
            copied.append(True)
            continue
        weights = derivation_of(name, source, target.name)
        if weights is None:
            raise DataError(f"cannot map {source.name} to {target.name}: target joint {name!r} has no joint of the "
                            f"same name in {source.name} and no rule of DERIVATION_RULES "
                            f"(usdrl.data.layout_mapping) whose joints {source.name} has")
        sources.append(weights)
        copied.append(False)
    return LayoutMapping(source, target, tuple(sources), tuple(copied))
