"""Every pixel-bearing test file shipped inside pydicom: read exactly as pydicom decodes it, or refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import apply_rescale

from medimg.data.errors import DataError
from medimg.data.image import read_image

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _pixel_files() -> list[Path]:
    files = []
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=False, force=True)
        except Exception:  # noqa: BLE001 - not a DICOM file at all (README, dumps, ICC profiles)
            continue
        if "PixelData" in ds:
            files.append(path)
    return files


def _reference(path: Path) -> np.ndarray | None:
    """pydicom's own decode after rescale, as (frames, rows, columns), or None if it cannot."""
    try:
        ds = pydicom.dcmread(path, force=True)
        pixels = ds.pixel_array
    except Exception:  # noqa: BLE001 - pydicom itself cannot decode: medimg must refuse
        return None
    if ds.get("SamplesPerPixel", 1) != 1:
        return None  # colour: medimg reads grayscale images only and must refuse
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        bits = int(ds.BitsStored)
        low, high = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
            if ds.PixelRepresentation
            else (0, (1 << bits) - 1)
        )
        pixels = (low + high) - pixels.astype(np.int64)
    values = apply_rescale(pixels.astype(np.float64), ds) if "RescaleSlope" in ds else pixels
    values = np.asarray(values, dtype=np.float32)
    return values.reshape(frames, *values.shape[-2:])


def _as_frames(array: np.ndarray) -> np.ndarray:
    """medimg's (columns, rows, slices) → (slices, rows, columns)."""
    return np.transpose(array.reshape(array.shape[0], array.shape[1], -1), (2, 1, 0))


def _same_frames(ours: np.ndarray, reference: np.ndarray) -> bool:
    """Equal up to the order of frames (medimg sorts frames along the slice normal)."""
    if ours.shape != reference.shape:
        return False
    order_ours = np.argsort([float(f.astype(np.float64).sum()) for f in ours], kind="stable")
    order_ref = np.argsort([float(f.astype(np.float64).sum()) for f in reference], kind="stable")
    # float32 rescale in another order than pydicom's float64: equal to float32 precision.
    return np.allclose(ours[order_ours], reference[order_ref], rtol=1e-6, atol=0)


@pytest.mark.timeout(600)
def test_every_pydicom_test_file_loads_exactly_or_is_refused_by_name(record_property):
    tally = {"equal": [], "refused": {}, "mismatch": [], "crashed": {}}
    files = _pixel_files()
    for path in files:
        reference = _reference(path)
        try:
            image = read_image(path)
        except DataError as err:
            assert path.name in str(err), f"refusal does not name the file: {err}"
            tally["refused"][path.name] = str(err).split(": ", 1)[-1][:160]
            continue
        except Exception as err:  # noqa: BLE001 - anything else is a crash the test reports
            tally["crashed"][path.name] = f"{type(err).__name__}: {err}"[:200]
            continue
        if reference is not None and _same_frames(_as_frames(image.array), reference):
            tally["equal"].append(path.name)
        else:
            tally["mismatch"].append(path.name)
    summary = {k: len(v) for k, v in tally.items()}
    record_property("pydicom_data_tally", json.dumps(summary))
    print(json.dumps({"files": len(files), **summary, "refused": tally["refused"]}, indent=1))
    assert not tally["crashed"], tally["crashed"]
    assert not tally["mismatch"], tally["mismatch"]
    assert summary["equal"] >= 15, summary  # a reader that refuses everything must not pass
