"""Real skeletons end to end (UTKinect-Action3D from ../shared/data/utkinect, Kinect v1, 20 joints).

A user's path with the demo profile: prepare (or import plain arrays in metres), pretrain for a few hundred
steps on the CPU, then probe, kNN and detection, each beside the random-initialised encoder. Skipped when
../shared is absent. The margins are below the gaps measured over seeds 0-2 (README, "Real skeletons").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPOSITORY, shared_path

from usdrl.cli.main import main

pytestmark = pytest.mark.slow
PARAMS = ["--params", str(REPOSITORY / "params.yaml"), "--profile", "demo", "--quiet"]


def _raw_folder() -> Path:
    raw = shared_path() / "data" / "utkinect"
    if not (raw / "actionLabel.txt").is_file():
        pytest.skip(f"UTKinect files {raw} are absent")
    return raw


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def utkinect(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "utkinect"
    assert main(["prepare", "utkinect", "--raw", str(_raw_folder()), "--out", str(out), "--quiet"]) == 0
    return out


def _pretrain(data: Path, out: Path, *extra: str) -> Path:
    assert main(["pretrain", "--data", str(data), "--benchmark", "xsub", "--out", str(out), *PARAMS, *extra]) == 0
    return out / "checkpoints" / "last.pt"


def _probe_and_knn(data: Path, checkpoint: str, out: Path, capsys, *extra: str) -> tuple[float, float]:
    common = ["--data", str(data), "--benchmark", "xsub", "--checkpoint", checkpoint, *PARAMS, *extra,
              "--set", f"evaluation.cache_dir={out / 'cache'}"]
    capsys.readouterr()
    assert main(["probe", *common, "--out", str(out / "probe.json"), "--json"]) == 0
    probe = _json(capsys)["metrics"]["top1"]
    assert main(["retrieve", *common, "--out", str(out / "knn.json"), "--json"]) == 0
    knn = _json(capsys)["metrics"]["knn1"]
    return probe, knn


@pytest.fixture(scope="module")
def pretrained(utkinect, tmp_path_factory) -> Path:
    """The demo profile, seed 0: the settings that follow from the data (usdrl.training.settings_from_data), nothing per dataset."""
    return _pretrain(utkinect / "actions", tmp_path_factory.mktemp("run") / "utkinect")


def test_pretraining_beats_random_init_on_real_skeletons(utkinect, pretrained, tmp_path, capsys):
    probe, knn = _probe_and_knn(utkinect / "actions", str(pretrained), tmp_path / "pretrained", capsys)
    random_probe, random_knn = _probe_and_knn(utkinect / "actions", "random", tmp_path / "random", capsys)
    assert probe >= random_probe + 0.02, (probe, random_probe)
    assert knn >= random_knn + 0.02, (knn, random_knn)


def test_detection_on_real_streams_beats_random_init(utkinect, pretrained, tmp_path, capsys):
    scores = {}
    for name, checkpoint in (("pretrained", str(pretrained)), ("random", "random")):
        capsys.readouterr()
        assert main(["detect", "train", "--data", str(utkinect / "streams"), "--benchmark", "xsub", "--checkpoint",
                     checkpoint, "--out", str(tmp_path / name), "--figures", "0", "--json", *PARAMS]) == 0
        scores[name] = _json(capsys)["metrics"]["0.5"]["mAP_v"]
    assert scores["pretrained"] >= scores["random"] + 0.02, scores


def _raw_clips_in_metres(raw: Path, prepared: Path) -> dict[str, np.ndarray]:
    """The prepared clips cut again from the raw files, as a capture system would give them: metres in the
    camera frame (sensor about 2-4 m away), no centring, no rotation, zero padding after the clip."""
    from usdrl.data.utkinect_files import read_joints

    names = json.loads((prepared / "names.json").read_text())
    ranges = np.load(prepared / "clip_ranges.npy")  # (N, 4): first line, end line, first and last frame id
    frames = int(np.load(prepared / "num_frames.npy").max())
    x = np.zeros((len(names), 3, frames, 20, 1), dtype=np.float32)
    recordings: dict[str, np.ndarray] = {}
    for position, (name, (first, end, _, _)) in enumerate(zip(names, ranges)):
        recording = name[:7]  # sSS_eEE
        if recording not in recordings:
            recordings[recording] = read_joints(raw / f"joints_{recording}.txt")[1]  # (C, L, V, M)
        clip = recordings[recording][:, first:end]
        x[position, :, :clip.shape[1]] = clip
    label = np.load(prepared / "label.npy")
    arrays = {"x": x, "label": label, "num_frames": np.load(prepared / "num_frames.npy")}
    for split in ("train", "test"):
        arrays[f"split_xsub_{split}"] = np.load(prepared / "splits" / f"xsub_{split}.npy")
    return arrays


def test_own_capture_as_plain_arrays_in_metres_through_the_generic_path(utkinect, tmp_path, capsys):
    """Not `prepare utkinect`: plain arrays in raw metres and a layout file, imported with the default options."""
    raw = _raw_folder()
    arrays = _raw_clips_in_metres(raw, utkinect / "actions")
    assert np.abs(arrays["x"][:, 2]).max() > 1.5  # really raw: depth in metres from the sensor
    np.savez(tmp_path / "capture.npz", **arrays)
    from usdrl.skeleton import kinect_v1_layout

    layout = kinect_v1_layout().to_dict()
    (tmp_path / "kinect.yaml").write_text(yaml.safe_dump({**layout, "name": "my_kinect"}))
    out = tmp_path / "mine"
    assert main(["import", "arrays", str(tmp_path / "capture.npz"), "--layout", str(tmp_path / "kinect.yaml"),
                 "--out", str(out), "--dataset", "my_capture"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["normalised"] is True
    # the released crop of at least 64 frames never crops clips this short: pretraining says so (a warning)
    with pytest.warns(UserWarning, match="never cropped in time"):
        _pretrain(out, tmp_path / "warned", "--epochs", "1", "--set", "augment.minimum_crop=64",
                  "--set", "pretrain.minimum_steps=0", "--set", "pretrain.gain_check_seeds=0")
    # the demo profile and nothing else: clip length, crops, batch and schedule follow from the data
    checkpoint = _pretrain(out, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model"]["clip_frames"] == 32 and run["augment"]["minimum_crop"] < 16
    assert {"model.clip_frames", "augment.minimum_crop", "pretrain.batch_size", "pretrain.epochs"} <= set(run["automatic"])
    probe, knn = _probe_and_knn(out, str(checkpoint), tmp_path / "pretrained", capsys)
    random_probe, random_knn = _probe_and_knn(out, "random", tmp_path / "random", capsys)
    assert probe >= random_probe + 0.02, (probe, random_probe)
    assert knn >= random_knn + 0.02, (knn, random_knn)
