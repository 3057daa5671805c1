"""Every notebook executed by papermill in a smoke setting (tiny model, one epoch, small synthetic data)."""

import json
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

REPOSITORY = Path(__file__).resolve().parents[1]
SMOKE = ["data.synthetic.subjects=3", "data.synthetic.replications=1", "model.hidden_size=16", "model.num_layers=1",
         "pretrain.epochs=1", "pretrain.batch_size=16", "probe.epochs=3", "finetune.epochs=1", "finetune.fractions=[0.2]",
         "detection.epochs=1", "ablation.epochs=1", "ablation.alphas=[0.0, 1.0]", "ablation.loss_variants=[none, all]"]


def _run(name: str, workdir: Path, **parameters) -> dict:
    output = workdir / "executed" / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(REPOSITORY / "notebooks" / f"{name}.ipynb"), str(output), cwd=str(workdir),
                               parameters={"params_file": str(REPOSITORY / "params.yaml"), "profile": "demo",
                                           "overrides": SMOKE, **parameters}, progress_bar=False, kernel_name="python3")
    return json.loads(output.read_text())


@pytest.mark.notebook
def test_the_notebook_series_runs_end_to_end(tmp_path):
    for folder in ("results", "figures"):
        (tmp_path / folder).mkdir()
    _run("01_data_prep", tmp_path, dataset="synthetic")
    assert (tmp_path / "results/data/synthetic.json").is_file() and (tmp_path / "figures/skeleton_synthetic.png").is_file()
    _run("02_pretrain", tmp_path, dataset="synthetic")
    run = "synthetic_xview_dste_joint"
    assert (tmp_path / f"runs/{run}/checkpoints/last.pt").is_file() and (tmp_path / f"figures/loss_{run}.png").is_file()
    _run("03_linear_probe", tmp_path, dataset="synthetic")
    probe = json.loads((tmp_path / f"results/linear/{run}.json").read_text())
    assert probe["protocol"] == "linear_probe" and (tmp_path / f"results/linear/{run}_random.json").is_file()
    _run("04_semi_supervised", tmp_path, dataset="synthetic")
    assert (tmp_path / f"results/semi/{run}/20pct.json").is_file()
    _run("05_retrieval", tmp_path, dataset="synthetic")
    assert "knn1" in json.loads((tmp_path / f"results/retrieval/{run}.json").read_text())["metrics"]
    _run("06_detection", tmp_path, detection="synthetic_xsub_dste_joint", pretrain_run=run, dataset="synthetic",
         benchmark="xsub")
    assert (tmp_path / "results/detection/synthetic_xsub_dste_joint/results.json").is_file()
    assert (tmp_path / "figures/detection_synthetic_xsub_dste_joint.png").is_file()
    _run("07_tsne", tmp_path, dataset="synthetic", max_points=200)
    assert (tmp_path / f"figures/tsne_{run}.png").is_file() and (tmp_path / f"figures/umap_{run}.png").is_file()
    _run("08_alpha_ablation", tmp_path, dataset="synthetic")
    assert len(list((tmp_path / "results/ablation/synthetic_xview").glob("*.json"))) == 4
    from usdrl.report import build_tables

    tables = build_tables(tmp_path / "results", tmp_path / "results/tables", "demo")
    linear = (tmp_path / "results/tables/linear.md").read_text()
    assert "DSTE (joint)" in linear and "random init" in linear and len(tables) == 6


@pytest.mark.notebook
def test_a_notebook_asked_for_unprepared_data_names_the_command(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="usdrl prepare ntu120"):
        _run("03_linear_probe", tmp_path, dataset="ntu120")
