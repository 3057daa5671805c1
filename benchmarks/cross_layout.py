"""Does pretraining on another skeleton layout help, through the joint-name mapping? Printed as a table and written
as JSON.

    python benchmarks/cross_layout.py --out results/benchmarks/cross_layout.json --work /tmp/usdrl_cross_layout

On UTKinect-Action3D (Kinect v1, 20 joints; cross-subject split xsub), with the demo profile's settings, for each
seed (``pretrain.seed`` and ``probe.seed``):

- ``synthetic_ntu25_pretrained_mapped``: an encoder pretrained on the synthetic NTU-25 clips (``usdrl prepare
  synthetic``, benchmark xview, as the demo pipeline), evaluated on UTKinect mapped to ntu25
  (``usdrl.data.mapped_store.map_store``: 20 joints copied, 5 derived, a second absent person);
- ``utkinect_native_pretrained``: an encoder pretrained on UTKinect's own training split, on native UTKinect;
- ``random_init_mapped`` / ``random_init_native``: random-initialised encoders of the same settings.

Each is the project's own protocol: ``usdrl.training.pretrain.pretrain``, then ``run_linear_probe`` and
``run_retrieval`` of ``usdrl.evaluate.protocols`` on frozen features (last probe epoch, kNN k=1). Everything
under ``--work`` is kept: a second start goes on from the runs and results already there; the JSON is rewritten
after every evaluation, so an interrupted run leaves the numbers it has.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from usdrl.data.atomic_files import write_json_atomically
from usdrl.data.mapped_store import map_store
from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic
from usdrl.data.utkinect import prepare_utkinect
from usdrl.evaluate.protocols import run_linear_probe, run_retrieval
from usdrl.settings.params import load_params
from usdrl.training.pretrain import pretrain
from usdrl.training.settings_from_data import resolve_for_data

REPOSITORY = Path(__file__).resolve().parents[1]
CONDITIONS = {  # name -> (pretraining data or None for random init, benchmark of it, evaluation data)
    "synthetic_ntu25_pretrained_mapped": ("synthetic", "xview", "utkinect_ntu25"),
    "utkinect_native_pretrained": ("utkinect", "xsub", "utkinect"),
    "random_init_mapped": (None, None, "utkinect_ntu25"),
    "random_init_native": (None, None, "utkinect"),
}
ORDER = ("random_init_native", "random_init_mapped", "utkinect_native_pretrained", "synthetic_ntu25_pretrained_mapped")


def prepare_data(work: Path, raw: Path, params) -> dict[str, Path]:
    """The synthetic clips, UTKinect clips and UTKinect mapped to ntu25, under ``work`` (kept when up to date)."""
    synthetic = params.data.synthetic
    prepare_synthetic(work / "synthetic", SyntheticConfig(seed=synthetic.seed, subjects=synthetic.subjects,
                                                          replications=synthetic.replications))
    prepare_utkinect(raw, work / "utkinect", progress=False)
    mapped = work / "utkinect_ntu25"
    summary = map_store(work / "utkinect" / "actions", "ntu25", mapped)
    print(summary["mapping"])
    return {"synthetic": work / "synthetic" / "actions", "utkinect": work / "utkinect" / "actions",
            "utkinect_ntu25": mapped}


def summary_of(values: list[float]) -> dict[str, float]:
    """Mean and population standard deviation (as usdrl.evaluate.folds) of one metric over seeds."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def table_lines(rows: dict[str, dict]) -> list[str]:
    """The printed table: per condition, probe top-1 and kNN-1 as mean ± std over the seeds done."""
    lines = [f"{'condition':<36} {'linear probe top-1':>20} {'kNN-1':>20} {'seeds':>6}"]
    for name in CONDITIONS:
        seeds = rows.get(name, {})
        if not seeds:
            lines.append(f"{name:<36} {'(not run)':>20}")
            continue
        probe = summary_of([seed["probe_top1"] for seed in seeds.values()])
        knn = summary_of([seed["knn1"] for seed in seeds.values()])
        lines.append(f"{name:<36} {100 * probe['mean']:>12.1f} ± {100 * probe['std']:<5.1f} "
                     f"{100 * knn['mean']:>12.1f} ± {100 * knn['std']:<5.1f} {len(seeds):>6}")
    return lines


def markdown_table(rows: dict[str, dict]) -> list[str]:
    """The table of docs/cross_layout.md: per condition, probe top-1 and kNN-1 in % as mean ± std, and the seeds."""
    labels = {"synthetic_ntu25_pretrained_mapped": "synthetic NTU-25 pretrained, UTKinect mapped to ntu25",
              "utkinect_native_pretrained": "UTKinect-native pretrained (kinect_v1)",
              "random_init_mapped": "random init, UTKinect mapped to ntu25",
              "random_init_native": "random init, native UTKinect"}
    lines = ["| encoder | linear probe top-1 (%) | kNN-1 (%) | seeds |", "| --- | --- | --- | --- |"]
    for name in CONDITIONS:
        seeds = rows.get(name, {})
        if seeds:
            probe = summary_of([seed["probe_top1"] for seed in seeds.values()])
            knn = summary_of([seed["knn1"] for seed in seeds.values()])
            lines.append(f"| {labels[name]} | {100 * probe['mean']:.1f} ± {100 * probe['std']:.1f} | "
                         f"{100 * knn['mean']:.1f} ± {100 * knn['std']:.1f} | {', '.join(sorted(seeds))} |")
    return lines


