"""The authors' released checkpoints (``.pth.tar``): their parameter names translated to ours, and loaded.

Released key names (``module.backbone.t_tr1.DSA.wt1.weight`` ...) are translated to ours by the
rules in ``RELEASED_KEY_RULES``; the attention that the released code stores twice per layer (under
CA and DSA) is one module here and both copies must agree. The file is loaded safely
(``usdrl.training.checkpoint_files.load_checkpoint``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from usdrl.nn.encoders import SkeletonModel
from usdrl.settings.sections import ModelSection
from usdrl.skeleton import ntu25_layout
from usdrl.training.checkpoint_files import CheckpointError, describe_content, load_checkpoint
from usdrl.validation import check_weights, recorded_section

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
    """A released state dict with our parameter names (``translate_released_key``); the recomputed keys are left
    out, and the attention stored under both CA and DSA is kept once, after checking that both copies are equal."""
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
    for key, dimensions in zip(needed, (3, 2, 2)):
        tensor = translated[key]
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != dimensions:
            raise CheckpointError(f"{source}: {key} must be a tensor of {dimensions} dimensions, got "
                                  f"{tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__}")
    check_weights(translated, source, CheckpointError)
    _, spatial_length, stored_hidden = translated["encoder.spatial_position"].shape
    hidden_size = hidden_size or stored_hidden
    spatial_input = s_input_size or translated["encoder.spatial_embedding.0.weight"].shape[1]
    temporal_input = t_input_size or translated["encoder.temporal_embedding.0.weight"].shape[1]
    num_persons, coordinates = 2, 3
    num_joints = spatial_length // num_persons
    if temporal_input != num_persons * num_joints * coordinates:
        raise CheckpointError(f"{source}: temporal input {temporal_input} does not fit {spatial_length} spatial tokens")
    # checked as params.yaml's model section (sizes bounded) before anything is allocated
    config = recorded_section(ModelSection, {"backbone": backbone.lower(), "hidden_size": int(hidden_size),
                                             "num_heads": num_head, "num_layers": num_layer, "alpha": alpha, "gap": gap,
                                             "kernel_size": kernel_size, "clip_frames": spatial_input // coordinates},
                              str(source), CheckpointError, "model")
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
