"""The evaluation stage: a run (rebuilt from its own config) or an exported model on a manifest."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from medimg.data import keys
from medimg.data.datamodule import ManifestDataModule
from medimg.data.errors import DataError
from medimg.data.loading import load_transform, raw_volume
from medimg.data.manifest import load_manifest
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.evaluation.predict import summarise, write_table
from medimg.export.torchscript import read_card
from medimg.files import write_json
from medimg.pipeline.build import build_preprocessor, load_task, task_kind
from medimg.tasks.base import BaseTask

log = logging.getLogger(__name__)


def evaluate_loader(
    trainer: L.Trainer, task: BaseTask, loader: DataLoader, kind: str, csv_path: Path
) -> tuple[dict, list[dict]]:
    """Predict ``loader`` with ``task``; write the per-case CSV; return metrics and raw outputs."""
    outputs = trainer.predict(task, dataloaders=loader)
    table, metrics = summarise(kind, outputs)
    write_table(table, csv_path)
    return metrics, outputs


def _set_name(cfg: DictConfig) -> str:
    return cfg.name or Path(cfg.manifest).stem


def evaluate_run(cfg: DictConfig) -> Path:
    """Evaluate a run's checkpoint on ``cfg.manifest``; outputs go to ``<run>/eval/<name>/``."""
    run_dir = Path(cfg.run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{run_dir}: not a medimg run directory (no config.yaml)")
    run_cfg = OmegaConf.load(config_path)
    checkpoint = run_dir / "checkpoints" / f"{cfg.checkpoint}.ckpt"
    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: checkpoint not found (checkpoint=best|last)")
    kind = task_kind(run_cfg)
    frame = load_manifest(cfg.manifest, kind)
    name = _set_name(cfg)
    frame = frame.assign(split="test")
    datamodule = ManifestDataModule(
        frame,
        None,
        task=kind,
        preprocessor=build_preprocessor(run_cfg),
        batch_size=cfg.batch_size,
        prepare_workers=2,
        repair_tilt=bool(run_cfg.data.get("repair_tilt", False)) or cfg.repair_tilt,
    )
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir / "eval" / name
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
    task = load_task(run_cfg, checkpoint)
    metrics, _ = evaluate_loader(
        trainer, task, datamodule.loader("test"), kind, out_dir / "predictions.csv"
    )
    write_json(out_dir / "metrics.json", {name: metrics, "checkpoint": checkpoint.name})
    log.info("%s: %s", name, metrics)
    return out_dir


def evaluate_exported(cfg: DictConfig) -> Path:
    """Evaluate an exported model file on ``cfg.manifest`` using only its embedded card."""
    model_path = Path(cfg.model)
    if not model_path.is_file():
        raise DataError(f"{model_path}: exported model not found")
    card = read_card(model_path)
    model = torch.jit.load(str(model_path), map_location="cpu").eval()
    kind = card["task"]
    frame = load_manifest(cfg.manifest, kind)
    pre = card["preprocessing"]
    grid = VolumePreprocessor(
        PreprocessConfig(
            spacing=tuple(pre["spacing"]), size=tuple(pre["size"]), window=None, fill_value=0.0
        )
    )
    reader = load_transform(with_mask=kind == "segmentation", repair_tilt=cfg.repair_tilt)
    outputs = []
    with torch.no_grad():
        for record in frame.to_dict("records"):
            fields = {keys.IMAGE: record[keys.IMAGE]}
            if kind == "segmentation":
                fields[keys.MASK] = record[keys.MASK]
            loaded = reader(fields)
            volume, affine = raw_volume(loaded[keys.IMAGE])
            batch = {keys.CASE_ID: [record[keys.CASE_ID]], "prob": model(volume, affine)[None]}
            if kind == "classification":
                batch[keys.LABEL] = torch.tensor([record[keys.LABEL]])
            else:
                mask = loaded[keys.MASK]
                batch[keys.MASK] = grid.resample_mask(mask.as_tensor()[0].float(), mask.affine)[
                    None
                ]
            outputs.append(batch)
    table, metrics = summarise(kind, outputs)
    name = _set_name(cfg)
    default_dir = model_path.parent.parent / "eval" / f"{name}-exported"
    out_dir = Path(cfg.output_dir) if cfg.output_dir else default_dir
    write_table(table, out_dir / "predictions.csv")
    write_json(out_dir / "metrics.json", {name: metrics, "model": model_path.name})
    log.info("%s: %s", name, metrics)
    return out_dir


def evaluate(cfg: DictConfig) -> Path:
    """Dispatch on ``run_dir`` or ``model``; returns the folder with predictions and metrics."""
    if bool(cfg.run_dir) == bool(cfg.model):
        raise ValueError("give exactly one of run_dir=<run folder> or model=<exported model.ts>")
    return evaluate_run(cfg) if cfg.run_dir else evaluate_exported(cfg)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A per-case predictions CSV written by evaluation."""
    return pd.read_csv(path, dtype={keys.CASE_ID: str})
