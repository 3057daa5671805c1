"""Inference speed of the encoder (and probe head): PyTorch eager against onnxruntime, printed as JSON.

    python benchmarks/inference.py --size demo                  # hidden 64, as the demo profile
    python benchmarks/inference.py --model model/ --threads 2   # a bundle (exported with or without --onnx)

For batch 1 and batch 64 of preprocessed clips (N, C, T, V, M): milliseconds per batch (median of the
repeats), milliseconds per clip and clips per second, for PyTorch eager in float32 and under bf16 autocast
(``--precision bf16``; fast on CPUs with AVX512-BF16 or AMX, emulated and slow elsewhere) and onnxruntime on the CPU.
Random skeletons stand in for data; a size without --model uses a random-initialised encoder of that size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from usdrl.deploy.inference import TrainedModel
from usdrl.deploy.onnx_export import ExportedModel, example_input, export_onnx, output_names
from usdrl.nn.encoders import SkeletonModel, count_parameters
from usdrl.settings.sections import ModelSection
from usdrl.skeleton import ntu25_layout
from usdrl.training.runtime import autocast_context

SIZES = {"tiny": 32, "demo": 64, "small": 256, "paper": 1024}


def random_model(hidden_size: int) -> TrainedModel:
    torch.manual_seed(0)
    layout = ntu25_layout()
    encoder = SkeletonModel(ModelSection(hidden_size=hidden_size), layout=layout, projectors=False).eval()
    return TrainedModel(path=Path(f"random-{hidden_size}"), description={"modality": "joint"}, layout=layout,
                        encoder=encoder, device=torch.device("cpu"))


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def row(engine: str, batch: int, seconds: float) -> dict:
    return {"engine": engine, "batch": batch, "ms_per_batch": round(1000 * seconds, 3),
            "ms_per_clip": round(1000 * seconds / batch, 3), "clips_per_s": round(batch / seconds, 1)}


def measure(model: TrainedModel, onnx_path: Path, batches: list[int], repeats: int, threads: int) -> list[dict]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    exported = ExportedModel(model).eval()
    precisions = {"pytorch eager fp32": None, "pytorch eager bf16 autocast": torch.bfloat16}
    rows = []
    for batch in batches:
        x = example_input(model, batch)
        for engine, dtype in precisions.items():
            def eager(x: torch.Tensor = x, dtype: torch.dtype | None = dtype) -> object:  # this iteration's
                with torch.no_grad(), autocast_context(torch.device("cpu"), dtype):
                    return exported(x)
            rows.append(row(engine, batch, median_seconds(eager, repeats)))
        inputs = {"x": x.numpy()}
        rows.append(row("onnxruntime cpu", batch, median_seconds(lambda inputs=inputs: session.run(output_names(model), inputs),
                                                                 repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model bundle (default: a random encoder of --size)")
    parser.add_argument("--size", choices=SIZES, default="demo", help="hidden size without --model")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    if arguments.model is not None:
        from usdrl import load_model

        model = load_model(arguments.model, precision="fp32")
    else:
        model = random_model(SIZES[arguments.size])
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        parity = export_onnx(model, onnx_path)["parity_max_abs_difference"]
        rows = measure(model, onnx_path, arguments.batches, arguments.repeats, arguments.threads)
    config = model.encoder.config
    print(json.dumps({"model": str(arguments.model or f"random encoder, hidden {config.hidden_size}"),
                      "backbone": config.backbone, "hidden_size": config.hidden_size, "clip_frames": config.clip_frames,
                      "encoder_parameters": count_parameters(model.encoder.encoder),
                      "head": model.classifier is not None, "onnx_parity_max_abs_difference": parity,
                      "machine": {"processor": platform.processor() or platform.machine(), "threads": arguments.threads,
                                  "torch": torch.__version__},
                      "input": "preprocessed clips (N, C, T, V, M), random values", "results": rows}, indent=1))


if __name__ == "__main__":
    main()
