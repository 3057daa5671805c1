import json

import numpy as np
import pytest
from conftest import standing_body, write_skeleton_file

from usdrl.data.errors import DataError
from usdrl.data.ntu import prepare_ntu, read_missing_list, read_skeleton_file, select_bodies
from usdrl.data.store import load_split

SAMPLE_FRAMES = {"A001": 103, "A002": 158, "A003": 104, "A004": 99, "A005": 54}


def test_real_samples_shape_frames_and_scale(shared):
    folder = shared / "data" / "ntu_samples"
    for action, frames in SAMPLE_FRAMES.items():
        bodies = read_skeleton_file(folder / f"S001C001P001R001{action}.skeleton")
        assert bodies.shape == (4, frames, 25, 3)
        assert np.all(bodies[1:] == 0)  # single person
        assert 1.0 < np.median(bodies[0, :, :, 2]) < 5.0  # metres from the camera
        assert np.abs(bodies[0]).max() < 5.0


def test_real_samples_prepared_and_normalised(shared, tmp_path):
    folder = shared / "data" / "ntu_samples"
    result = prepare_ntu("ntu60", folder, tmp_path / "ntu60", folder / "NTU_RGBD_samples_with_missing_skeletons.txt",
                         progress=False, workers=1)
    assert result["samples"] == 5
    split = load_split(tmp_path / "ntu60", "xsub", "train")  # performer 1 trains in cross-subject
    assert list(split.num_frames) == list(SAMPLE_FRAMES.values())
    assert list(split.label) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="empty"):
        load_split(tmp_path / "ntu60", "xsub", "test")
    assert len(load_split(tmp_path / "ntu60", "xview", "test")) == 5  # camera 1 tests in cross-view
    for position in range(5):
        x = split.sample(position)
        assert x.shape == (3, 300, 25, 2) and x.dtype == np.float32
        valid = x[:, :split.num_frames[position], :, 0]
        np.testing.assert_allclose(valid[:, :, 1], 0, atol=1e-6)  # joint 2 of body 1 at the origin
        shoulders = x[:, 0, 8, 0] - x[:, 0, 4, 0]
        np.testing.assert_allclose(shoulders[1:], 0, atol=1e-5)  # first frame's shoulders along x
        assert shoulders[0] > 0.2
        assert np.abs(x).max() < 2.0
        assert np.all(x[:, :, :, 1] == 0)
    manifest = json.loads((tmp_path / "ntu60" / "manifest.json").read_text())
    assert manifest["counts"]["xsub/train"]["total"] == 5
    assert len(json.loads((tmp_path / "ntu60" / "sources.json").read_text())) == 5


def test_missing_list_parses_official_file(shared):
    names = read_missing_list(shared / "data" / "ntu_samples" / "NTU_RGBD_samples_with_missing_skeletons.txt")
    assert len(names) == 302 and "S001C002P005R002A008" in names


def _two_body_dataset(folder, rng):
    write_skeleton_file(folder / "S001C001P001R001A050.skeleton",
                        [[a, b] for a, b in zip(standing_body(rng, 20), standing_body(rng, 20, offset=(1, 0, 3)))])
    # four bodies, two of them still: energy keeps the moving ones
    moving_a, moving_b = standing_body(rng, 20, 0.2), standing_body(rng, 20, 0.3, offset=(1, 0, 3))
    still_a, still_b = standing_body(rng, 20, 0.0, offset=(-1, 0, 4)), standing_body(rng, 20, 0.0, offset=(2, 0, 4))
    write_skeleton_file(folder / "S001C002P002R001A051.skeleton",
                        [[s, m, t, n] for s, m, t, n in zip(still_a, moving_a, still_b, moving_b)])
    # empty frames at the start and a body appearing late
    late = standing_body(rng, 12)
    first = standing_body(rng, 30)
    frames = [[] for _ in range(3)] + [[first[t]] for t in range(15)] + [[first[t], late[t - 15]] for t in range(15, 27)]
    write_skeleton_file(folder / "S001C003P003R001A001.skeleton", frames)
    # no skeleton at all: excluded and reported
    write_skeleton_file(folder / "S002C001P004R001A002.skeleton", [[] for _ in range(10)])


