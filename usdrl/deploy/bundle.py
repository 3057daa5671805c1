"""A self-describing model bundle: one folder a colleague can use without the pipeline.

``export_bundle`` (``usdrl export``) writes::

    model.json               what the model is: encoder sizes, layout, the training data's exact preprocessing,
                             modality, class names, heads with their metrics and provenance, checksums of every file
    encoder.safetensors      the encoder's weights (no pickle anywhere: loading runs no code)
    classifier.safetensors   with --probe: the linear probe's head and the feature statistics it was trained on
    detector.safetensors     with --detector: the fine-tuned encoder and frame head of the detection run
    model.onnx               with --onnx: encoder (and head) for onnxruntime
    README.md                the model card, generated from model.json

``load_model`` checks every file against the checksums in model.json (and model.json against its own) and
refuses a changed bundle. The checksums catch damaged, edited or mixed-up files; they are no signature (whoever
edits a file can recompute them), and safetensors already makes a hostile file harmless to load.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from usdrl import __version__
from usdrl.data.atomic_files import check_replaceable, replace_folder, write_json_atomically
from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import file_sha256
from usdrl.data.import_common import position_channels
from usdrl.data.project_paths import paths_relative_to_project, project_root_of
from usdrl.deploy.card import render_card
from usdrl.deploy.inference import TrainedModel
from usdrl.deploy.onnx_export import export_onnx
from usdrl.evaluate.detector import DETECTOR_FILE, DenseDetector
from usdrl.evaluate.features import open_encoder
from usdrl.evaluate.protocols import probe_head_path
from usdrl.evaluate.results import git_revision
from usdrl.nn.encoders import LAYOUT_SIZES, SkeletonModel, model_section_of_record
from usdrl.settings.sections import ModelSection
from usdrl.skeleton import SkeletonLayout, layout_from_dict, ntu25_layout
from usdrl.training.checkpoint_files import CheckpointError, load_checkpoint, load_tensors, save_tensors_atomically
from usdrl.training.released_checkpoints import load_released
from usdrl.training.resume import process_is_alive
from usdrl.training.runtime import resolve_device
from usdrl.validation import (
    check_description,
    check_head,
    check_manifest,
    check_results,
    check_weights,
    is_string_list,
    read_json,
    recorded_section,
    shown,
)

FORMAT = "usdrl-model-bundle"
FORMAT_VERSION = 1
DESCRIPTION_FILE = "model.json"
ENCODER_FILE = "encoder.safetensors"
CLASSIFIER_FILE = "classifier.safetensors"
ONNX_FILE = "model.onnx"
CARD_FILE = "README.md"
DOWNSTREAM_INPUT = ("the whole valid sequence resized linearly to clip_frames (usdrl.nn.augment.resize_whole, "
                    "align_corners=False), the encoder in eval mode")
PERSON_SELECTION = ("NTU .skeleton: the M bodies of highest motion energy among the first 4 (as usdrl prepare "
                    "ntu60); PKU-MMD .txt: its 2 persons; COCO-17 JSON: per frame the M persons of highest total "
                    "keypoint score; arrays: as given (zero persons added up to M)")
RELEASED_PREPROCESSING = {"version": 1, "max_frames": 300, "steps": [
    "as NTU RGB+D in the released code (SPEC.md 1): bodies: 2 of highest energy", "zero-pad to 300 frames",
    "pad null frames (move to front, repeat)", "subtract joint 2 of body 1 per frame",
    "rotate first-frame shoulders 5->9 of body 1 onto +x"]}


class BundleError(CheckpointError):
    """A model bundle that is missing, changed or not ours; the message names the file and what to do."""


def description_digest(description: dict[str, Any]) -> str:
    """sha256 of model.json's content without its own checksum (sorted keys, so key order never matters)."""
    content = {key: value for key, value in description.items() if key != "description_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def preprocessing_record(manifest: dict[str, Any] | None, manifest_sha256: str | None, layout: SkeletonLayout,
                         clip_frames: int) -> dict[str, Any]:
    """What must happen to raw skeletons before the encoder, read from the training data's manifest."""
    recorded = manifest.get("preprocessing", {}) if manifest else RELEASED_PREPROCESSING
    normalise = bool(recorded.get("normalised", isinstance(recorded.get("version"), int)))
    return {
        "normalise": normalise,
        "center_joint": layout.center_joint + 1, "shoulder_pair": [layout.shoulder_pair[0] + 1,
                                                                   layout.shoulder_pair[1] + 1],
        "normalised_channels": position_channels(layout),
        "steps": (["pad null frames (a person's frames moved to the front when its first frame is empty, repeated "
                   "over trailing empty frames)", f"subtract joint {layout.center_joint + 1} of person 1 per frame",
                   f"rotate the first-frame shoulders {layout.shoulder_pair[0] + 1}->{layout.shoulder_pair[1] + 1} "
                   f"of person 1 onto +x"] if normalise else ["none: coordinates as given"]),
        "max_frames": recorded.get("max_frames"),
        "longer_sequences": "subsample" if "subsampled" in json.dumps(recorded) else "truncate",
        "clip_frames": clip_frames, "downstream_input": DOWNSTREAM_INPUT, "person_selection": PERSON_SELECTION,
        "streams": "non-overlapping windows of clip_frames, the last padded with zeros; a stream is normalised as a "
                   "whole (centre per frame, rotation of its first frame), without padding",
        "training_data": {"dataset": manifest.get("dataset") if manifest else "ntu60/ntu120 (released weights)",
                          "manifest_sha256": manifest_sha256, "preprocessing": recorded},
    }


