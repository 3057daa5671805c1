"""Every notebook executed by papermill in a smoke setting (tiny model, one epoch, small synthetic data).

The series runs as JupyterLab runs it: the kernel's working directory is ``notebooks/`` of a temporary
project (a copy of params.yaml and dvc.yaml), with no results/, figures/ or runs/ folder to start with.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPOSITORY

papermill = pytest.importorskip("papermill")

PAPERMILL = shutil.which("papermill", path=str(Path(sys.executable).parent)) or "papermill"  # this environment's
SMOKE = ["data.synthetic.subjects=3", "data.synthetic.replications=1", "model.hidden_size=16", "model.num_layers=1",
         "pretrain.epochs=1", "pretrain.batch_size=16", "probe.epochs=3", "finetune.epochs=1", "finetune.fractions=[0.2]",
         "detection.epochs=1", "ablation.epochs=1", "ablation.alphas=[0.0, 1.0]", "ablation.loss_variants=[none, all]",
         "pretrain.minimum_steps=0", "detection.minimum_steps=0", "pretrain.gain_check_seeds=1"]  # the epochs as given, not raised to a step count


def _run(name: str, cwd: Path, **parameters) -> dict:
    output = cwd.parent / "executed" / f"{name}.ipynb"
    for folder in (cwd, output.parent):
        folder.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(REPOSITORY / "notebooks" / f"{name}.ipynb"), str(output), cwd=str(cwd),
                               parameters={"profile": "demo", "overrides": SMOKE, **parameters}, progress_bar=False,
                               kernel_name="python3")
    return json.loads(output.read_text())


RUN = "synthetic_xview_dste_joint"
SERIES = {"01_data_prep": {"dataset": "synthetic"}, "02_pretrain": {"dataset": "synthetic"},
          "03_linear_probe": {"dataset": "synthetic"}, "04_semi_supervised": {"dataset": "synthetic"},
          "05_retrieval": {"dataset": "synthetic"},
          "06_detection": {"detection": "synthetic_xsub_dste_joint", "pretrain_run": RUN, "dataset": "synthetic",
                           "benchmark": "xsub"},
          "07_tsne": {"dataset": "synthetic", "max_points": 200}, "08_alpha_ablation": {"dataset": "synthetic"}}


class NotebookSeries:
    """The notebooks of one temporary project, each executed once, in the series' order, when a test asks for it."""

    def __init__(self, project: Path):
        self.project = project
        self.notebooks = project / "notebooks"  # where JupyterLab and papermill --cwd notebooks start the kernel
        self.failures: dict[str, str] = {}
        self.done: set[str] = set()

    def run(self, name: str) -> None:
        """Execute ``name`` and the notebooks before it that have not run; a failure of an earlier one fails this."""
        for earlier in list(SERIES)[:list(SERIES).index(name) + 1]:
            if earlier not in self.done and earlier not in self.failures:
                try:
                    _run(earlier, self.notebooks, **SERIES[earlier])
                    self.done.add(earlier)
                except Exception as error:
                    self.failures[earlier] = f"{type(error).__name__}: {error}"
            if earlier in self.failures:
                pytest.fail(f"{earlier} failed{'' if earlier == name else f' (needed before {name})'}: "
                            f"{self.failures[earlier]}")


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> NotebookSeries:
    project = tmp_path_factory.mktemp("series") / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPOSITORY / name, project / name)
    return NotebookSeries(project)


@pytest.mark.notebook
def test_01_data_prep_writes_the_data_summary_and_figure(series):
    series.run("01_data_prep")
    project = series.project
    assert (project / "results/data/synthetic.json").is_file() and (project / "figures/skeleton_synthetic.png").is_file()


@pytest.mark.notebook
def test_02_pretrain_writes_the_checkpoint_loss_curve_and_summary(series):
    series.run("02_pretrain")
    project = series.project
    assert (project / f"runs/{RUN}/checkpoints/last.pt").is_file() and (project / f"figures/loss_{RUN}.png").is_file()
    assert (project / f"results/pretrain/loss/{RUN}.csv").read_text().startswith("epoch,total,similarity,")
    summary = json.loads((project / f"results/pretrain/{RUN}.json").read_text())
    assert summary["epochs"] == 1 and summary["provenance"]["samples"] == {"train": 120, "test": 60}


