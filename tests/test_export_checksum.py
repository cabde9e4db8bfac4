"""Exported model files are sealed: one flipped byte anywhere is refused with a checksum error."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from medimg.export import ChecksumError, export_model, load_model, read_card
from medimg.export.integrity import seal, verify
from medimg.export.tiny import export_tiny, tiny_card, tiny_model

EXAMPLE = (
    torch.linspace(-1000.0, 400.0, 20 * 18 * 12).reshape(20, 18, 12),
    torch.tensor(
        [[0.0, -3.0, 0.0, 10.0], [2.5, 0.0, 0.0, -5.0], [0.0, 0.0, 4.0, 3.0], [0, 0, 0, 1]],
        dtype=torch.float64,
    ),
)


@pytest.fixture(scope="module", params=["torchscript", "torch_export", "onnx"])
def exported(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    return export_tiny("classification", folder, request.param, EXAMPLE)


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def _weights_offset(path: Path) -> int:
    """Byte offset inside the first large weight tensor's data (zip entry or ONNX initializer)."""
    if path.suffix == ".onnx":
        import onnx

        raw = path.read_bytes()
        tensor = next(t for t in onnx.load(str(path)).graph.initializer if len(t.raw_data) > 64)
        return raw.index(tensor.raw_data) + len(tensor.raw_data) // 2
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    raw = path.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def test_loaded_model_runs_like_the_eager_model_and_carries_its_card(exported):
    loaded = load_model(exported)
    eager = tiny_model("classification")
    with torch.no_grad():
        assert torch.allclose(loaded(*EXAMPLE), eager(*EXAMPLE), atol=1e-5)
    assert loaded.card["weights_sha256"] and loaded.card["task"] == "classification"
    sidecar = json.loads(exported.with_name("model_card.json").read_text())
    assert sidecar["artifact"]["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert sidecar["weights_sha256"] == loaded.card["weights_sha256"]
    assert read_card(exported)["export"]["format"] == loaded.format


@pytest.mark.parametrize("where", ["first", "quarter", "half", "weights", "end-30", "last"])
def test_one_flipped_byte_is_refused_with_a_checksum_error(exported, tmp_path, where):
    copy = tmp_path / exported.name  # no sidecar beside it: the seal alone must catch it
    copy.write_bytes(exported.read_bytes())
    size = copy.stat().st_size
    if where == "weights":
        position = _weights_offset(copy)
    else:
        fractions = {"first": 0, "quarter": size // 4, "half": size // 2}
        position = fractions.get(where, size - 30 if where == "end-30" else size - 1)
    _flip(copy, position)
    with pytest.raises(ChecksumError, match=f"{copy.name}.*(checksum|seal)"):
        load_model(copy)


def test_resealed_file_with_other_weights_is_refused_by_the_weights_hash(tmp_path):
    model = tiny_model("classification")
    card = tiny_card(model)
    card["weights_sha256"] = hashlib.sha256(b"other weights").hexdigest()
    path, _ = export_model(model, tmp_path / "model.ts", card)
    verify(path)  # the seal itself is intact
    with pytest.raises(ChecksumError, match="weights"):
        load_model(path)


def test_unsealed_or_sidecar_mismatch_is_refused(tmp_path, exported):
    plain = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.script(tiny_model("classification")), str(plain))
    with pytest.raises(ChecksumError, match="plain.ts: checksum seal missing"):
        load_model(plain)
    copy = tmp_path / exported.name
    copy.write_bytes(exported.read_bytes())
    sidecar = json.loads(exported.with_name("model_card.json").read_text())
    sidecar["artifact"]["sha256"] = "0" * 64
    copy.with_name("model_card.json").write_text(json.dumps(sidecar))
    with pytest.raises(ChecksumError, match="model_card.json"):
        load_model(copy)


def test_seal_hash_is_the_sha256_of_the_unsealed_bytes(tmp_path):
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(tiny_model("classification")), str(path))
    before = path.read_bytes()
    assert seal(path) == hashlib.sha256(before).hexdigest() == verify(path)
    with zipfile.ZipFile(path) as archive:  # still a valid zip, comment = seal
        assert archive.comment.startswith(b"medimg-sha256:")
        assert archive.testzip() is None
