"""Names and places shared by the notebooks and dvc.yaml: the project root, dataset folders, run names,
the check that data is prepared (with the command that prepares it) and the headline metrics files.

Every notebook starts with ``root, params = load_project(params_file, profile, overrides, project_root)``
and resolves every path from ``root``, so it runs the same whatever the kernel's working directory
(JupyterLab, and papermill as dvc.yaml runs it with ``--cwd notebooks``, start it in ``notebooks/``). A notebook
that evaluates a pretraining run then opens it with ``run = open_run(root, params, dataset, benchmark, backbone,
modality)``: the benchmark, the run's name, its checkpoint, the prepared data and the params with its backbone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from usdrl.data.atomic_files import write_json_atomically
from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.errors import DataError
from usdrl.data.project_paths import PROJECT_MARKERS
from usdrl.settings.params import load_params
from usdrl.settings.sections import ConfigError, Params
from usdrl.training.run_record import read_run_record, run_record_path
from usdrl.training.settings_from_data import resolve_for_data

DEFAULT_BENCHMARK = {"synthetic": "xview", "utkinect": "xsub", "ntu60": "xsub", "ntu120": "xsub", "pku1": "xsub",
                     "pku2": "xsub"}
PREPARED_IN_TWO_FORMS = ("synthetic", "utkinect")  # DATA/<name>/actions (trimmed) and DATA/<name>/streams (untrimmed)
PREPARE_COMMANDS = {
    "synthetic": "usdrl prepare synthetic --out {root}/synthetic",
    "utkinect": "usdrl prepare utkinect --raw <UTKinect folder with joints_s01_e01.txt ...> --out {root}/utkinect",
    "ntu60": "usdrl prepare ntu60 --raw <nturgb+d_skeletons/> --out {root}/ntu60 --missing NTU_RGBD_samples_with_missing_skeletons.txt",
    "ntu120": "usdrl prepare ntu120 --raw <skeletons/> --out {root}/ntu120 --missing NTU_RGBD120_samples_with_missing_skeletons.txt",
    "pku1": "usdrl prepare pku1 --raw <PKU_Skeleton_Renew/> --labels <Train_Label_PKU_final/> --splits <Split/> --out {root}/pku1",
    "pku2": "usdrl prepare pku2 --raw <skeleton/> --labels <label/> --splits <split/> --out {root}/pku2",
}
PIPELINE_PREPARES = {"synthetic": "dvc repro data_prep"}  # the only dataset dvc repro prepares (dvc.yaml)


def find_project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding dvc.yaml or params.yaml."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if any((folder / marker).is_file() for marker in PROJECT_MARKERS):
            return folder
    raise ConfigError(f"no {' or '.join(PROJECT_MARKERS)} in {start} or any folder above it: open the notebook "
                      f"inside the usdrl repository, or pass the repository as project_root "
                      f"(papermill: -p project_root PATH)")


def override_list(overrides: str | Sequence[str] | None) -> list[str]:
    """``section.key=value`` settings as a list: a list as given, or text holding a YAML/JSON list or one setting.

    papermill's ``-p overrides '["pretrain.epochs=1"]'`` passes the text (its ``-y`` passes the list itself).
    """
    if overrides is None:
        return []
    if not isinstance(overrides, str):
        return [str(item) for item in overrides]
    try:
        parsed = yaml.safe_load(overrides)
    except yaml.YAMLError as error:
        raise ConfigError(f"overrides {overrides!r}: not a YAML list of section.key=value ({error})") from None
    if parsed is None:
        return []
    if isinstance(parsed, str):
        return [parsed]
    if isinstance(parsed, list):
        return [str(item) for item in parsed]
    raise ConfigError(f"overrides {overrides!r}: give a list of section.key=value, e.g. '[\"pretrain.epochs=1\"]'")


def load_project(params_file: str | Path = "params.yaml", profile: str | None = None,
                 overrides: str | Sequence[str] | None = (),
                 project_root: str | Path | None = None) -> tuple[Path, Params]:
    """The project root (``project_root``, else found above the working directory) and its params (the
    profile and ``overrides`` applied; ``auto`` settings are resolved from the data by ``open_run``).
    ``overrides`` is a list of ``section.key=value`` or text holding one (``override_list``).

    A relative ``params_file`` is read from the root. The params' relative folders (``data.root``,
    ``evaluation.cache_dir``) are made absolute from the root; results/, figures/ and runs/ are
    ``root / ...`` in the notebooks.
    """
    if project_root is None:
        root = find_project_root()
    else:
        root = Path(project_root).resolve()
        if not root.is_dir():
            raise ConfigError(f"project_root {root} is not a folder; pass the repository (the folder of dvc.yaml)")
    params = load_params(root / params_file, profile, override_list(overrides))
    utkinect = dataclasses.replace(params.data.utkinect, raw=str(root / params.data.utkinect.raw))
    data = dataclasses.replace(params.data, root=str(root / params.data.root), utkinect=utkinect)
    evaluation = dataclasses.replace(params.evaluation, cache_dir=str(root / params.evaluation.cache_dir))
    return root, dataclasses.replace(params, data=data, evaluation=evaluation)


def benchmark_or_default(dataset: str, benchmark: str | None) -> str:
    """``benchmark`` when given, else the dataset's default one (``DEFAULT_BENCHMARK``); a DataError for a dataset
    without one."""
    if benchmark:
        return benchmark
    if dataset not in DEFAULT_BENCHMARK:
        raise DataError(f"no default benchmark for dataset {dataset!r}; pass benchmark=...")
    return DEFAULT_BENCHMARK[dataset]


def dataset_root(params: Params, dataset: str, untrimmed: bool = False) -> Path:
    """Folder of a prepared dataset; the synthetic data has trimmed ``actions`` and untrimmed ``streams``."""
    root = Path(params.data.root)
    if dataset in PREPARED_IN_TWO_FORMS:
        return root / dataset / ("streams" if untrimmed else "actions")
    return root / dataset


def require_prepared(params: Params, dataset: str, untrimmed: bool = False) -> Path:
    """The dataset folder, or a DataError naming the command that prepares it."""
    path = dataset_root(params, dataset, untrimmed)
    if not (path / MANIFEST_NAME).is_file():
        command = PREPARE_COMMANDS.get(dataset, "usdrl prepare <dataset> --out {root}/<dataset>")
        command = command.format(root=params.data.root)
        pipeline = (f"\nor, in the repository: {PIPELINE_PREPARES[dataset]} (the pipeline prepares this dataset)"
                    if dataset in PIPELINE_PREPARES else "")
        raise DataError(f"dataset {dataset!r} is not prepared ({path / MANIFEST_NAME} is missing). Prepare it with:\n"
                        f"    {command}{pipeline}")
    return path


def run_name(dataset: str, benchmark: str, backbone: str, modality: str) -> str:
    """The pretraining run's name, ``<dataset>_<benchmark>_<backbone>_<modality>`` (its folder under runs/)."""
    return f"{dataset}_{benchmark}_{backbone}_{modality}"


