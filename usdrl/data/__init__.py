"""Skeleton datasets in one canonical, memory-mapped form (``usdrl.data.store``), their importers and preparers."""
