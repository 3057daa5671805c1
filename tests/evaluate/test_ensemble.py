"""usdrl ensemble: fewer than two score files, or weights that do not match them, are one clear line (exit 2)."""

import numpy as np
import pytest

from usdrl.cli import main


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
