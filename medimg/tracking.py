"""Experiment trackers: wandb (offline unless an API key is set) beside a CSV logger."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger

MODES = ("online", "offline", "disabled")


def wandb_mode(requested: str | None = None) -> str:
    """The wandb mode to use: the one asked for, else $WANDB_MODE, else online only with a key."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode in ("dryrun",):
        mode = "offline"
    if mode is None:
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode must be one of {MODES}, got {mode!r}")
    return mode


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A WandbLogger that never prompts for a login and captures nothing beyond what is logged.

    Console output (which can hold file paths), code, git state, system statistics, host name
    and environment metadata are not captured: only the metrics and the config medimg logs.
    """
    import wandb

    settings = wandb.Settings(
        console="off",
        save_code=False,
        disable_code=True,
        disable_git=True,
        x_disable_stats=True,
        x_disable_meta=True,
        x_save_requirements=False,
        host="medimg",
        silent=True,
    )
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        mode=wandb_mode(mode),
        settings=settings,
        log_model=False,
        **kwargs,
    )


def finish_loggers(loggers: list) -> None:
    """Close wandb runs explicitly so a second run in the same process starts fresh."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
