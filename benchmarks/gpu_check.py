"""The GPU check: parity, speed, memory and the whole pipeline on a CUDA device, as one JSON summary.

    python benchmarks/gpu_check.py                   # on a machine with CUDA: about 6 minutes on one GPU
    python benchmarks/gpu_check.py --out gpu.json    # the summary also written to a file
    python benchmarks/gpu_check.py --device cpu --dry   # every part on tiny sizes on the CPU (what the tests run)

Parts, each in its own process with its own time limit (a failing or hanging part records its error and the
others still run):

- ``parity``: encoder + projectors + loss forward and backward on fixed inputs, the device against the CPU:
  float32 (TF32 off) within ``FP32_TOLERANCE`` relative error, and under bf16 autocast: loss terms within
  ``BF16_LOSS_TOLERANCE`` relative, all gradients together at cosine similarity at least ``BF16_GRADIENT_COSINE``;
  the loss alone (``mgfd_loss`` on fixed projections) likewise in float32.
- ``training_step``: ``benchmarks/pretraining.py``'s step at ``--size paper --batch-size 356`` in fp32 and bf16:
  samples/s, fraction of the measured matrix-product peak, peak memory.
- ``features_knn``: ``extract_features`` and ``knn_accuracy`` on the device at NTU-60 xsub size (40,091 training,
  16,487 test samples cycling over a 2,000-row NTU-shaped store), random-init paper encoder.
- ``cli_demo``: ``usdrl prepare synthetic``, ``usdrl pretrain --profile demo --epochs 2`` and ``usdrl probe`` on
  the device, through the CLI.
- ``ddp``: ``torchrun`` over the GPUs present (NCCL; gloo on the CPU): one DDP step whose loss and gradients
  match one process's with the whole batch.
- ``compile``: the bf16 paper step eager and through ``torch.compile`` (inductor; ``--dry``: the eager backend,
  which traces the objective without generating code).

Without CUDA (and without ``--device cpu``) it prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

BENCHMARKS = Path(__file__).resolve().parent
REPOSITORY = BENCHMARKS.parent
PARTS = ("parity", "training_step", "features_knn", "cli_demo", "ddp", "compile")
TIME_LIMITS = {"parity": 60, "training_step": 150, "features_knn": 120, "cli_demo": 180, "ddp": 90, "compile": 180}
FP32_TOLERANCE = 1e-3
BF16_LOSS_TOLERANCE = 5e-2
BF16_GRADIENT_COSINE = 0.9
NTU60_XSUB = (40_091, 16_487)

# the sizes of the real check and of the dry run (--dry)
SIZES = {
    False: {"parity_hidden": 256, "parity_batch": 16, "parity_frames": 64, "step_size": "paper", "step_batch": 356,
            "step_steps": 10, "compile_steps": 5, "compile_backend": "inductor", "store_rows": 2000, "feature_samples": NTU60_XSUB,
            "feature_hidden": 1024, "demo_epochs": 2, "ddp_hidden": 64, "ddp_batch": 8},
    True: {"parity_hidden": 16, "parity_batch": 4, "parity_frames": 16, "step_size": "tiny", "step_batch": 4,
           "step_steps": 1, "compile_steps": 1, "compile_backend": "eager", "store_rows": 16, "feature_samples": (48, 24), "feature_hidden": 16,
           "demo_epochs": 1, "ddp_hidden": 16, "ddp_batch": 2},
}


def benchmark_module(name: str):
    """A module of benchmarks/ (pretraining, feed_rate), imported by file."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return __import__(name)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference| (float64, on the CPU)."""
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    return float((value - reference).abs().max() / reference.abs().max().clamp(min=1e-12))


