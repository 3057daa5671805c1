import re

import numpy as np
import pytest
import torch
from conftest import shared_path

from usdrl.cli.main import main
from usdrl.data.store import load_split
from usdrl.skeleton import BUILTIN_LAYOUTS, LayoutError, layout_from_dict, load_layout, to_bone

# The 19 links of the standard COCO keypoint skeleton (1-based, as in the COCO annotations).
COCO_SKELETON = {(16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
                 (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)}


@pytest.mark.parametrize("name", sorted(BUILTIN_LAYOUTS))
def test_builtin_layouts_load_by_name_and_bones_form_a_tree(name):
    layout = load_layout(name)
    assert layout.name == name
    assert layout_from_dict(layout.to_dict()) == layout  # the manifest form round-trips
    parents = layout.parent_index()
    roots = [joint for joint in range(layout.num_joints) if parents[joint] == joint]
    assert len(roots) == 1  # one tree: every joint reaches the root
    for joint in range(layout.num_joints):
        seen = set()
        while parents[joint] != joint:
            assert joint not in seen
            seen.add(joint)
            joint = parents[joint]
    left, right = layout.shoulder_pair
    assert "left" in layout.joint_names[left] and "right" in layout.joint_names[right]


def test_kinect_v1_is_the_utkinect_order_and_bones():
    layout = load_layout("kinect_v1")
    assert (layout.num_joints, layout.num_persons, layout.num_coordinates) == (20, 1, 3)
    assert layout.joint_names[layout.center_joint] == "spine" and layout.shoulder_pair == (4, 8)
    readme = shared_path() / "data" / "utkinect" / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} is absent")
    text = readme.read_text()
    bones_line = text[text.index("Bones (child, parent)"):].split("\n- ")[0]
    listed = {(int(a) - 1, int(b) - 1) for a, b in re.findall(r"\((\d+),(\d+)\)", bones_line)}
    assert set(layout.bones) == listed and len(listed) == 19


def test_coco17_is_2d_with_the_standard_skeleton():
    layout = load_layout("coco17")
    assert (layout.num_joints, layout.num_persons, layout.num_coordinates) == (17, 1, 2)
    assert layout.joint_names[layout.center_joint] == "nose"
    one_based = {(child + 1, parent + 1) for child, parent in layout.bones}
    assert all((a, b) in COCO_SKELETON or (b, a) in COCO_SKELETON for a, b in one_based)
    assert len(one_based) == 16  # a spanning tree of the 17 joints
    scored = load_layout("coco17_score")
    assert scored.num_coordinates == 3 and scored.bones == layout.bones
    x = torch.randn(2, 2, 4, 17, 1)
    assert torch.allclose(to_bone(x, layout)[:, :, :, 9], x[:, :, :, 9] - x[:, :, :, 7])  # left wrist - elbow


def test_unknown_layout_name_lists_the_builtins():
    with pytest.raises(LayoutError, match="kinect_v1, coco17"):
        load_layout("kinect_v3")


def test_import_arrays_accepts_a_builtin_layout_name(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "poses.npz"
    np.savez(path, x=rng.normal(size=(6, 2, 16, 17, 1)).astype(np.float32), label=np.array([0, 1, 0, 1, 0, 1]),
             split_xsub_train=np.arange(4), split_xsub_test=np.arange(4, 6))
    assert main(["import", "arrays", str(path), "--layout", "coco17", "--out", str(tmp_path / "coco")]) == 0
    split = load_split(tmp_path / "coco", "xsub", "train")
    assert split.layout == load_layout("coco17")
    assert main(["import", "arrays", str(path), "--layout", "kinect_v1", "--out", str(tmp_path / "k")]) == 2  # C, V differ
