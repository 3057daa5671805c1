"""--out of every prepare / import: nothing the user owns is deleted or moved (usdrl.data.store.DatasetWriter)."""

import json

import numpy as np
import pytest
from conftest import standing_body, write_skeleton_file

from usdrl.cli.main import main
from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.errors import DataError
from usdrl.data.store import load_split
from usdrl.data.writer import DatasetWriter, check_output_folder


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


def _refused(arrays, out, capsys, *expected):
    """The import into ``out`` exits 2 with one line holding each of ``expected``, and no .tmp-/.old- is left."""
    assert _import(arrays, out) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error, error
    for text in expected:
        assert text in error, error
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_another_tools_folder_with_a_manifest_is_left_alone(tmp_path, arrays, capsys):
    out = tmp_path / "extension"
    out.mkdir()
    (out / MANIFEST_NAME).write_text('{"manifest_version": 3}')
    (out / "background.js").write_text("code")
    _refused(arrays, out, capsys, f"{out / MANIFEST_NAME} (not a usdrl manifest) is in the way", "left alone")
    assert _listing(out) == ["background.js", "manifest.json"] and (out / "background.js").read_text() == "code"


def test_a_parent_of_datasets_is_left_alone(tmp_path, arrays, capsys):
    data = tmp_path / "data"
    for name in ("a", "b"):
        assert _import(arrays, data / name) == 0
    before = _listing(data)
    _refused(arrays, data, capsys, f"{data / 'a'} is in the way")
    assert _listing(data) == before and len(load_split(data / "b", "xsub", "train")) == 3


def test_a_file_of_the_users_inside_our_dataset_is_kept(tmp_path, arrays, capsys):
    out = tmp_path / "dataset"
    assert _import(arrays, out) == 0
    (out / "my_notes.txt").write_text("mine")
    np.savez(arrays, x=np.zeros((2, 3, 20, 25, 2), np.float32), label=np.array([0, 1]))  # other input: not up to date
    _refused(arrays, out, capsys, f"{out / 'my_notes.txt'} is in the way")
    assert (out / "my_notes.txt").read_text() == "mine" and len(load_split(out, "xsub", "train")) == 3
    (out / "my_notes.txt").unlink()
    (out / "splits" / "notes.txt").write_text("mine")
    _refused(arrays, out, capsys, str(out / "splits" / "notes.txt"))


def test_an_input_inside_out_is_refused(tmp_path, arrays, capsys):
    out = tmp_path / "dataset"
    assert _import(arrays, out) == 0
    source = out / "source.npz"
    source.write_bytes(arrays.read_bytes())
    _refused(source, out, capsys, f"--out {out} holds the input {source}")
    assert source.read_bytes() == arrays.read_bytes() and (out / MANIFEST_NAME).is_file()


def test_a_symbolic_link_as_out_is_refused(tmp_path, arrays, capsys):
    target = tmp_path / "target"
    assert _import(arrays, target) == 0
    link = tmp_path / "link"
    link.symlink_to(target)
    np.savez(arrays, x=np.zeros((2, 3, 20, 25, 2), np.float32), label=np.array([0, 1]))  # other input: not up to date
    _refused(arrays, link, capsys, f"--out {link} is a symbolic link")
    assert link.is_symlink() and len(load_split(target, "xsub", "train")) == 3


@pytest.mark.parametrize("out", [".", "", ".."])
def test_the_current_folder_as_out_is_a_clear_error(tmp_path, arrays, capsys, monkeypatch, out):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["import", "arrays", str(arrays), "--out", out]) == 2
    error = capsys.readouterr().err
    assert "names no new folder" in error and len(error.strip().splitlines()) == 1
    assert _listing(tmp_path) == ["poses.npz", "work"]


def test_prepare_synthetic_checks_both_folders_before_writing(tmp_path, capsys):
    root = tmp_path / "synthetic"
    (root / "streams").mkdir(parents=True)
    (root / "streams" / "mine.txt").write_text("mine")
    assert main(["prepare", "synthetic", "--out", str(root)]) == 2
    assert f"{root / 'streams' / 'mine.txt'} is in the way" in capsys.readouterr().err
    assert _listing(root) == ["streams", "streams/mine.txt"]  # no actions/ written


def test_only_what_the_writer_makes_is_ours(tmp_path):
    out = tmp_path / "dataset"
    with pytest.raises(ValueError, match="DATASET_FILES"):
        with DatasetWriter(out) as writer:
            writer.path("notes.txt")
    assert not tmp_path.exists() or _listing(tmp_path) == []
    for kind, expected in (("trimmed", True), ("other", False)):  # a manifest of ours names our kind
        out.mkdir(exist_ok=True)
        (out / MANIFEST_NAME).write_text(json.dumps({"format_version": 1, "kind": kind, "layout": {}}))
        if expected:
            assert check_output_folder(out)
        else:
            with pytest.raises(DataError, match="not a usdrl manifest"):
                check_output_folder(out)
