"""The embedded default dataset: procedurally animated NTU-25 skeletons, deterministic by seed.

A scene is animated once per (subject, action, replication) in a body frame (x the person's left,
y up, z forward) by forward kinematics from joint angles, then seen by three cameras (yaw -45, 0,
+45 degrees around the scene, each with its own tilt, distance and noise), as the three Kinect
cameras of NTU RGB+D record one performance. Subjects differ in bone lengths, posture and style;
samples in speed, amplitude, phase, repetitions, duration (40 to 300 frames) and noise. Untrimmed
streams chain several actions separated by idle motion, with per-frame labels, in the PKU-MMD I form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from usdrl.data.fingerprint import is_up_to_date
from usdrl.data.normalize import PREPROCESSING_VERSION, normalize_batch
from usdrl.data.writer import DatasetWriter, check_output_folder, finish_dataset, write_sequences
from usdrl.skeleton import ntu25_layout

GENERATOR_VERSION = 1
MAX_FRAMES = 300
CAMERA_YAW_DEGREES = (0.0, 45.0, -45.0)  # camera 1 front, cameras 2 and 3 at the sides (as NTU)
CAMERA_TILT_DEGREES = (50.0, -5.0, 5.0)  # camera 1 looks down more steeply: view matters after normalisation
TWO_PERSON_CLASSES = range(16, 20)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the synthetic dataset; the defaults make ~1.4k clips and 48 streams in seconds."""

    seed: int = 0
    subjects: int = 12
    replications: int = 2
    training_subjects: tuple[int, ...] = (1, 2, 4, 5, 7, 8, 10, 11)  # 1-based; the rest test
    training_cameras: tuple[int, ...] = (2, 3)
    streams_per_subject_camera: int = 2
    actions_per_stream: tuple[int, int] = (4, 8)
    noise_metres: tuple[float, float] = (0.008, 0.025)
    fidget_radians: float = 0.15
    idle_margin: float = 0.3  # up to this fraction of a clip is idle before and after the action


CLASS_NAMES = (
    "wave right hand", "wave left hand", "clapping", "cheer up", "punch forward", "kick forward", "bow",
    "squat", "jump up", "raise right arm", "side bend", "arm circles", "march in place", "turn around",
    "touch head", "sit down", "handshake", "push other person", "hug other person", "point at other person",
)

ANGLE_KEYS = ("upper_flex", "upper_abduction", "fore_flex", "fore_abduction", "thigh_flex", "thigh_abduction", "shin_flex")


def _rest_pose(frames: int, style: dict) -> dict[str, np.ndarray]:
    """Angle tracks (T,) of a standing person; ``left_``/``right_`` limbs, trunk, root offsets, yaw."""
    pose = {"lean": np.full(frames, style["lean"]), "side_bend": np.zeros(frames), "nod": np.zeros(frames),
            "yaw": np.zeros(frames), "root_x": np.zeros(frames), "root_y": np.zeros(frames), "root_z": np.zeros(frames)}
    for side in ("left", "right"):
        pose[f"{side}_upper_flex"] = np.full(frames, 0.05)
        pose[f"{side}_upper_abduction"] = np.full(frames, style["arm_abduction"])
        pose[f"{side}_fore_flex"] = np.full(frames, style["elbow_bend"])
        pose[f"{side}_fore_abduction"] = np.zeros(frames)
        pose[f"{side}_thigh_flex"] = np.zeros(frames)
        pose[f"{side}_thigh_abduction"] = np.full(frames, 0.05)
        pose[f"{side}_shin_flex"] = np.zeros(frames)
    return pose


def _bump(u: np.ndarray, start: float = 0.15, end: float = 0.85) -> np.ndarray:
    """0 -> 1 -> 0 over [start, end] of the action's progress u in [0, 1]."""
    inside = np.clip((u - start) / max(end - start, 1e-6), 0.0, 1.0)
    return np.sin(np.pi * inside) ** 2


