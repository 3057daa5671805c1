"""NTU RGB+D 60/120 from the raw ``.skeleton`` files (SPEC.md 1), parsed with vectorised NumPy.

The released preprocessing parses each of the ~7,500 joint lines of a file with Python string
operations and rotates joint by joint; here the structure of a file (frame and body counts) is
walked once and all joint lines of a file are converted to numbers in one NumPy call, and
normalisation runs on batches of files in worker processes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from usdrl.data.classes import NTU120_CLASS_NAMES
from usdrl.data.errors import DataError
from usdrl.data.fingerprint import input_fingerprint, is_up_to_date
from usdrl.data.normalize import PREPROCESSING_VERSION, normalize_batch
from usdrl.data.text_tables import LineProblems, line_error, parse_table
from usdrl.data.writer import DatasetWriter, default_workers, finish_dataset, shrink_leading_dimension
from usdrl.skeleton import SkeletonLayout, ntu25_layout

NAME_PATTERN = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
JOINT_VALUES = 12  # x y z depthX depthY colorX colorY orientationW..Z trackingState
JOINT_LINE_PROBLEMS = LineProblems(
    wrong_count="{path}:{line}: a joint line needs {expected} values, found {found}",
    not_a_number="{path}:{line}: a joint line holds text where a number belongs: {text!r}",
    not_finite="{path}:{line}: a joint line holds NaN or inf",
    unparsed="{path}: joint lines could not be parsed")
MAX_BODIES_READ = 4
MAX_FRAMES = 300

NTU60_TRAINING_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU120_TRAINING_SUBJECTS = NTU60_TRAINING_SUBJECTS + (
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93,
    94, 95, 97, 98, 100, 103,
)
NTU60_TRAINING_CAMERAS = (2, 3)
DATASET_CLASSES = {"ntu60": 60, "ntu120": 120}
DATASET_MAX_SETUP = {"ntu60": 17, "ntu120": 32}


@dataclass(frozen=True)
class SampleIds:
    """The ids in an NTU sample name SsssCcccPpppRrrrAaaa."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int  # 1-based


def parse_sample_name(name: str) -> SampleIds:
    """The ids of an NTU sample name (SsssCcccPpppRrrrAaaa); a DataError for any other name."""
    match = NAME_PATTERN.match(name)
    if match is None:
        raise DataError(f"{name}: not an NTU sample name (SsssCcccPpppRrrrAaaa); rename or remove the file")
    return SampleIds(*(int(group) for group in match.groups()))


def _integer_line(lines: list[str], index: int, path: Path, what: str) -> int:
    if index >= len(lines):
        raise DataError(f"{path}: truncated at line {index + 1}: expected {what}; the file is incomplete, "
                        f"download it again or drop it with --skip-bad")
    text = lines[index].strip()
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}:{index + 1}: expected {what} (an integer), found {text[:40]!r}") from None


def _first_bad_joint_line(lines: list[str], starts: list[int], joints: int, path: Path) -> DataError:
    """Slow path, only on error: the first joint line with a wrong count, text or a non-finite value."""
    numbered = ((index + 1, lines[index]) for start in starts for index in range(start, start + joints))
    return line_error(numbered, JOINT_VALUES, np.float64, JOINT_LINE_PROBLEMS, path)


