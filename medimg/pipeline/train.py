"""The training stage: fit, keep best and last, evaluate test and external sets, export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from medimg.data import keys
from medimg.data.datamodule import ManifestDataModule
from medimg.evaluation.assemble import card_operating_point
from medimg.files import write_atomic, write_json
from medimg.pipeline import provenance, reference
from medimg.pipeline.build import build_task, load_task, task_kind
from medimg.pipeline.data import build_datamodule, data_summary
from medimg.pipeline.evaluate import evaluate_training
from medimg.pipeline.export import export_run
from medimg.privacy import pseudonyms
from medimg.tasks.base import BaseTask
from medimg.tracking import finish_loggers

log = logging.getLogger(__name__)
# Keys left out of what trackers receive: local paths and data locations.
PRIVATE_KEYS = ("paths", "data.source", "data.cache_dir", "ckpt_path", "privacy")


def _instantiate_all(node: DictConfig | None) -> list:
    if not node:
        return []
    return [
        instantiate(child) for child in node.values() if child is not None and "_target_" in child
    ]


def _tracked_config(cfg: DictConfig) -> dict:
    """The resolved config without local paths, for experiment trackers."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for dotted in PRIVATE_KEYS:
        *parents, leaf = dotted.split(".")
        node = container
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return container


def write_run_header(cfg: DictConfig, run_dir: Path) -> None:
    """Resolved config and provenance, written before anything else happens."""
    yaml_text = OmegaConf.to_yaml(cfg, resolve=True)
    write_atomic(run_dir / "config.yaml", lambda tmp: tmp.write_text(yaml_text))
    write_json(
        run_dir / "run_info.json",
        {
            "experiment": cfg.experiment_name,
            "seed": cfg.seed,
            "resumed_from": cfg.ckpt_path,
            "code_version": provenance.code_version(),
            "software": provenance.software_versions(),
            "config_sha256": provenance.config_hash(cfg),
        },
    )


def write_splits(cfg: DictConfig, split: pd.DataFrame, run_dir: Path) -> Path:
    """``splits.csv``: case, patient (a keyed pseudonym unless ``privacy.keep_patient_ids``),
    split and fold; with ``privacy.mapping_file``, the pseudonym mapping outside the run."""
    table = split[[c for c in ("case_id", "patient_id", "split", "fold") if c in split]].copy()
    privacy = cfg.privacy
    if "patient_id" in table and not privacy.keep_patient_ids:
        key = pseudonyms.read_or_create_key(privacy.key_file)
        if privacy.mapping_file:
            pseudonyms.write_mapping(privacy.mapping_file, table["patient_id"], key, run_dir)
        table["patient_id"] = pseudonyms.pseudonymise(table["patient_id"], key)
    return write_atomic(run_dir / "splits.csv", lambda tmp: table.to_csv(tmp, index=False))


