"""Run an exported model in a process that can import torch but not medimg or MONAI.

Usage: python parity_check.py MODEL INPUTS OUTPUT_JSON
MODEL is a .ts (TorchScript), .pt2 (torch.export) or .onnx (onnxruntime) file. INPUTS is a
file written by ``torch.save`` with lists ``volumes``, ``affines`` and ``expected``; the
script reports the largest absolute difference between the model's outputs and
``expected`` and, for label probabilities on a grid (C, X, Y, Z), the smallest Dice
between the two argmax label maps over foreground classes. It imports nothing of this
project on purpose: it proves the exported file is self-contained. Standalone file, not a
package module.
"""

import importlib.abc
import json
import sys

BLOCKED = ("medimg", "monai")


class _Block(importlib.abc.MetaPathFinder):
    """Refuse imports of the training framework, so a hidden dependency fails loudly."""

    def find_spec(self, name, path=None, target=None):  # noqa: D102
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be needed to run an exported model")
        return None


def _runner(model_path):
    """A callable (volume, affine) → tensor for the model file, by suffix."""
    import torch

    if model_path.endswith(".onnx"):
        import numpy as np
        import onnxruntime as ort

        session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(*inputs):
            feeds = dict(zip(names, (t.numpy() for t in inputs), strict=True))
            return torch.from_numpy(np.asarray(session.run(None, feeds)[0]))

        return run
    if model_path.endswith(".pt2"):
        return torch.export.load(model_path).module()
    model = torch.jit.load(model_path, map_location="cpu")
    return model.eval()


def _min_dice(got, expected):
    """Smallest Dice over foreground classes between two (C, ...) argmax label maps."""
    a, b = got.argmax(0), expected.argmax(0)
    worst = 1.0
    for label in range(1, got.shape[0]):
        x, y = a == label, b == label
        total = int(x.sum()) + int(y.sum())
        if total:
            worst = min(worst, 2.0 * int((x & y).sum()) / total)
    return worst


def main(model_path: str, inputs_path: str, output_path: str) -> None:
    sys.meta_path.insert(0, _Block())
    import torch

    run = _runner(model_path)
    data = torch.load(inputs_path, weights_only=True)
    worst, dice = 0.0, 1.0
    covariates = data.get("covariates") or [None] * len(data["volumes"])
    with torch.no_grad():
        for volume, affine, cov, expected in zip(
            data["volumes"], data["affines"], covariates, data["expected"], strict=True
        ):
            got = run(volume, affine) if cov is None else run(volume, affine, cov)
            expected = expected.reshape(got.shape)
            worst = max(worst, float((got - expected).abs().max()))
            if got.dim() >= 3:
                dice = min(dice, _min_dice(got, expected))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    report = {
        "n_cases": len(data["volumes"]),
        "max_abs_diff": worst,
        "min_dice": dice,
        "framework_modules_loaded": loaded,
    }
    with open(output_path, "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
