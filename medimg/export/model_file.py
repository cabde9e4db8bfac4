"""One export function and one verifying loader for every exported format.

``export_model`` writes ``model.ts`` (TorchScript, the default), ``model.pt2``
(``torch.export``) or ``model.onnx``; each embeds the model card and is sealed with the
SHA-256 of its bytes (:mod:`medimg.export.integrity`). ``load_model`` refuses a file whose
seal, sidecar card or weights do not match, with :class:`ChecksumError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medimg.data.errors import DataError
from medimg.export import portable
from medimg.export.diagnostic import DiagnosticModel
from medimg.export.integrity import ChecksumError, file_sha256, verify
from medimg.export.torchscript import load_torchscript, save_torchscript, script_model

FORMATS = {"torchscript": ".ts", "torch_export": ".pt2", "onnx": ".onnx"}
SIDECAR_NAME = "model_card.json"


def weights_sha256(net: nn.Module | dict[str, Tensor]) -> str:
    """SHA-256 over a network's state dict: every tensor's name and bytes, sorted by name."""
    state = net if isinstance(net, dict) else net.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def format_of(path: str | Path) -> str:
    """The export format a file name implies (by suffix)."""
    suffix = Path(path).suffix
    for fmt, ending in FORMATS.items():
        if suffix == ending:
            return fmt
    raise DataError(f"{path}: unknown model file type {suffix!r} (expected .ts, .pt2 or .onnx)")


@dataclass
class PreparedExport:
    """A scripted or traced model, ready to be saved (several times) with a card.

    Attributes:
        fmt: the export format.
        artifact: ``ScriptModule``, ``ExportedProgram`` or ``ONNXProgram``.
        facts: the card's ``export`` facts: ``format``, ``input_shape`` (None: any), ``gaps``.
    """

    fmt: str
    artifact: Any
    facts: dict

    def save(self, path: str | Path, card: dict) -> tuple[Path, dict]:
        """Write the sealed file with ``card`` (plus the ``export`` facts) embedded."""
        path = Path(path)
        if path.suffix != FORMATS[self.fmt]:
            raise ValueError(f"{path}: a {self.fmt} model file must end in {FORMATS[self.fmt]}")
        card = {**card, "export": {**card.get("export", {}), **self.facts, "file": path.name}}
        if self.fmt == "torchscript":
            save_torchscript(self.artifact, path, card)
        elif self.fmt == "torch_export":
            portable.save_torch_export(self.artifact, path, card)
        else:
            portable.save_onnx(self.artifact, path, card)
        return path, card


def prepare_export(
    model: DiagnosticModel, fmt: str = "torchscript", example: tuple[Tensor, ...] | None = None
) -> PreparedExport:
    """Script (TorchScript) or trace (``torch_export``, ``onnx``) the exported unit.

    Args:
        model: the exported unit (preprocessing + network + activation + way back).
        fmt: ``torchscript`` (default), ``torch_export`` or ``onnx``.
        example: one raw ``(volume, affine)`` input; needed to trace .pt2 and .onnx.

    Raises:
        ValueError: unknown format, or no example for a traced format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"export.format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if fmt == "torchscript":
        facts = {"format": fmt, "input_shape": None, "gaps": []}
        return PreparedExport(fmt, script_model(model), facts)
    if example is None:
        raise ValueError(f"export.format={fmt} traces the model: give an example input")
    trace = portable.trace_program if fmt == "torch_export" else portable.trace_onnx
    artifact, facts = trace(model, example)
    return PreparedExport(fmt, artifact, facts)


def export_model(
    model: DiagnosticModel,
    path: str | Path,
    card: dict,
    fmt: str = "torchscript",
    example: tuple[Tensor, ...] | None = None,
) -> tuple[Path, dict]:
    """Write ``model`` with ``card`` embedded and sealed (see :func:`prepare_export`).

    Returns:
        The file's path and the card as embedded (with its ``export`` section).
    """
    return prepare_export(model, fmt, example).save(path, card)


def write_sidecar(path: str | Path, card: dict, sidecar: str | Path | None = None) -> Path:
    """Write the card beside the model file, with the file's name, format and SHA-256."""
    from medimg.files import write_json

    path = Path(path)
    artifact = {"file": path.name, "format": format_of(path), "sha256": file_sha256(path)}
    target = Path(sidecar) if sidecar else path.with_name(SIDECAR_NAME)
    return write_json(target, {**card, "artifact": artifact})


