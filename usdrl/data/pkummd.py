"""PKU-MMD Phase I (untrimmed, detection; or its labelled instances as trimmed clips, recognition) and
Phase II (trimmed clips, recognition).

Each preparation records in the manifest how many of the videos the official split lists name were
found (``coverage``) and whether the copy is partial (``partial``): a subset is not the benchmark.

Formats and quirks: ../shared/DETECTION.md and the sample folder's README. Skeleton files hold one
frame per line (150 values: person 1's 25 joints then person 2's, x y z); label files one instance
per line ``label,start,end,confidence`` with start 0-based and end exclusive.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from usdrl.data.classes import PKUMMD_CLASS_NAMES
from usdrl.data.dataset_format import MANIFEST_NAME
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import file_sha256, input_fingerprint, is_up_to_date
from usdrl.data.normalize import PREPROCESSING_VERSION, normalize_batch
from usdrl.data.text_tables import LineProblems, line_error, parse_table, read_text
from usdrl.data.writer import (
    DatasetWriter,
    default_workers,
    finish_dataset,
    first_instance_labels,
    write_sequences,
)
from usdrl.skeleton import SkeletonLayout, ntu25_layout

VALUES_PER_FRAME = 150  # 2 persons x 25 joints x 3
CLIP_FRAMES = 300
VIEWS = ("L", "M", "R")
FRAME_LINE_PROBLEMS = LineProblems(
    wrong_count="{path}:{line}: a frame line needs {expected} values, found {found}",
    not_a_number="{path}:{line}: text where a number belongs: {text!r}",
    not_finite="{path}:{line}: NaN or inf in a frame line",
    unparsed="{path}: could not be parsed")
SPLIT_FILES = {
    "pku1": {"xsub": "cross-subject.txt", "xview": "cross-view.txt"},
    "pku2": {"xsub": "cross_subject_v2.txt", "xview": "cross_view_v2.txt"},
}


@dataclass(frozen=True)
class Instance:
    """One line of a PKU-MMD label file."""

    label: int  # 1-based action id
    start: int  # 0-based
    end: int  # exclusive
    confidence: int


def read_pku_skeleton(path: str | Path) -> np.ndarray:
    """A skeleton file as (C=3, T, V=25, M=2) float32."""
    path = Path(path)
    text = read_text(path)
    lines = [line for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: empty skeleton file")
    table = parse_table(text, len(lines), VALUES_PER_FRAME, np.float32)  # (T, 150)
    if table is None:
        raise line_error(enumerate(lines, start=1), VALUES_PER_FRAME, np.float32, FRAME_LINE_PROBLEMS, path)
    return table.reshape(len(lines), 2, 25, 3).transpose(3, 0, 2, 1).copy()  # (T, M, V, C) -> (C, T, V, M)


def read_pku_labels(path: str | Path) -> tuple[list[Instance], list[str]]:
    """Instances of a label file and notes on the quirks met (a reversed instance is swapped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist; pass --labels the folder of PKU-MMD label files")
    instances, notes = [], []
    for index, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.strip().rstrip(",").split(",")]
        if len(fields) != 4:
            raise DataError(f"{path}:{index + 1}: a label line needs 4 values (label,start,end,confidence), "
                            f"found {len(fields)}: {line.strip()[:60]!r}")
        try:
            label, start, end, confidence = (int(float(field)) for field in fields)
        except ValueError:
            raise DataError(f"{path}:{index + 1}: text where a number belongs: {line.strip()[:60]!r}") from None
        if not 1 <= label <= len(PKUMMD_CLASS_NAMES):
            raise DataError(f"{path}:{index + 1}: label {label} is outside 1..{len(PKUMMD_CLASS_NAMES)}")
        if start > end:
            notes.append(f"{path.name}:{index + 1}: start {start} > end {end}, swapped")
            start, end = end, start
        instances.append(Instance(label, start, end, confidence))
    return instances, notes


