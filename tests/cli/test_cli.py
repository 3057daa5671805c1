import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import standing_body, write_skeleton_file

from usdrl.cli.main import main


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
    printed = capsys.readouterr().out  # a few lines for a person; the whole summary with --json
    assert printed.startswith("ntu60 (trimmed, layout ntu25): 3 samples, 60 classes\n") and len(printed.splitlines()) <= 8
    assert "splits: xsub/train 3, xsub/test 0, xview/train 2, xview/test 1" in printed and "{" not in printed
    assert main(["inspect", str(tmp_path / "ntu"), "--no-figure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {key: value for key, value in summary.items() if key != "figure"}


def test_inspect_draws_in_the_working_directory_and_a_later_prepare_accepts_the_folder(tmp_path, capsys, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "data" / "ntu"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for action in (1, 2):
        write_skeleton_file(raw / f"S001C001P001R001A00{action}.skeleton", [[b] for b in standing_body(rng, 12)])
    assert main(["prepare", "ntu60", "--raw", str(raw), "--out", str(out), "--quiet", "--workers", "1"]) == 0
    before = sorted(path.name for path in out.iterdir())
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert main(["inspect", str(out)]) == 0
    assert f"figure: {tmp_path / 'work' / 'inspect_ntu.png'}" in capsys.readouterr().out
    assert (tmp_path / "work" / "inspect_ntu.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(path.name for path in out.iterdir()) == before  # nothing written into the dataset
    write_skeleton_file(raw / "S001C001P001R001A003.skeleton", [[b] for b in standing_body(rng, 12)])
    assert main(["prepare", "ntu60", "--raw", str(raw), "--out", str(out), "--quiet", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3


def test_bad_input_exits_non_zero_with_one_clear_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S001C001P001R001A001.skeleton").write_text("3\n1\n")
    process = subprocess.run([sys.executable, "-m", "usdrl.cli.main", "prepare", "ntu60", "--raw", str(raw), "--out",
                              str(tmp_path / "out"), "--quiet"], capture_output=True, text=True)
    assert process.returncode == 2
    assert "S001C001P001R001A001.skeleton" in process.stderr and "truncated" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "out").exists()
    process = subprocess.run([sys.executable, "-m", "usdrl.cli.main", "inspect", str(tmp_path / "nothing")],
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
    from usdrl.cli.main import build_parser

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
    process = subprocess.run([sys.executable, "-m", "usdrl.cli.main", *command], capture_output=True, text=True)
    assert process.returncode == 2
    assert "Traceback" not in process.stderr and len(process.stderr.strip().splitlines()) == 1
    assert process.stderr.startswith(f"usdrl {command[0]}: error: ") and "/proc/usdrl_out" in process.stderr


def test_an_interrupted_detection_run_leaves_no_complete_looking_results(tmp_path, monkeypatch):
    from usdrl.data.errors import DataError
    from usdrl.evaluate import detector

    out = tmp_path / "run"
    detector.replace_proposals([(1, 0, 10, 0.9, "video1")], out / "proposals", out / "results.json")
    (out / "results.json").write_text('{"metrics": "of the first run"}')

    def interrupted(proposals, directory):
        directory.mkdir(parents=True)
        (directory / "video1.txt").write_text("2,0,5,0.5\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(detector, "write_proposals", interrupted)
    with pytest.raises(KeyboardInterrupt):
        detector.replace_proposals([(2, 0, 5, 0.5, "video1")], out / "proposals", out / "results.json")
    # the first run's proposals and results stay together; the partial proposals are not in proposals/
    assert (out / "proposals" / "video1.txt").read_text().startswith("1,0,10,")
    assert (out / "results.json").is_file()
    monkeypatch.undo()
    detector.replace_proposals([(2, 0, 5, 0.5, "video2")], out / "proposals", out / "results.json")
    assert sorted(p.name for p in (out / "proposals").iterdir()) == ["video2.txt"]
    assert not (out / "results.json").exists()  # removed before the new proposals went in; written last by the run
    (out / "proposals" / "notes.md").write_text("mine")
    with pytest.raises(DataError, match="left alone"):
        detector.replace_proposals([], out / "proposals", out / "results.json")
    assert (out / "proposals" / "notes.md").read_text() == "mine"


def test_single_output_files_of_the_user_are_refused_unless_overwrite(synthetic, tmp_path, capsys, one_thread):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    settings = ["--set=model.hidden_size=16", "--set=model.num_layers=1", "--set=evaluation.device=cpu",
                "--set=probe.epochs=1", f"--set=evaluation.cache_dir={tmp_path / 'cache'}"]
    probe = ["probe", "--data", str(synthetic), "--benchmark", "xview", "--checkpoint", "random", "--quiet", *settings]
    refused = {
        "probe": probe + ["--out", str(notes)],
        "retrieve": ["retrieve", *probe[1:], "--out", str(notes)],
        "ensemble": ["ensemble", str(tmp_path / "a.scores.npz"), "--out", str(notes)],
        "embed": ["embed", "--model", str(tmp_path / "bundle"), str(synthetic), "--out", str(notes)],
        "convert-checkpoint": ["convert-checkpoint", str(tmp_path / "old.pt"), "--out", str(notes)],
        "inspect": ["inspect", str(synthetic), "--no-figure", "--json", str(notes)],
    }
    for name, command in refused.items():
        assert main(command) == 2, name
        error = capsys.readouterr().err
        assert error.startswith(f"usdrl {name}: error: ") and str(notes) in error and "--overwrite" in error, name
        assert len(error.strip().splitlines()) == 1 and notes.read_text() == '{"mine": 1}', name
    (tmp_path / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a picture of the user's
    assert main(["inspect", str(synthetic), "--figure", str(tmp_path / "figure.png")]) == 2
    assert "--figure" in capsys.readouterr().err and (tmp_path / "figure.png").read_bytes() == b"\x89PNG\r\n\x1a\n"
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "linear.md").write_text("my notes\n")
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tables)]) == 2
    assert "linear.md" in capsys.readouterr().err and sorted(p.name for p in tables.iterdir()) == ["linear.md"]
    # --overwrite replaces the user's file; a file usdrl wrote is replaced without it
    out = tmp_path / "probe.json"
    out.write_text('{"mine": 1}')
    assert main(probe + ["--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["protocol"] == "linear_probe"
    assert main(probe + ["--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tables), "--overwrite"]) == 0
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tables)]) == 0
    assert main(["inspect", str(synthetic), "--figure", str(tmp_path / "figure.png"), "--overwrite"]) == 0
    assert main(["inspect", str(synthetic), "--figure", str(tmp_path / "figure.png")]) == 0


def test_evaluations_print_accuracies_in_percent_and_the_whole_result_with_json(synthetic, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml: the package defaults
    settings = ["--set", "model.hidden_size=16", "--set", "model.num_layers=1", "--set", "probe.epochs=1",
                "--set", f"evaluation.cache_dir={tmp_path / 'cache'}"]
    probe = ["probe", "--data", str(synthetic), "--benchmark", "xview", "--checkpoint", "random", "--quiet", *settings]
    capsys.readouterr()
    assert main([*probe, "--out", str(tmp_path / "probe.json")]) == 0
    printed = capsys.readouterr().out
    top1 = json.loads((tmp_path / "probe.json").read_text())["metrics"]["top1"]  # the results file: fractions
    assert printed == (f"usdrl probe: top-1 {100 * top1:.2f}%, top-5 "
                       f"{100 * json.loads((tmp_path / 'probe.json').read_text())['metrics']['top5']:.2f}% "
                       f"-> {tmp_path / 'probe.json'} (all of it: --json)\n")
    assert main([*probe, "--out", str(tmp_path / "probe.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["top1"] == top1
    labels = np.array([0, 1, 2, 0])
    for name, scores in (("a", np.eye(3)[labels]), ("b", 0.5 * np.eye(3)[[0, 1, 1, 0]])):  # a outweighs b
        np.savez(tmp_path / f"{name}.scores.npz", scores=scores, labels=labels)
    assert main(["ensemble", str(tmp_path / "a.scores.npz"), str(tmp_path / "b.scores.npz"), "--out", "3s.json"]) == 0
    assert capsys.readouterr().out == ("usdrl ensemble: top-1 100.00% (streams: 100.00%, 75.00%) -> 3s.json "
                                       "(all of it: --json)\n")
