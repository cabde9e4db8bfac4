"""Run a verified exported model on one image and write the results a viewer can show.

Outputs in the output folder, each written atomically, ``result.json`` last (its presence
means the others are complete):

- ``result.json``: the model's identity and findings, without patient names, IDs, dates,
  UIDs or input paths;
- DICOM input: ``seg.dcm`` (DICOM Segmentation) for segmentation models, ``sr.dcm``
  (Comprehensive 3D SR, TID 1500) for classification models, both referencing the source;
- NIfTI input, segmentation: ``mask.nii.gz``, the label map in the input's geometry.
"""

from __future__ import annotations

import gzip
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from pydicom.dataset import Dataset

from medimg.data.errors import DataError
from medimg.deploy import dicom_out
from medimg.deploy.source import InputCase, read_input
from medimg.export import LoadedModel, load_model
from medimg.export.card import threshold_for
from medimg.files import write_atomic, write_json

log = logging.getLogger(__name__)
RESULT_NAME = "result.json"


@dataclass
class Inference:
    """What one inference produced.

    Attributes:
        result: the ``result.json`` content.
        files: output files by kind (``json``, ``dicom``, ``nifti``).
        dicom: the DICOM result dataset (None for NIfTI input or regression).
    """

    result: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    dicom: Dataset | None = None


def check_modality(model: LoadedModel, case: InputCase, source: str) -> None:
    """Refuse DICOM input of another modality than the model was validated on."""
    expected = (model.card.get("input") or {}).get("modality") or []
    found = str(case.meta.get("modality") or "")
    if case.format == "dicom" and expected and found and found not in expected:
        raise DataError(
            f"{source}: Modality is {found}, but the model was validated on {expected} only"
        )


def findings(model: LoadedModel, output: torch.Tensor, case: InputCase) -> dict[str, Any]:
    """The ``result.json`` findings section for the model's task."""
    card, names = model.card, list(model.card.get("label_names", []))
    if model.task == "segmentation":
        labels = output.argmax(0).numpy()
        voxel_ml = abs(float(np.linalg.det(case.affine.numpy()[:3, :3]))) / 1000.0
        counts = np.bincount(labels.reshape(-1), minlength=len(names))
        return {
            "segmentation": {
                name: {"voxels": int(counts[i]), "volume_ml": round(float(counts[i]) * voxel_ml, 3)}
                for i, name in enumerate(names)
                if i > 0
            }
        }
    values = [float(v) for v in output.reshape(-1)]
    if model.task == "regression":
        return {
            "regression": dict(
                zip(names or [f"output_{i}" for i in range(len(values))], values, strict=False)
            )
        }
    if card.get("multilabel"):
        labels = {}
        for name, value in zip(names, values, strict=True):
            threshold = threshold_for(card, name)
            labels[name] = {
                "probability": value,
                "threshold": threshold,
                "present": value >= threshold,
            }
        return {"classification": {"labels": labels}}
    if len(values) == 1:
        name = names[-1] if names else "positive"
        threshold = threshold_for(card, "positive")
        return {
            "classification": {
                "finding": name,
                "probability": values[0],
                "threshold": threshold,
                "present": values[0] >= threshold,
            }
        }
    best = int(np.argmax(values))
    return {
        "classification": {
            "probabilities": dict(zip(names, values, strict=True)),
            "finding": names[best],
            "present": True,
        }
    }


def run_inference(
    model: str | Path | LoadedModel,
    input_path: str | Path,
    output_dir: str | Path,
    repair_tilt: bool = False,
    status: str = "ok",
    covariates: list[float] | None = None,
) -> Inference:
    """Verify and load ``model``, read ``input_path``, run, write results to ``output_dir``.

    ``status`` is what result.json reports (the PACS flow writes ``pending_store`` first);
    ``covariates`` are the case's clinical values for models that take them (NaN = missing).

    Raises:
        medimg.export.ChecksumError: the model file fails verification.
        DataError: unreadable input or an input the model does not accept.
    """
    start = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    case = read_input(input_path, repair_tilt=repair_tilt)
    check_modality(loaded, case, str(input_path))
    extra = None if covariates is None else torch.tensor(covariates, dtype=torch.float32)
    output = loaded(case.volume, case.affine, extra)
    seconds = round(time.perf_counter() - start, 3)
    return write_outputs(loaded, case, output, Path(output_dir), seconds, status)


def write_outputs(
    model: LoadedModel,
    case: InputCase,
    output: torch.Tensor,
    out_dir: Path,
    seconds: float,
    status: str = "ok",
) -> Inference:
    """Write the DICOM/NIfTI results, then ``result.json``; returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    inference = Inference(result={}, files={})
    if model.task == "segmentation":
        labels = output.argmax(0).numpy().astype(np.uint8)
        if case.sources:
            inference.dicom = dicom_out.segmentation(case.sources, labels, model.card)
            inference.files["dicom"] = dicom_out.save_dicom(inference.dicom, out_dir / "seg.dcm")
        if case.format == "nifti":
            image = nib.Nifti1Image(labels, case.affine.numpy())
            image.set_qform(case.affine.numpy(), code=1)
            image.set_sform(case.affine.numpy(), code=1)
            data = gzip.compress(image.to_bytes(), mtime=0)
            inference.files["nifti"] = write_atomic(
                out_dir / "mask.nii.gz", lambda tmp: tmp.write_bytes(data)
            )
    elif model.task == "classification" and case.sources:
        probabilities = [float(v) for v in output.reshape(-1)]
        inference.dicom = dicom_out.structured_report(case.sources, probabilities, model.card)
        inference.files["dicom"] = dicom_out.save_dicom(inference.dicom, out_dir / "sr.dcm")
    inference.result = {
        "status": status,
        "model": {
            "experiment": model.card.get("experiment"),
            "format": model.format,
            "sha256": model.sha256,
            "weights_sha256": model.card.get("weights_sha256"),
            "intended_use": model.card.get("intended_use"),
        },
        "task": model.task,
        "input": {
            "format": case.format,
            "modality": case.meta.get("modality"),
            "shape": [int(n) for n in case.volume.shape],
            "spacing_mm": [
                round(float(v), 4) for v in np.linalg.norm(case.affine.numpy()[:3, :3], axis=0)
            ],
            "orientation": case.meta.get("orientation"),
        },
        **findings(model, output, case),
        "outputs": {kind: path.name for kind, path in inference.files.items()},
        "seconds": seconds,
    }
    inference.files["json"] = write_json(out_dir / RESULT_NAME, inference.result)
    return inference