def read_split_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(training videos, test videos) of an official split list (4 lines, comma lists, trailing comma)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split list {path} does not exist; pass --splits the folder of the official split files")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 4:
        raise DataError(f"{path}: expected 4 lines (header, training ids, header, test ids), found {len(lines)}")

    def names(line: str) -> list[str]:
        return [name.strip() for name in line.split(",") if name.strip()]

    return names(lines[1]), names(lines[3])


def _find_split_files(splits_dir: Path, phase: str) -> dict[str, Path]:
    found = {}
    for benchmark, filename in SPLIT_FILES[phase].items():
        candidates = [splits_dir / filename, splits_dir / "phase2" / filename, splits_dir / "split" / filename]
        match = next((c for c in candidates if c.is_file()), None)
        if match is None:
            raise DataError(f"{splits_dir} has no {filename}; pass --splits the folder of the official split lists")
        found[benchmark] = match
    return found


def _splits_by_video(video_of_sample: list[str], split_files: dict[str, Path]) -> dict[tuple[str, str], np.ndarray]:
    """Index lists of each benchmark's train/test: a sample belongs where its video is listed."""
    splits = {}
    for benchmark, path in split_files.items():
        train, test = read_split_file(path)
        for split, videos in (("train", set(train)), ("test", set(test))):
            splits[(benchmark, split)] = np.array([i for i, v in enumerate(video_of_sample) if v in videos], dtype=np.int64)
    return splits


def _video_coverage(pairs: list[tuple[str, Path, Path]], skipped: list[dict], split_files: dict[str, Path]) -> dict:
    """How many of the videos the split lists name were found, overall and per benchmark/split.

    A video counts as found when its skeleton and label files are present and it was not skipped as
    unreadable (``skipped`` entries naming a whole video). The copy is partial (``is_partial``) when some
    listed video was not found; ``found_not_listed`` counts the videos found that no split list names (they are kept
    in the dataset but belong to no split) and ``not_listed_names`` names them.
    """
    skipped_names = {entry["name"] for entry in skipped}
    found = {name for name, _, _ in pairs if name not in skipped_names}
    split_lists = {}
    for benchmark, path in split_files.items():
        train, test = read_split_file(path)
        split_lists[f"{benchmark}/train"], split_lists[f"{benchmark}/test"] = set(train), set(test)
    listed = set().union(*split_lists.values())
    not_listed = sorted(found - listed)
    return {
        "videos": {"found": len(found & listed), "listed": len(listed)},
        "splits": {key: {"found": len(found & videos), "listed": len(videos)} for key, videos in split_lists.items()},
        "found_not_listed": len(not_listed),
        "not_listed_names": not_listed,
    }


def is_partial(coverage: dict) -> bool:
    """Whether a coverage record of ``_video_coverage`` is of a partial copy: some listed video was not found."""
    return coverage["videos"]["found"] < coverage["videos"]["listed"]


def coverage_lines(command: str, coverage: dict) -> list[str]:
    """The warnings ``usdrl prepare`` prints on stderr about a coverage record of ``_video_coverage``: one when
    the copy is partial, one when some videos found are in no split list; none for a complete copy."""
    lines = []
    if coverage and is_partial(coverage):
        videos = coverage["videos"]
        lines.append(f"prepare {command}: {videos['found']:,} of the {videos['listed']:,} videos the split lists name "
                     f"were found; this is a subset, not the benchmark")
    if coverage.get("found_not_listed"):
        lines.append(f"prepare {command}: {coverage['found_not_listed']:,} of the videos found are in no split list; "
                     f"they are kept in the dataset but belong to no split")
    return lines


def _summary_coverage(coverage: dict) -> dict:
    """The coverage record without the names of the unlisted videos, for the printed summary."""
    return {key: value for key, value in coverage.items() if key != "not_listed_names"}


