import json

import pytest
import torch

from usdrl.skeleton import (
    LayoutError,
    apply_modality,
    load_layout,
    ntu25_layout,
    spatial_tokens,
    temporal_tokens,
    to_bone,
    to_motion,
)

COCO_JOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
               "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
               "right_knee", "left_ankle", "right_ankle"]


def test_ntu25_layout_matches_spec():
    layout = ntu25_layout()
    assert layout.num_joints == 25 and layout.num_persons == 2 and layout.num_coordinates == 3
    assert layout.center_joint == 1 and layout.shoulder_pair == (4, 8)
    parents = layout.parent_index()
    assert parents[20] == 20  # (21, 21): the zero bone
    assert parents[21] == 22 and parents[22] == 7  # hand tip -> thumb -> hand, as released


def test_bone_is_child_minus_parent_and_motion_is_forward_difference():
    layout = ntu25_layout()
    x = torch.randn(2, 3, 5, 25, 2)
    bone = to_bone(x, layout)
    assert torch.allclose(bone[:, :, :, 0], x[:, :, :, 0] - x[:, :, :, 1])  # (1, 2)
    assert torch.all(bone[:, :, :, 20] == 0)
    motion = to_motion(x)
    assert torch.allclose(motion[:, :, 2], x[:, :, 3] - x[:, :, 2])
    assert torch.all(motion[:, :, -1] == 0)
    assert torch.equal(apply_modality(x, "joint", layout), x)
    with pytest.raises(ValueError, match="unknown modality"):
        apply_modality(x, "velocity", layout)


def test_token_views_follow_spec_order():
    x = torch.arange(1 * 3 * 4 * 25 * 2, dtype=torch.float32).reshape(1, 3, 4, 25, 2)
    temporal = temporal_tokens(x)  # (N, T, M*V*C) in (M, V, C) order
    assert temporal.shape == (1, 4, 150)
    assert temporal[0, 2, 1 * 75 + 3 * 3 + 2] == x[0, 2, 2, 3, 1]
    spatial = spatial_tokens(x)  # (N, M*V, T*C), M outer, V inner; features (T, C)
    assert spatial.shape == (1, 50, 12)
    assert spatial[0, 1 * 25 + 7, 3 * 3 + 1] == x[0, 1, 3, 7, 1]


def test_user_layout_from_yaml_by_names_and_numbers(tmp_path):
    path = tmp_path / "coco17.yaml"
    path.write_text(
        "name: coco17\n"
        f"joint_names: {json.dumps(COCO_JOINTS)}\n"
        "bones: [[left_elbow, left_shoulder], [left_wrist, left_elbow], [9, 7]]\n"
        "center_joint: nose\nshoulder_pair: [left_shoulder, 7]\nnum_persons: 1\nnum_coordinates: 2\n"
    )
    layout = load_layout(path)
    assert layout.num_joints == 17 and layout.num_coordinates == 2
    assert layout.bones == ((7, 5), (9, 7), (8, 6))
    assert layout.shoulder_pair == (5, 6)
    x = torch.randn(3, 2, 8, 17, 1)
    assert torch.allclose(to_bone(x, layout)[:, :, :, 9], x[:, :, :, 9] - x[:, :, :, 7])
    assert torch.all(to_bone(x, layout)[:, :, :, 0] == 0)  # no bone: zero


@pytest.mark.parametrize("text, message", [
    ("joint_names: [a, b]\nbones: [[a, c]]\ncenter_joint: a\nshoulder_pair: [a, b]\n", "neither a 1-based joint number"),
    ("joint_names: [a, b]\nbones: [[3, 1]]\ncenter_joint: a\nshoulder_pair: [a, b]\n", "outside 1..2"),
    ("joint_names: [a, b]\nbones: []\ncenter_joint: a\n", "missing key"),
    ("joint_names: [a, b]\nbones: []\ncenter_joint: a\nshoulder_pair: [a, b]\ncolour: red\n", "unknown key"),
    ("joint_names: [a, b]\nbones: []\ncenter_joint: a\nshoulder_pair: [a, b]\nnum_coordinates: 4\n", "2 or 3"),
    ("joint_names: [a, b\n", "could not be parsed"),
])
def test_bad_layout_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "layout.yaml"
    path.write_text(text)
    with pytest.raises(LayoutError, match=message):
        load_layout(path)


def test_missing_layout_file_is_a_clear_error(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        load_layout(tmp_path / "nope.yaml")
