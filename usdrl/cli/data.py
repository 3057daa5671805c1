"""``usdrl prepare | import | inspect``: datasets into the canonical memory-mapped form, and a look at one.

The commands' parsers (``add_data_commands``) and what each runs (``run_prepare``, ``run_import``,
``run_inspect``); ``usdrl.cli.main`` dispatches to them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usdrl.data.atomic_files import write_json_atomically
from usdrl.data.errors import DataError
from usdrl.data.poses import POSE_FORMATS


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    """The parsers of ``usdrl prepare``, ``usdrl import`` and ``usdrl inspect``, in that order."""
    add_prepare(commands)
    add_import(commands)
    add_inspect(commands)


def add_prepare(commands: argparse._SubParsersAction) -> None:
    """``usdrl prepare DATASET``: one subcommand per dataset, each with its raw inputs and ``--out``."""
    prepare = commands.add_parser("prepare", help="prepare a dataset into the canonical memory-mapped form")
    datasets = prepare.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name in ("ntu60", "ntu120"):
        parser = datasets.add_parser(name, help=f"{name.upper()} from the raw .skeleton files")
        parser.add_argument("--raw", required=True, type=Path, help="folder of .skeleton files (searched recursively)")
        parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
        parser.add_argument("--missing", type=Path, help="official missing-skeleton list (samples to exclude)")
        parser.add_argument("--workers", type=int, help="processes (default: up to 8)")
    for name, phase in (("pku1", "Phase I untrimmed sequences (detection)"), ("pku2", "Phase II trimmed clips (recognition)")):
        parser = datasets.add_parser(name, help=f"PKU-MMD {phase}")
        parser.add_argument("--raw", required=True, type=Path, help="folder of skeleton .txt files")
        parser.add_argument("--labels", required=True, type=Path, help="folder of label .txt files (same names)")
        parser.add_argument("--splits", required=True, type=Path, help="folder of the official split lists")
        parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
        parser.add_argument("--workers", type=int, help="processes (pku1; default: up to 8)")
        if name == "pku1":
            parser.add_argument("--clips", action="store_true",
                                help="write the labelled action instances as trimmed clips instead (dataset "
                                     "pku1_clips, recognition: normalised and padded as pku2's, labels 0..K-1 over the "
                                     "classes present, split by the Phase I lists of videos)")
    utkinect = datasets.add_parser("utkinect", help="UTKinect-Action3D: trimmed clips and untrimmed streams (Kinect v1)")
    utkinect.add_argument("--raw", required=True, type=Path, help="folder of joints_sSS_eEE.txt and actionLabel*.txt")
    utkinect.add_argument("--out", required=True, type=Path, help="folder; writes OUT/actions and OUT/streams")
    utkinect.add_argument("--labels", metavar="original|modified",
                          help="label file: actionLabel.txt (original, the published one; default) or "
                               "actionLabel_modified.txt (modified: seven ranges corrected)")
    synthetic = datasets.add_parser("synthetic", help="the embedded synthetic dataset (trimmed clips and untrimmed streams)")
    synthetic.add_argument("--out", required=True, type=Path, help="folder; writes OUT/actions and OUT/streams")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--subjects", type=int, default=12)
    synthetic.add_argument("--replications", type=int, default=2)
    for parser in datasets.choices.values():
        if parser.prog.split()[-1] != "synthetic":
            parser.add_argument("--skip-bad", action="store_true", help="skip bad files and list them in the manifest")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_import(commands: argparse._SubParsersAction) -> None:
    """``usdrl import FORMAT``: processed arrays of other code bases (AGCN, CTR-GCN, plain arrays, pyskl), the
    output of pose estimators (poses), and a prepared dataset in another layout (store)."""
    from usdrl.skeleton import BUILTIN_LAYOUTS

    importer = commands.add_parser("import", help="import processed arrays (AGCN, CTR-GCN, plain arrays, pyskl "
                                   "annotations, pose estimator output) or map a prepared dataset to another layout")
    formats = importer.add_subparsers(dest="format", required=True, metavar="FORMAT")
    layouts = ", ".join(BUILTIN_LAYOUTS)
    normalise_help = ("SPEC normalisation as for NTU: pad null frames, subtract the layout's centre joint, rotate its "
                      "first-frame shoulders onto +x. Default: on for 3D layouts (sensor coordinates: without it an "
                      "encoder sees where a body stands, not how it moves), off for 2D ones and 2D + score "
                      "(image coordinates of an upright camera: the lean in the image is meaningful and the 2D "
                      "shoulder line of a side view is too short to rotate by); --no-normalise stores the values as "
                      "given, --normalise forces it on")
    for name, what in (("agcn", "folder with {train,val}_data_joint.npy and {train,val}_label.pkl"),
                       ("ctrgcn", "NTU60_CS.npz-style file (x_train, y_train, x_test, y_test)")):
        parser = formats.add_parser(name, help=what)
        parser.add_argument("path", type=Path, help=what)
        parser.add_argument("--out", required=True, type=Path)
        parser.add_argument("--benchmark", choices=("xsub", "xview", "xset"), help="default: guessed from the path")
        parser.add_argument("--dataset", help="dataset name for the manifest (default: from the class count)")
    arrays = formats.add_parser("arrays", help=".npz with x (N, C, T, V, M), label and split_<benchmark>_<split> indices")
    arrays.add_argument("path", type=Path)
    arrays.add_argument("--out", required=True, type=Path)
    arrays.add_argument("--layout", help=f"a built-in layout ({layouts}; default ntu25) or a YAML/JSON layout file")
    arrays.add_argument("--dataset", help="dataset name for the manifest")
    arrays.add_argument("--normalise", action=argparse.BooleanOptionalAction, help=normalise_help)
    poses = formats.add_parser("poses", help="pose estimator output (OpenPose, Kinetics-skeleton, MMPose, MediaPipe): "
                               "a folder of clips and LABELS.csv")
    poses.add_argument("path", type=Path, help="folder of clips: one subfolder (OpenPose frames, MMPose per-image "
                       "files) or one .json file per clip")
    poses.add_argument("--format", required=True, dest="pose_format",
                       choices=POSE_FORMATS)
    poses.add_argument("--labels", type=Path, help="CSV with columns clip,label and optionally subject and split "
                       "(train/test...: the splits of --benchmark; without it one split all/all); optional for "
                       "kinetics, whose files hold a label")
    poses.add_argument("--out", required=True, type=Path)
    poses.add_argument("--layout", help=f"a built-in layout ({layouts}) or a YAML/JSON layout file; default from the "
                       f"first person: 25x2 body25, 18x2 coco18, 17x2 coco17, 17x3 h36m17, mediapipe33 for mediapipe "
                       f"(mediapipe33_world reads pose_world_landmarks; *_score layouts keep the confidence)")
    poses.add_argument("--benchmark", default="custom", help="the benchmark name of the split column (default custom)")
    poses.add_argument("--min-confidence", type=float, default=0.05,
                       help="joints of lower confidence are missing and filled from their track (default 0.05)")
    poses.add_argument("--dataset", help="dataset name for the manifest (default: the folder name)")
    poses.add_argument("--normalise", action=argparse.BooleanOptionalAction, help=normalise_help)
    poses.add_argument("--to-layout", metavar="LAYOUT", help=f"store the skeletons in this layout ({layouts} or a "
                       f"YAML/JSON layout file), mapped by joint names: joints of the same body point copied, the "
                       f"others derived from named neighbours (the manifest's layout_mapping lists them); 2D and 3D "
                       f"are not mapped into each other")
    poses.add_argument("--quiet", action="store_true", help="no progress bar")
    store = formats.add_parser("store", help="a prepared dataset written again in another layout (--to-layout)")
    store.add_argument("path", type=Path, help="a prepared dataset folder (manifest.json)")
    store.add_argument("--to-layout", required=True, metavar="LAYOUT",
                       help=f"the layout to map to ({layouts} or a YAML/JSON layout file), by joint names")
    store.add_argument("--out", required=True, type=Path, help="the new dataset folder")
    pyskl = formats.add_parser("pyskl", help="pyskl / MMAction2 annotation pickle (ntu60_3danno.pkl, ntu60_hrnet.pkl, ...)")
    pyskl.add_argument("path", type=Path, help="the .pkl: {'split': {name: [frame_dir, ...]}, 'annotations': [...]}")
    pyskl.add_argument("--out", required=True, type=Path)
    pyskl.add_argument("--layout", help=f"a built-in layout ({layouts}) or a YAML/JSON layout file; default from the "
                       f"keypoints' V and C (25x3 ntu25, 20x3 kinect_v1, 17x2 coco17; coco17_score adds keypoint_score "
                       f"as a third channel)")
    pyskl.add_argument("--max-frames", type=int, help="clip length T: longer sequences subsampled uniformly "
                       "(default: the longest sequence, nothing subsampled)")
    pyskl.add_argument("--dataset", help="dataset name for the manifest (default: the file name)")
    pyskl.add_argument("--normalise", action=argparse.BooleanOptionalAction, help=normalise_help)


def add_inspect(commands: argparse._SubParsersAction) -> None:
    """``usdrl inspect ROOT``: a prepared dataset's counts, length statistics and a picture of some samples."""
    inspect = commands.add_parser("inspect", help="counts, length statistics and a picture of a prepared dataset")
    inspect.add_argument("root", type=Path, help="a prepared dataset folder")
    inspect.add_argument("--figure", type=Path, help="PNG path (default: inspect_<dataset folder>.png in the "
                         "working directory, e.g. inspect_synthetic_actions.png)")
    inspect.add_argument("--samples", type=int, default=4, help="samples drawn")
    inspect.add_argument("--no-figure", action="store_true")
    inspect.add_argument("--json", nargs="?", const="-", metavar="PATH",
                         help="the whole summary (counts per class and split) as JSON: on stdout with --json alone, "
                              "else written to PATH (a few lines are printed without --json)")
    inspect.add_argument("--overwrite", action="store_true", help="replace an existing --figure or --json that "
                         "usdrl did not write (by default it is refused)")