def _up_to_date_summary(out_dir: Path, pairs: list[tuple[str, Path, Path]], split_files: dict[str, Path]) -> dict:
    """The summary of an output folder that is already up to date, with the coverage of the videos it was made from."""
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    coverage = _video_coverage(pairs, manifest.get("skipped", []), split_files)
    return {"up_to_date": True, "out": str(out_dir), "partial": is_partial(coverage),
            "coverage": _summary_coverage(coverage)}


def _pair_files(raw_dir: Path, labels_dir: Path) -> list[tuple[str, Path, Path]]:
    if not raw_dir.is_dir():
        raise DataError(f"skeleton directory {raw_dir} does not exist; pass --raw the folder of PKU-MMD skeleton .txt files")
    if not labels_dir.is_dir():
        raise DataError(f"label directory {labels_dir} does not exist; pass --labels the folder of PKU-MMD label files")
    pairs = []
    for path in sorted(raw_dir.glob("*.txt")):
        label_path = labels_dir / path.name
        if not label_path.is_file():
            raise DataError(f"{path}: no label file {label_path}; add it or remove the skeleton file")
        pairs.append((path.stem, path, label_path))
    if not pairs:
        raise DataError(f"{raw_dir} holds no skeleton .txt files")
    return pairs


def _load_video(pair: tuple[str, Path, Path], skip_bad: bool) -> tuple[str, np.ndarray | None, list[Instance], list[str], str]:
    """Worker: read, normalise (no padding: untrimmed), and read labels of one video."""
    name, skeleton_path, label_path = pair
    try:
        digest = file_sha256(skeleton_path)
        sequence = read_pku_skeleton(skeleton_path)
        instances, notes = read_pku_labels(label_path)
    except DataError as error:
        if not skip_bad:
            raise
        return name, None, [], [str(error)], ""
    layout = ntu25_layout()
    sequence = normalize_batch(sequence[None], layout.center_joint, layout.shoulder_pair, pad_frames=False)[0]
    length = sequence.shape[1]
    for instance in instances:
        if instance.end > length:
            notes.append(f"{label_path.name}: instance {instance} ends after the last frame {length}, clipped")
    return name, sequence, instances, notes, digest


def _videos(pairs: list[tuple[str, Path, Path]], skip_bad: bool, workers: int, progress: bool, description: str) -> Iterator:
    work = partial(_load_video, skip_bad=skip_bad)
    bar = tqdm(total=len(pairs), unit="video", desc=description, disable=not progress)
    if workers <= 1:
        for pair in pairs:
            yield work(pair)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(work, pairs, chunksize=4):
                yield result
                bar.update()
    bar.close()


def _video_ids(names: list[str]) -> dict[str, np.ndarray]:
    views = np.array([VIEWS.index(n.rsplit("-", 1)[1]) + 1 if "-" in n and n.rsplit("-", 1)[1] in VIEWS else 0
                      for n in names], dtype=np.int32)
    return {"view": views}


def resample_clip(clip: np.ndarray, max_frames: int = CLIP_FRAMES) -> np.ndarray:
    """(C, L, V, M) -> (C, max_frames, V, M): zero-padded, or uniformly subsampled when longer."""
    length = clip.shape[1]
    if length > max_frames:
        clip = clip[:, np.linspace(0, length - 1, max_frames).round().astype(int)]
    out = np.zeros((clip.shape[0], max_frames, *clip.shape[2:]), dtype=np.float32)
    out[:, :clip.shape[1]] = clip
    return out


def _pku_fingerprint(pairs: list[tuple[str, Path, Path]], split_files: dict[str, Path], options: dict) -> str:
    """The input fingerprint of a PKU-MMD preparation: skeleton, label and split files, and the options."""
    return input_fingerprint([p for _, skeleton, labels in pairs for p in (skeleton, labels)] + list(split_files.values()),
                             options)


