"""The names and version of the canonical on-disk form of a dataset (the files are described in ``usdrl.data.store``)."""

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS_FOLDER = "splits"
# Every file DatasetWriter may create in a dataset folder (beside SPLITS_FOLDER/*.npy): DatasetWriter.path refuses
# other names, and a folder holding anything else is not ours and is never replaced.
DATASET_FILES = frozenset({MANIFEST_NAME, "x.npy", "num_frames.npy", "frames.npy", "offsets.npy", "frame_labels.npy",
                           "instances.npy", "label.npy", "names.json", "ids.npz", "sources.json", "clip_ranges.npy",
                           "frame_ids.npy"})
DATASET_KINDS = ("trimmed", "untrimmed")
PREPARED_ROOT_FOLDERS = ("actions", "streams")  # prepare synthetic / utkinect --out X write X/actions and X/streams
