"""The evaluation stage: a run's model on its internal test split and any external manifests.

The model, its preprocessing and its data columns come from the *run's* ``config.yaml`` (or an
exported model file); how sets are evaluated (``evaluation.*``) comes from the config of the
command that evaluates, so a run trained before a setting existed is evaluated with today's.
Outputs: ``<run>/eval/<set>/`` (see :func:`medimg.evaluation.assemble.evaluate_predictions`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from medimg.data import keys
from medimg.data.datamodule import ManifestDataModule
from medimg.data.errors import DataError
from medimg.data.leakage import check_leakage
from medimg.data.manifest import load_manifest
from medimg.data.preflight import check_cases
from medimg.data.targets import CovariateCoding, StudyColumns
from medimg.evaluation.assemble import EvalSet, Evaluation, evaluate_predictions
from medimg.evaluation.collect import SPLITS, card_thresholds, evaluate_datamodule
from medimg.evaluation.config import EvaluationConfig
from medimg.evaluation.predict import write_table
from medimg.pipeline.build import build_preprocessor, load_task, task_kind
from medimg.pipeline.data import attach_covariates, resolve_sources, study_columns
from medimg.tasks.base import BaseTask

log = logging.getLogger(__name__)


def class_names(task: DictConfig, kind: str) -> list[str]:
    """Evaluated class names: segmentation foreground, multi-class classes or multi-label labels."""
    k = int(task.get("num_classes", 1))
    names = [str(n) for n in (task.get("label_names") or [])]
    if kind == "segmentation":
        return names[1:] if len(names) == k else [str(i) for i in range(1, k)]
    if kind == "classification" and k >= 2:
        return names if len(names) == k else [str(i) for i in range(k)]
    return []


def evaluation_config(node: DictConfig | None, task: DictConfig, kind: str) -> EvaluationConfig:
    """Settings from an ``evaluation`` config node (defaults where absent) and the task's classes."""
    settings = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return EvaluationConfig(**settings, classes=class_names(task, kind))


def grid_spacing(cfg: DictConfig) -> list[float]:
    """Voxel size (mm) of the grid the task predicts on."""
    return [float(v) for v in cfg.preprocess.spacing]


def log_evaluation(loggers: Sequence, evaluation: Evaluation) -> None:
    """Evaluation tables and figures to every wandb logger of the run."""
    from lightning.pytorch.loggers import WandbLogger

    runs = [logger for logger in loggers if isinstance(logger, WandbLogger)]
    if not runs:
        return
    from medimg.evaluation.tracker import to_tracker, to_wandb

    payload = to_wandb(to_tracker(evaluation.results, evaluation.written))
    for logger in runs:
        logger.experiment.log(payload)


def evaluate_training(
    cfg: DictConfig,
    trainer: L.Trainer,
    task: BaseTask,
    datamodule: ManifestDataModule,
    run_dir: Path,
    loggers: Sequence = (),
) -> tuple[dict, dict]:
    """End of training: val (operating point), test and external sets → ``<run>/eval/``.

    Also writes ``<run>/predictions/<set>.csv`` and logs tables and figures to wandb.

    Returns:
        Flat headline numbers by set and the raw ``predict_step`` outputs by set.
    """
    kind = task_kind(cfg)
    names = ["test"] + [n for n in datamodule.set_names if n not in SPLITS]
    settings = evaluation_config(cfg.get("evaluation"), cfg.task, kind)
    evaluation, outputs = evaluate_datamodule(
        settings, kind, trainer, task, datamodule, names, run_dir, grid_spacing(cfg)
    )
    for name in names:
        write_table(evaluation.predictions[name], run_dir / "predictions" / f"{name}.csv")
    log_evaluation(loggers, evaluation)
    return evaluation.headline, {name: outputs[name] for name in names}