def gradients_error(gradients: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """max |gradient - reference| over all parameters / the largest reference gradient entry; inf when the
    parameters with gradients differ."""
    if set(gradients) != set(reference):
        return float("inf")
    return relative_error(torch.cat([gradients[name].flatten() for name in reference]),
                          torch.cat([reference[name].flatten() for name in reference]))


def forward_backward(model, views: torch.Tensor, dtype: torch.dtype | None) -> tuple[dict, dict]:
    """Loss terms and parameter gradients of one forward and backward pass of the pretraining objective."""
    from usdrl.settings.sections import LossSection
    from usdrl.training.pretrain import PretrainingObjective, loss_terms
    from usdrl.training.runtime import autocast_context

    model.zero_grad(set_to_none=True)
    with autocast_context(views.device, dtype):
        projections = PretrainingObjective(model)(views, "joint")
    terms = loss_terms(projections, LossSection())
    terms["total"].backward()
    gradients = {name: p.grad.detach().float().cpu() for name, p in model.named_parameters() if p.grad is not None}
    return {key: value.detach().float().cpu() for key, value in terms.items()}, gradients


def part_parity(device: torch.device, sizes: dict) -> dict:
    from usdrl.nn.encoders import SkeletonModel
    from usdrl.nn.losses import mgfd_loss
    from usdrl.settings.sections import LossSection, ModelSection

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    config = ModelSection(hidden_size=sizes["parity_hidden"], drop_path=0.0, clip_frames=sizes["parity_frames"])
    reference_model = SkeletonModel(config).train()
    model = copy.deepcopy(reference_model).to(device)
    generator = torch.Generator().manual_seed(1)
    views = torch.randn((4, sizes["parity_batch"], 3, sizes["parity_frames"], 25, 2), generator=generator)
    reference_terms, reference_gradients = forward_backward(reference_model, views, None)
    report: dict = {"tolerances": {"fp32_relative": FP32_TOLERANCE, "bf16_loss_relative": BF16_LOSS_TOLERANCE,
                                   "bf16_gradient_cosine": BF16_GRADIENT_COSINE, "tf32": False}}
    terms, gradients = forward_backward(model, views.to(device), None)
    loss_error = max(relative_error(terms[key], reference_terms[key]) for key in reference_terms)
    gradient_error = gradients_error(gradients, reference_gradients)
    report["fp32"] = {"loss_relative_error": loss_error, "gradient_relative_error": gradient_error,
                      "ok": loss_error <= FP32_TOLERANCE and gradient_error <= FP32_TOLERANCE}
    terms, gradients = forward_backward(model, views.to(device), torch.bfloat16)
    loss_error = max(relative_error(terms[key], reference_terms[key]) for key in reference_terms)
    flat = torch.cat([gradients[name].flatten() for name in reference_gradients]).double()
    reference_flat = torch.cat([reference_gradients[name].flatten() for name in reference_gradients]).double()
    cosine = float(torch.nn.functional.cosine_similarity(flat, reference_flat, dim=0))
    report["bf16_autocast"] = {"loss_relative_error": loss_error, "gradient_cosine": cosine,
                               "ok": loss_error <= BF16_LOSS_TOLERANCE and cosine >= BF16_GRADIENT_COSINE}
    projections = [torch.randn((64, 128), generator=generator) for _ in range(6)]

    def loss_and_gradients(on: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = [p.to(on).requires_grad_() for p in projections]
        total = mgfd_loss(z[0:2], z[2:4], z[4:6], LossSection())["total"]
        total.backward()
        return total.detach().cpu(), [p.grad.cpu() for p in z]

    reference_loss, reference_z = loss_and_gradients(torch.device("cpu"))
    loss, z_gradients = loss_and_gradients(device)
    loss_error = relative_error(loss, reference_loss)
    gradient_error = relative_error(torch.cat([g.flatten() for g in z_gradients]),
                                    torch.cat([r.flatten() for r in reference_z]))
    report["loss_fp32"] = {"loss_relative_error": loss_error, "gradient_relative_error": gradient_error,
                           "ok": loss_error <= FP32_TOLERANCE and gradient_error <= FP32_TOLERANCE}
    report["ok"] = all(report[key]["ok"] for key in ("fp32", "bf16_autocast", "loss_fp32"))
    return report


def _step_pair(device: torch.device, sizes: dict, steps: int, variants: dict[str, dict], keys: tuple[str, ...],
               ratio: str) -> dict:
    """The paper-size training step measured once per variant (``benchmarks/pretraining.py`` measure keywords),
    the ``keys`` of each, and the second variant's samples/s over the first's as ``ratio``."""
    pretraining = benchmark_module("pretraining")
    report = {}
    for name, options in variants.items():
        measured = pretraining.measure(sizes["step_size"], sizes["step_batch"], steps, str(device), **options)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report[name] = {key: measured[key] for key in keys}
    first, second = (report[name]["training_samples_per_second"] for name in variants)
    report[ratio] = round(second / first, 2)
    report["ok"] = True
    return report


def part_training_step(device: torch.device, sizes: dict) -> dict:
    return _step_pair(device, sizes, sizes["step_steps"], {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}},
                      ("training_samples_per_second", "augmentation_samples_per_second", "fraction_of_peak",
                       "achieved_matmul_gflops", "peak_memory_mb", "parameters_millions", "batch_size", "hidden_size"),
                      "bf16_over_fp32")


def part_compile(device: torch.device, sizes: dict) -> dict:
    variants = {"eager": {"precision": "bf16", "compile_backend": None},
                "compiled": {"precision": "bf16", "compile_backend": sizes["compile_backend"]}}
    return _step_pair(device, sizes, sizes["compile_steps"], variants,
                      ("training_samples_per_second", "warm_up_seconds", "fraction_of_peak", "peak_memory_mb",
                       "compiled"), "compiled_over_eager")


def part_features_knn(device: torch.device, sizes: dict) -> dict:
    from usdrl.data.store import load_split
    from usdrl.evaluate.features import extract_features
    from usdrl.evaluate.retrieval import knn_accuracy
    from usdrl.nn.encoders import SkeletonModel
    from usdrl.settings.sections import ModelSection

    feed_rate = benchmark_module("feed_rate")
    folder = Path(tempfile.mkdtemp(prefix="usdrl-gpu-check-"))
    try:
        feed_rate.write_store(folder / "store", sizes["store_rows"])
        stored = load_split(folder / "store", "all", "train")
        train_count, test_count = sizes["feature_samples"]
        train, test = feed_rate.cycled(stored, train_count), feed_rate.cycled(stored, test_count)
        torch.manual_seed(0)
        model = SkeletonModel(ModelSection(hidden_size=sizes["feature_hidden"])).eval()
        report = {"train_samples": train_count, "test_samples": test_count, "hidden_size": sizes["feature_hidden"]}
        features = {}
        for name, split in (("train", train), ("test", test)):
            started = time.perf_counter()
            features[name] = extract_features(model, split, "joint", device, batch_size=256, precision="auto")
            elapsed = time.perf_counter() - started
            report[f"features_{name}_seconds"] = round(elapsed, 2)
            report[f"features_{name}_samples_per_second"] = round(len(split) / elapsed, 1)
        started = time.perf_counter()
        accuracy = knn_accuracy(features["train"], train.label, features["test"], test.label, k=1, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        report["knn_seconds"] = round(time.perf_counter() - started, 2)
        report["knn_accuracy_random_data"] = round(accuracy, 4)
        report["features_finite"] = bool(np.isfinite(features["train"]).all() and np.isfinite(features["test"]).all())
        report["ok"] = report["features_finite"]
        return report
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def usdrl_command(arguments: list[str], timeout: float) -> float:
    """Run ``usdrl ARGUMENTS`` from the repository root (its params.yaml); seconds taken; an error with its
    stderr's end when it fails."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "usdrl.cli.main", *arguments], cwd=REPOSITORY, capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"usdrl {arguments[0]} exited {result.returncode}: {result.stderr[-2000:]}")
    return round(time.perf_counter() - started, 1)


def part_cli_demo(device: torch.device, sizes: dict) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="usdrl-gpu-check-"))
    device_name = str(device)
    settings = ["--set", "pretrain.minimum_steps=0", "--set", "pretrain.gain_check_seeds=0"]
    if sizes is SIZES[True]:
        settings += ["--set", "model.hidden_size=16", "--set", "model.num_layers=1", "--set", "probe.epochs=2",
                     "--set", "probe.milestones=[1]"]
    try:
        report = {"prepare_seconds": usdrl_command(["prepare", "synthetic", "--out", str(folder / "synthetic"),
                                                    "--quiet"], 120)}
        data = str(folder / "synthetic" / "actions")
        report["pretrain_seconds"] = usdrl_command(
            ["pretrain", "--data", data, "--benchmark", "xsub", "--out", str(folder / "run"), "--profile", "demo",
             "--device", device_name, "--epochs", str(sizes["demo_epochs"]), "--quiet", *settings], 600)
        log = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines()]
        report["pretrain_epochs"] = [{key: record[key] for key in ("epoch", "total", "samples_per_second",
                                                                   "peak_memory_mb") if key in record}
                                     for record in log]
        from usdrl.training.run_record import read_run_record

        report["pretrain_device"] = read_run_record(folder / "run")["device"]
        report["probe_seconds"] = usdrl_command(
            ["probe", "--data", data, "--benchmark", "xsub", "--checkpoint",
             str(folder / "run" / "checkpoints" / "last.pt"), "--out", str(folder / "probe.json"), "--profile",
             "demo", "--device", device_name, "--quiet", *settings], 600)
        probe = json.loads((folder / "probe.json").read_text())
        report["probe"] = {key: value for key, value in probe.items() if isinstance(value, (int, float, str))}
        report["ok"] = report["pretrain_device"].startswith(device.type)
        return report
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def part_ddp(device: torch.device, sizes: dict) -> dict:
    processes = torch.cuda.device_count() if device.type == "cuda" else 2
    with tempfile.TemporaryDirectory(prefix="usdrl-gpu-check-") as folder:
        result_path = Path(folder) / "ddp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   str(Path(__file__).resolve()), "--ddp-worker", "--device", device.type, "--result", str(result_path)]
        command += ["--dry"] if sizes is SIZES[True] else []
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, timeout=TIME_LIMITS["ddp"],
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
        if completed.returncode != 0:
            raise RuntimeError(f"torchrun exited {completed.returncode}: {completed.stderr[-2000:]}")
        report = json.loads(result_path.read_text())
        report["seconds_with_start"] = round(time.perf_counter() - started, 1)
        return report


def ddp_worker(device_type: str, sizes: dict, result_path: str) -> None:
    """One torchrun process: a DDP step on this rank's slice of a fixed batch; rank 0 compares it with one
    process's step on the whole batch and writes the result."""
    import torch.distributed as dist

    from usdrl.nn.encoders import SkeletonModel
    from usdrl.settings.sections import LossSection, ModelSection
    from usdrl.training.pretrain import PretrainingObjective, loss_terms

    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    batch = sizes["ddp_batch"]
    views = torch.randn((4, batch * world, 3, 16, 25, 2), generator=torch.Generator().manual_seed(3)).to(device)

    def run(distributed: bool) -> tuple[float, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = SkeletonModel(ModelSection(hidden_size=sizes["ddp_hidden"], drop_path=0.0, clip_frames=16)).to(device)
        objective = PretrainingObjective(model)
        inputs = views
        if distributed:
            objective = torch.nn.parallel.DistributedDataParallel(
                objective, device_ids=[local] if device.type == "cuda" else None)
            inputs = views[:, rank * batch:(rank + 1) * batch]
        total = loss_terms(objective(inputs, "joint"), LossSection())["total"]
        total.backward()
        return float(total), {name: p.grad.detach().cpu() for name, p in model.named_parameters()
                              if p.grad is not None}

    loss, gradients = run(distributed=True)
    dist.barrier()
    if rank == 0:
        # one process, the whole batch: gather_with_gradients is the identity outside a process group
        dist.destroy_process_group()
        single_loss, single_gradients = run(distributed=False)
        loss_error = abs(loss - single_loss) / max(abs(single_loss), 1e-12)
        gradient_error = gradients_error(gradients, single_gradients)
        Path(result_path).write_text(json.dumps({
            "backend": backend, "processes": world, "loss": loss, "single_process_loss": single_loss,
            "loss_relative_error": loss_error, "gradient_relative_error": gradient_error,
            "tolerance": FP32_TOLERANCE, "ok": loss_error <= FP32_TOLERANCE and gradient_error <= FP32_TOLERANCE}))
    else:
        dist.destroy_process_group()


PART_FUNCTIONS = {"parity": part_parity, "training_step": part_training_step, "features_knn": part_features_knn,
                  "cli_demo": part_cli_demo, "ddp": part_ddp, "compile": part_compile}


def run_part_here(name: str, device_name: str, dry: bool, result_path: str) -> None:
    """Run one part in this process and write {"ok", "seconds", "result" or "error"} to ``result_path``."""
    started = time.perf_counter()
    try:
        result = PART_FUNCTIONS[name](torch.device(device_name), SIZES[dry])
        record = {"ok": bool(result.get("ok", True)), "result": result}
    except Exception as error:  # recorded: the other parts still run
        record = {"ok": False, "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()[-3000:]}
    record["seconds"] = round(time.perf_counter() - started, 1)
    Path(result_path).write_text(json.dumps(record, default=str))


def run_part(name: str, device_name: str, dry: bool, time_limit: float) -> dict:
    """One part in its own process within ``time_limit`` seconds; a crash, hang or error becomes its record."""
    with tempfile.TemporaryDirectory(prefix="usdrl-gpu-check-") as folder:
        result_path = Path(folder) / "part.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--run-part", name, "--device", device_name,
                   "--result", str(result_path)] + (["--dry"] if dry else [])
        started = time.perf_counter()
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=time_limit)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"did not finish within {time_limit:.0f} s", "seconds": round(time_limit, 1)}
        if result_path.is_file():
            record = json.loads(result_path.read_text())
        else:
            record = {"ok": False, "error": f"the part's process exited {completed.returncode} without a result: "
                                            f"{completed.stderr[-2000:]}"}
        record["seconds_with_start"] = round(time.perf_counter() - started, 1)
        return record


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --dry: the tests)")
    parser.add_argument("--dry", action="store_true", help="tiny sizes: checks that every part runs, measures nothing")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="the parts to run, in order")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiplies every part's time limit")
    parser.add_argument("--out", help="also write the summary here")
    parser.add_argument("--run-part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    try:
        device = torch.device(arguments.device)
    except RuntimeError:
        parser.error(f"--device {arguments.device!r} is not cpu, cuda or cuda:N")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {arguments.device!r} is not cpu, cuda or cuda:N")
    if arguments.time_scale <= 0:
        parser.error("--time-scale must be positive")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.ddp_worker:
        ddp_worker(arguments.device, SIZES[arguments.dry], arguments.result)
        return 0
    if arguments.run_part:
        run_part_here(arguments.run_part, arguments.device, arguments.dry, arguments.result)
        return 0
    if torch.device(arguments.device).type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}), nothing to check; run it on a machine with "
              f"one (or --device cpu --dry to try the parts on the CPU)")
        return 0
    started = time.perf_counter()
    parts = {}
    for name in arguments.parts:
        parts[name] = run_part(name, arguments.device, arguments.dry, TIME_LIMITS[name] * arguments.time_scale)
        print(f"gpu_check: {name} {'ok' if parts[name]['ok'] else 'FAILED'} "
              f"({parts[name].get('seconds_with_start', parts[name].get('seconds'))} s)", file=sys.stderr)
    device = torch.device(arguments.device)
    summary = {
        "ok": all(part["ok"] for part in parts.values()), "dry": arguments.dry, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "seconds": round(time.perf_counter() - started, 1), "parts": parts,
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if arguments.out:
        Path(arguments.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
