"""benchmarks/pipeline_profile.py reads papermill's records: stage seconds, cell kinds, kernel start, DVC gaps."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import REPOSITORY

SCRIPT = REPOSITORY / "benchmarks" / "pipeline_profile.py"


@pytest.fixture(scope="module")
def pipeline_profile():
    spec = importlib.util.spec_from_file_location("pipeline_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _executed(path: Path, start: str, end: str, duration: float, cells: list[tuple[str, float]]) -> None:
    notebook = {"metadata": {"papermill": {"start_time": start, "end_time": end, "duration": duration}},
                "cells": [{"cell_type": "code", "source": source, "metadata": {"papermill": {"duration": seconds}}}
                          for source, seconds in cells]}
    path.write_text(json.dumps(notebook))


def test_stages_cell_kinds_kernel_start_and_the_time_between_notebooks(pipeline_profile, tmp_path):
    _executed(tmp_path / "02_pretrain_x.ipynb", "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00", 60.0,
              [("dataset = 'synthetic'", 0.5), ("from usdrl.project import pipeline\nroot, params = pipeline.load_project()", 2.5),
               ("summary = pretrain(data_root, benchmark, run_dir)", 50.0), ("plt.plot(losses)", 1.0)])
    _executed(tmp_path / "03_linear_probe_x.ipynb", "2026-01-01T00:01:04+00:00", "2026-01-01T00:01:14+00:00", 10.0,
              [("pretrained = run_linear_probe(data_root, benchmark, checkpoint, out, params)", 7.0)])
    result = pipeline_profile.profile(tmp_path)
    assert list(result["stages"]) == ["02_pretrain_x", "03_linear_probe_x"]  # in the order they ran
    assert result["kinds"]["pretraining"] == 50.0 and result["kinds"]["probe (features + linear)"] == 7.0
    assert result["kinds"]["imports and project"] == 2.5 and result["kinds"]["plotting"] == 1.0
    assert result["kinds"]["kernel start"] == pytest.approx(6.0 + 3.0)  # time outside the cells
    assert result["between_notebooks_seconds"] == 4.0 and result["first_start_to_last_end_seconds"] == 74.0


def test_a_notebook_papermill_did_not_finish_is_named(pipeline_profile, tmp_path):
    (tmp_path / "broken.ipynb").write_text(json.dumps({"metadata": {}, "cells": []}))
    with pytest.raises(SystemExit, match="broken.ipynb: no papermill timing"):
        pipeline_profile.profile(tmp_path)
