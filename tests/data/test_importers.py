import json
import pickle
import re
import zipfile

import numpy as np
import pytest

from usdrl.data.errors import DataError
from usdrl.data.importers import import_agcn, import_arrays, import_ctrgcn
from usdrl.data.store import load_split


def _samples(rng, count, frames=300):
    x = np.zeros((count, 3, frames, 25, 2), dtype=np.float32)
    lengths = rng.integers(20, frames, size=count)
    for i, length in enumerate(lengths):
        x[i, :, :length, :, 0] = rng.normal(size=(3, length, 25))
    return x, lengths


def test_agcn_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "ntu" / "xview"
    folder.mkdir(parents=True)
    parts = {}
    for source, count in (("train", 6), ("val", 4)):
        x, lengths = _samples(rng, count)
        labels = rng.integers(0, 60, size=count)
        names = [f"S001C00{2 if source == 'train' else 1}P00{i + 1}R001A{label + 1:03d}.skeleton" for i, label in enumerate(labels)]
        np.save(folder / f"{source}_data_joint.npy", x)
        with open(folder / f"{source}_label.pkl", "wb") as handle:
            pickle.dump((names, list(labels)), handle)
        np.save(folder / f"{source}_num_frame.npy", lengths)
        parts[source] = (x, labels, lengths)
    import_agcn(folder, tmp_path / "out")
    for source, split in (("train", "train"), ("val", "test")):
        loaded = load_split(tmp_path / "out", "xview", split)  # benchmark guessed from the folder name
        x, labels, lengths = parts[source]
        np.testing.assert_array_equal(loaded.batch(np.arange(len(loaded))), x)
        assert list(loaded.label) == list(labels) and list(loaded.num_frames) == list(lengths)
        assert set(loaded.ids["camera"]) == {2 if source == "train" else 1}
    assert loaded.class_names[0] == "drink water" and loaded.num_classes == 60


def test_ctrgcn_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    originals = {}
    for source, count in (("train", 5), ("test", 3)):
        x, lengths = _samples(rng, count, frames=300)
        labels = rng.integers(0, 120, size=count)
        arrays[f"x_{source}"] = x.transpose(0, 2, 4, 3, 1).reshape(count, 300, 150)
        arrays[f"y_{source}"] = np.eye(120)[labels]
        originals[source] = (x, labels, lengths)
    np.savez(tmp_path / "NTU120_CSet.npz", **arrays)
    import_ctrgcn(tmp_path / "NTU120_CSet.npz", tmp_path / "out")
    for source in ("train", "test"):
        loaded = load_split(tmp_path / "out", "xset", source)
        x, labels, lengths = originals[source]
        np.testing.assert_array_equal(loaded.batch(np.arange(len(loaded))), x)
        assert list(loaded.label) == list(labels)
        assert list(loaded.num_frames) == list(lengths)


def test_arrays_with_a_two_dimensional_layout(tmp_path):
    rng = np.random.default_rng(2)
    layout = tmp_path / "coco.json"
    names = [f"j{i}" for i in range(17)]
    layout.write_text('{"name": "coco17", "joint_names": %s, "bones": [[2, 1], [3, 1]], "center_joint": 1, '
                      '"shoulder_pair": [6, 7], "num_persons": 1, "num_coordinates": 2}' % str(names).replace("'", '"'))
    x = rng.normal(size=(10, 2, 30, 17, 1)).astype(np.float32)
    np.savez(tmp_path / "pose.npz", x=x, label=np.arange(10) % 3, split_xsub_train=np.arange(7), split_xsub_test=np.arange(7, 10))
    import_arrays(tmp_path / "pose.npz", tmp_path / "out", layout=layout)
    loaded = load_split(tmp_path / "out", "xsub", "test")
    assert loaded.layout.num_coordinates == 2 and loaded.layout.num_joints == 17
    np.testing.assert_array_equal(loaded.sample(0), x[7])
    with pytest.raises(DataError, match="does not fit layout"):
        import_arrays(tmp_path / "pose.npz", tmp_path / "out2")  # default ntu25
    np.savez(tmp_path / "bad.npz", x=np.where(np.arange(x.size).reshape(x.shape) == 5000, np.nan, x), label=np.zeros(10, int))
    with pytest.raises(DataError, match="sample 4 contains NaN"):
        import_arrays(tmp_path / "bad.npz", tmp_path / "out3", layout=layout)
    assert not (tmp_path / "out3").exists()