def _best_task(cfg: DictConfig, trainer: L.Trainer, task: BaseTask) -> tuple[BaseTask, str | None]:
    """The best checkpoint's task (reloaded with weights_only), or the in-memory one."""
    checkpoint = next(
        (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if not best:
        log.warning(
            "no best checkpoint was saved (e.g. fast_dev_run); evaluating the final weights"
        )
        return task, None
    return load_task(cfg, best), best


def evaluate_sets(
    cfg: DictConfig,
    trainer: L.Trainer,
    task: BaseTask,
    datamodule: ManifestDataModule,
    run_dir: Path,
    loggers: list | None = None,
) -> tuple[dict, dict]:
    """Predict val (operating point), test and external sets and evaluate them.

    Writes ``<run>/eval/<set>/`` (``predictions.csv``, ``metrics.json`` with intervals and
    subgroups, ``report.html``, PNG figures), ``<run>/eval/results.json`` and
    ``<run>/predictions/<set>.csv``; logs tables and figures to the wandb loggers among
    ``loggers`` (default: the trainer's).

    Returns:
        Flat headline numbers by set (for ``metrics.json``) and raw outputs by set.
    """
    loggers = trainer.loggers if loggers is None else loggers
    return evaluate_training(cfg, trainer, task, datamodule, run_dir, loggers)


def training_targets(datamodule: ManifestDataModule) -> tuple[Tensor | None, Tensor | None]:
    """The training split's targets and covariates (for target and covariate scaling)."""
    frame = datamodule.frames["train"]
    labels = covariates = None
    if keys.LABEL in frame:
        labels = torch.as_tensor(np.asarray(frame[keys.LABEL].tolist(), dtype=np.float32))
    if keys.COVARIATES in frame:
        covariates = torch.as_tensor(np.stack(frame[keys.COVARIATES].tolist()))
    return labels, covariates


def reference_metrics(
    cfg: DictConfig,
    datamodule: ManifestDataModule,
    split: pd.DataFrame,
    run_dir: Path,
    image_only: dict | None = None,
) -> dict:
    """Covariates-only and image-only references for a run with clinical covariates.

    ``image_only``: the image-only reference's metrics when it was trained already (before the
    main model, for ``init.from_image_only``).
    """
    if not cfg.data.covariates:
        return {}
    out = {}
    kind = task_kind(cfg)
    external = {n: f for n, f in datamodule.frames.items() if n not in ("train", "val", "test")}
    if cfg.reference.covariates_only:
        multilabel = bool(cfg.task.get("multilabel", False))
        out["covariates_only"] = reference.covariates_only(
            kind, split, external, multilabel, out_dir=run_dir / "reference_covariates_only"
        )
        log.info("covariates-only reference: %s", out["covariates_only"])
    if cfg.reference.image_only:
        out["image_only"] = image_only or reference.image_only(cfg, run_dir)[0]
        log.info("image-only reference: %s", out["image_only"])
    folders = {name: run_dir / f"reference_{name}" for name in out}
    comparison = reference.compare_with_references(run_dir, folders)
    if comparison:
        out["comparison"] = comparison
        log.info("this model minus each reference (AUROC, paired DeLong): %s", comparison)
    return out


def _single_process(cfg: DictConfig, trainer: L.Trainer) -> L.Trainer:
    """A trainer for rank 0's predictions after a multi-process fit (no collectives)."""
    if trainer.world_size == 1:
        return trainer
    return L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        enable_progress_bar=False,
    )


def validate(cfg: DictConfig) -> Path:
    """``stage=validate``: the validation metrics of ``ckpt_path`` (or of the seeded initial
    weights), on as many processes as the trainer config asks for; rank 0 writes
    ``validate.json``. The numbers must not depend on the process count."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_header(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, _ = build_datamodule(cfg)
    task = load_task(cfg, cfg.ckpt_path) if cfg.ckpt_path else build_task(cfg)
    task.prepare_from_training(*training_targets(datamodule))
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer), logger=False, default_root_dir=str(run_dir)
    )
    results = trainer.validate(task, datamodule=datamodule)
    if trainer.is_global_zero:
        write_json(
            run_dir / "validate.json",
            {
                "processes": trainer.world_size,
                "n_val_cases": len(datamodule.frames["val"]),
                "metrics": {k: float(v) for k, v in results[0].items()},
            },
        )
    return run_dir


def train(cfg: DictConfig) -> Path:
    """Run the whole training stage for a composed config; returns the run directory."""
    return fit(cfg)[0]


def fit(cfg: DictConfig) -> tuple[Path, BaseTask | None]:
    """:func:`train`, also returning the selected (best) task; None on DDP ranks other than 0."""
    reference.check_image_encoder_init(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_header(cfg, run_dir)
    image_only = None
    if cfg.init.get("from_image_only", False):
        # Two-stage fusion: the image-only reference is trained first (seeded like any run) and
        # its image network becomes the fusion network's starting encoder.
        image_only, weights = reference.image_only(cfg, run_dir)
        cfg = reference.with_image_encoder(cfg, weights)
    L.seed_everything(cfg.seed, workers=True)

    datamodule, split = build_datamodule(cfg)
    write_splits(cfg, split, run_dir)
    task = build_task(cfg)
    task.prepare_from_training(*training_targets(datamodule))
    loggers = _instantiate_all(cfg.logger)
    for logger in loggers:
        logger.log_hyperparams(_tracked_config(cfg))
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer),
        logger=loggers or False,
        callbacks=_instantiate_all(cfg.callbacks),
        default_root_dir=str(run_dir),
    )
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        if not trainer.is_global_zero:
            return run_dir, None
        best_task, best_path = _best_task(cfg, trainer, task)
        metrics, outputs = evaluate_sets(
            cfg, _single_process(cfg, trainer), best_task, datamodule, run_dir, loggers=loggers
        )
        results = {
            "best_checkpoint": Path(best_path).name if best_path else None,
            **metrics,
            "evaluation": "eval/results.json",
        }
        references = reference_metrics(cfg, datamodule, split, run_dir, image_only)
        if references:
            results["references"] = references
        write_json(run_dir / "metrics.json", results)
        for logger in loggers:
            logger.log_metrics(
                {
                    f"{name}/{k}": v
                    for name, m in metrics.items()
                    for k, v in m.items()
                    if isinstance(v, (int, float))
                }
            )
        if cfg.export.enabled:
            card_data = {
                "training_data": data_summary(split[split["split"] == "train"]),
                "internal_test_data": data_summary(split[split["split"] == "test"]),
                "evaluation_report": "eval/test/report.html",
            }
            evaluation = run_dir / "eval" / "results.json"
            if cfg.export.get("operating_point") is None and evaluation.is_file():
                # The threshold chosen on the validation split, not a default 0.5.
                card_data["operating_point"] = card_operating_point(
                    json.loads(evaluation.read_text())
                )
            export_run(cfg, best_task, datamodule, outputs["test"], metrics, card_data, run_dir)
    finally:
        finish_loggers(loggers)
    torch.set_grad_enabled(True)
    return run_dir, best_task