def _ramp(u: np.ndarray, start: float = 0.1, end: float = 0.5) -> np.ndarray:
    """0 -> 1 (smoothstep) and hold."""
    inside = np.clip((u - start) / max(end - start, 1e-6), 0.0, 1.0)
    return inside * inside * (3 - 2 * inside)


def _animate(action: int, pose: dict, partner: dict | None, u: np.ndarray, rng: np.random.Generator, style: dict) -> None:
    """Write the action's angle tracks into ``pose`` (and ``partner`` for interactions)."""
    amplitude = style["amplitude"] * rng.uniform(0.7, 1.3)
    cycles = rng.uniform(1.5, 4.5) * style["tempo"]
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * cycles * u + phase)
    hold = _bump(u, 0.05, 0.95) ** 0.3  # fade in and out around periodic motion
    one_shot = _bump(u, rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.95))
    raise_and_hold = _ramp(u, rng.uniform(0.05, 0.2), rng.uniform(0.35, 0.6))
    hand = rng.choice(["left", "right"], p=[0.25, 0.75])  # most people act with the right hand

    if action in (0, 1):  # wave one hand
        side = "right" if action == 0 else "left"
        pose[f"{side}_upper_flex"] += hold * rng.uniform(1.4, 2.2)
        pose[f"{side}_upper_abduction"] += hold * 0.6
        pose[f"{side}_fore_flex"] += hold * 1.0
        pose[f"{side}_fore_abduction"] += hold * 0.5 * amplitude * wave
    elif action == 2:  # clapping
        for side in ("left", "right"):
            pose[f"{side}_upper_flex"] += hold * rng.uniform(0.7, 1.1)
            pose[f"{side}_fore_flex"] += hold * 0.8
            pose[f"{side}_fore_abduction"] += hold * (-0.45 + 0.35 * amplitude * np.abs(wave))
    elif action == 3:  # cheer up: both hands up and down
        for side in ("left", "right"):
            pose[f"{side}_upper_flex"] += hold * (2.0 + 0.5 * amplitude * wave)
            pose[f"{side}_upper_abduction"] += hold * 0.35
    elif action == 4:  # punch forward, repeatedly with one hand
        pose[f"{hand}_upper_flex"] += hold * 1.3
        pose[f"{hand}_fore_flex"] += hold * (1.2 - 1.2 * np.clip(amplitude * np.maximum(wave, 0), 0, 1))
        pose["lean"] += hold * 0.1
    elif action == 5:  # kick forward
        leg = rng.choice(["left", "right"], p=[0.3, 0.7])
        pose[f"{leg}_thigh_flex"] += one_shot * 1.2 * amplitude
        pose[f"{leg}_shin_flex"] += one_shot * (-0.5 + 0.4 * np.sin(np.pi * u))
        pose["lean"] -= one_shot * 0.15
    elif action == 6:  # bow
        pose["lean"] += one_shot * rng.uniform(0.6, 1.1)
        pose["nod"] += one_shot * 0.3
    elif action == 7:  # squat down and up
        depth = one_shot * rng.uniform(0.8, 1.4)
        for side in ("left", "right"):
            pose[f"{side}_thigh_flex"] += depth
            pose[f"{side}_shin_flex"] -= 1.6 * depth
            pose[f"{side}_upper_flex"] += depth * 0.8
        pose["lean"] += depth * 0.3
        pose["root_y"] -= depth * 0.25
    elif action == 8:  # jump up (one to three jumps)
        jumps = rng.integers(1, 4)
        height = np.maximum(np.sin(np.pi * jumps * np.clip((u - 0.15) / 0.7, 0, 1)), 0) ** 2
        pose["root_y"] += height * rng.uniform(0.15, 0.35)
        for side in ("left", "right"):
            pose[f"{side}_upper_flex"] += height * 0.8
            pose[f"{side}_shin_flex"] -= height * 0.5
    elif action == 9:  # raise right arm and hold
        pose["right_upper_flex"] += raise_and_hold * rng.uniform(2.3, 2.9)
    elif action == 10:  # side bend
        pose["side_bend"] += hold * 0.35 * amplitude * wave
        for side in ("left", "right"):
            pose[f"{side}_upper_abduction"] += hold * 0.4
    elif action == 11:  # arm circles
        for side in ("left", "right"):
            pose[f"{side}_upper_abduction"] += hold * (1.2 + 0.35 * amplitude * np.cos(2 * np.pi * cycles * u + phase))
            pose[f"{side}_upper_flex"] += hold * 0.6 * amplitude * wave
    elif action == 12:  # march in place
        for side, sign in (("left", 1.0), ("right", -1.0)):
            lift = hold * np.maximum(sign * wave, 0) * amplitude
            pose[f"{side}_thigh_flex"] += lift * 1.0
            pose[f"{side}_shin_flex"] -= lift * 1.2
            pose[f"{side}_upper_flex"] -= hold * sign * wave * 0.4
    elif action == 13:  # turn around
        direction = rng.choice([-1.0, 1.0])
        pose["yaw"] += direction * _ramp(u, 0.1, 0.9) * rng.uniform(2.2, 3.4)
    elif action == 14:  # touch head
        pose[f"{hand}_upper_flex"] += raise_and_hold * 2.0
        pose[f"{hand}_upper_abduction"] += raise_and_hold * 0.6
        pose[f"{hand}_fore_flex"] += raise_and_hold * 2.2
        pose["nod"] += raise_and_hold * 0.2
    elif action == 15:  # sit down
        seated = _ramp(u, 0.15, rng.uniform(0.5, 0.7))
        for side in ("left", "right"):
            pose[f"{side}_thigh_flex"] += seated * 1.45
            pose[f"{side}_shin_flex"] -= seated * 1.45
        pose["root_y"] -= seated * 0.45
        pose["root_z"] -= seated * 0.2
        pose["lean"] += seated * 0.15
    elif action == 16:  # handshake
        for person in (pose, partner):
            reach = raise_and_hold
            person["right_upper_flex"] += reach * 0.8
            person["right_fore_flex"] += reach * (0.5 + 0.15 * amplitude * wave)
            person["right_upper_abduction"] -= reach * 0.25
            person["root_z"] += reach * 0.2
    elif action == 17:  # push the other person, who steps back
        for side in ("left", "right"):
            pose[f"{side}_upper_flex"] += one_shot * 1.4
            pose[f"{side}_fore_flex"] += one_shot * (0.9 - 0.8 * _ramp(u, 0.35, 0.55))
        pose["root_z"] += one_shot * 0.25
        partner["root_z"] -= _ramp(u, 0.45, 0.8) * rng.uniform(0.3, 0.6)
        partner["lean"] -= _bump(u, 0.4, 0.8) * 0.3
    elif action == 18:  # hug
        for person in (pose, partner):
            close = _bump(u, 0.1, 0.9) ** 0.5
            person["root_z"] += close * 0.3
            for side in ("left", "right"):
                person[f"{side}_upper_flex"] += close * 1.3
                person[f"{side}_upper_abduction"] += close * 0.6
                person[f"{side}_fore_abduction"] -= close * 1.1
    elif action == 19:  # point at the other person
        pose[f"{hand}_upper_flex"] += raise_and_hold * 1.5
        pose[f"{hand}_upper_abduction"] -= raise_and_hold * 0.2
        partner["lean"] -= raise_and_hold * 0.1
    else:
        raise ValueError(f"unknown synthetic action {action}")


