"""TorchScript packaging of a DiagnosticModel: script it, save it with its card, sealed."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from medimg.export.diagnostic import DiagnosticModel, ImageOnly
from medimg.export.integrity import seal, verify
from medimg.files import write_atomic

log = logging.getLogger(__name__)
# torch >= 2.10 marks TorchScript deprecated; the mission asks for it, so say it once, not per call.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning
)
CARD_NAME = "model_card.json"


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
        if not isinstance(model.net, ImageOnly):
            raise
        example = torch.zeros(1, 1, *model.preprocessor.size)
        model.net.net = torch.jit.trace(model.net.net, example)
        return torch.jit.script(model)


def save_torchscript(module: torch.jit.ScriptModule, path: str | Path, card: dict) -> Path:
    """Save ``module`` with ``card`` embedded as an extra file, sealed, atomically."""
    extra = {CARD_NAME: json.dumps(card, indent=2, default=str)}

    def write(tmp: Path) -> None:
        torch.jit.save(module, str(tmp), _extra_files=extra)
        seal(tmp)

    return write_atomic(path, write)


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """Load a sealed TorchScript file (seal verified first) and its embedded card."""
    verify(path)
    extra = {CARD_NAME: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[CARD_NAME])


def read_card(path: str | Path) -> dict:
    """The model card embedded in an exported model file (any format; seal verified)."""
    from medimg.export.model_file import read_card as read_any

    return read_any(path)
