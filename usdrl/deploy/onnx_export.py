"""The encoder (and the probe head) of a model bundle as ONNX, and its parity with PyTorch on onnxruntime.

Input: the encoder's input x (N, C, T, V, M), i.e. skeletons already preprocessed and resized to the clip length
(``TrainedModel.clips``); the modality (bone, motion) is computed inside the graph. Outputs: ``features``
(N, 2H), ``dense`` (N, T, H) and, with a classifier, ``probabilities`` (N, classes). The batch N is dynamic;
the clip length T is not: the spatial tokens embed all T frames of a joint at once (Linear(T*C, H)), so a
model is built for one T.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usdrl.deploy.inference import TrainedModel
from usdrl.settings.sections import ConfigError

OPSET = 17


class ExportedModel(torch.nn.Module):
    """encode + (normalised features -> head -> softmax) as one module for tracing."""

    def __init__(self, model: TrainedModel) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.modality = model.modality
        self.classifier = model.classifier
        if model.classifier is not None:
            self.register_buffer("feature_mean", model.feature_mean.clone())
            self.register_buffer("feature_scale", model.feature_scale.clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # (N, C, T, V, M)
        """Clip features, per-frame features and, with a classifier, class probabilities of ``x``."""
        encoded = self.encoder.encode(x, self.modality)
        outputs = (encoded["features"], encoded["dense_t"])  # (N, 2H), (N, T, H)
        if self.classifier is not None:
            logits = self.classifier((encoded["features"] - self.feature_mean) / self.feature_scale)
            outputs += (torch.softmax(logits, dim=-1),)  # (N, classes)
        return outputs


def output_names(model: TrainedModel) -> list[str]:
    """The names of the exported model's outputs, in the order ``ExportedModel.forward`` returns them."""
    return ["features", "dense"] + (["probabilities"] if model.classifier is not None else [])


def example_input(model: TrainedModel, batch: int, seed: int = 0) -> torch.Tensor:
    """Random skeleton-sized input (N, C, T, V, M) for tracing and parity checks."""
    layout, clip_frames = model.encoder.layout, model.encoder.config.clip_frames
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, layout.num_coordinates, clip_frames, layout.num_joints, layout.num_persons),
                       generator=generator)


def parity(model: TrainedModel, path: str | Path, batch: int = 5, seed: int = 1) -> float:
    """Largest absolute difference between onnxruntime (CPU) and PyTorch over every output, on a batch of another
    size than the one traced."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example_input(model, batch, seed)
    exported = ExportedModel(model).cpu().eval()
    with torch.no_grad():
        expected = [output.numpy() for output in exported(x)]
    obtained = session.run(output_names(model), {"x": x.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(obtained, expected)))


def export_onnx(model: TrainedModel, path: str | Path) -> dict[str, Any]:
    """Write ``path`` (legacy TorchScript exporter, opset 17) and return its part of model.json, parity included."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'usdrl[onnx]'") from None
    exported = ExportedModel(model).cpu().eval()  # eval: tracing in train mode would bake in drop_path
    names = output_names(model)
    dynamic = {"x": {0: "N"}, **{name: {0: "N"} for name in names}}
    with warnings.catch_warnings():  # the tracer's notes on shape checks and constant index tables
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, (example_input(model, 2),), str(path), input_names=["x"], output_names=names,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    layout, clip_frames = model.encoder.layout, model.encoder.config.clip_frames
    return {"file": Path(path).name, "opset": OPSET, "input": {"x": ["N", layout.num_coordinates, clip_frames,
                                                                      layout.num_joints, layout.num_persons]},
            "outputs": names, "dynamic": "batch N only (the clip length is fixed by the spatial embedding)",
            "expects": "preprocessed clips resized to clip_frames (TrainedModel.clips then downstream resize)",
            "parity_max_abs_difference": parity(model, path)}