@pytest.mark.notebook
def test_03_linear_probe_writes_pretrained_and_random_init_headlines(series):
    series.run("03_linear_probe")
    project = series.project
    probe = json.loads((project / f"results/linear/{RUN}.json").read_text())
    random_init = json.loads((project / f"results/linear/{RUN}_random.json").read_text())
    assert probe["protocol"] == "linear_probe" and random_init["protocol"] == "linear_probe"
    headline = json.loads((project / f"results/linear/{RUN}.metrics.json").read_text())
    assert headline == {"metric": "top1 (%)", "pretrained": round(100 * probe["metrics"]["top1"], 2),
                        "random_init": round(100 * random_init["metrics"]["top1"], 2)}
    assert any((project / "cache/features").iterdir())  # evaluation.cache_dir resolved from the project root
    assert (project / f"figures/linear_{RUN}.png").is_file()


@pytest.mark.notebook
def test_04_semi_supervised_writes_one_result_per_fraction(series):
    series.run("04_semi_supervised")
    project = series.project
    assert (project / f"results/semi/{RUN}/20pct.json").is_file()
    assert json.loads((project / f"results/semi/{RUN}.metrics.json").read_text())["metric"] == "top1 at 20% labels (%)"
    assert (project / f"figures/semi_{RUN}.png").is_file()


@pytest.mark.notebook
def test_05_retrieval_writes_knn_metrics(series):
    series.run("05_retrieval")
    assert "knn1" in json.loads((series.project / f"results/retrieval/{RUN}.json").read_text())["metrics"]
    assert (series.project / f"figures/retrieval_{RUN}.png").is_file()


@pytest.mark.notebook
def test_06_detection_writes_both_maps(series):
    series.run("06_detection")
    project = series.project
    assert (project / "results/detection/synthetic_xsub_dste_joint/results.json").is_file()
    assert (project / "figures/detection_synthetic_xsub_dste_joint.png").is_file()
    detection = json.loads((project / "results/detection/synthetic_xsub_dste_joint.metrics.json").read_text())
    assert (detection["metric"], detection["second_metric"]) == ("mAP_a@0.5 (%)", "mAP_v@0.5 (%)")


@pytest.mark.notebook
def test_07_tsne_writes_both_embeddings_and_silhouettes(series):
    series.run("07_tsne")
    project = series.project
    assert (project / f"figures/tsne_{RUN}.png").is_file() and (project / f"figures/umap_{RUN}.png").is_file()
    embedding = json.loads((project / f"results/embedding/{RUN}.json").read_text())
    assert set(embedding["silhouette_cosine_test_features"]) == {"pretrained", "random init"}
    assert embedding["provenance"]["checkpoint"] == f"runs/{RUN}/checkpoints/last.pt"  # relative to the project


@pytest.mark.notebook
def test_08_alpha_ablation_writes_one_result_per_variant(series):
    series.run("08_alpha_ablation")
    project = series.project
    assert len(list((project / "results/ablation/synthetic_xview").glob("*.json"))) == 4
    assert (project / "runs/ablation/synthetic_xview").is_dir()


