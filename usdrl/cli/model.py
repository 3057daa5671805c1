"""``usdrl export | embed | recognize`` and ``usdrl detect run``: a trained model used outside the pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.atomic_files import atomic_file, check_overwritable, is_npz_holding
from usdrl.data.errors import DataError
from usdrl.settings.sections import BACKBONE_NAMES, BUNDLE_PRECISIONS
from usdrl.skeleton import MODALITIES

INPUT_HELP = ("a prepared dataset folder, a .npz (x (N, C, T, V, M), optional num_frames, names), an NTU .skeleton "
              "file, a PKU-MMD skeleton .txt, or COCO-17 keypoints JSON (a list of frames, each a list of persons, "
              "each 17 [x, y, score]); recognised by content")


def add_export(commands: argparse._SubParsersAction) -> None:
    """The parser of ``usdrl export``: a checkpoint (and probe or detector) as a model bundle."""
    export = commands.add_parser("export", help="a model bundle: safetensors weights, model.json, a model card "
                                 "(and ONNX) for usdrl embed / recognize / detect run and usdrl.load_model")
    export.add_argument("--checkpoint", required=True, type=Path,
                        help="RUN/checkpoints/last.pt of usdrl pretrain, or a released USDRL .pth.tar (encoder only)")
    export.add_argument("--probe", type=Path, help="results/linear/<run>.json: adds the probe's classifier "
                        "(its .head.safetensors beside it)")
    export.add_argument("--detector", type=Path, help="results/detection/<run>: adds the detector")
    export.add_argument("--out", required=True, type=Path, help="the bundle folder (replaced if it is one)")
    export.add_argument("--data", type=Path, help="the prepared training data, when it moved since pretraining "
                        "(its manifest describes the preprocessing)")
    export.add_argument("--modality", choices=MODALITIES,
                        help="released checkpoints only (ours record it); default joint")
    export.add_argument("--backbone", choices=BACKBONE_NAMES, default="dste", help="released checkpoints only")
    export.add_argument("--onnx", action="store_true", help="also model.onnx (needs pip install 'usdrl[onnx]')")


def add_use(commands: argparse._SubParsersAction) -> None:
    """The parsers of ``usdrl embed`` and ``usdrl recognize``: a bundle applied to skeleton input."""
    for name, text in (("embed", "clip features (N, 2H), with --dense per-frame features (N, T, H), as .npz"),
                       ("recognize", "the top-k classes of each clip, as JSON lines (a table on a terminal)")):
        parser = commands.add_parser(name, help=text)
        parser.add_argument("--model", required=True, type=Path, help="a bundle folder written by usdrl export")
        parser.add_argument("input", metavar="INPUT", type=Path, help=INPUT_HELP)
        parser.add_argument("--split", metavar="BENCHMARK/SPLIT", help="a prepared folder: only this split, e.g. "
                            "xview/test (default: every sample)")
        parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
        parser.add_argument("--batch-size", type=int, default=256, help="clips per forward pass")
        parser.add_argument("--precision", choices=BUNDLE_PRECISIONS, default="auto",
                            help="autocast as the pipeline's evaluation.precision (default auto, as the pipeline)")
        if name == "embed":
            parser.add_argument("--out", required=True, type=Path, help="features .npz: names, features (, dense)")
            parser.add_argument("--dense", action="store_true", help="also per-frame features (N, T, H)")
            parser.add_argument("--overwrite", action="store_true", help="replace an existing --out that usdrl did "
                                "not write (by default it is refused)")
        else:
            parser.add_argument("--top-k", type=int, default=5, help="classes listed per clip")
            parser.add_argument("--format", choices=("auto", "jsonl", "table"), default="auto",
                                help="auto: a table on a terminal, JSON lines otherwise")


def add_detect_run(actions: argparse._SubParsersAction) -> None:
    """The parser of ``usdrl detect run``: a bundle's detector applied to untrimmed streams."""
    run = actions.add_parser("run", help="detect actions in untrimmed streams with a model bundle (--detector)")
    run.add_argument("--model", required=True, type=Path, help="a bundle exported with --detector")
    run.add_argument("stream", metavar="STREAM", type=Path, help=f"the stream(s): {INPUT_HELP}")
    run.add_argument("--out", required=True, type=Path, help="folder: proposals/<video>.txt (official PKU-MMD "
                     "format label,start,end,score), proposals.json, timelines/<video>.png")
    run.add_argument("--split", metavar="BENCHMARK/SPLIT", help="a prepared folder: only this split")
    run.add_argument("--figures", type=int, default=4, help="timeline pictures of the first streams")
    run.add_argument("--device", default="cpu")
    run.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (bounds the memory)")
    run.add_argument("--precision", choices=BUNDLE_PRECISIONS, default="auto")


def run_export(arguments: argparse.Namespace) -> dict:
    """Write the model bundle of ``usdrl export``; its summary."""
    from usdrl.deploy.bundle import export_bundle

    return export_bundle(arguments.checkpoint, arguments.out, arguments.probe, arguments.detector, arguments.data,
                         arguments.modality, arguments.backbone, arguments.onnx)


