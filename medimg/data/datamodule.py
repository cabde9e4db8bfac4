"""LightningDataModule over a split manifest and any number of external manifests."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from monai import transforms as mt
from monai.data import Dataset, PersistentDataset
from torch.utils.data import DataLoader

from medimg.data import keys
from medimg.data.augment import AugmentationPreset
from medimg.data.cache import ContentKey
from medimg.data.loading import PrepareVolumed, load_steps
from medimg.data.preprocess import VolumePreprocessor
from medimg.data.sampling import eval_sampler, train_sampler

RECORD_COLUMNS = (keys.CASE_ID, keys.IMAGE, keys.LABEL, keys.MASK, keys.COVARIATES)


class ManifestDataModule(L.LightningDataModule):
    """Serves ``train``/``val``/``test`` from a split manifest and each external set by name.

    Args:
        internal: manifest with a ``split`` column (see :func:`medimg.data.splits.split_by_patient`).
        external: external manifests by set name; never used for training or model selection.
        task: ``classification`` or ``segmentation`` (decides whether masks are read).
        preprocessor: the deterministic preprocessing shared with evaluation and export.
        augmentation: random augmentation for the training split.
        batch_size: cases per batch.
        num_workers: DataLoader worker processes (0 = load in the main process).
        cache: keep prepared cases in memory after the first read.
        cache_dir: also keep them on disk (MONAI ``PersistentDataset``, keyed by file content and
            ``cache_context``), so the next run skips reading; ``None`` for no disk cache.
        cache_context: what else decides a prepared case (preprocessing parameters, task).
        prepare_workers: processes that read and prepare uncached cases in parallel.
        repair_tilt: read gantry-tilted DICOM stacks as sheared affines instead of refusing.
        seed: seeds the training order (per epoch) and the augmentation.
        balanced_sampling: draw training cases with class-balanced weights (classification).
        spatial_dims: 2 or 3, for the augmentation's random rotations and zooms.
    """

    def __init__(
        self,
        internal: pd.DataFrame,
        external: dict[str, pd.DataFrame] | None,
        task: str,
        preprocessor: VolumePreprocessor,
        augmentation: AugmentationPreset | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        cache_context: dict | None = None,
        prepare_workers: int = 0,
        repair_tilt: bool = False,
        seed: int = 0,
        balanced_sampling: bool = False,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if "split" not in internal.columns:
            raise ValueError("internal manifest needs a 'split' column; run split_by_patient first")
        if batch_size < 1:
            raise ValueError(f"datamodule.batch_size must be >= 1, got {batch_size}")
        self.frames = {
            name: internal[internal["split"] == name] for name in ("train", "val", "test")
        }
        for name, frame in (external or {}).items():
            if name in self.frames:
                raise ValueError(f"external set name {name!r} clashes with an internal split")
            self.frames[name] = frame
        self.with_mask = task == "segmentation"
        self.preprocessor = preprocessor
        self.augmentation = augmentation or AugmentationPreset(name="none")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.repair_tilt = repair_tilt
        self.cache_context = {"task": task, "repair_tilt": repair_tilt, **(cache_context or {})}
        self.prepare_workers = prepare_workers
        self.seed = seed
        self.balanced_sampling = balanced_sampling
        self.spatial_dims = spatial_dims
        self._prepared: dict[str, list[dict]] = {}
        self._datasets: dict[str, Dataset] = {}

    @property
    def set_names(self) -> list[str]:
        """Every set this module can serve: the three splits, then the external sets."""
        return list(self.frames)

    def records(self, name: str) -> list[dict]:
        """Records (one dict per case) of set ``name``, in manifest order."""
        frame = self.frames[name]
        columns = [c for c in RECORD_COLUMNS if c in frame.columns]
        if not self.with_mask:
            columns = [c for c in columns if c != keys.MASK]
        records = frame[columns].to_dict("records")
        for record in records:
            if keys.COVARIATES in record:
                record[keys.COVARIATES] = torch.as_tensor(
                    record[keys.COVARIATES], dtype=torch.float32
                )
        return records

    def _deterministic(self) -> list:
        return [*load_steps(self.with_mask, self.repair_tilt), PrepareVolumed(self.preprocessor)]

    def prepared(self, name: str) -> list[dict]:
        """Every case of set ``name`` read and preprocessed (from the disk cache when present)."""
        if name not in self._prepared:
            transform = mt.Compose(self._deterministic())
            records = self.records(name)
            if self.cache_dir is not None:
                source = PersistentDataset(
                    records,
                    transform,
                    cache_dir=self.cache_dir,
                    hash_func=ContentKey(self.cache_context),
                )
            else:
                source = Dataset(records, transform)
            loader = DataLoader(
                source, batch_size=None, num_workers=self.prepare_workers, collate_fn=_identity
            )
            # Copy each case out of the worker's shared memory so no file descriptor stays open.
            self._prepared[name] = [_own(item) for item in loader]
        return self._prepared[name]

    def dataset(self, name: str, train: bool = False) -> Dataset:
        """Prepared dataset for set ``name``; random augmentation only when ``train``."""
        key = f"{name}:{train}"
        if key not in self._datasets:
            augment = (
                self.augmentation.build(self.with_mask, self.seed, self.spatial_dims)
                if train
                else None
            )
            if self.cache:
                self._datasets[key] = Dataset(self.prepared(name), augment)
            else:
                steps = self._deterministic() + ([augment] if augment is not None else [])
                self._datasets[key] = Dataset(self.records(name), mt.Compose(steps))
        return self._datasets[key]

    def setup(self, stage: str | None = None) -> None:
        """Build (and cache) the datasets the stage needs."""
        if stage in (None, "fit"):
            self.dataset("train", train=True)
            self.dataset("val")
        if stage in (None, "test"):
            self.dataset("test")

    def loader(self, name: str, train: bool = False) -> DataLoader:
        """DataLoader for set ``name``: shuffled by (seed, epoch) when ``train``, else in order.

        Under DDP every rank gets its shard: training through a seeded distributed sampler,
        evaluation through an unpadded one, so each case counts exactly once and metrics do
        not depend on the process count (the trainer runs with ``use_distributed_sampler``
        off; see configs/trainer/ddp.yaml).
        """
        dataset = self.dataset(name, train=train)
        world_size, rank = 1, 0
        if self.trainer is not None:
            world_size, rank = self.trainer.world_size, self.trainer.global_rank
        if train:
            # One replica of DistributedSampler is a seeded per-epoch shuffle: Lightning calls
            # set_epoch, so a resumed run sees the same order as an uninterrupted one.
            labels = self._labels(name) if self.balanced_sampling else None
            sampler = train_sampler(
                dataset, world_size, rank, self.seed, labels=labels, balanced=self.balanced_sampling
            )
        else:
            sampler = eval_sampler(dataset, world_size, rank) if world_size > 1 else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def _labels(self, name: str) -> np.ndarray:
        """Targets of set ``name`` for class-balanced sampling (one row per case)."""
        frame = self.frames[name]
        if keys.LABEL not in frame:
            raise ValueError("data.balanced_sampling needs a classification target ('label')")
        return np.asarray(frame[keys.LABEL].tolist())

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


def _own(item: dict) -> dict:
    """The case with its tensors copied into this process's memory."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()}


def _identity(item: dict) -> dict:
    """Collate function that keeps one prepared case as it is."""
    return item
