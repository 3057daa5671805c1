import json
import subprocess
import sys

import numpy as np

from conftest import standing_body, write_skeleton_file
from usdrl.cli import main


def test_prepare_inspect_and_rerun(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for action in (1, 2, 3):
        write_skeleton_file(raw / f"S001C00{action}P001R001A00{action}.skeleton", [[b] for b in standing_body(rng, 12)])
    assert main(["prepare", "ntu60", "--raw", str(raw), "--out", str(tmp_path / "ntu"), "--quiet", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3
    assert main(["prepare", "ntu60", "--raw", str(raw), "--out", str(tmp_path / "ntu"), "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "ntu"), "--figure", str(tmp_path / "view.png"), "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["splits"] == {"xsub/train": 3, "xsub/test": 0, "xview/train": 2, "xview/test": 1}
    assert summary["frames"]["max"] == 12
    assert (tmp_path / "view.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_exits_non_zero_with_one_clear_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S001C001P001R001A001.skeleton").write_text("3\n1\n")
    process = subprocess.run([sys.executable, "-m", "usdrl.cli", "prepare", "ntu60", "--raw", str(raw), "--out",
                              str(tmp_path / "out"), "--quiet"], capture_output=True, text=True)
    assert process.returncode == 2
    assert "S001C001P001R001A001.skeleton" in process.stderr and "truncated" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "out").exists()
    process = subprocess.run([sys.executable, "-m", "usdrl.cli", "inspect", str(tmp_path / "nothing")],
                             capture_output=True, text=True)
    assert process.returncode == 2 and "prepare it first" in process.stderr
