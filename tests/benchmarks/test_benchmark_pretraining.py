"""benchmarks/pretraining.py runs and its --breakdown accounts for the step: products plus the rest."""

import json
import subprocess
import sys

from conftest import REPOSITORY

SCRIPT = REPOSITORY / "benchmarks" / "pretraining.py"


def test_breakdown_splits_the_step_into_matrix_products_and_the_rest():
    result = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--batch-size", "4", "--steps", "2",
                             "--device", "cpu", "--breakdown"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["training_samples_per_second"] > 0 and report["matmul_gflop_per_sample"] > 0
    assert 0 < report["matmul_seconds_per_step"] < report["step_seconds_profiled"]
    assert report["other_seconds_per_step"] > 0
    assert abs(report["matmul_seconds_per_step"] + report["other_seconds_per_step"]
               - report["step_seconds_profiled"]) < 2e-4  # rounding of the three numbers
    assert 0 < report["matmul_share_of_step"] < 1
    # the products' rate while they run is the step's product FLOPs over their time
    flops = report["matmul_gflop_per_sample"] * report["batch_size"]
    assert abs(report["matmul_gflops_while_running"] - flops / report["matmul_seconds_per_step"]) \
        < 0.05 * report["matmul_gflops_while_running"]
    assert report["costliest_other_operators_ms_per_step"]
    assert all(name.startswith("aten::") and name not in ("aten::mm", "aten::bmm", "aten::addmm")
               for name in report["costliest_other_operators_ms_per_step"])
