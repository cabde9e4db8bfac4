"""Run an exported model in a process that can import torch but not medimg or MONAI.

Usage: python parity_check.py MODEL INPUTS OUTPUT_JSON
INPUTS is a file written by ``torch.save`` with lists ``volumes``, ``affines`` and ``expected``;
the script reports the largest absolute difference between the model's outputs and
``expected``. It imports nothing of this project on purpose: it proves the exported file is
self-contained. Standalone file, not a package module.
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


def main(model_path: str, inputs_path: str, output_path: str) -> None:
    sys.meta_path.insert(0, _Block())
    import torch

    model = torch.jit.load(model_path, map_location="cpu")
    model.eval()
    data = torch.load(inputs_path, weights_only=True)
    worst = 0.0
    with torch.no_grad():
        for volume, affine, expected in zip(
            data["volumes"], data["affines"], data["expected"], strict=True
        ):
            got = model(volume, affine)
            worst = max(worst, float((got - expected.reshape(got.shape)).abs().max()))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    report = {
        "n_cases": len(data["volumes"]),
        "max_abs_diff": worst,
        "framework_modules_loaded": loaded,
    }
    with open(output_path, "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
