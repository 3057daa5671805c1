"""benchmarks/feed_rate.py: its arguments, and a tiny run that matches the per-sample reference pipeline."""

import sys

import pytest
from conftest import REPOSITORY

sys.path.insert(0, str(REPOSITORY / "benchmarks"))
import feed_rate  # noqa: E402


def test_bad_arguments_are_refused():
    for arguments in (["--samples", "0"], ["--workers", "-1"], ["--pin", "maybe"], ["--batches", "-2"]):
        with pytest.raises(SystemExit) as stopped:
            feed_rate.parse_arguments(arguments)
        assert stopped.value.code == 2
    assert feed_rate.parse_arguments(["--batch-size", "8", "--batches", "3", "--epoch-samples", "5"]).epoch_samples == 32


def test_tiny_run_times_every_setting_and_removes_its_store(tmp_path):
    report = feed_rate.main(["--samples", "40", "--batch-size", "8", "--batches", "2", "--epoch-samples", "100",
                             "--workers", "0", "1", "--pin", "off", "--reference", "--root", str(tmp_path)])
    assert report["same_batches_as_reference"]
    assert [(row["workers"], row["pin_memory"]) for row in report["results"]] == [(0, False), (1, False)]
    for row in report["results"]:
        assert row["timed_samples"] == 16 and row["samples_per_second"] > 0
        assert row["reference"]["samples_per_second"] > 0 and row["speedup_over_reference"] > 0
    assert report["store"]["rows"] == 40 and not (tmp_path / "store").exists()