def read_training_manifest(root: str | Path, fingerprint: str | None, what: str) -> tuple[dict[str, Any], str]:
    """(manifest, its sha256) of the data a checkpoint or results file was made from; refused when it changed."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path} does not exist: the data {what} was made from is needed to record its "
                        f"preprocessing; pass --data with the prepared dataset folder")
    manifest = check_manifest(read_json(path, DataError, "prepare the dataset again"), str(path), DataError)
    if fingerprint and manifest.get("input_fingerprint") != fingerprint:
        raise DataError(f"{path} is not the data {what} was made from (its input fingerprint differs); pass --data "
                        f"with the dataset it was trained on")
    return manifest, file_sha256(path)


def encoder_of_checkpoint(checkpoint: Path, data: str | Path | None, modality: str | None,
                          backbone: str) -> tuple[SkeletonModel, dict[str, Any]]:
    """The encoder of a checkpoint of ours or a released one, and its part of model.json."""
    content = load_checkpoint(checkpoint)
    checksum = file_sha256(checkpoint)
    if isinstance(content, dict) and "encoder_config" in content:
        layout = layout_from_dict(content.get("layout") or {}, source=str(checkpoint))
        model, recorded = open_encoder(checkpoint, ModelSection(), layout, modality=modality)
        run = content.get("run") or {}
        data_info = run.get("data") or {}
        manifest, manifest_sha = read_training_manifest(data or data_info.get("root", ""),
                                                        None if data else data_info.get("manifest_fingerprint"),
                                                        str(checkpoint))
        source = {"kind": "usdrl pretrain", "checkpoint": str(checkpoint), "checkpoint_sha256": checksum,
                  "epoch": content.get("epoch"), "data": data_info, "pretrain": run.get("pretrain")}
        modality = modality or recorded or "joint"
    else:
        model = load_released(content if isinstance(content, dict) else checkpoint, backbone, source=str(checkpoint))
        layout, manifest, manifest_sha = ntu25_layout(), None, None
        source = {"kind": "released USDRL weights (encoder only)", "checkpoint": str(checkpoint),
                  "checkpoint_sha256": checksum}
        modality = modality or "joint"
    check_weights(model.state_dict(), str(checkpoint), CheckpointError)
    part = {"encoder": model.encoder_record(), "parameters": sum(p.numel() for p in model.encoder.parameters()),
            "modality": modality, "layout": layout.to_dict(), "source": source,
            "preprocessing": preprocessing_record(manifest, manifest_sha, layout, model.config.clip_frames)}
    return model, part


def _results_file(path: Path, protocol: str, checksum: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass the results file the {protocol.replace('_', ' ')} wrote")
    result = check_results(read_json(path, DataError, f"pass the results file the {protocol.replace('_', ' ')} "
                                                          f"wrote"), str(path), DataError, protocol)
    trained_on = result["provenance"]["checkpoint_sha256"]
    if trained_on != checksum:
        raise DataError(f"{path} was made with another checkpoint (sha256 {str(trained_on)[:12]}..., the exported one "
                        f"is {checksum[:12]}...); pass the checkpoint it names: {result['provenance'].get('checkpoint')}")
    return result


def probe_head(results: Path, checksum: str, modality: str, hidden_size: int) -> tuple[dict, dict[str, Any], list[str]]:
    """(tensors, model.json part, class names) of a linear probe's results file."""
    result = _results_file(results, "linear_probe", checksum)
    head_file = probe_head_path(results)
    if not head_file.is_file():
        raise DataError(f"{head_file} does not exist: the probe of {results} ran before heads were saved; run "
                        f"usdrl probe again (same settings) to write it")
    tensors, metadata = load_tensors(head_file)
    if result["settings"]["modality"] != modality:
        raise DataError(f"{results} probes the {result['settings']['modality']} stream, the encoder is {modality}")
    weight = tensors.get("weight")
    if weight is None or weight.ndim != 2 or weight.shape[1] != 2 * hidden_size:
        held = tuple(weight.shape) if weight is not None else "nothing"
        raise DataError(f"{head_file}: the tensor weight must be a head (classes, {2 * hidden_size}) for the encoder's "
                        f"features, got {held}")
    classes, features = weight.shape
    check_head(tensors, {"weight": (classes, features), "bias": (classes,), "feature_mean": (features,),
                         "feature_scale": (features,)}, str(head_file), DataError)
    class_names = _class_names(metadata, classes, head_file)
    metrics = {key: value for key, value in result["metrics"].items() if key != "history"}
    part = {"file": CLASSIFIER_FILE, "kind": "linear probe on frozen instance features (N, 2H)",
            "classes": len(class_names), "metrics": metrics, "settings": result["settings"].get("probe"),
            "provenance": result["provenance"], "results_file": str(results)}
    return tensors, part, class_names


