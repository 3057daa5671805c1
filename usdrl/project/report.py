"""Result tables beside the paper's numbers (SPEC.md 6), and the results files the notebooks write themselves.

Tables are built from the results JSON files the protocols write (never from hard-coded numbers of
ours): every row says what it was computed on (dataset, benchmark, samples in the train / test split, as
the results file records them) and where its numbers came from (profile, checkpoint and data checksums).
A notebook's own results file (pretraining, embeddings, a model bundle) gets the same provenance as the
protocols' (``write_with_provenance``). The figures are ``usdrl.plots``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usdrl.data.atomic_files import atomic_file, check_overwritable
from usdrl.evaluate.results import results_provenance, write_project_json
from usdrl.project.pipeline import run_checkpoint

LOSS_COLUMNS = ("epoch", "total", "similarity", "variance_covariance", "cross_correlation")  # dvc.yaml plots

# SPEC.md 6, in percent. Keys: (dataset, benchmark).
PAPER = {
    "linear": {
        "DSTE (joint)": {("ntu60", "xsub"): 85.2, ("ntu60", "xview"): 91.7, ("ntu120", "xsub"): 76.6, ("ntu120", "xset"): 78.1, ("pku2", "xsub"): 54.4},
        "STTR (joint)": {("ntu60", "xsub"): 84.2, ("ntu60", "xview"): 90.8, ("ntu120", "xsub"): 76.0, ("ntu120", "xset"): 76.9, ("pku2", "xsub"): 51.8},
        "DSTE 3 streams (J+M+B)": {("ntu60", "xsub"): 87.1, ("ntu60", "xview"): 93.2, ("ntu120", "xsub"): 79.3, ("ntu120", "xset"): 80.6, ("pku2", "xsub"): 59.7},
    },
    "retrieval": {
        "DSTE (joint)": {("ntu60", "xsub"): 75.0, ("ntu60", "xview"): 89.3, ("ntu120", "xsub"): 63.3, ("ntu120", "xset"): 66.7},
        "STTR (joint)": {("ntu60", "xsub"): 73.7, ("ntu60", "xview"): 88.5, ("ntu120", "xsub"): 58.9, ("ntu120", "xset"): 64.8},
    },
    "semi_supervised": {
        "DSTE (joint) 1%": {("ntu60", "xsub"): 57.3, ("ntu60", "xview"): 60.7},
        "DSTE (joint) 10%": {("ntu60", "xsub"): 80.2, ("ntu60", "xview"): 84.0},
        "STTR (joint) 1%": {("ntu60", "xsub"): 55.0, ("ntu60", "xview"): 59.1},
        "STTR (joint) 10%": {("ntu60", "xsub"): 76.1, ("ntu60", "xview"): 82.0},
    },
    "detection": {
        "DSTE mAP_a@0.5": {("pku1", "xsub"): 75.7}, "DSTE mAP_v@0.5": {("pku1", "xsub"): 74.9},
        "STTR mAP_a@0.5": {("pku1", "xsub"): 66.1}, "STTR mAP_v@0.5": {("pku1", "xsub"): 65.9},
    },
    "ablation": {  # NTU-60 x-sub, recognition / retrieval
        "DSTE no VAC, no XC, no MG-FD": {("ntu60", "xsub"): (77.3, 64.4)},
        "DSTE VAC + MG-FD": {("ntu60", "xsub"): (84.8, 74.5)},
        "DSTE VAC + XC": {("ntu60", "xsub"): (84.6, 74.7)},
        "DSTE VAC + XC + MG-FD (all)": {("ntu60", "xsub"): (85.2, 75.0)},
    },
}


def load_results(directory: str | Path) -> list[dict[str, Any]]:
    """Every results JSON under a directory, with its path."""
    found = []
    for path in sorted(Path(directory).rglob("*.json")):
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(content, dict) and "protocol" in content:
            content["path"] = str(path)
            found.append(content)
    return found


def _short(value: Any) -> str:
    return str(value)[:10] if value else "-"


def _row_label(result: dict[str, Any]) -> str:
    settings = result["settings"]
    backbone = settings.get("model", {}).get("backbone", "dste").upper()
    modality = settings.get("modality", "joint")
    random = result["provenance"].get("checkpoint") == "random"
    return f"{backbone} ({modality})" + (" random init" if random else "")


def _samples(provenance: dict[str, Any]) -> str:
    """"train / test" sample counts of the split a result was computed on, from its results file."""
    samples = provenance.get("samples") or {}
    if samples.get("train") is None or samples.get("test") is None:
        return "not recorded"
    return f"{samples['train']} / {samples['test']}"


def _ensemble_probes(result: dict[str, Any], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The linear probes whose score files an ensemble summed (found by the score file's name)."""
    names = {Path(path).name for path in result["settings"].get("score_files", [])}
    return [r for r in results
            if r["protocol"] == "linear_probe" and Path(str(r["provenance"].get("scores"))).name in names]


