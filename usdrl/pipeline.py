"""Names and places shared by the notebooks and dvc.yaml: dataset folders, run names, result paths,
and the check that data is prepared (with the command that prepares it)."""

from __future__ import annotations

from pathlib import Path

from usdrl.config import Params
from usdrl.data.errors import DataError
from usdrl.data.store import MANIFEST_NAME

DEFAULT_BENCHMARK = {"synthetic": "xview", "ntu60": "xsub", "ntu120": "xsub", "pku1": "xsub", "pku2": "xsub"}
PREPARE_COMMANDS = {
    "synthetic": "usdrl prepare synthetic --out {root}/synthetic",
    "ntu60": "usdrl prepare ntu60 --raw <nturgb+d_skeletons/> --out {root}/ntu60 --missing NTU_RGBD_samples_with_missing_skeletons.txt",
    "ntu120": "usdrl prepare ntu120 --raw <skeletons/> --out {root}/ntu120 --missing NTU_RGBD120_samples_with_missing_skeletons.txt",
    "pku1": "usdrl prepare pku1 --raw <PKU_Skeleton_Renew/> --labels <Train_Label_PKU_final/> --splits <Split/> --out {root}/pku1",
    "pku2": "usdrl prepare pku2 --raw <skeleton/> --labels <label/> --splits <split/> --out {root}/pku2",
}


def benchmark_or_default(dataset: str, benchmark: str | None) -> str:
    if benchmark:
        return benchmark
    if dataset not in DEFAULT_BENCHMARK:
        raise DataError(f"no default benchmark for dataset {dataset!r}; pass benchmark=...")
    return DEFAULT_BENCHMARK[dataset]


def dataset_root(params: Params, dataset: str, untrimmed: bool = False) -> Path:
    """Folder of a prepared dataset; the synthetic data has trimmed ``actions`` and untrimmed ``streams``."""
    root = Path(params.data.root)
    if dataset == "synthetic":
        return root / "synthetic" / ("streams" if untrimmed else "actions")
    return root / dataset


def require_prepared(params: Params, dataset: str, untrimmed: bool = False) -> Path:
    """The dataset folder, or a DataError naming the command that prepares it."""
    path = dataset_root(params, dataset, untrimmed)
    if not (path / MANIFEST_NAME).is_file():
        command = PREPARE_COMMANDS.get(dataset, "usdrl prepare <dataset> --out {root}/<dataset>").format(root=params.data.root)
        raise DataError(f"dataset {dataset!r} is not prepared ({path / MANIFEST_NAME} is missing). Prepare it with:\n"
                        f"    {command}\nor run: dvc repro (the synthetic data is prepared by the pipeline)")
    return path


def run_name(dataset: str, benchmark: str, backbone: str, modality: str) -> str:
    return f"{dataset}_{benchmark}_{backbone}_{modality}"


def run_checkpoint(name: str, runs_root: str | Path = "runs") -> Path:
    return Path(runs_root) / name / "checkpoints" / "last.pt"


def require_checkpoint(dataset: str, benchmark: str, backbone: str, modality: str, runs_root: str | Path = "runs") -> Path:
    """The last checkpoint of a pretraining run, or an error naming the notebook that makes it."""
    path = run_checkpoint(run_name(dataset, benchmark, backbone, modality), runs_root)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pretrain first, e.g. papermill notebooks/02_pretrain.ipynb "
                                f"out.ipynb -p dataset {dataset} -p benchmark {benchmark} -p backbone {backbone} "
                                f"-p modality {modality} (or dvc repro)")
    return path
