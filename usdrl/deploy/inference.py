"""A trained model on new skeletons: the bundle's own preprocessing, then embeddings, class probabilities and
detection proposals (what ``usdrl.load_model`` returns; ``usdrl embed | recognize | detect run``).

Clips go through the pipeline's own code: the training data's normalisation (``normalise_samples``: pad null
frames, subtract the centre joint, rotate the first-frame shoulders onto +x), then the deterministic downstream
input (``resize_whole`` to the clip length) and ``extract_features``, so a clip gives the features the pipeline
gives it. Streams are cut into non-overlapping windows of the clip length as the detection protocol cuts them,
normalised as a whole stream is (centre per frame, the rotation of the stream's first frame), a batch of windows
at a time: memory is bounded by the window, not the stream.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usdrl.data.errors import DataError
from usdrl.data.import_common import normalise_samples, position_channels
from usdrl.data.normalize import normalize_batch
from usdrl.data.pkummd import resample_clip
from usdrl.data.store import SkeletonSplit
from usdrl.deploy.inputs import InputClips, _in_memory_split, clips_from_array, read_input
from usdrl.evaluate.detector import DenseDetector, proposals_of, window_probabilities
from usdrl.evaluate.features import downstream_batches, extract_features
from usdrl.nn.encoders import SkeletonModel
from usdrl.settings.sections import DetectionSection
from usdrl.skeleton import SkeletonLayout
from usdrl.training.runtime import autocast_context, autocast_settings

Skeletons = str | Path | np.ndarray | InputClips


def limit_frames(x: np.ndarray, num_frames: np.ndarray, max_frames: int | None, subsample: bool) -> tuple[np.ndarray, np.ndarray]:
    """Clips longer than the training data's stored length: first ``max_frames`` kept (NTU), or subsampled
    uniformly (PKU-MMD II, UTKinect: ``resample_clip``); x (N, C, T, V, M) -> (N, C, min(T, max), V, M)."""
    if not max_frames or x.shape[2] <= max_frames:
        return x, num_frames
    limited = np.zeros((*x.shape[:2], max_frames, *x.shape[3:]), dtype=np.float32)
    for index, length in enumerate(num_frames):
        sample = x[index, :, :int(length)]
        limited[index] = resample_clip(sample if subsample else sample[:, :max_frames], max_frames)
    return limited, np.minimum(num_frames, max_frames)


STREAM_FACTOR = 8  # a "clip" this many times the model's clip length is most likely a whole recording


def warn_if_streams(split: SkeletonSplit, max_frames: int | None, clip_frames: int) -> int:
    """How many clips are far longer than the model's: longer than the training data's ``max_frames`` (their
    later frames are dropped or subsampled) or than ``STREAM_FACTOR`` clip lengths; a warning naming them and
    ``usdrl detect run`` when there are any."""
    lengths = np.asarray(split.num_frames)
    limit = min(max_frames or np.inf, STREAM_FACTOR * clip_frames)
    long = np.flatnonzero(lengths > limit)
    if len(long):
        names = ", ".join(f"{split.names[i]} ({int(lengths[i])} frames)" for i in long[:3])
        more = f" and {len(long) - 3} more" if len(long) > 3 else ""
        warnings.warn(f"{len(long)} of {len(lengths)} clips are far longer than the model's {clip_frames} frames "
                      f"(more than {int(limit)}): {names}{more}. Each is read as one action; for a recording of "
                      f"several actions use usdrl detect run, or cut it into clips", stacklevel=3)
    return len(long)


def preprocess_clips(clips: InputClips, preprocessing: dict[str, Any], layout: SkeletonLayout) -> SkeletonSplit:
    """The split of clips in the training data's form: a prepared dataset as stored (its normalisation must be
    the model's), raw skeletons limited in length and normalised as the training data was."""
    if clips.preprocessed:
        if clips.normalised != preprocessing["normalise"]:
            state = "normalised" if clips.normalised else "not normalised"
            wanted = "normalised" if preprocessing["normalise"] else "stored as given"
            raise DataError(f"{clips.split.root}: a prepared dataset {state}, but the model was trained on data "
                            f"{wanted}; pass the raw skeletons (a .npz, .skeleton, .txt or .json file) instead")
        return clips.split
    split = clips.split
    x, frames = limit_frames(np.asarray(split.x), split.num_frames, preprocessing.get("max_frames"),
                             preprocessing.get("longer_sequences") == "subsample")
    if preprocessing["normalise"]:
        x = normalise_samples(x, frames, layout)
    return _in_memory_split(x, frames, split.names, str(split.root), layout)


