"""A SHA-256 of the whole model file, sealed into the file itself, and its verification.

Why a seal inside the file: a checksum of the weights alone misses a flipped byte in the
TorchScript code or the model card (the program could still load and compute something
else), and a checksum kept only in a sidecar file is lost when the model is copied alone.
So the exporter appends the SHA-256 of every byte before it, in a place the container
format allows trailing data to be ignored by its loader:

- zip containers (TorchScript ``.ts``, ``torch.export`` ``.pt2``): the archive comment of
  the end-of-central-directory record, ``medimg-sha256:<hex>``, over the file with an empty
  comment;
- ONNX (a protobuf message): one extra ``metadata_props`` entry ``medimg.sha256 = <hex>``
  appended as the last field, over every byte before it (protobuf merges appended fields).

Any changed byte then either changes the hash or breaks the seal's fixed layout; both are
refused with :class:`ChecksumError` before the file is handed to a deserialiser.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medimg.data.errors import DataError

ZIP_TAG = b"medimg-sha256:"
ONNX_KEY = b"medimg.sha256"
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_HEX = 64
_ZIP_COMMENT_SIZE = len(ZIP_TAG) + _HEX
# protobuf: field 14 (ModelProto.metadata_props), wire type 2 → tag byte 0x72; the entry is
# StringStringEntryProto{key = 1, value = 2}; every length here is < 128 (one varint byte).
_ONNX_ENTRY = bytes([0x0A, len(ONNX_KEY)]) + ONNX_KEY + bytes([0x12, _HEX])
_ONNX_TRAILER_SIZE = 2 + len(_ONNX_ENTRY) + _HEX


class ChecksumError(DataError):
    """A model file whose bytes do not match the SHA-256 sealed into it (or beside it)."""


def sha256_bytes(*parts: bytes) -> str:
    """SHA-256 (hex) of the concatenated byte strings."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def is_zip(data: bytes) -> bool:
    """Whether ``data`` starts like a zip archive (TorchScript, torch.export); else ONNX."""
    return data[:4] == b"PK\x03\x04"


def seal(path: str | Path) -> str:
    """Append the SHA-256 of ``path``'s bytes to it (zip comment or ONNX entry); return it."""
    path = Path(path)
    data = path.read_bytes()
    if not is_zip(data):
        digest = sha256_bytes(data)
        entry = _ONNX_ENTRY + digest.encode()
        path.write_bytes(data + bytes([0x72, len(entry)]) + entry)
        return digest
    if len(data) < _EOCD_SIZE or data[-_EOCD_SIZE:-18] != _EOCD or data[-2:] != b"\0\0":
        raise ValueError(f"{path}: not a zip archive without comment; cannot seal it")
    digest = sha256_bytes(data)
    comment = ZIP_TAG + digest.encode()
    path.write_bytes(data[:-2] + len(comment).to_bytes(2, "little") + comment)
    return digest


def verify(path: str | Path) -> str:
    """Check the seal of a model file; return its SHA-256 (of the bytes before the seal).

    Raises:
        ChecksumError: no seal, a damaged seal, or bytes that do not match it.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    data = path.read_bytes()
    if not is_zip(data):
        body, recorded = _onnx_seal(path, data)
    else:
        body, recorded = _zip_seal(path, data)
    actual = sha256_bytes(body)
    if actual != recorded:
        raise ChecksumError(
            f"{path}: checksum mismatch: the file's bytes hash to sha256 {actual[:16]}…, the "
            f"seal records {recorded[:16]}…; the file is corrupted or was modified, refusing it"
        )
    return actual


def _zip_seal(path: Path, data: bytes) -> tuple[bytes, str]:
    """The unsealed archive bytes and the recorded hash of a sealed zip."""
    start = len(data) - _EOCD_SIZE - _ZIP_COMMENT_SIZE
    ok = (
        start >= 0
        and data[start : start + 4] == _EOCD
        and int.from_bytes(data[start + 20 : start + 22], "little") == _ZIP_COMMENT_SIZE
        and data[start + _EOCD_SIZE :].startswith(ZIP_TAG)
    )
    if not ok:
        raise ChecksumError(
            f"{path}: checksum seal missing or damaged (expected a zip archive ending in the "
            f"comment '{ZIP_TAG.decode()}<sha256>' written by medimg's exporter); refusing it"
        )
    recorded = data[start + _EOCD_SIZE + len(ZIP_TAG) :].decode("ascii", errors="replace")
    return data[: start + 20] + b"\0\0", recorded


def _onnx_seal(path: Path, data: bytes) -> tuple[bytes, str]:
    """The unsealed model bytes and the recorded hash of a sealed ONNX file."""
    trailer = data[-_ONNX_TRAILER_SIZE:]
    ok = (
        len(data) > _ONNX_TRAILER_SIZE
        and trailer[:2] == bytes([0x72, len(_ONNX_ENTRY) + _HEX])
        and trailer[2 : 2 + len(_ONNX_ENTRY)] == _ONNX_ENTRY
    )
    if not ok:
        raise ChecksumError(
            f"{path}: checksum seal missing or damaged (expected a final metadata entry "
            f"'{ONNX_KEY.decode()}' written by medimg's exporter); refusing it"
        )
    recorded = trailer[2 + len(_ONNX_ENTRY) :].decode("ascii", errors="replace")
    return data[:-_ONNX_TRAILER_SIZE], recorded


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a whole file (what ``sha256sum`` prints), for the sidecar card."""
    return sha256_bytes(Path(path).read_bytes())
