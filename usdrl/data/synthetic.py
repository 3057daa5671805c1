"""The embedded default dataset: procedurally animated NTU-25 skeletons, deterministic by seed.

A scene (``usdrl.data.synthetic_motion``) is animated once per (subject, action, replication) in a body
frame (x the person's left, y up, z forward) by forward kinematics from joint angles, then seen by three
cameras (yaw -45, 0, +45 degrees around the scene, each with its own tilt, distance and noise), as the three
Kinect cameras of NTU RGB+D record one performance. Subjects differ in bone lengths, posture and style;
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
from usdrl.data.synthetic_motion import TWO_PERSON_CLASSES, animate_scene, random_subject
from usdrl.data.writer import (
    DatasetWriter,
    check_output_folder,
    finish_dataset,
    first_instance_labels,
    write_sequences,
)
from usdrl.skeleton import ntu25_layout

GENERATOR_VERSION = 1
GENERATOR_SOURCES = (Path(__file__), Path(__file__).with_name("synthetic_motion.py"))  # in the fingerprint
MAX_FRAMES = 300
CAMERA_YAW_DEGREES = (0.0, 45.0, -45.0)  # camera 1 front, cameras 2 and 3 at the sides (as NTU)
CAMERA_TILT_DEGREES = (50.0, -5.0, 5.0)  # camera 1 looks down more steeply: view matters after normalisation


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
    subjects = [random_subject(np.random.default_rng([config.seed, s])) for s in range(config.subjects)]
    samples, labels, frames, names, ids = [], [], [], [], {"subject": [], "camera": [], "replication": [], "setup": []}
    for subject in range(config.subjects):
        for action in range(len(CLASS_NAMES)):
            for replication in range(config.replications):
                partner = subjects[(subject + 1 + replication) % config.subjects]
                length = _clip_length(action, rng, subjects[subject][1]["tempo"])
                before = int(length * rng.uniform(0, config.idle_margin))
                after = int(length * rng.uniform(0, config.idle_margin))
                segments = [(-1, before), (action, length - before - after), (-1, after)]
                scene = animate_scene(segments, rng, [subjects[subject], partner], config.fidget_radians)
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
    subjects = [random_subject(np.random.default_rng([config.seed, s])) for s in range(config.subjects)]
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
            scene = animate_scene(segments, rng, [subjects[subject], subjects[(subject + 1) % config.subjects]],
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
    source_digest = hashlib.sha256(b"".join(path.read_bytes() for path in GENERATOR_SOURCES)).hexdigest()[:16]
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
        finish_dataset(writer, kind="untrimmed", layout=layout, class_names=list(CLASS_NAMES),
                       label=first_instance_labels(streams["instances"], len(streams["names"])),
                       num_frames=np.array([s.shape[1] for s in streams["sequences"]]), names=streams["names"],
                       ids=streams["ids"], splits=_splits(streams["ids"], config),
                       details={**details, "instances": len(streams["instances"]),
                                "preprocessing": {"version": PREPROCESSING_VERSION,
                                                  "steps": "centre and rotate as NTU; no padding (untrimmed)",
                                                  "frame_labels": "0 idle (background), c = action c (1-based)"}})
    return {"up_to_date": False, "out": str(out_dir), "clips": int(len(clips["label"])),
            "streams": len(streams["names"]), "instances": int(len(streams["instances"]))}
