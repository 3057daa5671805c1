"""UTKinect-Action3D (Kinect v1, 20 joints, one actor): trimmed clips and untrimmed streams from one set of files.

Format and known problems: ``../shared/data/utkinect/README.md``. Each ``joints_sSS_eEE.txt`` holds one
recording (subject SS, repetition EE) of all ten actions one after another: one skeleton per line, the frame
id then 20 joints x (x, y, z). ``actionLabel.txt`` gives, per recording, ``action: start end`` in frame ids.
``prepare_utkinect`` writes ``OUT/actions`` (one clip per labelled action) and ``OUT/streams`` (the whole
recordings with per-frame labels, the PKU-MMD I form), as ``prepare synthetic`` does.

Decisions, each recorded in both manifests:

- Time: one time step per skeleton line (after merging repeated frame ids), i.e. the stream as sampled.
  Frame ids step irregularly (median 4, up to ~300); resampling to the 30 fps frame clock would invent
  2 of every 3 poses by interpolation and stretch the gaps, while the line sequence is what the sensor
  delivered and what the published skeleton methods use. The frame ids are kept: ``streams/frame_ids.npy``
  (F,) beside ``frames.npy`` and ``actions/clip_ranges.npy`` (N, 4): first line, end line (exclusive),
  first and last frame id of each clip in its recording, so any label maps to line positions.
- Repeated frame id (a second reading of the same body, 6-145 lines a recording): the first line is
  kept. Measured on these files, the first reading is the closer one to the neighbouring lines in 309 of
  524 pairs, and a mean would blend the rare readings that are a metre apart.
- A label range ``start end`` (frame ids, both inclusive) covers the lines with start <= id <= end; a bound
  without a line of its own maps to the nearest line inside the range. A range with no line, a ``NaN`` range
  and a start after its end exclude the instance.
- Label file: ``original`` (``actionLabel.txt``, the published one, used by the reported results) by
  default; ``modified`` (``actionLabel_modified.txt``) changes seven ranges. The manifest lists them.
- Ranges that touch or overlap (e.g. s01_e01 pull 1640-1686, push 1686-1748; in the original file
  s03_e01 push 2556-3622 contains throw 3226-3282): a clip is always its whole range. In a stream each
  line gets one label: instances are taken in order of start, and an instance ends where the next one
  begins (the later-starting action owns the shared lines; a nested one cuts the outer one short). The
  instance table of the streams holds these cut ranges, so it agrees with the per-frame labels.
- Ranges listed out of time order in the file (s01_e01 push before pull) are sorted by start.
- Clips are cut from the raw lines, zero-padded to ``MAX_FRAMES`` (200: the longest clip, s03_e01 push of
  the original file, has 170 lines; the longest otherwise 110) and normalised as NTU (SPEC.md 1) with the
  ``kinect_v1`` layout: centre joint 2 (spine), shoulders 5 -> 9 onto +x. A longer clip would be subsampled
  uniformly (counted). Streams are normalised the same way per recording, without padding.

Benchmarks. Actions: ``xsub`` (odd subjects train, even test) and ``loso1`` ... ``loso10`` (leave one subject
out: ``losoK_test`` holds subject K's clips, ``losoK_train`` the others), loaded as
``load_split(OUT/actions, "loso3", "test")``. Streams: ``xsub``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.errors import DataError
from usdrl.data.fingerprint import input_fingerprint, is_up_to_date
from usdrl.data.normalize import PREPROCESSING_VERSION, normalize_batch
from usdrl.data.pkummd import resample_clip
from usdrl.data.utkinect_files import (
    CLASS_NAMES,
    LABEL_FILES,
    READER_VERSION,
    LabelRange,
    Recording,
    read_labels,
    read_recordings,
)
from usdrl.data.writer import (
    DatasetWriter,
    check_output_folder,
    finish_dataset,
    first_instance_labels,
    write_sequences,
)
from usdrl.skeleton import SkeletonLayout, kinect_v1_layout

DEFAULT_LABELS = "original"
MAX_FRAMES = 200




def _line_range(frame_ids: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Lines [first, stop) whose frame ids lie in [start, end]."""
    return int(np.searchsorted(frame_ids, start, "left")), int(np.searchsorted(frame_ids, end, "right"))


def _label_differences(raw_dir: Path, chosen: dict[str, list[LabelRange]], labels: str) -> list[dict]:
    """Instances whose range differs in the other label file (empty when that file is absent)."""
    other_name = next(key for key in LABEL_FILES if key != labels)
    if not (raw_dir / LABEL_FILES[other_name]).is_file():
        return []
    other = read_labels(raw_dir / LABEL_FILES[other_name])
    differences = []
    for recording, ranges in chosen.items():
        theirs = {item.action: item for item in other.get(recording, [])}
        for item in ranges:
            counterpart = theirs.get(item.action)
            if counterpart is None or (counterpart.start, counterpart.end) != (item.start, item.end):
                differences.append({"instance": f"{recording}_{CLASS_NAMES[item.action]}",
                                    labels: [item.start, item.end],
                                    other_name: None if counterpart is None else [counterpart.start, counterpart.end]})
    return differences