def _class_names(metadata: dict[str, str], classes: int | None, file: Path) -> list[str]:
    """The class names a head file records (its metadata), one per class of the head."""
    try:
        names = json.loads(metadata.get("class_names", "null"))
    except json.JSONDecodeError:
        names = None
    if not is_string_list(names) or (classes is not None and len(names) != classes):
        raise DataError(f"{file}: its metadata class_names must be a list of {classes or 'the head'}'s class names, "
                        f"got {shown(names)}")
    return names


def recorded_path(recorded: str, near: Path) -> Path:
    """A path a results file records: absolute as is; relative, from the root of the project ``near`` lies in
    where it exists there, else from the working directory."""
    path = Path(recorded)
    root = project_root_of(Path(near) / "results.json")
    if path.is_absolute() or path.exists() or root is None or not (root / path).exists():
        return path
    return root / path


def detector_head(folder: Path, checksum: str, layout: SkeletonLayout, clip_frames: int) -> tuple[dict, dict[str, Any]]:
    """(tensors, model.json part) of a detection run's folder (results.json and detector.safetensors)."""
    result = _results_file(folder / "results.json", "detection", checksum)
    tensors, metadata = load_tensors(folder / DETECTOR_FILE)
    check_weights(tensors, str(folder / DETECTOR_FILE), DataError)
    provenance = result["provenance"]
    data_root = recorded_path(provenance.get("data_root", ""), folder)
    manifest, manifest_sha = read_training_manifest(data_root, None, str(folder))
    if manifest_sha != provenance.get("data_manifest_sha256"):
        raise DataError(f"{provenance.get('data_root')}: its manifest changed since the detection run {folder}")
    head = tensors.get("head.weight")
    class_names = _class_names(metadata, head.shape[0] - 1 if head is not None and head.ndim == 2 else None,
                               folder / DETECTOR_FILE)
    metrics = {"by_overlap": result["metrics"]["by_overlap"], "proposals": result["metrics"].get("proposals")}
    part = {"file": DETECTOR_FILE, "kind": "dense frame-wise head (classes + background) on a fine-tuned encoder",
            "class_names": class_names, "settings": result["settings"]["detection"], "metrics": metrics,
            "provenance": provenance, "results_file": str(folder / "results.json"),
            "preprocessing": preprocessing_record(manifest, manifest_sha, layout, clip_frames)}
    return tensors, part


