"""Ratio benchmark: medimg's training loop vs a hand-written PyTorch + MONAI loop.

Both train the same MONAI DenseNet121 on the same in-memory batches (same batch size, same
optimiser) in one process, alternating, and report steps per second after a warm-up. The figure
of merit is medimg ÷ plain (goal ≥ 0.95). Run: `make bench` or
`python benchmarks/bench_train_loop.py --steps 30 --repeats 3`.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from monai.networks.nets import DenseNet121
from torch.utils.data import DataLoader, Dataset

from medimg.tasks import ClassificationTask


class InMemory(Dataset):
    """Records shaped like medimg's batches, served from memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "case_id": str(i)}


class StepClock(Callback):
    """Times training steps after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.end, self.steps = time.perf_counter(), batch_idx - self.warmup + 1


def make_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return DenseNet121(spatial_dims=3, in_channels=1, out_channels=1)


def plain_loop(data: InMemory, batch: int, steps: int, warmup: int) -> float:
    """Hand-written loop: DataLoader → forward → BCE → backward → AdamW step."""
    net = make_net(0).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = DataLoader(data, batch_size=batch, shuffle=True)
    start, done = 0.0, 0
    while done < steps + warmup:
        for record in loader:
            if done == warmup:
                start = time.perf_counter()
            logits = net(record["image"]).reshape(-1)
            loss = F.binary_cross_entropy_with_logits(logits, record["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps + warmup:
                break
    return steps / (time.perf_counter() - start)


def medimg_loop(data: InMemory, batch: int, steps: int, warmup: int) -> float:
    """medimg's ClassificationTask under a Lightning Trainer, as scripts/train.py builds it."""
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)
    task = ClassificationTask(make_net(0), optimizer=optimizer, num_classes=1)
    clock = StepClock(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(task, train_dataloaders=DataLoader(data, batch_size=batch, shuffle=True))
    return clock.steps / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    n = args.batch * (args.steps + args.warmup)
    data = InMemory(
        torch.rand(n, 1, args.size, args.size, args.size, generator=generator),
        (torch.rand(n, generator=generator) > 0.5).float(),
    )
    plain, ours = [], []
    for _ in range(args.repeats):  # alternate so drift in machine load hits both alike
        plain.append(plain_loop(data, args.batch, args.steps, args.warmup))
        ours.append(medimg_loop(data, args.batch, args.steps, args.warmup))
    ratios = [o / p for o, p in zip(ours, plain, strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "train steps/s, DenseNet121 3D",
                "input": [args.batch, 1, args.size, args.size, args.size],
                "plain_steps_per_s": [round(v, 4) for v in plain],
                "medimg_steps_per_s": [round(v, 4) for v in ours],
                "ratio_median": round(statistics.median(ratios), 4),
                "ratios": [round(r, 4) for r in ratios],
                "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
