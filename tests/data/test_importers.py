import pickle

import numpy as np
import pytest

from usdrl.data import DataError, load_split
from usdrl.data.importers import import_agcn, import_arrays, import_ctrgcn


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
