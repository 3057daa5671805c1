"""--out of every prepare / import: nothing the user owns is deleted or moved (usdrl.data.store.DatasetWriter)."""

import json

import numpy as np
import pytest

from conftest import standing_body, write_skeleton_file
from usdrl.cli import main
from usdrl.data import DataError, load_split
from usdrl.data.store import DatasetWriter, MANIFEST_NAME


@pytest.fixture
def arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 3, 20, 25, 2)).astype(np.float32)
    path = tmp_path / "poses.npz"
    np.savez(path, x=x, label=np.array([0, 1, 0, 1]), split_xsub_train=np.arange(3), split_xsub_test=np.array([3]))
    return path


def _import(arrays, out):
    return main(["import", "arrays", str(arrays), "--out", str(out)])


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_folder_that_is_not_a_dataset_is_left_alone(tmp_path, arrays, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert _import(arrays, out) == 2
    error = capsys.readouterr().err
    assert str(out) in error and "left alone" in error and len(error.strip().splitlines()) == 1
    assert _listing(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"
    assert _listing(tmp_path) == sorted(["poses.npz", "mine", "mine/notes.txt"])  # no .tmp-/.old- left behind


def test_prepare_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_skeleton_file(raw / "S001C001P001R001A001.skeleton", [[b] for b in standing_body(np.random.default_rng(0), 12)])
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert main(["prepare", "ntu60", "--raw", str(raw), "--out", str(out), "--quiet", "--workers", "1"]) == 2
    assert "left alone" in capsys.readouterr().err
    assert _listing(out) == ["notes.txt"]


def test_an_existing_file_is_left_alone(tmp_path, arrays, capsys):
    out = tmp_path / "dataset"
    out.write_text("a file of mine")
    assert _import(arrays, out) == 2
    error = capsys.readouterr().err
    assert "existing file" in error and "Traceback" not in error
    assert out.read_text() == "a file of mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "poses.npz"]
    assert _import(arrays, out / "inside") == 2  # a file where a parent folder belongs
    assert "is a file" in capsys.readouterr().err and out.read_text() == "a file of mine"


def test_our_own_dataset_is_replaced_and_said_so(tmp_path, arrays, capsys):
    out = tmp_path / "dataset"
    assert _import(arrays, out) == 0
    assert "replacing" not in capsys.readouterr().err
    (out / "manifest.json").write_text(json.dumps({**json.loads((out / "manifest.json").read_text()),
                                                   "input_fingerprint": "changed"}))  # not up to date
    assert _import(arrays, out) == 0
    assert f"replacing the dataset in {out}" in capsys.readouterr().err
    assert len(load_split(out, "xsub", "train")) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _import(arrays, empty) == 0 and (empty / MANIFEST_NAME).is_file()


def test_a_folder_of_our_datasets_is_ours(tmp_path, arrays):
    """``usdrl prepare synthetic --out X`` writes X/actions and X/streams: X holds no manifest but is ours."""
    root = tmp_path / "synthetic"
    for name in ("actions", "streams"):
        assert _import(arrays, root / name) == 0
    assert _import(arrays, root) == 0
    assert (root / MANIFEST_NAME).is_file() and not (root / "actions").exists()
    mixed = tmp_path / "mixed"  # our dataset beside a file of the user's: not ours as a whole
    assert _import(arrays, mixed / "actions") == 0
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="left alone"):
        with DatasetWriter(mixed):
            pass
    assert (mixed / "notes.txt").read_text() == "mine" and (mixed / "actions" / MANIFEST_NAME).is_file()
