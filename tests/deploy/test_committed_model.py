"""The demo's joint model is committed with the demo's results: a fresh clone recognises skeletons with no training."""

from __future__ import annotations

import json

import numpy as np
from conftest import REPOSITORY

from usdrl.cli.main import main

MODEL = REPOSITORY / "models" / "synthetic_xview_dste_joint"


def test_the_committed_demo_model_loads_and_its_checksums_hold():
    from usdrl.deploy.bundle import load_model

    model = load_model(MODEL, "cpu")
    assert model.layout.name == "ntu25" and model.class_names and model.detector is not None
    assert (MODEL / "README.md").is_file() and (MODEL / "model.onnx").is_file()


def test_recognize_with_the_committed_model_on_an_ntu_file(shared, capsys):
    sample = shared / "data" / "ntu_samples" / "S001C001P001R001A001.skeleton"
    assert main(["recognize", "--model", str(MODEL), str(sample), "--top-k", "3", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and len(rows[0]["top"]) == 3
    probabilities = [entry["probability"] for entry in rows[0]["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_recognize_with_the_committed_model_on_arrays(tmp_path, capsys):
    from usdrl.data.store import load_split
    from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic

    prepare_synthetic(tmp_path / "synthetic", SyntheticConfig(subjects=3, replications=1, training_subjects=(1, 2),
                                                              streams_per_subject_camera=1))
    test = load_split(tmp_path / "synthetic" / "actions", "xview", "test")
    np.savez(tmp_path / "clips.npz", x=test.batch(list(range(8))), num_frames=test.num_frames[:8])
    assert main(["recognize", "--model", str(MODEL), str(tmp_path / "clips.npz"), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 8 and all(row["top"] for row in rows)