def run_checkpoint(root: str | Path, run: str) -> Path:
    """The last checkpoint of pretraining run ``run`` of the project at ``root``."""
    return Path(root) / "runs" / run / "checkpoints" / "last.pt"


def require_checkpoint(root: str | Path, params: Params, run: str) -> Path:
    """The last checkpoint of a pretraining run, or an error naming the commands that make it."""
    path = run_checkpoint(root, run)
    if path.is_file():
        return path
    parts = run.rsplit("_", 3)  # run_name's dataset_benchmark_backbone_modality
    flags = "".join(f" -p {name} {value}" for name, value in zip(("dataset", "benchmark", "backbone", "modality"), parts)
                    ) if len(parts) == 4 else " -p dataset <dataset> -p benchmark <benchmark> ..."
    command = (f"mkdir -p results/notebooks && papermill notebooks/02_pretrain.ipynb "
               f"results/notebooks/02_pretrain_{run}.ipynb{flags} -p profile {params.profile}")
    pipeline = f"\nor: dvc repro pretrain@{run}" if run in params.pipeline.runs else ""
    raise FileNotFoundError(f"{path} does not exist: pretrain first, in {Path(root)}:\n    {command}{pipeline}")


@dataclasses.dataclass(frozen=True)
class PretrainedRun:
    """A pretraining run opened for evaluation by ``open_run``: everything a notebook needs to evaluate it."""

    name: str  # runs/<name>; results files are named after it
    root: Path  # the project root
    dataset: str
    benchmark: str  # the benchmark evaluated (the dataset's default when the notebook passed None)
    backbone: str  # the run's backbone (also params.model.backbone)
    modality: str | None  # the run's modality (None only when neither asked for nor recorded)
    params: Params  # the project's params with model.backbone = backbone (what a random-init encoder is built from)
    data_root: Path  # the prepared dataset evaluated
    checkpoint: Path  # runs/<name>/checkpoints/last.pt