def _instances(recording: Recording, ranges: list[LabelRange], label_path: Path, quirks: dict) -> list[dict]:
    """The usable instances of one recording in order of start (lines and frame ids), recording every quirk."""
    usable = []
    for item in ranges:
        name = f"{recording.name}_{CLASS_NAMES[item.action]}"
        if item.start is None:
            quirks["excluded"].append({"name": name, "reason": f"{label_path.name}:{item.line}: NaN range"})
            continue
        if item.start > item.end:
            quirks["excluded"].append({"name": name, "reason": f"{label_path.name}:{item.line}: start {item.start} "
                                                               f"after end {item.end}"})
            continue
        first, stop = _line_range(recording.frame_ids, item.start, item.end)
        if stop <= first:
            quirks["excluded"].append({"name": name, "reason": f"{label_path.name}:{item.line}: no skeleton line "
                                                               f"in frames {item.start}-{item.end}"})
            continue
        for bound, frame, line in (("start", item.start, first), ("end", item.end, stop - 1)):
            if recording.frame_ids[line] != frame:
                quirks["label_frames_without_line"].append(
                    {"instance": name, "bound": bound, "frame": frame, "mapped_to_frame": int(recording.frame_ids[line])})
        usable.append({"name": name, "action": item.action, "start": item.start, "end": item.end,
                       "first_line": first, "stop_line": stop})
    for earlier, later in zip(usable, usable[1:]):
        if later["start"] < earlier["start"]:
            quirks["ranges_out_of_order"].append({"instance": later["name"], "listed_after": earlier["name"]})
    usable.sort(key=lambda instance: (instance["start"], instance["end"]))
    for position, first in enumerate(usable):
        for second in usable[position + 1:]:
            if second["start"] <= first["end"]:
                quirks["touching_or_overlapping_ranges"].append({
                    "first": first["name"], "second": second["name"],
                    "kind": "touch" if second["start"] == first["end"] else "overlap",
                    "frames": [second["start"], min(first["end"], second["end"])]})
    return usable


def _stream_labels(instances: list[dict], length: int, quirks: dict) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Per-line labels (L,) (0 background) and (label 1-based, start, end exclusive): an instance ends where the
    next-starting one begins."""
    frame_labels = np.zeros(length, dtype=np.int16)
    rows = []
    for position, instance in enumerate(instances):
        start, stop = instance["first_line"], instance["stop_line"]
        if position + 1 < len(instances):
            following = instances[position + 1]
            if following["first_line"] < stop:
                quirks["stream_instances_cut"].append({"instance": instance["name"], "lines": [start, stop],
                                                       "stream_lines": [start, following["first_line"]],
                                                       "cut_by": following["name"]})
                stop = following["first_line"]
        if stop <= start:
            continue  # recorded above: a later instance starts on the same line
        frame_labels[start:stop] = instance["action"] + 1
        rows.append((instance["action"] + 1, start, stop))
    return frame_labels, rows


def _splits(subjects: np.ndarray, loso: bool) -> dict[tuple[str, str], np.ndarray]:
    training = subjects % 2 == 1
    splits = {("xsub", "train"): np.flatnonzero(training), ("xsub", "test"): np.flatnonzero(~training)}
    if loso:
        for subject in range(1, 11):
            splits[(f"loso{subject}", "train")] = np.flatnonzero(subjects != subject)
            splits[(f"loso{subject}", "test")] = np.flatnonzero(subjects == subject)
    return splits


@dataclass
class _Cut:
    """What ``prepare_utkinect`` cuts from the recordings: the actions' clips and the streams."""

    clips: list[np.ndarray] = field(default_factory=list)  # (C, MAX_FRAMES, V, M) each, raw
    labels: list[int] = field(default_factory=list)  # 0-based class of each clip
    frames: list[int] = field(default_factory=list)  # valid frames of each clip
    names: list[str] = field(default_factory=list)
    ranges: list[tuple] = field(default_factory=list)  # first line, end line (exclusive), first and last frame id
    subjects: list[int] = field(default_factory=list)
    replications: list[int] = field(default_factory=list)
    longer: int = 0  # clips longer than MAX_FRAMES, subsampled
    sequences: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (C, L, V, M), frame labels (L,)
    instance_rows: list[tuple] = field(default_factory=list)  # (stream, label 1-based, start, end, confidence)


