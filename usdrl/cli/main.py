"""``usdrl <command>``: everything a notebook does, from a shell.

Bad input exits with status 2 and one line naming the file, line or sample and what to do.

Here: the settings every pipeline command shares (``--params``, ``--profile``, ``--set``), the pipeline
commands, and the dispatch (``COMMANDS``, ``main``). The data commands (prepare, import, inspect) are
``usdrl.cli.data``, the commands that use a trained model (export, embed, recognize, detect run)
``usdrl.cli.model``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from usdrl.cli.data import add_data_commands, run_import, run_inspect, run_prepare
from usdrl.cli.model import add_detect_run, add_export, add_use, run_detect_stream, run_embed, run_export, run_recognize
from usdrl.data.atomic_files import write_json_atomically
from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.errors import DataError
from usdrl.data.store import load_split
from usdrl.evaluate import protocols
from usdrl.evaluate.detection_metrics import dataset_action_classes, detection_metrics, read_proposals
from usdrl.evaluate.detector import ground_truth_of, run_detection
from usdrl.evaluate.folds import run_folds
from usdrl.evaluate.gain import describe_gain, pretraining_gain
from usdrl.project.report import build_tables
from usdrl.settings.params import DEFAULT_PARAMS_FILE, load_params
from usdrl.settings.sections import BACKBONE_NAMES, ENSEMBLE_NORMALISATIONS, PRECISIONS, ConfigError
from usdrl.skeleton import MODALITIES, LayoutError
from usdrl.training.checkpoint import convert_checkpoint
from usdrl.training.checkpoint_files import CheckpointError
from usdrl.training.loop import TrainingError
from usdrl.training.pretrain import pretrain
from usdrl.training.settings_from_data import resolve_for_data

OVERWRITE_HELP = "replace existing files at --out that usdrl did not write (by default they are refused)"
JSON_HELP = ("print the whole result as JSON, accuracies as fractions as in the results file (by default: one line, "
             "accuracies in percent as in the tables)")


def _add_params_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (params.yaml, then the profile, then these overrides)")
    group.add_argument("--params", type=Path, help="params file; an error when it does not exist (default: "
                       "./params.yaml, or the package defaults, i.e. the released settings, when there is none)")
    group.add_argument("--profile", help="profile of the params file (demo, paper)")
    group.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override any setting, e.g. --set pretrain.epochs=10 (repeatable)")


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("pretrain", help="self-supervised pretraining (one device, or torchrun for many)")
    parser.add_argument("--data", required=True, type=Path, help="a prepared dataset folder")
    parser.add_argument("--benchmark", required=True, help="benchmark whose train split is used (xsub, xview, xset)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: checkpoints/, log.jsonl, run.json")
    parser.add_argument("--resume", nargs="?", const=True, default=False,
                        help="continue from OUT/checkpoints/last.pt, or from the given checkpoint")
    shortcuts = parser.add_argument_group("common overrides")
    shortcuts.add_argument("--epochs", type=int, help="pretrain.epochs, exactly (pretrain.minimum_steps off)")
    shortcuts.add_argument("--batch-size", type=int, help="pretrain.batch_size (per process)")
    shortcuts.add_argument("--modality", choices=MODALITIES, help="pretrain.modality")
    shortcuts.add_argument("--backbone", choices=BACKBONE_NAMES, help="model.backbone")
    shortcuts.add_argument("--device", help="pretrain.device: auto, cpu, cuda, cuda:1")
    shortcuts.add_argument("--precision", choices=PRECISIONS, help="pretrain.precision")
    shortcuts.add_argument("--seed", type=int, help="pretrain.seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_params_arguments(parser)


def load_settings(arguments: argparse.Namespace, shortcuts: dict[str, str], from_data: bool = True,
                  extra: list[str] | tuple[str, ...] = ()):
    """params.yaml (if present) + profile + --set + the named shortcut flags; with ``from_data``, the settings
    that follow from the data (``auto``) resolved from the training split of ``--data`` / ``--benchmark``."""
    overrides = [*extra, *arguments.set]
    for attribute, key in shortcuts.items():
        value = getattr(arguments, attribute, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if arguments.params is not None:  # given explicitly: it must exist
        path = arguments.params
    else:
        path = DEFAULT_PARAMS_FILE if DEFAULT_PARAMS_FILE.is_file() else None
    data, benchmark = getattr(arguments, "data", None), getattr(arguments, "benchmark", None)
    params = load_params(path, arguments.profile, overrides)
    if from_data and data is not None and benchmark and (Path(data) / MANIFEST_NAME).is_file():
        params, _ = resolve_for_data(params, data, benchmark)
    return params


def _run_pretrain(arguments: argparse.Namespace) -> dict:
    params = load_settings(arguments, {"epochs": "pretrain.epochs", "batch_size": "pretrain.batch_size",
                                       "modality": "pretrain.modality", "backbone": "model.backbone",
                                       "device": "pretrain.device", "precision": "pretrain.precision",
                                       "seed": "pretrain.seed"}, from_data=False,  # resolved and recorded there
                           extra=["pretrain.minimum_steps=0"] if arguments.epochs is not None else [])
    summary = pretrain(arguments.data, arguments.benchmark, arguments.out, params.model, params.augment, params.loss,
                       params.pretrain, resume=arguments.resume, progress=not arguments.quiet)
    summary["final"] = summary["history"][-1] if summary["history"] else None
    summary.pop("history")
    if params.pretrain.gain_check_seeds > 0 and int(os.environ.get("RANK", "0")) == 0:
        resolved, _ = resolve_for_data(params, arguments.data, arguments.benchmark)
        summary["gain"] = pretraining_gain(arguments.data, arguments.benchmark, arguments.out, resolved,
                                           params.pretrain.gain_check_seeds)
        print(describe_gain(summary["gain"]), file=sys.stderr)
    return summary


def _add_evaluation(commands: argparse._SubParsersAction) -> None:
    helps = {"probe": "linear probe on frozen features (headline: last epoch)",
             "retrieve": "kNN retrieval (cosine) of test features against the training features",
             "finetune": "semi-supervised: fine-tune the whole network on 1%% / 10%% of the labels"}  # %% for argparse
    for name, text in helps.items():
        parser = commands.add_parser(name, help=text)
        parser.add_argument("--data", required=True, type=Path, help="a prepared dataset folder")
        parser.add_argument("--benchmark", required=True, help="xsub, xview, xset")
        parser.add_argument("--checkpoint", required=True,
                            help="a checkpoint of usdrl pretrain, a released one, or 'random' (random-init encoder)")
        parser.add_argument("--out", required=True, type=Path, help="results JSON file")
        parser.add_argument("--modality", choices=MODALITIES, help="default: pretrain.modality")
        parser.add_argument("--device", help="evaluation.device: auto, cpu, cuda")
        parser.add_argument("--quiet", action="store_true")
        parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
        parser.add_argument("--json", action="store_true", help=JSON_HELP)
        if name == "finetune":
            parser.add_argument("--fraction", required=True, type=float, help="labelled part of the training split, e.g. 0.01")
            parser.add_argument("--seeds", type=int, nargs="+", help="one run per seed (subset and head); mean and std")
        _add_params_arguments(parser)
    ensemble = commands.add_parser("ensemble", help="sum the class scores of several streams (the 3s rows)")
    ensemble.add_argument("scores", nargs="+", type=Path, help="score files written by usdrl probe (*.scores.npz)")
    ensemble.add_argument("--weights", type=float, nargs="+", help="one per score file (default: ensemble.weights, "
                          "the score files given in the order of ensemble.streams)")
    ensemble.add_argument("--normalise", choices=ENSEMBLE_NORMALISATIONS, help="ensemble.normalise")
    ensemble.add_argument("--out", required=True, type=Path)
    ensemble.add_argument("--dataset", help="recorded in the results (for the tables)")
    ensemble.add_argument("--benchmark", help="recorded in the results (for the tables)")
    ensemble.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ensemble.add_argument("--json", action="store_true", help=JSON_HELP)
    _add_params_arguments(ensemble)


def ensemble_weights(score_files: Sequence[Path], section) -> list[float]:
    """params' ensemble.weights for score files given in the order of ensemble.streams; with another number of
    score files, equal weights when ensemble.weights are all equal, else a DataError (pass --weights)."""
    if len(score_files) == len(section.streams) or len(set(section.weights)) > 1:
        if len(score_files) != len(section.streams):
            raise DataError(f"{len(score_files)} score files, but ensemble.streams lists {len(section.streams)} "
                            f"({', '.join(section.streams)}) with unequal ensemble.weights; pass one score file per "
                            f"stream in that order, or --weights (one per score file)")
        return list(section.weights)
    return [section.weights[0]] * len(score_files)


def _run_evaluation(arguments: argparse.Namespace) -> dict:
    if arguments.command == "ensemble":
        settings = load_settings(arguments, {"normalise": "ensemble.normalise"}).ensemble
        weights = arguments.weights or ensemble_weights(arguments.scores, settings)
        return protocols.run_ensemble(arguments.scores, arguments.out, weights, settings.normalise,
                                      arguments.dataset, arguments.benchmark, arguments.overwrite)
    params = load_settings(arguments, {"device": "evaluation.device"})
    common = dict(data_root=arguments.data, benchmark=arguments.benchmark, checkpoint=arguments.checkpoint,
                  out=arguments.out, params=params, modality=arguments.modality, progress=not arguments.quiet,
                  overwrite=arguments.overwrite)
    if arguments.command == "probe":
        return protocols.run_linear_probe(**common)
    if arguments.command == "retrieve":
        return protocols.run_retrieval(**common)
    return protocols.run_finetune(**common, fraction=arguments.fraction, seeds=arguments.seeds)


def _add_detection(commands: argparse._SubParsersAction) -> None:
    detect = commands.add_parser("detect", help="temporal action detection on untrimmed sequences (PKU-MMD I)")
    actions = detect.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="fine-tune a dense frame-wise detector, then detect and score the test split")
    train.add_argument("--data", required=True, type=Path, help="untrimmed dataset (pku1, or data/synthetic/streams)")
    train.add_argument("--benchmark", required=True, help="xsub or xview")
    train.add_argument("--checkpoint", required=True, help="pretraining checkpoint (ours or released) or 'random'")
    train.add_argument("--out", required=True, type=Path, help="folder: results.json, proposals/, timelines/")
    train.add_argument("--modality", choices=MODALITIES)
    train.add_argument("--figures", type=int, default=2, help="timeline pictures of the first test videos")
    train.add_argument("--device", help="evaluation.device")
    train.add_argument("--quiet", action="store_true")
    train.add_argument("--json", action="store_true", help=JSON_HELP)
    _add_params_arguments(train)
    score = actions.add_parser("evaluate", help="score proposal files (label,start,end,score per video) against a split")
    score.add_argument("--proposals", required=True, type=Path, help="folder of <video>.txt proposal files")
    score.add_argument("--data", required=True, type=Path)
    score.add_argument("--benchmark", required=True)
    score.add_argument("--split", default="test")
    score.add_argument("--thetas", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    score.add_argument("--out", type=Path, help="also write the metrics to this JSON file")
    score.add_argument("--json", action="store_true", help=JSON_HELP)
    add_detect_run(actions)


def _run_detection(arguments: argparse.Namespace) -> dict:
    if arguments.action == "run":
        return run_detect_stream(arguments)
    if arguments.action == "train":
        params = load_settings(arguments, {"device": "evaluation.device"})
        return run_detection(arguments.data, arguments.benchmark, arguments.checkpoint, arguments.out, params,
                             arguments.modality, arguments.figures, progress=not arguments.quiet)
    if not arguments.proposals.is_dir():
        state = "is a file" if arguments.proposals.exists() else "does not exist"
        raise DataError(f"--proposals {arguments.proposals} {state}; pass the folder of <video>.txt proposal files")
    split = load_split(arguments.data, arguments.benchmark, arguments.split)
    truth = ground_truth_of(split)
    metrics = detection_metrics(read_proposals(arguments.proposals), truth, arguments.thetas,
                                classes=dataset_action_classes(split.class_names), videos=split.names)
    if arguments.out:
        write_json_atomically(arguments.out, metrics)
    return {"metrics": metrics}


def _add_folds(commands: argparse._SubParsersAction) -> None:
    folds = commands.add_parser("folds", help="cross-validation folds (e.g. UTKinect loso1..loso10): pretrain, probe "
                                "and kNN per fold, pretrained and random init; mean and spread")
    folds.add_argument("--data", required=True, type=Path,
                       help="a prepared dataset with <family>1, <family>2 ... benchmarks")
    folds.add_argument("--family", default="loso", help="benchmark family (default: loso)")
    folds.add_argument("--folds", nargs="+", help="only these benchmarks, e.g. loso1 loso2 (default: all)")
    folds.add_argument("--out", required=True, type=Path, help="folder: <fold>/run, <fold>/*.json, summary.json")
    folds.add_argument("--quiet", action="store_true")
    folds.add_argument("--json", action="store_true", help=JSON_HELP)
    _add_params_arguments(folds)


def _run_folds(arguments: argparse.Namespace) -> dict:
    params = load_settings(arguments, {})
    return run_folds(arguments.data, arguments.family, arguments.out, params, arguments.folds,
                     progress=not arguments.quiet)


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="result tables beside the paper's numbers (Markdown and CSV)")
    report.add_argument("--results", type=Path, default=Path("results"), help="folder of results JSON files")
    report.add_argument("--out", type=Path, default=Path("results/tables"))
    report.add_argument("--profile", default="demo", help="named in the tables' sources")
    report.add_argument("--overwrite", action="store_true", help="replace table files at --out that usdrl did not "
                        "write (by default they are refused)")


def _run_report(arguments: argparse.Namespace) -> dict:
    return {"tables": [str(p) for p in build_tables(arguments.results, arguments.out, arguments.profile,
                                                                arguments.overwrite)]}


def _add_convert(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert-checkpoint", help="rewrite an older checkpoint that needs an unsafe load "
                                  "(weights_only=False) in the safe form; only for a file you trust")
    convert.add_argument("old", metavar="OLD", type=Path, help="the checkpoint to convert")
    convert.add_argument("--out", required=True, type=Path, help="the converted checkpoint (may be OLD itself)")
    convert.add_argument("--trust-this-file", action="store_true",
                         help="required: loading OLD unsafely runs any code it holds; pass it only for a file you made "
                              "yourself or whose source you trust")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing --out that is not a "
                         "checkpoint (by default it is refused; OLD itself is always allowed)")


def _run_convert(arguments: argparse.Namespace) -> dict:
    return convert_checkpoint(arguments.old, arguments.out, trust_this_file=arguments.trust_this_file,
                              overwrite=arguments.overwrite)


def build_parser() -> argparse.ArgumentParser:
    """The ``usdrl`` parser: one subcommand per command, in the order ``usdrl --help`` lists them."""
    parser = argparse.ArgumentParser(prog="usdrl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(commands)
    _add_pretrain(commands)
    _add_evaluation(commands)
    _add_detection(commands)
    _add_folds(commands)
    _add_report(commands)
    _add_convert(commands)
    add_export(commands)
    add_use(commands)
    return parser


def _run_data_command(arguments: argparse.Namespace) -> dict | str:
    """prepare, import, inspect: datasets into the canonical form, and a look at one (usdrl/cli/data.py)."""
    handlers = {"prepare": run_prepare, "import": run_import, "inspect": run_inspect}
    return handlers[arguments.command](arguments)


def _run_model_command(arguments: argparse.Namespace) -> dict | str:
    """export, embed, recognize: a trained model outside the pipeline (usdrl/cli/model.py)."""
    handlers = {"export": run_export, "embed": run_embed, "recognize": run_recognize}
    return handlers[arguments.command](arguments)


ACCURACY_COMMANDS = ("probe", "retrieve", "finetune", "ensemble", "detect", "folds")  # accuracy_summary's
COMMANDS: dict[str, Callable[[argparse.Namespace], dict | str]] = {  # a str is printed as it is
    "prepare": _run_data_command,
    "import": _run_data_command,
    "inspect": _run_data_command,
    "pretrain": _run_pretrain,
    "probe": _run_evaluation,
    "retrieve": _run_evaluation,
    "finetune": _run_evaluation,
    "ensemble": _run_evaluation,
    "detect": _run_detection,
    "report": _run_report,
    "folds": _run_folds,
    "convert-checkpoint": _run_convert,
    "export": _run_model_command,
    "embed": _run_model_command,
    "recognize": _run_model_command,
}


def _percent(value: float) -> str:
    return f"{100 * float(value):.2f}%"


def accuracy_summary(command: str, result: dict) -> str:
    """One line of an evaluation's result, accuracies in percent as the tables print them, and where it is written."""
    metrics = result.get("metrics", {})
    if command == "probe":
        parts = [f"top-1 {_percent(metrics['top1'])}, top-5 {_percent(metrics['top5'])}"]
    elif command == "retrieve":
        parts = [f"{name} {_percent(value)}" for name, value in metrics.items() if name.startswith("knn")]
    elif command == "finetune":
        spread = f" (std {100 * metrics['top1_std']:.2f} over {metrics['seeds']} seeds)" if metrics.get("seeds", 1) > 1 else ""
        parts = [f"top-1 {_percent(metrics['top1'])}{spread} with {100 * metrics['fraction']:g}% of the labels"]
    elif command == "ensemble":
        parts = [f"top-1 {_percent(metrics['top1'])} (streams: "
                 f"{', '.join(_percent(value) for value in metrics.get('per_stream_top1', []))})"]
    elif command == "folds":
        parts = [f"{group} {name} {100 * spread['mean']:.2f}% (std {100 * spread['std']:.2f})"
                 for group, values in result["summary"].items() for name, spread in values.items()]
    else:  # detect train / evaluate: mAP per overlap threshold
        overlaps = metrics.get("by_overlap", metrics)
        parts = [f"mAP_a@{theta} {_percent(values['mAP_a'])}, mAP_v@{theta} {_percent(values['mAP_v'])}"
                 for theta, values in overlaps.items() if isinstance(values, dict) and "mAP_a" in values]
    where = f" -> {result['out']}" if result.get("out") else ""
    return f"usdrl {command}: {'; '.join(parts)}{where} (all of it: --json)\n"


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Within the block, a warning reads ``usdrl COMMAND: warning: message`` (no source file and line)."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"usdrl {command}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``usdrl`` with ``argv`` (default: the command line); the exit status: 0, or 2 with one line on stderr
    for bad input (a dataset, layout, setting, checkpoint or training error, or an unusable path)."""
    arguments = build_parser().parse_args(argv)
    try:
        with one_line_warnings(arguments.command):
            result = COMMANDS[arguments.command](arguments)
    except (DataError, LayoutError, ConfigError, CheckpointError, TrainingError) as error:
        print(f"usdrl {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an unwritable or unreadable location: name the path, no traceback
        paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
        reason = error.strerror or str(error)
        print(f"usdrl {arguments.command}: error: {paths + ': ' if paths else ''}{reason}; check that the path "
              f"exists and is writable", file=sys.stderr)
        return 2
    if getattr(arguments, "json", None) is False and arguments.command in ACCURACY_COMMANDS and isinstance(result, dict):
        result = accuracy_summary(arguments.command, result)  # --json: the result as it is
    if isinstance(result, str):
        sys.stdout.write(result)
        return 0
    if result.get("up_to_date"):
        print(f"{result['out']} is up to date (inputs unchanged); nothing to do", file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
