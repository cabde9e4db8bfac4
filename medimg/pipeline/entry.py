"""Hydra entry points behind scripts/train.py, scripts/evaluate.py and the console commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from medimg.data.errors import DataError
from medimg.pipeline.schema import register_schemas

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")

register_schemas()


def _quiet_environment() -> None:
    """Keep third-party libraries from prompting or phoning home."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_CODE", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")


def _fail(err: Exception) -> None:
    """Bad input or config: one clear message on stderr, exit status 2, no traceback."""
    sys.stderr.write(f"medimg: error: {err}\n")
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> None:
    from medimg.pipeline.train import train, validate

    try:
        run_dir = validate(cfg) if cfg.stage == "validate" else train(cfg)
    except (DataError, ValueError) as err:
        _fail(err)
    # Under DDP every rank runs this function; only rank 0 announces the run folder.
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
        print(run_dir, flush=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def _evaluate(cfg: DictConfig) -> None:
    from medimg.pipeline.evaluate import evaluate

    try:
        out_dir = evaluate(cfg)
    except (DataError, ValueError) as err:
        _fail(err)
    print(out_dir, flush=True)


def train_main() -> None:
    """``medimg-train``: scripts/train.py as a console command."""
    _quiet_environment()
    _train()


def evaluate_main() -> None:
    """``medimg-evaluate``: scripts/evaluate.py as a console command."""
    _quiet_environment()
    _evaluate()
