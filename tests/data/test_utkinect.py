import json

import numpy as np
import pytest
from conftest import shared_path

from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.store import load_split, read_manifest
from usdrl.data.utkinect import MAX_FRAMES, prepare_utkinect
from usdrl.data.utkinect_files import read_joints, read_labels

RAW = shared_path() / "data" / "utkinect"
CHANGED_BY_MODIFIED = {"s01_e02_walk", "s03_e01_push", "s07_e01_pull", "s07_e02_pull", "s09_e01_push",
                       "s10_e01_carry", "s10_e02_pull"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not RAW.is_dir():
        pytest.skip(f"{RAW} is absent")
    out = tmp_path_factory.mktemp("utkinect") / "original"
    summary = prepare_utkinect(RAW, out, progress=False)
    assert summary["up_to_date"] is False
    return out


def _clip_ranges(root):
    names = json.loads((root / "names.json").read_text())
    return dict(zip(names, np.load(root / "clip_ranges.npy").tolist()))


def test_counts_and_splits(prepared):
    actions = read_manifest(prepared / "actions")
    assert actions["num_samples"] == 199 and len(actions["class_names"]) == 10
    assert actions["layout"]["name"] == "kinect_v1" and actions["preprocessing"]["max_frames"] == MAX_FRAMES == 200
    assert actions["longest_clip"] == 170 and actions["clips_longer_than_max"] == 0
    train = load_split(prepared / "actions", "xsub", "train")
    test = load_split(prepared / "actions", "xsub", "test")
    assert set(train.ids["subject"]) == {1, 3, 5, 7, 9} and set(test.ids["subject"]) == {2, 4, 6, 8, 10}
    assert (len(train), len(test)) == (100, 99)
    assert train.sample(0).shape == (3, MAX_FRAMES, 20, 1)
    assert np.all((train.num_frames >= 5) & (train.num_frames <= 170))
    tested = []
    for subject in range(1, 11):
        fold_train = load_split(prepared / "actions", f"loso{subject}", "train")
        fold_test = load_split(prepared / "actions", f"loso{subject}", "test")
        assert set(fold_test.ids["subject"]) == {subject} and subject not in set(fold_train.ids["subject"])
        assert len(fold_train) + len(fold_test) == 199
        tested.extend(fold_test.indices.tolist())
    assert sorted(tested) == list(range(199))  # every clip tested exactly once
    streams = read_manifest(prepared / "streams")
    assert streams["kind"] == "untrimmed" and streams["num_samples"] == 20 and streams["instances"] == 199
    stream_train = load_split(prepared / "streams", "xsub", "train")
    assert len(stream_train) == 10 and set(stream_train.ids["subject"]) == {1, 3, 5, 7, 9}


def test_every_known_mess_is_handled_and_recorded(prepared):
    manifest = read_manifest(prepared / "actions")
    assert manifest["labels"] == "original" and manifest["sources"]["label_file"] == "actionLabel.txt"
    assert [item["name"] for item in manifest["excluded"]] == ["s10_e02_carry"]  # NaN NaN
    assert "s10_e02_carry" not in json.loads((prepared / "actions" / "names.json").read_text())
    without_line = {item["instance"]: item for item in manifest["label_frames_without_line"]}
    assert set(without_line) == {"s01_e02_walk", "s06_e02_carry", "s07_e02_sitDown", "s09_e02_throw"}
    # the end frame 192 of s01_e02 walk has no line: the clip ends at the nearest line inside, frame 190
    assert without_line["s01_e02_walk"] == {"instance": "s01_e02_walk", "bound": "end", "frame": 192, "mapped_to_frame": 190}
    assert _clip_ranges(prepared / "actions")["s01_e02_walk"][3] == 190
    repeated = manifest["repeated_frame_ids"]["per_recording"]
    assert len(repeated) == 20 and min(repeated.values()) == 6 and max(repeated.values()) == 145
    assert {"instance": "s01_e01_pull", "listed_after": "s01_e01_push"} in manifest["ranges_out_of_order"]
    touching = {(item["first"], item["second"]): item for item in manifest["touching_or_overlapping_ranges"]}
    assert touching[("s01_e01_pull", "s01_e01_push")]["kind"] == "touch"
    assert touching[("s03_e01_push", "s03_e01_throw")]["kind"] == "overlap"  # the original file's 2556
    assert manifest["frame_ids"]["median_step"] == 4 and manifest["frame_ids"]["non_consecutive_steps"] > 10000
    # lines are frame ids after merging repeats: 560 lines in s01_e01, 15 of them repeats
    assert manifest["frame_ids"]["recordings"]["s01_e01"]["lines"] == 560 - 15


def test_repeated_frame_id_keeps_the_first_line(tmp_path):
    rows = [[10] + [0.1] * 60, [10] + [0.5] * 60, [14] + [0.2] * 60, [14] + [0.3] * 60, [14] + [0.4] * 60, [20] + [0.9] * 60]
    path = tmp_path / "joints_s01_e01.txt"
    path.write_text("\n".join(" ".join(str(v) for v in row) for row in rows) + "\n")
    frame_ids, joints, repeated = read_joints(path)
    assert frame_ids.tolist() == [10, 14, 20] and repeated == 3 and joints.shape == (3, 3, 20, 1)
    np.testing.assert_allclose(joints[0, :, 0, 0], [0.1, 0.2, 0.9])


@pytest.mark.parametrize("rows, message", [
    ([[10] + [0.1] * 60, [8] + [0.1] * 60], "line 2: frame id 8 comes after 10"),
    ([[10] + [0.1] * 59], "line 1 needs 61 values"),
    ([[10] + [0.1] * 59 + ["x"]], "line 1: text where a number belongs"),
])
def test_bad_joints_file_names_the_line(tmp_path, rows, message):
    path = tmp_path / "joints_s01_e01.txt"
    path.write_text("\n".join(" ".join(str(v) for v in row) for row in rows) + "\n")
    with pytest.raises(DataError, match=message):
        read_joints(path)


def test_bad_label_file_names_the_line(tmp_path):
    path = tmp_path / "actionLabel.txt"
    path.write_text("s01_e01\nwalk: 1 5\njump: 6 9\n")
    with pytest.raises(DataError, match=r"actionLabel.txt:3: unknown action 'jump'"):
        read_labels(path)


def test_label_option_changes_exactly_the_seven_ranges(prepared):
    modified = prepared.parent / "modified"
    assert prepare_utkinect(RAW, modified, labels="modified", progress=False)["up_to_date"] is False
    manifest = read_manifest(modified / "actions")
    assert manifest["labels"] == "modified" and manifest["sources"]["label_file"] == "actionLabel_modified.txt"
    assert {item["instance"] for item in manifest["label_file_differences"]} == CHANGED_BY_MODIFIED
    original, changed = _clip_ranges(prepared / "actions"), _clip_ranges(modified / "actions")
    assert set(original) == set(changed)
    assert {name for name in original if original[name] != changed[name]} == CHANGED_BY_MODIFIED
    x_original, x_changed = np.load(prepared / "actions" / "x.npy"), np.load(modified / "actions" / "x.npy")
    names_original = json.loads((prepared / "actions" / "names.json").read_text())
    names_changed = json.loads((modified / "actions" / "names.json").read_text())
    same = [name for name in names_original if name not in CHANGED_BY_MODIFIED]
    np.testing.assert_array_equal(x_original[[names_original.index(name) for name in same]],
                                  x_changed[[names_changed.index(name) for name in same]])
    assert manifest["longest_clip"] == 110  # without the original file's s03_e01 push


def test_clips_are_normalised_as_ntu(prepared):
    split = load_split(prepared / "actions", "xsub", "test")
    x = split.batch(np.arange(len(split)))  # (N, C, T, V, M)
    np.testing.assert_allclose(x[:, :, 0, 1, 0], 0, atol=1e-6)  # spine (joint 2) at the origin
    shoulders = x[:, :, 0, 8, 0] - x[:, :, 0, 4, 0]  # left (5) -> right (9) shoulder, frame 1
    np.testing.assert_allclose(shoulders[:, 1:], 0, atol=1e-5)
    assert np.all(shoulders[:, 0] > 0)
    # a rigid motion of the raw lines: distances are kept; frames after num_frames repeat the clip
    position = split.names.index("s02_e01_throw")
    first, stop, _, _ = _clip_ranges(prepared / "actions")["s02_e01_throw"]
    _, raw, _ = read_joints(RAW / "joints_s02_e01.txt")
    raw_clip = raw[:, first:stop, :, 0]  # (C, L, V)
    length = split.num_frames[position]
    assert length == stop - first
    clip = x[position, :, :length, :, 0]
    np.testing.assert_allclose(np.linalg.norm(clip[:, :, 3] - clip[:, :, 16], axis=0),
                               np.linalg.norm(raw_clip[:, :, 3] - raw_clip[:, :, 16], axis=0), atol=1e-5)
    np.testing.assert_allclose(x[position, :, length:2 * length], x[position, :, :length], atol=1e-6)


def test_stream_frame_labels_agree_with_instances(prepared):
    ranges = _clip_ranges(prepared / "actions")
    frame_ids = np.load(prepared / "streams" / "frame_ids.npy")
    offsets = np.load(prepared / "streams" / "offsets.npy")
    manifest = read_manifest(prepared / "streams")
    cut = {item["instance"] for item in manifest["stream_instances_cut"]}
    for split_name in ("train", "test"):
        split = load_split(prepared / "streams", "xsub", split_name)
        instances = split.instances()
        for position, name in enumerate(split.names):
            labels = split.frame_labels_of(position)
            painted = np.zeros_like(labels)
            for _, label, start, end, _ in instances[instances[:, 0] == position]:
                assert np.all(painted[start:end] == 0)  # each frame assigned once
                painted[start:end] = label
                clip = ranges[f"{name}_{split.class_names[label - 1]}"]
                assert start == clip[0] and (end == clip[1] or f"{name}_{split.class_names[label - 1]}" in cut)
            np.testing.assert_array_equal(painted, labels)
            assert split.sequence(position).shape == (3, len(labels), 20, 1)
            np.testing.assert_allclose(split.sequence(position)[:, :, 1, 0], 0, atol=1e-6)
            row = split.indices[position]
            assert len(frame_ids[offsets[row]:offsets[row + 1]]) == len(labels)
    # s01_e01: pull (1640-1686) touches push (1686-1748); the shared line belongs to push
    split = load_split(prepared / "streams", "xsub", "train")
    position = split.names.index("s01_e01")
    ids = frame_ids[offsets[split.indices[position]]:offsets[split.indices[position] + 1]]
    labels = split.frame_labels_of(position)
    assert labels[np.searchsorted(ids, 1686)] == split.class_names.index("push") + 1
    assert labels[np.searchsorted(ids, 1686) - 1] == split.class_names.index("pull") + 1


def test_rerun_is_a_no_op_and_cli(prepared, tmp_path):
    stamp = (prepared / "actions" / "manifest.json").stat().st_mtime_ns
    assert prepare_utkinect(RAW, prepared, progress=False) == {"up_to_date": True, "out": str(prepared)}
    assert main(["prepare", "utkinect", "--raw", str(RAW), "--out", str(prepared), "--quiet"]) == 0
    assert (prepared / "actions" / "manifest.json").stat().st_mtime_ns == stamp
    assert main(["prepare", "utkinect", "--raw", str(RAW), "--out", str(tmp_path / "x"), "--labels", "newest"]) == 2
    assert main(["prepare", "utkinect", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
