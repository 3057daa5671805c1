"""Cross-validation folds (e.g. UTKinect's leave-one-subject-out ``loso1`` ... ``loso10``): per fold,
pretraining on the fold's training split, then the linear probe and kNN of the pretrained and the
random-initialised encoder on its test split; reported as mean and spread over the folds.

Each fold is a full protocol run of its own (run folder, results files); the summary only aggregates
them, so an interrupted run goes on from the folds already written (``resume``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.errors import DataError
from usdrl.data.store import read_manifest
from usdrl.evaluate.protocols import run_linear_probe, run_retrieval
from usdrl.evaluate.results import write_project_json
from usdrl.settings.sections import Params
from usdrl.training.pretrain import pretrain
from usdrl.training.settings_from_data import resolve_for_data


def fold_benchmarks(data_root: str | Path, family: str) -> list[str]:
    """The benchmarks ``<family>1``, ``<family>2`` ... of a prepared dataset, in fold order."""
    counts = read_manifest(data_root).get("counts", {})
    pattern = re.compile(rf"^{re.escape(family)}(\d+)/train$")
    folds = sorted((int(m.group(1)), f"{family}{m.group(1)}") for key in counts if (m := pattern.match(key)))
    if not folds:
        raise DataError(f"{data_root} has no {family}1, {family}2 ... benchmarks; its benchmarks: "
                        f"{', '.join(sorted({key.split('/')[0] for key in counts}))}")
    return [name for _, name in folds]


def _mean_and_spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}


def run_folds(data_root: str | Path, family: str, out_dir: str | Path, params: Params,
              folds: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Every fold of ``family`` (or the ``folds`` named): OUT/<fold>/run (pretraining), OUT/<fold>/*.json
    (probe and kNN, pretrained and random init), OUT/summary.json (mean, std, min, max over the folds)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    folds = folds or fold_benchmarks(data_root, family)
    rows = []
    for fold in folds:
        folder = out_dir / fold
        pretrain(data_root, fold, folder / "run", params.model, params.augment, params.loss, params.pretrain,
                 resume=True, progress=progress)  # a finished fold resumes to its end at once
        checkpoint = folder / "run" / "checkpoints" / "last.pt"
        row = {"fold": fold}
        resolved, _ = resolve_for_data(params, data_root, fold)  # the random encoder's clip length, as the run's
        for name, source in (("pretrained", checkpoint), ("random_init", "random")):
            probe = run_linear_probe(data_root, fold, source, folder / f"probe_{name}.json", resolved,
                                     progress=progress)
            knn = run_retrieval(data_root, fold, source, folder / f"knn_{name}.json", resolved, progress=progress)
            row[name] = {"top1": probe["metrics"]["top1"], "knn1": knn["metrics"]["knn1"]}
        rows.append(row)
    summary = {name: {metric: _mean_and_spread([row[name][metric] for row in rows]) for metric in ("top1", "knn1")}
               for name in ("pretrained", "random_init")}
    content = {"protocol": "folds", "family": family, "data_root": str(data_root), "folds": rows,
               "summary": summary, "headline": "mean and spread over the folds; last epoch of every probe",
               "elapsed_seconds": round(time.perf_counter() - started, 3)}
    write_project_json(out_dir / "summary.json", content)
    return {"out": str(out_dir / "summary.json"), "summary": summary}
