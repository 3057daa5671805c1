"""Downstream protocols on a frozen or fine-tuned encoder: features, linear probe, kNN retrieval,
semi-supervised fine-tuning, the 3-stream ensemble and temporal action detection."""
