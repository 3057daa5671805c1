"""What the importers (``usdrl.data.importers``, ``usdrl.data.pyskl``) share: how imported samples are normalised
and how that is recorded, which channels are positions, the checks of split index lists, NTU ids read from
sample names and x.npy written in blocks.

Plain arrays and pyskl annotations are normalised as the built-in datasets are (SPEC.md 1: pad null frames,
subtract the layout's centre joint, rotate its shoulders onto +x) by default for 3D layouts, and stored as
given for 2D ones (image coordinates: see ``default_normalise``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from usdrl.data.errors import DataError
from usdrl.data.normalize import PREPROCESSING_VERSION, normalize_batch
from usdrl.data.ntu import NAME_PATTERN, parse_sample_name
from usdrl.data.writer import DatasetWriter
from usdrl.skeleton import SkeletonLayout

BENCHMARK_ALIASES = {"xsub": "xsub", "cs": "xsub", "csub": "xsub", "cross_subject": "xsub",
                     "xview": "xview", "cv": "xview", "cross_view": "xview",
                     "xset": "xset", "cset": "xset", "cross_setup": "xset"}
NORMALISE_CHUNK = 256  # samples normalised at once (the rotation works in float64)
SCORE_LAYOUT_SUFFIX = "_score"  # a layout named *_score carries a keypoint score as its last channel


def position_channels(layout: SkeletonLayout) -> int:
    """Channels that are positions: all of them, except the score channel of a ``*_score`` layout (coco17_score)."""
    return layout.num_coordinates - 1 if layout.name.endswith(SCORE_LAYOUT_SUFFIX) else layout.num_coordinates


def default_normalise(layout: SkeletonLayout) -> bool:
    """SPEC.md 1 normalisation by default for 3D positions, not for 2D ones.

    3D sensor coordinates (metres, the sensor somewhere in the room) tell an encoder where a body stands rather
    than how it moves; NTU is normalised for this reason. 2D keypoints are image coordinates of an upright
    camera: the lean of a body in the image means something, and the first-frame shoulder line, the rotation's
    reference, shrinks to a point (and its direction to noise) when a person is seen from the side. So 2D layouts
    (and 2D + score, coco17_score) are stored as given unless normalisation is asked for.
    """
    return position_channels(layout) == 3


def normalise_samples(x: np.ndarray, num_frames: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """SPEC.md 1 steps with the layout's centre joint and shoulders on x (N, C, T, V, M), position channels only
    (a score channel is left as is); frames past ``num_frames`` (N,) that were empty stay zero."""
    positions = position_channels(layout)
    out = np.array(x, dtype=np.float32)
    out[:, :positions] = normalize_batch(out[:, :positions], layout.center_joint, layout.shoulder_pair)
    empty = ~np.any(x != 0, axis=(1, 3, 4))  # (N, T)
    padding = empty & (np.arange(x.shape[2])[None, :] >= np.asarray(num_frames)[:, None])  # (N, T)
    out[np.broadcast_to(padding[:, None, :, None, None], out.shape)] = 0.0
    return out


def normalisation_record(layout: SkeletonLayout, normalise: bool, origin: str) -> dict[str, Any]:
    """The manifest's ``preprocessing`` for an import: the steps applied and the joints they used (1-based)."""
    if not normalise:
        return {"version": f"as imported ({origin})", "normalised": False, "steps": [],
                "default": "normalised" if default_normalise(layout) else "as imported (2D layout)"}
    names = layout.joint_names
    center, (left, right) = layout.center_joint, layout.shoulder_pair
    positions = position_channels(layout)
    return {"version": PREPROCESSING_VERSION, "normalised": True,
            "steps": ["pad null frames (move a person's frames to the front when its first frame is empty, repeat "
                      "them over its trailing empty frames)",
                      f"subtract joint {center + 1} ({names[center]}) of person 1 per frame",
                      f"rotate first-frame shoulders {left + 1}->{right + 1} ({names[left]} -> {names[right]}) "
                      f"of person 1 onto +x",
                      "frames past num_frames left at zero"],
            "center_joint": center + 1, "shoulder_pair": [left + 1, right + 1],
            "channels": f"the first {positions} (positions)" + (
                "; the score channel unchanged" if positions < layout.num_coordinates else "")}


def check_splits(splits: dict[tuple[str, str], np.ndarray], source: str) -> None:
    """No index twice in one split, and the splits of one benchmark disjoint."""
    for (benchmark, split), indices in splits.items():
        values, counts = np.unique(indices, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"{source}: split_{benchmark}_{split} holds index {values[counts > 1][0]} "
                            f"{counts[counts > 1][0]} times; each sample may appear once in a split")
    for (benchmark, split), indices in splits.items():
        for (other_benchmark, other_split), other in splits.items():
            if other_benchmark == benchmark and split < other_split:
                common = np.intersect1d(indices, other)
                if common.size:
                    raise DataError(f"{source}: split_{benchmark}_{split} and split_{benchmark}_{other_split} "
                                    f"share {common.size} sample(s) (e.g. index {common[0]}); the splits of "
                                    f"one benchmark must be disjoint")


def ids_from_names(names: list[str]) -> dict[str, np.ndarray]:
    """Setup, camera, subject and replication (N,) of NTU sample names (an extension ignored); {} unless all are."""
    if not names or not all(NAME_PATTERN.match(name.split(".")[0]) for name in names):
        return {}
    parsed = [parse_sample_name(name.split(".")[0]) for name in names]
    return {key: np.array([getattr(p, key) for p in parsed], dtype=np.int32)
            for key in ("setup", "camera", "subject", "replication")}


def write_samples(writer: DatasetWriter, samples: Callable[[int, int], np.ndarray], count: int,
                  shape: tuple[int, ...]) -> None:
    """x.npy (count, *shape) filled in blocks; ``samples(start, stop)`` returns the float32 block."""
    x = writer.open_array("x", (count, *shape))
    for start in range(0, count, NORMALISE_CHUNK):
        stop = min(start + NORMALISE_CHUNK, count)
        x[start:stop] = samples(start, stop)
    x.flush()
    del x
