"""The TorchScript siblings: ``torch.export`` programs (.pt2) and ONNX (.onnx), sealed.

Both trace the same :class:`DiagnosticModel` on one example input. Tracing records the
preprocessing's sampling grid for the example's shape: ``VolumePreprocessor.grid_affine``
computes it from Python ints, which ``torch.export`` specialises. So these files accept
volumes of exactly the example's shape (the card says which); the program refuses other
shapes (guards in .pt2, static input dims in ONNX) rather than computing a wrong grid.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from medimg.export.diagnostic import DiagnosticModel
from medimg.export.integrity import seal, verify
from medimg.files import write_atomic

log = logging.getLogger(__name__)
# The ONNX optimiser logs every folded initializer at INFO level.
logging.getLogger("onnxscript").setLevel(logging.WARNING)
CARD_NAME = "model_card.json"
ONNX_CARD_KEY = "medimg.model_card"
ONNX_INPUTS = ("volume", "affine", "covariates")
ONNX_OUTPUT = "output"
SHAPE_GAP = (
    "input shape fixed to the export example's {shape}: the preprocessing computes its "
    "sampling grid from the input shape as Python integers "
    "(medimg.data.preprocess.VolumePreprocessor.grid_affine), which {fmt} specialises; other "
    "shapes are refused. The TorchScript format has no such limit."
)


def trace_program(model: DiagnosticModel, example: tuple[Tensor, ...]):
    """``torch.export`` the model on ``example``; returns the program and the format facts."""
    dynamic = ({i: torch.export.Dim.AUTO for i in range(example[0].dim())},) + (None,) * (
        len(example) - 1
    )
    with torch.no_grad():
        program = torch.export.export(model.eval(), example, dynamic_shapes=dynamic)
    user_inputs = [n for n in program.graph.nodes if n.op == "placeholder"][-len(example) :]
    shape = [int(d) if is_concrete_int(d) else None for d in user_inputs[0].meta["val"].shape]
    return program, _facts("torch_export", shape)


def save_torch_export(program, path: str | Path, card: dict) -> Path:
    """Write a sealed .pt2 with ``card`` embedded, atomically."""
    text = json.dumps(card, indent=2, default=str)

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()  # torch.export.save warns about any file name but *.pt2
        torch.export.save(program, buffer, extra_files={CARD_NAME: text})
        tmp.write_bytes(buffer.getvalue())
        seal(tmp)

    return write_atomic(path, write)


def load_torch_export(path: str | Path):
    """Load a sealed .pt2 (seal verified first); returns the program and its card."""
    verify(path)
    extra = {CARD_NAME: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.load(str(path), extra_files=extra)
    return program, json.loads(extra[CARD_NAME])


def trace_onnx(model: DiagnosticModel, example: tuple[Tensor, ...]):
    """Export the model to ONNX on ``example``; returns the ONNX program and format facts."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Static input dims on purpose: onnxruntime then refuses a shape it was not traced
        # for instead of silently using the example's sampling grid.
        program = torch.onnx.export(
            model.eval(),
            example,
            dynamo=True,
            input_names=list(ONNX_INPUTS[: len(example)]),
            output_names=[ONNX_OUTPUT],
            verbose=False,
        )
    return program, _facts("onnx", [int(n) for n in example[0].shape])


def save_onnx(program, path: str | Path, card: dict) -> Path:
    """Write a sealed .onnx with ``card`` in its metadata, atomically."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(program.model_proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_CARD_KEY, json.dumps(card, indent=2, default=str)
    onnx.checker.check_model(proto)

    def write(tmp: Path) -> None:
        tmp.write_bytes(proto.SerializeToString())
        seal(tmp)

    return write_atomic(path, write)


def load_onnx(path: str | Path):
    """An onnxruntime session for a sealed .onnx (seal verified first) and its card."""
    import onnxruntime as ort

    verify(path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # As many threads as torch, and no busy-waiting between calls: spinning worker threads
    # would take the CPU from everything else in the process (and from the eager baseline).
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    return session, json.loads(meta[ONNX_CARD_KEY])


def _facts(fmt: str, shape: list[int | None]) -> dict:
    """What the card says about a traced format's input contract and gaps."""
    static = all(isinstance(n, int) for n in shape)
    gaps = [SHAPE_GAP.format(shape=shape, fmt=fmt)] if static else []
    return {"format": fmt, "input_shape": shape if static else None, "gaps": gaps}
