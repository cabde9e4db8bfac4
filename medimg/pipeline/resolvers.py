"""OmegaConf resolvers the configs use (``${len:...}``), registered once per process."""

from __future__ import annotations

from collections.abc import Sized

from omegaconf import OmegaConf


def _length(value: Sized) -> int:
    """``${len:${preprocess.size}}``: 2 for a 2D size list, 3 for a 3D one."""
    return len(value)


def register_resolvers() -> None:
    """Register the project's resolvers; calling it again is harmless (same function, replaced)."""
    OmegaConf.register_new_resolver("len", _length, replace=True)
