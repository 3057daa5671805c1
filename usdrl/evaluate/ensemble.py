"""The 3-stream ensemble: class scores of joint, bone and motion models summed (weights configurable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usdrl.data.errors import DataError
from usdrl.settings.sections import ENSEMBLE_NORMALISATIONS


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    """A score file of usdrl probe: scores (N, classes) and labels (N,); a DataError naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"score file {path} is a folder; pass the <out>.scores.npz file usdrl probe wrote")
    if not path.is_file():
        raise DataError(f"score file {path} does not exist; run usdrl probe (it writes <out>.scores.npz) first")
    what = "a score file of usdrl probe (a .npz of scores and labels)"
    with open(path, "rb") as handle:
        if not handle.read(4).startswith(b"PK\x03\x04"):
            raise DataError(f"{path} is not a .npz archive (empty, a .npy, text or other data), so not {what}")
    try:
        with np.load(path, allow_pickle=False) as stored:  # no pickled objects: loading never runs code
            scores = {key: stored[key] for key in stored.files}
    except Exception as error:  # noqa: BLE001 - numpy reports damage as ValueError, OSError, BadZipFile, EOFError ...
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise DataError(f"{path} is not {what}: {reason}") from None
    scores = {key: value for key, value in scores.items() if isinstance(value, np.ndarray)}  # raw members are bytes
    for key, dimensions in (("scores", 2), ("labels", 1)):
        if key not in scores or scores[key].ndim != dimensions or scores[key].dtype.kind not in "iuf":
            raise DataError(f"{path} has no numeric '{key}' array of {dimensions} dimension(s) (it holds "
                            f"{', '.join(scores) or 'no arrays'}); pass the <out>.scores.npz file usdrl probe wrote")
    if len(scores["labels"]) != len(scores["scores"]):
        raise DataError(f"{path}: {len(scores['labels'])} labels for {len(scores['scores'])} rows of scores")
    return scores


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
            raise ValueError(f"unknown normalisation {normalise!r}; choose {' or '.join(ENSEMBLE_NORMALISATIONS)}")
        combined += weight * scores
    labels = reference["labels"]
    per_stream = [float((s["scores"].argmax(1) == labels).mean()) for s in streams]
    return {"top1": float((combined.argmax(1) == labels).mean()), "per_stream_top1": per_stream,
            "weights": weights, "normalise": normalise}