def test_import_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="train_data_joint.npy"):
        (tmp_path / "xsub").mkdir()
        import_agcn(tmp_path / "xsub", tmp_path / "out")
    np.savez(tmp_path / "NTU60_CS.npz", x_train=np.zeros((2, 300, 150)))
    with pytest.raises(DataError, match="missing arrays x_test, y_test, y_train"):
        import_ctrgcn(tmp_path / "NTU60_CS.npz", tmp_path / "out")
    np.savez(tmp_path / "odd.npz", x_train=np.zeros((2, 300, 150)))
    with pytest.raises(DataError, match="--benchmark"):
        import_ctrgcn(tmp_path / "odd.npz", tmp_path / "out")


def _pose_file(tmp_path, **changes):
    """A valid arrays file (8 samples, T=30, NTU-25) with some arrays replaced."""
    arrays = {"x": np.random.default_rng(3).normal(size=(8, 3, 30, 25, 2)).astype(np.float32),
              "label": np.arange(8) % 2, "num_frames": np.full(8, 30),
              "split_xsub_train": np.arange(6), "split_xsub_test": np.array([6, 7])}
    arrays.update(changes)
    np.savez(tmp_path / "pose.npz", **arrays)
    return tmp_path / "pose.npz"


@pytest.mark.parametrize("changes, message", [
    ({"split_xsub_test": np.array([5, 6, 7])}, "split_xsub_test and split_xsub_train share 1 sample"),
    ({"split_xsub_train": np.array([0, 1, 2, 2])}, "split_xsub_train holds index 2 2 times"),
    ({"label": np.arange(8) % 2 + 0.5}, "label must be integers, found float64"),
    ({"split_xsub_test": np.array([6.0, 7.5])}, "split_xsub_test must be integers"),
    ({"num_frames": np.full(8, 31)}, r"num_frames: sample 0 has 31 frames; each must lie in 0\.\.30"),
    ({"num_frames": np.full(8, 12.7)}, "num_frames must be integers"),
])
def test_arrays_refuses_inconsistent_splits_labels_and_frames(tmp_path, changes, message):
    with pytest.raises(DataError, match=message):
        import_arrays(_pose_file(tmp_path, **changes), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_arrays_accepts_the_valid_file_and_other_benchmarks_may_overlap(tmp_path):
    path = _pose_file(tmp_path, split_xview_train=np.arange(2, 8), split_xview_test=np.arange(2))
    import_arrays(path, tmp_path / "out")
    assert list(load_split(tmp_path / "out", "xview", "test").indices) == [0, 1]


def test_a_layout_bone_from_a_joint_to_itself_is_refused(tmp_path):
    from usdrl.skeleton import LayoutError

    layout = tmp_path / "self.json"
    layout.write_text('{"joint_names": ["a", "b", "c"], "bones": [[2, 1], [3, 3]], "center_joint": 1, '
                      '"shoulder_pair": [2, 3], "num_persons": 1, "num_coordinates": 2}')
    np.savez(tmp_path / "pose.npz", x=np.ones((2, 2, 5, 3, 1), dtype=np.float32), label=np.array([0, 1]))
    with pytest.raises(LayoutError, match="bone 2 joins joint 3 .c. to itself"):
        import_arrays(tmp_path / "pose.npz", tmp_path / "out", layout=layout)
    layout.write_text(layout.read_text().replace("[3, 3]", "[3, 1]"))
    import_arrays(tmp_path / "pose.npz", tmp_path / "out", layout=layout)
    assert len(load_split(tmp_path / "out", "all", "all")) == 2


def _raw_capture(rng, count=6, frames=40):
    """Raw sensor coordinates: metres, the sensor 2.5 m away, each body somewhere else in the room, moving;
    zero-padded past each sample's length, x (N, C, T, V, M) and the lengths."""
    x = np.zeros((count, 3, frames, 25, 2), dtype=np.float32)
    lengths = rng.integers(15, frames, size=count)
    for i, length in enumerate(lengths):
        place = np.array([rng.uniform(-2, 2), rng.uniform(-0.5, 0.5), 2.5 + rng.uniform(-0.5, 1.5)])
        posture = rng.normal(scale=0.3, size=(25, 3)) + place
        drift = 0.01 * np.arange(length)[:, None, None] * rng.normal(size=3)
        x[i, :, :length, :, 0] = (posture + drift).transpose(2, 0, 1)
    return x, lengths


def test_arrays_in_raw_metres_are_normalised_like_ntu_and_no_normalise_keeps_them(tmp_path):
    from usdrl.cli.main import main

    x, lengths = _raw_capture(np.random.default_rng(4))
    np.savez(tmp_path / "capture.npz", x=x, label=np.arange(6) % 2, split_xsub_train=np.arange(4),
             split_xsub_test=np.array([4, 5]))
    assert main(["import", "arrays", str(tmp_path / "capture.npz"), "--out", str(tmp_path / "out")]) == 0
    split = load_split(tmp_path / "out", "xsub", "train")
    stored = split.batch(np.arange(4))  # (N, C, T, V, M)
    np.testing.assert_allclose(stored[:, :, 0, 1, 0], 0, atol=1e-5)  # centre joint (2) at the origin in frame 1
    shoulders = stored[:, :, 0, 8, 0] - stored[:, :, 0, 4, 0]  # right - left shoulder, frame 1, onto +x
    np.testing.assert_allclose(shoulders[:, 1:], 0, atol=1e-5)
    assert (shoulders[:, 0] > 0).all()
    assert list(split.num_frames) == list(lengths[:4])  # counted on the raw data, before padding
    for sample, length in zip(stored, lengths):
        assert not sample[:, length:].any()  # the zero padding stays zero
    preprocessing = json.loads((tmp_path / "out" / "manifest.json").read_text())["preprocessing"]
    assert preprocessing["normalised"] is True and preprocessing["center_joint"] == 2
    assert preprocessing["shoulder_pair"] == [5, 9] and len(preprocessing["steps"]) == 4

    assert main(["import", "arrays", str(tmp_path / "capture.npz"), "--out", str(tmp_path / "raw"),
                 "--no-normalise"]) == 0
    np.testing.assert_array_equal(load_split(tmp_path / "raw", "xsub", "train").batch(np.arange(4)), x[:4])
    preprocessing = json.loads((tmp_path / "raw" / "manifest.json").read_text())["preprocessing"]
    assert preprocessing["normalised"] is False and preprocessing["steps"] == []


def test_two_dimensional_arrays_are_stored_as_given_unless_asked(tmp_path):
    rng = np.random.default_rng(5)
    x = (rng.normal(scale=80, size=(3, 2, 12, 17, 1)) + [[[[[900]]], [[[500]]]]]).astype(np.float32)  # pixels
    np.savez(tmp_path / "pose.npz", x=x, label=np.array([0, 1, 0]))
    import_arrays(tmp_path / "pose.npz", tmp_path / "as_given", layout="coco17")
    np.testing.assert_array_equal(load_split(tmp_path / "as_given", "all", "all").batch(np.arange(3)), x)
    import_arrays(tmp_path / "pose.npz", tmp_path / "normalised", layout="coco17", normalise=True)
    stored = load_split(tmp_path / "normalised", "all", "all").batch(np.arange(3))
    np.testing.assert_allclose(stored[:, :, :, 0, 0], 0, atol=1e-3)  # nose at the origin in every frame
    np.testing.assert_allclose(stored[:, 1, 0, 6, 0] - stored[:, 1, 0, 5, 0], 0, atol=1e-3)


def _agcn_folder(tmp_path, count=2):
    """A valid AGCN folder (xsub) of ``count`` train and val samples."""
    folder = tmp_path / "xsub"
    folder.mkdir()
    x, lengths = _samples(np.random.default_rng(6), count, frames=30)
    for source in ("train", "val"):
        np.save(folder / f"{source}_data_joint.npy", x)
        with open(folder / f"{source}_label.pkl", "wb") as handle:
            pickle.dump(([f"s{i}" for i in range(count)], list(range(count))), handle)
        np.save(folder / f"{source}_num_frame.npy", lengths)
    return folder


def _object_array():
    values = np.empty(2, dtype=object)
    values[:] = [1, "a"]
    return values


def _write_text(path):
    path.write_text("1 2 3\n")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:300])


