"""Exported diagnostic models: packaging, model cards, checksums and parity checks.

``export_model(model, path, card, fmt)`` writes a sealed model file; ``load_model(path)``
verifies it byte for byte and returns a callable; ``read_card(path)`` gives its card.
"""

from medimg.export.integrity import ChecksumError
from medimg.export.model_file import (
    FORMATS,
    LoadedModel,
    PreparedExport,
    export_model,
    load_model,
    prepare_export,
    read_card,
    weights_sha256,
    write_sidecar,
)

__all__ = [
    "FORMATS",
    "ChecksumError",
    "LoadedModel",
    "PreparedExport",
    "prepare_export",
    "export_model",
    "load_model",
    "read_card",
    "weights_sha256",
    "write_sidecar",
]
