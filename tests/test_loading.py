"""Reading DICOM series and NIfTI masks through MONAI, and preparing them on one grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medimg.data.errors import DataError
from medimg.data.loading import PrepareVolumed, load_transform
from medimg.data.manifest import load_manifest
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor

PRE = VolumePreprocessor(PreprocessConfig(spacing=(3.0, 3.0, 3.0), size=(64, 64, 56)))


def _prepared_lesion_case(manifest):
    frame = load_manifest(manifest, "segmentation")
    record = frame[frame["label"] == 1].iloc[0]
    loaded = load_transform(with_mask=True)(
        {"image": record["image"], "mask": record["mask"], "case_id": "x"}
    )
    return PrepareVolumed(PRE)(loaded)


@pytest.mark.parametrize("site", ["internal", "external"])
def test_lesion_in_image_lines_up_with_mask(manifests, site):
    """Site B stores slices in reverse order with flipped rows/columns; both must line up."""
    prepared = _prepared_lesion_case(manifests[site])
    image, mask = prepared["image"][0], prepared["mask"][0].float()
    assert mask.sum() > 10
    ring = (F.max_pool3d(mask[None, None], 5, stride=1, padding=2)[0, 0] > 0) & (mask == 0)
    inside, around = image[mask > 0].mean(), image[ring].mean()
    assert inside - around > 0.05  # lesion contrast ≥ 50 HU ≈ 0.1 in a 500 HU window


def test_mask_with_other_geometry_is_refused(manifests, tmp_path):
    frame = load_manifest(manifests["internal"], "segmentation")
    record = frame.iloc[0]
    original = nib.load(record["mask"])
    shifted_affine = original.affine.copy()
    shifted_affine[:3, 3] += 5.0
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(original.dataobj), shifted_affine), shifted)
    loaded = load_transform(with_mask=True)(
        {"image": record["image"], "mask": str(shifted), "case_id": "c1"}
    )
    with pytest.raises(DataError, match="case c1: mask geometry differs from image geometry"):
        PrepareVolumed(PRE)(loaded)


def test_dicom_affine_matches_slice_positions(manifests):
    """MONAI's affine maps the first and last voxel to the series' extreme slice positions."""
    import pydicom

    frame = load_manifest(manifests["external"], "classification")
    series = frame.iloc[0]["image"]
    loaded = load_transform(with_mask=False)({"image": series})["image"]
    affine = loaded.affine.double()
    positions = []
    for path in sorted(__import__("pathlib").Path(series).iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        positions.append([float(v) for v in ds.ImagePositionPatient])
    lps = torch.tensor(positions, dtype=torch.float64)
    ras = lps * torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)
    shape = loaded.shape[1:]
    corners = torch.cartesian_prod(
        *[torch.tensor([0.0, n - 1.0], dtype=torch.float64) for n in shape]
    )
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    z = world[:, 2]
    assert torch.isclose(z.min(), ras[:, 2].min(), atol=1e-3)
    assert torch.isclose(z.max(), ras[:, 2].max(), atol=1e-3)
