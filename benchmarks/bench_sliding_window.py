"""Ratio benchmark: SegmentationTask's sliding-window inference vs MONAI's, called directly.

One process, one MONAI 3D UNet (the `net=unet` config), one volume; the two sides alternate
within each repeat so drift in machine load hits both alike. The figure of merit is
medimg ÷ direct seconds per volume (goal ≤ 1.05). Run:
`python benchmarks/bench_sliding_window.py` (about 1.5 min here).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from medimg.tasks import SegmentationTask


def seconds_per_call(run: Callable[[], torch.Tensor], calls: int) -> float:
    """Mean wall time of ``calls`` runs."""
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64])
    parser.add_argument("--roi", type=int, default=48)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--sw-batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2).eval()
    roi = [args.roi] * 3
    settings = {"roi_size": roi, "sw_batch_size": args.sw_batch_size, "overlap": args.overlap}
    task = SegmentationTask(
        net, functools.partial(torch.optim.AdamW), inference={**settings, "mode": "gaussian"}
    ).eval()
    image = torch.rand(1, 1, *args.shape, generator=torch.Generator().manual_seed(1))

    def direct() -> torch.Tensor:
        return sliding_window_inference(
            image, roi, args.sw_batch_size, net, overlap=args.overlap, mode="gaussian"
        )

    def ours() -> torch.Tensor:
        return task.infer(image)

    with torch.inference_mode():
        max_diff = (ours() - direct()).abs().max().item()  # also the warm-up of both sides
        plain, medimg = [], []
        for _ in range(args.repeats):
            plain.append(seconds_per_call(direct, args.calls))
            medimg.append(seconds_per_call(ours, args.calls))
    ratios = [m / p for m, p in zip(medimg, plain, strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "sliding-window inference, MONAI UNet 3D, gaussian blending",
                "input": [1, 1, *args.shape],
                "roi_size": roi,
                "overlap": args.overlap,
                "sw_batch_size": args.sw_batch_size,
                "direct_s": [round(v, 4) for v in plain],
                "medimg_s": [round(v, 4) for v in medimg],
                "ratio_median": round(statistics.median(ratios), 4),
                "ratio_of_medians": round(statistics.median(medimg) / statistics.median(plain), 4),
                "ratios": [round(r, 4) for r in ratios],
                "max_abs_diff": max_diff,
                "machine": (
                    f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                    f"torch {torch.__version__}"
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
