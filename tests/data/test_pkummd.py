import json

import numpy as np
import pytest
from conftest import shared_path

from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.pkummd import (
    prepare_pku1,
    prepare_pku1_clips,
    prepare_pku2,
    read_pku_labels,
    read_pku_skeleton,
    read_split_file,
)
from usdrl.data.store import load_split, read_manifest

SUBSET = shared_path() / "data" / "pkummd_subset"
SUBSET_CLASSES = [12, 14, 16, 18, 21, 24, 26, 27]  # the 8 two-person classes of the subset (1-based action ids)


def test_sample_sequence_labels_and_splits(shared, tmp_path):
    folder = shared / "data" / "pkummd_sample"
    x = read_pku_skeleton(folder / "skeleton" / "0005-M.txt")
    assert x.shape == (3, 1507, 25, 2)
    train, test = read_split_file(folder / "split" / "cross-subject.txt")
    assert "0005-M" in train and "0291-L" in test and "0060-L" not in train and len(test) == 132
    assert all(name for name in train)  # the trailing comma gives no empty name
    train2, test2 = read_split_file(folder / "split" / "phase2" / "cross_subject_v2.txt")
    assert (len(train2), len(test2)) == (775, 234)
    prepare_pku1(folder / "skeleton", folder / "label", folder / "split", tmp_path / "pku1", progress=False, workers=1)
    split = load_split(tmp_path / "pku1", "xsub", "train")
    assert split.names == ["0005-M"] and split.num_frames[0] == 1507
    labels = split.frame_labels_of(0)
    instances = split.instances()
    assert instances[0].tolist() == [0, 26, 217, 295, 2]
    assert labels[216] == 0 and labels[217] == 26 and labels[294] == 26 and labels[295] == 0  # end exclusive
    assert instances[2].tolist() == [0, 27, 463, 508, 0]  # confidence 0 kept
    for _, label, start, end, _ in instances:
        assert np.all(labels[start:end] == label)
    assert (labels > 0).sum() == sum(end - start for _, _, start, end, _ in instances)
    sequence = split.sequence(0)
    assert sequence.shape == (3, 1507, 25, 2)
    np.testing.assert_allclose(sequence[:, :, 1, 0], 0, atol=1e-6)


def _write_video(folder, name, frames, second_person=True, rng=None):
    rng = rng or np.random.default_rng(0)
    data = rng.normal(size=(frames, 2, 25, 3)) * 0.2 + np.array([0, 0, 3.0])
    if not second_person:
        data[:, 1] = 0
    (folder / "skeleton" / f"{name}.txt").write_text("\n".join(" ".join(f"{v:.5f}" for v in row.ravel()) for row in data) + "\n")
    return data


def _write_splits(folder, train, test, phase2=False):
    names = ("cross_subject_v2.txt", "cross_view_v2.txt") if phase2 else ("cross-subject.txt", "cross-view.txt")
    for name in names:
        (folder / "split" / name).write_text(
            f"Training videos: \n{', '.join(train)}, \nValidataion videos: \n{', '.join(test)},\n")


@pytest.fixture
def pku_folder(tmp_path):
    for sub in ("skeleton", "label", "split"):
        (tmp_path / sub).mkdir()
    return tmp_path


def test_reversed_instance_missing_person_and_phase2_clips(pku_folder, tmp_path):
    _write_video(pku_folder, "A01N01-L", 120, second_person=False)
    _write_video(pku_folder, "A01N02-M", 400)
    (pku_folder / "label" / "A01N01-L.txt").write_text("3,10,40,1\n5,80,50,2\n")  # second one reversed
    (pku_folder / "label" / "A01N02-M.txt").write_text("3,0,350,0\n")  # longer than 300 frames
    instances, notes = read_pku_labels(pku_folder / "label" / "A01N01-L.txt")
    assert instances[1].start == 50 and instances[1].end == 80 and "swapped" in notes[0]
    _write_splits(pku_folder, ["A01N01-L"], ["A01N02-M"], phase2=True)
    result = prepare_pku2(pku_folder / "skeleton", pku_folder / "label", pku_folder / "split", tmp_path / "pku2", progress=False)
    assert result["clips"] == 3
    train = load_split(tmp_path / "pku2", "xsub", "train")
    assert train.class_names == ["brushing teeth", "cheer up"]
    assert list(train.label) == [0, 1] and list(train.num_frames) == [30, 30]
    assert np.all(train.sample(0)[..., 1] == 0)  # missing second person stays zero
    test = load_split(tmp_path / "pku2", "xsub", "test")
    assert test.num_frames[0] == 300  # subsampled from 350


