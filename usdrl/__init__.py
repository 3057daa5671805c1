"""USDRL: self-supervised dense representation learning for skeleton-based action understanding."""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, device: str = "cpu", precision: str = "auto"):
    """A model bundle written by ``usdrl export``, checked against its checksums: ``embed``, ``recognize`` and,
    with a detector, ``detect`` on raw skeletons (see ``usdrl.bundle``)."""
    from usdrl.bundle import load_model as load

    return load(path, device, precision)
