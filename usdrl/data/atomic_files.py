"""Writing so that a reader never sees half of anything: one file (``atomic_file``, ``write_json_atomically``) or
a whole folder (``replace_folder``); and the one JSON form this project writes (``json_text``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def replace_folder(temporary: Path, destination: Path) -> Path:
    """Move the complete folder ``temporary`` to ``destination``, replacing a folder there: the old one is renamed
    aside first and removed last, so ``destination`` always holds a complete folder, old or new."""
    if destination.is_dir():
        old = destination.with_name(f"{destination.name}.old-{os.getpid()}")
        destination.rename(old)
        temporary.rename(destination)
        shutil.rmtree(old)
    else:
        temporary.rename(destination)
    return destination


@contextlib.contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """The one way this project writes a single file: the block writes to the temporary name it is given,
    ``NAME.tmp-<pid>`` beside ``path`` (plus ``suffix`` for writers that add an extension, e.g. numpy.save's
    ".npy"), which is renamed to ``path`` when the block ends and removed if it raises. A reader never sees a
    half-written file; a killed writer's leftover is recognisable by its pid. The folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield temporary
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def json_text(content: Any) -> str:
    """``content`` as the JSON text of manifests and reports: indented by one, NumPy numbers and arrays and
    paths written as plain JSON values."""
    return json.dumps(content, indent=1, default=_json_default)


def write_json_atomically(path: str | Path, content: Any) -> Path:
    """Write JSON to a temporary name beside ``path`` and rename it into place."""
    with atomic_file(path) as temporary:
        temporary.write_text(json_text(content))
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
