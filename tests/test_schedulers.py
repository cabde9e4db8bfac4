"""Optimiser and learning-rate schedule configs build the torch objects they name."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medimg.pipeline.entry import CONFIG_DIR
from medimg.pipeline.resolvers import register_resolvers
from medimg.pipeline.schema import register_schemas
from medimg.training.schedulers import cosine_with_warmup


def _compose(*overrides: str):
    register_schemas()
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train", overrides=["paths.root_dir=/tmp", "paths.output_dir=/tmp/x", *overrides]
        )


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(2, 1).parameters())


def _lrs(scheduler, optimizer, epochs: int) -> list[float]:
    """The learning rate used in each epoch (read before the epoch's scheduler step)."""
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _reference(lr: float, warmup: int, epochs: int, start: float, eta_min: float) -> list[float]:
    """Closed forms: linear ramp start*lr → lr over `warmup` epochs, then half a cosine."""
    ramp = [lr * (start + (1 - start) * e / warmup) for e in range(warmup)]
    span = epochs - warmup
    decay = [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * e / span)) / 2 for e in range(span)]
    return ramp + decay


@pytest.mark.parametrize(
    "name, cls, expected",
    [
        ("adamw", torch.optim.AdamW, {}),
        ("adam", torch.optim.Adam, {}),
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    ],
)
def test_optimizer_configs_are_partials_of_torch_optimizers(name, cls, expected):
    cfg = _compose(f"optimizer={name}", "optimizer.lr=0.05")
    optimizer = instantiate(cfg.optimizer)(params=_params())
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.05
    assert {k: group[k] for k in expected} == expected


def test_cosine_warmup_follows_the_closed_form():
    cfg = _compose("scheduler=cosine_warmup", "trainer.max_epochs=10", "optimizer.lr=0.1")
    optimizer = instantiate(cfg.optimizer)(params=_params())
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer)
    s = cfg.scheduler
    expected = _reference(0.1, s.warmup_epochs, 10, s.start_factor, s.eta_min)
    assert _lrs(scheduler, optimizer, 10) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_cosine_warmup_without_warmup_is_torch_cosine():
    optimizer = torch.optim.SGD(_params(), lr=0.2)
    scheduler = cosine_with_warmup(optimizer, warmup_epochs=0, max_epochs=6, eta_min=0.01)
    reference_opt = torch.optim.SGD(_params(), lr=0.2)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=6, eta_min=0.01)
    assert _lrs(scheduler, optimizer, 6) == pytest.approx(_lrs(reference, reference_opt, 6))


def test_cosine_warmup_resumes_from_its_state_dict():
    optimizer = torch.optim.SGD(_params(), lr=0.1)
    scheduler = cosine_with_warmup(optimizer, warmup_epochs=3, max_epochs=12)
    whole = _lrs(scheduler, optimizer, 12)

    optimizer = torch.optim.SGD(_params(), lr=0.1)
    scheduler = cosine_with_warmup(optimizer, warmup_epochs=3, max_epochs=12)
    first = _lrs(scheduler, optimizer, 5)
    state = (optimizer.state_dict(), scheduler.state_dict())
    optimizer = torch.optim.SGD(_params(), lr=0.1)
    scheduler = cosine_with_warmup(optimizer, warmup_epochs=3, max_epochs=12)
    optimizer.load_state_dict(state[0])
    scheduler.load_state_dict(state[1])
    assert first + _lrs(scheduler, optimizer, 7) == pytest.approx(whole)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"warmup_epochs": 10, "max_epochs": 10}, "scheduler.warmup_epochs must be in"),
        ({"warmup_epochs": -1, "max_epochs": 10}, "scheduler.warmup_epochs must be in"),
        ({"warmup_epochs": 2, "max_epochs": 10, "start_factor": 0.0}, "scheduler.start_factor"),
    ],
)
def test_cosine_warmup_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cosine_with_warmup(torch.optim.SGD(_params(), lr=0.1), **kwargs)


@pytest.mark.parametrize("monitor_mode", [None, "min"])
def test_plateau_mode_follows_the_task_monitor_direction(monitor_mode):
    cfg = _compose("scheduler=plateau")
    if monitor_mode is not None:  # e.g. regression's val/mae
        OmegaConf.set_struct(cfg, False)
        cfg.task.monitor_mode = monitor_mode
    optimizer = torch.optim.SGD(_params(), lr=0.1)
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.mode == (monitor_mode or "max")
    # A metric that gets worse in the monitored direction lowers the lr after `patience` epochs.
    worse = [1.0 - 0.1 * e for e in range(10)] if scheduler.mode == "max" else list(range(10))
    for value in worse[: cfg.scheduler.patience + 2]:
        scheduler.step(value)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * cfg.scheduler.factor)


def test_the_task_hands_lightning_the_monitor_a_plateau_schedule_needs():
    from medimg.tasks.base import BaseTask

    cfg = _compose("scheduler=plateau")
    task = BaseTask(
        torch.nn.Linear(2, 1),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler),
        monitor=cfg.task.monitor,
    )
    config = task.configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == cfg.task.monitor
    assert isinstance(
        config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau
    )