def recorded_run_settings(run_folder: str | Path) -> dict[str, str]:
    """The backbone and modality a pretraining run was started with (its run record, as usdrl pretrain writes it);
    empty for a folder without one (a checkpoint put there by hand). A damaged run record is a TrainingError
    naming it (``read_run_record``)."""
    settings = read_run_record(run_folder, missing_ok=True) or {}
    recorded = {}
    for name, section in (("backbone", "model"), ("modality", "pretrain")):
        values = settings.get(section)
        value = values.get(name) if isinstance(values, dict) else None
        if isinstance(value, str):
            recorded[name] = value
    return recorded


def open_run(root: str | Path, params: Params, dataset: str, benchmark: str | None, backbone: str | None = None,
             modality: str | None = None, pretrain_run: str | None = None, untrimmed: bool = False) -> PretrainedRun:
    """Open the pretraining run a notebook evaluates, checking what it needs before any work.

    The run is ``pretrain_run`` or, by default, ``run_name(dataset, benchmark, backbone, modality)``; its
    checkpoint must exist (``require_checkpoint``: the error names the command that makes it) and ``dataset``
    must be prepared (``require_prepared``; ``untrimmed``: its untrimmed sequences, for detection).
    ``backbone`` / ``modality`` None: the ones the run recorded (run.json). Given ones that differ from the
    recorded ones are refused (ConfigError), so a random-initialised encoder, built from the returned params,
    always has the run's backbone.
    """
    root = Path(root)
    benchmark = benchmark_or_default(dataset, benchmark)
    if pretrain_run is None:
        if backbone is None or modality is None:
            raise ConfigError("open_run needs a backbone and a modality to name the run, or pretrain_run")
        pretrain_run = run_name(dataset, benchmark, backbone, modality)
    data_root = require_prepared(params, dataset, untrimmed)
    checkpoint = require_checkpoint(root, params, pretrain_run)
    run_folder = checkpoint.parent.parent
    recorded = recorded_run_settings(run_folder)
    for name, asked in (("backbone", backbone), ("modality", modality)):
        if asked is not None and recorded.get(name, asked) != asked:
            raise ConfigError(f"run {pretrain_run} was pretrained with {name} {recorded[name]!r} "
                              f"({run_record_path(run_folder)}), not {asked!r}: pass {name}={recorded[name]!r}, "
                              f"or the run pretrained with {asked!r}")
    backbone = backbone or recorded.get("backbone") or params.model.backbone
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, backbone=backbone))
    params, _ = resolve_for_data(params, data_root, benchmark)  # a random encoder's clip length, the schedules
    return PretrainedRun(name=pretrain_run, root=root, dataset=dataset, benchmark=benchmark, backbone=backbone,
                         modality=modality or recorded.get("modality"), params=params, data_root=data_root,
                         checkpoint=checkpoint)