def _ensemble_samples(probes: list[dict[str, Any]]) -> str:
    """The samples of the linear probes an ensemble summed (the ensemble file records none)."""
    found = {_samples(r["provenance"]) for r in probes}
    return found.pop() if len(found) == 1 else "not recorded"


STREAM_LETTERS = {"joint": "J", "motion": "M", "bone": "B"}  # the paper's order: J+M+B


def _ensemble_label(result: dict[str, Any], probes: list[dict[str, Any]]) -> tuple[str, str]:
    """(row label, what was summed) from the probes whose scores the ensemble summed, e.g.
    ("DSTE 3 streams (J+M+B)", "the joint, bone and motion probes'")."""
    names = [Path(path).name for path in result["settings"].get("score_files", [])]
    backbones = {r["settings"].get("model", {}).get("backbone", "dste").upper() for r in probes}
    modality_of = {Path(str(r["provenance"].get("scores"))).name: r["settings"].get("modality", "joint") for r in probes}
    streams = [modality_of[name] for name in names if name in modality_of]  # in the order they were summed
    backbone = backbones.pop() if len(backbones) == 1 else "mixed backbones" if backbones else "unknown backbone"
    if len(streams) != len(names) or len(set(streams)) != len(names) or not set(streams) <= set(STREAM_LETTERS):
        return f"{backbone} {len(names)} streams", f"{len(names)} probes'"
    letters = "+".join(letter for stream, letter in STREAM_LETTERS.items() if stream in streams)
    summed = ", ".join(streams[:-1]) + f" and {streams[-1]}"
    return f"{backbone} {len(names)} streams ({letters})", f"the {summed} probes'"


def _source(result: dict[str, Any], profile: str) -> str:
    provenance = result["provenance"]
    return (f"profile {profile}; checkpoint {_short(provenance.get('checkpoint_sha256')) if provenance.get('checkpoint') != 'random' else 'random'}"
            f"; data {_short(provenance.get('data_manifest_sha256'))}; {Path(result['path']).name}")


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")


def refuse_foreign_tables(columns: list[str], path_stem: Path, title: str, overwrite: bool) -> None:
    """A table's .csv and .md are replaced only when ``_write`` wrote them (the .csv's header is ``columns``, the
    .md's first line its title) or with ``overwrite``; else a DataError naming the file."""
    check_overwritable(path_stem.with_suffix(".csv"), lambda path: _first_line(path) == ",".join(columns),
                       overwrite, "a table")
    check_overwritable(path_stem.with_suffix(".md"), lambda path: _first_line(path) == f"# {title}", overwrite,
                       "a table")


def _write(rows: list[dict[str, Any]], columns: list[str], path_stem: Path, title: str, notes: Iterable[str]) -> None:
    with atomic_file(path_stem.with_suffix(".csv")) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")
    lines += ["", *notes, ""]
    with atomic_file(path_stem.with_suffix(".md")) as temporary:
        temporary.write_text("\n".join(lines))


