"""Ablations (paper Table 5 and Figure 4): pretrain a variant, then probe and retrieve with it.

Every variant of one study uses the same (shorter) schedule from params.yaml (``ablation``), so the
rows compare with each other; the headline tables use the full runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.evaluate.protocols import run_linear_probe, run_retrieval
from usdrl.evaluate.results import write_results
from usdrl.settings.sections import Params
from usdrl.training.pretrain import learning_rate_at, pretrain
from usdrl.training.run_record import read_run_record
from usdrl.training.runtime import autocast_settings, resolve_device
from usdrl.training.settings_from_data import resolve_for_data

# settings of a pretraining run that change nothing in its first epochs (the schedule is compared epoch by epoch)
SCHEDULE_ONLY = ("epochs", "milestones", "checkpoint_every", "last_checkpoint_seconds", "log_every", "workers")

LOSS_VARIANTS = {
    "none": ("DSTE no VAC, no XC, no MG-FD", {"variance_covariance_weight": 0.0, "cross_correlation_weight": 0.0, "tau": 0.0}),
    "vac_mg": ("DSTE VAC + MG-FD", {"cross_correlation_weight": 0.0}),
    "vac_xc": ("DSTE VAC + XC", {"tau": 0.0}),
    "all": ("DSTE VAC + XC + MG-FD (all)", {}),
}


def ablation_params(params: Params, model_changes: dict[str, Any], loss_changes: dict[str, Any]) -> Params:
    """The params of one variant: the ablation schedule (as given: no minimum of steps), and the changed model or
    loss settings."""
    pretrain_section = dataclasses.replace(params.pretrain, epochs=params.ablation.epochs,
                                           milestones=tuple(params.ablation.milestones),
                                           checkpoint_every=params.ablation.epochs, minimum_steps=0)
    return dataclasses.replace(params, pretrain=pretrain_section,
                               model=dataclasses.replace(params.model, **model_changes),
                               loss=dataclasses.replace(params.loss, **loss_changes))


def reusable_checkpoint(candidates: list[Path], variant: Params, manifest_fingerprint: str | None,
                        benchmark: str) -> Path | None:
    """A checkpoint an existing run saved after exactly the variant's epochs, where that run had the variant's
    data, model, augmentation, loss, seed and precision and the same learning rate in each of those epochs
    (the main run of the demo is the alpha 0.5 / full-loss variant, trained longer). None if there is none."""
    settings = variant.pretrain
    dtype, _ = autocast_settings(resolve_device(settings.device), settings.precision)
    wanted = {"model": dataclasses.asdict(variant.model), "augment": dataclasses.asdict(variant.augment),
              "loss": dataclasses.asdict(variant.loss), "precision": str(dtype or "torch.float32"),
              "pretrain": {k: v for k, v in dataclasses.asdict(settings).items() if k not in SCHEDULE_ONLY},
              "data": {"benchmark": benchmark, "manifest_fingerprint": manifest_fingerprint}, "world_size": 1}
    rates = [learning_rate_at(epoch, settings) for epoch in range(settings.epochs)]
    for run_dir in candidates:
        checkpoint = Path(run_dir) / "checkpoints" / f"checkpoint_{settings.epochs:04d}.pt"
        run = read_run_record(run_dir, missing_ok=True) if checkpoint.is_file() else None
        if run is None:
            continue
        recorded = {"model": run.get("model"), "augment": run.get("augment"), "loss": run.get("loss"),
                    "precision": run.get("precision"), "world_size": run.get("world_size"),
                    "pretrain": {k: v for k, v in run.get("pretrain", {}).items() if k not in SCHEDULE_ONLY},
                    "data": {k: run.get("data", {}).get(k) for k in ("benchmark", "manifest_fingerprint")}}
        recorded_settings = dataclasses.replace(settings, milestones=tuple(run.get("pretrain", {}).get("milestones", ())))
        same_rates = rates == [learning_rate_at(epoch, recorded_settings) for epoch in range(settings.epochs)]
        if same_rates and json.loads(json.dumps(recorded)) == json.loads(json.dumps(wanted)):
            return checkpoint
    return None


def run_variant(data_root: str | Path, benchmark: str, name: str, out_dir: str | Path, params: Params,
                settings: dict[str, Any], model_changes: dict[str, Any] | None = None,
                loss_changes: dict[str, Any] | None = None, runs_root: str | Path | None = None,
                progress: bool = False, reuse: list[Path] | None = None) -> dict[str, Any]:
    """Pretrain (resumable), probe and retrieve one variant; writes ``out_dir/<name>.json``.

    Pretraining runs go to ``runs_root`` (default ``runs/ablation/<out_dir name>``), beside the other runs.
    ``reuse``: pretraining runs whose checkpoint after the variant's epochs is used instead of training the
    same thing again when their settings match (``reusable_checkpoint``).
    """
    started = time.perf_counter()
    variant, _ = resolve_for_data(ablation_params(params, model_changes or {}, loss_changes or {}), data_root,
                                  benchmark)
    out_dir = Path(out_dir)
    # variants with identical settings (alpha 0.5 and the full loss) share one pretraining run
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(variant.model), dataclasses.asdict(variant.loss),
                                        dataclasses.asdict(variant.pretrain), dataclasses.asdict(variant.augment)],
                                       sort_keys=True).encode()).hexdigest()[:12]
    run_dir = Path(runs_root or Path("runs") / "ablation" / out_dir.name) / digest
    fingerprint = json.loads((Path(data_root) / MANIFEST_NAME).read_text()).get("input_fingerprint")
    checkpoint = reusable_checkpoint(list(reuse or []), variant, fingerprint, benchmark)
    if checkpoint is None:
        pretrain(data_root, benchmark, run_dir, variant.model, variant.augment, variant.loss, variant.pretrain,
                 resume=True, progress=progress)
        checkpoint = run_dir / "checkpoints" / "last.pt"
    else:
        run_dir = checkpoint.parent.parent
    probe = run_linear_probe(data_root, benchmark, checkpoint, out_dir / "probes" / f"{name}.json", variant)
    retrieval = run_retrieval(data_root, benchmark, checkpoint, out_dir / "probes" / f"{name}_knn.json", variant)
    record_run = {"pretraining_run": str(run_dir), "checkpoint": str(checkpoint)}
    probe_file = json.loads(Path(probe["out"]).read_text())
    metrics = {"linear_top1": probe["metrics"]["top1"], "knn1": retrieval["metrics"]["knn1"]}
    record = {**settings, **record_run, "model": dataclasses.asdict(variant.model),
              "loss": dataclasses.asdict(variant.loss), "pretrain": dataclasses.asdict(variant.pretrain)}
    path = out_dir / f"{name}.json"
    write_results(path, "ablation", metrics, record, probe_file["provenance"], resolve_device(params.evaluation.device),
                  started)
    return {"metrics": metrics, "out": str(path)}