def _sources(raw_dir: Path, labels_dir: Path, split_files: dict[str, Path]) -> dict[str, Any]:
    """The manifest's ``sources``: the folders and split files read."""
    return {"raw_dir": str(raw_dir.resolve()), "labels_dir": str(labels_dir.resolve()),
            "split_files": {k: str(v) for k, v in split_files.items()}}


@dataclass
class _Gathered:
    """What ``prepare_pku1`` gathers while the sequences are written."""

    names: list[str] = field(default_factory=list)
    num_frames: list[int] = field(default_factory=list)
    instance_rows: list[tuple] = field(default_factory=list)  # (sequence, label 1-based, start, end, confidence)
    notes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)


def _labelled_sequences(pairs: list[tuple[str, Path, Path]], skip_bad: bool, workers: int, progress: bool,
                        gathered: _Gathered) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each readable video's normalised sequence (C, T, V, M) and frame labels (T,) (0 background); names,
    instances, notes, skipped videos and checksums into ``gathered``."""
    for name, sequence, instances, video_notes, digest in _videos(pairs, skip_bad, workers, progress, "prepare pku1"):
        if sequence is None:
            gathered.skipped.append({"name": name, "reason": video_notes[0]})
            continue
        length = sequence.shape[1]
        frame_labels = np.zeros(length, dtype=np.int16)
        row = len(gathered.names)
        for instance in instances:
            frame_labels[instance.start:min(instance.end, length)] = instance.label
            gathered.instance_rows.append((row, instance.label, instance.start, min(instance.end, length),
                                           instance.confidence))
        gathered.names.append(name)
        gathered.num_frames.append(length)
        gathered.notes.extend(video_notes)
        gathered.checksums[name] = digest
        yield sequence, frame_labels


def prepare_pku1(raw_dir: str | Path, labels_dir: str | Path, splits_dir: str | Path, out_dir: str | Path,
                 skip_bad: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """Phase I: untrimmed sequences with per-frame labels (0 background) and the instance table."""
    raw_dir, labels_dir, splits_dir = Path(raw_dir), Path(labels_dir), Path(splits_dir)
    pairs = _pair_files(raw_dir, labels_dir)
    split_files = _find_split_files(splits_dir, "pku1")
    options = {"phase": 1, "skip_bad": skip_bad, "preprocessing_version": PREPROCESSING_VERSION}
    fingerprint = _pku_fingerprint(pairs, split_files, options)
    if is_up_to_date(Path(out_dir), fingerprint):
        return _up_to_date_summary(Path(out_dir), pairs, split_files)
    frame_bound = sum(path.stat().st_size for _, path, _ in pairs) // (2 * VALUES_PER_FRAME) + len(pairs)
    layout = ntu25_layout()
    workers = default_workers(len(pairs), per_worker=8) if workers is None else workers
    gathered = _Gathered()
    with DatasetWriter(out_dir) as writer:
        write_sequences(writer, _labelled_sequences(pairs, skip_bad, workers, progress, gathered), frame_bound,
                        (3, layout.num_joints, layout.num_persons))
        writer.save("instances", np.array(gathered.instance_rows, dtype=np.int64).reshape(-1, 5))
        coverage = _video_coverage(pairs, gathered.skipped, split_files)
        finish_dataset(
            writer, kind="untrimmed", layout=layout, class_names=list(PKUMMD_CLASS_NAMES),
            label=first_instance_labels(gathered.instance_rows, len(gathered.names)),
            num_frames=np.array(gathered.num_frames), names=gathered.names, ids=_video_ids(gathered.names),
            splits=_splits_by_video(gathered.names, split_files),
            details={
                "dataset": "pku1",
                "partial": is_partial(coverage),
                "coverage": coverage,
                "sources": {**_sources(raw_dir, labels_dir, split_files), "sha256": gathered.checksums},
                "instances": len(gathered.instance_rows),
                "label_notes": gathered.notes,
                "skipped": gathered.skipped,
                "excluded": [],
                "sequence_label": "first instance's class (sequences are untrimmed; use frame_labels / instances)",
                "preprocessing": {"version": PREPROCESSING_VERSION,
                                  "steps": ["subtract joint 2 of body 1 per frame",
                                            "rotate first-frame shoulders 5->9 of body 1 onto +x",
                                            "no padding (untrimmed)"],
                                  "frame_labels": "0 background, c = action c (1-based); end exclusive"},
                "input_fingerprint": fingerprint,
            },
        )
    return {"up_to_date": False, "out": str(out_dir), "sequences": len(gathered.names),
            "instances": len(gathered.instance_rows), "skipped": len(gathered.skipped), "notes": len(gathered.notes),
            "partial": is_partial(coverage), "coverage": _summary_coverage(coverage)}


@dataclass
class _Clips:
    """The instance clips ``prepare_pku2`` cuts, raw, and what it met doing so."""

    clips: list[np.ndarray] = field(default_factory=list)  # (C, CLIP_FRAMES, V, M) each
    names: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)  # the video of each clip
    labels: list[int] = field(default_factory=list)  # 1-based action ids
    frames: list[int] = field(default_factory=list)  # valid frames of each clip
    notes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    longer: int = 0  # clips longer than CLIP_FRAMES, subsampled


def _cut_clips(pairs: list[tuple[str, Path, Path]], skip_bad: bool, progress: bool, description: str = "prepare pku2") -> _Clips:
    """Every labelled instance of every readable video as a raw clip, zero-padded or subsampled to CLIP_FRAMES;
    ``description`` labels the progress bar."""
    cut = _Clips()
    for pair in tqdm(pairs, unit="video", desc=description, disable=not progress):
        name, skeleton_path, label_path = pair
        try:
            sequence = read_pku_skeleton(skeleton_path)  # raw, normalised per clip below
            instances, video_notes = read_pku_labels(label_path)
        except DataError as error:
            if not skip_bad:
                raise
            cut.skipped.append({"name": name, "reason": str(error)})
            continue
        cut.notes.extend(video_notes)
        for number, instance in enumerate(instances):
            clip = sequence[:, instance.start:min(instance.end, sequence.shape[1])]
            if clip.shape[1] == 0 or not np.any(clip):
                cut.skipped.append({"name": f"{name}_{number}", "reason": "empty clip (no frames or no skeleton)"})
                continue
            cut.longer += clip.shape[1] > CLIP_FRAMES
            cut.frames.append(min(clip.shape[1], CLIP_FRAMES))
            cut.clips.append(resample_clip(clip))
            cut.names.append(f"{name}_{number:03d}")
            cut.videos.append(name)
            cut.labels.append(instance.label)
    return cut


def _write_normalised_clips(writer: DatasetWriter, clips: list[np.ndarray], layout: SkeletonLayout) -> None:
    """x.npy (N, C, T, V, M): the clips normalised as NTU, 256 at a time."""
    x = writer.open_array("x", (len(clips), 3, CLIP_FRAMES, layout.num_joints, layout.num_persons))
    for start in range(0, len(clips), 256):
        batch = np.stack(clips[start:start + 256])
        x[start:start + len(batch)] = normalize_batch(batch, layout.center_joint, layout.shoulder_pair)
    x.flush()
    del x


def prepare_pku2(raw_dir: str | Path, labels_dir: str | Path, splits_dir: str | Path, out_dir: str | Path,
                 skip_bad: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """Phase II: trimmed instance clips, normalised as NTU (with padding), labels mapped to 0..K-1."""
    options = {"phase": 2, "skip_bad": skip_bad, "clip_frames": CLIP_FRAMES, "preprocessing_version": PREPROCESSING_VERSION}
    return _prepare_clips(raw_dir, labels_dir, splits_dir, out_dir, "pku2", "pku2", options, skip_bad, progress)


def prepare_pku1_clips(raw_dir: str | Path, labels_dir: str | Path, splits_dir: str | Path, out_dir: str | Path,
                       skip_bad: bool = False, workers: int | None = None, progress: bool = True) -> dict:
    """Phase I as trimmed-clip recognition (dataset ``pku1_clips``): every labelled action instance of the
    untrimmed videos cut out as a clip, normalised and padded as Phase II's, labels mapped to 0..K-1 over the
    classes present, split by the Phase I official lists of videos (a clip is in the split of its video).
    ``workers`` is accepted for the command's signature; the clips are cut in this process."""
    options = {"phase": 1, "clips": True, "skip_bad": skip_bad, "clip_frames": CLIP_FRAMES,
               "preprocessing_version": PREPROCESSING_VERSION}
    return _prepare_clips(raw_dir, labels_dir, splits_dir, out_dir, "pku1", "pku1_clips", options, skip_bad, progress)


