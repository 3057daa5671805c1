"""Skeleton datasets in one canonical, memory-mapped form (see ``usdrl.data.store``)."""

from usdrl.data.errors import DataError
from usdrl.data.store import SkeletonSplit, available_splits, load_split, read_manifest

__all__ = ["DataError", "SkeletonSplit", "available_splits", "load_split", "read_manifest"]
