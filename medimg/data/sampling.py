"""Samplers: seeded class-balanced draws, and DDP shards that see every evaluation case once."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler, Sampler, WeightedRandomSampler


def class_balance_weights(labels: np.ndarray) -> np.ndarray:
    """One sampling weight per case, so that every class is drawn about equally often.

    Binary and multi-class labels ``(N,)``: the inverse frequency of the case's class.
    Multi-label targets ``(N, K)`` of 0/1: the inverse frequency of the case's rarest positive
    label (cases with no positive label form one more group of their own).

    Args:
        labels: class indices ``(N,)`` or a 0/1 matrix ``(N, K)``.

    Returns:
        Float64 weights ``(N,)`` (not normalised).

    Raises:
        ValueError: for missing or non-integer labels (e.g. a regression target), or an empty set.
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim not in (1, 2) or len(y) == 0:
        raise ValueError(f"data.balanced_sampling needs labels (N,) or (N, K), got shape {y.shape}")
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise ValueError(
            "data.balanced_sampling needs class labels (integers, 0/1 for multi-label), "
            "found missing or non-integer values (a regression target cannot be balanced)"
        )
    if y.ndim == 1:
        _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        return 1.0 / counts[inverse]
    positive = y > 0
    per_label = positive.sum(axis=0)
    # Rarest positive label of each case = the largest 1/frequency among its positives.
    inverse_freq = np.where(positive, 1.0 / np.maximum(per_label, 1), 0.0).max(axis=1)
    none = ~positive.any(axis=1)
    inverse_freq[none] = 1.0 / none.sum() if none.any() else 0.0
    return inverse_freq


def balanced_sampler(
    labels: np.ndarray, seed: int, num_samples: int | None = None
) -> WeightedRandomSampler:
    """A class-balanced ``WeightedRandomSampler`` (with replacement) drawn from a seeded generator.

    Args:
        labels: class indices ``(N,)`` or a multi-label 0/1 matrix ``(N, K)``.
        seed: seeds the draws (one generator, advancing from epoch to epoch).
        num_samples: draws per epoch (default: ``N``).

    Returns:
        The sampler.
    """
    weights = torch.as_tensor(class_balance_weights(labels), dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        weights, num_samples or len(weights), replacement=True, generator=generator
    )


class DistributedWeightedSampler(DistributedSampler):
    """Rank ``rank``'s shard of one seeded weighted draw (with replacement) per epoch.

    Every rank draws the same ``num_samples`` indices from ``seed + epoch`` and keeps every
    ``num_replicas``-th one, so the shards together are exactly one weighted draw, and a resumed
    run (Lightning calls ``set_epoch``) repeats the order of an uninterrupted one. torch has no
    distributed weighted sampler; subclassing ``DistributedSampler`` also tells Lightning the
    data is already sharded, so it never wraps this sampler a second time.

    Args:
        dataset: the dataset (only its length is used).
        weights: one non-negative weight per case.
        num_replicas: number of processes (world size).
        rank: this process's global rank.
        seed: seeds each epoch's draw.
        num_samples: draws per epoch over all ranks (default: the dataset length).
    """

    def __init__(
        self,
        dataset: Sized,
        weights: np.ndarray,
        num_replicas: int,
        rank: int,
        seed: int,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        if len(weights) != len(dataset):
            raise ValueError(f"got {len(weights)} sampling weights for {len(dataset)} cases")
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.total_size = num_samples or len(dataset)
        # Equal shard lengths keep DDP's collective calls in step across ranks.
        self.num_samples = math.ceil(self.total_size / num_replicas)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(
            self.weights, self.num_samples * self.num_replicas, True, generator=generator
        )
        return iter(draw[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def train_sampler(
    dataset: Sized,
    world_size: int,
    rank: int,
    seed: int,
    labels: np.ndarray | None = None,
    balanced: bool = False,
) -> Sampler[int]:
    """The training sampler: a seeded per-epoch shuffle (or balanced draw), sharded by rank.

    With one process this is still a ``DistributedSampler`` (one replica): Lightning calls its
    ``set_epoch``, so a resumed run sees the same order as an uninterrupted one.

    Args:
        dataset: the training dataset.
        world_size: number of processes (``trainer.world_size``).
        rank: this process's global rank (``trainer.global_rank``).
        seed: seeds the order.
        labels: per-case targets, required when ``balanced``.
        balanced: draw class-balanced (with replacement) instead of shuffling.

    Returns:
        The sampler for this rank.
    """
    if not balanced:
        return DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
    if labels is None:
        raise ValueError("balanced training sampling needs the training labels")
    return DistributedWeightedSampler(
        dataset, class_balance_weights(labels), num_replicas=world_size, rank=rank, seed=seed
    )


def eval_sampler(dataset: Sized, world_size: int, rank: int) -> UnrepeatedDistributedSampler:
    """Rank ``rank``'s in-order share of an evaluation set, with no case repeated.

    torch's ``DistributedSampler`` pads uneven sets by repeating cases, which shifts metrics;
    Lightning's unrepeated sampler lets the ranks' shares differ by one instead, so metrics
    gathered across ranks (torchmetrics) see each case exactly once.

    Args:
        dataset: the validation or test dataset.
        world_size: number of processes.
        rank: this process's global rank.

    Returns:
        The sampler.

    Raises:
        ValueError: when a non-empty set has fewer cases than processes (a rank would get no
            batch while the others wait for it).
    """
    if 0 < len(dataset) < world_size:
        raise ValueError(
            f"an evaluation set of {len(dataset)} cases cannot be shared by {world_size} "
            "processes: use fewer devices or a larger split"
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