def normalise_window(window: np.ndarray, first_frame: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """Frames (C, w, V, M) of a stream normalised as the whole stream is (``normalize_batch`` without padding):
    the centre joint subtracted per frame, the rotation taken from the stream's first frame (C, 1, V, M)."""
    joined = np.concatenate([first_frame, window], axis=1)[None].astype(np.float32)  # (1, C, 1 + w, V, M)
    channels = position_channels(layout)
    joined[:, :channels] = normalize_batch(joined[:, :channels], layout.center_joint, layout.shoulder_pair,
                                           pad_frames=False)
    return joined[0, :, 1:]


def stream_reader(split: SkeletonSplit, position: int, window: int, normalise: bool,
                  layout: SkeletonLayout) -> tuple[int, Callable[[int], np.ndarray]]:
    """(length, windows): ``windows(start)`` reads (C, window, V, M) of sequence ``position`` from ``start``, zero
    past the end, from the memory-mapped file when there is one; nothing else of the stream is held."""
    if split.untrimmed:
        row = split.indices[position]
        begin, length = int(split.offsets[row]), int(split.offsets[row + 1] - split.offsets[row])
        read = lambda start, stop: np.asarray(split.frames[begin + start:begin + stop]).transpose(1, 0, 2, 3)  # noqa: E731
    else:
        row, length = split.indices[position], int(split.num_frames[position])
        read = lambda start, stop: np.asarray(split.x[row, :, start:stop])  # noqa: E731
    first_frame = read(0, 1)

    def windows(start: int) -> np.ndarray:
        piece = read(start, min(start + window, length))
        if normalise:
            piece = normalise_window(piece, first_frame, layout)
        out = np.zeros((piece.shape[0], window, *piece.shape[2:]), dtype=np.float32)
        out[:, :piece.shape[1]] = piece
        return out

    return length, windows


def detection_settings_of(recorded: dict[str, Any]) -> DetectionSection:
    """The proposal settings recorded with a detector (unknown keys of a newer version left out)."""
    names = {field.name for field in fields(DetectionSection)}
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in recorded.items() if key in names}
    return DetectionSection(**values)


