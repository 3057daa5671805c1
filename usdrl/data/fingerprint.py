"""Whether a prepared dataset is up to date: digests of files and of the inputs and options a dataset was made from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usdrl.data.dataset_format import FORMAT_VERSION, MANIFEST_NAME


def file_sha256(path: Path, chunk_size: int = 1 << 22) -> str:
    """The SHA-256 of a file's content (hexadecimal), read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def input_fingerprint(paths: Iterable[Path], options: dict[str, Any]) -> str:
    """A digest of the input files' names, sizes and modification times, and the options."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in paths):
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def is_up_to_date(out_dir: Path, fingerprint: str) -> bool:
    """True when out_dir holds a complete dataset made from the same inputs and options."""
    manifest_path = Path(out_dir) / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return False
    return manifest.get("input_fingerprint") == fingerprint and manifest.get("format_version") == FORMAT_VERSION
