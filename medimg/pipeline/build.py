"""Building the framework's objects from a (run's) config."""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from medimg.data.augment import AugmentationPreset
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.tasks.base import BaseTask


def task_class(cfg: DictConfig) -> type[BaseTask]:
    """The task's class, from ``task._target_``."""
    return get_class(cfg.task._target_)


def task_kind(cfg: DictConfig) -> str:
    """``classification``, ``segmentation`` or ``regression``: what the task reads and reports."""
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
            normalise=str(p.get("normalise", "window")),
            percentiles=tuple(float(v) for v in p.get("percentiles", (1.0, 99.0))),
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


def task_arguments(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.task`` without ``_target_``, keeping only what the task's class accepts.

    The task schema is shared by every task (e.g. ``inference`` is a segmentation setting and
    ``monitor_mode`` is read by the callbacks), so keys a class does not take are left out.
    """
    accepted = inspect.signature(task_class(cfg).__init__).parameters
    args = OmegaConf.to_container(cfg.task, resolve=True)
    return {k: v for k, v in args.items() if k != "_target_" and k in accepted}


def build_net(cfg: DictConfig) -> nn.Module:
    """The network from ``cfg.net``, initialised from ``cfg.init`` when a weight file is given."""
    net = instantiate(cfg.net)
    init = cfg.get("init")
    if init is not None and (init.weights or init.freeze_encoder or init.head is not None):
        from medimg.nets.init import apply_init

        apply_init(
            net,
            weights=init.weights,
            strict=init.strict,
            freeze_encoder=init.freeze_encoder,
            head=None if init.head is None else list(init.head),
        )
    return net


def build_task(cfg: DictConfig, net: nn.Module | None = None) -> BaseTask:
    """The task with a freshly built (or the given) network injected (weights not loaded)."""
    return task_class(cfg)(
        net=build_net(cfg) if net is None else net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=_scheduler(cfg),
        **task_arguments(cfg),
    )


def load_task(cfg: DictConfig, checkpoint: str | Path) -> BaseTask:
    """Rebuild the task from a run's config and load a checkpoint (``weights_only=True``)."""
    return task_class(cfg).load_from_checkpoint(
        str(checkpoint),
        map_location="cpu",
        weights_only=True,
        net=instantiate(cfg.net),
        optimizer=instantiate(cfg.optimizer),
        scheduler=_scheduler(cfg),
        **task_arguments(cfg),
    )