@dataclass
class TrainedModel:
    """A model bundle ready for inference (``usdrl.load_model``). Skeletons are a path (any kind of
    ``usdrl.deploy.inputs``), an array (N, C, T, V, M) of raw coordinates, or ``InputClips``."""

    path: Path
    description: dict[str, Any]
    layout: SkeletonLayout
    encoder: SkeletonModel
    device: torch.device
    classifier: torch.nn.Linear | None = None
    feature_mean: torch.Tensor | None = None  # (2H,) the probe's training statistics
    feature_scale: torch.Tensor | None = None
    detector: DenseDetector | None = None
    precision: str = "auto"  # as the pipeline's evaluation.precision: autocast as there (fp32, bf16, auto)

    @property
    def class_names(self) -> list[str] | None:
        """The classifier's class names, None without a classifier."""
        return self.description.get("class_names")

    @property
    def modality(self) -> str:
        """The stream the encoder was trained on (joint, bone or motion)."""
        return self.description["modality"]

    def read(self, skeletons: Skeletons, split: str | None = None) -> InputClips:
        """``skeletons`` (a path, an array or clips already read) as input clips of the model's layout; input of
        another layout is mapped to it by joint names, and the mapping's one line is printed on stderr."""
        if isinstance(skeletons, InputClips):
            return skeletons
        if isinstance(skeletons, np.ndarray):
            return clips_from_array(skeletons, self.layout)
        clips = read_input(skeletons, self.layout, split)
        if clips.mapping is not None:
            print(clips.mapping.summary_line(), file=sys.stderr)
        return clips

    def clips(self, skeletons: Skeletons, split: str | None = None) -> SkeletonSplit:
        """The clips of ``skeletons`` in the training data's form (a DataError for streams; a warning for clips
        far longer than the model's, ``warn_if_streams``)."""
        clips = self.read(skeletons, split)
        if clips.untrimmed:
            raise DataError(f"{clips.split.root} holds untrimmed streams; detect actions in them (usdrl detect run) "
                            f"or pass trimmed clips")
        warn_if_streams(clips.split, self.description["preprocessing"].get("max_frames"),
                        self.encoder.config.clip_frames)
        return preprocess_clips(clips, self.description["preprocessing"], self.layout)

    def embed(self, skeletons: Skeletons, dense: bool = False, split: str | None = None,
              batch_size: int = 256) -> dict[str, Any]:
        """{"names", "features" (N, 2H)} and with ``dense`` "dense" (N, T, H), the temporal branch per frame."""
        clips = self.clips(skeletons, split)
        features = extract_features(self.encoder, clips, self.modality, self.device, batch_size, self.precision)
        result = {"names": list(clips.names), "features": features}
        if dense:
            result["dense"] = self.dense_features(clips, batch_size)
        return result

    @torch.no_grad()
    def dense_features(self, clips: SkeletonSplit, batch_size: int = 256) -> np.ndarray:
        """(N, T, H) float32: y_t of the encoder for each of the clip's T frames."""
        config = self.encoder.config
        dtype, _ = autocast_settings(self.device, self.precision)
        dense = np.zeros((len(clips), config.clip_frames, config.hidden_size), dtype=np.float32)
        for positions, x in downstream_batches(clips, batch_size, config.clip_frames, self.device):
            with autocast_context(self.device, dtype):
                dense[positions] = self.encoder.encode(x, self.modality)["dense_t"].float().cpu().numpy()
        return dense

    @torch.no_grad()
    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, classes) softmax of the probe head on features (N, 2H), normalised as in the probe's training."""
        if self.classifier is None:
            raise DataError(f"{self.path} holds no classifier (exported without --probe); embed instead, or export "
                            f"the model again with --probe results/linear/<run>.json")
        x = (torch.as_tensor(features, dtype=torch.float32) - self.feature_mean) / self.feature_scale
        return torch.softmax(self.classifier(x), dim=-1).numpy()

    def recognize(self, skeletons: Skeletons, top_k: int = 5, split: str | None = None,
                  batch_size: int = 256) -> list[dict[str, Any]]:
        """Per clip {"name", "top": [{"class", "index", "probability"}] best first}."""
        embedded = self.embed(skeletons, split=split, batch_size=batch_size)
        probabilities = self.probabilities(embedded["features"])
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :max(1, min(top_k, probabilities.shape[1]))]
        return [{"name": name, "top": [{"class": self.class_names[i], "index": int(i),
                                        "probability": float(row[i])} for i in chosen]}
                for name, row, chosen in zip(embedded["names"], probabilities, order)]

    def detect(self, stream: Skeletons, split: str | None = None, batch_size: int = 16) -> list[dict[str, Any]]:
        """Per stream {"video", "frames", "probabilities" (L, classes + 1), "proposals" [(label 1-based, start,
        end exclusive, score, video)]}, with the proposal rule recorded with the detector."""
        if self.detector is None:
            raise DataError(f"{self.path} holds no detector (exported without --detector); export the model again "
                            f"with --detector results/detection/<run>")
        recorded = self.description["heads"]["detector"]
        settings = detection_settings_of(recorded["settings"])
        clips = self.read(stream, split)
        normalise = not clips.preprocessed and recorded["preprocessing"]["normalise"]
        if clips.preprocessed and clips.normalised != recorded["preprocessing"]["normalise"]:
            raise DataError(f"{clips.split.root}: its normalisation differs from the detector's training data; pass "
                            f"the raw skeletons instead")
        window = self.encoder.config.clip_frames
        results = []
        for position in range(len(clips.split)):
            length, windows = stream_reader(clips.split, position, window, normalise, self.layout)
            probabilities = window_probabilities(self.detector, windows, length, window, settings.modality,
                                                 self.device, self.precision, batch_size)
            video = clips.split.names[position]
            results.append({"video": video, "frames": length, "probabilities": probabilities,
                            "proposals": proposals_of(probabilities, video, settings)})
        return results