def _limb_direction(flex: np.ndarray, abduction: np.ndarray, side_sign: float) -> np.ndarray:
    """Unit vectors (T, 3): flex 0 down, pi/2 forward, pi up; abduction pi/2 sideways."""
    return np.stack([side_sign * np.sin(abduction), -np.cos(abduction) * np.cos(flex), np.cos(abduction) * np.sin(flex)], -1)


def forward_kinematics(pose: dict[str, np.ndarray], body: dict[str, float]) -> np.ndarray:
    """Joint positions (T, V=25, 3) in the scene frame from angle tracks and bone lengths."""
    frames = len(pose["lean"])
    joints = np.zeros((frames, 25, 3))
    lean, bend = pose["lean"], pose["side_bend"]
    up = np.stack([np.sin(bend), np.cos(bend) * np.cos(lean), np.cos(bend) * np.sin(lean)], -1)
    across = np.stack([np.cos(bend), -np.sin(bend), np.zeros(frames)], -1)
    head_up = np.stack([np.sin(bend), np.cos(bend) * np.cos(lean + pose["nod"]), np.cos(bend) * np.sin(lean + pose["nod"])], -1)
    root = np.stack([np.zeros(frames), np.full(frames, body["hip_height"]), np.zeros(frames)], -1)
    joints[:, 0] = root
    joints[:, 1] = root + body["spine"] * up
    joints[:, 20] = joints[:, 1] + body["chest"] * up
    joints[:, 2] = joints[:, 20] + body["neck"] * up
    joints[:, 3] = joints[:, 2] + body["head"] * head_up
    limbs = {"left": (4, 5, 6, 7, 21, 22, 12, 13, 14, 15, 1.0), "right": (8, 9, 10, 11, 23, 24, 16, 17, 18, 19, -1.0)}
    for side, (shoulder, elbow, wrist, hand, tip, thumb, hip, knee, ankle, foot, sign) in limbs.items():
        joints[:, shoulder] = joints[:, 20] + sign * body["shoulder_width"] / 2 * across
        upper_flex = pose[f"{side}_upper_flex"] + lean
        upper_abduction = pose[f"{side}_upper_abduction"]
        fore_flex = upper_flex + pose[f"{side}_fore_flex"]
        fore_abduction = upper_abduction + pose[f"{side}_fore_abduction"]
        joints[:, elbow] = joints[:, shoulder] + body["upper_arm"] * _limb_direction(upper_flex, upper_abduction, sign)
        forearm = _limb_direction(fore_flex, fore_abduction, sign)
        joints[:, wrist] = joints[:, elbow] + body["forearm"] * forearm
        joints[:, hand] = joints[:, wrist] + body["hand"] * forearm
        joints[:, tip] = joints[:, hand] + body["hand"] * 0.8 * forearm
        joints[:, thumb] = joints[:, hand] + body["hand"] * 0.6 * _limb_direction(fore_flex + 0.6, fore_abduction - 0.4, sign)
        joints[:, hip] = root + np.array([sign * body["hip_width"] / 2, 0.0, 0.0])
        thigh_flex, thigh_abduction = pose[f"{side}_thigh_flex"], pose[f"{side}_thigh_abduction"]
        joints[:, knee] = joints[:, hip] + body["thigh"] * _limb_direction(thigh_flex, thigh_abduction, sign)
        joints[:, ankle] = joints[:, knee] + body["shin"] * _limb_direction(thigh_flex + pose[f"{side}_shin_flex"], thigh_abduction, sign)
        joints[:, foot] = joints[:, ankle] + body["foot"] * np.array([0.0, -0.2, 0.98])
    yaw = pose["yaw"]
    cosine, sine = np.cos(yaw), np.sin(yaw)
    rotated = joints.copy()
    rotated[..., 0] = cosine[:, None] * joints[..., 0] + sine[:, None] * joints[..., 2]
    rotated[..., 2] = -sine[:, None] * joints[..., 0] + cosine[:, None] * joints[..., 2]
    # root offsets are in the body's heading (z forward)
    rotated[..., 0] += (cosine * pose["root_x"] + sine * pose["root_z"])[:, None]
    rotated[..., 1] += pose["root_y"][:, None]
    rotated[..., 2] += (-sine * pose["root_x"] + cosine * pose["root_z"])[:, None]
    return rotated


