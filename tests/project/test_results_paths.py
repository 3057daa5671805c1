"""Results name no machine: paths inside the project are recorded relative to its root, data by checksums.

The committed results/ are what ``dvc repro`` wrote; they must hold no absolute path of the checkout that wrote
them (a temporary folder, a home folder). A path outside the project stays as the user gave it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from conftest import REPOSITORY

from usdrl.data.project_paths import paths_relative_to_project
from usdrl.data.store import load_split
from usdrl.evaluate.features import feature_cache_key
from usdrl.evaluate.results import write_results

# a path of at least two folders starting at the file system's root, not inside a URL ("https://") or a fraction
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])/[A-Za-z0-9_.~-]+/[A-Za-z0-9_./~-]+")


def _absolute_strings(value, where: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _absolute_strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _absolute_strings(item, f"{where}[{index}]")
    elif isinstance(value, str) and (value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value)):
        yield where, value


def absolute_paths_in(results: Path) -> list[str]:
    """Every absolute path in the JSON, CSV and Markdown files under ``results`` (not the executed notebooks)."""
    found = []
    for path in sorted(results.rglob("*")):
        if "notebooks" in path.relative_to(results).parts or not path.is_file():
            continue  # the executed notebooks show what the cells printed
        name = path.relative_to(results).as_posix()
        if path.suffix == ".json":
            found += [f"{name}: {where} = {value}" for where, value in _absolute_strings(json.loads(path.read_text()))]
        elif path.suffix in (".csv", ".md"):
            found += [f"{name}: {match}" for match in ABSOLUTE_PATH.findall(path.read_text())]
    return found


def test_no_results_file_holds_an_absolute_path():
    found = absolute_paths_in(REPOSITORY / "results")
    assert not found, f"{len(found)} absolute paths in results/, e.g.\n" + "\n".join(found[:10])


def test_the_committed_model_bundle_holds_no_absolute_path():
    bundle = REPOSITORY / "models" / "synthetic_xview_dste_joint"
    found = [f"model.json: {where} = {value}"
             for where, value in _absolute_strings(json.loads((bundle / "model.json").read_text()))]
    found += [f"README.md: {match}" for match in ABSOLUTE_PATH.findall((bundle / "README.md").read_text())]
    assert not found, "\n".join(found[:10])


def test_executed_notebooks_name_no_path_of_the_checkout():
    """What the cells printed (the executed copies dvc repro leaves in results/notebooks/) names no folder of the
    checkout that ran them; a fresh clone has none of them, a checkout after dvc repro has all."""
    checkout, environment = str(REPOSITORY), json.dumps(sys.prefix)[1:-1]  # a package's own warning names its file
    for path in sorted((REPOSITORY / "results" / "notebooks").glob("*.ipynb")):
        outputs = json.dumps([cell.get("outputs", []) for cell in json.loads(path.read_text())["cells"]])
        assert checkout not in outputs.replace(environment, ""), f"{path.name} prints {checkout}"


def test_the_check_finds_absolute_paths_in_tables_and_not_urls_or_fractions():
    assert ABSOLUTE_PATH.findall("| DSTE | /tmp/checkout/runs/a/last.pt | 120 / 60 | https://x.org/a/b |") == [
        "/tmp/checkout/runs/a/last.pt"]


def test_write_results_records_paths_inside_the_project_relative_to_its_root(synthetic, tmp_path):
    project = tmp_path / "project"
    (project / "results" / "linear").mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    checkpoint = project / "runs" / "a" / "checkpoints" / "last.pt"
    outside = tmp_path / "elsewhere" / "data"
    written = write_results(project / "results" / "linear" / "a.json", "linear_probe", {"top1": 0.5},
                            {"score_files": [str(project / "results/linear/a.scores.npz"), "given/relative.npz"]},
                            {"checkpoint": str(checkpoint), "data_root": str(outside),
                             "scores": str(project / "results" / "linear" / "a.scores.npz")},
                            torch.device("cpu"), time.perf_counter())
    content = json.loads(written.read_text())
    assert content["provenance"]["checkpoint"] == "runs/a/checkpoints/last.pt"
    assert content["provenance"]["scores"] == "results/linear/a.scores.npz"
    assert content["provenance"]["data_root"] == str(outside)  # outside the project: as given
    assert content["settings"]["score_files"] == ["results/linear/a.scores.npz", "given/relative.npz"]
    # a results file outside any project keeps its paths as given
    alone = write_results(tmp_path / "alone.json", "linear_probe", {}, {}, {"checkpoint": str(checkpoint)},
                          torch.device("cpu"), time.perf_counter())
    assert json.loads(alone.read_text())["provenance"]["checkpoint"] == str(checkpoint)


def test_a_project_reached_through_a_link_records_the_same_relative_paths(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "link").symlink_to(project)
    content = {"a": str(tmp_path / "link" / "runs" / "x.pt"), "b": [str(project / "data")], "c": 3, "d": "text"}
    assert paths_relative_to_project(content, tmp_path / "link") == {"a": "runs/x.pt", "b": ["data"], "c": 3,
                                                                      "d": "text"}


def test_the_feature_cache_key_does_not_depend_on_where_the_checkout_is(synthetic, tmp_path):
    here = load_split(synthetic, "xview", "train")
    copy = tmp_path / "moved" / "data" / "synthetic" / "actions"
    shutil.copytree(synthetic, copy)
    moved = load_split(copy, "xview", "train")
    assert feature_cache_key("sha", here, "joint", 64, "fp32") == feature_cache_key("sha", moved, "joint", 64, "fp32")
    assert feature_cache_key("sha", here, "joint", 64, "fp32") != feature_cache_key("sha", here, "bone", 64, "fp32")
    assert feature_cache_key("sha", here, "joint", 64, "fp32") != feature_cache_key(
        "sha", load_split(synthetic, "xview", "test"), "joint", 64, "fp32")
