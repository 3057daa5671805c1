"""dvc.yaml, params.yaml and the notebooks agree, and the notebooks are stored without outputs."""

import json
import re
from pathlib import Path

import yaml

from usdrl.config import load_params

REPOSITORY = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPOSITORY / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_data_prep", "02_pretrain", "03_linear_probe", "04_semi_supervised", "05_retrieval", "06_detection",
            "07_tsne", "08_alpha_ablation"]


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
        for key in body.get("params", []):
            _lookup(params, key)
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
