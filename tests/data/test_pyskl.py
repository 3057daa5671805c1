"""usdrl import pyskl: the annotation pickles of pyskl / MMAction2 (ntu60_3danno.pkl, ntu60_hrnet.pkl)."""

import json
import pickle

import numpy as np
import pytest

from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.data.pyskl import import_pyskl, pyskl_split_names
from usdrl.data.store import load_split, read_manifest

NTU_NAMES = ["S001C001P001R001A001", "S001C002P001R001A002", "S001C001P002R001A003", "S001C002P002R001A001",
             "S001C001P003R001A002", "S001C003P003R001A003"]
NTU_LENGTHS = [20, 35, 50, 12, 41, 28]
NTU_PERSONS = [1, 2, 3, 1, 2, 1]  # the third person of sample 2 is beyond ntu25's M=2
NTU_SPLITS = {"xsub_train": NTU_NAMES[:4], "xsub_val": NTU_NAMES[4:],
              "xview_train": [n for n in NTU_NAMES if "C001" not in n], "xview_val": [n for n in NTU_NAMES if "C001" in n]}


def _moving_body(rng, frames, joints, coordinates, place):
    """(T, V, C): a random posture at ``place`` (raw sensor metres), drifting and waving over time."""
    posture = rng.normal(scale=0.3, size=(joints, coordinates)) + place
    time = np.arange(frames)[:, None, None]
    return (posture + 0.01 * time * rng.normal(size=coordinates) + 0.05 * np.sin(time / 3.0)).astype(np.float32)


def _ntu_annotations(rng):
    """NTU-like 3D annotations: raw metres, the sensor 2.5 m away, bodies at different places."""
    annotations = []
    for name, length, persons in zip(NTU_NAMES, NTU_LENGTHS, NTU_PERSONS):
        bodies = [_moving_body(rng, length, 25, 3, [rng.uniform(-1.5, 1.5), rng.uniform(-0.5, 0.5), 2.5])
                  for _ in range(persons)]
        annotations.append({"frame_dir": name, "label": int(name[-3:]) - 1, "keypoint": np.stack(bodies),
                            "total_frames": length})
    return annotations


def _write(path, content, protocol=4):
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=protocol)
    return path


@pytest.fixture
def ntu_file(tmp_path):
    annotations = _ntu_annotations(np.random.default_rng(0))
    return _write(tmp_path / "ntu60_3danno.pkl", {"split": NTU_SPLITS, "annotations": annotations}), annotations


@pytest.mark.parametrize("protocol", [4, 5])
def test_ntu_3d_is_imported_split_and_normalised(tmp_path, protocol):
    annotations = _ntu_annotations(np.random.default_rng(protocol))
    path = _write(tmp_path / "ntu60_3danno.pkl", {"split": NTU_SPLITS, "annotations": annotations}, protocol)
    assert main(["import", "pyskl", str(path), "--out", str(tmp_path / "ntu")]) == 0
    manifest = read_manifest(tmp_path / "ntu")
    assert manifest["layout"]["name"] == "ntu25" and manifest["num_samples"] == 6
    assert manifest["split_names"] == {"xsub_train": "xsub/train", "xsub_val": "xsub/test",
                                       "xview_train": "xview/train", "xview_val": "xview/test"}
    assert manifest["samples_with_persons_dropped"] == 1 and manifest["clips_longer_than_max"] == 0
    assert manifest["preprocessing"]["normalised"] is True
    assert manifest["preprocessing"]["center_joint"] == 2 and manifest["preprocessing"]["shoulder_pair"] == [5, 9]
    train, test = load_split(tmp_path / "ntu", "xsub", "train"), load_split(tmp_path / "ntu", "xsub", "test")
    assert train.names == NTU_NAMES[:4] and test.names == NTU_NAMES[4:]
    assert len(load_split(tmp_path / "ntu", "xview", "test")) == 3
    assert list(train.label) == [0, 1, 2, 0] and train.class_names[0] == "drink water" and train.num_classes == 60
    assert list(train.ids["camera"]) == [1, 2, 1, 2]
    x = np.concatenate([train.batch(np.arange(4)), test.batch(np.arange(2))])  # (N, C, T, V, M)
    assert x.shape == (6, 3, 50, 25, 2)  # padded to the longest sequence and to ntu25's two persons
    assert list(train.num_frames) + list(test.num_frames) == NTU_LENGTHS
    for sample, length, annotation in zip(x, NTU_LENGTHS, annotations):
        np.testing.assert_allclose(sample[:, :length, 1, 0], 0, atol=1e-5)  # centre joint (2) of person 1 at the origin
        shoulders = sample[:, 0, 8, 0] - sample[:, 0, 4, 0]  # right - left shoulder, frame 1
        np.testing.assert_allclose(shoulders[1:], 0, atol=1e-5)
        assert shoulders[0] > 0
        assert not sample[:, length:].any()  # the zero padding stays zero
        raw = annotation["keypoint"][0]  # (T, V, C): distances between joints survive translation and rotation
        np.testing.assert_allclose(np.linalg.norm(sample[:, :length, 3, 0] - sample[:, :length, 0, 0], axis=0),
                                   np.linalg.norm(raw[:, 3] - raw[:, 0], axis=1), rtol=1e-4)
        assert not np.allclose(sample[:, :length, :, 0], raw.transpose(2, 0, 1))