def save_npz_atomically(path: Path, **arrays: np.ndarray) -> Path:
    """``arrays`` as the .npz file ``path``, written to a temporary name, then renamed; a DataError
    when ``path`` is a folder."""
    if path.is_dir():
        raise DataError(f"--out {path} is a folder; name the .npz file, e.g. {path / 'features.npz'}")
    with atomic_file(path, suffix=".npz") as temporary:  # numpy.savez adds .npz to a name without it
        np.savez(temporary, **arrays)
    return path


def run_embed(arguments: argparse.Namespace) -> dict:
    """The features of ``usdrl embed``, written to ``--out``; the clip count and array shapes."""
    from usdrl.deploy.bundle import load_model

    check_overwritable(arguments.out, lambda path: is_npz_holding(path, ("names", "features"), ("dense",)),
                       arguments.overwrite, "a features file")
    model = load_model(arguments.model, arguments.device, arguments.precision)
    result = model.embed(arguments.input, dense=arguments.dense, split=arguments.split,
                         batch_size=arguments.batch_size)
    arrays = {"names": np.array(result["names"]), "features": result["features"]}
    if "dense" in result:
        arrays["dense"] = result["dense"]
    save_npz_atomically(arguments.out, **arrays)
    return {"out": str(arguments.out), "clips": len(result["names"]),
            "shapes": {name: list(array.shape) for name, array in arrays.items()}}


def recognition_table(rows: list[dict[str, Any]]) -> str:
    """The top classes of each clip as a text table (``usdrl recognize`` on a terminal)."""
    width = max([len(row["name"]) for row in rows] + [4])
    lines = [f"{'clip':<{width}}  rank  probability  class"]
    for row in rows:
        for rank, choice in enumerate(row["top"], start=1):
            lines.append(f"{row['name'] if rank == 1 else '':<{width}}  {rank:>4}  {choice['probability']:>11.4f}  "
                         f"{choice['class']}")
    return "\n".join(lines) + "\n"


def run_recognize(arguments: argparse.Namespace) -> str:
    """The top-k classes of each clip of ``usdrl recognize``: a table or JSON lines, printed as it is."""
    from usdrl.deploy.bundle import load_model

    if arguments.top_k < 1:
        raise DataError(f"--top-k {arguments.top_k}: list at least one class")
    model = load_model(arguments.model, arguments.device, arguments.precision)
    rows = model.recognize(arguments.input, arguments.top_k, arguments.split, arguments.batch_size)
    table = arguments.format == "table" or (arguments.format == "auto" and sys.stdout.isatty())
    return recognition_table(rows) if table else "".join(json.dumps(row) + "\n" for row in rows)


def run_detect_stream(arguments: argparse.Namespace) -> dict:
    """Detect the actions of ``usdrl detect run`` in every stream: proposal files, proposals.json and
    timeline pictures under ``--out``; a summary of what was written."""
    from usdrl.data.atomic_files import check_replaceable, claim_entries, write_json_atomically
    from usdrl.deploy.bundle import load_model
    from usdrl.evaluate.detection_metrics import frame_labels_to_segments
    from usdrl.evaluate.detector import replace_proposals, timeline_entries
    from usdrl.plots import plot_timeline

    check_replaceable(arguments.out)  # absent, empty, or a folder of ours holding nothing but what usdrl wrote
    model = load_model(arguments.model, arguments.device, arguments.precision)
    results = model.detect(arguments.stream, arguments.split, arguments.batch_size)
    out = arguments.out
    claim_entries(out, ["proposals.json", *timeline_entries([r["video"] for r in results[:max(arguments.figures, 0)]])])
    proposals = [proposal for result in results for proposal in result["proposals"]]
    replace_proposals(proposals, out / "proposals", out / "proposals.json")
    class_names = model.description["heads"]["detector"]["class_names"]
    figures = []
    clips = model.read(arguments.stream, arguments.split)
    for position, result in enumerate(results[:max(arguments.figures, 0)]):
        truth = (frame_labels_to_segments(clips.split.frame_labels_of(position), result["video"])
                 if clips.split.frame_labels is not None else [])
        figures.append(str(plot_timeline(result["probabilities"], truth, result["proposals"], class_names,
                                         out / "timelines" / f"{result['video']}.png",
                                         f"{result['video']}: {'ground truth and ' if truth else ''}detections")))
    streams = [{"video": r["video"], "frames": r["frames"],
                "proposals": [{"label": p[0], "class": class_names[p[0] - 1], "start": p[1], "end": p[2],
                               "score": p[3]} for p in r["proposals"]]} for r in results]
    write_json_atomically(out / "proposals.json", {"model": str(arguments.model), "stream": str(arguments.stream),
                                                    "frames": "0-based, end exclusive", "streams": streams})
    return {"out": str(out), "streams": len(results), "proposals": len(proposals), "figures": figures}
