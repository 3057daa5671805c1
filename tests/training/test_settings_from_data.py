"""Settings that follow from the data (usdrl.training.settings_from_data): released values on NTU-shaped data, the rules on short
clips and small datasets, and their record in run.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPOSITORY

from usdrl.cli.main import main
from usdrl.data.ntu import prepare_ntu
from usdrl.nn.encoders import SkeletonModel
from usdrl.settings.params import load_params
from usdrl.settings.sections import AugmentSection, ConfigError, ModelSection, Params, PretrainSection
from usdrl.skeleton import ntu25_layout
from usdrl.training.settings_from_data import resolve_for_data, resolve_for_split

PARAMS = REPOSITORY / "params.yaml"


@dataclasses.dataclass
class _Split:
    """What the rules read of a training split."""

    num_frames: np.ndarray
    untrimmed: bool = False
    root: str = "fake"
    benchmark: str = "xsub"

    def __len__(self) -> int:
        return len(self.num_frames)


def _demo() -> Params:
    return load_params(PARAMS, "demo")


def test_ntu_samples_resolve_to_the_released_settings_in_the_paper_profile(shared, tmp_path):
    samples = shared / "data" / "ntu_samples"
    prepare_ntu("ntu60", samples, tmp_path / "ntu", progress=False)
    paper = load_params(PARAMS, "paper")
    assert paper.model.clip_frames == "auto" and paper.augment.minimum_crop == "auto"
    resolved, record = resolve_for_data(paper, tmp_path / "ntu", "xsub")
    assert resolved.model == ModelSection()  # SPEC.md: every released value, clip length 64 included
    assert resolved.augment == AugmentSection()  # minimum crop 64
    assert resolved.pretrain == PretrainSection()  # 451 epochs, batch 356, milestone 351
    assert set(record) == {"model.clip_frames", "augment.minimum_crop"}
    assert "released" in record["model.clip_frames"]["rule"]


def test_short_clips_get_a_shorter_clip_and_crops_that_happen():
    lengths = np.array([5, 9, 12, 20, 25, 28, 30, 33, 40, 60, 80] * 10)
    resolved, record = resolve_for_split(load_params(PARAMS, "paper"), _Split(lengths))
    assert resolved.model.clip_frames == 32  # the power of two at least the median, 28
    assert resolved.augment.minimum_crop == 8  # 10 of the 110 clips have 5 frames, 10 have 9
    assert np.mean(lengths <= resolved.augment.minimum_crop) <= 0.1 + 1e-9  # at most a tenth never cropped
    assert record["augment.minimum_crop"]["value"] == resolved.augment.minimum_crop
    long = np.array([70, 90, 120, 150, 200] * 20)  # NTU-shaped
    resolved, _ = resolve_for_split(load_params(PARAMS, "paper"), _Split(long))
    assert (resolved.model.clip_frames, resolved.augment.minimum_crop) == (64, 64)


def test_a_small_dataset_gets_its_schedule_in_optimiser_steps():
    demo = _demo()
    minimum = demo.pretrain.minimum_steps
    assert minimum > 0
    resolved, record = resolve_for_split(demo, _Split(np.full(100, 30)))
    assert resolved.pretrain.batch_size == 32  # 64 would leave out 36 of 100 clips each epoch
    steps = resolved.pretrain.epochs * (100 // 32)
    assert 2 * minimum <= steps < 2 * minimum + 100 // 32  # half the batch, twice the steps: as many clips
    ratio = resolved.pretrain.epochs / demo.pretrain.epochs
    assert resolved.pretrain.milestones == tuple(round(m * ratio) for m in demo.pretrain.milestones)
    assert {"pretrain.batch_size", "pretrain.epochs", "pretrain.milestones"} <= set(record)
    untrained = dataclasses.replace(demo, detection=dataclasses.replace(demo.detection, epochs=0))
    streams = _Split(np.full(10, 800), untrimmed=True)
    streams.instances = lambda: np.array([[0, 1, 0, 30, 1]] * 10)
    assert resolve_for_split(untrained, streams)[0].detection.epochs == 0  # the untrained detector stays untrained
    assert resolve_for_split(demo, streams)[0].detection.epochs > demo.detection.epochs
    large, record = resolve_for_split(demo, _Split(np.full(64 * 40, 100)))  # 240 steps in 6 epochs: as given
    assert large.pretrain == demo.pretrain and "pretrain.epochs" not in record


def test_the_synthetic_demo_keeps_its_settings(synthetic):
    demo = _demo()
    resolved, _ = resolve_for_data(dataclasses.replace(demo, pretrain=dataclasses.replace(demo.pretrain, batch_size=8)),
                                   synthetic, "xview")
    assert resolved.model.clip_frames == 64 and resolved.augment.minimum_crop == 64
    assert resolved.pretrain.batch_size == 8  # 120 clips: 15 full batches


def test_auto_is_checked_and_must_be_resolved_before_a_model_is_built():
    with pytest.raises(ConfigError, match="model.clip_frames must be auto or at least 1"):
        load_params(None, None, ["model.clip_frames=automatic"])
    with pytest.raises(ConfigError, match="minimum_steps must be at least 0"):
        load_params(None, None, ["pretrain.minimum_steps=-3"])
    with pytest.raises(ConfigError, match="resolve it from the training data"):
        SkeletonModel(ModelSection(clip_frames="auto", hidden_size=16), ntu25_layout())


def test_run_json_records_the_resolved_settings_and_their_rules(synthetic, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(synthetic), "--benchmark", "xview", "--out", str(out), "--params",
                 str(PARAMS), "--profile", "demo", "--epochs", "1", "--batch-size", "16", "--set",
                 "pretrain.minimum_steps=14", "--set", "model.hidden_size=16"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["clip_frames"] == 64 and run["augment"]["minimum_crop"] == 64
    assert run["pretrain"]["epochs"] == 2  # 7 steps an epoch, at least 14 steps
    assert run["automatic"]["pretrain.epochs"]["value"] == 2 and "minimum_steps 14" in run["automatic"][
        "pretrain.epochs"]["rule"]
    error = capsys.readouterr().err
    assert "settings from the data" in error and "pretrain.epochs = 2" in error
    assert len(list(Path(out / "checkpoints").glob("checkpoint_*.pt"))) >= 1
