"""Safe loading and atomic saving of checkpoints, and import of the authors' released checkpoints.

Every checkpoint is read by ``load_checkpoint``, with ``torch.load(..., weights_only=True)``: a file
can hold tensors and plain Python containers only, so loading it never runs code hidden in it. Our
checkpoints store everything (configs, layout, run info, RNG states) in that form. A file that only
an unsafe load could read is refused; ``usdrl convert-checkpoint OLD --out NEW --trust-this-file``
rewrites one the user vouches for.

Here: our checkpoints, what they record (``recorded_model_section``, ``recorded_modality``) and the
conversion of an older one to the safe form (``convert_checkpoint``, ``plain_content``). Reading and
writing checkpoint files is ``usdrl.training.checkpoint_files``; the released checkpoints, their key names
translated to ours, are ``usdrl.training.released_checkpoints``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usdrl.data.atomic_files import check_overwritable
from usdrl.nn.encoders import LAYOUT_SIZES, encoder_record, model_section_of_record
from usdrl.settings.sections import AugmentSection, LossSection, ModelSection, PretrainSection
from usdrl.skeleton import MOST_JOINTS, MOST_PERSONS, SkeletonLayout, ntu25_layout
from usdrl.training.checkpoint_files import (
    CheckpointError,
    UnsafeCheckpointError,
    describe_content,
    describe_file,
    is_torch_file,
    load_checkpoint,
    save_atomically,
)
from usdrl.validation import check_weights, recorded_section

LAYOUT_SIZE_BOUNDS = {"num_joints": MOST_JOINTS, "num_persons": MOST_PERSONS, "num_coordinates": 3}
# the settings a checkpoint's run records (``run``), by the params.yaml section that checks them
RECORDED_SECTIONS = {"model": ModelSection, "augment": AugmentSection, "loss": LossSection,
                     "pretrain": PretrainSection}


def recorded_model_section(content: dict[str, Any], source: str | Path, layout: SkeletonLayout) -> ModelSection:
    """The model section a checkpoint of usdrl pretrain records (its ``encoder_config``), checked before any model
    is built: known keys, the model settings as params.yaml's (``usdrl.validation.recorded_section``), bounded
    layout sizes, the run's recorded settings, epoch and weights (``check_recorded_run``), the sizes of the stored weights
    (so a damaged or forged config never builds a model larger than the tensors the file holds), and last the
    layout ``layout`` the checkpoint records (its V, M, C must be the recorded ones)."""
    recorded, weights = content.get("encoder_config"), content.get("model")
    if not isinstance(recorded, dict) or not isinstance(weights, dict):
        raise CheckpointError(f"{source} is not a checkpoint of usdrl pretrain (it holds {describe_content(content)})")
    defaults = encoder_record(ModelSection(), ntu25_layout())  # a key left out: its default (as always read)
    unknown = sorted(map(str, set(recorded) - set(defaults)))
    if unknown:
        raise CheckpointError(f"{source} has an encoder config this version does not know: {', '.join(unknown)}")
    for name in LAYOUT_SIZES:
        value = recorded.get(name, defaults[name])
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= LAYOUT_SIZE_BOUNDS[name]):
            raise CheckpointError(f"{source} records encoder_config.{name}={value!r}, which must be an integer from 1 "
                                  f"to {LAYOUT_SIZE_BOUNDS[name]}; the file is damaged or was not written by usdrl "
                                  f"pretrain")
    # the model settings are checked as params.yaml's model section is (types, ALLOWED ranges, gap <= clip)
    recorded_section(ModelSection, {name: value for name, value in recorded.items() if name not in LAYOUT_SIZES},
                     str(source), CheckpointError, "encoder_config")
    check_recorded_run(content, str(source))
    values = {**defaults, **recorded}
    joints, persons, coordinates = (values[name] for name in LAYOUT_SIZES)  # V, M, C as recorded
    hidden = values["hidden_size"]
    expected = {"encoder.spatial_position": (1, persons * joints, hidden),  # (1, M*V, H)
                "encoder.temporal_embedding.0.weight": (hidden, persons * joints * coordinates),  # (H, M*V*C)
                "encoder.spatial_embedding.0.weight": (hidden, values["clip_frames"] * coordinates)}  # (H, T*C)
    for key, shape in expected.items():
        stored = weights.get(key)
        if not isinstance(stored, torch.Tensor) or tuple(stored.shape) != shape:
            held = tuple(stored.shape) if isinstance(stored, torch.Tensor) else "nothing"
            raise CheckpointError(f"{source} does not fit the model: its encoder config needs {key} of shape {shape}, "
                                  f"but the file holds {held}; the config and the weights disagree (a damaged or "
                                  f"edited checkpoint)")
    layers = {key.split(".")[2] for key in weights if str(key).startswith("encoder.temporal_layers.")}
    if len(layers) != values["num_layers"]:
        raise CheckpointError(f"{source} does not fit the model: its encoder config says {values['num_layers']} layers, "
                              f"but the file holds the weights of {len(layers)}; the config and the weights disagree")
    try:
        return model_section_of_record(recorded, layout)
    except ValueError:
        raise CheckpointError(f"{source}: its encoder config (V={joints}, M={persons}) and its layout {layout.name!r} "
                              f"disagree (a damaged or edited checkpoint)") from None


def check_recorded_run(content: dict[str, Any], source: str) -> None:
    """The rest of what a checkpoint of usdrl pretrain records, checked before it is used: the epoch (an integer
    of at least 0), the run's recorded model, augment, loss and pretrain settings (as params.yaml's sections are)
    and the model's weights (floating-point and finite); a CheckpointError naming the file and field otherwise."""
    epoch = content.get("epoch", 0)
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
        raise CheckpointError(f"{source}: epoch must be an integer of at least 0, got {epoch!r:.60}; the file is "
                              f"damaged or was not written by usdrl pretrain")
    run = content.get("run")
    if run is not None and not isinstance(run, dict):
        raise CheckpointError(f"{source}: run must be a mapping of the run's settings, got {type(run).__name__}")
    for name, section in RECORDED_SECTIONS.items():
        if run and run.get(name) is not None:
            recorded_section(section, run[name], source, CheckpointError, f"run.{name}")
    check_weights(content["model"], source, CheckpointError)