def _percent(value: float | None) -> str:
    return f"{100 * value:.1f}" if value is not None else "-"


def _paper(table: str, label: str, dataset: str, benchmark: str) -> str:
    value = PAPER.get(table, {}).get(label, {}).get((dataset, benchmark))
    if value is None:
        return "-"
    return " / ".join(f"{v:.1f}" for v in value) if isinstance(value, tuple) else f"{value:.1f}"


def _experiment(result: dict[str, Any]) -> tuple[str, str]:
    return str(result["provenance"].get("dataset")), str(result["provenance"].get("benchmark"))


def _of_protocol(results: list[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    return [result for result in results if result["protocol"] == protocol]


def _protocol_rows(results: list[dict[str, Any]], protocol: str, table: str, metric: str,
                   profile: str) -> list[dict[str, Any]]:
    """One row per results file of a protocol: its metric beside the paper's number for that row."""
    rows = []
    for result in _of_protocol(results, protocol):
        dataset, benchmark = _experiment(result)
        label = _row_label(result)
        rows.append({"table": table, "row": label, "dataset": dataset, "benchmark": benchmark,
                     "samples": _samples(result["provenance"]),
                     "ours": _percent(result["metrics"].get(metric)), "paper": _paper(table, label, dataset, benchmark),
                     "source": _source(result, profile)})
    return rows


TABLE_COLUMNS = ["table", "row", "dataset", "benchmark", "samples", "ours", "paper", "source"]


def _by_experiment(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["dataset"], r["benchmark"], r["row"]))


def _common_notes(profile: str) -> list[str]:
    """The notes under every table: which epoch, what the samples column counts, where the paper's numbers are."""
    return [f"Ours: the last epoch's result (never a best-over-epochs number), profile `{profile}`.",
            "Samples: train / test samples (detection: sequences) of the split the row was computed on, as "
            "its results file records them; a row on a subset of a dataset is not the paper's benchmark.",
            "Paper: SPEC.md 6 (the published numbers, released implementation). '-' where the paper has no "
            "such number (the synthetic dataset is ours)."]


def _ensemble_rows(results: list[dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """One linear-table row per ensemble results file, labelled by the streams of the probes it summed."""
    rows = []
    for result in _of_protocol(results, "ensemble"):
        dataset, benchmark = result["settings"].get("dataset", "-"), result["settings"].get("benchmark", "-")
        probes = _ensemble_probes(result, results)
        label, summed = _ensemble_label(result, probes)
        rows.append({"table": "linear", "row": label, "dataset": dataset, "benchmark": benchmark,
                     "samples": _ensemble_samples(probes), "ours": _percent(result["metrics"]["top1"]),
                     "paper": _paper("linear", label, dataset, benchmark),
                     "source": f"profile {profile}; sum of {summed} scores; {Path(result['path']).name}"})
    return rows


def _semi_supervised_rows(results: list[dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """One row per semi-supervised results file: the label fraction in the row, the seeds' spread in ``ours``."""
    rows = []
    for result in _of_protocol(results, "semi_supervised"):
        dataset, benchmark = _experiment(result)
        fraction = result["metrics"]["fraction"]
        label = f"{_row_label(result)} {fraction * 100:g}%"
        seeds = result["metrics"]["seeds"]
        ours = _percent(result["metrics"]["top1"]) + (f" +- {100 * result['metrics']['top1_std']:.1f} ({seeds} seeds)" if seeds > 1 else "")
        rows.append({"table": "semi_supervised", "row": label, "dataset": dataset, "benchmark": benchmark,
                     "samples": _samples(result["provenance"]), "ours": ours,
                     "paper": _paper("semi_supervised", label, dataset, benchmark), "source": _source(result, profile)})
    return rows


def _detection_rows(results: list[dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """Two rows (mAP_a, mAP_v at overlap 0.5) per detection results file."""
    rows = []
    for result in _of_protocol(results, "detection"):
        provenance = result["provenance"]
        dataset = result["settings"].get("dataset", provenance.get("dataset", "-"))
        benchmark = provenance.get("benchmark", "-")
        backbone = result["settings"]["model"]["backbone"].upper()
        random = provenance.get("checkpoint") == "random"
        at = result["metrics"]["by_overlap"].get("0.5", {})
        for metric in ("mAP_a", "mAP_v"):
            label = f"{backbone} {metric}@0.5" + (" random init" if random else "")
            rows.append({"table": "detection", "row": label, "dataset": dataset, "benchmark": benchmark,
                         "samples": _samples(provenance), "ours": _percent(at.get(metric)),
                         "paper": _paper("detection", label, dataset, benchmark),
                         "source": f"profile {profile}; official PKU-MMD AP; {Path(result['path']).parent.name}"})
    return rows


def _ablation_rows(results: list[dict[str, Any]], profile: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(loss ablation rows, alpha rows): one per ablation results file, ``ours`` as linear top-1 / kNN-1."""
    ablation_rows, alpha_rows = [], []
    for result in _of_protocol(results, "ablation"):
        dataset, benchmark = _experiment(result)
        metrics = result["metrics"]
        ours = f"{_percent(metrics['linear_top1'])} / {_percent(metrics['knn1'])}"
        if result["settings"].get("kind") == "alpha":
            alpha_rows.append({"table": "alpha", "row": f"alpha = {result['settings']['alpha']:g}", "dataset": dataset,
                               "benchmark": benchmark, "samples": _samples(result["provenance"]), "ours": ours,
                               "paper": "-", "source": _source(result, profile)})
        else:
            label = result["settings"]["variant_label"]
            ablation_rows.append({"table": "ablation", "row": label, "dataset": dataset, "benchmark": benchmark,
                                  "samples": _samples(result["provenance"]), "ours": ours,
                                  "paper": _paper("ablation", label, dataset, benchmark),
                                  "source": _source(result, profile)})
    return ablation_rows, alpha_rows


# training samples (PKU-MMD I: videos) of the paper's benchmarks, after the official missing-skeleton lists
BENCHMARK_TRAINING_SAMPLES = {("ntu60", "xsub"): 40091, ("ntu60", "xview"): 37646, ("ntu120", "xsub"): 63026,
                              ("ntu120", "xset"): 54468, ("pku1", "xsub"): 944, ("pku1", "xview"): 717}


def mark_subsets(rows: list[dict[str, Any]]) -> None:
    """Rows computed on fewer training samples than their benchmark has say so in the row itself (``row``), and
    their paper number is given as not comparable."""
    for row in rows:
        official = BENCHMARK_TRAINING_SAMPLES.get((row["dataset"], row["benchmark"]))
        train = str(row["samples"]).split(" / ")[0]
        if official is None or not train.isdigit() or int(train) >= official:
            continue
        row["row"] = f"{row['row']} [subset: {int(train):,} of {official:,} training samples]"
        if row["paper"] != "-":
            row["paper"] = f"({row['paper']}: the benchmark, not comparable)"


def build_tables(results_dir: str | Path, out_dir: str | Path, profile: str, overwrite: bool = False) -> list[Path]:
    """results/tables/{linear,retrieval,semi_supervised,detection,ablation,alpha}.{md,csv}; table files there that
    usdrl did not write are refused before any is written, unless ``overwrite`` (``refuse_foreign_tables``)."""
    everything = load_results(results_dir)
    # the ablation's own probes belong to the ablation tables only
    results = [r for r in everything if "ablation" not in Path(r["path"]).parts or r["protocol"] == "ablation"]
    out_dir = Path(out_dir)
    notes = _common_notes(profile)

    linear = _protocol_rows(results, "linear_probe", "linear", "top1", profile) + _ensemble_rows(results, profile)
    retrieval = _protocol_rows(results, "knn_retrieval", "retrieval", "knn1", profile)
    ablation, alpha = _ablation_rows(results, profile)
    ablation_notes = notes + ["Each cell: linear top-1 / kNN-1 (%). Ablation runs use the ablation's own (shorter) "
                              "pretraining schedule (params.yaml: ablation), so compare rows with each other."]
    tables = [  # (rows, name, title, notes)
        (_by_experiment(linear), "linear", "Linear evaluation (Table 1): top-1 accuracy (%)", notes),
        (_by_experiment(retrieval), "retrieval", "kNN-1 retrieval (Table 2): accuracy (%)", notes),
        (_by_experiment(_semi_supervised_rows(results, profile)), "semi_supervised",
         "Semi-supervised fine-tuning (Table 3): top-1 accuracy (%)",
         notes + ["The paper does not publish its fine-tuning recipe; ours is in params.yaml (finetune)."]),
        (sorted(_detection_rows(results, profile), key=lambda r: (r["dataset"], r["row"])), "detection",
         "Temporal action detection (Table 4): mAP (%) at overlap 0.5",
         notes + ["mAP_a / mAP_v use the official PKU-MMD definition; the VOC-style figures are in each "
                  "results.json (not comparable)."]),
        (sorted(ablation, key=lambda r: r["row"]), "ablation", "Loss ablation (Table 5): recognition / retrieval (%)",
         ablation_notes),
        (sorted(alpha, key=lambda r: r["row"]), "alpha", "Alpha ablation (Figure 4): recognition / retrieval (%)",
         ablation_notes + ["Paper (Figure 4, NTU-60 x-sub): alpha = 0 and alpha = 1 are clearly worse than "
                           "0 < alpha < 1."]),
    ]
    for rows, _, _, _ in tables:
        mark_subsets(rows)
    for _, name, title, _ in tables:
        refuse_foreign_tables(TABLE_COLUMNS, out_dir / name, title, overwrite)
    for rows, name, title, table_notes in tables:
        _write(rows, TABLE_COLUMNS, out_dir / name, title, table_notes)
    return [out_dir / f"{name}.md" for _, name, _, _ in tables]


def write_with_provenance(path: str | Path, content: dict[str, Any], checkpoint: str | Path, data_root: str | Path,
                          benchmark: str) -> Path:
    """``content`` with its ``provenance`` (``usdrl.evaluate.results.results_provenance``: the same as a protocol's
    results file) as a JSON file, written atomically (paths inside the project relative to its root)."""
    return write_project_json(path, {**content, "provenance": results_provenance(checkpoint, data_root, benchmark)})


def pretraining_history(log_path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records (losses, seconds, samples per second) of a run's log.jsonl, every epoch of a
    resumed run included; the per-step records are left out."""
    return [json.loads(line) for line in Path(log_path).read_text().splitlines() if '"samples_per_second"' in line]


def write_pretraining_results(root: str | Path, run: str, history: list[dict[str, Any]], profile: str,
                              data_root: str | Path, benchmark: str,
                              check: dict[str, Any] | None = None) -> dict[str, Path]:
    """results/pretrain/<run>.json (the last epoch, epochs, seconds, the checkpoint, provenance) and
    results/pretrain/loss/<run>.csv (``LOSS_COLUMNS`` per epoch: what ``dvc plots show`` draws) of runs/<run>,
    from its ``history`` (``pretraining_history``); ``check``: what ``pipeline.pretraining_check`` found."""
    root = Path(root)
    checkpoint = run_checkpoint(root, run)
    loss_file = root / "results" / "pretrain" / "loss" / f"{run}.csv"
    with atomic_file(loss_file) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(LOSS_COLUMNS)
        writer.writerows([record[column] for column in LOSS_COLUMNS] for record in history)
    summary = write_with_provenance(root / "results" / "pretrain" / f"{run}.json", {
        "run": run, "profile": profile, "final": history[-1], "epochs": len(history),
        "seconds": sum(record["seconds"] for record in history), "checkpoint": str(checkpoint.relative_to(root)),
        **(check or {})},
        checkpoint, data_root, benchmark)
    return {"summary": summary, "loss": loss_file}