def test_written_files_body_selection_empty_frames_and_late_bodies(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    _two_body_dataset(raw, rng)
    bodies = read_skeleton_file(raw / "S001C002P002R001A051.skeleton")
    kept = select_bodies(bodies)  # (C, T, V, M)
    np.testing.assert_allclose(kept[..., 0], bodies[3].transpose(2, 0, 1), atol=1e-5)  # highest energy first
    np.testing.assert_allclose(kept[..., 1], bodies[1].transpose(2, 0, 1), atol=1e-5)
    result = prepare_ntu("ntu60", raw, tmp_path / "out", progress=False, workers=2, chunk_size=1)
    assert result == {"up_to_date": False, "out": str(tmp_path / "out"), "samples": 3, "excluded": 1, "skipped": 0}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["excluded"] == [{"name": "S002C001P004R001A002", "reason": "no skeleton in any frame"}]
    split = load_split(tmp_path / "out", "xview", "train")
    assert split.names == ["S001C002P002R001A051", "S001C003P003R001A001"]
    late_sample = split.sample(1)
    assert split.num_frames[1] == 30
    # the empty leading frames were moved away: frame 1 holds body 1 centred on joint 2
    np.testing.assert_allclose(late_sample[:, 0, 1, 0], 0, atol=1e-6)
    assert np.all(np.any(late_sample[..., 0] != 0, axis=(0, 2)))  # every frame filled by repetition
    assert np.any(late_sample[..., 1] != 0)
    # two-person sample keeps both persons
    two = load_split(tmp_path / "out", "xview", "test")
    assert np.any(two.sample(0)[..., 1] != 0)


def test_rerun_is_a_noop_and_changes_are_noticed(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "raw"
    raw.mkdir()
    _two_body_dataset(raw, rng)
    prepare_ntu("ntu60", raw, tmp_path / "out", progress=False, workers=1)
    stamp = (tmp_path / "out" / "x.npy").stat().st_mtime_ns
    assert prepare_ntu("ntu60", raw, tmp_path / "out", progress=False, workers=1)["up_to_date"]
    assert (tmp_path / "out" / "x.npy").stat().st_mtime_ns == stamp
    write_skeleton_file(raw / "S001C001P001R001A001.skeleton", [[b] for b in standing_body(rng, 8)])
    assert not prepare_ntu("ntu60", raw, tmp_path / "out", progress=False, workers=1)["up_to_date"]


def _corrupt(text: str, kind: str) -> str:
    lines = text.split("\n")
    if kind == "truncated":
        return "\n".join(lines[:40])
    if kind == "joint_count":
        lines[3] = "24"
    elif kind == "value_count":
        lines[10] = " ".join(lines[10].split()[:11])
    elif kind == "text":
        lines[10] = lines[10].replace(lines[10].split()[1], "abc", 1)
    elif kind == "nan":
        lines[10] = lines[10].replace(lines[10].split()[0], "nan", 1)
    return "\n".join(lines)


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated"), ("joint_count", r":4: expected 25 joints, found 24"),
    ("value_count", r":11: a joint line needs 12 values, found 11"), ("text", r":11: .*text where a number belongs"),
    ("nan", r":11: a joint line holds NaN or inf"),
])
def test_bad_files_name_file_and_line_and_leave_nothing(tmp_path, kind, message):
    rng = np.random.default_rng(2)
    raw = tmp_path / "raw"
    raw.mkdir()
    good = write_skeleton_file(raw / "S001C001P001R001A001.skeleton", [[b] for b in standing_body(rng, 5)])
    bad = raw / "S001C001P001R001A002.skeleton"
    bad.write_text(_corrupt(good.read_text(), kind))
    with pytest.raises(DataError, match=message) as caught:
        prepare_ntu("ntu60", raw, tmp_path / "out", progress=False, workers=1)
    assert bad.name in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.tmp-*"))
    result = prepare_ntu("ntu60", raw, tmp_path / "out", skip_bad=True, progress=False, workers=1)
    assert result["samples"] == 1 and result["skipped"] == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["skipped"][0]["name"] == bad.stem


def test_missing_list_is_honoured_and_missing_directory_is_clear(tmp_path):
    rng = np.random.default_rng(3)
    raw = tmp_path / "raw"
    raw.mkdir()
    for action in (1, 2):
        write_skeleton_file(raw / f"S001C001P001R001A00{action}.skeleton", [[b] for b in standing_body(rng, 6)])
    missing = tmp_path / "missing.txt"
    missing.write_text("header line\n\nS001C001P001R001A002\n")
    prepare_ntu("ntu60", raw, tmp_path / "out", missing_list=missing, progress=False, workers=1)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_samples"] == 1
    assert manifest["excluded"][0]["reason"] == "in the official missing-skeleton list"
    with pytest.raises(DataError, match="does not exist"):
        prepare_ntu("ntu60", tmp_path / "nowhere", tmp_path / "out2", progress=False)
    with pytest.raises(DataError, match="not an NTU sample name"):
        (raw / "notes.skeleton").write_text("1\n0\n")
        prepare_ntu("ntu60", raw, tmp_path / "out3", progress=False)


def test_the_same_sample_in_two_folders_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    for folder in ("part1", "part2"):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        write_skeleton_file(tmp_path / "raw" / folder / "S001C001P001R001A001.skeleton", [[b] for b in standing_body(rng, 10)])
    write_skeleton_file(tmp_path / "raw" / "part1" / "S001C001P001R001A002.skeleton", [[b] for b in standing_body(rng, 10)])
    with pytest.raises(DataError) as error:
        prepare_ntu("ntu60", tmp_path / "raw", tmp_path / "out", progress=False, workers=1)
    message = str(error.value)
    assert "S001C001P001R001A001" in message
    assert str(tmp_path / "raw" / "part1" / "S001C001P001R001A001.skeleton") in message
    assert str(tmp_path / "raw" / "part2" / "S001C001P001R001A001.skeleton") in message
    assert not (tmp_path / "out").exists()
