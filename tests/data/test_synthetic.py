import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from usdrl.data.store import load_split
from usdrl.data.synthetic import CLASS_NAMES, SyntheticConfig, generate_trimmed, prepare_synthetic

SMALL = SyntheticConfig(subjects=4, replications=1, training_subjects=(1, 2), streams_per_subject_camera=1)


def test_deterministic_by_seed_and_shaped_like_ntu():
    first, second = generate_trimmed(SMALL), generate_trimmed(SMALL)
    np.testing.assert_array_equal(first["x"], second["x"])
    other = generate_trimmed(SyntheticConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not np.array_equal(first["x"], other["x"])
    x = first["x"]
    assert x.shape == (4 * 20 * 3, 3, 300, 25, 2)
    assert first["num_frames"].min() >= 40 and first["num_frames"].max() <= 300
    np.testing.assert_allclose(x[:, :, 0, 1, 0], 0, atol=1e-5)  # normalised like NTU
    two_person = np.isin(first["label"], range(16, 20))
    assert np.all(np.any(x[two_person][..., 1] != 0, axis=(1, 2, 3)))
    assert np.all(x[~two_person][..., 1] == 0)
    assert 0.2 < np.abs(x).max() < 3.0  # metres


def test_prepared_splits_and_streams(tmp_path):
    result = prepare_synthetic(tmp_path / "synthetic", SMALL)
    assert result["clips"] == 240
    assert prepare_synthetic(tmp_path / "synthetic", SMALL)["up_to_date"]
    train = load_split(tmp_path / "synthetic" / "actions", "xview", "train")
    test = load_split(tmp_path / "synthetic" / "actions", "xview", "test")
    assert set(train.ids["camera"]) == {2, 3} and set(test.ids["camera"]) == {1}
    assert set(load_split(tmp_path / "synthetic" / "actions", "xsub", "train").ids["subject"]) == {1, 2}
    assert train.class_names == list(CLASS_NAMES)
    streams = load_split(tmp_path / "synthetic" / "streams", "xsub", "test")
    assert streams.untrimmed and len(streams) == 2 * 3
    instances = streams.instances()
    for position in range(len(streams)):
        labels = streams.frame_labels_of(position)
        mine = instances[instances[:, 0] == position]
        assert len(mine) >= 4 and labels[0] == 0  # starts idle
        for _, label, start, end, _ in mine:
            assert np.all(labels[start:end] == label) and 1 <= label <= 16
        assert (labels > 0).sum() == (mine[:, 3] - mine[:, 2]).sum()


def _raw_joint_features(split, frames=32):
    features = []
    for position in range(len(split)):
        x = split.sample(position)[:, :split.num_frames[position]]
        index = np.linspace(0, x.shape[1] - 1, frames).round().astype(int)
        features.append(x[:, index].ravel())
    return np.array(features)


@pytest.mark.slow
def test_raw_joints_leave_room_for_representation_learning(tmp_path):
    """README: a logistic regression on raw resized joints stays well below a motion model cross-view."""
    prepare_synthetic(tmp_path / "synthetic")
    train = load_split(tmp_path / "synthetic" / "actions", "xview", "train")
    test = load_split(tmp_path / "synthetic" / "actions", "xview", "test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(_raw_joint_features(train), train.label)
    accuracy = model.score(_raw_joint_features(test), test.label)
    assert 1 / len(CLASS_NAMES) * 3 < accuracy < 0.72