def bundle_entries(folder: Path) -> set[str] | None:
    """What a bundle's model.json lists (its ``files`` and itself): the marker ``check_replaceable`` reads for a
    bundle folder. None unless model.json is a usdrl model description unchanged since export (format and its own
    checksum)."""
    try:
        description = json.loads((folder / DESCRIPTION_FILE).read_text())
    except (OSError, ValueError):  # absent, unreadable, not UTF-8 or not JSON
        return None
    if (not isinstance(description, dict) or description.get("format") != FORMAT
            or description.get("description_sha256") != description_digest(description)
            or not isinstance(description.get("files"), dict)):
        return None
    return {*description["files"], DESCRIPTION_FILE}


def remove_stale_temporary_folders(out: Path) -> list[Path]:
    """Remove ``OUT.tmp-PID`` folders beside ``out`` left by exports that were killed (their process is gone);
    those of running processes stay. Returns the removed folders."""
    pattern = re.compile(re.escape(out.name) + r"\.tmp-(\d+)")
    removed = []
    for candidate in out.parent.glob(f"{glob.escape(out.name)}.tmp-*") if out.parent.is_dir() else ():
        match = pattern.fullmatch(candidate.name)
        if match and candidate.is_dir() and not candidate.is_symlink() and not process_is_alive(int(match.group(1))):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _prepare_out(out: Path) -> Path:
    """A temporary folder beside ``out``; ``out`` may be absent, empty or a bundle of ours holding nothing but
    what its model.json lists (then replaced)."""
    check_replaceable(out, bundle_entries)
    remove_stale_temporary_folders(out)
    temporary = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def export_bundle(checkpoint: str | Path, out: str | Path, probe: str | Path | None = None,
                  detector: str | Path | None = None, data: str | Path | None = None, modality: str | None = None,
                  backbone: str = "dste", onnx: bool = False) -> dict[str, Any]:
    """Write the bundle folder ``out`` (see the module docstring); returns a summary."""
    checkpoint, out = Path(checkpoint), Path(out)
    model, description = encoder_of_checkpoint(checkpoint, data, modality, backbone)
    checksum = description["source"]["checkpoint_sha256"]
    heads, tensors, class_names = {}, {}, None
    if probe is not None:
        tensors[CLASSIFIER_FILE], heads["classifier"], class_names = probe_head(
            Path(probe), checksum, description["modality"], model.config.hidden_size)
    if detector is not None:
        tensors[DETECTOR_FILE], heads["detector"] = detector_head(Path(detector), checksum, model.layout,
                                                                  model.config.clip_frames)
    temporary = _prepare_out(out)
    try:
        save_tensors_atomically({k: v for k, v in model.state_dict().items() if k.startswith("encoder.")},
                                temporary / ENCODER_FILE)
        for name, weights in tensors.items():
            save_tensors_atomically(weights, temporary / name)
        description = {"format": FORMAT, "format_version": FORMAT_VERSION, "usdrl_version": __version__,
                       **description, "class_names": class_names, "heads": heads,
                       "exported": {"git_revision": git_revision(), "torch": torch.__version__}}
        # a bundle inside a project names the project's files relative to its root, as results files do
        description = paths_relative_to_project(description, project_root_of(out))
        if onnx:
            description["onnx"] = export_onnx(assemble(temporary, description, torch.device("cpu")),
                                              temporary / ONNX_FILE)
        (temporary / CARD_FILE).write_text(model_card(description))
        files = sorted(path.name for path in temporary.iterdir())
        description["files"] = {name: file_sha256(temporary / name) for name in files}
        description["description_sha256"] = description_digest(description)
        write_json_atomically(temporary / DESCRIPTION_FILE, description)
        replace_folder(temporary, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return {"out": str(out), "files": sorted(description["files"]) + [DESCRIPTION_FILE], "heads": sorted(heads),
            "layout": model.layout.name, "modality": description["modality"]}


def read_description(path: str | Path) -> dict[str, Any]:
    """model.json of a bundle, checked: ours, unchanged, and every file it lists present and unchanged."""
    path = Path(path)
    file = path / DESCRIPTION_FILE
    if not file.is_file():
        raise BundleError(f"{path} is not a model bundle (no {DESCRIPTION_FILE}); make one with usdrl export")
    try:
        description = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{file}: malformed JSON ({error}); the bundle is damaged: export it again") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise BundleError(f"{file} is not a usdrl model description; make the bundle with usdrl export")
    if description.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{file}: bundle format {description.get('format_version')}, this usdrl reads "
                          f"{FORMAT_VERSION}; export the model again with this version")
    if description.get("description_sha256") != description_digest(description):
        raise BundleError(f"{file} was changed after export (its checksum does not match); export the model again")
    check_description(description, str(file), BundleError)
    for name, checksum in description["files"].items():
        if Path(name).name != name or not (path / name).is_file():
            raise BundleError(f"{path / name} is missing from the bundle; copy the whole folder, or export it again")
        if file_sha256(path / name) != checksum:
            raise BundleError(f"{path / name} was changed after export (sha256 differs from {DESCRIPTION_FILE}); the "
                              f"bundle is refused: export it again")
    return description


