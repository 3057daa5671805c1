"""Where the time of a `dvc repro` went: seconds per stage and per kind of cell, from papermill's records.

    python benchmarks/pipeline_profile.py                      # results/notebooks/*.ipynb of this project
    python benchmarks/pipeline_profile.py --notebooks DIR --json profile.json

Every stage of dvc.yaml runs its notebooks with papermill, which records in the executed copy
(results/notebooks/) when the notebook started and ended and how long each cell ran. The kernel start is the
notebook's time not spent in any cell (papermill starting the kernel); the time between
one notebook's end and the next one's start is DVC's own work (hashing, locking) and starting papermill. Cells are sorted into
kinds by what they call (the first matching rule below), so the table reads the same for every notebook.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

# (kind, pattern in the cell's source): the first match wins
CELL_KINDS = (
    ("parameters", r"^# Parameters|^dataset = "),
    ("data preparation", r"prepare_|make_synthetic|usdrl\.data\.(synthetic|utkinect)"),
    ("pretraining", r"\bpretrain\(|run_pretraining"),
    ("ablation (pretraining, probe, kNN)", r"run_variant"),
    ("probe (features + linear)", r"run_linear_probe"),
    ("kNN (features + retrieval)", r"run_retrieval"),
    ("semi-supervised", r"run_finetune"),
    ("detection", r"run_detection"),
    ("ensemble", r"run_ensemble"),
    ("t-SNE / UMAP", r"TSNE|umap|embed_in_plane"),
    ("features", r"frozen_features|extract_features|cached_features"),
    ("tables", r"write_tables|build_tables|tables\."),
    ("imports and project", r"load_project|^import |^from "),
    ("plotting", r"plt\.|save_figure|plot_|Image\("),
)


def cell_kind(source: str) -> str:
    for kind, pattern in CELL_KINDS:
        if re.search(pattern, source, flags=re.MULTILINE):
            return kind
    return "other"


def read_notebook(path: Path) -> dict:
    """One executed notebook: stage name, start, end, duration, kernel start and (kind, seconds) per cell."""
    notebook = json.loads(path.read_text())
    record = notebook.get("metadata", {}).get("papermill", {})
    if not record.get("start_time") or record.get("duration") is None:
        raise SystemExit(f"{path}: no papermill timing (was it executed by papermill to the end?)")
    cells = []
    for cell in notebook["cells"]:
        seconds = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell["cell_type"] == "code" and seconds is not None:
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            cells.append((cell_kind(source), float(seconds)))
    duration = float(record["duration"])
    start = datetime.fromisoformat(record["start_time"])
    end = datetime.fromisoformat(record["end_time"]) if record.get("end_time") else start
    return {"stage": path.stem, "start": start, "end": end, "duration": duration, "cells": cells,
            "kernel_start": max(duration - sum(seconds for _, seconds in cells), 0.0)}


def profile(folder: Path) -> dict:
    notebooks = sorted((read_notebook(path) for path in folder.glob("*.ipynb")), key=lambda n: n["start"])
    if not notebooks:
        raise SystemExit(f"{folder}: no executed notebooks; run dvc repro first")
    kinds: dict[str, float] = {"kernel start": 0.0}
    for notebook in notebooks:
        kinds["kernel start"] += notebook["kernel_start"]
        for kind, seconds in notebook["cells"]:
            kinds[kind] = kinds.get(kind, 0.0) + seconds
    between = sum(max((later["start"] - earlier["end"]).total_seconds(), 0.0)
                  for earlier, later in zip(notebooks, notebooks[1:]))
    wall = (notebooks[-1]["end"] - notebooks[0]["start"]).total_seconds()
    return {"stages": {n["stage"]: round(n["duration"], 1) for n in notebooks},
            "kinds": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda item: -item[1])},
            "notebooks_seconds": round(sum(n["duration"] for n in notebooks), 1),
            "between_notebooks_seconds": round(between, 1), "first_start_to_last_end_seconds": round(wall, 1)}


def print_table(result: dict) -> None:
    print(f"{'stage':58s} {'seconds':>8s}")
    for stage, seconds in result["stages"].items():
        print(f"{stage:58s} {seconds:8.1f}")
    print(f"\n{'cell kind':58s} {'seconds':>8s}")
    for kind, seconds in result["kinds"].items():
        print(f"{kind:58s} {seconds:8.1f}")
    print(f"\n{'in notebooks':58s} {result['notebooks_seconds']:8.1f}")
    print(f"{'between notebooks (DVC, papermill start)':58s} {result['between_notebooks_seconds']:8.1f}")
    print(f"{'first notebook start to last notebook end':58s} {result['first_start_to_last_end_seconds']:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=Path("results/notebooks"),
                        help="folder of executed notebooks (default results/notebooks)")
    parser.add_argument("--json", type=Path, help="also write the profile as JSON here")
    arguments = parser.parse_args()
    result = profile(arguments.notebooks)
    print_table(result)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
