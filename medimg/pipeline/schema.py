"""Typed schemas for the Hydra configs, so a wrong key or type fails before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataSchema:
    source: Any = MISSING
    batch_size: int = 8
    num_workers: int = 0
    cache: bool = True
    cache_dir: str | None = None
    prepare_workers: int = 2
    check_content_leakage: bool = True
    repair_tilt: bool = False
    fold: int | None = None
    n_folds: int = 5
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    # The study's columns: target (a list for multi-label), label map, clinical covariates.
    label_column: Any = "label"
    mask_column: str = "mask"
    covariates: list[str] = field(default_factory=list)
    balanced_sampling: bool = False


@dataclass
class PreprocessSchema:
    spacing: list[float] = field(default_factory=lambda: [4.0, 4.0, 4.0])
    size: list[int] = field(default_factory=lambda: [48, 48, 48])
    window: Any = None
    fill_value: float = -1024.0
    # Intensity normalisation: "window" (fixed, CT) or per image "minmax" | "percentile" |
    # "zscore" (radiographs); see medimg.data.preprocess.PreprocessConfig.
    normalise: str = "window"
    percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])


@dataclass
class AugmentationSchema:
    name: str = "light"
    flip_prob: float = 0.5
    noise_std: float = 0.02
    intensity_prob: float = 0.3
    # medium/strong presets (0 leaves a transform out, so light stays what it was).
    prob_spatial: float = 0.0
    rotate_deg: float = 0.0
    scale: float = 0.0
    gamma: float = 0.0
    smooth_sigma: float = 0.0
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05


@dataclass
class TaskSchema:
    _target_: str = MISSING
    num_classes: int = 1
    label_names: list[str] = field(default_factory=list)
    monitor: str = "val/loss"
    # Direction of `monitor` for checkpointing, early stopping and plateau schedules.
    monitor_mode: str = "max"
    multilabel: bool = False
    # e.g. {name: focal, gamma: 2.0} or {name: ce, class_weights: [1, 3]}; {name: dicefocal}.
    loss: Any = None
    # Segmentation: sliding-window inference {roi_size, sw_batch_size, overlap, mode}.
    inference: Any = None
    tta_flips: bool = False
    keep_largest: Any = False
    compile: bool = False


@dataclass
class TrainerSchema:
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 10
    deterministic: bool = False
    log_every_n_steps: int = 5
    num_sanity_val_steps: int = 0
    fast_dev_run: Any = False
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    enable_progress_bar: bool = True
    # Multi-process training (configs/trainer/ddp.yaml); the defaults are Lightning's.
    num_nodes: int = 1
    use_distributed_sampler: bool = True
    sync_batchnorm: bool = False


@dataclass
class InitSchema:
    # A user's weight file (state_dict or Lightning checkpoint), read with weights_only=True.
    weights: str | None = None
    strict: bool = True
    freeze_encoder: bool = False
    head: Any = None
    # Fusion networks: train the image-only reference first and start the image encoder from it.
    from_image_only: bool = False


@dataclass
class PrivacySchema:
    # Run-folder tables (splits.csv) name patients by keyed pseudonyms (medimg.privacy);
    # true writes the manifest's patient ids as they are.
    keep_patient_ids: bool = False
    # The pseudonyms' secret key, outside every run folder (created on first use, mode 0600).
    key_file: str = "~/.medimg/pseudonym.key"
    # Optional CSV of pseudonym -> patient_id for the data owner (refused inside the run folder).
    mapping_file: str | None = None


@dataclass
class ReferenceSchema:
    # With data.covariates: also fit a covariates-only model and an image-only network.
    covariates_only: bool = True
    image_only: bool = True


@dataclass
class ExportSchema:
    enabled: bool = True
    parity_atol: float = 1e-4
    # torchscript (default) | torch_export (.pt2) | onnx; see medimg.export.model_file.
    format: str = "torchscript"
    # Segmentation parity: Dice of exported vs framework label maps on the input grid.
    parity_min_dice: float = 0.99
    intended_use: str | None = None
    # Decision threshold reported for binary classification (null: 0.5, marked uncalibrated).
    operating_point: float | None = None
    # {label name: {type: {scheme, value, meaning}, category: {...}}} for DICOM results.
    label_codes: Any = None


@dataclass
class EvaluationSchema:
    # See configs/evaluation/default.yaml and medimg.evaluation.config.EvaluationConfig.
    n_resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    threshold_method: str = "youden"
    target_sensitivity: float = 0.9
    attributes: list[str] = field(
        default_factory=lambda: ["sex", "age_band", "site", "manufacturer"]
    )
    age_bands: list[int] = field(default_factory=lambda: [40, 60])
    min_cases: int = 30
    min_positives: int = 10
    ece_bins: int = 10
    nsd_tolerance_mm: float = 2.0


@dataclass
class PathsSchema:
    root_dir: str = MISSING
    data_dir: str = MISSING
    cache_dir: str = MISSING
    runs_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainSchema:
    data: DataSchema = field(default_factory=DataSchema)
    preprocess: PreprocessSchema = field(default_factory=PreprocessSchema)
    augmentation: AugmentationSchema = field(default_factory=AugmentationSchema)
    net: Any = MISSING
    task: TaskSchema = field(default_factory=TaskSchema)
    optimizer: Any = MISSING
    scheduler: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    callbacks: Any = None
    logger: Any = None
    paths: PathsSchema = field(default_factory=PathsSchema)
    export: ExportSchema = field(default_factory=ExportSchema)
    init: InitSchema = field(default_factory=InitSchema)
    reference: ReferenceSchema = field(default_factory=ReferenceSchema)
    evaluation: EvaluationSchema = field(default_factory=EvaluationSchema)
    privacy: PrivacySchema = field(default_factory=PrivacySchema)
    experiment_name: str = "cls3d"
    seed: int = 42
    # fit: train, evaluate, export. validate: only the validation metrics of ckpt_path.
    stage: str = "fit"
    ckpt_path: str | None = None


@dataclass
class EvaluateSchema:
    run_dir: str | None = None
    model: str | None = None
    # The run's internal test split (from its splits.csv), when one is found.
    internal: bool = True
    # External sets: +external=<csv>, +external=[<csv>, ...] or external.<name>=<csv>.
    external: Any = None
    # One more set, named `name` (default: from the file name); kept for older commands.
    manifest: str | None = None
    name: str | None = None
    checkpoint: str = "best"
    batch_size: int = 8
    # Root of the set folders (default <run>/eval, or <run>/eval-exported for model=).
    output_dir: str | None = None
    repair_tilt: bool = False
    evaluation: EvaluationSchema = field(default_factory=EvaluationSchema)


def register_schemas() -> None:
    """Make ``train_schema`` and ``evaluate_schema`` available to the configs' defaults lists
    (and register the resolvers the configs use, e.g. ``${len:...}``)."""
    from medimg.pipeline.resolvers import register_resolvers

    register_resolvers()
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainSchema)
    store.store(name="evaluate_schema", node=EvaluateSchema)
