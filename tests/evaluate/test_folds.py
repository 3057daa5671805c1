"""Cross-validation folds: UTKinect's leave-one-subject-out benchmarks, mean and spread over the folds."""

import json

import pytest
from conftest import REPOSITORY, shared_path

from usdrl.cli.main import main
from usdrl.data.errors import DataError
from usdrl.evaluate.folds import fold_benchmarks

TINY = ["--set", "pretrain.minimum_steps=0", "--set", "pretrain.gain_check_seeds=0", "--set", "detection.minimum_steps=0",
        "--set", "model.hidden_size=16", "--set", "model.num_layers=1", "--set", "pretrain.epochs=1",
        "--set", "pretrain.batch_size=16", "--set", "probe.epochs=2"]


@pytest.fixture(scope="module")
def utkinect(tmp_path_factory):
    raw = shared_path() / "data" / "utkinect"
    if not (raw / "actionLabel.txt").is_file():
        pytest.skip(f"UTKinect files {raw} are absent")
    out = tmp_path_factory.mktemp("data") / "utkinect"
    assert main(["prepare", "utkinect", "--raw", str(raw), "--out", str(out), "--quiet"]) == 0
    return out / "actions"


def test_leave_one_subject_out_runs_every_fold_and_reports_mean_and_spread(utkinect, tmp_path, capsys):
    assert fold_benchmarks(utkinect, "loso") == [f"loso{k}" for k in range(1, 11)]
    arguments = ["folds", "--data", str(utkinect), "--folds", "loso1", "loso2", "--out", str(tmp_path / "loso"),
                 "--params", str(REPOSITORY / "params.yaml"), "--profile", "demo", "--quiet", *TINY,
                 "--set", f"evaluation.cache_dir={tmp_path / 'cache'}"]
    assert main(arguments) == 0
    summary = json.loads((tmp_path / "loso/summary.json").read_text())
    assert [row["fold"] for row in summary["folds"]] == ["loso1", "loso2"]
    for name in ("pretrained", "random_init"):
        values = [row[name]["top1"] for row in summary["folds"]]
        assert summary["summary"][name]["top1"]["mean"] == pytest.approx(sum(values) / 2)
        assert summary["summary"][name]["top1"]["min"] == min(values)
    probe = json.loads((tmp_path / "loso/loso1/probe_pretrained.json").read_text())
    assert probe["provenance"]["samples"] == {"train": 179, "test": 20}  # subject 1 held out
    capsys.readouterr()
    assert main(arguments) == 0  # finished folds resume to their end at once: same numbers
    assert json.loads((tmp_path / "loso/summary.json").read_text())["folds"] == summary["folds"]


def test_a_dataset_without_the_folds_is_a_clear_error(utkinect):
    with pytest.raises(DataError, match="no lososo1.*its benchmarks: .*xsub"):
        fold_benchmarks(utkinect, "lososo")