def headline_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a results file that the paper reports, in percent (what ``dvc metrics show`` lists)."""
    protocol, metrics = result["protocol"], result["metrics"]
    if protocol in ("linear_probe", "ensemble"):
        chosen = {"top1": metrics["top1"]}
    elif protocol == "knn_retrieval":
        chosen = {name: value for name, value in metrics.items() if name.startswith("knn")}
    elif protocol == "semi_supervised":
        chosen = {f"top1_{metrics['fraction'] * 100:g}pct": metrics["top1"]}
    elif protocol == "detection":
        at = metrics["by_overlap"]["0.5"]
        chosen = {"mAP_a@0.5": at["mAP_a"], "mAP_v@0.5": at["mAP_v"]}
    else:
        raise ValueError(f"no headline metrics for protocol {protocol!r}")
    return {name: round(100 * float(value), 2) for name, value in chosen.items()}


HEADLINE_GROUPS = ("pretrained", "random_init")  # the encoders a headline file compares, as its columns
# the columns of a file's second, third... metric: after the first's in dvc metrics show, which sorts columns by name
HEADLINE_ORDINALS = ("", "second_", "third_", "fourth_", "fifth_", "sixth_")


def headline_label(name: str) -> str:
    """How ``dvc metrics show`` names a headline metric: ``top1 (%)``, ``top1 at 1% labels (%)``."""
    if name.startswith("top1_") and name.endswith("pct"):
        return f"top1 at {name[len('top1_'):-len('pct')]}% labels (%)"
    return f"{name} (%)"


def write_headline_metrics(path: str | Path, results_files: Iterable[str | Path]) -> Path:
    """A small JSON of the headline metrics of results files, the same few columns in every such file.

    ``metric`` names the first metric and ``pretrained`` / ``random_init`` hold it (in percent) for the
    pretrained and the randomly initialised encoder; a second metric of the same file (semi-supervised: another
    fraction of labels; detection: mAP_v) is ``second_metric``, ``second_pretrained``, ``second_random_init``,
    and so on. So ``dvc metrics show`` is one row per file and a few columns. dvc.yaml registers these files as ``metrics``; the
    full results files are outputs.
    """
    groups: dict[str, dict[str, float]] = {}
    for results_file in results_files:
        result = json.loads(Path(results_file).read_text())
        group = "random_init" if result.get("provenance", {}).get("checkpoint") == "random" else "pretrained"
        groups.setdefault(group, {}).update(headline_metrics(result))
    names = list(dict.fromkeys(name for group in HEADLINE_GROUPS for name in groups.get(group, {})))
    content: dict[str, Any] = {}
    if len(names) > len(HEADLINE_ORDINALS):
        raise ValueError(f"{path}: {len(names)} headline metrics, at most {len(HEADLINE_ORDINALS)} per file")
    for ordinal, name in zip(HEADLINE_ORDINALS, names):
        content[f"{ordinal}metric"] = headline_label(name)
        content.update({f"{ordinal}{group}": groups[group][name] for group in HEADLINE_GROUPS
                        if name in groups.get(group, {})})
    return write_json_atomically(path, content)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m usdrl.project.pipeline headline --out OUT RESULTS...``: the headline metrics file of a CLI stage."""
    parser = argparse.ArgumentParser(prog="python -m usdrl.project.pipeline")
    commands = parser.add_subparsers(dest="command", required=True)
    headline = commands.add_parser("headline", help="write the headline metrics of results files (dvc.yaml metrics)")
    headline.add_argument("results", nargs="+", type=Path, help="results JSON files")
    headline.add_argument("--out", required=True, type=Path, help="the small metrics JSON to write")
    arguments = parser.parse_args(argv)
    write_headline_metrics(arguments.out, arguments.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

