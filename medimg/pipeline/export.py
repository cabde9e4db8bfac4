"""The export stage: package the best model with its preprocessing and prove it matches."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from medimg.data.datamodule import ManifestDataModule
from medimg.data.loading import load_transform, raw_volume
from medimg.evaluation.predict import stack_probs
from medimg.export.diagnostic import DiagnosticModel
from medimg.export.torchscript import check_parity, save_torchscript, script_model
from medimg.files import write_json
from medimg.pipeline import provenance
from medimg.pipeline.build import task_kind
from medimg.tasks.base import BaseTask

log = logging.getLogger(__name__)
CARD_FORMAT = "medimg-diagnostic-model/1"


class ExportError(RuntimeError):
    """The exported model does not reproduce the checkpoint."""


def weights_sha256(net: nn.Module) -> str:
    """SHA-256 over the network's tensors in state-dict order (names and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def raw_inputs(
    datamodule: ManifestDataModule, name: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Volumes in native geometry and their affines, for every case of set ``name``."""
    reader = load_transform(with_mask=False, repair_tilt=datamodule.repair_tilt)
    volumes, affines = [], []
    for record in datamodule.records(name):
        volume, affine = raw_volume(reader({"image": record["image"]})["image"])
        volumes.append(volume)
        affines.append(affine)
    return volumes, affines


def model_card(cfg: DictConfig, task: BaseTask, metrics: dict, extra: dict) -> dict:
    """Everything an integrator needs to know about the exported model (no identifiers)."""
    kind = task_kind(cfg)
    size = list(cfg.preprocess.size)
    output = (
        "probabilities, shape (num_classes,) (one value for a binary task)"
        if kind == "classification"
        else "class probabilities (C, X, Y, Z) on the model grid; grid_affine(volume, affine) gives its voxel→RAS affine"
    )
    return {
        "format": CARD_FORMAT,
        "experiment": cfg.experiment_name,
        "task": kind,
        "num_classes": int(cfg.task.num_classes),
        "label_names": list(task.label_names),
        "input": {
            "volume": "float32 tensor (X, Y, Z) in native units (Hounsfield units for CT)",
            "affine": "float64 4x4 voxel index → RAS world mm (NIfTI convention)",
        },
        "output": output,
        "network_input_shape": [1, 1, *size],
        "preprocessing": OmegaConf.to_container(cfg.preprocess, resolve=True),
        "metrics": metrics,
        **extra,
        "software": provenance.software_versions(),
        "code_version": provenance.code_version(),
        "config_sha256": provenance.config_hash(cfg),
        "weights_sha256": weights_sha256(task.net),
    }


def export_run(
    cfg: DictConfig,
    task: BaseTask,
    datamodule: ManifestDataModule,
    test_outputs: list[dict],
    metrics: dict,
    card_extra: dict,
    run_dir: Path,
) -> Path:
    """Write ``export/model.ts`` and ``export/model_card.json`` after a parity check.

    The exported model is run on the raw test cases in a torch-only subprocess and must
    reproduce the checkpoint's probabilities within ``export.parity_atol``.

    Raises:
        ExportError: when it does not.
    """
    export_dir = run_dir / "export"
    export_dir.mkdir(parents=True, exist_ok=True)
    activation = (
        "sigmoid" if task_kind(cfg) == "classification" and cfg.task.num_classes == 1 else "softmax"
    )
    net = task.net.eval().cpu()
    scripted = script_model(DiagnosticModel(datamodule.preprocessor, net, activation))
    card = model_card(cfg, task, metrics, card_extra)

    volumes, affines = raw_inputs(datamodule, "test")
    expected = list(stack_probs(test_outputs))
    with tempfile.TemporaryDirectory(dir=export_dir, prefix=".parity-") as scratch:
        candidate = save_torchscript(scripted, Path(scratch) / "model.ts", card)
        parity = check_parity(candidate, volumes, affines, expected)
    parity["atol"] = cfg.export.parity_atol
    parity["passed"] = (
        parity["max_abs_diff"] <= cfg.export.parity_atol and not parity["framework_modules_loaded"]
    )
    card["parity"] = parity
    write_json(export_dir / "model_card.json", card)
    if not parity["passed"]:
        raise ExportError(
            f"exported model differs from the checkpoint on the test split: max abs difference "
            f"{parity['max_abs_diff']:.3g} > {cfg.export.parity_atol} (see {export_dir / 'model_card.json'})"
        )
    path = save_torchscript(scripted, export_dir / "model.ts", card)
    log.info(
        "exported %s (parity on %d test cases: max abs diff %.2e)",
        path,
        parity["n_cases"],
        parity["max_abs_diff"],
    )
    return path
