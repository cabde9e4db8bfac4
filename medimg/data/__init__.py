"""Data layer: reading DICOM/NIfTI, manifests, splits, preprocessing, datamodules, synthetic data."""

from medimg.data.errors import DataError
from medimg.data.image import Image, read_image

__all__ = ["DataError", "Image", "read_image"]
