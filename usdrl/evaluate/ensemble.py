"""The 3-stream ensemble: class scores of joint, bone and motion models summed (weights configurable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usdrl.data.errors import DataError


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"score file {path} does not exist; run usdrl probe (it writes <out>.scores.npz) first")
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def ensemble_scores(score_files: list[str | Path], weights: list[float] | None = None,
                    normalise: str = "none") -> dict:
    """Weighted sum of the streams' scores; all streams must score the same samples and classes."""
    if len(score_files) < 2:
        given = f"only {score_files[0]}" if score_files else "none"
        raise DataError(f"an ensemble sums the scores of two or more streams; got {given}: pass the score files of "
                        f"the joint, bone and motion probes (usdrl probe writes <out>.scores.npz); one stream's "
                        f"accuracy is already in its own probe results")
    weights = list(weights) if weights is not None else [1.0] * len(score_files)
    if len(weights) != len(score_files):
        raise DataError(f"{len(weights)} weights for {len(score_files)} score files; pass one weight per score file")
    streams = [load_scores(path) for path in score_files]
    reference = streams[0]
    for path, stream in zip(score_files[1:], streams[1:]):
        if stream["scores"].shape != reference["scores"].shape:
            raise DataError(f"{path}: scores of shape {stream['scores'].shape} do not match {reference['scores'].shape} "
                            f"of {score_files[0]} (different split or class count)")
        if not np.array_equal(stream["labels"], reference["labels"]):
            raise DataError(f"{path}: test labels differ from {score_files[0]}; the streams must score the same split")
    combined = np.zeros_like(reference["scores"], dtype=np.float64)
    for weight, stream in zip(weights, streams):
        scores = stream["scores"].astype(np.float64)
        if normalise == "softmax":
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        elif normalise != "none":
            raise ValueError(f"unknown normalisation {normalise!r}; choose none or softmax")
        combined += weight * scores
    labels = reference["labels"]
    per_stream = [float((s["scores"].argmax(1) == labels).mean()) for s in streams]
    return {"top1": float((combined.argmax(1) == labels).mean()), "per_stream_top1": per_stream,
            "weights": weights, "normalise": normalise}
