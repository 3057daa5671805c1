"""USDRL: self-supervised dense representation learning for skeleton-based action understanding."""

__version__ = "0.1.0"