@pytest.mark.parametrize("line, message", [
    ("3,10,40\n", r"A.txt:1: a label line needs 4 values"), ("3,10,x,1\n", r"A.txt:1: text where a number"),
    ("60,10,40,1\n", r"label 60 is outside"),
])
def test_bad_label_lines_name_file_and_line(pku_folder, line, message):
    (pku_folder / "label" / "A.txt").write_text(line)
    with pytest.raises(DataError, match=message):
        read_pku_labels(pku_folder / "label" / "A.txt")


def test_bad_skeleton_line_and_missing_folders(pku_folder, tmp_path):
    _write_video(pku_folder, "0002-L", 20)
    path = pku_folder / "skeleton" / "0002-L.txt"
    lines = path.read_text().split("\n")
    lines[6] = " ".join(lines[6].split()[:149])
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"0002-L.txt:7: a frame line needs 150 values, found 149"):
        read_pku_skeleton(path)
    (pku_folder / "label" / "0002-L.txt").write_text("1,0,5,2\n")
    _write_splits(pku_folder, ["0002-L"], [])
    with pytest.raises(DataError, match="0002-L.txt:7"):
        prepare_pku1(pku_folder / "skeleton", pku_folder / "label", pku_folder / "split", tmp_path / "o", progress=False, workers=1)
    assert not (tmp_path / "o").exists()
    with pytest.raises(DataError, match="does not exist"):
        prepare_pku1(tmp_path / "none", pku_folder / "label", pku_folder / "split", tmp_path / "o", progress=False)


def _partial_folder(folder):
    """Three videos on disk; the split lists name four, of which two are here; one video is in no list."""
    _write_video(folder, "0002-L", 60)
    _write_video(folder, "0002-M", 90)
    _write_video(folder, "0099-R", 40)
    (folder / "label" / "0002-L.txt").write_text("3,5,25,1\n7,30,50,2\n")
    (folder / "label" / "0002-M.txt").write_text("7,10,80,1\n")
    (folder / "label" / "0099-R.txt").write_text("3,0,20,1\n")
    _write_splits(folder, ["0002-L", "0003-L"], ["0002-M", "0003-M"])


def test_partial_copy_is_counted_in_manifest_summary_and_stderr(pku_folder, tmp_path, capsys):
    _partial_folder(pku_folder)
    arguments = ["prepare", "pku1", "--raw", str(pku_folder / "skeleton"), "--labels", str(pku_folder / "label"),
                 "--splits", str(pku_folder / "split"), "--out", str(tmp_path / "pku1"), "--quiet"]
    assert main(arguments) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout stays the JSON summary
    expected = {"videos": {"found": 2, "listed": 4}, "found_not_listed": 1,
                "splits": {"xsub/train": {"found": 1, "listed": 2}, "xsub/test": {"found": 1, "listed": 2},
                           "xview/train": {"found": 1, "listed": 2}, "xview/test": {"found": 1, "listed": 2}}}
    assert summary["partial"] is True and summary["coverage"] == expected
    assert captured.err.splitlines() == [
        "prepare pku1: 2 of the 4 videos the split lists name were found; this is a subset, not the benchmark",
        "prepare pku1: 1 of the videos found are in no split list; they are kept in the dataset but belong to no split"]
    manifest = read_manifest(tmp_path / "pku1")
    assert manifest["partial"] is True and manifest["coverage"] == {**expected, "not_listed_names": ["0099-R"]}
    assert manifest["num_samples"] == 3  # the unlisted video is kept, in no split
    assert main(arguments) == 0  # up to date: the counts and the warning again
    captured = capsys.readouterr()
    assert json.loads(captured.out)["coverage"] == expected and "2 of the 4 videos" in captured.err


