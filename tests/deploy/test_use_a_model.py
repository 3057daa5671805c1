"""Notebook 09 executed by papermill in a temporary project whose prerequisites (synthetic data, a pretraining
run, its probe and a detection run) are made by the package directly, in the smoke setting of the notebook tests."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPOSITORY

papermill = pytest.importorskip("papermill")

SMOKE = ["pretrain.minimum_steps=0", "detection.minimum_steps=0", "pretrain.gain_check_seeds=0",
         "data.synthetic.subjects=3", "data.synthetic.replications=1", "model.hidden_size=16", "model.num_layers=1",
         "pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.workers=0", "probe.epochs=3", "detection.epochs=1"]
RUN, DETECTION = "synthetic_xview_dste_joint", "synthetic_xsub_dste_joint"


@pytest.mark.notebook
def test_the_use_a_model_notebook_exports_reloads_recognises_and_detects(tmp_path, one_thread):
    from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
    from usdrl.evaluate.detector import run_detection
    from usdrl.evaluate.protocols import run_linear_probe
    from usdrl.project import pipeline
    from usdrl.training.pretrain import pretrain

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPOSITORY / name, project / name)
    root, params = pipeline.load_project("params.yaml", "demo", SMOKE, project)
    prepare_synthetic(Path(params.data.root) / "synthetic", SyntheticConfig(subjects=3, replications=1,
                                                                           training_subjects=(1, 2)))
    pretrain(pipeline.dataset_root(params, "synthetic"), "xview", root / "runs" / RUN, params.model, params.augment,
             params.loss, params.pretrain, progress=False)
    checkpoint = pipeline.run_checkpoint(root, RUN)
    run_linear_probe(pipeline.dataset_root(params, "synthetic"), "xview", checkpoint,
                     root / "results" / "linear" / f"{RUN}.json", params)
    run_detection(pipeline.dataset_root(params, "synthetic", untrimmed=True), "xsub", checkpoint,
                  root / "results" / "detection" / DETECTION, params, figures=0)
    output = tmp_path / "executed" / "09_use_a_model.ipynb"
    output.parent.mkdir()
    papermill.execute_notebook(str(REPOSITORY / "notebooks" / "09_use_a_model.ipynb"), str(output),
                               cwd=str(project / "notebooks"), progress_bar=False, kernel_name="python3",
                               parameters={"profile": "demo", "overrides": SMOKE,
                                           "real_sample": str(REPOSITORY.parent / "shared" / "data" / "ntu_samples"
                                                              / "S001C001P001R001A001.skeleton")})
    summary = json.loads((project / "results" / "use_a_model" / f"{RUN}.json").read_text())
    assert summary["top1_bundle"] == pytest.approx(summary["top1_probe"])  # the bundle predicts as the probe did
    assert summary["features"] == [60, 32] and summary["dense"] == [60, 64, 16]
    assert summary["onnx_parity_max_abs_difference"] <= 1e-4 and summary["streams"] >= 1
    assert (project / "models" / RUN / "model.onnx").is_file()
    assert (project / "figures" / f"use_a_model_{RUN}.png").is_file()
    assert not [path for path in (project / "notebooks").rglob("*") if path.is_file()], "the notebook wrote there"
