"""OmegaConf resolvers the configs use (``${len:...}``, ``${channels_first:...}``), registered once
per process."""

from __future__ import annotations

from collections.abc import Sequence, Sized

from omegaconf import OmegaConf


def _length(value: Sized) -> int:
    """``${len:${preprocess.size}}``: 2 for a 2D size list, 3 for a 3D one."""
    return len(value)


def _channels_first(channels: int, size: Sequence[int]) -> list[int]:
    """``${channels_first:1,${preprocess.size}}``: an input shape (C, *spatial) for MONAI."""
    return [int(channels), *(int(n) for n in size)]


def register_resolvers() -> None:
    """Register the project's resolvers; calling it again is harmless (same function, replaced)."""
    OmegaConf.register_new_resolver("len", _length, replace=True)
    OmegaConf.register_new_resolver("channels_first", _channels_first, replace=True)