@dataclass
class LoadedModel:
    """A verified exported model: call it with a raw ``(volume, affine)``.

    Attributes:
        path: the model file.
        format: ``torchscript``, ``torch_export`` or ``onnx``.
        card: the embedded model card.
        sha256: SHA-256 of the file's bytes before its seal.
    """

    path: Path
    format: str
    card: dict
    sha256: str
    runner: Any = field(repr=False)

    @property
    def task(self) -> str:
        return str(self.card["task"])

    def __call__(self, volume: Tensor, affine: Tensor, covariates: Tensor | None = None) -> Tensor:
        """Run on one case: ``volume`` float32 (X, Y, Z) native units, ``affine`` float64 4x4,
        ``covariates`` float (D,) raw values (NaN = missing) for models that take them."""
        volume = torch.as_tensor(volume, dtype=torch.float32)
        affine = torch.as_tensor(affine, dtype=torch.float64)
        names = list((self.card.get("input") or {}).get("covariates") or [])
        if names and covariates is None:
            raise DataError(f"{self.path}: this model needs the covariates {names}")
        inputs = [volume, affine]
        if names:
            inputs.append(torch.as_tensor(covariates, dtype=torch.float32).reshape(-1))
            if inputs[2].numel() != len(names):
                raise DataError(
                    f"{self.path}: expected {len(names)} covariates {names}, got {inputs[2].numel()}"
                )
        fixed = self.card.get("export", {}).get("input_shape")
        if fixed is not None and list(volume.shape) != list(fixed):
            raise DataError(
                f"{self.path}: this {self.format} model accepts volumes of shape {fixed} only "
                f"(got {list(volume.shape)}); use the TorchScript export for other shapes"
            )
        with torch.no_grad():
            if self.format == "onnx":
                feeds = {
                    i.name: t.numpy() for i, t in zip(self.runner.get_inputs(), inputs, strict=True)
                }
                return torch.from_numpy(np.asarray(self.runner.run(None, feeds)[0]))
            return self.runner(*inputs)


def load_model(path: str | Path) -> LoadedModel:
    """Load an exported model after verifying it byte for byte.

    Checks, in order: the SHA-256 sealed into the file covers every byte before it; the
    sidecar ``model_card.json`` (when present beside the file and naming it) records the
    same file hash; the network weights recomputed from the loaded module match the card's
    ``weights_sha256`` (TorchScript and .pt2; ONNX weights are covered by the seal).

    Raises:
        ChecksumError: any of these checks fails, or the file cannot be parsed.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported model not found")
    fmt = format_of(path)
    digest = verify(path)
    _check_sidecar(path)
    try:
        if fmt == "torchscript":
            runner, card = load_torchscript(path)
            weights = weights_sha256(runner.net)
        elif fmt == "torch_export":
            program, card = portable.load_torch_export(path)
            weights = weights_sha256(_net_state(program.state_dict))
            runner = program.module()
        else:
            runner, card = portable.load_onnx(path)
            weights = None
    except ChecksumError:
        raise
    except Exception as err:  # a sealed file that will not deserialise was tampered with
        raise ChecksumError(f"{path}: sealed model file does not load ({err})") from err
    if weights is not None and weights != card.get("weights_sha256"):
        raise ChecksumError(
            f"{path}: checksum mismatch: the loaded weights hash to {weights[:16]}…, the model "
            f"card records {str(card.get('weights_sha256'))[:16]}…; refusing it"
        )
    return LoadedModel(path=path, format=fmt, card=card, sha256=digest, runner=runner)


def read_card(path: str | Path) -> dict:
    """The model card embedded in an exported file (after verifying the file's seal)."""
    return load_model(path).card


def _net_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The network's entries of a whole model's state dict, without the ``net.`` prefix."""
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def _check_sidecar(path: Path) -> None:
    """A sidecar card that names this file must record its whole-file SHA-256."""
    sidecar = path.with_name(SIDECAR_NAME)
    if not sidecar.is_file():
        return
    try:
        artifact = json.loads(sidecar.read_text()).get("artifact") or {}
    except (OSError, ValueError) as err:
        raise ChecksumError(f"{sidecar}: unreadable model card beside {path.name} ({err})") from err
    if artifact.get("file") != path.name:
        return
    actual = file_sha256(path)
    if artifact.get("sha256") != actual:
        raise ChecksumError(
            f"{path}: checksum mismatch with {sidecar.name}: file sha256 {actual[:16]}…, card "
            f"records {str(artifact.get('sha256'))[:16]}…; refusing it"
        )