def _cut_recordings(recordings: list[Recording], label_table: dict[str, list[LabelRange]], label_path: Path,
                    layout: SkeletonLayout, quirks: dict) -> _Cut:
    """Each recording's labelled clips (raw, resampled to MAX_FRAMES) and its stream, normalised, with per-line
    labels; every quirk met recorded in ``quirks``."""
    cut = _Cut()
    for row, recording in enumerate(recordings):
        instances = _instances(recording, label_table[recording.name], label_path, quirks)
        for instance in instances:
            clip = recording.joints[:, instance["first_line"]:instance["stop_line"]]  # (C, L, V, M)
            cut.longer += clip.shape[1] > MAX_FRAMES
            cut.clips.append(resample_clip(clip, MAX_FRAMES))
            cut.frames.append(min(clip.shape[1], MAX_FRAMES))
            cut.labels.append(instance["action"])
            cut.names.append(instance["name"])
            cut.ranges.append((instance["first_line"], instance["stop_line"],
                               recording.frame_ids[instance["first_line"]], recording.frame_ids[instance["stop_line"] - 1]))
            cut.subjects.append(recording.subject)
            cut.replications.append(recording.replication)
        sequence = normalize_batch(recording.joints[None], layout.center_joint, layout.shoulder_pair, pad_frames=False)[0]
        frame_labels, rows = _stream_labels(instances, sequence.shape[1], quirks)
        cut.sequences.append((sequence, frame_labels))
        cut.instance_rows.extend((row, label, start, stop, 2) for label, start, stop in rows)
    return cut


def _details(raw_dir: Path, label_path: Path, labels: str, label_table: dict[str, list[LabelRange]],
             recordings: list[Recording], quirks: dict, skipped: list[dict], fingerprint: str) -> dict[str, Any]:
    """The manifest entries both datasets share: sources, label file, frame ids, repeated ids and quirks."""
    steps = np.concatenate([np.diff(recording.frame_ids) for recording in recordings])
    return {
        "dataset": "utkinect",
        "sources": {"raw_dir": str(raw_dir.resolve()), "label_file": label_path.name,
                    "sha256": {recording.name: recording.digest for recording in recordings}},
        "labels": labels,
        "label_file_differences": _label_differences(raw_dir, label_table, labels),
        "time_steps": "one step per skeleton line after merging repeated frame ids (the stream as sampled); "
                      "frame ids kept in streams/frame_ids.npy and actions/clip_ranges.npy",
        "frame_ids": {"recordings": {r.name: {"lines": int(len(r.frame_ids)), "first": int(r.frame_ids[0]),
                                              "last": int(r.frame_ids[-1]), "max_step": int(np.diff(r.frame_ids).max())}
                                     for r in recordings},
                      "median_step": float(np.median(steps)), "max_step": int(steps.max()),
                      "non_consecutive_steps": int((steps != 1).sum())},
        "repeated_frame_ids": {"rule": "keep the first line of a repeated frame id",
                               "total": sum(r.repeated_ids for r in recordings),
                               "per_recording": {r.name: r.repeated_ids for r in recordings}},
        "label_ranges": "start and end frame ids inclusive; a bound without a line maps to the nearest line inside",
        **quirks,
        "skipped": skipped,
        "input_fingerprint": fingerprint,
    }


def _write_actions(out_dir: Path, inputs: list[Path], layout: SkeletonLayout, cut: _Cut, details: dict) -> None:
    """``OUT/actions``: the clips normalised as NTU, zero-padded to MAX_FRAMES, with their line and frame ranges."""
    x = normalize_batch(np.stack(cut.clips), layout.center_joint, layout.shoulder_pair)  # (N, C, T, V, M)
    subjects = np.array(cut.subjects, dtype=np.int32)
    with DatasetWriter(out_dir, inputs=inputs) as writer:
        writer.save("x", x.astype(np.float32))
        writer.save("clip_ranges", np.array(cut.ranges, dtype=np.int64).reshape(-1, 4))
        finish_dataset(
            writer, kind="trimmed", layout=layout, class_names=list(CLASS_NAMES), label=np.array(cut.labels),
            num_frames=np.array(cut.frames), names=cut.names,
            ids={"subject": subjects, "replication": np.array(cut.replications, dtype=np.int32)},
            splits=_splits(subjects, loso=True),
            details={**details, "longest_clip": int(max(end - start for start, end, _, _ in cut.ranges)),
                     "clips_longer_than_max": int(cut.longer),
                     "preprocessing": {"version": PREPROCESSING_VERSION, "max_frames": MAX_FRAMES,
                                       "steps": ["cut the label range (lines)", f"longer clips subsampled uniformly to {MAX_FRAMES}",
                                                 "zero-pad", "pad null frames (move to front, repeat)",
                                                 "subtract joint 2 (spine) per frame",
                                                 "rotate first-frame shoulders 5->9 onto +x"]}})