def recorded_modality(content: dict[str, Any]) -> str | None:
    """The modality a checkpoint of usdrl pretrain was trained on (its run info), None if not recorded."""
    run = content.get("run")
    settings = run.get("pretrain") if isinstance(run, dict) else None
    modality = settings.get("modality") if isinstance(settings, dict) else None
    return modality if isinstance(modality, str) else None


def plain_numpy_random_state(state: tuple | dict) -> dict[str, Any]:
    """numpy's global RNG state (the legacy tuple with an ndarray, or the dict form) as plain Python
    values that ``weights_only=True`` loads and ``np.random.set_state`` accepts."""
    if isinstance(state, tuple):
        name, key, position, has_gauss, gauss = state
        state = {"bit_generator": name, "state": {"key": key, "pos": position}, "has_gauss": has_gauss, "gauss": gauss}
    return {"bit_generator": str(state["bit_generator"]),
            "state": {"key": [int(k) for k in state["state"]["key"]], "pos": int(state["state"]["pos"])},
            "has_gauss": int(state["has_gauss"]), "gauss": float(state["gauss"])}


def plain_content(value: Any, where: str = "checkpoint") -> Any:
    """A trusted checkpoint's content as tensors and plain Python containers (numpy arrays become
    tensors, numpy's RNG state plain lists, paths strings, dataclasses and namespaces dicts)."""
    if isinstance(value, (torch.Tensor, str, bytes, int, float, bool, type(None), torch.dtype, torch.device,
                          torch.Size)):
        return value
    if (isinstance(value, tuple) and len(value) == 5 and isinstance(value[0], str) and value[0] == "MT19937"
            and isinstance(value[1], np.ndarray)):  # numpy's legacy RNG state
        return plain_numpy_random_state(value)
    if isinstance(value, dict):
        if "bit_generator" in value and isinstance(value.get("state"), dict) and "key" in value["state"]:
            return plain_numpy_random_state(value)
        items = ((key, plain_content(item, f"{where}[{key!r}]")) for key, item in value.items())
        return OrderedDict(items) if isinstance(value, OrderedDict) else dict(items)
    if isinstance(value, (list, tuple)):
        return type(value)(plain_content(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_content(dataclasses.asdict(value), where)
    if isinstance(value, argparse.Namespace):
        return plain_content(vars(value), where)
    raise CheckpointError(f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, which has no plain "
                          f"form; convert this checkpoint by hand")


def is_checkpoint_file(path: Path) -> bool:
    """Whether ``path`` is a checkpoint by content: a torch.save file (what ``convert_checkpoint`` may replace)."""
    return is_torch_file(path)


def convert_checkpoint(old: str | Path, new: str | Path, trust_this_file: bool = False,
                       overwrite: bool = False) -> dict[str, Any]:
    """Rewrite a checkpoint that needs an unsafe load in the safe form (tensors and plain containers).

    Loading ``old`` with ``weights_only=False`` runs any code it holds, so it happens only with
    ``trust_this_file``; without it the file is refused (or reported as already safe). ``new`` may be ``old``
    itself, absent, or another checkpoint; any other existing file is refused unless ``overwrite``.
    """
    old, new = Path(old), Path(new)
    if not (new.exists() and old.exists() and new.resolve() == old.resolve()):
        check_overwritable(new, is_checkpoint_file, overwrite, "a checkpoint")
    if not trust_this_file:
        try:
            load_checkpoint(old)
        except UnsafeCheckpointError:
            raise CheckpointError(f"refusing to convert {old} without --trust-this-file: converting loads it with "
                                  f"weights_only=False, which runs any code the file holds; pass the flag only for a "
                                  f"file you made yourself or whose source you trust") from None
        raise CheckpointError(f"{old} already loads safely (weights_only=True); use it as it is")
    if not old.is_file() or old.stat().st_size == 0:
        load_checkpoint(old)  # raises the clear error: missing, a directory, empty
    if not is_torch_file(old):  # an unsafe load of a plain pickle would run it, and convert nothing
        raise CheckpointError(f"{old} is not a readable checkpoint: it is {describe_file(old)}; nothing to convert")
    try:
        content = torch.load(old, map_location="cpu", weights_only=False)  # the user vouched for this file
    except Exception:  # noqa: BLE001 - damaged files fail in many ways
        raise CheckpointError(f"{old} is not a readable checkpoint: it is {describe_file(old)}") from None
    save_atomically(plain_content(content, str(old)), new)
    load_checkpoint(new)  # the safe load works now
    return {"out": str(new), "source": str(old), "holds": describe_content(content)}