def test_no_normalise_keeps_the_raw_values_and_max_frames_subsamples(tmp_path, ntu_file):
    path, annotations = ntu_file
    import_pyskl(path, tmp_path / "raw", normalise=False)
    assert read_manifest(tmp_path / "raw")["preprocessing"]["normalised"] is False
    split = load_split(tmp_path / "raw", "xsub", "train")
    for position in range(4):
        keypoint = annotations[position]["keypoint"][:2]  # (M, T, V, C)
        stored = split.sample(position)[:, :keypoint.shape[1], :, :keypoint.shape[0]]
        np.testing.assert_array_equal(stored, keypoint.transpose(3, 1, 2, 0))
    result = import_pyskl(path, tmp_path / "short", normalise=False, max_frames=30)
    assert result["clips_longer_than_max"] == 3  # 35, 50 and 41 frames
    short = load_split(tmp_path / "short", "xsub", "train")
    assert short.sample(0).shape[1] == 30 and list(short.num_frames) == [20, 30, 30, 12]
    longest = annotations[2]["keypoint"][0]  # 50 frames -> 30, first and last kept
    np.testing.assert_array_equal(short.sample(2)[..., 0][:, [0, 29]], longest[[0, 49]].transpose(2, 0, 1))


def _hrnet_annotations(rng, count=5):
    """NTU HRNet-like 2D: pixel coordinates (V=17, C=2) with keypoint_score, one or two persons."""
    annotations = []
    for index in range(count):
        persons, length = 1 + index % 2, 10 + 3 * index
        keypoint = np.stack([_moving_body(rng, length, 17, 2, [0, 0]) * 200 + [rng.uniform(600, 1300), 500]
                             for _ in range(persons)])  # pixels
        annotations.append({"frame_dir": f"clip{index:03d}", "label": index % 3, "keypoint": keypoint.astype(np.float16),
                            "keypoint_score": rng.uniform(0.2, 1.0, size=(persons, length, 17)).astype(np.float16),
                            "total_frames": length, "img_shape": (1080, 1920)})
    return annotations


@pytest.mark.parametrize("protocol", [4, 5])
def test_hrnet_2d_with_scores(tmp_path, protocol):
    annotations = _hrnet_annotations(np.random.default_rng(protocol))
    content = {"split": {"sub1_train": ["clip000", "clip001", "clip002"], "sub1_val": ["clip003"]},
               "annotations": annotations}
    path = _write(tmp_path / "hrnet.pkl", content, protocol)
    assert main(["import", "pyskl", str(path), "--out", str(tmp_path / "coco")]) == 0
    manifest = read_manifest(tmp_path / "coco")
    assert manifest["layout"]["name"] == "coco17" and manifest["preprocessing"]["normalised"] is False  # 2D: as given
    assert manifest["keypoint_score"].startswith("dropped") and manifest["samples_with_persons_dropped"] == 2
    assert manifest["split_names"] == {"sub1_train": "sub1/train", "sub1_val": "sub1/test"} and manifest["in_no_split"] == 1
    split = load_split(tmp_path / "coco", "sub1", "train")
    assert split.class_names == ["class_0", "class_1", "class_2"] and list(split.label) == [0, 1, 2]
    assert split.batch(np.arange(3)).shape == (3, 2, 22, 17, 1)  # (N, C, T, V, M): longest of all 5 is 22
    np.testing.assert_array_equal(split.sample(1)[:, :13, :, 0],
                                  annotations[1]["keypoint"][0].astype(np.float32).transpose(2, 0, 1))

    assert main(["import", "pyskl", str(path), "--out", str(tmp_path / "scored"), "--layout", "coco17_score",
                 "--normalise"]) == 0
    manifest = read_manifest(tmp_path / "scored")
    assert manifest["keypoint_score"] == "channel 3" and manifest["preprocessing"]["normalised"] is True
    sample = load_split(tmp_path / "scored", "sub1", "test").sample(0)  # clip003, 19 frames
    np.testing.assert_allclose(sample[:2, :19, 0, 0], 0, atol=1e-2)  # nose at the origin (pixels)
    assert abs(sample[1, 0, 6, 0] - sample[1, 0, 5, 0]) < 1e-2 < sample[0, 0, 6, 0] - sample[0, 0, 5, 0]
    np.testing.assert_array_equal(sample[2, :19, :, 0], annotations[3]["keypoint_score"][0].astype(np.float32))
    assert not sample[:, 19:].any()


