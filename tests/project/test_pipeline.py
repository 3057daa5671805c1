"""dvc.yaml, params.yaml and the notebooks agree, and the notebooks are stored without outputs."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPOSITORY

from usdrl.data.errors import DataError
from usdrl.settings.params import load_params

NOTEBOOKS = sorted((REPOSITORY / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_data_prep", "02_pretrain", "03_linear_probe", "04_semi_supervised", "05_retrieval", "06_detection",
            "07_tsne", "08_alpha_ablation", "09_use_a_model"]


def _lookup(tree, dotted):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_every_params_reference_in_dvc_yaml_exists():
    params = yaml.safe_load((REPOSITORY / "params.yaml").read_text())
    stages = yaml.safe_load((REPOSITORY / "dvc.yaml").read_text())["stages"]
    text = (REPOSITORY / "dvc.yaml").read_text()
    for reference in set(re.findall(r"\$\{([^}]+)\}", text)):
        if reference.split(".")[0] in ("item", "key"):
            continue
        _lookup(params, reference)  # KeyError names the missing key
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for key in body.get("params", []):  # e.g. profiles.${profile}
            _lookup(params, re.sub(r"\$\{([^}]+)\}", lambda match: str(_lookup(params, match.group(1))), key))
        if "foreach" in stage:
            items = _lookup(params, stage["foreach"][2:-1])
            assert items, f"stage {name} expands over an empty list"


def test_pipeline_names_are_consistent():
    params = load_params(REPOSITORY / "params.yaml")
    runs = params.pipeline.runs
    for name, run in {**runs, **params.pipeline.semi_supervised, **params.pipeline.embeddings}.items():
        assert name == f"{run['dataset']}_{run['benchmark']}_{run['backbone']}_{run['modality']}", name
        assert name in runs, f"{name} is not a pretraining run"
    for name, ensemble in params.pipeline.ensembles.items():
        assert {ensemble[m] for m in ("joint", "bone", "motion")} <= set(runs), name
    for name, detection in params.pipeline.detection.items():
        assert detection["run"] in runs, name
    assert load_params(REPOSITORY / "params.yaml", "paper").model.hidden_size == 1024  # the released size


def test_notebooks_have_literal_parameters_and_no_outputs():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        tagged = [cell for cell in notebook["cells"] if "parameters" in cell.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, path.name
        for line in "".join(tagged[0]["source"]).splitlines():
            code = line.split("#")[0].strip()
            if code:
                name, value = (part.strip() for part in code.split("=", 1))
                assert name.isidentifier()
                compile(value, path.name, "eval")  # a literal expression, no calls into the package
                assert "(" not in value, f"{path.name}: parameter {name} is not a literal"
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and not cell.get("execution_count"), f"{path.name} has outputs"


def test_the_project_root_is_found_from_the_notebooks_folder_and_every_path_resolved_from_it(monkeypatch, tmp_path):
    from usdrl.project import pipeline
    from usdrl.settings.sections import ConfigError

    monkeypatch.chdir(REPOSITORY / "notebooks")  # where JupyterLab starts a notebook's kernel
    assert pipeline.find_project_root() == REPOSITORY
    root, params = pipeline.load_project("params.yaml", "demo", ["pretrain.epochs=2"])
    assert root == REPOSITORY and params.pretrain.epochs == 2 and params.model.hidden_size == 64
    assert Path(params.data.root) == REPOSITORY / "data"
    assert Path(params.evaluation.cache_dir) == REPOSITORY / "cache" / "features"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="project_root"):
        pipeline.load_project()
    root, params = pipeline.load_project(REPOSITORY / "params.yaml", "demo", project_root=tmp_path)
    assert root == tmp_path.resolve() and Path(params.data.root) == tmp_path.resolve() / "data"


def test_hints_name_the_right_commands_and_never_the_users_own_output(tmp_path):
    from usdrl.project import pipeline

    root, params = pipeline.load_project(REPOSITORY / "params.yaml", "demo", project_root=tmp_path)
    with pytest.raises(DataError) as synthetic:
        pipeline.require_prepared(params, "synthetic")
    assert f"usdrl prepare synthetic --out {tmp_path.resolve()}/data/synthetic" in str(synthetic.value)
    assert "dvc repro data_prep" in str(synthetic.value)
    with pytest.raises(DataError) as real:
        pipeline.require_prepared(params, "ntu120")
    assert "usdrl prepare ntu120" in str(real.value) and "dvc repro" not in str(real.value)
    with pytest.raises(FileNotFoundError) as in_pipeline:
        pipeline.require_checkpoint(root, params, "synthetic_xview_dste_joint")
    message = str(in_pipeline.value)
    assert ("papermill notebooks/02_pretrain.ipynb results/notebooks/02_pretrain_synthetic_xview_dste_joint.ipynb "
            "-p dataset synthetic -p benchmark xview -p backbone dste -p modality joint -p profile demo") in message
    assert "dvc repro pretrain@synthetic_xview_dste_joint" in message and "out.ipynb" not in message
    with pytest.raises(FileNotFoundError) as by_hand:
        pipeline.require_checkpoint(root, params, "ntu120_xsub_sttr_joint")
    assert "-p dataset ntu120 -p benchmark xsub -p backbone sttr" in str(by_hand.value)
    assert "dvc repro" not in str(by_hand.value)


def test_dvc_registers_only_headline_metrics_and_plots_the_total_loss():
    definition = yaml.safe_load((REPOSITORY / "dvc.yaml").read_text())
    for name, stage in definition["stages"].items():
        body = stage.get("do", stage)
        for entry in body.get("metrics", []):
            assert next(iter(entry)).endswith(".metrics.json"), f"stage {name}: {entry} is not a headline file"
        assert "plots" not in body, f"stage {name}: plots are defined at the top level, with their columns"
        if "notebooks/" in body["cmd"]:  # papermill's own command, the kernel started in notebooks/ as in JupyterLab
            first, *commands = body["cmd"].split("&&")
            assert first.split() == ["mkdir", "-p", "results/notebooks"], name  # papermill does not make it
            for command in commands:
                assert command.split()[:1] == ["papermill"] and " --cwd notebooks " in f"{command} ", name
    (plot,) = definition["plots"]
    (properties,) = plot.values()
    assert properties["x"] == "epoch" and properties["y"][0] == "total" and len(properties["y"]) == 4
    # the terms span three orders of magnitude: drawn on log axes by the project's template
    template = json.loads((REPOSITORY / ".dvc" / "plots" / f"{properties['template']}.json").read_text())
    scales, pending = [], [template]
    while pending:  # every y encoding's scale, in every layer
        node = pending.pop()
        if isinstance(node, dict):
            scales += [node["y"].get("scale")] if isinstance(node.get("y"), dict) else []
            pending += list(node.values())
        elif isinstance(node, list):
            pending += node
    assert len(scales) == 3 and all(scale == {"type": "log"} for scale in scales), scales
    assert "/dvc_plots/" in (REPOSITORY / ".gitignore").read_text().split()  # dvc plots show writes it


def test_headline_metrics_are_a_few_numbers_per_results_file(tmp_path):
    from usdrl.project import pipeline

    files = []
    for name, checkpoint, top1 in (("a", "runs/a/checkpoints/last.pt", 0.56041), ("a_random", "random", 0.19)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"protocol": "linear_probe", "metrics": {"top1": top1, "top5": 0.9, "history": []},
                                         "provenance": {"checkpoint": checkpoint}}))
    assert pipeline.main(["headline", *map(str, files), "--out", str(tmp_path / "a.metrics.json")]) == 0
    assert json.loads((tmp_path / "a.metrics.json").read_text()) == {"metric": "top1 (%)", "pretrained": 56.04,
                                                                     "random_init": 19.0}


def test_headline_files_share_their_columns_so_dvc_metrics_show_is_a_small_table(tmp_path):
    from usdrl.project import pipeline

    files = []
    for name, checkpoint, fraction, top1 in (("p1", "runs/a/last.pt", 0.01, 0.1396), ("p10", "runs/a/last.pt", 0.1, 0.3938),
                                             ("r1", "random", 0.01, 0.05), ("r10", "random", 0.1, 0.2646)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"protocol": "semi_supervised", "metrics": {"top1": top1, "fraction": fraction},
                                         "provenance": {"checkpoint": checkpoint}}))
    pipeline.write_headline_metrics(tmp_path / "semi.metrics.json", files)
    assert json.loads((tmp_path / "semi.metrics.json").read_text()) == {
        "metric": "top1 at 1% labels (%)", "pretrained": 13.96, "random_init": 5.0,
        "second_metric": "top1 at 10% labels (%)", "second_pretrained": 39.38, "second_random_init": 26.46}
    for path in sorted((REPOSITORY / "results").rglob("*.metrics.json")):  # what dvc.yaml registers as metrics
        headline = json.loads(path.read_text())
        assert set(headline) <= {f"{ordinal}{name}" for name in ("metric", "pretrained", "random_init")
                                 for ordinal in ("", "second_")} and "metric" in headline, f"{path}: {sorted(headline)}"
        assert all(isinstance(value, int | float) for name, value in headline.items() if not name.endswith("metric"))


def test_a_table_row_says_the_samples_it_was_computed_on(tmp_path):
    from usdrl.project.report import build_tables

    def probe(name, samples):
        provenance = {"checkpoint": "runs/x/checkpoints/last.pt", "checkpoint_sha256": "1" * 64,
                      "data_manifest_sha256": "2" * 64, "dataset": "ntu60", "benchmark": "xsub",
                      "scores": f"/somewhere/results/linear/{name}.scores.npz", **samples}
        return {"protocol": "linear_probe", "metrics": {"top1": 0.5}, "provenance": provenance,
                "settings": {"model": {"backbone": "dste"}, "modality": name}}

    results = tmp_path / "results"
    (results / "linear").mkdir(parents=True)
    (results / "ensemble").mkdir()
    for name in ("joint", "bone", "motion"):  # a 720-sample subset made by hand
        (results / "linear" / f"{name}.json").write_text(json.dumps(probe(name, {"samples": {"train": 720, "test": 300}})))
    (results / "linear" / "old.json").write_text(json.dumps(probe("old", {})))  # a results file from before the field
    (results / "ensemble" / "three.json").write_text(json.dumps({
        "protocol": "ensemble", "metrics": {"top1": 0.6}, "provenance": {},
        "settings": {"dataset": "ntu60", "benchmark": "xsub",
                     "score_files": [f"results/linear/{name}.scores.npz" for name in ("joint", "bone", "motion")]}}))
    build_tables(results, tmp_path / "tables", "demo")
    rows = list(csv.DictReader((tmp_path / "tables" / "linear.csv").open()))
    samples = {row["row"]: row["samples"] for row in rows}
    subset = " [subset: 720 of 40,091 training samples]"
    assert samples["DSTE (joint)" + subset] == "720 / 300" and samples["DSTE (old)"] == "not recorded"
    assert samples["DSTE 3 streams (J+M+B)" + subset] == "720 / 300"
    # beside the paper's number, the row itself says it is a subset and the paper's number is not comparable
    assert f"DSTE (joint){subset} | ntu60 | xsub | 720 / 300 | 50.0 | (85.2: the benchmark, not comparable) |" in (
        tmp_path / "tables" / "linear.md").read_text()


def test_the_ensemble_row_label_comes_from_the_probes_it_summed():
    from usdrl.project.report import _ensemble_label

    def probe(modality, backbone="sttr"):
        return {"protocol": "linear_probe", "provenance": {"scores": f"/r/linear/{modality}.scores.npz"},
                "settings": {"model": {"backbone": backbone}, "modality": modality}}

    def ensemble(*modalities):
        return {"settings": {"score_files": [f"results/linear/{m}.scores.npz" for m in modalities]}}

    assert _ensemble_label(ensemble("joint", "bone", "motion"), [probe("joint"), probe("bone"), probe("motion")]) == (
        "STTR 3 streams (J+M+B)", "the joint, bone and motion probes'")
    assert _ensemble_label(ensemble("motion", "joint"), [probe("joint", "dste"), probe("motion", "dste")]) == (
        "DSTE 2 streams (J+M)", "the motion and joint probes'")
    assert _ensemble_label(ensemble("joint", "bone"), [probe("joint")])[0] == "STTR 2 streams"  # a probe not found


def _pretraining_run(root, name, backbone, modality):
    """A run folder as usdrl pretrain leaves it: checkpoints/last.pt and run.json (what it was given)."""
    from usdrl.project import pipeline

    checkpoint = pipeline.run_checkpoint(root, name)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    (checkpoint.parent.parent / "run.json").write_text(json.dumps({"model": {"backbone": backbone},
                                                                   "pretrain": {"modality": modality}}))
    return checkpoint


def test_open_run_gives_what_an_evaluation_notebook_needs_in_one_call(tmp_path):
    from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
    from usdrl.project import pipeline
    from usdrl.settings.sections import ConfigError

    root, params = pipeline.load_project(REPOSITORY / "params.yaml", "demo", project_root=tmp_path)
    prepare_synthetic(root / "data" / "synthetic", SyntheticConfig(subjects=3, replications=1, training_subjects=(1, 2),
                                                                   streams_per_subject_camera=1))
    checkpoint = _pretraining_run(root, "synthetic_xview_sttr_joint", "sttr", "joint")
    run = pipeline.open_run(root, params, "synthetic", None, "sttr", "joint")
    assert (run.name, run.benchmark, run.backbone, run.modality) == ("synthetic_xview_sttr_joint", "xview", "sttr", "joint")
    assert run.checkpoint == checkpoint and run.data_root == root / "data" / "synthetic" / "actions"
    assert run.params.model.backbone == "sttr" and params.model.backbone == "dste"  # the project's params untouched
    assert run.params.model.hidden_size == params.model.hidden_size and run.root == root
    assert params.model.clip_frames == "auto" and run.params.model.clip_frames == 64  # resolved from the data
    # a run named by hand (detection, use a model): its recorded backbone and modality, the untrimmed data
    detection = pipeline.open_run(root, params, "synthetic", "xsub", pretrain_run="synthetic_xview_sttr_joint",
                                  untrimmed=True)
    assert (detection.backbone, detection.modality, detection.benchmark) == ("sttr", "joint", "xsub")
    assert detection.data_root == root / "data" / "synthetic" / "streams" and detection.params.model.backbone == "sttr"
    with pytest.raises(ConfigError, match=r"pretrained with backbone 'sttr' .*run.json\), not 'dste'"):
        pipeline.open_run(root, params, "synthetic", "xsub", "dste", pretrain_run="synthetic_xview_sttr_joint")
    with pytest.raises(FileNotFoundError, match="dvc repro pretrain@synthetic_xview_dste_joint"):
        pipeline.open_run(root, params, "synthetic", None, "dste", "joint")  # the run's checkpoint is missing
    with pytest.raises(DataError, match="usdrl prepare ntu60"):  # the data is checked first, as before
        pipeline.open_run(root, params, "ntu60", None, "dste", "joint")
    with pytest.raises(ConfigError, match="pretrain_run"):
        pipeline.open_run(root, params, "synthetic", None, "dste")


def test_a_run_without_run_json_takes_the_backbone_asked_for(tmp_path):
    from usdrl.project import pipeline
    from usdrl.training.loop import TrainingError

    assert pipeline.recorded_run_settings(tmp_path / "absent") == {}
    (tmp_path / "run.json").write_text(json.dumps({"model": "not a section", "pretrain": {"modality": "bone"}}))
    assert pipeline.recorded_run_settings(tmp_path) == {"modality": "bone"}
    (tmp_path / "run.json").write_text("not json")  # a damaged record is named, never read as no record
    with pytest.raises(TrainingError, match=r"run.json cannot be read .*pretrain again into a new --out"):
        pipeline.recorded_run_settings(tmp_path)


def test_overrides_given_as_text_are_read_as_a_yaml_list(tmp_path):
    """papermill -p passes text: a YAML/JSON list, one setting, or nothing; -y and JupyterLab pass the list."""
    from usdrl.project import pipeline
    from usdrl.settings.sections import ConfigError

    assert pipeline.override_list('["pretrain.epochs=1", "probe.epochs=2"]') == ["pretrain.epochs=1", "probe.epochs=2"]
    assert pipeline.override_list("[pretrain.epochs=1]") == ["pretrain.epochs=1"]
    assert pipeline.override_list("pretrain.epochs=1") == ["pretrain.epochs=1"]
    assert pipeline.override_list("") == [] and pipeline.override_list(None) == []
    assert pipeline.override_list(["pretrain.epochs=1"]) == ["pretrain.epochs=1"]
    with pytest.raises(ConfigError, match="list of section.key=value"):
        pipeline.override_list("{pretrain: 1}")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    shutil.copy2(REPOSITORY / "params.yaml", tmp_path / "params.yaml")
    _, params = pipeline.load_project("params.yaml", "demo", '["pretrain.epochs=3"]', tmp_path)
    assert params.pretrain.epochs == 3