def test_complete_copy_has_no_warning(pku_folder, tmp_path, capsys):
    _write_video(pku_folder, "0002-L", 30)
    (pku_folder / "label" / "0002-L.txt").write_text("3,5,25,1\n")
    _write_splits(pku_folder, ["0002-L"], [])
    assert main(["prepare", "pku1", "--raw", str(pku_folder / "skeleton"), "--labels", str(pku_folder / "label"),
                 "--splits", str(pku_folder / "split"), "--out", str(tmp_path / "pku1"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["partial"] is False and captured.err == ""
    assert read_manifest(tmp_path / "pku1")["coverage"]["videos"] == {"found": 1, "listed": 1}


def test_phase1_clips_are_a_trimmed_dataset(pku_folder, tmp_path, capsys):
    _partial_folder(pku_folder)
    assert main(["prepare", "pku1", "--clips", "--raw", str(pku_folder / "skeleton"), "--labels",
                 str(pku_folder / "label"), "--splits", str(pku_folder / "split"), "--out", str(tmp_path / "clips"),
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["clips"] == 4 and summary["classes"] == 2 and summary["partial"] is True
    assert summary["split_clips"] == {"xsub/train": 2, "xsub/test": 1, "xview/train": 2, "xview/test": 1}
    assert captured.err.startswith("prepare pku1 --clips: 2 of the 4 videos")
    manifest = read_manifest(tmp_path / "clips")
    assert manifest["dataset"] == "pku1_clips" and manifest["kind"] == "trimmed"
    assert manifest["original_action_ids"] == [3, 7] and manifest["class_names"] == ["brushing teeth", "cross hands in front"]
    train = load_split(tmp_path / "clips", "xsub", "train")
    assert not train.untrimmed and train.names == ["0002-L_000", "0002-L_001"]
    assert list(train.label) == [0, 1] and list(train.num_frames) == [20, 20]  # the clips' own lengths
    assert train.sample(0).shape == (3, 300, 25, 2)
    test = load_split(tmp_path / "clips", "xsub", "test")
    assert list(test.label) == [1] and list(test.num_frames) == [70]


@pytest.fixture(scope="module")
def real_subset(tmp_path_factory):
    """The real 45-video subset prepared both ways (untrimmed and as clips), once for the module."""
    if not SUBSET.is_dir():
        pytest.skip(f"{SUBSET} is absent")
    root = tmp_path_factory.mktemp("pku_subset")
    inputs = (SUBSET / "skeleton", SUBSET / "label", SUBSET / "split")
    untrimmed = prepare_pku1(*inputs, root / "pku1", progress=False, workers=1)
    clips = prepare_pku1_clips(*inputs, root / "clips", progress=False)
    return root, untrimmed, clips


def test_real_subset_coverage(real_subset):
    root, untrimmed, clips = real_subset
    expected = {"videos": {"found": 45, "listed": 1076}, "found_not_listed": 0,
                "splits": {"xsub/train": {"found": 36, "listed": 944}, "xsub/test": {"found": 9, "listed": 132},
                           "xview/train": {"found": 30, "listed": 717}, "xview/test": {"found": 15, "listed": 359}}}
    for summary in (untrimmed, clips):
        assert summary["partial"] is True and summary["coverage"] == expected
    manifest = read_manifest(root / "pku1")
    assert manifest["partial"] is True and manifest["coverage"]["videos"] == {"found": 45, "listed": 1076}
    assert untrimmed["sequences"] == 45 and untrimmed["instances"] == 357


def test_real_subset_clips(real_subset):
    root, _, clips = real_subset
    assert clips["clips"] == 357 and clips["classes"] == 8 and clips["skipped"] == 0
    assert clips["split_clips"] == {"xsub/train": 282, "xsub/test": 75, "xview/train": 238, "xview/test": 119}
    manifest = read_manifest(root / "clips")
    assert manifest["dataset"] == "pku1_clips" and manifest["original_action_ids"] == SUBSET_CLASSES
    assert manifest["counts"]["xsub/test"]["per_class"] == [9, 9, 9, 12, 9, 9, 9, 9]
    train = load_split(root / "clips", "xsub", "train")
    assert not train.untrimmed and len(train.label) == 282 and set(train.label) == set(range(8))
    assert {name.split("_")[0].split("-")[0] for name in train.names} == {
        "0006", "0015", "0026", "0035", "0046", "0055", "0066", "0075", "0086", "0095", "0106", "0115"}
    # num_frames are the instances' own lengths (end - start; none is over 300 frames here)
    instances = load_split(root / "pku1", "xsub", "train").instances()
    assert sorted(train.num_frames.tolist()) == sorted((instances[:, 3] - instances[:, 2]).tolist())
    assert train.sample(0).shape == (3, 300, 25, 2)
