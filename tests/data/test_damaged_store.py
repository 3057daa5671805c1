"""A damaged prepared dataset is one line naming the file, never a traceback: split indices outside the dataset,
a truncated x.npy, a sample without valid frames."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from usdrl.data.errors import DataError
from usdrl.data.store import load_split


def _copy(synthetic, tmp_path):
    return shutil.copytree(synthetic, tmp_path / "copy")


def test_split_indices_outside_the_dataset_are_refused(synthetic, tmp_path):
    root = _copy(synthetic, tmp_path)
    indices = np.load(root / "splits" / "xview_train.npy")
    indices[3] = 100_000
    np.save(root / "splits" / "xview_train.npy", indices)
    with pytest.raises(DataError, match=r"xview_train.npy: index 100000 is outside the \d+ samples"):
        load_split(root, "xview", "train")


def test_a_truncated_array_file_is_refused(synthetic, tmp_path):
    root = _copy(synthetic, tmp_path)
    data = (root / "x.npy").read_bytes()
    (root / "x.npy").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"x.npy cannot be read .*prepare it again"):
        load_split(root, "xview", "train")


def test_a_sample_without_valid_frames_is_refused(synthetic, tmp_path):
    root = _copy(synthetic, tmp_path)
    train = load_split(root, "xview", "train")
    frames = np.load(root / "num_frames.npy")
    frames[train.indices[1]] = 0
    np.save(root / "num_frames.npy", frames)
    with pytest.raises(DataError, match=rf"sample {train.indices[1]} has 0 valid frames"):
        load_split(root, "xview", "train")
