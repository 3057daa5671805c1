"""The evaluation commands as functions: load data and encoder, run a protocol, write the results file.

Used by ``usdrl probe|retrieve|finetune|ensemble`` and by the notebooks. Every results file holds the
metrics, the exact settings, the checkpoint's and the data manifest's checksums, the git revision,
the device and the elapsed time. ``checkpoint="random"`` evaluates a random-initialised encoder: the
row that shows what pretraining adds.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usdrl.data.atomic_files import atomic_file, check_overwritable, is_npz_holding
from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import file_sha256
from usdrl.data.store import SkeletonSplit, load_split
from usdrl.evaluate.ensemble import ensemble_scores
from usdrl.evaluate.features import cached_features, checkpoint_identity, open_encoder
from usdrl.evaluate.finetune import finetune, labelled_subset
from usdrl.evaluate.linear import train_linear_probe, validation_split
from usdrl.evaluate.results import is_results_file, provenance, write_results
from usdrl.evaluate.retrieval import knn_accuracy
from usdrl.settings.sections import Params, ProbeSection
from usdrl.training.checkpoint_files import load_tensors, save_tensors_atomically
from usdrl.training.runtime import resolve_device


def _splits(data_root: str | Path, benchmark: str) -> tuple[SkeletonSplit, SkeletonSplit]:
    root = Path(data_root)
    if not (root / MANIFEST_NAME).is_file():
        raise DataError(f"{root} is not a prepared dataset; prepare it first, e.g. usdrl prepare synthetic --out "
                        f"{root.parent if root.name in ('actions', 'streams') else root}")
    return load_split(root, benchmark, "train"), load_split(root, benchmark, "test")


def refuse_folders(*paths: str | Path) -> None:
    """Results files are written to a temporary name and renamed: an existing folder in their place is refused
    before any work (nothing is written)."""
    for path in map(Path, paths):
        if path.is_dir():
            raise DataError(f"--out {path} is a folder; the results go to a file, e.g. {path / 'results.json'}")


def is_probe_head(path: Path) -> bool:
    """Whether ``path`` is a probe head of ``save_probe_head``: safetensors with class names and modality."""
    tensors, metadata = load_tensors(path)
    return {"class_names", "modality"} <= set(metadata) and "weight" in tensors


def refuse_foreign_outputs(out: str | Path, overwrite: bool, probe: bool = False) -> None:
    """Before any work: an existing results file (and for a probe its scores and head beside it) is replaced only
    when usdrl wrote it, or with ``overwrite``; else a DataError naming it (``check_overwritable``)."""
    check_overwritable(out, is_results_file, overwrite, "a results file")
    if probe:
        check_overwritable(Path(out).with_suffix(".scores.npz"), lambda path: is_npz_holding(
            path, ("scores", "labels", "names")), overwrite, "a probe's score file")
        check_overwritable(probe_head_path(out), is_probe_head, overwrite, "a probe's head")


def frozen_features(data_root: str | Path, benchmark: str, checkpoint: str | Path | None, params: Params,
                    modality: str | None = None, progress: bool = False, backbone: str | None = None) -> dict[str, Any]:
    """Train and test instance features of a frozen encoder (cached), with labels and provenance.

    ``modality`` / ``backbone`` None: the checkpoint's recorded ones (params for random and released
    encoders); given ones that differ from our checkpoint's are refused (CheckpointError naming both).
    """
    train, test = _splits(data_root, benchmark)
    encoder, recorded = open_encoder(checkpoint, params.model, train.layout, seed=params.pretrain.seed,
                                     modality=modality, backbone=backbone)
    modality = modality or recorded or params.pretrain.modality
    identity = checkpoint_identity(checkpoint, params.model, params.pretrain.seed)
    device = resolve_device(params.evaluation.device)
    state_before = {k: v.clone() for k, v in encoder.state_dict().items()}
    features = {}
    for split in (train, test):
        features[split.split], _ = cached_features(encoder, identity, split, modality, device, params.evaluation.cache_dir,
                                                   params.evaluation.batch_size, params.evaluation.precision, progress)
    encoder = encoder.cpu()
    unchanged = all((state_before[k] == v).all() for k, v in encoder.state_dict().items())
    return {"train": train, "test": test, "train_features": features["train"], "test_features": features["test"],
            "encoder": encoder, "encoder_unchanged": bool(unchanged), "identity": identity, "device": device,
            "modality": modality}


def run_linear_probe(data_root: str | Path, benchmark: str, checkpoint: str | Path | None, out: str | Path,
                     params: Params, modality: str | None = None, progress: bool = False,
                     backbone: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Linear probe on cached frozen features; writes ``out`` (JSON) and ``out`` with .scores.npz. Existing files
    there usdrl did not write are refused unless ``overwrite`` (``refuse_foreign_outputs``)."""
    started = time.perf_counter()
    refuse_folders(out, Path(out).with_suffix(".scores.npz"), probe_head_path(out))
    refuse_foreign_outputs(out, overwrite, probe=True)
    data = frozen_features(data_root, benchmark, checkpoint, params, modality, progress, backbone)
    modality = data["modality"]
    train, test = data["train"], data["test"]
    backbone = data["encoder"].config.backbone
    rate = params.probe.learning_rate(backbone, str(train.manifest.get("dataset")), benchmark)
    train_features, train_labels = data["train_features"], train.label
    validation = None
    if params.probe.validation_fraction > 0:
        kept, held_out = validation_split(train.label, train.ids.get("subject"), params.probe.validation_fraction,
                                          params.probe.seed)
        validation = (train_features[held_out], train.label[held_out])
        train_features, train_labels = train_features[kept], train.label[kept]
    result = train_linear_probe(train_features, train_labels, data["test_features"], test.label, train.num_classes,
                                params.probe, rate, data["device"], validation)
    out = Path(out)
    scores_path = out.with_suffix(".scores.npz")
    with atomic_file(scores_path, suffix=".npz") as temporary:  # numpy.savez adds .npz to a name without it
        np.savez(temporary, scores=result["test_scores"], labels=test.label, names=np.array(test.names))
    head_path = save_probe_head(result["head"], out, train.class_names, modality)
    metrics = {**result["metrics"], "encoder_unchanged": data["encoder_unchanged"]}
    settings_record = {"probe": probe_record(params.probe, rate), "modality": modality,
                       "model": data["encoder"].encoder_record(),
                       "validation_fraction": params.probe.validation_fraction,
                       "features": "instance features of the frozen encoder (eval mode), whole sequence resized"}
    write_results(out, "linear_probe", {**metrics, "history": result["history"]}, settings_record,
                  {**provenance(checkpoint, data["identity"], train), "scores": str(scores_path),
                   "head": str(head_path)},
                  data["device"], started)
    return {"metrics": metrics, "out": str(out), "scores": str(scores_path), "head": str(head_path)}