def set_name(path: Path, taken: Sequence[str] = ()) -> str:
    """A set's name from its manifest: the file name, or the folder's for ``manifest.csv``."""
    name = path.parent.name if path.stem.lower() == "manifest" and path.parent.name else path.stem
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def external_manifests(cfg: DictConfig) -> dict[str, Path]:
    """Set name → manifest from ``external`` (a path, a list, or name → path) and ``manifest``.

    Raises:
        ValueError: a set name clashes with an internal split.
    """
    given = cfg.get("external")
    if isinstance(given, (DictConfig, ListConfig)):
        given = OmegaConf.to_container(given, resolve=True)
    if isinstance(given, dict):
        items = [(str(k), v) for k, v in given.items()]
    else:
        items = [(None, p) for p in ([given] if isinstance(given, str) else given or [])]
    if cfg.get("manifest"):
        items.append((cfg.get("name"), cfg.manifest))
    out: dict[str, Path] = {}
    for name, path in items:
        name = name or set_name(Path(path), list(out))
        if name in SPLITS or name in out:
            raise ValueError(
                f"external set name {name!r} clashes with another set; name it: "
                f"+external.<name>={path}"
            )
        out[name] = Path(path)
    return out


def internal_manifest(run_cfg: DictConfig, run_dir: Path) -> Path:
    """The internal manifest a run was trained on (its own copy when it wrote one)."""
    written = run_dir / "manifests" / "internal.csv"
    if written.is_file():
        return written
    run_cfg.paths.output_dir = str(run_dir)  # a table source is written inside the run
    return resolve_sources(run_cfg)[0]


def run_split(
    run_cfg: DictConfig, run_dir: Path, kind: str, columns: StudyColumns
) -> tuple[pd.DataFrame | None, Path | None]:
    """The internal manifest with the ``split`` the run was trained with (its splits.csv)."""
    splits_path = run_dir / "splits.csv"
    if not splits_path.is_file():
        log.warning("%s: no splits.csv, so no internal test or validation split", run_dir)
        return None, None
    path = internal_manifest(run_cfg, run_dir)
    internal = load_manifest(path, kind, columns)
    splits = pd.read_csv(splits_path, dtype={keys.CASE_ID: str})
    missing = sorted(set(splits[keys.CASE_ID]) - set(internal[keys.CASE_ID].astype(str)))
    if missing:
        raise DataError(
            f"{splits_path}: {len(missing)} case(s) of the run's split are not in {path}, "
            f"e.g. {missing[0]!r}; the internal manifest changed since training"
        )
    split = internal.assign(**{keys.CASE_ID: internal[keys.CASE_ID].astype(str)})
    return split.merge(splits[[keys.CASE_ID, "split"]], on=keys.CASE_ID, how="inner"), path


def load_externals(
    cfg: DictConfig, kind: str, columns: StudyColumns, workers: int
) -> tuple[dict[str, pd.DataFrame], dict[str, Path]]:
    """Every external manifest, read and preflight-checked."""
    paths = external_manifests(cfg)
    frames = {}
    for name, path in paths.items():
        frames[name] = load_manifest(path, kind, columns)
        check_cases(frames[name], path, kind, workers=workers, repair_tilt=cfg.repair_tilt)
    return frames, paths


def prepare_frames(
    split: pd.DataFrame | None,
    externals: dict[str, pd.DataFrame],
    columns: StudyColumns,
    sources: dict[str, Path],
) -> pd.DataFrame:
    """Refuse external sets sharing patients with train/val; code covariates; the split frame."""
    if split is None:
        if columns.covariates:
            raise DataError("a run with covariates needs its splits.csv to code them")
        return pd.DataFrame(columns=[keys.CASE_ID, keys.PATIENT_ID, "split"])
    # Patients and studies only: hashing every training image would dominate the run time.
    fitted = {s: split[split["split"] == s] for s in ("train", "val")}
    check_leakage({**fitted, **externals}, content_hash=False)
    if columns.covariates:
        coding = CovariateCoding.fit(fitted["train"], columns.covariates, sources["internal"])
        attach_covariates({"internal": split, **externals}, coding, sources)
    return split


