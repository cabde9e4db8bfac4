"""Adapters for networks whose forward returns more than the logits the tasks expect."""

from __future__ import annotations

from torch import Tensor, nn


class FirstOutput(nn.Module):
    """Returns only the first output of a network that returns a tuple.

    MONAI's ``ViT`` returns ``(logits, hidden_states)``; the tasks, the metrics and the export
    expect a tensor, so the classification configs wrap it here instead of subclassing it.

    Args:
        net: the wrapped network.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        out = self.net(image)
        return out[0] if isinstance(out, tuple | list) else out