def run_prepare(arguments: argparse.Namespace) -> dict:
    """Prepare the dataset named by ``usdrl prepare DATASET``; the manifest summary."""
    progress = not arguments.quiet
    if arguments.dataset in ("ntu60", "ntu120"):
        from usdrl.data.ntu import prepare_ntu

        return prepare_ntu(arguments.dataset, arguments.raw, arguments.out, arguments.missing, arguments.skip_bad,
                           arguments.workers, progress=progress)
    if arguments.dataset in ("pku1", "pku2"):
        from usdrl.data.pkummd import coverage_lines, prepare_pku1, prepare_pku1_clips, prepare_pku2

        clips = getattr(arguments, "clips", False)
        prepare = {"pku1": prepare_pku1_clips if clips else prepare_pku1, "pku2": prepare_pku2}[arguments.dataset]
        summary = prepare(arguments.raw, arguments.labels, arguments.splits, arguments.out, arguments.skip_bad,
                          arguments.workers, progress=progress)
        # Warnings about a partial copy go to stderr even with --quiet (it silences the progress bar only);
        # stdout stays the JSON summary.
        for line in coverage_lines(arguments.dataset + (" --clips" if clips else ""), summary.get("coverage", {})):
            print(line, file=sys.stderr)
        return summary
    if arguments.dataset == "utkinect":
        from usdrl.data.utkinect import prepare_utkinect

        return prepare_utkinect(arguments.raw, arguments.out, arguments.labels, arguments.skip_bad, progress=progress)
    from usdrl.data.synthetic import SyntheticConfig, prepare_synthetic

    for name in ("subjects", "replications"):
        if getattr(arguments, name) < 1:
            raise DataError(f"--{name} must be at least 1, got {getattr(arguments, name)}")
    config = SyntheticConfig(seed=arguments.seed, subjects=arguments.subjects, replications=arguments.replications)
    report = (lambda message: print(message, file=sys.stderr)) if progress else None
    return prepare_synthetic(arguments.out, config, progress=report)


