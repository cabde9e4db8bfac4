"""Parity: the exported file, run with torch alone, reproduces the framework's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from medimg.export.diagnostic import DiagnosticModel

PARITY_SCRIPT = Path(__file__).with_name("parity_check.py")


def expected_outputs(
    model: DiagnosticModel, probs: list[Tensor], volumes: list[Tensor], affines: list[Tensor]
) -> list[Tensor]:
    """The framework's per-case outputs brought to what the exported model returns.

    Classification: the probabilities as they are. Segmentation: the model-grid
    probabilities the framework's evaluation computed, mapped onto each input's voxel grid
    by the eager model's :meth:`DiagnosticModel.to_input_grid`.
    """
    if model.kind != "segmentation":
        return [p.reshape(-1) for p in probs]
    with torch.no_grad():
        return [
            model.to_input_grid(p, v, a) for p, v, a in zip(probs, volumes, affines, strict=True)
        ]


def check_parity(
    model_path: str | Path,
    volumes: list[Tensor],
    affines: list[Tensor],
    expected: list[Tensor],
    covariates: list[Tensor] | None = None,
) -> dict:
    """Run the exported file in a fresh torch-only Python process and compare its outputs.

    The subprocess refuses imports of medimg and MONAI and gets no ``PYTHONPATH``.

    Returns:
        ``{"n_cases", "max_abs_diff", "min_dice", "framework_modules_loaded"}``.

    Raises:
        RuntimeError: the model fails to run there.
    """
    with tempfile.TemporaryDirectory(prefix="medimg-parity-") as scratch:
        inputs = Path(scratch) / "inputs.pt"
        report = Path(scratch) / "report.json"
        data = {"volumes": volumes, "affines": affines, "expected": expected}
        if covariates is not None:
            data["covariates"] = covariates
        torch.save(data, inputs)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(
            [
                sys.executable,
                str(PARITY_SCRIPT),
                str(Path(model_path).resolve()),
                str(inputs),
                str(report),
            ],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"exported model failed in a torch-only process:\n{result.stderr[-3000:]}"
            )
        return json.loads(report.read_text())


def parity_passed(parity: dict, atol: float, min_dice: float) -> bool:
    """Whether a parity report meets the tolerances and loaded no framework module."""
    return (
        parity["max_abs_diff"] <= atol
        and parity.get("min_dice", 1.0) >= min_dice
        and not parity["framework_modules_loaded"]
    )
