"""Samplers: balanced draws balance, seeds repeat, DDP evaluation shards see every case once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from medimg.data.sampling import (
    DistributedWeightedSampler,
    balanced_sampler,
    class_balance_weights,
    eval_sampler,
    train_sampler,
)


def _drawn(sampler, epoch: int | None = None) -> list[int]:
    if epoch is not None:
        sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize(
    "counts", [(90, 10), (70, 20, 10), (5, 60, 35)], ids=["binary", "3class", "3class-b"]
)
def test_balanced_sampler_draws_each_class_about_equally(counts):
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.float32)
    n_draws = 30_000
    drawn = labels[_drawn(balanced_sampler(labels, seed=3, num_samples=n_draws))]
    shares = np.bincount(drawn.astype(int), minlength=len(counts)) / n_draws
    # Binomial standard error at n = 30 000 is < 0.003; 0.02 is ~7 of them.
    np.testing.assert_allclose(shares, 1 / len(counts), atol=0.02)


def test_multilabel_weights_follow_the_rarest_positive_label():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < [0.5, 0.1, 0.03]).astype(np.float32)
    weights = class_balance_weights(labels)
    freq = labels.sum(axis=0)
    n_none = int((labels.sum(axis=1) == 0).sum())
    for row, weight in zip(labels, weights, strict=True):  # an independent, per-case reference
        positives = [1 / freq[k] for k in range(3) if row[k] == 1]
        assert weight == pytest.approx(max(positives) if positives else 1 / n_none)
    # The rarest finding is drawn far more often than its share of the data.
    drawn = labels[_drawn(balanced_sampler(labels, seed=1, num_samples=20_000))]
    assert drawn[:, 2].mean() > 5 * labels[:, 2].mean()


def test_balanced_sampler_repeats_for_the_same_seed_only():
    labels = np.array([0] * 30 + [1] * 5)
    first = _drawn(balanced_sampler(labels, seed=7))
    assert first == _drawn(balanced_sampler(labels, seed=7))
    assert first != _drawn(balanced_sampler(labels, seed=8))
    assert len(first) == len(labels)


@pytest.mark.parametrize(
    "labels", [np.array([0.3, 1.7, 2.2]), np.array([0.0, np.nan, 1.0]), np.zeros((0,))]
)
def test_balanced_sampling_refuses_non_class_labels(labels):
    with pytest.raises(ValueError, match="data.balanced_sampling needs"):
        class_balance_weights(labels)


@pytest.mark.parametrize("n_cases, world_size", [(10, 3), (11, 4), (7, 2), (5, 5), (9, 1)])
def test_eval_sampler_covers_every_case_exactly_once(n_cases, world_size):
    dataset = list(range(n_cases))
    shards = [list(eval_sampler(dataset, world_size, rank)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == dataset
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for rank, shard in enumerate(shards):
        assert len(eval_sampler(dataset, world_size, rank)) == len(shard)


def test_eval_sampler_refuses_fewer_cases_than_processes():
    with pytest.raises(ValueError, match="3 cases cannot be shared by 4 processes"):
        eval_sampler(list(range(3)), 4, 0)


def test_train_sampler_shards_a_seeded_per_epoch_shuffle():
    dataset = list(range(12))
    samplers = [train_sampler(dataset, 3, rank, seed=5) for rank in range(3)]
    epoch0 = [_drawn(s, 0) for s in samplers]
    assert sorted(i for shard in epoch0 for i in shard) == dataset  # disjoint, complete
    assert epoch0 == [_drawn(train_sampler(dataset, 3, r, seed=5), 0) for r in range(3)]
    assert epoch0 != [_drawn(s, 1) for s in samplers]
    # One process: a plain seeded shuffle, as torch's own sampler does it.
    single = train_sampler(dataset, 1, 0, seed=5)
    reference = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=5)
    assert _drawn(single, 2) == _drawn(reference, 2)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_balanced_ddp_shards_are_one_weighted_draw(world_size):
    labels = np.array([0] * 20 + [1] * 4 + [2] * 1)
    dataset = list(range(len(labels)))
    shards = [
        _drawn(train_sampler(dataset, world_size, r, seed=11, labels=labels, balanced=True), 4)
        for r in range(world_size)
    ]
    assert len({len(s) for s in shards}) == 1  # equal lengths keep DDP ranks in step
    per_rank = len(shards[0])
    interleaved = [shards[r][i] for i in range(per_rank) for r in range(world_size)]
    weights = torch.as_tensor(class_balance_weights(labels), dtype=torch.double)
    generator = torch.Generator().manual_seed(11 + 4)
    reference = torch.multinomial(weights, per_rank * world_size, True, generator=generator)
    assert interleaved == reference.tolist()


def test_balanced_train_sampler_is_left_alone_by_lightning():
    # Lightning wraps any sampler that is not a DistributedSampler a second time under DDP.
    sampler = train_sampler(
        list(range(4)), 2, 1, seed=0, labels=np.array([0, 1, 1, 1]), balanced=True
    )
    assert isinstance(sampler, DistributedSampler)
    assert isinstance(sampler, DistributedWeightedSampler)


def test_balanced_train_sampler_needs_labels():
    with pytest.raises(ValueError, match="needs the training labels"):
        train_sampler(list(range(4)), 1, 0, seed=0, balanced=True)