def probe_record(settings: ProbeSection, learning_rate: float) -> dict[str, Any]:
    """What one probe ran with, as its results file records it (``settings.probe``): the probe section's schedule
    with the learning rate resolved for the backbone, dataset and benchmark."""
    return {"epochs": settings.epochs, "batch_size": settings.batch_size, "learning_rate": learning_rate,
            "momentum": settings.momentum, "weight_decay": settings.weight_decay,
            "milestones": tuple(settings.milestones), "learning_rate_decay": settings.learning_rate_decay,
            "seed": settings.seed, "feature_normalization": settings.feature_normalization}


def probe_head_path(results: str | Path) -> Path:
    """Where ``run_linear_probe`` keeps the trained head of the results file ``results``."""
    return Path(results).with_suffix(".head.safetensors")


def save_probe_head(head: dict[str, Any], results: str | Path, class_names: list[str], modality: str) -> Path:
    """The probe's Linear(2H, classes) and the feature statistics it was trained on, as safetensors beside the
    results file (what ``usdrl export --probe`` puts in a model bundle); class names and modality as metadata."""
    return save_tensors_atomically(head, probe_head_path(results),
                                   {"class_names": json.dumps(list(class_names)), "modality": modality})


def run_retrieval(data_root: str | Path, benchmark: str, checkpoint: str | Path | None, out: str | Path,
                  params: Params, modality: str | None = None, progress: bool = False,
                  backbone: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """kNN accuracy of test features against the training features, for every k of params.retrieval."""
    started = time.perf_counter()
    refuse_folders(out)
    refuse_foreign_outputs(out, overwrite)
    data = frozen_features(data_root, benchmark, checkpoint, params, modality, progress, backbone)
    modality = data["modality"]
    metrics = {f"knn{k}": knn_accuracy(data["train_features"], data["train"].label, data["test_features"],
                                       data["test"].label, k, params.retrieval.chunk_size, data["device"])
               for k in params.retrieval.k}
    write_results(out, "knn_retrieval", metrics, {"retrieval": asdict(params.retrieval), "modality": modality,
                                                  "model": data["encoder"].encoder_record(), "similarity": "cosine"},
                  provenance(checkpoint, data["identity"], data["train"]), data["device"], started)
    return {"metrics": metrics, "out": str(out)}


def run_finetune(data_root: str | Path, benchmark: str, checkpoint: str | Path | None, out: str | Path,
                 params: Params, fraction: float, seeds: list[int] | None = None, modality: str | None = None,
                 progress: bool = False, backbone: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Semi-supervised fine-tuning for each seed (subset and head); mean and std over seeds.

    Each seed draws its labelled subset, data order and augmentation and, fine-tuning a checkpoint (ours or
    released), the new head, whatever seeds ran before; a random encoder, head included, is the pretraining seed's.
    ``modality`` / ``backbone`` None: the checkpoint's recorded ones (see ``frozen_features``)."""
    started = time.perf_counter()
    refuse_folders(out)
    refuse_foreign_outputs(out, overwrite)
    train, test = _splits(data_root, benchmark)
    device = resolve_device(params.evaluation.device)
    settings = params.finetune
    runs, encoder_config = [], None
    requested = modality
    for seed in (seeds if seeds is not None else list(settings.seeds)):
        positions = labelled_subset(len(train), fraction, seed)
        model, recorded = open_encoder(checkpoint, params.model, train.layout, seed=params.pretrain.seed,
                                       num_classes=train.num_classes, modality=requested, backbone=backbone,
                                       head_seed=seed)  # a checkpoint's new head: this seed's, whatever ran before
        modality = requested or recorded or params.pretrain.modality
        encoder_config = model.encoder_record()
        result = finetune(model, train, test, positions, settings, device, seed, modality,
                          params.evaluation.precision, progress)
        runs.append({"seed": seed, "top1": result["metrics"]["top1"], "labelled": len(positions),
                     "labelled_positions": positions.tolist(), "history": result["history"]})
    identity = checkpoint_identity(checkpoint, params.model, params.pretrain.seed)
    accuracies = np.array([run["top1"] for run in runs])
    metrics = {"top1": float(accuracies.mean()), "top1_std": float(accuracies.std()), "seeds": len(runs),
               "fraction": fraction, "per_seed": [{k: v for k, v in run.items() if k != "labelled_positions"}
                                                  for run in runs]}
    write_results(out, "semi_supervised", {**metrics, "labelled_positions": {r["seed"]: r["labelled_positions"] for r in runs}},
                  {"finetune": asdict(settings), "modality": modality, "fraction": fraction,
                   "model": encoder_config, "precision": params.evaluation.precision,
                   "labelled_positions": "positions in the training split, per seed (see metrics)"},
                  provenance(checkpoint, identity, train), device, started)
    return {"metrics": metrics, "out": str(out)}


def run_ensemble(score_files: list[str | Path], out: str | Path, weights: list[float] | None = None,
                 normalise: str = "none", dataset: str | None = None, benchmark: str | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Sum of the probes' score files (``ensemble_scores``, weighted and normalised as asked); writes ``out`` (JSON
    with the files' sha256) and returns its metrics and path."""
    started = time.perf_counter()
    refuse_folders(out)
    refuse_foreign_outputs(out, overwrite)
    metrics = ensemble_scores(score_files, weights, normalise)
    write_results(out, "ensemble", metrics, {"score_files": [str(p) for p in score_files], "dataset": dataset,
                                             "benchmark": benchmark},
                  {"scores_sha256": [file_sha256(Path(p)) for p in score_files]},
                  torch.device("cpu"), started)
    return {"metrics": metrics, "out": str(out)}
