"""Epoch metrics a task accumulates that no library ships in a process-synchronised form."""

from __future__ import annotations

import torch
from monai.metrics import compute_dice
from torch import Tensor
from torchmetrics import Metric


class ForegroundDice(Metric):
    """Per-class Dice over cases, summed in torchmetrics states so DDP ranks agree.

    MONAI computes each case's Dice (``compute_dice``, empty reference → NaN); MONAI's
    ``DiceMetric`` keeps those in a per-process buffer that DDP does not gather, so the sums and
    counts live here as torchmetrics states reduced by summation across processes.

    Args:
        num_classes: channels including background; Dice is reported for classes 1..C-1.
    """

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        zeros = torch.zeros(num_classes - 1, dtype=torch.float64)
        self.add_state("dice_sum", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("cases", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, pred: Tensor, ref: Tensor) -> None:
        """Add a batch of label maps, each ``(B, 1, *spatial)`` integer."""
        pred_hot = torch.nn.functional.one_hot(pred[:, 0].long(), self.num_classes).movedim(-1, 1)
        ref_hot = torch.nn.functional.one_hot(ref[:, 0].long(), self.num_classes).movedim(-1, 1)
        dice = compute_dice(pred_hot, ref_hot, include_background=False, ignore_empty=True)
        valid = ~torch.isnan(dice)
        self.dice_sum += torch.where(valid, dice, 0.0).sum(0).double()
        self.cases += valid.sum(0).double()

    def compute(self) -> Tensor:
        """Mean Dice per foreground class over cases with that class in the reference (NaN: none)."""
        return torch.where(self.cases > 0, self.dice_sum / self.cases.clamp(min=1), torch.nan)
