"""The run record of a pretraining run folder: ``run.json`` beside ``checkpoints/``, what ``usdrl pretrain`` was
given (data, settings, processes, device, precision), and its one reader (``read_run_record``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from usdrl.training.loop import TrainingError

RUN_RECORD_FILE = "run.json"  # in a run folder, beside checkpoints/ and log.jsonl
RUN_RECORD_SECTIONS = ("data", "model", "pretrain")  # the sections every run record of usdrl pretrain holds


def run_record_path(run_folder: str | Path) -> Path:
    """Where the run record of ``run_folder`` is."""
    return Path(run_folder) / RUN_RECORD_FILE


def read_run_record(run_folder: str | Path, missing_ok: bool = False) -> dict[str, Any] | None:
    """The run record of a pretraining run folder as a mapping. A missing file gives None with ``missing_ok``, a
    TrainingError naming it otherwise; a file that cannot be read, is not JSON or holds no JSON object gives a
    TrainingError in one line naming the file and what to do."""
    path = run_record_path(run_folder)
    if missing_ok and not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainingError(f"{path} is missing: {Path(run_folder)} is not a run folder of usdrl pretrain; pass the "
                            f"--out folder of a pretraining run") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainingError(f"{path} cannot be read ({type(error).__name__}: {error}); it is the record usdrl "
                            f"pretrain writes of a run: pretrain again into a new --out") from None
    if not isinstance(record, dict):
        raise TrainingError(f"{path} holds {type(record).__name__}, not the record of a run; it is the record usdrl "
                            f"pretrain writes of a run: pretrain again into a new --out")
    return record


def is_run_record(record: Any) -> bool:
    """Whether ``record`` is a run record as usdrl pretrain writes it (a mapping with ``RUN_RECORD_SECTIONS``)."""
    return isinstance(record, dict) and set(RUN_RECORD_SECTIONS) <= set(record)
