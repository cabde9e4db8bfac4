"""Ratio benchmark: an exported diagnostic model vs the framework's eager modules, same input.

Both sides take the same raw volume (64×64×40, 3×3×4 mm, LPS, like the built-in CT) and its
affine and do the same work: resample + window (``VolumePreprocessor``), the MONAI network,
the activation and, for segmentation, the mapping back onto the input grid. The eager side is
the framework's own ``DiagnosticModel`` in plain PyTorch; the exported side is the file written
by ``medimg.export.export_model`` and loaded by ``load_model`` (checksum-verified). Batch 1,
steady state: warm-up calls, then sides alternate call by call; the figure of merit is the
median of per-repeat ratios exported ÷ eager (goal ≤ 1.05).

Cold start: a fresh Python process imports, verifies and loads the file and makes the first
call (medimg's ``load_model``), and the same with torch alone (``torch.jit.load`` /
``torch.export.load`` / onnxruntime, no checksum), which is what an integrator's process pays.

Run: ``python benchmarks/bench_export.py [--kinds classification segmentation]
[--formats torchscript torch_export onnx] [--repeats 5] [--calls 10]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.export import FORMATS, export_model, load_model, weights_sha256
from medimg.export.diagnostic import build_diagnostic

PREPROCESS = PreprocessConfig(spacing=(4.0, 4.0, 4.0), size=(48, 48, 40), window=(-200.0, 300.0))
COLD = """
import json, sys, time
t0 = time.perf_counter()
import torch
path, inputs, mode = sys.argv[1], sys.argv[2], sys.argv[3]
volume, affine = torch.load(inputs, weights_only=True)
t1 = time.perf_counter()
if mode == "medimg":
    from medimg.export import load_model
    model = load_model(path)
elif path.endswith(".onnx"):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    model = lambda v, a: session.run(None, dict(zip(names, (v.numpy(), a.numpy()))))
elif path.endswith(".pt2"):
    model = torch.export.load(path).module()
else:
    model = torch.jit.load(path).eval()
t2 = time.perf_counter()
with torch.no_grad():
    model(volume, affine)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2}))
"""


def make_model(kind: str):
    """The default experiments' networks (cls3d: DenseNet121, seg3d: UNet), random weights."""
    from monai.networks.nets import DenseNet121, UNet

    torch.manual_seed(0)
    if kind == "classification":
        net, classes = DenseNet121(spatial_dims=3, in_channels=1, out_channels=1), 1
    else:
        net = UNet(3, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
        classes = 2
    return build_diagnostic(VolumePreprocessor(PREPROCESS), net, kind, classes)


def example_input() -> tuple[torch.Tensor, torch.Tensor]:
    """A CT-like raw volume (HU) and its affine (3×3×4 mm, LPS axes like DICOM)."""
    generator = torch.Generator().manual_seed(0)
    volume = torch.randn(64, 64, 40, generator=generator) * 200.0
    affine = torch.diag(torch.tensor([-3.0, -3.0, 4.0, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([96.0, 96.0, -80.0], dtype=torch.float64)
    return volume, affine


def steady_state(eager, exported, inputs, repeats: int, calls: int, warmup: int = 3) -> dict:
    """Per-call seconds of both sides, alternating; ratio per repeat and its median."""
    with torch.no_grad():
        for _ in range(warmup):
            eager(*inputs)
            exported(*inputs)
        ratios, eager_s, exported_s = [], [], []
        for _ in range(repeats):
            times = {"eager": [], "exported": []}
            for _ in range(calls):
                for name, fn in (("eager", eager), ("exported", exported)):
                    start = time.perf_counter()
                    fn(*inputs)
                    times[name].append(time.perf_counter() - start)
            e, x = statistics.median(times["eager"]), statistics.median(times["exported"])
            eager_s.append(e)
            exported_s.append(x)
            ratios.append(x / e)
    return {
        "eager_s": statistics.median(eager_s),
        "exported_s": statistics.median(exported_s),
        "ratio": statistics.median(ratios),
        "ratios": [round(r, 3) for r in ratios],
    }


def cold_start(path: Path, inputs_path: Path, mode: str) -> dict:
    """Import + load + first call in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", COLD, str(path), str(inputs_path), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["classification", "segmentation"])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    inputs = example_input()
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                "python": platform.python_version(),
                "torch": torch.__version__,
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    )
    with tempfile.TemporaryDirectory(prefix="medimg-bench-export-") as scratch:
        inputs_path = Path(scratch) / "inputs.pt"
        torch.save(inputs, inputs_path)
        for kind in args.kinds:
            eager = make_model(kind).eval()
            card = {"task": kind, "weights_sha256": weights_sha256(eager.net)}
            for fmt in args.formats:
                path = Path(scratch) / kind / f"model{FORMATS[fmt]}"
                start = time.perf_counter()
                export_model(eager, path, card, fmt, inputs)
                export_s = time.perf_counter() - start
                exported = load_model(path)
                row = {"kind": kind, "format": fmt, "export_s": round(export_s, 2)}
                row.update(steady_state(eager, exported, inputs, args.repeats, args.calls))
                row["cold_medimg"] = cold_start(path, inputs_path, "medimg")
                row["cold_torch_only"] = cold_start(path, inputs_path, "torch")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
