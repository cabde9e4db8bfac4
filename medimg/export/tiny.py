"""Tiny untrained diagnostic models with a minimal card, for demos, tests and benchmarks.

They exercise the whole path (preprocessing, network, way back, card, seal, DICOM output)
in a fraction of a second without a training run; their predictions mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.export.card import (
    CARD_FORMAT,
    DEFAULT_INTENDED_USE,
    input_contract,
    operating_point,
    output_contract,
)
from medimg.export.codes import label_entries
from medimg.export.diagnostic import DiagnosticModel, build_diagnostic
from medimg.export.model_file import FORMATS, export_model, weights_sha256, write_sidecar

TINY_PREPROCESS = PreprocessConfig(
    spacing=(8.0, 8.0, 8.0), size=(24, 24, 20), window=(-200.0, 300.0), fill_value=-1024.0
)
LABELS = {"classification": ["no_lesion", "lesion"], "segmentation": ["background", "lesion"]}


TINY_PREPROCESS_2D = PreprocessConfig(
    spacing=(5.6, 5.6), size=(64, 64), window=None, fill_value=0.0, normalise="percentile"
)


def tiny_model(
    kind: str, seed: int = 0, preprocess: PreprocessConfig = TINY_PREPROCESS
) -> DiagnosticModel:
    """A small MONAI DenseNet (binary classification) or UNet (2-class segmentation).

    2D when ``preprocess`` has a 2D grid (e.g. :data:`TINY_PREPROCESS_2D`).
    """
    from monai.networks.nets import DenseNet, UNet

    torch.manual_seed(seed)
    dims = len(preprocess.size)
    if kind == "classification":
        net = DenseNet(dims, 1, 1, init_features=4, growth_rate=4, block_config=(2, 2), bn_size=2)
        num_classes = 1
    else:
        net = UNet(dims, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
        num_classes = 2
    return build_diagnostic(VolumePreprocessor(preprocess), net, kind, num_classes)


def tiny_card(model: DiagnosticModel, preprocess: PreprocessConfig = TINY_PREPROCESS) -> dict:
    """A minimal model card for a tiny model (same sections as a trained model's card)."""
    kind = model.kind
    labels = LABELS[kind]
    num_classes = 1 if kind == "classification" else 2
    prep = {
        "spacing": list(preprocess.spacing),
        "size": list(preprocess.size),
        "window": list(preprocess.window) if preprocess.window else None,
        "fill_value": preprocess.fill_value,
        "normalise": getattr(preprocess, "normalise", "window"),
    }
    modality = "CT" if len(preprocess.size) == 3 else "DX"
    return {
        "format": CARD_FORMAT,
        "experiment": f"tiny-{kind}",
        "intended_use": DEFAULT_INTENDED_USE + " Untrained demonstration model.",
        "task": kind,
        "num_classes": num_classes,
        "label_names": labels,
        "labels": label_entries(labels),
        "input": input_contract({"modality": [modality]}, prep),
        "output": output_contract(kind, num_classes),
        "network_input_shape": [1, 1, *preprocess.size],
        "preprocessing": prep,
        "validation": {"internal": {}, "external": {}},
        "metrics": {},
        "operating_point": operating_point(kind, None),
        "weights_sha256": weights_sha256(model.net),
    }


def export_tiny(
    kind: str,
    folder: str | Path,
    fmt: str = "torchscript",
    example: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    preprocess: PreprocessConfig = TINY_PREPROCESS,
) -> Path:
    """Export a tiny model of ``kind`` into ``folder`` (with its sidecar card)."""
    model = tiny_model(kind, seed, preprocess)
    path = Path(folder) / f"model{FORMATS[fmt]}"
    path, card = export_model(model, path, tiny_card(model, preprocess), fmt, example)
    write_sidecar(path, card)
    return path
