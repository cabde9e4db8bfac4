"""A model's outputs on a datamodule's sets, evaluated: what training and evaluation share.

Lightning and the datamodule, but no Hydra: the pipeline passes plain settings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pandas as pd
from torch.utils.data import DataLoader

from medimg.data import keys
from medimg.data.datamodule import ManifestDataModule
from medimg.evaluation.assemble import EvalSet, Evaluation, evaluate_predictions
from medimg.evaluation.config import EvaluationConfig

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def eval_loader(datamodule: ManifestDataModule, name: str) -> DataLoader:
    """Every case of set ``name`` in manifest order.

    Evaluation runs in one process, also after a multi-process fit, so unlike
    ``datamodule.loader`` this never takes a DDP shard.
    """
    return DataLoader(
        datamodule.dataset(name),
        batch_size=datamodule.batch_size,
        num_workers=datamodule.num_workers,
        shuffle=False,
    )


def datamodule_set(
    datamodule: ManifestDataModule, name: str, outputs: list[dict], spacing: Sequence[float]
) -> EvalSet:
    """A datamodule set's outputs, manifest rows and prepared images (overlay figure)."""
    dataset, frame = datamodule.dataset(name), datamodule.frames[name]
    index = {str(c): i for i, c in enumerate(frame[keys.CASE_ID])}

    def image(case_id: str):
        return dataset[index[case_id]][keys.IMAGE].numpy()

    return EvalSet(outputs=outputs, manifest=frame, spacing=spacing, image=image)


def fallback_thresholds(settings: EvaluationConfig) -> list[float]:
    """0.5 per class: the operating point when no validation split is at hand."""
    return [0.5] * max(1, len(settings.classes))


def evaluate_datamodule(
    settings: EvaluationConfig,
    kind: str,
    trainer: L.Trainer,
    task: L.LightningModule,
    datamodule: ManifestDataModule,
    names: Sequence[str],
    out_dir: Path,
    spacing: Sequence[float],
    subdir: str = "eval",
) -> tuple[Evaluation, dict[str, list[dict]]]:
    """Predict the val split and sets ``names``, evaluate and write; returns raw outputs too."""
    with_val = len(datamodule.frames["val"]) > 0
    predicted = (["val"] if with_val else []) + list(names)
    outputs = {n: trainer.predict(task, dataloaders=eval_loader(datamodule, n)) for n in predicted}
    sets = {n: datamodule_set(datamodule, n, outputs[n], spacing) for n in names}
    val = datamodule_set(datamodule, "val", outputs["val"], spacing) if with_val else None
    fixed = None
    if val is None and kind == "classification":
        log.warning("no validation split: classification operating point fixed at 0.5")
        fixed = fallback_thresholds(settings)
    evaluation = evaluate_predictions(
        kind,
        sets,
        out_dir,
        settings,
        val=val,
        split_frame=pd.concat([datamodule.frames[s] for s in SPLITS]),
        thresholds=fixed,
        threshold_source="default 0.5 (no validation split)",
        subdir=subdir,
    )
    return evaluation, outputs


def card_thresholds(card: dict, settings: EvaluationConfig) -> list[float]:
    """An exported model's own operating point (binary), else 0.5 per class."""
    if settings.classes:
        return fallback_thresholds(settings)
    return [float((card.get("operating_point") or {}).get("threshold", 0.5))]
