"""Reading the files of UTKinect-Action3D (format: ``../shared/data/utkinect/README.md``): joints files, one
skeleton per line (the frame id, then 20 joints x (x, y, z)), and label files, ``action: start end`` in frame ids
per recording. What ``usdrl.data.utkinect`` makes of them is decided and documented there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from usdrl.data.errors import DataError
from usdrl.data.fingerprint import file_sha256
from usdrl.data.text_tables import LineProblems, line_error, parse_table, read_text

READER_VERSION = 1
CLASS_NAMES = ("walk", "sitDown", "standUp", "pickUp", "carry", "throw", "push", "pull", "waveHands", "clapHands")
LABEL_FILES = {"original": "actionLabel.txt", "modified": "actionLabel_modified.txt"}
VALUES_PER_LINE = 61  # frame id + 20 joints x 3
SKELETON_LINE_PROBLEMS = LineProblems(
    wrong_count="{path}: skeleton line {line} needs {expected} values (frame id, 20 joints x 3), found {found}",
    not_a_number="{path}: skeleton line {line}: text where a number belongs: {text!r}",
    not_finite="{path}: skeleton line {line}: NaN or inf",
    unparsed="{path}: could not be parsed")
RECORDING_PATTERN = re.compile(r"joints_(s(\d\d)_e(\d\d))\.txt")
HEADER_PATTERN = re.compile(r"s\d\d_e\d\d")


@dataclass(frozen=True)
class LabelRange:
    """One labelled action of a recording: class (0-based), frame ids (None for NaN), line of the label file."""

    action: int
    start: int | None
    end: int | None
    line: int


@dataclass
class Recording:
    """One joints file read (``read_joints``) with its name, subject, repetition and the SHA-256 of its bytes."""

    name: str  # sSS_eEE
    subject: int
    replication: int
    frame_ids: np.ndarray  # (L,) increasing, after merging repeated ids
    joints: np.ndarray  # (C, L, V, M) raw metres
    repeated_ids: int  # lines dropped because their frame id repeats the previous line's
    digest: str


def read_joints(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A joints file as (frame ids (L,), joints (C=3, L, V=20, M=1), count of repeated-id lines dropped)."""
    path = Path(path)
    text = read_text(path)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: empty joints file")
    table = parse_table(text, len(lines), VALUES_PER_LINE, np.float64)  # (L, 61)
    if table is None:
        raise line_error(enumerate(lines, start=1), VALUES_PER_LINE, np.float64, SKELETON_LINE_PROBLEMS, path)
    frame_ids = table[:, 0]
    if np.any(frame_ids != np.round(frame_ids)):
        bad = int(np.flatnonzero(frame_ids != np.round(frame_ids))[0])
        raise DataError(f"{path}: skeleton line {bad + 1}: frame id {frame_ids[bad]} is not an integer")
    frame_ids = frame_ids.astype(np.int64)
    steps = np.diff(frame_ids)
    if np.any(steps < 0):
        bad = int(np.flatnonzero(steps < 0)[0]) + 1
        raise DataError(f"{path}: skeleton line {bad + 1}: frame id {frame_ids[bad]} comes after "
                        f"{frame_ids[bad - 1]}; frame ids must not decrease")
    keep = np.concatenate([[True], steps != 0])  # the first line of each frame id
    joints = table[keep, 1:].reshape(-1, 20, 3).astype(np.float32)  # (L, V, C)
    return frame_ids[keep], joints.transpose(2, 0, 1)[..., None].copy(), int((~keep).sum())


def read_labels(path: str | Path) -> dict[str, list[LabelRange]]:
    """{recording: [LabelRange, ...] in file order} of a UTKinect label file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist; --raw must hold the UTKinect label files "
                        f"({', '.join(LABEL_FILES.values())})")
    labels: dict[str, list[LabelRange]] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if HEADER_PATTERN.fullmatch(line):
            current = labels.setdefault(line, [])
            continue
        if current is None:
            raise DataError(f"{path}:{number}: a range before the first recording line (sSS_eEE): {line[:60]!r}")
        action, _, bounds = line.partition(":")
        if action.strip() not in CLASS_NAMES:
            raise DataError(f"{path}:{number}: unknown action {action.strip()!r}; expected one of {', '.join(CLASS_NAMES)}")
        fields = bounds.split()
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: a range needs 'action: start end', found {line[:60]!r}")
        if any(field.lower() == "nan" for field in fields):
            start = end = None
        else:
            try:
                start, end = (int(field) for field in fields)
            except ValueError:
                raise DataError(f"{path}:{number}: text where a frame id belongs: {line[:60]!r}") from None
        current.append(LabelRange(CLASS_NAMES.index(action.strip()), start, end, number))
    return labels


def read_recordings(raw_dir: Path, skip_bad: bool, progress: bool) -> tuple[list[Recording], list[dict]]:
    """Every joints_sSS_eEE.txt of ``raw_dir`` in name order, and those skipped as unreadable (with ``skip_bad``)."""
    paths = sorted(p for p in raw_dir.glob("joints_*.txt") if RECORDING_PATTERN.fullmatch(p.name))
    if not paths:
        raise DataError(f"{raw_dir} holds no joints_sSS_eEE.txt files; pass --raw the UTKinect skeleton folder")
    recordings, skipped = [], []
    for path in tqdm(paths, unit="recording", desc="prepare utkinect", disable=not progress):
        name, subject, replication = RECORDING_PATTERN.fullmatch(path.name).groups()
        try:
            frame_ids, joints, repeated = read_joints(path)
        except DataError as error:
            if not skip_bad:
                raise
            skipped.append({"name": name, "reason": str(error)})
            continue
        digest = file_sha256(path)
        recordings.append(Recording(name, int(subject), int(replication), frame_ids, joints, repeated, digest))
    return recordings, skipped
