"""Predictions of an exported model file on a manifest, in the shape evaluation reads.

The exported model takes a raw image in its own geometry, so these predictions are what a
deployment would produce. Segmentation is evaluated on each image's own voxel grid (distances
in that image's millimetres), where the exported model returns its label map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from medimg.data import keys
from medimg.data.loading import load_transform, mask_on_image_grid, raw_volume
from medimg.evaluation.assemble import EvalSet
from medimg.evaluation.segmentation import case_metrics
from medimg.export import LoadedModel


def voxel_spacing(affine) -> list[float]:
    """Voxel size in mm along each array axis of a voxel→world affine."""
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    return [float(v) for v in np.linalg.norm(matrix, axis=0)]


def predict_exported(
    model: LoadedModel,
    frame: pd.DataFrame,
    classes: Sequence[str] = (),
    tolerance_mm: float = 2.0,
    repair_tilt: bool = False,
) -> EvalSet:
    """Run ``model`` on every case of ``frame`` (a loaded manifest) and collect its outputs.

    Args:
        model: a verified exported model (:func:`medimg.export.load_model`).
        frame: the set's manifest as :func:`medimg.data.manifest.load_manifest` returns it.
        classes: segmentation foreground class names.
        tolerance_mm: segmentation surface-Dice tolerance.
        repair_tilt: read gantry-tilted DICOM stacks as sheared affines.

    Returns:
        An :class:`EvalSet`: one output dict per case (``prob``/``pred`` and ``label``;
        segmentation ``pred_mask`` and ``mask`` on the image's grid) and, for segmentation,
        the per-case table with each image's own spacing and an image reader for overlays.
    """
    kind = model.task
    segmentation = kind == "segmentation"
    reader = load_transform(with_mask=segmentation, repair_tilt=repair_tilt)
    records = frame.to_dict("records")
    outputs, rows = [], []
    for record in records:
        fields = {keys.IMAGE: record[keys.IMAGE]}
        if segmentation:
            fields[keys.MASK] = record[keys.MASK]
        loaded = reader(fields)
        volume, affine = raw_volume(loaded[keys.IMAGE])
        output = model(volume, affine)
        batch: dict = {keys.CASE_ID: [record[keys.CASE_ID]]}
        if segmentation:
            mask = loaded[keys.MASK]
            reference = mask_on_image_grid(
                mask.as_tensor()[0].numpy(),
                mask.affine.numpy(),
                tuple(volume.shape),
                affine.numpy(),
            ).reshape(volume.shape)
            # Label maps only (uint8): native-grid probabilities of every case would not fit.
            labels = output.argmax(0).reshape(volume.shape).to(torch.uint8)
            batch["pred_mask"] = labels[None, None]
            batch[keys.MASK] = torch.as_tensor(reference, dtype=torch.uint8)[None, None]
            spacing = voxel_spacing(affine)
            rows += [
                {keys.CASE_ID: record[keys.CASE_ID], **row}
                for row in case_metrics(labels, reference, spacing, classes, tolerance_mm)
            ]
        else:
            batch["pred" if kind == "regression" else "prob"] = output.reshape(1, -1)
            batch[keys.LABEL] = torch.as_tensor(
                np.asarray(record[keys.LABEL], dtype=np.float32)
            ).reshape(1, -1)
        outputs.append(batch)
    if not segmentation:
        return EvalSet(outputs=outputs, manifest=frame)
    by_id = {r[keys.CASE_ID]: r for r in records}

    def image(case_id: str) -> np.ndarray:
        loaded = load_transform(with_mask=False, repair_tilt=repair_tilt)(
            {keys.IMAGE: by_id[case_id][keys.IMAGE]}
        )
        return raw_volume(loaded[keys.IMAGE])[0].numpy()

    return EvalSet(outputs=outputs, manifest=frame, image=image, cases=pd.DataFrame(rows))
