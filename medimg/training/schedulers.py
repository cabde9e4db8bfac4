"""Learning-rate schedules that torch builds from parts (warm-up followed by cosine decay)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def cosine_with_warmup(
    optimizer: Optimizer,
    warmup_epochs: int,
    max_epochs: int,
    start_factor: float = 0.1,
    eta_min: float = 0.0,
) -> LRScheduler:
    """Linear warm-up from ``start_factor * lr`` to ``lr``, then cosine decay to ``eta_min``.

    Stepped once per epoch (the tasks schedule with ``interval: epoch``). torch has both parts
    but no single scheduler for the pair, so this joins them with ``SequentialLR``; the result
    saves and restores its state with the checkpoint like any torch scheduler.

    Args:
        optimizer: the optimiser whose learning rates are scheduled.
        warmup_epochs: epochs of linear warm-up (0: cosine decay only).
        max_epochs: total training epochs (``trainer.max_epochs``); the cosine part spans
            ``max_epochs - warmup_epochs``.
        start_factor: fraction of the base learning rate in the first epoch, in (0, 1].
        eta_min: learning rate at the end of the cosine decay.

    Returns:
        The scheduler.

    Raises:
        ValueError: when the epochs or the start factor are out of range.
    """
    if warmup_epochs < 0 or warmup_epochs >= max_epochs:
        raise ValueError(
            f"scheduler.warmup_epochs must be in [0, trainer.max_epochs={max_epochs}), "
            f"got {warmup_epochs}"
        )
    if not 0.0 < start_factor <= 1.0:
        raise ValueError(f"scheduler.start_factor must be in (0, 1], got {start_factor}")
    cosine = CosineAnnealingLR(optimizer, T_max=max_epochs - warmup_epochs, eta_min=eta_min)
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(
        optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_epochs
    )
    return SequentialLR(optimizer, schedulers=[warmup, cosine], milestones=[warmup_epochs])