def merge(files: list[Path], out: Path) -> None:
    """The rows of several results files of this script (seeds run by separate starts) in one, and its tables."""
    contents = [json.loads(path.read_text()) for path in files]
    rows: dict[str, dict] = {}
    for content in contents:
        for name, seeds in content["rows"].items():
            rows.setdefault(name, {}).update(seeds)
    summary = {name: {"probe_top1": summary_of([s["probe_top1"] for s in seeds.values()]),
                      "knn1": summary_of([s["knn1"] for s in seeds.values()])} for name, seeds in rows.items()}
    write_json_atomically(out, {**contents[0], "seeds": sorted({int(seed) for seeds in rows.values() for seed in seeds}),
                                "rows": rows, "summary": summary, "merged_from": [path.name for path in files],
                                "seconds": {key: value for content in contents for key, value in content["seconds"].items()},
                                "work": [content["work"] for content in contents]})
    print("\n".join(table_lines(rows)))
    print("\n".join(markdown_table(rows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPOSITORY / "results" / "benchmarks" / "cross_layout.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/usdrl_cross_layout"))
    parser.add_argument("--raw", type=Path, default=REPOSITORY.parent / "shared" / "data" / "utkinect")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(ORDER))
    parser.add_argument("--merge", type=Path, nargs="+", metavar="RESULTS",
                        help="merge results files of this script into --out and print the tables; nothing is run")
    arguments = parser.parse_args()
    if arguments.merge:
        merge(arguments.merge, arguments.out)
        return
    started = time.perf_counter()
    work = arguments.work
    work.mkdir(parents=True, exist_ok=True)
    base = load_params(REPOSITORY / "params.yaml", arguments.profile, [f"evaluation.cache_dir={work / 'cache'}"])
    data = prepare_data(work, arguments.raw, base)
    previous = json.loads(arguments.out.read_text()) if arguments.out.is_file() else {}
    rows: dict[str, dict] = previous.get("rows", {}) if previous.get("work") == work.name else {}
    timings: dict[str, float] = previous.get("seconds", {}) if rows else {}
    for seed in arguments.seeds:
        params = load_params(REPOSITORY / "params.yaml", arguments.profile,
                             [f"evaluation.cache_dir={work / 'cache'}", f"pretrain.seed={seed}", f"probe.seed={seed}"])
        for name in (condition for condition in ORDER if condition in arguments.conditions):
            if str(seed) in rows.get(name, {}):
                continue
            began = time.perf_counter()
            pretraining, benchmark, evaluation = CONDITIONS[name]
            checkpoint: str | Path = "random"
            if pretraining is not None:
                run = work / "runs" / f"{pretraining}_seed{seed}"
                pretrain(data[pretraining], benchmark, run, params.model, params.augment, params.loss, params.pretrain,
                         resume=True, progress=False)  # a finished run resumes to its end at once
                checkpoint = run / "checkpoints" / "last.pt"
            resolved, _ = resolve_for_data(params, data[evaluation], "xsub")  # a random encoder's clip length
            folder = work / "results" / f"{name}_seed{seed}"
            probe = run_linear_probe(data[evaluation], "xsub", checkpoint, folder / "probe.json", resolved,
                                     overwrite=True)
            knn = run_retrieval(data[evaluation], "xsub", checkpoint, folder / "knn.json", resolved, overwrite=True)
            rows.setdefault(name, {})[str(seed)] = {"probe_top1": probe["metrics"]["top1"],
                                                    "knn1": knn["metrics"]["knn1"]}
            timings[f"{name}_seed{seed}"] = round(time.perf_counter() - began, 1)
            summary = {name: {"probe_top1": summary_of([s["probe_top1"] for s in seeds.values()]),
                              "knn1": summary_of([s["knn1"] for s in seeds.values()])} for name, seeds in rows.items()}
            write_json_atomically(arguments.out, {
                "benchmark": "cross_layout", "dataset": "UTKinect-Action3D actions, xsub (cross-subject)",
                "profile": arguments.profile, "seeds": arguments.seeds, "work": work.name, "rows": rows,
                "summary": summary, "seconds": timings,
                "wall_seconds_this_start": round(time.perf_counter() - started, 1),
                "machine": {"platform": platform.platform(), "processor": platform.processor(),
                            "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                            "torch": torch.__version__},
                "metrics": "linear probe top-1 (last epoch) and kNN-1 accuracy on xsub/test; mean and population "
                           "std over seeds (pretrain.seed and probe.seed)"})
            print(f"{name} seed {seed}: probe {probe['metrics']['top1']:.4f}, kNN-1 {knn['metrics']['knn1']:.4f} "
                  f"({timings[f'{name}_seed{seed}']:.0f} s)", flush=True)
    print("\n".join(table_lines(rows)))
    print("\n".join(markdown_table(rows)))
    print(f"wall time {time.perf_counter() - started:.0f} s; {arguments.out}")


if __name__ == "__main__":
    main()
