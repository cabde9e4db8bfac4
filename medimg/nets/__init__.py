"""Networks beyond MONAI's (image + covariate fusion) and their initialisation from a file."""

from medimg.nets.fusion import FusionNet
from medimg.nets.init import (
    apply_init,
    default_head,
    freeze_encoder,
    hold_frozen_norms,
    load_weights,
)

__all__ = [
    "FusionNet",
    "apply_init",
    "default_head",
    "freeze_encoder",
    "hold_frozen_norms",
    "load_weights",
]