def _write_streams(out_dir: Path, inputs: list[Path], layout: SkeletonLayout, recordings: list[Recording], cut: _Cut,
                   details: dict) -> None:
    """``OUT/streams``: the whole recordings normalised, with per-line labels, instances and frame ids."""
    stream_subjects = np.array([r.subject for r in recordings], dtype=np.int32)
    with DatasetWriter(out_dir, inputs=inputs) as writer:
        write_sequences(writer, cut.sequences, sum(len(r.frame_ids) for r in recordings),
                        (3, layout.num_joints, layout.num_persons))
        writer.save("frame_ids", np.concatenate([r.frame_ids for r in recordings]))
        writer.save("instances", np.array(cut.instance_rows, dtype=np.int64).reshape(-1, 5))
        finish_dataset(
            writer, kind="untrimmed", layout=layout, class_names=list(CLASS_NAMES),
            label=first_instance_labels(cut.instance_rows, len(recordings)),
            num_frames=np.array([len(r.frame_ids) for r in recordings]), names=[r.name for r in recordings],
            ids={"subject": stream_subjects, "replication": np.array([r.replication for r in recordings], dtype=np.int32)},
            splits=_splits(stream_subjects, loso=False),
            details={**details, "instances": len(cut.instance_rows),
                     "sequence_label": "first instance's class (sequences are untrimmed; use frame_labels / instances)",
                     "preprocessing": {"version": PREPROCESSING_VERSION,
                                       "steps": ["subtract joint 2 (spine) per frame",
                                                 "rotate first-frame shoulders 5->9 onto +x", "no padding (untrimmed)"],
                                       "frame_labels": "0 background, c = action c (1-based); end exclusive; "
                                                       "an instance ends where the next-starting one begins"}})


def prepare_utkinect(raw_dir: str | Path, out_dir: str | Path, labels: str | None = None, skip_bad: bool = False,
                     progress: bool = True) -> dict[str, Any]:
    """Write ``out/actions`` (trimmed clips, xsub and loso1..loso10) and ``out/streams`` (untrimmed, xsub).

    ``labels``: ``"original"`` or ``"modified"`` (None: ``DEFAULT_LABELS``)."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    labels = DEFAULT_LABELS if labels is None else labels
    if labels not in LABEL_FILES:
        raise DataError(f"--labels must be one of {', '.join(LABEL_FILES)}, got {labels!r}")
    if not raw_dir.is_dir():
        raise DataError(f"UTKinect folder {raw_dir} does not exist; pass --raw the folder of joints_sSS_eEE.txt files")
    label_path = raw_dir / LABEL_FILES[labels]
    label_table = read_labels(label_path)
    label_paths = [raw_dir / name for name in LABEL_FILES.values() if (raw_dir / name).is_file()]
    options = {"labels": labels, "skip_bad": skip_bad, "max_frames": MAX_FRAMES, "reader_version": READER_VERSION,
               "preprocessing_version": PREPROCESSING_VERSION}
    fingerprint = input_fingerprint(sorted(raw_dir.glob("joints_*.txt")) + label_paths, options)
    targets = {"actions": out_dir / "actions", "streams": out_dir / "streams"}
    if all(is_up_to_date(path, fingerprint) for path in targets.values()):
        return {"up_to_date": True, "out": str(out_dir)}
    recordings, skipped = read_recordings(raw_dir, skip_bad, progress)
    unlabelled = [recording.name for recording in recordings if recording.name not in label_table]
    if unlabelled:
        raise DataError(f"{label_path}: no ranges for recording(s) {', '.join(unlabelled)}; add them or remove "
                        f"their joints files")
    layout = kinect_v1_layout()
    quirks: dict[str, Any] = {"excluded": [], "label_frames_without_line": [], "ranges_out_of_order": [],
                              "touching_or_overlapping_ranges": [], "stream_instances_cut": []}
    cut = _cut_recordings(recordings, label_table, label_path, layout, quirks)
    if not cut.clips:
        raise DataError(f"{raw_dir}: no labelled clip could be cut")
    details = _details(raw_dir, label_path, labels, label_table, recordings, quirks, skipped, fingerprint)
    for path in targets.values():  # both refused or accepted before either is written
        check_output_folder(path)
    _write_actions(targets["actions"], [raw_dir, label_path], layout, cut, details)
    _write_streams(targets["streams"], [raw_dir, label_path], layout, recordings, cut, details)
    return {"up_to_date": False, "out": str(out_dir), "labels": labels, "clips": len(cut.clips),
            "streams": len(recordings), "instances": len(cut.instance_rows), "excluded": len(quirks["excluded"]),
            "skipped": len(skipped)}