def _prepare_clips(raw_dir: str | Path, labels_dir: str | Path, splits_dir: str | Path, out_dir: str | Path,
                   phase: str, dataset: str, options: dict, skip_bad: bool, progress: bool) -> dict:
    """A trimmed dataset of the labelled instances of ``phase``'s videos ("pku1" or "pku2"), split by that
    phase's official lists; ``dataset`` is the manifest's dataset name, ``options`` go into the fingerprint."""
    raw_dir, labels_dir, splits_dir = Path(raw_dir), Path(labels_dir), Path(splits_dir)
    pairs = _pair_files(raw_dir, labels_dir)
    split_files = _find_split_files(splits_dir, phase)
    fingerprint = _pku_fingerprint(pairs, split_files, options)
    if is_up_to_date(Path(out_dir), fingerprint):
        return _up_to_date_summary(Path(out_dir), pairs, split_files)
    layout = ntu25_layout()
    cut = _cut_clips(pairs, skip_bad, progress, description=f"prepare {dataset}")
    if not cut.clips:
        raise DataError(f"{raw_dir}: no clips could be cut")
    coverage = _video_coverage(pairs, cut.skipped, split_files)
    splits = _splits_by_video(cut.videos, split_files)
    present_labels = sorted(set(cut.labels))
    label_index = {label: index for index, label in enumerate(present_labels)}
    with DatasetWriter(out_dir) as writer:
        _write_normalised_clips(writer, cut.clips, layout)
        finish_dataset(
            writer, kind="trimmed", layout=layout,
            class_names=[PKUMMD_CLASS_NAMES[label - 1] for label in present_labels],
            label=np.array([label_index[label] for label in cut.labels]), num_frames=np.array(cut.frames),
            names=cut.names, ids=_video_ids(cut.videos), splits=splits,
            details={
                "dataset": dataset,
                "partial": is_partial(coverage),
                "coverage": coverage,
                "original_action_ids": present_labels,
                "sources": _sources(raw_dir, labels_dir, split_files),
                "label_notes": cut.notes,
                "skipped": cut.skipped,
                "excluded": [],
                "clips_longer_than_max": int(cut.longer),
                "preprocessing": {"version": PREPROCESSING_VERSION, "max_frames": CLIP_FRAMES,
                                  "steps": ["cut instance [start, end)", f"longer clips subsampled uniformly to {CLIP_FRAMES}",
                                            "zero-pad", "pad null frames (move to front, repeat)",
                                            "subtract joint 2 of body 1 per frame",
                                            "rotate first-frame shoulders 5->9 of body 1 onto +x"]},
                "input_fingerprint": fingerprint,
            },
        )
    return {"up_to_date": False, "out": str(out_dir), "clips": len(cut.clips), "skipped": len(cut.skipped),
            "classes": len(present_labels),
            "split_clips": {f"{benchmark}/{split}": len(indices) for (benchmark, split), indices in splits.items()},
            "partial": is_partial(coverage), "coverage": _summary_coverage(coverage)}
