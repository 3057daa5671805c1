"""usdrl ensemble: fewer than two score files, or weights that do not match them, are one clear line (exit 2)."""

import numpy as np
import pytest

from usdrl.cli.main import main


@pytest.mark.parametrize("extra, message", [
    ([], "an ensemble sums the scores of two or more streams; got only "),
    (["B", "--weights", "1", "2", "3"], "3 weights for 2 score files"),
])
def test_one_score_file_or_odd_weights_are_a_clear_error(tmp_path, capsys, extra, message):
    labels = np.array([0, 1, 2])
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.scores.npz", scores=np.eye(3)[labels], labels=labels)
    extra = [str(tmp_path / "b.scores.npz") if argument == "B" else argument for argument in extra]
    out = tmp_path / "3s.json"
    assert main(["ensemble", str(tmp_path / "a.scores.npz"), *extra, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("usdrl ensemble: error: ") and message in error
    assert len(error.strip().splitlines()) == 1 and not out.exists()
    assert main(["ensemble", str(tmp_path / "a.scores.npz"), str(tmp_path / "b.scores.npz"), "--out", str(out)]) == 0


class Malicious:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code from the score file ran')",)


def _bad_score_files(folder, marker):
    import pickle
    import zipfile

    import torch

    good = folder / "good.scores.npz"
    np.savez(good, scores=np.eye(3), labels=np.arange(3))
    (folder / "empty.npz").write_bytes(b"")
    (folder / "text.npz").write_text("scores: 1 2 3\n")
    (folder / "truncated.npz").write_bytes(good.read_bytes()[:200])
    (folder / "random.npz").write_bytes(np.random.default_rng(0).bytes(1000))
    evil = np.empty(3, dtype=object)
    evil[0] = Malicious(marker)
    np.savez(folder / "objects.npz", scores=evil, labels=np.arange(3))
    with zipfile.ZipFile(folder / "raw_pickle.npz", "w") as archive:
        archive.writestr("scores.npy", pickle.dumps(Malicious(marker)))
        archive.writestr("labels.npy", pickle.dumps(Malicious(marker)))
    np.savez(folder / "no_scores.npz", labels=np.arange(3))
    np.savez(folder / "flat_scores.npz", scores=np.arange(3.0), labels=np.arange(3))
    np.savez(folder / "short_labels.npz", scores=np.eye(3), labels=np.arange(2))
    torch.save({"scores": torch.eye(3)}, folder / "model.pt")
    (folder / "folder.scores.npz").mkdir()
    return good, {
        "empty.npz": "is not a .npz archive", "text.npz": "is not a .npz archive",
        "random.npz": "is not a .npz archive",
        "truncated.npz": "is not a score file of usdrl probe", "objects.npz": "Object arrays cannot be loaded",
        "raw_pickle.npz": "has no numeric 'scores' array", "no_scores.npz": "has no numeric 'scores' array",
        "flat_scores.npz": "has no numeric 'scores' array of 2 dimension(s)",
        "short_labels.npz": "2 labels for 3 rows of scores", "model.pt": "has no numeric 'scores' array",
        "folder.scores.npz": "is a folder; pass the <out>.scores.npz file"}


def test_a_bad_score_file_is_one_line_naming_it_and_never_runs_code(tmp_path, capsys):
    marker = tmp_path / "marker"
    good, bad = _bad_score_files(tmp_path, marker)
    out = tmp_path / "3s.json"
    for name, message in bad.items():
        assert main(["ensemble", str(good), str(tmp_path / name), "--out", str(out)]) == 2, name
        error = capsys.readouterr().err
        assert error.startswith("usdrl ensemble: error: ") and len(error.strip().splitlines()) == 1, error
        assert f"{tmp_path / name}" in error and message in error, error
    assert not marker.exists() and not out.exists()


def test_an_existing_folder_as_out_is_refused_before_writing(tmp_path, capsys):
    labels = np.array([0, 1, 2])
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.scores.npz", scores=np.eye(3)[labels], labels=labels)
    (tmp_path / "3s.json").mkdir()
    assert main(["ensemble", str(tmp_path / "a.scores.npz"), str(tmp_path / "b.scores.npz"), "--out",
                 str(tmp_path / "3s.json")]) == 2
    assert "3s.json is a folder" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["3s.json", "a.scores.npz", "b.scores.npz"]


def test_the_defaults_come_from_the_ensemble_section(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    labels = np.array([0, 1, 2])
    for name, scores in (("a", np.eye(3)[labels]), ("b", np.eye(3)[[1, 2, 0]] * 0.6), ("c", np.eye(3)[[1, 2, 0]] * 0.6)):
        np.savez(tmp_path / f"{name}.scores.npz", scores=scores, labels=labels)
    files = [str(tmp_path / f"{name}.scores.npz") for name in "abc"]
    assert main(["ensemble", *files, "--out", "equal.json"]) == 0  # no params.yaml: the package defaults
    metrics = json.loads((tmp_path / "equal.json").read_text())["metrics"]
    assert metrics["weights"] == [1.0, 1.0, 1.0] and metrics["normalise"] == "none" and metrics["top1"] == 0.0
    (tmp_path / "params.yaml").write_text("ensemble: {weights: [2.0, 1.0, 1.0], normalise: softmax}\n")
    assert main(["ensemble", *files, "--out", "weighted.json"]) == 0
    metrics = json.loads((tmp_path / "weighted.json").read_text())["metrics"]
    assert metrics["weights"] == [2.0, 1.0, 1.0] and metrics["normalise"] == "softmax" and metrics["top1"] == 1.0
    assert main(["ensemble", *files, "--normalise", "none", "--weights", "1", "1", "1", "--out", "flags.json"]) == 0
    assert json.loads((tmp_path / "flags.json").read_text())["metrics"]["normalise"] == "none"  # flags win
    assert main(["ensemble", *files[:2], "--out", "two.json"]) == 2  # unequal weights, another number of streams
    error = capsys.readouterr().err
    assert "2 score files, but ensemble.streams lists 3" in error and len(error.strip().splitlines()) == 1
