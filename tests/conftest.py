"""Shared fixtures: a tiny built-in dataset and helpers that run the real scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ("data.source.n_internal=24", "data.source.n_external=8", "data.batch_size=4")


def script_env(tmp: Path) -> dict[str, str]:
    """Environment for script runs: no wandb key, caches and HOME inside the test folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"})
    return env


def run_script(name: str, *overrides: str, tmp: Path, check: bool = True, timeout: int = 600):
    """Run ``scripts/<name>.py`` with Hydra overrides; return the CompletedProcess."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *overrides],
        cwd=tmp,
        env=script_env(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{name}.py failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


def train_overrides(tmp: Path, data_dir: Path, *extra: str, epochs: int = 1) -> list[str]:
    """Overrides for a fast training run on the tiny dataset with outputs under ``tmp``."""
    return [
        f"paths.data_dir={data_dir}",
        f"paths.runs_dir={tmp / 'runs'}",
        "trainer.enable_progress_bar=false",
        f"trainer.max_epochs={epochs}",
        *TINY,
        *extra,
    ]


def run_dir_of(result) -> Path:
    """The run folder a training run prints as its last line."""
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Folder holding the tiny built-in dataset (generated once per session)."""
    from medimg.data.synthetic import make_synthetic_ct

    root = tmp_path_factory.mktemp("data")
    make_synthetic_ct(root, seed=0, n_internal=24, n_external=8)
    return root


@pytest.fixture(scope="session")
def manifests(data_dir) -> dict[str, Path]:
    """Paths of the tiny dataset's internal and external manifests."""
    from medimg.data.synthetic import make_synthetic_ct

    return make_synthetic_ct(data_dir, seed=0, n_internal=24, n_external=8)


@pytest.fixture(scope="session")
def cls_run(tmp_path_factory, data_dir) -> tuple[Path, object]:
    """One real default-experiment run on tiny data (wandb offline), shared by several tests."""
    tmp = tmp_path_factory.mktemp("cls_run")
    result = run_script("train", *train_overrides(tmp, data_dir, epochs=2), tmp=tmp)
    return run_dir_of(result), result
