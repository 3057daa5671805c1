"""People of the synthetic dataset (``usdrl.data.synthetic``) in motion: subjects (bone lengths, posture, style),
the angle tracks of a standing person, the twenty actions and idle motion written into them, forward kinematics
to NTU-25 joints, and scenes of one or two people.

Every random number comes from the generator passed in, drawn in a fixed order: the dataset is deterministic by
seed, and ``prepare_synthetic``'s fingerprint covers this file (editing it regenerates the data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TWO_PERSON_CLASSES = range(16, 20)
HANDS_AND_ARMS_ACTIONS = (0, 1, 2, 3, 4, 9, 11, 14)
BODY_ACTIONS = (5, 6, 7, 8, 10, 12, 13, 15)
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


@dataclass(frozen=True)
class _Motion:
    """What the actions of a segment draw on: its progress ``u`` (T,) in [0, 1], the sample's amplitude, cycles
    and phase, the tracks (T,) made from them, and the acting hand."""

    u: np.ndarray
    amplitude: float
    cycles: float
    phase: float
    wave: np.ndarray  # periodic motion
    hold: np.ndarray  # fade in and out around periodic motion
    one_shot: np.ndarray  # 0 -> 1 -> 0 once
    raise_and_hold: np.ndarray  # 0 -> 1 (smoothstep) and hold
    hand: str  # "left" or "right"


def _motion(u: np.ndarray, rng: np.random.Generator, style: dict) -> _Motion:
    """The draws every action makes first, in this order (the data depend on it)."""
    amplitude = style["amplitude"] * rng.uniform(0.7, 1.3)
    cycles = rng.uniform(1.5, 4.5) * style["tempo"]
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * cycles * u + phase)
    hold = _bump(u, 0.05, 0.95) ** 0.3  # fade in and out around periodic motion
    one_shot = _bump(u, rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.95))
    raise_and_hold = _ramp(u, rng.uniform(0.05, 0.2), rng.uniform(0.35, 0.6))
    hand = rng.choice(["left", "right"], p=[0.25, 0.75])  # most people act with the right hand
    return _Motion(u, amplitude, cycles, phase, wave, hold, one_shot, raise_and_hold, hand)


def _animate_hands_and_arms(action: int, pose: dict, motion: _Motion, rng: np.random.Generator) -> None:
    """Actions 0-4, 9, 11 and 14 (waving, clapping, cheering, punching, raising an arm, arm circles, touching the
    head) into ``pose``."""
    u, amplitude, cycles, phase, wave = motion.u, motion.amplitude, motion.cycles, motion.phase, motion.wave
    hold, raise_and_hold, hand = motion.hold, motion.raise_and_hold, motion.hand
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
    elif action == 9:  # raise right arm and hold
        pose["right_upper_flex"] += raise_and_hold * rng.uniform(2.3, 2.9)
    elif action == 11:  # arm circles
        for side in ("left", "right"):
            pose[f"{side}_upper_abduction"] += hold * (1.2 + 0.35 * amplitude * np.cos(2 * np.pi * cycles * u + phase))
            pose[f"{side}_upper_flex"] += hold * 0.6 * amplitude * wave
    elif action == 14:  # touch head
        pose[f"{hand}_upper_flex"] += raise_and_hold * 2.0
        pose[f"{hand}_upper_abduction"] += raise_and_hold * 0.6
        pose[f"{hand}_fore_flex"] += raise_and_hold * 2.2
        pose["nod"] += raise_and_hold * 0.2


def _animate_body(action: int, pose: dict, motion: _Motion, rng: np.random.Generator) -> None:
    """Actions 5-8, 10, 12, 13 and 15 (kick, bow, squat, jump, side bend, march, turn around, sit down) into
    ``pose``."""
    u, amplitude, wave, hold, one_shot = motion.u, motion.amplitude, motion.wave, motion.hold, motion.one_shot
    if action == 5:  # kick forward
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
    elif action == 10:  # side bend
        pose["side_bend"] += hold * 0.35 * amplitude * wave
        for side in ("left", "right"):
            pose[f"{side}_upper_abduction"] += hold * 0.4
    elif action == 12:  # march in place
        for side, sign in (("left", 1.0), ("right", -1.0)):
            lift = hold * np.maximum(sign * wave, 0) * amplitude
            pose[f"{side}_thigh_flex"] += lift * 1.0
            pose[f"{side}_shin_flex"] -= lift * 1.2
            pose[f"{side}_upper_flex"] -= hold * sign * wave * 0.4
    elif action == 13:  # turn around
        direction = rng.choice([-1.0, 1.0])
        pose["yaw"] += direction * _ramp(u, 0.1, 0.9) * rng.uniform(2.2, 3.4)
    elif action == 15:  # sit down
        seated = _ramp(u, 0.15, rng.uniform(0.5, 0.7))
        for side in ("left", "right"):
            pose[f"{side}_thigh_flex"] += seated * 1.45
            pose[f"{side}_shin_flex"] -= seated * 1.45
        pose["root_y"] -= seated * 0.45
        pose["root_z"] -= seated * 0.2
        pose["lean"] += seated * 0.15


def _animate_interaction(action: int, pose: dict, partner: dict, motion: _Motion, rng: np.random.Generator) -> None:
    """Actions 16-19 (handshake, push, hug, point at the other person) into ``pose`` and ``partner``."""
    u, amplitude, wave, one_shot, raise_and_hold, hand = (
        motion.u, motion.amplitude, motion.wave, motion.one_shot, motion.raise_and_hold, motion.hand)
    if action == 16:  # handshake
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


def _animate(action: int, pose: dict, partner: dict | None, u: np.ndarray, rng: np.random.Generator, style: dict) -> None:
    """Write the action's angle tracks into ``pose`` (and ``partner`` for interactions)."""
    motion = _motion(u, rng, style)
    if action in HANDS_AND_ARMS_ACTIONS:
        _animate_hands_and_arms(action, pose, motion, rng)
    elif action in BODY_ACTIONS:
        _animate_body(action, pose, motion, rng)
    elif action in TWO_PERSON_CLASSES:
        _animate_interaction(action, pose, partner, motion, rng)
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


def random_subject(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """A subject drawn from ``rng``: bone lengths in metres (body) and posture and motion style (style)."""
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


def animate_scene(actions: list[tuple[int, int]], rng: np.random.Generator, subjects: list[tuple[dict, dict]],
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