def read_skeleton_file(path: str | Path, max_bodies: int = MAX_BODIES_READ, num_joints: int = 25) -> np.ndarray:
    """Raw xyz of up to ``max_bodies`` body slots: (max_bodies, T, V, 3) float32, zero where absent."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error})") from error
    return parse_skeleton_bytes(content, path, max_bodies, num_joints)


def parse_skeleton_bytes(content: bytes, path: Path, max_bodies: int = MAX_BODIES_READ, num_joints: int = 25) -> np.ndarray:
    """``read_skeleton_file`` on bytes already read; ``path`` only names the file in errors."""
    try:
        lines = content.decode("ascii").split("\n")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text .skeleton file ({error})") from error
    num_frames = _integer_line(lines, 0, path, "the number of frames")
    if num_frames < 0:
        raise DataError(f"{path}:1: negative frame count {num_frames}")
    pointer = 1
    block_starts: list[int] = []
    block_slots: list[tuple[int, int]] = []  # (frame, body)
    for frame in range(num_frames):
        num_bodies = _integer_line(lines, pointer, path, f"the body count of frame {frame + 1}")
        pointer += 1
        for body in range(num_bodies):
            pointer += 1  # body information line
            joints = _integer_line(lines, pointer, path, f"the joint count of frame {frame + 1}, body {body + 1}")
            if joints != num_joints:
                raise DataError(f"{path}:{pointer + 1}: expected {num_joints} joints, found {joints}")
            pointer += 1
            if pointer + joints > len(lines):
                raise DataError(f"{path}: truncated in frame {frame + 1} of {num_frames} (file ends at line "
                                f"{len(lines)}); download it again or drop it with --skip-bad")
            if body < max_bodies:
                block_starts.append(pointer)
                block_slots.append((frame, body))
            pointer += joints
    trailing = [index for index in range(pointer, len(lines)) if lines[index].strip()]
    if trailing:
        raise DataError(f"{path}:{trailing[0] + 1}: unexpected content after the last of {num_frames} frames")
    data = np.zeros((max_bodies, num_frames, num_joints, 3), dtype=np.float32)
    if not block_starts:
        return data
    text = "\n".join("\n".join(lines[start:start + num_joints]) for start in block_starts)
    table = parse_table(text, len(block_starts) * num_joints, JOINT_VALUES, np.float64)
    if table is None:
        raise _first_bad_joint_line(lines, block_starts, num_joints, path)
    xyz = table.reshape(len(block_starts), num_joints, JOINT_VALUES)[:, :, :3]
    frames, bodies = np.array(block_slots).T
    data[bodies, frames] = xyz
    return data


def select_bodies(bodies: np.ndarray, keep: int = 2) -> np.ndarray:
    """Keep the ``keep`` body slots of highest energy; (B, T, V, 3) -> (C=3, T, V, keep).

    Energy = sum over x, y, z of the std of that coordinate over the body's non-zero frames (released rule).
    """
    energies = []
    for body in bodies:
        present = body.sum(-1).sum(-1) != 0
        frames = body[present]
        energies.append(sum(frames[:, :, c].std() for c in range(3)) if len(frames) else 0.0)
    order = np.array(energies).argsort()[::-1][:keep]
    return bodies[order].transpose(3, 1, 2, 0)


@dataclass
class FileResult:
    """One .skeleton file prepared by a worker (``_prepare_files``)."""

    name: str
    sample: np.ndarray | None  # (C, T, V, M) normalised, None when excluded
    num_frames: int
    problem: str | None  # why it was excluded or skipped
    bad: bool  # True: bad input (skipped with --skip-bad), False: no skeleton (excluded)
    sha256: str = ""


def _prepare_files(paths: list[Path], skip_bad: bool, layout: SkeletonLayout) -> list[FileResult]:
    """Worker: parse, select, pad and normalise a chunk of files."""
    results: list[FileResult] = []
    for path in paths:
        try:
            content = path.read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            bodies = parse_skeleton_bytes(content, path)
        except (OSError, DataError) as error:
            if not skip_bad:
                raise DataError(str(error)) from None
            results.append(FileResult(path.stem, None, 0, str(error), True))
            continue
        if not np.any(bodies):
            results.append(FileResult(path.stem, None, 0, "no skeleton in any frame", False, digest))
            continue
        sample = select_bodies(bodies, keep=layout.num_persons)  # (C, T, V, M)
        frames = sample.shape[1]
        padded = np.zeros((3, MAX_FRAMES, sample.shape[2], sample.shape[3]), dtype=np.float32)
        padded[:, :min(frames, MAX_FRAMES)] = sample[:, :MAX_FRAMES]
        results.append(FileResult(path.stem, padded, min(frames, MAX_FRAMES), None, False, digest))
    present = [result for result in results if result.sample is not None]
    if present:
        batch = np.stack([result.sample for result in present])
        batch = normalize_batch(batch, layout.center_joint, layout.shoulder_pair)
        for result, normalised in zip(present, batch):
            result.sample = normalised
    return results


def read_missing_list(path: str | Path) -> set[str]:
    """Names in an official missing-skeleton list (header lines are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing-skeleton list {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"missing-skeleton list {path} is not UTF-8 text (byte {error.start}); pass the official "
                        f"list, one sample name (S001C001P001R001A001) a line") from None
    if "\x00" in text:
        raise DataError(f"missing-skeleton list {path} holds binary data; pass the official list, one sample name "
                        f"(S001C001P001R001A001) a line")
    return {line.strip() for line in text.splitlines() if NAME_PATTERN.match(line.strip())}


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _map_chunks(function: Callable, chunks: list[list[Path]], workers: int, progress: bool, total: int,
                description: str) -> Iterator[list[FileResult]]:
    bar = tqdm(total=total, unit="file", desc=description, disable=not progress)
    if workers <= 1:
        for chunk in chunks:
            results = function(chunk)
            bar.update(len(chunk))
            yield results
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk, results in zip(chunks, pool.map(function, chunks)):
                bar.update(len(chunk))
                yield results
    bar.close()


def ntu_splits(dataset: str, ids: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """Cross-subject and cross-view (NTU-60) or cross-setup (NTU-120) index lists."""
    subjects = NTU60_TRAINING_SUBJECTS if dataset == "ntu60" else NTU120_TRAINING_SUBJECTS
    in_training = np.isin(ids["subject"], subjects)
    splits = {("xsub", "train"): np.flatnonzero(in_training), ("xsub", "test"): np.flatnonzero(~in_training)}
    if dataset == "ntu60":
        training_view = np.isin(ids["camera"], NTU60_TRAINING_CAMERAS)
        splits[("xview", "train")] = np.flatnonzero(training_view)
        splits[("xview", "test")] = np.flatnonzero(~training_view)
    else:
        even_setup = ids["setup"] % 2 == 0
        splits[("xset", "train")] = np.flatnonzero(even_setup)
        splits[("xset", "test")] = np.flatnonzero(~even_setup)
    return splits


def _select_files(raw_dir: Path, dataset: str, skip_bad: bool) -> tuple[list[Path], list[dict]]:
    """The .skeleton files of ``dataset`` under ``raw_dir`` by name, and those skipped for a bad name."""
    paths = sorted(raw_dir.rglob("*.skeleton"), key=lambda p: p.name)
    if not paths:
        raise DataError(f"{raw_dir} holds no .skeleton files; point --raw at the extracted nturgb+d_skeletons folder")
    selected: list[Path] = []
    bad_names: list[dict] = []
    first_path_of: dict[str, Path] = {}
    for path in paths:
        if first_path_of.setdefault(path.stem, path) != path:
            raise DataError(f"sample {path.stem} is in two files: {first_path_of[path.stem]} and {path}; "
                            f"remove one of them (or point --raw at a folder holding one copy)")
        try:
            ids = parse_sample_name(path.stem)
        except DataError as error:
            if not skip_bad:
                raise DataError(f"{path}: not an NTU sample name (SsssCcccPpppRrrrAaaa); remove it or use --skip-bad") from error
            bad_names.append({"name": path.name, "reason": str(error)})
            continue
        if ids.action <= DATASET_CLASSES[dataset] and ids.setup <= DATASET_MAX_SETUP[dataset]:
            selected.append(path)
    return selected, bad_names


def _write_prepared_samples(writer: DatasetWriter, candidates: list[Path], dataset: str, layout: SkeletonLayout,
                            skip_bad: bool, workers: int, chunk_size: int, progress: bool, excluded: list[dict],
                            bad_names: list[dict]) -> tuple[list[str], list[int]]:
    """x.npy (N, C, T, V, M) of the candidates prepared in chunks by worker processes, cut to the samples kept,
    and sources.json (their checksums). Files without a skeleton go to ``excluded``, bad ones to ``bad_names``.
    Returns the names and valid frames of the samples kept."""
    x = writer.open_array("x", (len(candidates), 3, MAX_FRAMES, layout.num_joints, layout.num_persons))
    names, num_frames, checksums = [], [], {}
    row = 0
    work = partial(_prepare_files, skip_bad=skip_bad, layout=layout)
    chunks = list(_chunks(candidates, chunk_size))
    for results in _map_chunks(work, chunks, workers, progress, len(candidates), f"prepare {dataset}"):
        for result in results:
            if result.sha256:
                checksums[result.name] = result.sha256
            if result.sample is None:
                (bad_names if result.bad else excluded).append({"name": result.name, "reason": result.problem})
                continue
            x[row] = result.sample
            names.append(result.name)
            num_frames.append(result.num_frames)
            row += 1
    x.flush()
    del x
    writer.path("sources.json").write_text(json.dumps(checksums, indent=0, sort_keys=True))
    shrink_leading_dimension(writer.path("x.npy"), row)
    return names, num_frames


def _manifest_details(dataset: str, raw_dir: Path, files: int, missing_list: str | Path | None, excluded: list[dict],
                      bad_names: list[dict], fingerprint: str) -> dict:
    """The manifest's sources, exclusions and preprocessing."""
    return {
        "dataset": dataset,
        "sources": {"raw_dir": str(raw_dir.resolve()), "files": files,
                    "missing_list": str(missing_list) if missing_list else None,
                    "checksums": "sources.json (sha256 of every file read)"},
        "excluded": excluded,
        "skipped": bad_names,
        "preprocessing": {
            "version": PREPROCESSING_VERSION,
            "steps": ["bodies: 2 of highest energy among the first 4 slots",
                      f"zero-pad to {MAX_FRAMES} frames",
                      "pad null frames (move to front, repeat)", "subtract joint 2 of body 1 per frame",
                      "rotate first-frame shoulders 5->9 of body 1 onto +x"],
            "max_frames": MAX_FRAMES,
        },
        "input_fingerprint": fingerprint,
    }


def prepare_ntu(
    dataset: str,
    raw_dir: str | Path,
    out_dir: str | Path,
    missing_list: str | Path | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    chunk_size: int = 32,
    progress: bool = True,
) -> dict:
    """Prepare NTU-60 or NTU-120 into the canonical form; returns a summary (also in the manifest)."""
    if dataset not in DATASET_CLASSES:
        raise DataError(f"unknown NTU dataset {dataset!r}; choose ntu60 or ntu120")
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"raw directory {raw_dir} does not exist; point --raw at the folder of .skeleton files")
    layout = ntu25_layout()
    selected, bad_names = _select_files(raw_dir, dataset, skip_bad)
    missing = read_missing_list(missing_list) if missing_list else set()
    options = {"dataset": dataset, "missing_list": sorted(missing), "skip_bad": skip_bad,
               "preprocessing_version": PREPROCESSING_VERSION}
    fingerprint = input_fingerprint(selected, options)
    out_dir = Path(out_dir)
    if is_up_to_date(out_dir, fingerprint):
        return {"up_to_date": True, "out": str(out_dir)}
    excluded = [{"name": p.stem, "reason": "in the official missing-skeleton list"} for p in selected if p.stem in missing]
    candidates = [p for p in selected if p.stem not in missing]
    if not candidates:
        raise DataError(f"{raw_dir}: no {dataset} samples left after exclusions")
    workers = workers if workers is not None else default_workers(len(candidates), per_worker=chunk_size)
    with DatasetWriter(out_dir) as writer:
        names, num_frames = _write_prepared_samples(writer, candidates, dataset, layout, skip_bad, workers, chunk_size,
                                                    progress, excluded, bad_names)
        parsed = [parse_sample_name(name) for name in names]
        ids = {key: np.array([getattr(p, key) for p in parsed], dtype=np.int32)
               for key in ("setup", "camera", "subject", "replication")}
        label = np.array([p.action - 1 for p in parsed], dtype=np.int64)
        finish_dataset(
            writer, kind="trimmed", layout=layout, class_names=list(NTU120_CLASS_NAMES[:DATASET_CLASSES[dataset]]),
            label=label, num_frames=np.array(num_frames), names=names, ids=ids, splits=ntu_splits(dataset, ids),
            details=_manifest_details(dataset, raw_dir, len(selected), missing_list, excluded, bad_names, fingerprint),
        )
    return {"up_to_date": False, "out": str(out_dir), "samples": len(names), "excluded": len(excluded),
            "skipped": len(bad_names)}
