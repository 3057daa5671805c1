"""USDRL: self-supervised dense representation learning for skeleton-based action understanding."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``usdrl.load_model`` is ``usdrl.deploy.bundle.load_model``, imported on first use: importing ``usdrl`` stays cheap
    and runs nothing."""
    if name == "load_model":
        return importlib.import_module("usdrl.deploy.bundle").load_model
    raise AttributeError(f"module 'usdrl' has no attribute {name!r}")
