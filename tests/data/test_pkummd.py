import numpy as np
import pytest

from usdrl.data import DataError, load_split
from usdrl.data.pkummd import prepare_pku1, prepare_pku2, read_pku_labels, read_pku_skeleton, read_split_file


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
