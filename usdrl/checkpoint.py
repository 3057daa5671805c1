"""Safe loading and atomic saving of checkpoints, and import of the authors' released checkpoints.

Every checkpoint is read by ``load_checkpoint``, with ``torch.load(..., weights_only=True)``: a file
can hold tensors and plain Python containers only, so loading it never runs code hidden in it. Our
checkpoints store everything (configs, layout, run info, RNG states) in that form. A file that only
an unsafe load could read is refused; ``usdrl convert-checkpoint OLD --out NEW --trust-this-file``
rewrites one the user vouches for.

Released key names (``module.backbone.t_tr1.DSA.wt1.weight`` ...) are translated to ours by the
rules in ``RELEASED_KEY_RULES``; the attention that the released code stores twice per layer (under
CA and DSA) is one module here and both copies must agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usdrl.config import ModelSection
from usdrl.data.store import atomic_file
from usdrl.model import BACKBONES, LAYOUT_SIZES, SkeletonModel, encoder_record, model_section_of_record
from usdrl.skeleton import SkeletonLayout, ntu25_layout

RELEASED_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.ske_emb\.t_embedding\.", "encoder.temporal_embedding."),
    (r"^backbone\.ske_emb\.s_embedding\.", "encoder.spatial_embedding."),
    (r"^backbone\.spe$", "encoder.spatial_position"),
    (r"^backbone\.(t|s)_tr\.layers\.(\d+)\.", r"encoder.\1_layers.\2."),  # STTR: nn.TransformerEncoder
    (r"^backbone\.(t|s)_tr(\d*)\.(CA|DSA)\.attn\.", r"encoder.\1_layers.<\2>.attention."),
    (r"^backbone\.(t|s)_tr(\d*)\.CA\.conv1\.", r"encoder.\1_layers.<\2>.convolutional_attention.convolution."),
    (r"^backbone\.(t|s)_tr(\d*)\.CA\.norm1\.", r"encoder.\1_layers.<\2>.convolutional_attention.attention_norm."),
    (r"^backbone\.(t|s)_tr(\d*)\.CA\.norm2\.", r"encoder.\1_layers.<\2>.convolutional_attention.mlp_norm."),
    (r"^backbone\.(t|s)_tr(\d*)\.CA\.mlp\.fc1\.", r"encoder.\1_layers.<\2>.convolutional_attention.mlp.0."),
    (r"^backbone\.(t|s)_tr(\d*)\.CA\.mlp\.fc2\.", r"encoder.\1_layers.<\2>.convolutional_attention.mlp.2."),
    (r"^backbone\.(t|s)_tr(\d*)\.DSA\.wt1\.", r"encoder.\1_layers.<\2>.dense_shift_attention.shift_hidden."),
    (r"^backbone\.(t|s)_tr(\d*)\.DSA\.wt2\.", r"encoder.\1_layers.<\2>.dense_shift_attention.shift_output."),
    (r"^backbone\.(t|s)_tr(\d*)\.DSA\.norm1\.", r"encoder.\1_layers.<\2>.dense_shift_attention.attention_norm."),
    (r"^backbone\.(t|s)_tr(\d*)\.DSA\.norm2\.", r"encoder.\1_layers.<\2>.dense_shift_attention.mlp_norm."),
    (r"^backbone\.(t|s)_tr(\d*)\.DSA\.mlp\.fc1\.", r"encoder.\1_layers.<\2>.dense_shift_attention.mlp.0."),
    (r"^backbone\.(t|s)_tr(\d*)\.DSA\.mlp\.fc2\.", r"encoder.\1_layers.<\2>.dense_shift_attention.mlp.2."),
    (r"^t_proj\.", "temporal_projector."),
    (r"^s_proj\.", "spatial_projector."),
    (r"^i_proj\.", "instance_projector."),
    (r"^fc\.", "head."),
)
IGNORED_RELEASED_KEYS = (r"^backbone\.tpe\.pe$",)  # the sinusoidal table, recomputed


class CheckpointError(ValueError):
    """A checkpoint that does not fit; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that only ``weights_only=False`` could load (it may run code); convert it if trusted."""


LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # torch.save's older (non-zip) format


def is_torch_file(path: Path) -> bool:
    """Whether a file is a torch.save file: a zip archive holding data.pkl, or the legacy format's magic number."""
    with open(path, "rb") as handle:
        if handle.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC:
            return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def describe_file(path: Path) -> str:
    """What an unreadable file holds, in a few words, for error messages."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(b"PK\x03\x04"):
        if is_torch_file(path):
            return f"a damaged PyTorch archive ({size} bytes)"
        try:
            with zipfile.ZipFile(path) as archive:
                names = ", ".join(archive.namelist()[:4])
            return f"a zip archive ({names}; a NumPy .npz?), not a PyTorch checkpoint"
        except (zipfile.BadZipFile, OSError, ValueError):
            return f"a truncated or damaged PyTorch archive ({size} bytes)"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return f"a damaged PyTorch checkpoint in the legacy format ({size} bytes)"
    kinds = {b"\x93NUMPY": "a NumPy .npy file", b"\x1f\x8b": "gzip-compressed data", b"\x7fELF": "an ELF executable",
             b"\x80": "a Python pickle"}
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return f"{kind} ({size} bytes), not a PyTorch checkpoint"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        first_line = head.decode("ascii").strip().splitlines()[0][:40] if head.strip() else ""
        return f"text ({size} bytes, starting {first_line!r}), not a PyTorch checkpoint"
    return f"binary data of no known kind ({size} bytes), not a PyTorch checkpoint"


def convert_hint(path: Path) -> str:
    return (f"usdrl convert-checkpoint {path} --out {path.with_name(path.stem + '.safe' + path.suffix)} "
            f"--trust-this-file")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The content of a checkpoint file, loaded with ``weights_only=True``: no code in the file runs.

    Raises CheckpointError naming the file and what it holds (missing, a directory, empty, text,
    truncated), or UnsafeCheckpointError for a file that needs an unsafe load, with the command
    that converts it.
    """
    path = Path(path)
    if path.is_dir():
        inside = next((p for p in (path / "checkpoints" / "last.pt", path / "last.pt") if p.is_file()), None)
        hint = f"; did you mean {inside}?" if inside else "; pass a checkpoint file (e.g. RUN/checkpoints/last.pt)"
        raise CheckpointError(f"{path} is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is an empty file (0 bytes), not a checkpoint (an interrupted copy or write?)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols 4/5 before failing; the error says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not is_torch_file(path):  # a .npy, text, a plain pickle ...: converting would not help
            raise CheckpointError(f"{path} is not a readable checkpoint: it is {describe_file(path)}") from None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - the legacy format has no such listing
            unsafe = []
        if unsafe or "weights only load failed" in str(error).lower():
            named = f" ({', '.join(unsafe[:4])})" if unsafe else ""
            raise UnsafeCheckpointError(
                f"{path} holds Python objects{named} that only an unsafe load (weights_only=False) could rebuild, "
                f"and such a load runs any code hidden in the file, so it is refused; if it is an older usdrl "
                f"checkpoint or you trust its source, convert it once: {convert_hint(path)}") from None
        raise CheckpointError(f"{path} is not a readable checkpoint: it is {describe_file(path)}") from None
    except Exception:  # noqa: BLE001 - torch reports damage as KeyError, EOFError, OSError, RuntimeError ...
        raise CheckpointError(f"{path} is not a readable checkpoint: it is {describe_file(path)}") from None


def describe_content(content: Any) -> str:
    """What a loaded checkpoint holds, in a few words, for error messages."""
    if isinstance(content, dict):
        if content and all(isinstance(v, torch.Tensor) for v in content.values()):
            return f"a bare state dict of {len(content)} tensors"
        keys = ", ".join(map(str, list(content)[:6])) + (", ..." if len(content) > 6 else "")
        return f"a dict with keys {keys}"
    return f"a {type(content).__name__}"


def recorded_model_section(content: dict[str, Any], source: str | Path, layout: SkeletonLayout) -> ModelSection:
    """The model section a checkpoint of usdrl pretrain records (its ``encoder_config``), checked before any model
    is built: known keys, a known backbone, positive integer sizes, finite numbers, the sizes of the stored weights
    (so a damaged or forged config never builds a model larger than the tensors the file holds), and last the
    layout ``layout`` the checkpoint records (its V, M, C must be the recorded ones)."""
    recorded, weights = content.get("encoder_config"), content.get("model")
    if not isinstance(recorded, dict) or not isinstance(weights, dict):
        raise CheckpointError(f"{source} is not a checkpoint of usdrl pretrain (it holds {describe_content(content)})")
    defaults = encoder_record(ModelSection(), ntu25_layout())  # a key left out: its default (as always read)
    fields = {name: type(value) for name, value in defaults.items()}
    unknown = sorted(map(str, set(recorded) - set(fields)))
    if unknown:
        raise CheckpointError(f"{source} has an encoder config this version does not know: {', '.join(unknown)}")
    for name, value in recorded.items():
        kind = fields[name]
        if kind is str:
            valid, wanted = value in BACKBONES, " or ".join(BACKBONES)
        elif kind is int:
            valid, wanted = isinstance(value, int) and not isinstance(value, bool) and value > 0, "a positive integer"
        else:
            valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            wanted = "a number"
        if not valid:
            raise CheckpointError(f"{source} records encoder_config.{name}={value!r}, which must be {wanted}; the file "
                                  f"is damaged or was not written by usdrl pretrain")
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


def convert_checkpoint(old: str | Path, new: str | Path, trust_this_file: bool = False) -> dict[str, Any]:
    """Rewrite a checkpoint that needs an unsafe load in the safe form (tensors and plain containers).

    Loading ``old`` with ``weights_only=False`` runs any code it holds, so it happens only with
    ``trust_this_file``; without it the file is refused (or reported as already safe).
    """
    old, new = Path(old), Path(new)
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


def translate_released_key(key: str) -> str | None:
    """Our parameter name for a released one (``module.`` stripped), None for keys we recompute."""
    key = key[len("module."):] if key.startswith("module.") else key
    if any(re.match(pattern, key) for pattern in IGNORED_RELEASED_KEYS):
        return None
    for pattern, replacement in RELEASED_KEY_RULES:
        if re.match(pattern, key):
            translated = re.sub(pattern, replacement, key)
            # released DSTE layers are t_tr (first) and t_tr1 (second): <> holds the layer number
            translated = re.sub(r"<(\d*)>", lambda m: m.group(1) or "0", translated)
            return translated.replace("encoder.t_layers", "encoder.temporal_layers").replace(
                "encoder.s_layers", "encoder.spatial_layers")
    raise CheckpointError(f"released key {key!r} has no counterpart in this model")


def translate_released_state_dict(state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    translated: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        try:
            ours = translate_released_key(key)
        except CheckpointError as error:
            raise CheckpointError(f"{source}: {error}; is it a USDRL checkpoint?") from None
        if ours is None:
            continue
        if ours in translated:  # the shared attention, stored under CA and DSA
            if not torch.equal(translated[ours], value):
                raise CheckpointError(f"{source}: {key} differs from its CA/DSA twin; the attention must be shared")
            continue
        translated[ours] = value
    return translated


def _read_state_dict(path_or_state_dict: str | Path | dict[str, Any],
                     source: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path_or_state_dict, (str, Path)):
        content = load_checkpoint(path_or_state_dict)
        source = source or str(path_or_state_dict)
    else:
        content, source = path_or_state_dict, source or "state_dict"
    if isinstance(content, dict) and "encoder_config" in content and "model" in content:
        raise CheckpointError(f"{source} is a checkpoint of usdrl pretrain, not a released one; load it with "
                              f"usdrl.evaluate.features.load_encoder (or pass it to usdrl probe --checkpoint)")
    if isinstance(content, dict) and "state_dict" in content and isinstance(content["state_dict"], dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"{source}: not a state dict (or a dict with 'state_dict'); it holds "
                              f"{describe_content(content)}")
    return content, source


def load_released(path_or_state_dict: str | Path | dict[str, Any], backbone: str = "dste", *,
                  hidden_size: int | None = None, num_head: int = 1, num_layer: int = 2, alpha: float = 0.5,
                  gap: int = 4, kernel_size: int = 1, t_input_size: int | None = None,
                  s_input_size: int | None = None, num_class: int | None = None, source: str | None = None,
                  **ignored: Any) -> SkeletonModel:
    """A model of ours holding the released weights, in eval mode.

    Keyword names are the released code's; what they leave out is read from the weights (hidden size
    from the spatial positions, classes from the head). Pretraining checkpoints give projectors,
    downstream ones a head. The file is loaded safely (``load_checkpoint``); ``source`` names an
    already loaded content in messages.
    """
    state_dict, source = _read_state_dict(path_or_state_dict, source)
    translated = translate_released_state_dict(state_dict, source)
    needed = ("encoder.spatial_position", "encoder.spatial_embedding.0.weight", "encoder.temporal_embedding.0.weight")
    absent = [key for key in needed if key not in translated]
    if absent:
        raise CheckpointError(f"{source}: not a USDRL encoder checkpoint (no {', '.join(absent)}); pass a checkpoint "
                              f"of usdrl pretrain or of the released code")
    _, spatial_length, stored_hidden = translated["encoder.spatial_position"].shape
    hidden_size = hidden_size or stored_hidden
    spatial_input = s_input_size or translated["encoder.spatial_embedding.0.weight"].shape[1]
    temporal_input = t_input_size or translated["encoder.temporal_embedding.0.weight"].shape[1]
    num_persons, coordinates = 2, 3
    num_joints = spatial_length // num_persons
    if temporal_input != num_persons * num_joints * coordinates:
        raise CheckpointError(f"{source}: temporal input {temporal_input} does not fit {spatial_length} spatial tokens")
    config = ModelSection(backbone=backbone.lower(), hidden_size=hidden_size, num_heads=num_head, num_layers=num_layer,
                          alpha=alpha, gap=gap, kernel_size=kernel_size, clip_frames=spatial_input // coordinates)
    layout = ntu25_layout()  # the released models are NTU's (V=25, M=2, C=3)
    has_projectors = any(key.startswith("instance_projector.") for key in translated)
    num_classes = num_class or (translated["head.weight"].shape[0] if "head.weight" in translated else None)
    if (num_joints, num_persons, coordinates) != (layout.num_joints, layout.num_persons, layout.num_coordinates):
        raise CheckpointError(f"{source}: no {backbone} encoder can be built from it: layout {layout.name!r} does not "
                              f"match the encoder sizes V={num_joints}, M={num_persons}, C={coordinates}")
    try:
        model = SkeletonModel(config, layout, num_classes=num_classes, projectors=has_projectors)
    except (ValueError, AssertionError, RuntimeError) as error:  # e.g. a backbone name or heads that do not divide the hidden size
        raise CheckpointError(f"{source}: no {backbone} encoder can be built from it: {error}") from None
    try:
        missing, unexpected = model.load_state_dict(translated, strict=False)
    except RuntimeError as error:  # a shape mismatch
        raise CheckpointError(f"{source} does not fit a {backbone} model with {config}: "
                              f"{str(error).strip().splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit a {backbone} model with {config}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}; check backbone, num_layer and hidden_size")
    return model.eval()


def save_atomically(content: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary name, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_file(path) as temporary:
        torch.save(content, temporary)
    return Path(path)


def save_tensors_atomically(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Tensors as a safetensors file (no pickle: loading it runs no code), written to a temporary name, then
    renamed. ``metadata``: text only (safetensors' header)."""
    from safetensors.torch import save_file

    with atomic_file(path) as temporary:
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, str(temporary),
                  metadata=metadata)
    return Path(path)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, text metadata) of a safetensors file, on the CPU; a CheckpointError naming the file when it is
    missing or not a safetensors file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; it should hold safetensors weights")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({' '.join(str(error).split())})") from None