def run_import(arguments: argparse.Namespace) -> dict:
    """Import the file of ``usdrl import FORMAT``; the manifest summary."""
    from usdrl.data import importers
    from usdrl.data.pyskl import import_pyskl

    if arguments.format == "agcn":
        return importers.import_agcn(arguments.path, arguments.out, arguments.benchmark, arguments.dataset)
    if arguments.format == "ctrgcn":
        return importers.import_ctrgcn(arguments.path, arguments.out, arguments.benchmark, arguments.dataset)
    if arguments.format == "poses":
        from usdrl.data.poses import import_poses

        return import_poses(arguments.path, arguments.out, arguments.pose_format, arguments.labels, arguments.layout,
                            arguments.normalise, arguments.benchmark, arguments.min_confidence, arguments.dataset,
                            progress=not arguments.quiet, to_layout=arguments.to_layout)
    if arguments.format == "store":
        from usdrl.data.mapped_store import map_store

        return map_store(arguments.path, arguments.to_layout, arguments.out)
    if arguments.format == "pyskl":
        return import_pyskl(arguments.path, arguments.out, arguments.layout, arguments.normalise,
                                      arguments.max_frames, arguments.dataset)
    return importers.import_arrays(arguments.path, arguments.out, arguments.layout, arguments.dataset,
                                   arguments.normalise)


