"""Did pretraining help this data? The pretrained encoder against random init on a held-out part of the training
split (never the test split), over seeds, and the most likely reason when it did not.

Each seed splits the training subjects into folds (``subject_folds``) and draws a random encoder; both frozen
encoders are scored on every fold by a linear probe and kNN-1 trained on the other folds, pooled over all clips.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.store import load_split
from usdrl.evaluate.features import RANDOM, cached_features, checkpoint_identity, open_encoder
from usdrl.evaluate.linear import train_linear_probe
from usdrl.evaluate.retrieval import knn_accuracy
from usdrl.settings.sections import Params
from usdrl.training.run_record import read_run_record
from usdrl.training.runtime import resolve_device
from usdrl.training.settings_from_data import describe, resolve_for_data, valid_lengths

FOLDS = 4
FEW_STEPS = 100  # fewer optimiser steps than this rarely move an encoder away from its initialisation
FEW_CLIPS = 100


def _features(checkpoint, params: Params, split, seed: int, device) -> np.ndarray:
    encoder, recorded = open_encoder(checkpoint, params.model, split.layout, seed=seed)
    modality = recorded or params.pretrain.modality
    identity = checkpoint_identity(checkpoint, params.model, seed)
    features, _ = cached_features(encoder, identity, split, modality, device, params.evaluation.cache_dir,
                                  params.evaluation.batch_size, params.evaluation.precision)
    return features


def subject_folds(labels: np.ndarray, subjects: np.ndarray | None, seed: int) -> list[np.ndarray]:
    """Positions of the training split in ``FOLDS`` (or as many as there are subjects) folds of whole subjects,
    assigned from ``seed``; clips at random when the split records no subjects."""
    rng = np.random.default_rng(seed)
    positions = np.arange(len(labels))
    if subjects is not None and len(np.unique(subjects)) > 1:
        groups = np.array_split(rng.permutation(np.unique(subjects)), min(FOLDS, len(np.unique(subjects))))
        return [positions[np.isin(subjects, group)] for group in groups]
    return [np.sort(fold) for fold in np.array_split(rng.permutation(positions), FOLDS)]


def _held_out_scores(features: np.ndarray, labels: np.ndarray, folds: list[np.ndarray], num_classes: int,
                     params: Params, rate: float, device) -> tuple[float, float]:
    """Probe top-1 and kNN-1 over the folds, each fold predicted from the others (pooled over all clips)."""
    probe_correct, knn_correct = 0.0, 0.0
    for fold in folds:
        rest = np.setdiff1d(np.arange(len(labels)), fold)
        probe = train_linear_probe(features[rest], labels[rest], features[fold], labels[fold], num_classes,
                                   params.probe, rate, device)["metrics"]["top1"]
        knn = knn_accuracy(features[rest], labels[rest], features[fold], labels[fold], 1,
                           params.retrieval.chunk_size, device)
        probe_correct, knn_correct = probe_correct + probe * len(fold), knn_correct + knn * len(fold)
    return probe_correct / len(labels), knn_correct / len(labels)


def likely_reason(run: dict[str, Any], history: list[dict[str, Any]], lengths: np.ndarray) -> str:
    """The most likely reason pretraining did not help, from the run's record (run.json) and its epochs."""
    pretrain = run.get("pretrain", {})
    samples = int(run.get("data", {}).get("samples", 0))
    steps = int(pretrain.get("epochs", 0)) * (samples // max(1, int(pretrain.get("batch_size", 1))))
    crop = run.get("augment", {}).get("minimum_crop")
    uncropped = float(np.mean(lengths <= crop)) if isinstance(crop, int) and len(lengths) else 0.0
    if steps < FEW_STEPS:
        return (f"too few optimiser steps ({steps}): raise pretrain.epochs, or set pretrain.minimum_steps to count "
                f"the schedule in steps")
    if uncropped > 0.5:
        return (f"{100 * uncropped:.0f}% of the clips are never cropped in time (augment.minimum_crop={crop}): set "
                f"augment.minimum_crop=auto")
    if len(history) > 1 and history[-1].get("total", 0) >= history[0].get("total", 0):
        return (f"the loss did not fall ({history[0]['total']:.3g} after the first epoch, {history[-1]['total']:.3g} "
                f"after the last): lower pretrain.learning_rate")
    if samples < FEW_CLIPS:
        return f"only {samples} training clips: pretrain on a larger dataset of the same skeletons and fine-tune"
    return "no clear cause in the run's settings: try more steps (pretrain.minimum_steps) and compare again"


def pretraining_gain(data_root: str | Path, benchmark: str, run_dir: str | Path, params: Params,
                     seeds: int) -> dict[str, Any]:
    """Held-out accuracies (percent) of the run's last checkpoint and of random init for ``seeds`` seeds, their
    mean gains with spread (sample standard deviation), a verdict and, where it did not help, the likely reason."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    split = load_split(data_root, benchmark, "train")
    device = resolve_device(params.evaluation.device)
    rate = params.probe.learning_rate(params.model.backbone, str(split.manifest.get("dataset")), benchmark)
    labels, subjects = np.asarray(split.label), split.ids.get("subject")
    pretrained = _features(checkpoint, params, split, params.pretrain.seed, device)
    rows = []
    for seed in range(seeds):
        folds = subject_folds(labels, subjects, seed)
        random = _features(RANDOM, params, split, seed, device)
        ours = _held_out_scores(pretrained, labels, folds, split.num_classes, params, rate, device)
        theirs = _held_out_scores(random, labels, folds, split.num_classes, params, rate, device)
        rows.append({"seed": seed, "folds": len(folds), "probe": 100 * ours[0], "probe_random": 100 * theirs[0],
                     "knn1": 100 * ours[1], "knn1_random": 100 * theirs[1]})
    gains = {name: np.array([row[name] - row[f"{name}_random"] for row in rows]) for name in ("probe", "knn1")}
    summary = {name: {"gain_mean": float(values.mean()), "gain_std": float(values.std(ddof=1)) if seeds > 1 else 0.0}
               for name, values in gains.items()}
    helped = all(entry["gain_mean"] > 0 for entry in summary.values())
    result = {"held_out": f"held-out training subjects, {rows[0]['folds']} folds (never the test split)",
              "seeds": rows, **summary, "helped": helped, "reason": None}
    if not helped:
        run = read_run_record(run_dir)
        history = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
        history = [record for record in history if "total" in record]
        result["reason"] = likely_reason(run, history, valid_lengths(split))
    return result


def describe_gain(result: dict[str, Any]) -> str:
    """One line: the gains with their spread, and the verdict."""
    parts = [f"{name} {entry['gain_mean']:+.1f} +- {entry['gain_std']:.1f}"
             for name, entry in (("probe", result["probe"]), ("kNN-1", result["knn1"]))]
    line = (f"pretrained minus random init on {result['held_out']}, {len(result['seeds'])} seeds: "
            f"{', '.join(parts)} points")
    if result["helped"]:
        clear = all(entry["gain_mean"] > entry["gain_std"] for entry in (result["probe"], result["knn1"]))
        return f"{line}: pretraining helped" + ("" if clear else " on average, by less than the spread over seeds")
    worse = [name for name, key in (("probe", "probe"), ("kNN-1", "knn1")) if result[key]["gain_mean"] <= 0]
    return f"{line}: pretraining did not help ({' and '.join(worse)}); most likely: {result['reason']}"

def pretraining_check(run_dir: str | Path, data_root: str | Path, benchmark: str, params: Params) -> dict[str, Any]:
    """What to read after pretraining: the settings that followed from the data (run.json's ``automatic``, with
    their rules) and, with ``pretrain.gain_check_seeds`` > 0, the pretrained encoder against random init on
    held-out training subjects (``usdrl.evaluate.gain``; never the test split). Prints both; returns them."""
    run = read_run_record(run_dir)
    automatic = run.get("automatic", {})
    print(f"settings from the data:\n{describe(automatic)}" if automatic else "no setting followed from the data")
    gain = None
    if params.pretrain.gain_check_seeds > 0:
        params = dataclasses.replace(  # the run's backbone and modality: a random encoder like it
            params, model=dataclasses.replace(params.model, backbone=run["model"]["backbone"]),
            pretrain=dataclasses.replace(params.pretrain, modality=run["pretrain"]["modality"]))
        resolved, _ = resolve_for_data(params, data_root, benchmark)
        gain = pretraining_gain(data_root, benchmark, run_dir, resolved, params.pretrain.gain_check_seeds)
        print(describe_gain(gain))
    return {"automatic": automatic, "gain": gain}