def _encoder_from(path: Path, description: dict[str, Any], weights: dict[str, torch.Tensor],
                  layout: SkeletonLayout) -> SkeletonModel:
    record = description["encoder"]
    sizes = {name: record.get(name, getattr(ntu25_layout(), name)) for name in LAYOUT_SIZES}
    if sizes != {name: getattr(layout, name) for name in LAYOUT_SIZES}:
        raise BundleError(f"{path / DESCRIPTION_FILE}: encoder sizes {sizes} do not match its layout {layout.name!r}")
    recorded_section(ModelSection, {name: value for name, value in record.items() if name not in LAYOUT_SIZES},
                     str(path / DESCRIPTION_FILE), BundleError, "encoder")  # before anything is allocated
    check_weights(weights, str(path), BundleError)
    try:
        model = SkeletonModel(model_section_of_record(record, layout), layout=layout, projectors=False)
        model.load_state_dict({k: v for k, v in weights.items() if k.startswith("encoder.")}, strict=True)
    except (TypeError, ValueError, RuntimeError) as error:
        raise BundleError(f"{path}: the weights do not fit the encoder described in {DESCRIPTION_FILE} "
                          f"({' '.join(str(error).split())[:200]})") from None
    return model.eval()


def assemble(path: Path, description: dict[str, Any], device: torch.device, precision: str = "auto") -> TrainedModel:
    """The modules of a bundle whose files were checked (or are being written)."""
    layout = layout_from_dict(description["layout"], source=str(path / DESCRIPTION_FILE))
    encoder = _encoder_from(path, description, load_tensors(path / ENCODER_FILE)[0], layout)
    model = TrainedModel(path=path, description=description, layout=layout, encoder=encoder.to(device), device=device,
                         precision=precision)
    if "classifier" in description["heads"]:
        head = load_tensors(path / CLASSIFIER_FILE)[0]
        classes, features = description["heads"]["classifier"]["classes"], 2 * encoder.config.hidden_size
        check_head(head, {"weight": (classes, features), "bias": (classes,), "feature_mean": (features,),
                          "feature_scale": (features,)}, str(path / CLASSIFIER_FILE), BundleError)
        model.classifier = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
        model.classifier.load_state_dict({"weight": head["weight"], "bias": head["bias"]})
        model.classifier.eval()
        model.feature_mean, model.feature_scale = head["feature_mean"], head["feature_scale"]
    if "detector" in description["heads"]:
        weights = load_tensors(path / DETECTOR_FILE)[0]
        classes = len(description["heads"]["detector"]["class_names"])
        check_head(weights, {"head.weight": (classes + 1, 2 * encoder.config.hidden_size), "head.bias": (classes + 1,)},
                   str(path / DETECTOR_FILE), BundleError)
        detector = DenseDetector(_encoder_from(path, description, {k[len("encoder."):]: v for k, v in weights.items()
                                                                    if k.startswith("encoder.")}, layout),
                                 len(description["heads"]["detector"]["class_names"]))
        detector.head.load_state_dict({"weight": weights["head.weight"], "bias": weights["head.bias"]})
        model.detector = detector.to(device).eval()
    return model


def load_model(path: str | Path, device: str = "cpu", precision: str = "auto") -> TrainedModel:
    """A bundle written by ``usdrl export``, checked (``read_description``), ready for ``embed``, ``recognize``
    and, with a detector, ``detect``. ``precision``: autocast as the pipeline's evaluation.precision (auto, the
    pipeline's default, gives the features the pipeline computed on this machine; fp32 to rule autocast out)."""
    path = Path(path)
    return assemble(path, read_description(path), resolve_device(device), precision)


def model_card(description: dict[str, Any]) -> str:
    """README.md of a bundle: what the model is, what it expects, how well it did, where it came from."""
    return render_card(description)
