"""Content digests of image files and DICOM folders, for cache keys and leakage checks."""

from __future__ import annotations

import hashlib
from pathlib import Path


def content_digest(path: str | Path) -> str:
    """BLAKE2b digest of a file's bytes, or of a folder's files (sorted by name, recursively)."""
    path = Path(path)
    digest = hashlib.blake2b(digest_size=20)
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(child.relative_to(path).as_posix().encode())
            digest.update(content_digest(child).encode())
        return digest.hexdigest()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
