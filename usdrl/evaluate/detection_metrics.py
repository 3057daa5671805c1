"""Temporal action detection metrics and proposals (DETECTION.md): the official PKU-MMD AP, the VOC AP,
mAP over actions and over videos, F1, and proposals from frame probabilities.

Proposals and ground truths are lists of ``(label, start, end, score_or_confidence, video)`` tuples;
frames are 0-based and ``end`` is exclusive.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from usdrl.data.atomic_files import atomic_file
from usdrl.data.errors import DataError

Segment = tuple  # (label, start, end, score, video)


def overlap(proposal: Segment, truth: Segment) -> float:
    """Official overlap: 0 unless same label and video; intersection over the union's span."""
    if proposal[0] != truth[0] or proposal[4] != truth[4]:
        return 0.0
    intersection = min(proposal[2], truth[2]) - max(proposal[1], truth[1])
    span = max(proposal[2], truth[2]) - min(proposal[1], truth[1])
    return intersection / span if span > 0 else 0.0


def _match(proposals: Sequence[Segment], truths: Sequence[Segment], theta: float) -> list[int]:
    """Each proposal independently takes the ground truth of highest overlap >= theta (-1: none)."""
    by_video = defaultdict(list)
    for index, truth in enumerate(truths):
        by_video[(truth[4], truth[0])].append(index)
    matches = []
    for proposal in proposals:
        best, best_overlap = -1, theta
        for index in by_video.get((proposal[4], proposal[0]), ()):
            value = overlap(proposal, truths[index])
            if value >= best_overlap and (best == -1 or value > best_overlap):
                best, best_overlap = index, value
        matches.append(best)
    return matches


def official_ap(proposals: Sequence[Segment], ground_truth: Sequence[Segment], theta: float = 0.5) -> float:
    """The PKU-MMD toolbox's AP: proposals removed from the lowest score up, precision made monotone."""
    if not ground_truth or not proposals:
        return 0.0
    ordered = sorted(proposals, key=lambda p: p[3])
    matches = _match(ordered, ground_truth, theta)
    taken = np.bincount([m for m in matches if m >= 0], minlength=len(ground_truth))
    positives = int((taken > 0).sum())
    remaining = len(ordered)
    precision_best = positives / remaining
    recall_previous = positives / len(ground_truth)
    score = 0.0
    for match in matches:
        remaining -= 1
        if match == -1:
            continue
        taken[match] -= 1
        if taken[match] == 0:
            positives -= 1
        precision = positives / remaining if remaining else 0.0
        recall = positives / len(ground_truth) if remaining else 0.0
        precision_best = max(precision_best, precision)
        score += precision_best * (recall_previous - recall)
        recall_previous = recall
    return score


def voc_ap(proposals: Sequence[Segment], ground_truth: Sequence[Segment], theta: float = 0.5) -> float:
    """VOC-style AP: greedy one-to-one matching by descending score, all-point interpolation."""
    if not ground_truth or not proposals:
        return 0.0
    ordered = sorted(proposals, key=lambda p: -p[3])
    by_video = defaultdict(list)
    for index, truth in enumerate(ground_truth):
        by_video[(truth[4], truth[0])].append(index)
    used = set()
    true_positive = np.zeros(len(ordered))
    for rank, proposal in enumerate(ordered):
        best, best_overlap = -1, theta
        for index in by_video.get((proposal[4], proposal[0]), ()):
            value = overlap(proposal, ground_truth[index])
            if index not in used and value >= best_overlap and (best == -1 or value > best_overlap):
                best, best_overlap = index, value
        if best >= 0:
            used.add(best)
            true_positive[rank] = 1
    cumulative = np.cumsum(true_positive)
    recall = cumulative / len(ground_truth)
    precision = cumulative / np.arange(1, len(ordered) + 1)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    for index in range(len(precision) - 2, -1, -1):
        precision[index] = max(precision[index], precision[index + 1])
    changed = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[changed] - recall[changed - 1]) * precision[changed]))


def map_action(proposals: Sequence[Segment], ground_truth: Sequence[Segment], theta: float = 0.5,
               classes: Iterable[int] | None = None, ap=official_ap) -> float:
    """Mean over action classes of the AP over all videos.

    ``classes``: every action class of the dataset, as the official PKU-MMD evaluate.py averages (its
    ``number_label - 1`` classes; a class without ground truth in the evaluated videos counts 0). None: the
    classes present in the ground truth (what ``mAP_a_present_classes`` reports; not the official number).
    """
    classes = sorted(set(classes) if classes is not None else {t[0] for t in ground_truth})
    if not classes:
        return 0.0
    return float(np.mean([ap([p for p in proposals if p[0] == c], [t for t in ground_truth if t[0] == c], theta)
                          for c in classes]))


def map_video(proposals: Sequence[Segment], ground_truth: Sequence[Segment], theta: float = 0.5,
              videos: Iterable | None = None, ap=official_ap) -> float:
    """Mean over videos of the AP over all classes of the video; a video with no proposals scores 0."""
    videos = sorted(set(videos) if videos is not None else {t[4] for t in ground_truth})
    if not videos:
        return 0.0
    return float(np.mean([ap([p for p in proposals if p[4] == v], [t for t in ground_truth if t[4] == v], theta)
                          for v in videos]))