@pytest.mark.notebook
def test_the_series_writes_nothing_into_notebooks_names_no_checkout_path_and_builds_the_tables(series):
    series.run("08_alpha_ablation")
    project, notebooks = series.project, series.notebooks
    assert not [path for path in notebooks.rglob("*") if path.is_file()], "a notebook wrote into notebooks/"
    from test_results_paths import absolute_paths_in

    assert not absolute_paths_in(project / "results"), "results name the checkout's folder"
    for executed in sorted((project / "executed").glob("*.ipynb")):  # what the cells printed names no machine folder
        printed = json.dumps([cell.get("outputs", []) for cell in json.loads(executed.read_text())["cells"]])
        for folder in (str(REPOSITORY), sys.prefix, str(project)):
            assert folder not in printed, f"{executed.name} prints the folder {folder}"
    # as dvc.yaml runs them: papermill's command from the project root, the kernel started in notebooks/, into
    # results/notebooks/ (made by the stage's mkdir -p: papermill writes only into a folder that exists)
    (project / f"results/retrieval/{RUN}.json").unlink()
    (project / "results/notebooks").mkdir()
    smoke = "-y", json.dumps({"dataset": "synthetic", "profile": "demo", "overrides": SMOKE})
    done = subprocess.run([PAPERMILL, str(REPOSITORY / "notebooks/05_retrieval.ipynb"), "results/notebooks/05.ipynb",
                           "--cwd", "notebooks", *smoke, "--no-progress-bar"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "knn1" in json.loads((project / f"results/retrieval/{RUN}.json").read_text())["metrics"]
    executed = json.loads((project / "results/notebooks/05.ipynb").read_text())
    assert not executed["metadata"]["papermill"]["exception"]  # papermill: None when no cell raised
    assert any(output["output_type"] == "execute_result" for cell in executed["cells"] for output in cell.get("outputs", []))
    from usdrl.project.report import build_tables

    tables = build_tables(project / "results", project / "results/tables", "demo")
    linear = (project / "results/tables/linear.md").read_text()
    assert "DSTE (joint)" in linear and "random init" in linear and len(tables) == 6
    # every row says what it was computed on: 3 subjects x 20 actions seen by cameras 2 and 3 (train) and 1 (test)
    assert "| DSTE (joint) | synthetic | xview | 120 / 60 |" in linear


@pytest.mark.notebook
def test_a_notebook_run_outside_the_project_takes_project_root_and_names_the_prepare_command(tmp_path):
    """papermill in any folder: params_file names the repository's params.yaml, project_root the outputs' root."""
    with pytest.raises(papermill.PapermillExecutionError, match="usdrl prepare ntu120") as raised:
        _run("03_linear_probe", tmp_path / "anywhere", dataset="ntu120", params_file=str(REPOSITORY / "params.yaml"),
             project_root=str(tmp_path))
    message = raised.value.evalue
    assert f"--out {tmp_path.resolve()}/data/ntu120" in message and "dvc repro" not in message


@pytest.mark.notebook
def test_the_data_notebook_prepares_the_real_dataset_of_the_demo(tmp_path):
    from conftest import shared_path

    raw = shared_path() / "data" / "utkinect"
    if not (raw / "actionLabel.txt").is_file():
        pytest.skip(f"UTKinect files {raw} are absent")
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPOSITORY / name, project / name)
    _run("01_data_prep", project / "notebooks", dataset="utkinect", overrides=[f"data.utkinect.raw={raw}"])
    summary = json.loads((project / "results/data/utkinect.json").read_text())
    assert summary["trimmed"]["samples"] == 199 and (project / "data/utkinect/streams/manifest.json").is_file()
    assert (project / "figures/skeleton_utkinect.png").is_file()


@pytest.fixture(scope="module")
def pretrained_project(tmp_path_factory):
    """A scratch project (params.yaml, dvc.yaml, notebooks/) with the smoke synthetic data prepared and pretrained."""
    project = tmp_path_factory.mktemp("pretrained") / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPOSITORY / name, project / name)
    for notebook in (REPOSITORY / "notebooks").glob("*.ipynb"):
        shutil.copy2(notebook, project / "notebooks" / notebook.name)
    _run("01_data_prep", project / "notebooks", dataset="synthetic")
    _run("02_pretrain", project / "notebooks", dataset="synthetic")
    return project


@pytest.mark.notebook
def test_papermill_from_the_notebooks_folder_takes_overrides_as_text(pretrained_project):
    """The documented command, typed in notebooks/: -p passes the list of overrides as text, which is read as YAML."""
    overrides = json.dumps([*SMOKE[:4], "probe.epochs=2"])
    done = subprocess.run([PAPERMILL, "03_linear_probe.ipynb", "out.ipynb", "-p", "dataset", "synthetic",
                           "-p", "profile", "demo", "-p", "overrides", overrides, "--no-progress-bar"],
                          cwd=pretrained_project / "notebooks", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unable to parse" not in done.stderr and "unknown parameter" not in done.stderr, done.stderr
    probe = json.loads((pretrained_project / "results/linear/synthetic_xview_dste_joint.json").read_text())
    assert len(probe["metrics"]["history"]) == 2  # probe.epochs=2 from the text given to -p overrides
    executed = json.loads((pretrained_project / "notebooks/out.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["overrides"] == overrides


@pytest.mark.notebook
def test_every_parameters_cell_is_read_by_papermill_without_a_warning(caplog):
    """papermill's own reading of the cell tagged parameters (its -p checks and --help-notebook) finds every name."""
    import ast

    from papermill.translators import PythonTranslator

    for path in sorted((REPOSITORY / "notebooks").glob("*.ipynb")):
        (cell,) = [cell for cell in json.loads(path.read_text())["cells"]
                   if "parameters" in cell["metadata"].get("tags", [])]
        source = "".join(cell["source"])
        caplog.clear()
        found = [parameter.name for parameter in PythonTranslator.inspect({"source": source})]
        assigned = [node.targets[0].id for node in ast.parse(source).body if isinstance(node, ast.Assign)]
        assert found == assigned, f"{path.name}: papermill reads {found}, the cell assigns {assigned}"
        assert not [record for record in caplog.records if record.levelname == "WARNING"], path.name
