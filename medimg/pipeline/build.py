"""Building the framework's objects from a (run's) config."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from medimg.data.augment import AugmentationPreset
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.tasks.base import BaseTask


def task_class(cfg: DictConfig) -> type[BaseTask]:
    """The task's class, from ``task._target_``."""
    return get_class(cfg.task._target_)


def task_kind(cfg: DictConfig) -> str:
    """``classification`` or ``segmentation``: what the task reads and how it is evaluated."""
    return task_class(cfg).kind


def build_preprocessor(cfg: DictConfig) -> VolumePreprocessor:
    """The one preprocessing object, from ``cfg.preprocess``."""
    p = cfg.preprocess
    window = None if p.window is None else tuple(float(v) for v in p.window)
    return VolumePreprocessor(
        PreprocessConfig(
            spacing=tuple(float(v) for v in p.spacing),
            size=tuple(int(v) for v in p.size),
            window=window,
            fill_value=float(p.fill_value),
        )
    )


def build_augmentation(cfg: DictConfig) -> AugmentationPreset:
    """The training augmentation preset, from ``cfg.augmentation``."""
    return AugmentationPreset(**OmegaConf.to_container(cfg.augmentation))


def _scheduler(cfg: DictConfig) -> partial | None:
    node = cfg.get("scheduler")
    if node is None or "_target_" not in node:
        return None
    return instantiate(node)


def build_task(cfg: DictConfig) -> BaseTask:
    """The task with a freshly built network injected (weights not loaded)."""
    net = instantiate(cfg.net)
    return instantiate(
        cfg.task,
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=_scheduler(cfg),
        _convert_="all",
    )


def load_task(cfg: DictConfig, checkpoint: str | Path) -> BaseTask:
    """Rebuild the task from a run's config and load a checkpoint (``weights_only=True``)."""
    net = instantiate(cfg.net)
    cls = task_class(cfg)
    task_args: dict[str, Any] = {
        k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "_target_"
    }
    return cls.load_from_checkpoint(
        str(checkpoint),
        map_location="cpu",
        weights_only=True,
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=_scheduler(cfg),
        **task_args,
    )
