"""The settings of params.yaml as typed sections: one frozen dataclass per section, and ``Params`` holding them all.

The defaults are the released (paper) settings. Reading params.yaml into these sections (profiles, per-dataset
settings, ``--set`` overrides) and checking every value is ``usdrl.settings.params``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names the key."""


# The allowed values of settings that more than one place names: params.yaml's checks (usdrl.settings.params
# ALLOWED), the CLI's choices and the code that applies them take them from here.
BACKBONE_NAMES = ("dste", "sttr")  # the registry usdrl.nn.encoders.BACKBONES has one backbone of each name
MAX_TEMPORAL_POSITIONS = 200  # the encoder's temporal position table: the longest clip (model.clip_frames)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # pretrain.precision, evaluation.precision (usdrl.training.runtime)
BUNDLE_PRECISIONS = ("auto", "fp32", "bf16")  # a model bundle applied by usdrl embed, recognize and detect run
FEATURE_NORMALIZATIONS = ("none", "standardize", "center_scale")  # probe.feature_normalization (usdrl.evaluate.linear)
ENSEMBLE_NORMALISATIONS = ("none", "softmax")  # ensemble.normalise (usdrl.evaluate.ensemble)
LOSS_VARIANT_NAMES = ("none", "vac_mg", "vac_xc", "all")  # ablation.loss_variants (usdrl.evaluate.ablation.LOSS_VARIANTS)


@dataclass(frozen=True)
class ModelSection:
    """The encoder's architecture: backbone, sizes, DSA gap, drop path, clip length.

    The encoder is built from this section and the dataset's skeleton layout (usdrl.nn.encoders.SkeletonModel)."""

    backbone: str = "dste"  # one of BACKBONE_NAMES
    hidden_size: int = 1024
    num_heads: int = 1
    num_layers: int = 2
    alpha: float = 0.5  # weight of CA against DSA in a DST layer
    gap: int = 4  # DenseShift keeps every gap-th position
    kernel_size: int = 1
    drop_path: float = 0.1
    clip_frames: int | str = 64  # "auto": from the training split (usdrl.training.settings_from_data)


@dataclass(frozen=True)
class AugmentSection:
    """How pretraining views are made: view count, crop range and length, corrupted joints."""

    views: int = 4
    crop_scale: tuple[float, float] = (0.1, 1.0)
    minimum_crop: int | str = 64  # "auto": from the training split (usdrl.training.settings_from_data)
    corrupted_joints: int = 15


@dataclass(frozen=True)
class LossSection:
    """The weights and constants of the pretraining loss (usdrl.nn.losses.mgfd_loss)."""

    form: str = "released"
    similarity_weight: float = 5.0
    variance_covariance_weight: float = 1.0
    cross_correlation_weight: float = 1e-3
    tau: float = 0.5
    variance_weight: float = 5.0
    off_diagonal_weight: float = 0.005
    invariance_weight: float = 1e-3
    epsilon: float = 1e-4


@dataclass(frozen=True)
class PretrainSection:
    """The pretraining run: schedule, optimiser, checkpoints, modality, device, precision, seed, logging."""

    epochs: int = 451
    batch_size: int = 356
    learning_rate: float = 5e-4
    weight_decay: float = 1e-5
    milestones: tuple[int, ...] = (351,)
    learning_rate_decay: float = 0.1
    # > 0: the schedule counted in optimiser steps, at least this many (usdrl.training.settings_from_data); 0: as given (released)
    minimum_steps: int = 0
    checkpoint_every: int = 50
    # last.pt (what --resume continues from) at most this often, in seconds of training; 0: after every epoch
    # (released). Numbered checkpoints and the last epoch are always saved
    last_checkpoint_seconds: float = 0.0
    modality: str = "joint"
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where supported, fp16 + scaler on other GPUs, fp32 on CPU
    workers: int = 4
    seed: int = 0
    log_every: int = 50  # steps between JSON log lines (and one at every epoch end)
    # > 0: after pretraining, the pretrained encoder against random init on held-out training subjects over this
    # many seeds (usdrl.evaluate.gain); 0: no check (released)
    gain_check_seeds: int = 0


