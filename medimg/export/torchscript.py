"""Packaging a DiagnosticModel as one TorchScript file with its model card, and checking it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from medimg.export.diagnostic import DiagnosticModel
from medimg.files import write_atomic

log = logging.getLogger(__name__)
# torch >= 2.10 marks TorchScript deprecated; the mission asks for it, so say it once, not per call.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning
)
CARD_NAME = "model_card.json"
PARITY_SCRIPT = Path(__file__).with_name("parity_check.py")


def script_model(model: DiagnosticModel) -> torch.jit.ScriptModule:
    """Script the whole model; if the network cannot be scripted, trace just the network."""
    model = model.eval()
    try:
        return torch.jit.script(model)
    except Exception as err:  # TorchScript raises many error types for unsupported syntax
        log.warning(
            "network does not script (%s); tracing it inside the scripted wrapper",
            type(err).__name__,
        )
        size = model.preprocessor.size
        example = torch.zeros(1, 1, size[0], size[1], size[2])
        model.net = torch.jit.trace(model.net, example)
        return torch.jit.script(model)


def save_torchscript(module: torch.jit.ScriptModule, path: str | Path, card: dict) -> Path:
    """Save ``module`` with ``card`` embedded as an extra file, atomically."""
    extra = {CARD_NAME: json.dumps(card, indent=2, default=str)}
    return write_atomic(path, lambda tmp: torch.jit.save(module, str(tmp), _extra_files=extra))


def read_card(path: str | Path) -> dict:
    """The model card embedded in an exported TorchScript file."""
    extra = {CARD_NAME: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[CARD_NAME])


def check_parity(
    model_path: str | Path,
    volumes: list[torch.Tensor],
    affines: list[torch.Tensor],
    expected: list[torch.Tensor],
) -> dict:
    """Run the exported file in a fresh torch-only Python process and compare its outputs.

    Returns:
        ``{"n_cases", "max_abs_diff", "framework_modules_loaded"}`` from the subprocess.
    """
    with tempfile.TemporaryDirectory(prefix="medimg-parity-") as scratch:
        inputs = Path(scratch) / "inputs.pt"
        report = Path(scratch) / "report.json"
        torch.save({"volumes": volumes, "affines": affines, "expected": expected}, inputs)
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
