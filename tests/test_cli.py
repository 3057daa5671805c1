import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


def _command_paths(parser, prefix=()):
    """Every command path of the parser: (), ("prepare",), ("prepare", "ntu60"), ..."""
    import argparse

    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from _command_paths(subparser, prefix + (name,))


def test_help_of_every_command_and_subcommand(capsys):
    from usdrl.cli import build_parser

    paths = list(_command_paths(build_parser()))
    assert ("prepare", "ntu60") in paths and ("detect", "evaluate") in paths and ("finetune",) in paths
    for path in paths:
        with pytest.raises(SystemExit) as stop:
            main([*path, "--help"])
        assert stop.value.code == 0, path
        assert capsys.readouterr().out.startswith("usage: usdrl"), path


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder nobody may write)")
@pytest.mark.parametrize("command", [["import", "arrays", "POSES", "--out", "/proc/usdrl_out"],
                                     ["inspect", "DATA", "--no-figure", "--json", "/proc/usdrl_out/summary.json"]])
def test_an_unwritable_output_is_one_clear_line(tmp_path, command):
    x = np.random.default_rng(0).normal(size=(2, 3, 10, 25, 2)).astype(np.float32)
    np.savez(tmp_path / "poses.npz", x=x, label=np.array([0, 1]))
    assert main(["import", "arrays", str(tmp_path / "poses.npz"), "--out", str(tmp_path / "data")]) == 0
    command = [{"POSES": str(tmp_path / "poses.npz"), "DATA": str(tmp_path / "data")}.get(a, a) for a in command]
    process = subprocess.run([sys.executable, "-m", "usdrl.cli", *command], capture_output=True, text=True)
    assert process.returncode == 2
    assert "Traceback" not in process.stderr and len(process.stderr.strip().splitlines()) == 1
    assert process.stderr.startswith(f"usdrl {command[0]}: error: ") and "/proc/usdrl_out" in process.stderr


def test_an_interrupted_detection_run_leaves_no_complete_looking_results(tmp_path, monkeypatch):
    from usdrl.data import DataError
    from usdrl.evaluate import dense

    out = tmp_path / "run"
    dense.replace_proposals([(1, 0, 10, 0.9, "video1")], out / "proposals", out / "results.json")
    (out / "results.json").write_text('{"metrics": "of the first run"}')

    def interrupted(proposals, directory):
        directory.mkdir(parents=True)
        (directory / "video1.txt").write_text("2,0,5,0.5\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(dense, "write_proposals", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dense.replace_proposals([(2, 0, 5, 0.5, "video1")], out / "proposals", out / "results.json")
    # the first run's proposals and results stay together; the partial proposals are not in proposals/
    assert (out / "proposals" / "video1.txt").read_text().startswith("1,0,10,")
    assert (out / "results.json").is_file()
    monkeypatch.undo()
    dense.replace_proposals([(2, 0, 5, 0.5, "video2")], out / "proposals", out / "results.json")
    assert sorted(p.name for p in (out / "proposals").iterdir()) == ["video2.txt"]
    assert not (out / "results.json").exists()  # removed before the new proposals went in; written last by the run
    (out / "proposals" / "notes.md").write_text("mine")
    with pytest.raises(DataError, match="left alone"):
        dense.replace_proposals([], out / "proposals", out / "results.json")
    assert (out / "proposals" / "notes.md").read_text() == "mine"