@dataclass(frozen=True)
class ProbeSection:
    """The linear probe on frozen features: schedule, learning rates by dataset, validation, normalisation."""

    epochs: int = 160
    batch_size: int = 512
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (120, 140)
    learning_rate_decay: float = 0.1
    # looked up as backbone/dataset/benchmark, then dataset/benchmark, then default (SPEC.md 5)
    learning_rates: dict = field(default_factory=lambda: {
        "default": 0.006, "ntu60/xview": 0.03, "pku2/xsub": 0.01, "sttr/ntu60/xsub": 0.03})
    validation_fraction: float = 0.0  # > 0: hold out this part of the training subjects for model selection
    seed: int = 0
    # "none" (released): the raw features. Both others use the training split's statistics only and make the
    # learning rate independent of the features' scale and offset: "center_scale" subtracts the mean and divides
    # every dimension by one scale (the root mean variance), keeping their relative sizes; "standardize" scales
    # each dimension to unit variance (a BatchNorm without affine parameters), which also amplifies dimensions
    # that hardly vary (docs/benchmarks.md compares them).
    # One of FEATURE_NORMALIZATIONS, applied by usdrl.evaluate.linear.
    feature_normalization: str = "none"

    def learning_rate(self, backbone: str, dataset: str, benchmark: str) -> float:
        """The probe's learning rate for a run: ``learning_rates`` looked up as backbone/dataset/benchmark, then
        dataset/benchmark, then default."""
        for key in (f"{backbone}/{dataset}/{benchmark}", f"{dataset}/{benchmark}", "default"):
            if key in self.learning_rates:
                return float(self.learning_rates[key])
        raise ConfigError("probe.learning_rates needs a 'default' entry")


@dataclass(frozen=True)
class RetrievalSection:
    """kNN retrieval on frozen features: the k values and the chunk size of the similarity matrix."""

    k: tuple[int, ...] = (1,)
    chunk_size: int = 4096


@dataclass(frozen=True)
class FinetuneSection:
    """Semi-supervised fine-tuning: labelled fractions, seeds, schedule, layer decay and its augmentation."""

    fractions: tuple[float, ...] = (0.01, 0.1)
    seeds: tuple[int, ...] = (0,)
    epochs: int = 100
    warmup_epochs: int = 5
    batch_size: int = 24
    learning_rate: float = 5e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.8
    label_smoothing: float = 0.1
    crop_scale: tuple[float, float] = (0.5, 1.0)
    rotation_radians: float = 0.3


@dataclass(frozen=True)
class EnsembleSection:
    """usdrl ensemble's defaults: the score files are given in the order of ``streams``, ``weights`` one per stream."""

    streams: tuple[str, ...] = ("joint", "bone", "motion")
    weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    normalise: str = "none"


@dataclass(frozen=True)
class DetectionSection:
    """Dense action detection: the frame head's training, proposal rule and mAP thresholds."""

    epochs: int = 30
    minimum_steps: int = 0  # > 0: more epochs until training holds this many batches (usdrl.training.settings_from_data)
    batch_size: int = 512
    learning_rate: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 0.0
    stride: int = 32
    random_offset: bool = True
    proposal_rule: str = "threshold"
    threshold: float = 0.02
    smoothing_window: int = 20
    activity: float = 0.4
    thetas: tuple[float, ...] = (0.1, 0.3, 0.5)
    modality: str = "joint"
    seed: int = 0


@dataclass(frozen=True)
class AblationSection:
    """The alpha and loss-term ablations: the values tried and their shorter pretraining schedule."""

    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    loss_variants: tuple[str, ...] = LOSS_VARIANT_NAMES
    epochs: int = 451
    milestones: tuple[int, ...] = (351,)


@dataclass(frozen=True)
class PipelineSection:
    """What ``dvc repro`` runs; dvc.yaml expands its stages over these names."""

    runs: dict = field(default_factory=dict)  # name -> {dataset, benchmark, backbone, modality}
    ensembles: dict = field(default_factory=dict)  # name -> {dataset, benchmark, joint, bone, motion}
    semi_supervised: dict = field(default_factory=dict)  # run name -> its settings, as in runs
    detection: dict = field(default_factory=dict)  # name -> {run, dataset, benchmark}
    embeddings: dict = field(default_factory=dict)  # run name -> its settings, as in runs
    ablations: dict = field(default_factory=dict)  # name -> {dataset, benchmark}


@dataclass(frozen=True)
class EvaluationSection:
    """What every evaluation shares: device, precision, feature batch size and the feature cache."""

    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 256
    cache_dir: str = "cache/features"


@dataclass(frozen=True)
class SyntheticSection:
    """The synthetic demo dataset: its seed, number of subjects and replications."""

    seed: int = 0
    subjects: int = 12
    replications: int = 2


@dataclass(frozen=True)
class UTKinectSection:
    """Where the pipeline reads UTKinect-Action3D from (relative: from the project root)."""

    raw: str = "../shared/data/utkinect"  # the folder of joints_sSS_eEE.txt and actionLabel.txt
    labels: str = "original"  # original: actionLabel.txt; modified: actionLabel_modified.txt


@dataclass(frozen=True)
class DataSection:
    """Where prepared datasets live and how the demo datasets are made or read."""

    root: str = "data"
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    utkinect: UTKinectSection = field(default_factory=UTKinectSection)


@dataclass(frozen=True)
class Params:
    """Every setting of params.yaml, one section per concern; unknown keys in any section are an error."""

    profile: str = "paper"
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    loss: LossSection = field(default_factory=LossSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    probe: ProbeSection = field(default_factory=ProbeSection)
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    detection: DetectionSection = field(default_factory=DetectionSection)
    ablation: AblationSection = field(default_factory=AblationSection)
    pipeline: PipelineSection = field(default_factory=PipelineSection)