def _subject(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    scale = rng.uniform(0.85, 1.15)
    lengths = {"hip_height": 0.95, "spine": 0.25, "chest": 0.22, "neck": 0.08, "head": 0.13, "shoulder_width": 0.36,
               "upper_arm": 0.29, "forearm": 0.25, "hand": 0.07, "hip_width": 0.2, "thigh": 0.44, "shin": 0.42, "foot": 0.12}
    body = {key: value * scale * rng.uniform(0.92, 1.08) for key, value in lengths.items()}
    style = {"lean": rng.uniform(-0.05, 0.15), "arm_abduction": rng.uniform(0.05, 0.3), "elbow_bend": rng.uniform(0.0, 0.3),
             "amplitude": rng.uniform(0.8, 1.2), "tempo": rng.uniform(0.8, 1.25)}
    return body, style


def _smooth_noise(frames: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Low-frequency random track (T,): a few random sinusoids below ~0.7 Hz at 30 fps."""
    t = np.arange(frames) / 30.0
    track = np.zeros(frames)
    for _ in range(3):
        track += np.sin(2 * np.pi * rng.uniform(0.05, 0.7) * t + rng.uniform(0, 2 * np.pi))
    return scale * track / np.sqrt(1.5)


def _idle(pose: dict, rng: np.random.Generator, fidget: float) -> None:
    """Sway, breathing and fidgeting of every limb, so that no pose is perfectly still or repeatable."""
    frames = len(pose["lean"])
    pose["lean"] += _smooth_noise(frames, rng, 0.04)
    pose["side_bend"] += _smooth_noise(frames, rng, 0.04)
    pose["yaw"] += rng.uniform(-0.4, 0.4) + _smooth_noise(frames, rng, 0.05)
    for side in ("left", "right"):
        for key in ANGLE_KEYS:
            pose[f"{side}_{key}"] += _smooth_noise(frames, rng, fidget)


def _scene(actions: list[tuple[int, int]], rng: np.random.Generator, subjects: list[tuple[dict, dict]],
           fidget: float) -> np.ndarray:
    """Scene joints (T, V, 3, M=2) for consecutive (action or -1 for idle, frames) segments."""
    frames = sum(length for _, length in actions)
    poses = [_rest_pose(frames, style) for _, style in subjects]
    for pose in poses:
        _idle(pose, rng, fidget)
    start = 0
    for action, length in actions:
        if action >= 0:
            # Views into the tracks: the action's in-place updates land in this segment only.
            segment = [{key: value[start:start + length] for key, value in pose.items()} for pose in poses]
            u = np.linspace(0.0, 1.0, length)
            _animate(action, segment[0], segment[1] if action in TWO_PERSON_CLASSES else None, u, rng, subjects[0][1])
        start += length
    scene = np.zeros((frames, 25, 3, 2))
    two_person = any(action in TWO_PERSON_CLASSES for action, _ in actions)
    for person, (pose, (body, _)) in enumerate(zip(poses, subjects)):
        if person == 1 and not two_person:
            break
        if two_person:
            pose["yaw"] += np.pi / 2 if person == 0 else -np.pi / 2  # face each other
        joints = forward_kinematics(pose, body)
        if two_person:
            joints[..., 0] += -0.6 if person == 0 else 0.6
        scene[..., person] = joints
    return scene


def _camera_view(scene: np.ndarray, camera: int, rng: np.random.Generator, noise: tuple[float, float]) -> np.ndarray:
    """Scene (T, V, 3, M) -> camera coordinates (C=3, T, V, M) with view jitter and sensor noise."""
    yaw = np.deg2rad(CAMERA_YAW_DEGREES[camera - 1] + rng.uniform(-10, 10))
    tilt = np.deg2rad(CAMERA_TILT_DEGREES[camera - 1] + rng.uniform(-5, 5))
    rotation_yaw = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rotation_tilt = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    rotation = rotation_tilt @ rotation_yaw
    present = np.any(scene != 0, axis=(1, 2))  # (T, M)
    view = np.einsum("ij,tvjm->itvm", rotation, scene)
    view[0] = -view[0]  # the camera faces the person: a half turn about y
    view[2] = -view[2] + rng.uniform(2.6, 3.6)  # depth from the camera
    view[1] -= rng.uniform(0.6, 1.0)  # camera height
    view += rng.normal(0, rng.uniform(*noise), size=view.shape)
    return (view * present[None, :, None, :]).astype(np.float32)


def _clip_length(action: int, rng: np.random.Generator, tempo: float) -> int:
    low, high = (40, 150) if action in (5, 6, 7, 8, 9, 13, 14, 15, 17, 19) else (60, 300)
    return int(np.clip(rng.uniform(low, high) / tempo, 40, MAX_FRAMES))


def generate_trimmed(config: SyntheticConfig) -> dict:
    """All clips: x (N, C, T, V, M) normalised and padded, labels, frame counts, names, ids."""
    rng = np.random.default_rng(config.seed)
    subjects = [_subject(np.random.default_rng([config.seed, s])) for s in range(config.subjects)]
    samples, labels, frames, names, ids = [], [], [], [], {"subject": [], "camera": [], "replication": [], "setup": []}
    for subject in range(config.subjects):
        for action in range(len(CLASS_NAMES)):
            for replication in range(config.replications):
                partner = subjects[(subject + 1 + replication) % config.subjects]
                length = _clip_length(action, rng, subjects[subject][1]["tempo"])
                before = int(length * rng.uniform(0, config.idle_margin))
                after = int(length * rng.uniform(0, config.idle_margin))
                segments = [(-1, before), (action, length - before - after), (-1, after)]
                scene = _scene(segments, rng, [subjects[subject], partner], config.fidget_radians)
                for camera in (1, 2, 3):
                    clip = np.zeros((3, MAX_FRAMES, 25, 2), dtype=np.float32)
                    clip[:, :length] = _camera_view(scene, camera, rng, config.noise_metres)
                    samples.append(clip)
                    labels.append(action)
                    frames.append(length)
                    names.append(f"S001C{camera:03d}P{subject + 1:03d}R{replication + 1:03d}A{action + 1:03d}")
                    for key, value in (("subject", subject + 1), ("camera", camera), ("replication", replication + 1), ("setup", 1)):
                        ids[key].append(value)
    layout = ntu25_layout()
    x = normalize_batch(np.stack(samples), layout.center_joint, layout.shoulder_pair)
    return {"x": x, "label": np.array(labels), "num_frames": np.array(frames), "names": names,
            "ids": {key: np.array(value, dtype=np.int32) for key, value in ids.items()}}


def generate_streams(config: SyntheticConfig) -> dict:
    """Untrimmed streams of one-person actions separated by idle motion, with per-frame labels."""
    rng = np.random.default_rng(config.seed + 1)
    subjects = [_subject(np.random.default_rng([config.seed, s])) for s in range(config.subjects)]
    layout = ntu25_layout()
    sequences, frame_labels, instances, names, ids = [], [], [], [], {"subject": [], "camera": []}
    one_person = [a for a in range(len(CLASS_NAMES)) if a not in TWO_PERSON_CLASSES]
    for subject in range(config.subjects):
        for stream in range(config.streams_per_subject_camera):
            count = rng.integers(config.actions_per_stream[0], config.actions_per_stream[1] + 1)
            segments = [(-1, int(rng.integers(20, 80)))]
            for action in rng.choice(one_person, size=count, replace=True):
                segments.append((int(action), int(np.clip(rng.uniform(40, 150), 40, 150))))
                segments.append((-1, int(rng.integers(20, 80))))
            scene = _scene(segments, rng, [subjects[subject], subjects[(subject + 1) % config.subjects]],
                           config.fidget_radians)
            labels = np.concatenate([np.full(length, action + 1, dtype=np.int16) for action, length in segments])
            for camera in (1, 2, 3):
                view = _camera_view(scene, camera, rng, config.noise_metres)
                view = normalize_batch(view[None], layout.center_joint, layout.shoulder_pair, pad_frames=False)[0]
                row = len(names)
                start = 0
                for action, length in segments:
                    if action >= 0:
                        instances.append((row, action + 1, start, start + length, 2))
                    start += length
                sequences.append(view)
                frame_labels.append(labels)
                names.append(f"stream{stream + 1:02d}-P{subject + 1:03d}-C{camera:03d}")
                ids["subject"].append(subject + 1)
                ids["camera"].append(camera)
    return {"sequences": sequences, "frame_labels": frame_labels, "instances": np.array(instances, dtype=np.int64),
            "names": names, "ids": {key: np.array(value, dtype=np.int32) for key, value in ids.items()}}


def _splits(ids: dict[str, np.ndarray], config: SyntheticConfig) -> dict[tuple[str, str], np.ndarray]:
    training_subject = np.isin(ids["subject"], config.training_subjects)
    training_camera = np.isin(ids["camera"], config.training_cameras)
    return {("xsub", "train"): np.flatnonzero(training_subject), ("xsub", "test"): np.flatnonzero(~training_subject),
            ("xview", "train"): np.flatnonzero(training_camera), ("xview", "test"): np.flatnonzero(~training_camera)}


def prepare_synthetic(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig(),
                      progress: Callable[[str], None] | None = None) -> dict:
    """Write ``out/actions`` (trimmed clips) and ``out/streams`` (untrimmed) in the canonical form."""
    out_dir = Path(out_dir)
    # The generator's own source is part of the fingerprint: editing it regenerates the data.
    source_digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    fingerprint = (f"synthetic-v{GENERATOR_VERSION}-p{PREPROCESSING_VERSION}-{source_digest}-"
                   + repr(sorted(asdict(config).items())))
    targets = {"actions": out_dir / "actions", "streams": out_dir / "streams"}
    if all(is_up_to_date(path, fingerprint) for path in targets.values()):
        return {"up_to_date": True, "out": str(out_dir)}
    for path in targets.values():  # both refused or accepted before either is written
        check_output_folder(path)
    layout = ntu25_layout()
    details = {"dataset": "synthetic", "generator": {"version": GENERATOR_VERSION, **asdict(config)},
               "sources": {"generator": "usdrl.data.synthetic"}, "excluded": [], "skipped": [],
               "input_fingerprint": fingerprint}
    if progress:
        progress("generating trimmed clips")
    clips = generate_trimmed(config)
    with DatasetWriter(targets["actions"]) as writer:
        writer.save("x", clips["x"])
        finish_dataset(writer, kind="trimmed", layout=layout, class_names=list(CLASS_NAMES), label=clips["label"],
                       num_frames=clips["num_frames"], names=clips["names"], ids=clips["ids"],
                       splits=_splits(clips["ids"], config),
                       details={**details, "preprocessing": {"version": PREPROCESSING_VERSION, "max_frames": MAX_FRAMES,
                                                             "steps": "as NTU (SPEC.md 1)"}})
    if progress:
        progress("generating untrimmed streams")
    streams = generate_streams(config)
    with DatasetWriter(targets["streams"]) as writer:
        write_sequences(writer, zip(streams["sequences"], streams["frame_labels"]),
                        sum(s.shape[1] for s in streams["sequences"]), (3, layout.num_joints, layout.num_persons))
        writer.save("instances", streams["instances"])
        first = {}
        for row, label, *_ in streams["instances"]:
            first.setdefault(int(row), int(label) - 1)
        finish_dataset(writer, kind="untrimmed", layout=layout, class_names=list(CLASS_NAMES),
                       label=np.array([first.get(i, 0) for i in range(len(streams["names"]))]),
                       num_frames=np.array([s.shape[1] for s in streams["sequences"]]), names=streams["names"],
                       ids=streams["ids"], splits=_splits(streams["ids"], config),
                       details={**details, "instances": len(streams["instances"]),
                                "preprocessing": {"version": PREPROCESSING_VERSION,
                                                  "steps": "centre and rotate as NTU; no padding (untrimmed)",
                                                  "frame_labels": "0 idle (background), c = action c (1-based)"}})
    return {"up_to_date": False, "out": str(out_dir), "clips": int(len(clips["label"])),
            "streams": len(streams["names"]), "instances": int(len(streams["instances"]))}
