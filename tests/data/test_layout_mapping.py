"""Crossing layouts: skeletons mapped between layouts by joint names (usdrl.data.layout_mapping), a prepared
dataset mapped (usdrl import store --to-layout), pose estimator output imported into another layout, and a model
of one layout embedding input of another."""

import json

import numpy as np
import pytest
from test_poses import FRAMES, crossing_people, write_kinetics, write_openpose

from usdrl import load_model
from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.import_common import normalise_samples
from usdrl.data.layout_mapping import layout_mapping
from usdrl.data.mapped_store import map_samples
from usdrl.data.store import load_split, read_manifest
from usdrl.deploy.inputs import read_input
from usdrl.skeleton import SkeletonLayout, load_layout


def joint(layout_name: str, name: str) -> int:
    return load_layout(layout_name).joint_names.index(name)


def random_skeletons(layout_name: str, samples: int = 2, frames: int = 6, seed: int = 0) -> np.ndarray:
    """(N, C, T, V, M) random coordinates of ``layout_name``."""
    layout = load_layout(layout_name)
    shape = (samples, layout.num_coordinates, frames, layout.num_joints, layout.num_persons)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_kinect_v1_to_ntu25_copies_the_same_points_and_records_the_invented_joints():
    mapping = layout_mapping(load_layout("kinect_v1"), load_layout("ntu25"))
    x = random_skeletons("kinect_v1")  # (2, 3, 6, 20, 1)
    y = mapping.apply(x)
    assert y.shape == (2, 3, 6, 25, 2)
    for target, source in (("spine_base", "hip_center"), ("spine_mid", "spine"), ("spine_shoulder", "shoulder_center"),
                           ("left_wrist", "left_wrist"), ("right_foot", "right_foot")):
        assert np.array_equal(y[..., joint("ntu25", target), 0], x[..., joint("kinect_v1", source), 0])
    neck = (x[..., joint("kinect_v1", "shoulder_center"), 0] + x[..., joint("kinect_v1", "head"), 0]) / 2
    assert np.allclose(y[..., joint("ntu25", "neck"), 0], neck, atol=1e-6)
    assert np.array_equal(y[..., joint("ntu25", "left_thumb"), 0], x[..., joint("kinect_v1", "left_hand"), 0])
    assert np.all(y[..., 1] == 0)  # the second NTU person is absent
    record = mapping.record()
    assert record["invented"] == ["neck", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb"]
    assert record["copied"] == 20 and record["derived"] == 5
    assert record["joints"]["neck"] == {"derived_from": {"shoulder_center": 0.5, "head": 0.5}}
    assert record["joints"]["spine_mid"] == {"copied_from": "spine"}
    json.dumps(record)  # JSON-able
    assert mapping.summary_line().startswith("mapped kinect_v1 -> ntu25: 20 joints copied, 5 derived (neck from "
                                             "shoulder_center+head, left_hand_tip from left_hand")
    assert mapping.apply(x[0]).shape == (3, 6, 25, 2)  # one sample (C, T, V, M)


def test_spine_mid_is_the_mean_of_hips_and_shoulders_and_missing_joints_stay_missing():
    mapping = layout_mapping(load_layout("mediapipe33_world"), load_layout("ntu25"))
    x = random_skeletons("mediapipe33_world", samples=1)
    sources = [joint("mediapipe33_world", name) for name in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")]
    x[0, :, 2, sources[0], 0] = np.nan  # the left hip unseen in frame 2
    x[0, :, 4] = 0.0  # the person absent in frame 4
    y = mapping.apply(x)
    spine_mid = y[0, :, :, joint("ntu25", "spine_mid"), 0]
    expected = x[0][..., sources, 0].mean(axis=-1)
    assert np.allclose(spine_mid[:, [0, 1, 3, 5]], expected[:, [0, 1, 3, 5]], atol=1e-6)
    assert np.isnan(spine_mid[:, 2]).all() and np.isnan(y[0, :, 2, joint("ntu25", "spine_base"), 0]).all()
    assert np.isnan(y[0, :, 2, joint("ntu25", "left_hip"), 0]).all()  # copied: missing stays missing
    assert not np.isnan(y[0, :, 2, joint("ntu25", "left_shoulder"), 0]).any()
    assert np.all(y[0, :, 4] == 0)  # an absent person stays absent (zeros), not a body at the origin


def test_impossible_mappings_are_clear_errors():
    with pytest.raises(DataError, match=r"cannot map coco17 \(2D positions\) to ntu25 \(3D\)"):
        layout_mapping(load_layout("coco17"), load_layout("ntu25"))
    with pytest.raises(DataError, match="MediaPipe's image landmarks .* are not metric 3D; .*mediapipe33_world"):
        layout_mapping(load_layout("mediapipe33"), load_layout("ntu25"))
    with pytest.raises(DataError, match="the target has a score channel and the source has no scores"):
        layout_mapping(load_layout("coco17"), load_layout("coco18_score"))
    tail = SkeletonLayout(name="with_tail", joint_names=("left_shoulder", "right_shoulder", "tail"), bones=((2, 0),),
                          center_joint=0, shoulder_pair=(0, 1), num_persons=1, num_coordinates=3)
    with pytest.raises(DataError, match="target joint 'tail' has no joint of the same name in kinect_v1 and no rule"):
        layout_mapping(load_layout("kinect_v1"), tail)


def test_a_score_channel_maps_to_the_lowest_score_of_the_joints_used():
    mapping = layout_mapping(load_layout("coco17_score"), load_layout("coco18_score"))
    x = np.abs(random_skeletons("coco17_score", samples=1))
    y = mapping.apply(x)
    assert mapping.invented == ["neck"]
    used = [joint("coco17", name) for name in ("left_shoulder", "right_shoulder")]  # OpenPose's neck: their midpoint
    neck = joint("coco18", "neck")
    assert np.allclose(y[0, 2, :, neck, 0], x[0, 2][:, used, 0].min(axis=-1))
    assert np.allclose(y[0, :2, :, neck, 0], x[0, :2][:, :, used, 0].mean(axis=-1), atol=1e-6)
    dropped = layout_mapping(load_layout("coco17_score"), load_layout("coco18")).apply(x)
    assert dropped.shape[1] == 2 and dropped.shape[-1] == 2 and np.all(dropped[..., 1] == 0)


def _kinect_v1_store(root, samples: int = 6):
    x = random_skeletons("kinect_v1", samples=samples, frames=12, seed=1) + np.array([0, 0, 3.0])[:, None, None, None]
    np.savez(root / "kinect.npz", x=x.astype(np.float32), label=np.arange(samples) % 2,
             split_xsub_train=np.arange(samples - 2), split_xsub_test=np.arange(samples - 2, samples))
    assert main(["import", "arrays", str(root / "kinect.npz"), "--layout", "kinect_v1", "--out", str(root / "v1")]) == 0
    return root / "v1"


@pytest.mark.parametrize("source_name, target_name", [("ntu25", "h36m17"), ("h36m17", "ntu25"), ("kinect_v1", "h36m17")])
def test_a_normalised_dataset_maps_as_if_normalised_after_the_mapping(source_name, target_name):
    """The source's centre joint sits at the origin of a normalised clip; mapped and normalised again it is a
    present joint (e.g. NTU's spine_mid, H36M's spine), not one taken for absent."""
    source, target = load_layout(source_name), load_layout(target_name)
    x = random_skeletons(source_name, samples=3, frames=10, seed=4) + np.array([0, 0, 3.0])[:, None, None, None]
    x[..., 1:] = 0  # one person
    frames = np.full(3, 10)
    mapping = layout_mapping(source, target)
    mapped_then_normalised = normalise_samples(mapping.apply(x), frames, target)
    normalised_then_mapped = map_samples(normalise_samples(x.copy(), frames, source), frames, mapping, True)
    assert np.abs(mapped_then_normalised).max() > 0.1
    assert np.allclose(normalised_then_mapped, mapped_then_normalised, atol=1e-5)


def test_a_joint_derived_from_an_absent_joint_is_absent():
    """COCO marks an unlabelled keypoint (0, 0): OpenPose's mid_hip from a hip at (0, 0) would lie halfway to the
    image corner; it is absent instead."""
    mapping = layout_mapping(load_layout("coco17"), load_layout("body25"))
    x = np.abs(random_skeletons("coco17", samples=1)) + 100
    x[0, :, 3, joint("coco17", "left_hip"), 0] = 0  # unlabelled in frame 3
    y = mapping.apply(x)
    mid_hip = y[0, :, :, joint("body25", "mid_hip"), 0]
    assert np.all(mid_hip[:, 3] == 0)
    hips = x[0][:, :, [joint("coco17", "left_hip"), joint("coco17", "right_hip")], 0].mean(axis=-1)
    assert np.allclose(mid_hip[:, [0, 1, 2, 4, 5]], hips[:, [0, 1, 2, 4, 5]], atol=1e-4)


def test_a_mapped_store_has_its_own_fingerprint(tmp_path):
    source = _kinect_v1_store(tmp_path)
    assert main(["import", "store", str(source), "--to-layout", "ntu25", "--out", str(tmp_path / "ntu")]) == 0
    fingerprints = {read_manifest(path)["input_fingerprint"] for path in (source, tmp_path / "ntu")}
    assert len(fingerprints) == 2  # the mapped data is not taken for its source by up-to-date or resume checks


def test_import_store_to_layout_maps_every_clip_and_records_the_mapping(tmp_path, capsys):
    source = _kinect_v1_store(tmp_path)
    capsys.readouterr()
    assert main(["import", "store", str(source), "--to-layout", "ntu25", "--out", str(tmp_path / "ntu")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mapping"].startswith("mapped kinect_v1 -> ntu25: 20 joints copied, 5 derived")
    manifest = read_manifest(tmp_path / "ntu")
    assert manifest["layout"]["name"] == "ntu25" and manifest["layout_mapping"]["invented"][0] == "neck"
    assert manifest["mapped_from"]["layout"] == "kinect_v1" and manifest["counts"] == read_manifest(source)["counts"]
    before, after = load_split(source, "xsub", "test"), load_split(tmp_path / "ntu", "xsub", "test")
    assert after.x.shape[1:] == (3, 12, 25, 2) and list(after.label) == list(before.label)
    # normalised again with NTU's centre (spine_mid, copied from the v1 spine, already at the origin): unchanged
    assert np.allclose(after.sample(0)[:, :, joint("ntu25", "left_knee"), 0],
                       before.sample(0)[:, :, joint("kinect_v1", "left_knee"), 0], atol=1e-5)
    assert not list(tmp_path.glob("ntu.tmp-*"))  # written under a temporary name, then renamed
    assert main(["import", "store", str(source), "--to-layout", "coco17", "--out", str(tmp_path / "coco")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "2D and 3D skeletons are not mapped" in error
    assert not (tmp_path / "coco").exists()


def test_import_poses_to_layout_stores_the_target_layout(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for number in range(2):
        write_kinetics(clips / f"clip{number}.json", crossing_people(17, seed=number), label=["run", "jump"][number])
    out = tmp_path / "store"
    assert main(["import", "poses", str(clips), "--format", "kinetics", "--layout", "coco17", "--to-layout", "coco18",
                 "--out", str(out), "--quiet"]) == 0
    manifest = read_manifest(out)
    assert manifest["layout"]["name"] == "coco18" and manifest["layout_mapping"]["invented"] == ["neck"]
    assert manifest["layout_mapping"]["joints"]["right_hip"] == {"copied_from": "right_hip"}
    stored = load_split(out, "all", "all").x  # (2, 2, FRAMES, 18, 2), as given (2D)
    assert stored.shape == (2, 2, FRAMES, 18, 2)
    direct = tmp_path / "direct"
    assert main(["import", "poses", str(clips), "--format", "kinetics", "--layout", "coco17", "--out", str(direct),
                 "--quiet"]) == 0
    coco = load_split(direct, "all", "all").x  # (2, 2, FRAMES, 17, 1): coco17 keeps one person
    assert np.all(stored[..., 1] == 0)  # coco18's second person: absent
    assert np.array_equal(stored[..., joint("coco18", "left_knee"), :1], coco[..., joint("coco17", "left_knee"), :])
    shoulders = coco[..., [joint("coco17", "left_shoulder"), joint("coco17", "right_shoulder")], :].mean(axis=-2)
    assert np.allclose(stored[..., joint("coco18", "neck"), :1], shoulders, atol=1e-3)


def test_openpose_body25_input_is_read_in_its_own_layout_for_a_coco18_model(tmp_path):
    write_openpose(tmp_path / "clip", crossing_people(25))
    clips = read_input(tmp_path / "clip", load_layout("coco18"))
    assert clips.mapping is not None and clips.mapping.source.name == "body25" and clips.mapping.invented == []
    assert clips.split.x.shape == (1, 2, FRAMES, 18, 2)


@pytest.fixture(scope="module")
def ntu_model(tmp_path_factory):
    """A tiny encoder pretrained on random NTU-25 skeletons (two persons), exported without heads."""
    import torch

    from usdrl.deploy.bundle import export_bundle
    from usdrl.settings.params import load_params
    from usdrl.training.pretrain import pretrain

    root = tmp_path_factory.mktemp("ntu")
    x = random_skeletons("ntu25", samples=8, frames=20, seed=5) * 0.3 + np.array([0, 0, 3.0])[:, None, None, None]
    np.savez(root / "ntu.npz", x=x.astype(np.float32), label=np.arange(8) % 2, split_xsub_train=np.arange(6),
             split_xsub_test=np.arange(6, 8))
    assert main(["import", "arrays", str(root / "ntu.npz"), "--layout", "ntu25", "--out", str(root / "data")]) == 0
    params = load_params(None, overrides=["model.hidden_size=16", "model.num_layers=1", "pretrain.epochs=1",
                                          "pretrain.batch_size=4", "pretrain.workers=0", "pretrain.device=cpu",
                                          "evaluation.device=cpu", "augment.minimum_crop=8"])
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(root / "data", "xsub", root / "run", params.model, params.augment, params.loss, params.pretrain,
                 progress=False)
    finally:
        torch.set_num_threads(previous)
    export_bundle(root / "run/checkpoints/last.pt", root / "model")
    return root / "model"


def test_an_ntu25_model_embeds_kinect_v1_input_through_the_mapping(ntu_model, tmp_path, capsys, one_thread):
    x = random_skeletons("kinect_v1", samples=3, frames=16, seed=7) * 0.3 + np.array([0, 0, 3.0])[:, None, None, None]
    np.savez(tmp_path / "v1.npz", x=x.astype(np.float32))  # 20 joints, xyz: read as kinect_v1
    capsys.readouterr()
    assert main(["embed", "--model", str(ntu_model), str(tmp_path / "v1.npz"), "--out", str(tmp_path / "f.npz")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mapped ")]
    assert lines == [layout_mapping(load_layout("kinect_v1"), load_layout("ntu25")).summary_line()]
    model = load_model(ntu_model)
    mapped = layout_mapping(load_layout("kinect_v1"), load_layout("ntu25")).apply(x)
    assert np.allclose(np.load(tmp_path / "f.npz")["features"], model.embed(mapped)["features"], atol=1e-5)
    store = _kinect_v1_store(tmp_path)  # a prepared kinect_v1 dataset: mapped in memory, normalised again
    capsys.readouterr()
    embedded = model.embed(store, split="xsub/test")
    assert "mapped kinect_v1 -> ntu25" in capsys.readouterr().err and embedded["features"].shape == (2, 32)
    np.savez(tmp_path / "flat.npz", x=random_skeletons("coco17", samples=1))  # 2D: refused, naming both
    assert main(["embed", "--model", str(ntu_model), str(tmp_path / "flat.npz"), "--out", str(tmp_path / "g.npz")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "flat.npz" in error and "coco17" in error and "ntu25" in error


def test_streams_map_alike_on_disk_and_in_memory(synthetic, tmp_path):
    streams = synthetic.parent / "streams"  # ntu25 streams, normalised
    assert main(["import", "store", str(streams), "--to-layout", "kinect_v1", "--out", str(tmp_path / "v1")]) == 0
    on_disk = read_input(tmp_path / "v1", load_layout("kinect_v1"), "xsub/test")
    in_memory = read_input(streams, load_layout("kinect_v1"), "xsub/test")
    assert on_disk.mapping is None and in_memory.mapping.invented == []  # every Kinect v1 joint is an NTU joint
    assert len(on_disk.split) == len(in_memory.split) > 0
    for position in range(len(on_disk.split)):
        assert on_disk.split.sequence(position).shape[2:] == (20, 1)
        assert np.allclose(on_disk.split.sequence(position), in_memory.split.sequence(position), atol=1e-5)
        assert np.array_equal(on_disk.split.frame_labels_of(position), in_memory.split.frame_labels_of(position))
    assert np.array_equal(on_disk.split.instances(), in_memory.split.instances())