def evaluate_run(cfg: DictConfig) -> Path:
    """A run's checkpoint on its test split and ``external`` sets; returns the eval folder."""
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DataError(f"{run_dir}: not a medimg run directory (no config.yaml)")
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    checkpoint = run_dir / "checkpoints" / f"{cfg.checkpoint}.ckpt"
    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: checkpoint not found (checkpoint=best|last)")
    kind, columns, data = task_kind(run_cfg), study_columns(run_cfg), run_cfg.data
    settings = evaluation_config(cfg.evaluation, run_cfg.task, kind)
    workers = int(data.get("prepare_workers", 2))
    externals, paths = load_externals(cfg, kind, columns, workers)
    split, internal_path = run_split(run_cfg, run_dir, kind, columns)
    names = (["test"] if cfg.internal and split is not None else []) + list(externals)
    if not names:
        raise ValueError("nothing to evaluate: give +external=<manifest.csv>")
    split = prepare_frames(split, externals, columns, {"internal": internal_path, **paths})
    datamodule = ManifestDataModule(
        split,
        externals,
        task=kind,
        preprocessor=build_preprocessor(run_cfg),
        batch_size=cfg.batch_size,
        cache_dir=data.get("cache_dir"),
        cache_context={"preprocess": OmegaConf.to_container(run_cfg.preprocess, resolve=True)},
        prepare_workers=workers,
        repair_tilt=bool(data.get("repair_tilt", False)) or cfg.repair_tilt,
        spatial_dims=len(run_cfg.preprocess.size),
    )
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
    task = load_task(run_cfg, checkpoint)
    root, subdir = (Path(cfg.output_dir), "") if cfg.output_dir else (run_dir, "eval")
    evaluation, _ = evaluate_datamodule(
        settings, kind, trainer, task, datamodule, names, root, grid_spacing(run_cfg), subdir
    )
    return evaluation.folder


def evaluate(cfg: DictConfig) -> Path:
    """Dispatch on ``run_dir`` or ``model``; returns the folder holding the set folders."""
    if bool(cfg.run_dir) == bool(cfg.model):
        raise ValueError("give exactly one of run_dir=<run folder> or model=<exported model file>")
    return evaluate_run(cfg) if cfg.run_dir else evaluate_exported(cfg)


def evaluate_exported(cfg: DictConfig) -> Path:
    """An exported model file on ``external`` sets and, inside a run folder, its test split.

    The model runs on the raw images exactly as deployed. Inside a run folder
    (``<run>/export*/model.*``) the run's splits give the test split and the validation split
    that chooses the operating point; elsewhere the model card's threshold is used.
    """
    from medimg.evaluation.exported import predict_exported
    from medimg.export import load_model

    model_path = Path(cfg.model)
    if not model_path.is_file():
        raise DataError(f"{model_path}: exported model not found")
    model = load_model(model_path)
    kind, card, run_dir = model.task, model.card, model_path.parent.parent
    run_cfg = (
        OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    )
    columns = study_columns(run_cfg) if run_cfg is not None else StudyColumns()
    task = OmegaConf.create({k: card.get(k) for k in ("num_classes", "label_names")})
    settings = evaluation_config(cfg.evaluation, task, kind)
    externals, _ = load_externals(cfg, kind, columns, workers=2)
    split = run_split(run_cfg, run_dir, kind, columns)[0] if run_cfg is not None else None
    frames = dict(externals)
    if split is not None and cfg.internal:
        frames = {"test": split[split["split"] == "test"], **frames}
    if not frames:
        raise ValueError("nothing to evaluate: give +external=<manifest.csv>")

    def predict(frame: pd.DataFrame) -> EvalSet:
        return predict_exported(
            model, frame, settings.classes, settings.nsd_tolerance_mm, cfg.repair_tilt
        )

    sets = {name: predict(frame) for name, frame in frames.items()}
    val_frame = split[split["split"] == "val"] if split is not None else None
    val = predict(val_frame) if val_frame is not None and len(val_frame) else None
    fixed = card_thresholds(card, settings) if val is None and kind == "classification" else None
    root, subdir = (Path(cfg.output_dir), "") if cfg.output_dir else (run_dir, "eval-exported")
    evaluation = evaluate_predictions(
        kind,
        sets,
        root,
        settings,
        val=val,
        split_frame=split,
        thresholds=fixed,
        threshold_source="model card",
        subdir=subdir,
    )
    return evaluation.folder


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A per-case predictions CSV written by evaluation."""
    return pd.read_csv(path, dtype={keys.CASE_ID: str})
