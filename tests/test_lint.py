"""The lint that pre-commit runs (ruff check, configured in pyproject.toml) also runs in CI, through pytest."""

import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    pytest.importorskip("ruff", reason="ruff is in the dev extra: pip install -e '.[dev]'")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "usdrl", "tests", "benchmarks"],
                            cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
