"""A prepared dataset written again in another skeleton layout (``usdrl import store ROOT --to-layout NAME --out
DIR``): each clip or stream mapped by joint names (``usdrl.data.layout_mapping``), a block of clips at a time, into
a new dataset written atomically (``DatasetWriter``). Labels, names, ids, splits and the other per-sample files
are copied; the manifest records the mapping (``layout_mapping``) and the source (``mapped_from``).

A normalised source is normalised again with the target layout's centre joint and shoulders (SPEC.md 1; a
derived centre joint, e.g. NTU's spine_mid from hips and shoulders, is not at the origin until then); a source
stored as given stays as given.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from usdrl.data.dataset_format import MANIFEST_NAME, SPLITS_FOLDER
from usdrl.data.fingerprint import input_fingerprint
from usdrl.data.import_common import normalise_samples, position_channels
from usdrl.data.layout_mapping import LayoutMapping, layout_mapping
from usdrl.data.normalize import normalize_batch
from usdrl.data.store import read_manifest
from usdrl.data.writer import DatasetWriter
from usdrl.skeleton import SkeletonLayout, layout_from_dict, load_layout

MAPPED_BLOCK = 256  # clips mapped at once
COPIED_FILES = ("label.npy", "num_frames.npy", "names.json", "ids.npz", "offsets.npy", "frame_labels.npy",
                "instances.npy", "sources.json", "clip_ranges.npy", "frame_ids.npy")  # as they are, when present


def is_normalised(manifest: dict[str, Any]) -> bool:
    """Whether a manifest's samples are normalised (SPEC.md 1), as ``usdrl.deploy.inputs`` reads it: its
    ``preprocessing.normalised``, else a numbered preprocessing version (the built-in datasets)."""
    preprocessing = manifest.get("preprocessing") or {}
    return bool(preprocessing.get("normalised", isinstance(preprocessing.get("version"), int)))


def with_centre_present(x: np.ndarray, mapping: LayoutMapping) -> np.ndarray:
    """Normalised source clips x (n, C, T, V, M) with every present joint moved by +1 on each position channel, the
    source's centre joint included: it sits at the origin, where normalising again would take it for absent. A
    shift of every present joint leaves the next centring's result unchanged."""
    positions = position_channels(mapping.source)
    x = np.array(x, dtype=np.float32)
    present = np.any(x[:, :positions] != 0, axis=1, keepdims=True)  # (n, 1, T, V, M)
    present[..., mapping.source.center_joint, :] = np.any(present, axis=-2)  # frames and persons of the clip
    x[:, :positions] += present
    return x


def map_samples(x: np.ndarray, num_frames: np.ndarray, mapping: LayoutMapping, normalise: bool) -> np.ndarray:
    """Clips x (n, C, T, V, M) of the source -> the target's, normalised again with the target's joints if asked."""
    if not normalise:
        return mapping.apply(x)
    return normalise_samples(mapping.apply(with_centre_present(x, mapping)), num_frames, mapping.target)


def map_sequence(sequence: np.ndarray, mapping: LayoutMapping, normalise: bool) -> np.ndarray:
    """One stream (C, L, V, M) of the source -> the target's; normalised again as a whole stream (no padding)."""
    if not normalise:
        return mapping.apply(sequence)
    mapped = mapping.apply(with_centre_present(sequence[None], mapping))  # (1, C, L, V, M)
    positions = position_channels(mapping.target)
    mapped[:, :positions] = normalize_batch(mapped[:, :positions], mapping.target.center_joint,
                                            mapping.target.shoulder_pair, pad_frames=False)
    return mapped[0]


def map_store(root: str | Path, to_layout: str | Path | SkeletonLayout, out_dir: str | Path) -> dict[str, Any]:
    """The prepared dataset ``root`` in layout ``to_layout`` (a built-in name, a layout file or a layout), written
    to ``out_dir``; a summary with the mapping's line. DataErrors for a mapping that does not exist."""
    root, out_dir = Path(root), Path(out_dir)
    manifest = read_manifest(root)
    source = layout_from_dict(manifest["layout"], source=str(root / MANIFEST_NAME))
    target = to_layout if isinstance(to_layout, SkeletonLayout) else load_layout(to_layout)
    mapping = layout_mapping(source, target)
    normalise = is_normalised(manifest)
    untrimmed = manifest.get("kind") == "untrimmed"
    with DatasetWriter(out_dir, inputs=[root]) as writer:
        for name in COPIED_FILES:
            if (root / name).is_file():
                shutil.copyfile(root / name, writer.path(name))
        for split in sorted((root / SPLITS_FOLDER).glob("*.npy")):
            shutil.copyfile(split, writer.work_dir / SPLITS_FOLDER / split.name)
        num_frames = np.load(root / "num_frames.npy")
        shape_tail = (target.num_coordinates,)
        if untrimmed:
            frames = np.load(root / "frames.npy", mmap_mode="r")  # (F, C, V, M)
            offsets = np.load(root / "offsets.npy")
            out = writer.open_array("frames", (len(frames), *shape_tail, target.num_joints, target.num_persons))
            for row in range(len(offsets) - 1):
                begin, end = int(offsets[row]), int(offsets[row + 1])
                sequence = np.asarray(frames[begin:end]).transpose(1, 0, 2, 3)  # (C, L, V, M)
                out[begin:end] = map_sequence(sequence, mapping, normalise).transpose(1, 0, 2, 3)
        else:
            x = np.load(root / "x.npy", mmap_mode="r")  # (N, C, T, V, M)
            out = writer.open_array("x", (len(x), *shape_tail, x.shape[2], target.num_joints, target.num_persons))
            for start in range(0, len(x), MAPPED_BLOCK):
                stop = min(start + MAPPED_BLOCK, len(x))
                out[start:stop] = map_samples(np.asarray(x[start:stop]), num_frames[start:stop], mapping, normalise)
        out.flush()
        del out
        preprocessing = dict(manifest.get("preprocessing") or {})
        preprocessing["layout_mapping"] = (f"mapped to {target.name} by joint names"
                                           + ("; normalised again with the target's centre joint and shoulders"
                                              if normalise else "; stored as given"))
        details = {key: value for key, value in manifest.items() if key not in ("format_version", "layout")}
        fingerprint = input_fingerprint([root / MANIFEST_NAME], {"importer": "store", "to_layout": target.to_dict(),
                                                                 "source": manifest.get("input_fingerprint")})
        writer.finish({**details, "input_fingerprint": fingerprint, "layout": target.to_dict(),
                       "preprocessing": preprocessing,
                       "layout_mapping": mapping.record(),
                       "mapped_from": {"path": str(root.resolve()), "layout": source.name,
                                       "dataset": manifest.get("dataset")}})
    return {"out": str(out_dir), "samples": int(manifest["num_samples"]), "layout": target.name,
            "mapped_from": source.name, "normalised": normalise, "mapping": mapping.summary_line()}

