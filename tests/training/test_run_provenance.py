"""A run's record never claims data it was not trained on: resuming or re-running a finished run on data that
changed is refused, naming both fingerprints and how to start over."""

from __future__ import annotations

import json

import pytest

from usdrl.cli.main import main
from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
from usdrl.settings.sections import ModelSection, PretrainSection
from usdrl.training.loop import TrainingError
from usdrl.training.pretrain import pretrain

TINY = ModelSection(hidden_size=16, clip_frames=16)


def _prepare(root, seed: int):
    prepare_synthetic(root, SyntheticConfig(subjects=3, replications=1, training_subjects=(1, 2),
                                            streams_per_subject_camera=1, seed=seed))
    return root / "actions"


def test_a_finished_run_on_data_that_changed_is_refused(tmp_path, capsys, one_thread):
    data = _prepare(tmp_path / "data", seed=0)
    settings = PretrainSection(epochs=1, batch_size=16, device="cpu", precision="fp32", workers=0, log_every=0)
    run = tmp_path / "run"
    pretrain(data, "xview", run, TINY, settings=settings, progress=False)
    before = json.loads((run / "run.json").read_text())
    old = before["data"]["manifest_fingerprint"]
    _prepare(tmp_path / "data", seed=1)  # prepared again from other input: a new fingerprint
    new = json.loads((data / "manifest.json").read_text())["input_fingerprint"]
    assert new != old
    with pytest.raises(TrainingError, match="trained on other data") as refused:
        pretrain(data, "xview", run, TINY, settings=settings, resume=True, progress=False)
    assert f"manifest_fingerprint {old} (now {new})" in str(refused.value) and "--out NEW" in str(refused.value)
    assert json.loads((run / "run.json").read_text()) == before  # the record is left as it was
    capsys.readouterr()
    assert main(["pretrain", "--data", str(data), "--benchmark", "xview", "--out", str(run), "--resume",
                 "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--set", "model.hidden_size=16",
                 "--set", "model.clip_frames=16", "--set", "pretrain.workers=0", "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "trained on other data" in error[0] and old in error[0] and new in error[0]
