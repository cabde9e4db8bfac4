"""Starting a network from a user's weight file, and freezing all but its head."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from monai.networks.nets import DenseNet, EfficientNet, ResNet, SENet, ViT
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from medimg.nets.fusion import FusionNet

log = logging.getLogger(__name__)

# The classification layer of each MONAI classifier family (checked against MONAI 1.6's
# modules: DenseNet.class_layers, ResNet.fc, EfficientNet._fc, SENet.last_linear,
# ViT.classification_head).
HEADS: dict[type[nn.Module], list[str]] = {
    DenseNet: ["class_layers"],
    ResNet: ["fc"],
    EfficientNet: ["_fc"],
    SENet: ["last_linear"],
    ViT: ["classification_head"],
}

_SHOWN = 8  # keys listed per kind of problem in an error message


class LoadReport(NamedTuple):
    """What :func:`load_weights` could not load (empty lists after a strict load)."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a plain state_dict or of a Lightning checkpoint's ``net.`` keys."""
    if not path.is_file():
        raise FileNotFoundError(f"init.weights: no such file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a weight file"
        raise ValueError(
            f"init.weights: {path} is not a weight file torch.load can read with "
            f"weights_only=True ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err
    lightning = isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
    if lightning:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"init.weights: {path} holds no state_dict (got {type(obj).__name__})")
    state = dict(obj)
    if lightning:  # the task's network is its "net." entries (the rest is loss, scaling...)
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
        if not state:
            raise ValueError(f"init.weights: the Lightning checkpoint {path} has no 'net.' keys")
    elif all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped network
        state = {k[7:]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"init.weights: {path} has non-tensor entries: {bad[:_SHOWN]}")
    return state


def _compare(net: nn.Module, state: Mapping[str, Tensor]) -> LoadReport:
    own = net.state_dict()
    return LoadReport(
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        mismatched=[
            f"{k}: file {tuple(v.shape)} vs network {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ],
    )


def load_weights(net: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a user's weights into ``net`` (read with ``weights_only=True``).

    The file may be a plain ``state_dict`` or a Lightning checkpoint, whose ``net.``-prefixed
    keys are the network's. A :class:`FusionNet` whose own keys match nothing in the file takes
    the file into its ``image_net`` (a pretrained image network).

    Args:
        net: the freshly built network.
        path: the weight file.
        strict: refuse any missing, unexpected or shape-mismatched key. Without it, matching
            keys are loaded and the rest reported.

    Returns:
        The keys that were not loaded.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a weight file, or its keys do not fit the network.
    """
    path = Path(path)
    state = _read_state_dict(path)
    target = net
    if isinstance(net, FusionNet) and not set(state) & set(net.state_dict()):
        target = net.image_net
    report = _compare(target, state)
    loadable = {k: v for k, v in state.items() if k in target.state_dict()}
    loadable = {k: v for k, v in loadable.items() if v.shape == target.state_dict()[k].shape}
    problems = [
        f"{what} ({len(keys)}): {keys[:_SHOWN]}{' ...' if len(keys) > _SHOWN else ''}"
        for what, keys in zip(
            ("missing keys", "unexpected keys", "shape mismatches"), report, strict=True
        )
        if keys
    ]
    if (strict and problems) or not loadable:
        raise ValueError(
            f"init.weights: {path} does not fit the network {type(target).__name__}: "
            + ("; ".join(problems) if problems else "no matching key")
            + ("" if strict else " (nothing could be loaded)")
            + (". Set init.strict=false to load the keys that match." if strict else "")
        )
    target.load_state_dict(loadable, strict=False)
    log.info(
        "loaded %d tensors from the init weights into %s (%d missing, %d unexpected, %d mismatched)",
        len(loadable),
        type(target).__name__,
        *map(len, report),
    )
    return report


def default_head(net: nn.Module) -> list[str]:
    """The module names :func:`freeze_encoder` keeps trainable for a known network class.

    Raises:
        ValueError: for a class without a known head.
    """
    if isinstance(net, FusionNet):
        # The fusion head and the image network's own last layer (which makes its features).
        return ["head", *(f"image_net.{name}" for name in default_head(net.image_net))]
    for cls, names in HEADS.items():
        if isinstance(net, cls):
            return list(names)
    raise ValueError(
        f"init.head: no default head for {type(net).__name__}; name the trainable modules in "
        f"init.head, e.g. one of {[n for n, _ in net.named_children()]}"
    )


def freeze_encoder(net: nn.Module, head: Sequence[str] | None = None) -> list[str]:
    """Freeze every parameter of ``net`` except those of the ``head`` modules.

    The frozen part's normalisation layers keep their running statistics too: a task holds them
    in eval mode while it trains (:func:`hold_frozen_norms`), as fine-tuning a pretrained encoder
    expects.

    Args:
        net: the network.
        head: dotted module names to keep trainable; None uses :func:`default_head`.

    Returns:
        The names of the parameters left trainable.

    Raises:
        ValueError: a head name that is no module of ``net``, or a head without parameters.
    """
    names = list(default_head(net) if head is None else head)
    modules = dict(net.named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        children = [n for n, _ in net.named_children()]
        raise ValueError(
            f"init.head: {unknown} are not modules of {type(net).__name__} "
            f"(its top-level modules: {children})"
        )
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    trainable = []
    for name, parameter in net.named_parameters():
        if any(name.startswith(f"{h}.") for h in names):
            parameter.requires_grad_(True)
            trainable.append(name)
    if not trainable:
        raise ValueError(f"init.head: the modules {names} of {type(net).__name__} have no weights")
    return trainable


def hold_frozen_norms(net: nn.Module) -> int:
    """Put the frozen normalisation layers of ``net`` in eval mode; returns how many.

    A layer counts as frozen when it tracks running statistics and has weights, none of them
    trainable (:func:`freeze_encoder` leaves it so). In eval mode it normalises with, and keeps,
    the statistics it was loaded with, instead of the current batch's. Call after ``train()``.
    """
    held = 0
    for module in net.modules():
        if not isinstance(module, _NormBase) or not module.track_running_stats:
            continue
        parameters = list(module.parameters(recurse=False))
        if parameters and not any(p.requires_grad for p in parameters):
            module.eval()
            held += 1
    return held


def apply_init(
    net: nn.Module,
    weights: str | Path | None = None,
    strict: bool = True,
    freeze_encoder: bool = False,
    head: Sequence[str] | None = None,
) -> nn.Module:
    """Initialise a freshly built network from ``cfg.init`` (the pipeline calls this).

    Args:
        net: the network.
        weights: a weight file (state_dict or Lightning checkpoint), or None.
        strict: see :func:`load_weights`.
        freeze_encoder: train only the head (see :func:`freeze_encoder`).
        head: module names of the head; None uses the network class's default.

    Returns:
        ``net``, changed in place.
    """
    if head is not None and not freeze_encoder:
        raise ValueError("init.head is only used with init.freeze_encoder=true")
    if weights is not None:
        load_weights(net, weights, strict=strict)
    if freeze_encoder:
        trainable = _freeze(net, head)
        log.info("froze the encoder: %d parameter tensors left trainable", len(trainable))
    return net


_freeze = freeze_encoder  # the argument of apply_init shadows the function's name
