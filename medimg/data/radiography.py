"""Synthetic radiography systems: detector model and the DX DICOM and NIfTI files they write.

Files are in the geometry medimg reads radiographs in (see
:func:`medimg.data.dicom.read_dicom_series`): voxel ``(i, j)`` is column ``i``, row ``j``, and
the affine is ``diag(-column spacing, -row spacing, 1)`` in RAS with the origin at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian
from skimage.filters import gaussian

MAX_STORED = 4095  # 12 bits


@dataclass(frozen=True)
class Vendor:
    """Detector and processing of one synthetic radiography system.

    Attributes:
        manufacturer: DICOM Manufacturer.
        model_name: DICOM ManufacturerModelName.
        rows: Image rows.
        columns: Image columns.
        spacing: Pixel spacing in mm (isotropic).
        pixel_spacing_tag: Also write PixelSpacing (else only ImagerPixelSpacing).
        gain: Detector value per unit density (before per-image exposure variation).
        offset: Detector value of air.
        gamma: Contrast curve exponent applied to density.
        noise: Gaussian noise standard deviation in density units.
        blur: Gaussian blur (detector MTF) in pixels.
    """

    manufacturer: str
    model_name: str
    rows: int
    columns: int
    spacing: float
    pixel_spacing_tag: bool
    gain: float
    offset: float
    gamma: float
    noise: float
    blur: float


# Site A has two systems (the second noisier: a subgroup gap); site B differs in detector,
# contrast curve, noise and sharpness, and writes only ImagerPixelSpacing.
SITES: dict[str, tuple[tuple[Vendor, float], ...]] = {
    "A": (
        (
            Vendor("Lumen Radiography", "LR-DR1", 256, 256, 1.4, True, 3400, 200, 1.0, 0.02, 0.6),
            0.6,
        ),
        (Vendor("Apex X-Ray", "AX-Flex", 256, 256, 1.4, True, 3000, 350, 1.0, 0.04, 0.8), 0.4),
    ),
    "B": (
        (Vendor("Orion Imaging", "OR-500", 300, 280, 1.25, False, 3600, 120, 0.8, 0.04, 1.2), 1.0),
    ),
}


def pixel_coordinates(vendor: Vendor) -> tuple[np.ndarray, np.ndarray]:
    """Millimetre offsets from the image centre of every column (x) and row (y)."""
    x = (np.arange(vendor.columns) - (vendor.columns - 1) / 2.0) * vendor.spacing
    y = (np.arange(vendor.rows) - (vendor.rows - 1) / 2.0) * vendor.spacing
    return x[None, :], y[:, None]


def detector_values(rng: np.random.Generator, density: np.ndarray, vendor: Vendor) -> np.ndarray:
    """12-bit detector values: blur, contrast curve, exposure variation and noise."""
    blurred = gaussian(density, sigma=vendor.blur, mode="nearest", preserve_range=True)
    noisy = np.clip(blurred, 0.0, None) ** vendor.gamma
    noisy += rng.standard_normal(density.shape) * vendor.noise
    gain = vendor.gain * rng.uniform(0.85, 1.15)
    offset = vendor.offset + rng.uniform(-60.0, 60.0)
    return np.clip(np.rint(offset + gain * noisy), 0, MAX_STORED).astype(np.uint16)


def _ds(value: float) -> str:
    """A number as a DICOM DS string (at most 16 characters)."""
    return f"{float(value):.6g}"


def _code(value: str, meaning: str) -> Dataset:
    """A SNOMED CT code sequence item."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def write_dx(
    path: Path, vendor: Vendor, stored: np.ndarray, monochrome1: bool, header: dict[str, object]
) -> None:
    """Write one DX For Presentation file (12 bits stored in 16).

    Args:
        path: Output file.
        vendor: The system that made it.
        stored: Detector values (rows, columns), larger = more attenuation (brighter).
        monochrome1: Store inverted as MONOCHROME1 (readers must invert it back).
        header: Patient, study and instance attributes by DICOM keyword (PatientID,
            StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, StudyDate, StudyTime, ...).
    """
    sop_uid = str(header["SOPInstanceUID"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.Manufacturer = vendor.manufacturer
    ds.ManufacturerModelName = vendor.model_name
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.SeriesDate = ds.ContentDate = ds.StudyDate
    ds.SeriesTime = ds.ContentTime = ds.StudyTime
    ds.PatientBirthDate = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.AnatomicRegionSequence = [_code("51185008", "Chest")]
    ds.ImageLaterality = "U"
    ds.ViewPosition = "PA"
    ds.ViewCodeSequence = [_code("399348003", "postero-anterior")]
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = []
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [_ds(vendor.spacing)] * 2
    if vendor.pixel_spacing_tag:
        ds.PixelSpacing = [_ds(vendor.spacing)] * 2
    ds.DetectorType = "SCINTILLATOR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.PixelIntensityRelationship = "LIN"
    # -1: higher stored values mean less X-ray reached the detector (MONOCHROME2 here).
    ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "0"
    ds.RescaleType = "US"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    values = MAX_STORED - stored if monochrome1 else stored
    ds.PixelData = np.ascontiguousarray(values, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def mask_affine(vendor: Vendor) -> np.ndarray:
    """Voxel→RAS affine of a vendor's images as medimg reads them (and of their masks)."""
    return np.diag([-vendor.spacing, -vendor.spacing, 1.0, 1.0]) + 0.0


def write_mask(path: Path, labels: np.ndarray, vendor: Vendor) -> None:
    """Write the label map as a 2D uint8 NIfTI indexed (column, row), like the image."""
    affine = mask_affine(vendor)
    image = nib.Nifti1Image(np.ascontiguousarray(labels.T, dtype=np.uint8), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_data_dtype(np.uint8)
    nib.save(image, str(path))
