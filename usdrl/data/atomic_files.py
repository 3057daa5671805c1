"""Writing so that a reader never sees half of anything: one file (``atomic_file``, ``write_json_atomically``) or
a whole folder (``replace_folder``); and the one JSON form this project writes (``json_text``).

What usdrl may replace, so that nothing of the user's is lost:

- a folder (a model bundle, a detection folder): only when it carries our marker and holds nothing but what the
  marker lists (``check_replaceable``). A folder usdrl writes carries ``.usdrl-written.json``, which lists every
  file and folder in it, each one claimed (``claim_entries``) before it is written; a model bundle's model.json,
  which lists its files with checksums, is that bundle's marker (``usdrl.deploy.bundle.bundle_entries``). A file name
  any folder may hold (model.json, results.json, *.txt) is no marker by itself.
- a single output file: only one usdrl wrote, recognised by its content, unless the user passes --overwrite
  (``check_overwritable``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.errors import DataError

MARKER_NAME = ".usdrl-written.json"
MARKER_FORMAT = "usdrl-written-folder"
# the temporary and set-aside names of our atomic writes (NAME.tmp-PID, NAME.tmp-PID.npz, NAME.old-PID): they
# stand for NAME when a folder's entries are compared with its marker (a killed writer leaves them behind)
TEMPORARY_NAME = re.compile(r"(.+)\.(?:tmp|old)-\d+(?:\.\w+)?")


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


def folder_entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (its marker aside) as a relative path with "/" between parts."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.relative_to(folder).as_posix() != MARKER_NAME)


def marker_entries(folder: Path) -> set[str] | None:
    """What the marker of ``folder`` lists; None when there is no marker, or one that does not parse."""
    try:
        marker = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):  # absent, unreadable, not UTF-8 or not JSON
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT or not isinstance(
            marker.get("entries"), list) or not all(isinstance(entry, str) for entry in marker["entries"]):
        return None
    return set(marker["entries"])


def claim_entries(folder: Path, entries: Iterable[str]) -> Path:
    """Add ``entries`` (relative paths, "/" between parts, each parent folder too) to the marker of ``folder``,
    creating both if missing; called before the entries are written, so the marker always covers the folder.
    Only for a folder ``check_replaceable`` accepted."""
    folder = Path(folder)
    claimed = set(marker_entries(folder) or ())
    for entry in entries:
        parts = entry.split("/")
        claimed.update("/".join(parts[:end]) for end in range(1, len(parts) + 1))
    return write_json_atomically(folder / MARKER_NAME, {"format": MARKER_FORMAT, "entries": sorted(claimed)})


def _standing_for(entry: str) -> str:
    """The entry a relative path stands for: each temporary name of an atomic write read as its final name."""
    return "/".join(match[1] if (match := TEMPORARY_NAME.fullmatch(part)) else part for part in entry.split("/"))


def check_replaceable(folder: str | Path, listed: Callable[[Path], set[str] | None] = marker_entries,
                      option: str = "--out") -> bool:
    """True when ``folder`` is ours to replace: it carries our marker (``listed`` reads what the marker lists,
    None without one) and holds nothing the marker does not list; False when it is absent or empty.

    Anything else (a file, a symbolic link, a folder without our marker, a folder holding an entry the marker does
    not list) is a DataError naming the folder and the entry in the way; nothing is touched.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise DataError(f"{option} {folder} is a symbolic link; it is left alone: choose a new folder")
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise DataError(f"{option} {folder} is an existing file; it is left alone: choose a new folder")
    entries = folder_entries(folder)
    if not entries and not (folder / MARKER_NAME).exists():
        return False
    claimed = listed(folder)
    if claimed is None:
        raise DataError(f"{option} {folder} holds {entries[0] if entries else MARKER_NAME} and was not written by "
                        f"usdrl (it carries no marker of ours); it is left alone: choose a new folder")
    for entry in entries:
        if entry not in claimed and _standing_for(entry) not in claimed:
            raise DataError(f"{option} {folder}: {entry} is in the way (usdrl replaces only a folder holding nothing "
                            f"but what it wrote); it is left alone: choose a new folder")
    return True


def check_overwritable(path: str | Path, ours: Callable[[Path], bool], overwrite: bool, what: str,
                       option: str = "--out") -> None:
    """An existing file at ``path`` may be replaced only when usdrl wrote it (``ours``, from its content: ``what``
    names that content) or with ``overwrite``; else a DataError naming the file. Absent paths and folders pass
    (the writers refuse a folder themselves)."""
    path = Path(path)
    if overwrite or not (path.is_file() or path.is_symlink()):
        return
    try:
        written_by_usdrl = ours(path)
    except Exception:  # noqa: BLE001 - a file that does not even parse is not ours
        written_by_usdrl = False
    if not written_by_usdrl:
        raise DataError(f"{option} {path} exists and is not {what} written by usdrl; it is left alone: choose a new "
                        f"file, or pass --overwrite to replace it")


def is_npz_holding(path: Path, required: Iterable[str], allowed: Iterable[str] = ()) -> bool:
    """Whether ``path`` is a .npz archive holding the arrays ``required`` and no others but ``allowed``."""
    required = set(required)
    with np.load(path, allow_pickle=False) as archive:
        names = set(archive.files)
    return required <= names <= required | set(allowed)


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