def default_figure_path(root: str | Path) -> Path:
    """Where ``usdrl inspect`` draws its picture without ``--figure``: the working directory (never the dataset
    folder, which ``usdrl prepare`` would then refuse), named after the dataset folder: inspect_synthetic_actions.png."""
    root = Path(root).resolve()
    name = f"{root.parent.name}_{root.name}" if root.name in ("actions", "streams") else root.name
    return Path.cwd() / f"inspect_{name or 'dataset'}.png"


def summary_lines(summary: dict) -> str:
    """A few lines of a dataset summary: what it is, its lengths, its splits, what was left out, its picture."""
    frames = summary["frames"]
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items()) or "none"
    lines = [f"{summary['dataset']} ({summary['kind']}, layout {summary['layout']}): {summary['samples']} samples, "
             f"{summary['classes']} classes",
             f"frames per sample: min {frames['min']}, median {frames['median']:g}, mean {frames['mean']:.1f}, "
             f"max {frames['max']}",
             f"splits: {splits}",
             f"empty splits: {', '.join(summary['empty_splits']) or 'none'}; excluded {summary['excluded']}, "
             f"skipped {summary['skipped']} samples"]
    if "figure" in summary:
        lines.append(f"figure: {summary['figure']}")
    lines.append("counts per class and split: usdrl inspect ROOT --json")
    return "\n".join(lines) + "\n"


def run_inspect(arguments: argparse.Namespace) -> dict | str:
    """The summary of a prepared dataset (a few lines; all of it as JSON with ``--json``), with the path of its
    picture unless ``--no-figure``."""
    from usdrl.data.atomic_files import check_overwritable
    from usdrl.data.inspect import is_summary_file, summarize
    from usdrl.plots import is_figure_of_ours, plot_samples

    figure = None if arguments.no_figure else arguments.figure or default_figure_path(arguments.root)
    if figure is not None:
        check_overwritable(figure, is_figure_of_ours, arguments.overwrite, "a figure", "--figure")
    to_file = arguments.json not in (None, "-")
    if to_file:
        check_overwritable(Path(arguments.json), is_summary_file, arguments.overwrite, "a dataset summary", "--json")
    summary = summarize(arguments.root)
    if figure is not None:
        summary["figure"] = str(plot_samples(arguments.root, figure, count=arguments.samples))
    if to_file:
        write_json_atomically(Path(arguments.json), summary)
    return summary if arguments.json == "-" else summary_lines(summary)
