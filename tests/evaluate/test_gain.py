"""Did pretraining help? The held-out check after pretraining (usdrl.evaluate.gain): folds of whole training
subjects, never the test split, the spread over seeds, and the likely reason when it did not help."""

from __future__ import annotations

import json

import numpy as np
from conftest import REPOSITORY

from usdrl.cli.main import main
from usdrl.data.store import load_split
from usdrl.evaluate.gain import likely_reason, subject_folds


def test_folds_hold_whole_training_subjects_and_cover_every_clip(synthetic):
    train = load_split(synthetic, "xview", "train")
    subjects = train.ids["subject"]
    for seed in (0, 1):
        folds = subject_folds(train.label, subjects, seed)
        assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(len(train)))
        owners = [set(subjects[fold]) for fold in folds]
        assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:])  # no subject in two folds
    assert [list(f) for f in subject_folds(train.label, subjects, 0)] != [list(f) for f in
                                                                          subject_folds(train.label, subjects, 1)]


def test_the_likely_reason_names_the_setting_to_change():
    history = [{"total": 10.0}, {"total": 8.0}]
    few = {"pretrain": {"epochs": 2, "batch_size": 64}, "data": {"samples": 300}, "augment": {"minimum_crop": 8}}
    assert "too few optimiser steps (8)" in likely_reason(few, history, np.full(300, 30))
    uncropped = {"pretrain": {"epochs": 100, "batch_size": 32}, "data": {"samples": 300},
                 "augment": {"minimum_crop": 64}}
    assert "augment.minimum_crop=auto" in likely_reason(uncropped, history, np.full(300, 30))
    flat = {**uncropped, "augment": {"minimum_crop": 8}}
    assert "lower pretrain.learning_rate" in likely_reason(flat, [{"total": 8.0}, {"total": 9.0}], np.full(300, 30))


def test_pretrain_prints_whether_pretraining_helped_on_held_out_training_subjects(synthetic, tmp_path, capsys,
                                                                                   one_thread):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(synthetic), "--benchmark", "xview", "--out", str(out), "--params",
                 str(REPOSITORY / "params.yaml"), "--profile", "demo", "--epochs", "1", "--batch-size", "16",
                 "--quiet", "--set", "model.hidden_size=16", "--set", "pretrain.gain_check_seeds=2",
                 "--set", "probe.epochs=5", "--set", f"evaluation.cache_dir={tmp_path / 'cache'}"]) == 0
    captured = capsys.readouterr()
    gain = json.loads(captured.out)["gain"]
    assert [row["seed"] for row in gain["seeds"]] == [0, 1] and "never the test split" in gain["held_out"]
    for name in ("probe", "knn1"):
        differences = [row[name] - row[f"{name}_random"] for row in gain["seeds"]]
        assert np.isclose(gain[name]["gain_mean"], np.mean(differences))
        assert np.isclose(gain[name]["gain_std"], np.std(differences, ddof=1))
    assert gain["helped"] == (gain["probe"]["gain_mean"] > 0 and gain["knn1"]["gain_mean"] > 0)
    assert (gain["reason"] is None) == gain["helped"]
    line = [text for text in captured.err.splitlines() if "pretrained minus random init" in text]
    assert len(line) == 1 and "2 seeds" in line[0]
