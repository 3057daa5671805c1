"""The vectorised normalisation against a direct transcription of the released per-joint loops."""

import math

import numpy as np

from usdrl.data.normalize import normalize_batch


def _rotation_matrix(axis, theta):
    if np.abs(axis).sum() < 1e-6 or np.abs(theta) < 1e-6:
        return np.eye(3)
    axis = np.asarray(axis) / math.sqrt(np.dot(axis, axis))
    a = math.cos(theta / 2.0)
    b, c, d = -axis * math.sin(theta / 2.0)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    return np.array([[aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
                     [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
                     [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc]])


def _released_normalisation(data):
    """The released loops (AGCN pre_normalization without the z-axis step), for reference only."""
    s = np.transpose(data, [0, 4, 2, 3, 1]).copy()  # N, M, T, V, C
    for i_s, skeleton in enumerate(s):
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            if person[0].sum() == 0:
                index = person.sum(-1).sum(-1) != 0
                tmp = person[index].copy()
                person *= 0
                person[:len(tmp)] = tmp
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:
                    if person[i_f:].sum() == 0:
                        rest = len(person) - i_f
                        num = int(np.ceil(rest / i_f))
                        pad = np.concatenate([person[0:i_f] for _ in range(num)], 0)[:rest]
                        s[i_s, i_p, i_f:] = pad
                        break
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        main_body_center = skeleton[0][:, 1:2, :].copy()
        for i_p, person in enumerate(skeleton):
            if person.sum() == 0:
                continue
            mask = (person.sum(-1) != 0).reshape(person.shape[0], person.shape[1], 1)
            s[i_s, i_p] = (s[i_s, i_p] - main_body_center) * mask
    for i_s, skeleton in enumerate(s):
        if skeleton.sum() == 0:
            continue
        vector = skeleton[0, 0, 8] - skeleton[0, 0, 4]
        axis = np.cross(vector, [1, 0, 0])
        angle = np.arccos(np.clip(np.dot(vector / np.linalg.norm(vector), [1, 0, 0]), -1.0, 1.0))
        matrix = _rotation_matrix(axis, angle)
        for i_p, person in enumerate(skeleton):
            for i_f, frame in enumerate(person):
                if frame.sum() == 0:
                    continue
                for i_j, joint in enumerate(frame):
                    s[i_s, i_p, i_f, i_j] = np.dot(matrix, joint)
    return np.transpose(s, [0, 4, 2, 3, 1])


def test_matches_released_loops_on_awkward_samples():
    rng = np.random.default_rng(0)
    x = np.zeros((5, 3, 40, 25, 2), dtype=np.float32)
    x[0, :, :30, :, 0] = rng.normal(size=(3, 30, 25))  # one body, 30 of 40 frames
    x[1, :, :25] = rng.normal(size=(3, 25, 25, 2))  # two bodies
    x[2, :, 10:33, :, 1] = rng.normal(size=(3, 23, 25))  # second body appears late
    x[2, :, :20, :, 0] = rng.normal(size=(3, 20, 25))
    x[3, :, 5:12, :, 0] = rng.normal(size=(3, 7, 25))  # first body starts late
    x[3, :, 15:18, :, 0] = rng.normal(size=(3, 3, 25))  # with a gap
    # sample 4 stays empty
    ours = normalize_batch(x.copy(), center_joint=1, shoulder_pair=(4, 8))
    reference = _released_normalisation(x.copy())
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_two_coordinate_layouts_align_shoulders_on_x():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 10, 17, 1)).astype(np.float32)
    out = normalize_batch(x, center_joint=0, shoulder_pair=(5, 6))
    shoulder = out[:, :, 0, 6, 0] - out[:, :, 0, 5, 0]
    np.testing.assert_allclose(shoulder[:, 1], 0, atol=1e-5)
    assert np.all(shoulder[:, 0] > 0)
    np.testing.assert_allclose(out[:, :, :, 0, 0], 0, atol=1e-6)
