"""benchmarks/gpu_check.py: the skip without CUDA, its arguments, and every part's JSON on the CPU (--dry);
the real check under the gpu marker (pytest -m gpu)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPOSITORY

SCRIPT = REPOSITORY / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run(*arguments, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip is for machines without CUDA")
def test_without_cuda_one_line_and_exit_0():
    result = run()
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 and "no CUDA GPU" in result.stdout


def test_bad_arguments_are_refused():
    for arguments in (["--device", "tpu"], ["--parts", "nothing"], ["--time-scale", "0"]):
        with pytest.raises(SystemExit) as stopped:
            gpu_check.parse_arguments(arguments)
        assert stopped.value.code == 2
    parsed = gpu_check.parse_arguments(["--device", "cpu", "--dry", "--parts", "ddp", "parity"])
    assert parsed.parts == ["ddp", "parity"] and parsed.dry


@pytest.mark.slow
def test_dry_run_on_the_cpu_gives_every_part_its_record(tmp_path):
    out = tmp_path / "summary.json"
    result = run("--device", "cpu", "--dry", "--parts", "parity", "features_knn", "ddp", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads(out.read_text())
    assert summary["dry"] and summary["device"] == "cpu" and list(summary["parts"]) == ["parity", "features_knn", "ddp"]
    parity = summary["parts"]["parity"]["result"]
    assert parity["fp32"]["ok"] and parity["loss_fp32"]["ok"]
    assert 0 <= parity["bf16_autocast"]["loss_relative_error"] <= gpu_check.BF16_LOSS_TOLERANCE
    assert -1 <= parity["bf16_autocast"]["gradient_cosine"] <= 1
    features = summary["parts"]["features_knn"]
    assert features["ok"] and features["result"]["features_train_samples_per_second"] > 0
    assert features["result"]["train_samples"] == gpu_check.SIZES[True]["feature_samples"][0]
    ddp = summary["parts"]["ddp"]
    assert ddp["ok"], ddp  # two gloo processes: the loss and gradients of one process with the whole batch
    assert ddp["result"]["processes"] == 2 and ddp["result"]["gradient_relative_error"] < gpu_check.FP32_TOLERANCE
    assert all(part["seconds_with_start"] > 0 for part in summary["parts"].values())


def test_a_failing_part_records_its_error_and_the_others_run(monkeypatch):
    monkeypatch.setitem(gpu_check.TIME_LIMITS, "parity", 0.01)  # cannot start in time
    records = {name: gpu_check.run_part(name, "cpu", True, gpu_check.TIME_LIMITS[name]) for name in ("parity", "ddp")}
    assert not records["parity"]["ok"] and "did not finish" in records["parity"]["error"]
    assert records["ddp"]["ok"]


def test_an_exception_in_a_part_becomes_its_error(tmp_path, monkeypatch):
    def broken(device, sizes):
        raise ValueError("broken on purpose")

    monkeypatch.setitem(gpu_check.PART_FUNCTIONS, "parity", broken)
    gpu_check.run_part_here("parity", "cpu", True, str(tmp_path / "part.json"))
    record = json.loads((tmp_path / "part.json").read_text())
    assert not record["ok"] and record["error"] == "ValueError: broken on purpose" and "seconds" in record


@pytest.mark.gpu
@needs_cuda
def test_gpu_check_passes_on_the_gpu(tmp_path):
    result = run("--out", str(tmp_path / "gpu.json"), timeout=900)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    failed = {name: part.get("error", part.get("result")) for name, part in summary["parts"].items() if not part["ok"]}
    assert not failed, failed
    assert summary["parts"]["cli_demo"]["result"]["pretrain_device"].startswith("cuda")