def f1_score(proposals: Sequence[Segment], ground_truth: Sequence[Segment], theta: float = 0.5) -> dict[str, float]:
    """Precision = matched proposals / proposals, recall = ground truths matched / ground truths, and F1."""
    matches = _match(proposals, ground_truth, theta)
    precision = sum(m >= 0 for m in matches) / len(proposals) if proposals else 0.0
    recall = len({m for m in matches if m >= 0}) / len(ground_truth) if ground_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def detection_metrics(proposals: Sequence[Segment], ground_truth: Sequence[Segment],
                      thetas: Sequence[float] = (0.1, 0.3, 0.5), classes: Iterable[int] | None = None,
                      videos: Iterable | None = None) -> dict[str, dict[str, float]]:
    """mAP_a and mAP_v (official and VOC) and F1 at every overlap threshold.

    ``classes``: the dataset's action classes (1..number of actions). mAP_a, the official form, averages
    over all of them; ``mAP_a_present_classes`` over those with ground truth in the evaluated videos only.
    """
    classes = list(classes) if classes is not None else None
    videos = list(videos) if videos is not None else None
    result = {}
    for theta in thetas:
        result[f"{theta:g}"] = {
            "mAP_a": map_action(proposals, ground_truth, theta, classes),
            "mAP_v": map_video(proposals, ground_truth, theta, videos),
            "mAP_a_present_classes": map_action(proposals, ground_truth, theta),
            "mAP_a_voc": map_action(proposals, ground_truth, theta, classes, ap=voc_ap),
            "mAP_v_voc": map_video(proposals, ground_truth, theta, videos, ap=voc_ap),
            **f1_score(proposals, ground_truth, theta),
        }
    return result


def dataset_action_classes(class_names: Sequence[str]) -> list[int]:
    """Action labels 1..number of actions of an untrimmed dataset (class names exclude the background)."""
    return list(range(1, len(class_names) + 1))


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as (start, end exclusive)."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def threshold_proposals(probabilities: np.ndarray, video, threshold: float = 0.02) -> list[Segment]:
    """Released rule: for each action class c >= 1, every maximal run with P[:, c] > threshold is a
    proposal scored by the mean of P[run, c]; no NMS. probabilities (L, classes + 1), column 0 background."""
    proposals = []
    for label in range(1, probabilities.shape[1]):
        column = probabilities[:, label]
        for start, end in runs(column > threshold):
            proposals.append((label, start, end, float(column[start:end].mean()), video))
    return proposals


def smoothed_proposals(probabilities: np.ndarray, video, window: int = 20, activity: float = 0.4) -> list[Segment]:
    """Alternative rule: box-smooth over ``window`` frames, runs where 1 - P_background >= activity,
    class = argmax of the run's mean action probability, score = that mean."""
    kernel = np.ones(window)
    available = np.convolve(np.ones(len(probabilities)), kernel, mode="same")  # fewer frames at the edges
    smoothed = np.stack([np.convolve(probabilities[:, c], kernel, mode="same") / available
                         for c in range(probabilities.shape[1])], 1)
    proposals = []
    for start, end in runs(1 - smoothed[:, 0] >= activity):
        means = smoothed[start:end, 1:].mean(axis=0)
        label = int(means.argmax()) + 1
        proposals.append((label, start, end, float(means[label - 1]), video))
    return proposals


def frame_labels_to_segments(frame_labels: np.ndarray, video, score: float = 1.0) -> list[Segment]:
    """Ground-truth style segments from per-frame labels (0 background)."""
    segments = []
    for label in np.unique(frame_labels):
        if label == 0:
            continue
        for start, end in runs(frame_labels == label):
            segments.append((int(label), start, end, score, video))
    return segments


def write_proposals(proposals: Sequence[Segment], directory: str | Path) -> list[Path]:
    """One text file per video in the official format ``label,start,end,score`` (written atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_video = defaultdict(list)
    for proposal in proposals:
        by_video[proposal[4]].append(proposal)
    written = []
    for video, items in sorted(by_video.items()):
        path = directory / f"{video}.txt"
        with atomic_file(path) as temporary:
            temporary.write_text("".join(f"{p[0]},{p[1]},{p[2]},{p[3]:.6f}\n" for p in sorted(items, key=lambda p: p[1])))
        written.append(path)
    return written


def read_proposals(directory: str | Path) -> list[Segment]:
    """Proposals of every ``<video>.txt`` in a directory (the official format)."""
    proposals = []
    for path in sorted(Path(directory).glob("*.txt")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.strip().split(",")
            if len(fields) != 4:
                raise DataError(f"{path}:{number}: expected label,start,end,score, found {line.strip()[:60]!r}")
            try:
                proposals.append((int(fields[0]), int(fields[1]), int(fields[2]), float(fields[3]), path.stem))
            except ValueError:
                raise DataError(f"{path}:{number}: text where a number belongs: {line.strip()[:60]!r}") from None
    return proposals