class _Payload:
    """Unpickling this calls open(marker, "w"): a file appears if the payload runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    annotations = _ntu_annotations(np.random.default_rng(1))
    annotations[3]["total_frames"] = _Payload(marker)
    path = _write(tmp_path / "evil.pkl", {"split": NTU_SPLITS, "annotations": annotations})
    assert main(["import", "pyskl", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("usdrl import: error: ") and "the global io.open" in error and str(path) in error
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_frame_dir_without_annotation_is_a_clear_error(tmp_path, ntu_file, capsys):
    path, annotations = ntu_file
    splits = {**NTU_SPLITS, "xsub_val": NTU_SPLITS["xsub_val"] + ["S001C001P009R001A001"]}
    _write(path, {"split": splits, "annotations": annotations})
    assert main(["import", "pyskl", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "split 'xsub_val' lists 1 frame_dir(s) with no annotation (e.g. 'S001C001P009R001A001')" in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def _broken(annotations, index, **changes):
    annotations[index] = {key: value for key, value in {**annotations[index], **changes}.items() if value is not None}
    return {"split": NTU_SPLITS, "annotations": annotations}


@pytest.mark.parametrize("make, message", [
    (lambda a: a, "expected a pyskl / MMAction2 annotation pickle.*found list"),
    (lambda a: {"annotations": a}, "with keys annotations"),
    (lambda a: _broken(a, 2, keypoint=None), r"annotation 2 \(S001C001P002R001A003\) has no 'keypoint'"),
    (lambda a: _broken(a, 4, keypoint=np.zeros((1, 41, 17, 3))), "annotation 4 .* has V=17, C=3; annotation 0 .* V=25"),
    (lambda a: _broken(a, 1, keypoint=np.full((1, 5, 25, 3), np.inf)), r"annotation 1 \(S001C002P001R001A002\): keypoint contains NaN"),
    (lambda a: _broken(a, 0, label=1.5), "label 1.5 is not a 0-based class index"),
    (lambda a: _broken(a, 3, keypoint=np.zeros((0, 12, 25, 3))), r"annotation 3 \(S001C002P002R001A001\): keypoint "
                                                                  r"has shape .* \(0, 12, 25, 3\), with no person"),
    (lambda a: _broken(a, 5, keypoint=np.zeros((1, 0, 25, 3))), r"annotation 5 \(S001C003P003R001A003\): keypoint "
                                                                 r"has shape .* \(1, 0, 25, 3\), with no person, frame"),
    (lambda a: {"split": {**NTU_SPLITS, "cs_val": NTU_NAMES[:1]}, "annotations": a}, "both become xsub/test"),
])
def test_bad_annotation_files_are_refused_by_name(tmp_path, make, message):
    path = _write(tmp_path / "bad.pkl", make(_ntu_annotations(np.random.default_rng(2))))
    with pytest.raises(DataError, match=message):
        import_pyskl(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_split_names_follow_the_stated_rule():
    assert pyskl_split_names(["xsub_train", "xsub_val", "xset_val", "sub1_train", "train", "val", "cs_val",
                              "my_set_test", "my_set_val", "xview_trainval"]) == {
        "xsub_train": ("xsub", "train"), "xsub_val": ("xsub", "test"), "xset_val": ("xset", "test"),
        "sub1_train": ("sub1", "train"), "train": ("all", "train"), "val": ("all", "test"), "cs_val": ("xsub", "test"),
        "my_set_test": ("my-set", "test"), "my_set_val": ("my-set", "val"), "xview_trainval": ("xview", "trainval")}


def test_a_second_import_of_the_same_file_is_a_no_op_and_options_count(tmp_path, ntu_file):
    path, _ = ntu_file
    assert import_pyskl(path, tmp_path / "out")["up_to_date"] is False
    assert import_pyskl(path, tmp_path / "out")["up_to_date"] is True
    assert import_pyskl(path, tmp_path / "out", normalise=False)["up_to_date"] is False
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["preprocessing"]["normalised"] is False
