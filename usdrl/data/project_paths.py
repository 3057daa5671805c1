"""Where a project's files are: its root (the folder holding dvc.yaml or params.yaml), and paths inside it written
relative to that root, so that results, caches and bundles name no machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROJECT_MARKERS = ("dvc.yaml", "params.yaml")  # a folder holding one of these is the project root


def project_root_of(path: str | Path) -> Path | None:
    """The project a file is written into: the nearest folder above ``path`` holding dvc.yaml or params.yaml."""
    folder = Path(os.path.abspath(path)).parent
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).is_file() for marker in PROJECT_MARKERS):
            return candidate
    return None


def _relative_path(value: str, roots: tuple[Path, ...]) -> str:
    """An absolute path inside one of ``roots`` as a POSIX path relative to it; any other text as given."""
    if "\n" in value or not os.path.isabs(value):
        return value
    path = Path(os.path.normpath(value))
    for root in roots:
        if path == root or root in path.parents:
            return path.relative_to(root).as_posix() if path != root else "."
    return value


def paths_relative_to_project(content: Any, root: str | Path | None) -> Any:
    """``content`` (JSON: dicts, lists, text) with every absolute path inside ``root`` written relative to it.

    Paths outside the project stay as the user gave them; the data is named by checksums, not by place.
    """
    if root is None:
        return content
    given = Path(os.path.abspath(root))
    roots = (given,) if given == given.resolve() else (given, given.resolve())
    if isinstance(content, dict):
        return {key: paths_relative_to_project(value, root) for key, value in content.items()}
    if isinstance(content, list | tuple):
        return [paths_relative_to_project(value, root) for value in content]
    if isinstance(content, str):
        return _relative_path(content, roots)
    return content
