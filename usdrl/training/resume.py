"""What makes a run of ``usdrl pretrain`` safe to kill and exact to resume: the check of its folder, the removal of
the temporary files killed writers leave there, and the global RNG states its checkpoints carry.

A new run needs an absent or empty folder; ``--resume`` needs a folder that holds a pretraining run (its
``run.json``) made with the same settings (``check_resumed_settings``). One process at a time trains in a run
folder: it holds the OS lock on ``.usdrl-pretrain.lock`` there for the whole run (``run_folder_lock``), which the
OS releases when the process ends, however it ends. The atomic writes of a run (checkpoints, log, run info) go through ``NAME.tmp-PID``; those of dead
processes, or of this one, are removed before a run goes on, and no other file is ever touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usdrl.data.atomic_files import json_text
from usdrl.training.checkpoint import plain_numpy_random_state
from usdrl.training.loop import TrainingError
from usdrl.training.run_record import RUN_RECORD_FILE, is_run_record, read_run_record

LOCK_NAME = ".usdrl-pretrain.lock"  # the lock file of a run folder; no part of the run
# settings a resume may change: how the run saves, logs and where it runs, and its length (extending a run)
RESUMABLE_SETTINGS = {"pretrain": {"epochs", "minimum_steps", "gain_check_seeds", "checkpoint_every",
                                   "last_checkpoint_seconds", "log_every", "workers",
                                   "device", "precision"}}


def process_is_alive(pid: int) -> bool:
    """Whether a process with this id runs (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# the temporary names of a pretraining run's atomic writes (checkpoints, log, run info): NAME.tmp-PID
OUR_TEMPORARY_FILE = re.compile(rf"(checkpoint_\d+\.pt|last\.pt|log\.jsonl|{re.escape(RUN_RECORD_FILE)})\.tmp-(\d+)")


def remove_stale_temporary_files(folder: Path) -> list[Path]:
    """Remove the temporary files of our interrupted writes whose writer is this process or dead; no other file."""
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = OUR_TEMPORARY_FILE.fullmatch(path.name)
        if match and path.is_file() and (int(match[2]) == os.getpid() or not process_is_alive(int(match[2]))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def is_pretraining_run(folder: Path) -> bool:
    """Whether a folder holds a run of usdrl pretrain: its run record (run.json), as ``Pretrainer`` writes it."""
    try:
        record = read_run_record(folder, missing_ok=True)
    except TrainingError:  # unreadable, not UTF-8, not JSON or not a mapping
        return False
    return is_run_record(record)


def check_run_folder(out_dir: str | Path, resume: bool | str | Path) -> None:
    """``out_dir`` must be absent or empty (a new run), or with ``resume`` a run of usdrl pretrain; anything else
    is refused with a TrainingError and left untouched (our stale temporary files count as nothing)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainingError(f"--out {out_dir} is a file; choose a new folder for the run")
    entries = [path.name for path in (out_dir.iterdir() if out_dir.is_dir() else [])
               if not OUR_TEMPORARY_FILE.fullmatch(path.name) and path.name != LOCK_NAME]
    if not entries:
        return
    if is_pretraining_run(out_dir):
        if resume:
            return
        raise TrainingError(f"--out {out_dir} holds a pretraining run already; resume it with --resume, or choose a "
                            f"new --out")
    shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
    raise TrainingError(f"--out {out_dir} is not empty and not a run of usdrl pretrain (it holds {shown}); nothing "
                        f"was changed: choose a new or empty folder")


@contextlib.contextmanager
def run_folder_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold the lock of the run folder ``out_dir`` (creating both) for the block; a TrainingError when another
    process holds it. The lock is the OS's (flock) on ``LOCK_NAME``: the OS releases it when its process dies, so a
    killed run never blocks --resume; its file is removed when the block ends (a killed run's file is ignored)."""
    import fcntl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # the file locked must still be the one at the path: a run that ended removes it while holding the lock
        if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(descriptor)
        raise TrainingError(f"--out {out_dir} is in use: another usdrl pretrain holds it (the lock {LOCK_NAME}); "
                            f"wait until it ends, or choose a new --out") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding the lock (see above)
        os.close(descriptor)


def _plain(value: Any) -> Any:
    """A setting as run.json records it (tuples as lists, paths as strings)."""
    return json.loads(json_text(value))


def check_resumed_settings(out_dir: str | Path, run_info: dict[str, Any]) -> None:
    """A resume must continue the run with the settings its run.json records: every setting of the model, augment,
    loss and pretrain sections, and the number of processes, except ``RESUMABLE_SETTINGS`` (how the run saves,
    logs and where it runs, and pretrain.epochs: extending a run is allowed). A setting the recorded run lacks
    (an older run.json) is not compared; the data is not compared here. A TrainingError names each differing
    setting with both values; nothing is changed. A folder without run.json passes."""
    out_dir = Path(out_dir)
    if not is_pretraining_run(out_dir):
        return
    recorded = read_run_record(out_dir)
    differences = []
    for section in ("model", "augment", "loss", "pretrain"):
        old, new = recorded.get(section), _plain(run_info.get(section))
        if not isinstance(old, dict) or not isinstance(new, dict):
            continue
        for key in sorted(set(old) & set(new) - RESUMABLE_SETTINGS.get(section, set())):
            if old[key] != new[key]:
                differences.append(f"{section}.{key} {old[key]!r} (now {new[key]!r})")
    if "world_size" in recorded and recorded["world_size"] != run_info.get("world_size"):
        differences.append(f"processes {recorded['world_size']!r} (now {run_info.get('world_size')!r})")
    if differences:
        raise TrainingError(f"--resume {out_dir}: the run was made with other settings: {', '.join(differences)}; "
                            f"resume with the settings of its run.json, or start a new --out")


def rng_states() -> dict[str, Any]:
    """Every global RNG state as tensors and plain containers (loadable with weights_only=True)."""
    states = {"python": random.getstate(), "numpy": plain_numpy_random_state(np.random.get_state()),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every global RNG state ``rng_states`` recorded (CUDA's where this machine has a GPU)."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])