def _save_npz(path):
    with open(path, "wb") as handle:
        np.savez(handle, x=np.zeros(3))


@pytest.mark.parametrize("file, damage, message", [
    ("train_data_joint.npy", lambda path: path.write_bytes(b""), "train_data_joint.npy: not a readable .npy array"),
    ("train_data_joint.npy", _write_text, "train_data_joint.npy: not a readable .npy array"),
    ("train_data_joint.npy", _truncate, "train_data_joint.npy: not a readable .npy array .mmap length"),
    ("train_data_joint.npy", lambda path: np.save(path, _object_array(), allow_pickle=True),
     "train_data_joint.npy: not a readable .npy array .Array can't be memory-mapped: Python objects"),
    ("train_data_joint.npy", _save_npz, "train_data_joint.npy: a .npz file, expected one .npy array"),
    ("val_data_joint.npy", lambda path: np.save(path, np.zeros((0, 3, 30, 25, 2))), "val_data_joint.npy: holds no samples"),
    ("train_num_frame.npy", _write_text, "train_num_frame.npy: not a readable .npy array"),
    ("train_num_frame.npy", lambda path: np.save(path, np.array(["10", "20"])), "train_num_frame.npy: holds <U2 values"),
])
def test_agcn_refuses_unreadable_arrays_by_name(tmp_path, file, damage, message, capsys):
    from usdrl.cli.main import main

    folder = _agcn_folder(tmp_path)
    damage(folder / file)
    assert main(["import", "agcn", str(folder), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()


def test_the_undamaged_agcn_folder_imports(tmp_path):
    import_agcn(_agcn_folder(tmp_path), tmp_path / "out")
    assert len(load_split(tmp_path / "out", "xsub", "test")) == 2


def _raw_pickle_npz(path, members):
    """A .npz whose members are pickles, not .npy arrays (np.load hands them back as bytes)."""
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            archive.writestr(f"{member}.npy", pickle.dumps({"not": "an array"}))
    return path


CTRGCN_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@pytest.mark.parametrize("make, message", [
    (lambda path: np.savez(path, **{key: _object_array() for key in CTRGCN_ARRAYS}),
     "x_train: not a readable .npz array .Object arrays"),
    (lambda path: _raw_pickle_npz(path, CTRGCN_ARRAYS), r"x_train: not a numpy array \(pickled or raw data\)"),
    (lambda path: np.savez(path, x_train=np.zeros((2, 30, 150)), y_train=np.zeros((2, 0)),
                           x_test=np.zeros((1, 30, 150)), y_test=np.eye(3)[:1]), r"y_train has shape \(2, 0\)"),
    (lambda path: np.savez(path, x_train=np.full((2, 30, 150), "a"), y_train=np.eye(2),
                           x_test=np.zeros((1, 30, 150)), y_test=np.eye(2)[:1]), "x_train: holds <U1 values"),
])
def test_ctrgcn_refuses_unreadable_arrays_by_name(tmp_path, make, message):
    make(tmp_path / "NTU60_CS.npz")
    with pytest.raises(DataError, match=message):
        import_ctrgcn(tmp_path / "NTU60_CS.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, message", [
    (lambda tmp_path: _raw_pickle_npz(tmp_path / "raw.npz", ["x", "label"]), r"x: not a numpy array \(pickled"),
    (lambda tmp_path: _pose_file(tmp_path, x=np.full((8, 3, 30, 25, 2), "1.5")), "x: holds <U3 values"),
    (lambda tmp_path: _pose_file(tmp_path, x=np.ones((8, 3, 30, 25, 2), dtype=complex)), "x: holds complex128"),
    (lambda tmp_path: _pose_file(tmp_path, names=np.array(["a", "b", "c"])),
     r"names has shape \(3,\); expected one name per sample \(8,\)"),
    (lambda tmp_path: _pose_file(tmp_path, class_names=np.array(["only one"])), "label 1 has no class name"),
])
def test_arrays_refuses_unreadable_or_inconsistent_arrays(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        import_arrays(make(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()
