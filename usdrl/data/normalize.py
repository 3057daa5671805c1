"""SPEC.md 1 normalisation, vectorised over a batch of samples (N, C, T, V, M).

The released preprocessing (the AGCN ``pre_normalization`` without its z-axis step) loops over
samples, persons, frames and joints in Python. The same arithmetic here runs on whole batches:
(a) move a person's non-empty frames to the front when its first frame is empty, then fill the
trailing empty frames by repeating the frames so far; (b) subtract joint ``center`` of person 1,
frame by frame, from every non-zero joint; (c) rotate so that shoulder left -> right of person 1 in
frame 1 is parallel to the x axis (Euler-Rodrigues, as released).
"""

from __future__ import annotations

import numpy as np

PREPROCESSING_VERSION = 1


def pad_null_frames(x: np.ndarray) -> np.ndarray:
    """Step (a); x (N, C, T, V, M) -> same shape, a new array."""
    batch, _, frames, _, persons = x.shape
    frame_present = np.any(x != 0, axis=(1, 3))  # (N, T, M)
    person_present = frame_present.any(axis=1)  # (N, M)
    time = np.arange(frames)
    # Non-empty frames first in their order; applied only where the first frame is empty.
    compact_order = np.argsort(~frame_present, axis=1, kind="stable")  # (N, T, M)
    needs_compaction = person_present & ~frame_present[:, 0, :]  # (N, M)
    order = np.where(needs_compaction[:, None, :], compact_order, time[None, :, None])
    present_after = np.take_along_axis(frame_present, order, axis=1)  # (N, T, M)
    # Trailing run of empty frames starts after the last present frame; fill it cyclically.
    last_present = frames - 1 - np.argmax(present_after[:, ::-1, :], axis=1)  # (N, M)
    valid_length = np.where(person_present, last_present + 1, frames)  # (N, M)
    source_time = np.where(time[None, :, None] < valid_length[:, None, :], time[None, :, None],
                           time[None, :, None] % valid_length[:, None, :])
    source = np.take_along_axis(order, source_time, axis=1)  # (N, T, M)
    index = source[:, None, :, None, :]  # (N, 1, T, 1, M)
    return np.take_along_axis(x, np.broadcast_to(index, (batch, x.shape[1], frames, x.shape[3], persons)), axis=2)


def subtract_center(x: np.ndarray, center_joint: int) -> np.ndarray:
    """Step (b); x (N, C, T, V, M). Zero joints stay zero."""
    center = x[:, :, :, center_joint:center_joint + 1, 0:1]  # (N, C, T, 1, 1)
    joint_present = np.any(x != 0, axis=1, keepdims=True)  # (N, 1, T, V, M)
    return ((x - center) * joint_present).astype(x.dtype, copy=False)


def _rotation_to_x_axis(vectors: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, C, C) taking each vector (N, C) onto the +x direction (released formula)."""
    vectors = vectors.astype(np.float64)
    count, coordinates = vectors.shape
    if coordinates == 2:
        angle = np.arctan2(vectors[:, 1], vectors[:, 0])
        cosine, sine = np.cos(-angle), np.sin(-angle)
        matrices = np.stack([np.stack([cosine, -sine], -1), np.stack([sine, cosine], -1)], -2)
        degenerate = np.linalg.norm(vectors, axis=1) < 1e-12
        matrices[degenerate] = np.eye(2)
        return matrices
    x_axis = np.array([1.0, 0.0, 0.0])
    axis = np.cross(vectors, x_axis)  # (N, 3)
    norm = np.linalg.norm(vectors, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine_between = np.clip(vectors[:, 0] / norm, -1.0, 1.0)
        theta = np.arccos(cosine_between)
        axis_unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    a = np.cos(theta / 2.0)
    b, c, d = (-axis_unit * np.sin(theta / 2.0)[:, None]).T
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    matrices = np.stack([
        np.stack([aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)], -1),
        np.stack([2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)], -1),
        np.stack([2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc], -1),
    ], -2)
    identity = (np.abs(axis).sum(axis=1) < 1e-6) | ~(np.abs(theta) >= 1e-6)  # also NaN theta
    matrices[identity] = np.eye(3)
    return matrices


def align_shoulders(x: np.ndarray, shoulder_pair: tuple[int, int]) -> np.ndarray:
    """Step (c); x (N, C, T, V, M): rotate every joint by the first frame's shoulder rotation."""
    left, right = shoulder_pair
    shoulder_vector = x[:, :, 0, right, 0] - x[:, :, 0, left, 0]  # (N, C)
    rotation = _rotation_to_x_axis(shoulder_vector)  # (N, C, C)
    rotated = np.einsum("nij,njtvm->nitvm", rotation, x.astype(np.float64))
    return rotated.astype(x.dtype)


def normalize_batch(x: np.ndarray, center_joint: int, shoulder_pair: tuple[int, int], pad_frames: bool = True) -> np.ndarray:
    """All three steps; ``pad_frames=False`` for untrimmed sequences, which are not padded."""
    if pad_frames:
        x = pad_null_frames(x)
    x = subtract_center(x, center_joint)
    return align_shoulders(x, shoulder_pair)
