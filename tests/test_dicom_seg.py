"""DICOM SEG label maps: read with highdicom, aligned with their source series in world space."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.sr.codedict import codes

from medimg.data.datamodule import ManifestDataModule
from medimg.data.dicom import read_dicom_series
from medimg.data.dicom_seg import align_to_grid
from medimg.data.errors import DataError
from medimg.data.image import read_image
from medimg.data.loading import PrepareVolumed, load_transform
from medimg.data.manifest import load_manifest
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from tests.dicom_factory import write_series

PRE = VolumePreprocessor(PreprocessConfig(spacing=(3.0, 3.0, 3.0), size=(64, 64, 56)))
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _datasets(series: Path) -> list[pydicom.Dataset]:
    """The source slices, in file order (not sorted along the normal)."""
    return [pydicom.dcmread(p) for p in sorted(series.iterdir())]


def _sample_on_source(
    datasets: list[pydicom.Dataset], labels: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """Labels at every source pixel's world position (nearest voxel): (frames, rows, columns).

    Pairs each source slice with the label map through world coordinates, never by index, and
    keeps the order of ``datasets`` (the order highdicom is given the source images in).
    """
    to_voxel = np.linalg.inv(affine)
    frames = []
    for ds in datasets:
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        rows, cols = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        lps = (
            position
            + cols[..., None] * col_spacing * cosines[:3]
            + rows[..., None] * row_spacing * cosines[3:]
        )
        ras = np.concatenate([lps, np.ones((*lps.shape[:2], 1))], axis=-1) @ LPS_TO_RAS.T
        index = np.rint(ras @ to_voxel.T)[..., :3].astype(int)
        inside = np.all((index >= 0) & (index < np.array(labels.shape[:3])), axis=-1)
        frame = np.zeros(index.shape[:2], dtype=labels.dtype)
        picked = index[inside]
        frame[inside] = labels[picked[:, 0], picked[:, 1], picked[:, 2]]
        frames.append(frame)
    return np.stack(frames)


def _write_seg(
    datasets: list[pydicom.Dataset],
    pixels: np.ndarray,
    path: Path,
    n_segments: int = 1,
    kind: str = "BINARY",
    omit_empty_frames: bool = False,
) -> Path:
    """Write a SEG over ``datasets``; ``pixels`` is (frames, rows, columns[, segments])."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label="lesion" if number == 1 else f"structure {number}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number in range(1, n_segments + 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=300,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medimg tests",
        manufacturer_model_name="test_dicom_seg",
        software_versions="1",
        device_serial_number="0",
        omit_empty_frames=omit_empty_frames,
    )
    seg.save_as(path)
    return path


def _lesion_case(manifest: Path) -> pd.Series:
    frame = load_manifest(manifest, "segmentation")
    return frame[frame["label"] == 1].iloc[0]


def _seg_of_case(record: pd.Series, path: Path, omit_empty_frames: bool = False) -> Path:
    """A BINARY SEG holding the case's NIfTI lesion mask, over the case's DICOM series."""
    mask = read_image(record["mask"])
    datasets = _datasets(Path(record["image"]))
    pixels = _sample_on_source(datasets, mask.array, mask.affine)
    return _write_seg(datasets, pixels.astype(bool), path, omit_empty_frames=omit_empty_frames)


def _world_centroid(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    voxels = np.argwhere(labels > 0).mean(axis=0)
    return affine[:3, :3] @ voxels + affine[:3, 3]


@pytest.mark.parametrize("site", ["internal", "external"])
def test_seg_lines_up_with_its_nifti_mask(manifests, tmp_path, site):
    """Site B stores slices descending with flipped rows/columns; both must line up."""
    record = _lesion_case(manifests[site])
    seg = read_image(_seg_of_case(record, tmp_path / "lesion.dcm"))
    nifti = read_image(record["mask"])
    series = read_image(record["image"])
    assert seg.meta["format"] == "dicom-seg"
    assert seg.meta["segments"] == {1: "lesion"}
    assert seg.array.dtype == np.uint8 and set(np.unique(seg.array)) == {0, 1}
    # Every source slice has a frame: the SEG's grid is the series' grid.
    assert seg.array.shape == series.array.shape
    np.testing.assert_allclose(seg.affine, series.affine, atol=1e-4)
    on_grid = [
        PRE.resample_mask(torch.from_numpy(image.array).float(), torch.from_numpy(image.affine))
        for image in (seg, nifti)
    ]
    assert on_grid[0].sum() > 10
    assert torch.equal(on_grid[0], on_grid[1])
    gap = _world_centroid(seg.array, seg.affine) - _world_centroid(nifti.array, nifti.affine)
    assert np.linalg.norm(gap) < 0.5


def test_seg_in_the_mask_column_trains_like_the_nifti_mask(manifests, tmp_path):
    record = _lesion_case(manifests["external"])
    _seg_of_case(record, tmp_path / "lesion.seg.dcm")
    table = pd.DataFrame(
        [{"case_id": "c1", "patient_id": "p1", "image": record["image"], "mask": "lesion.seg.dcm"}]
    )
    table.to_csv(tmp_path / "manifest.csv", index=False)
    frame = load_manifest(tmp_path / "manifest.csv", "segmentation")
    module = ManifestDataModule(frame.assign(split="train"), None, "segmentation", PRE)
    from_seg = module.prepared("train")[0]
    loaded = load_transform(with_mask=True)(
        {"image": record["image"], "mask": record["mask"], "case_id": "c1"}
    )
    from_nifti = PrepareVolumed(PRE)(loaded)
    assert from_seg["mask"].sum() > 10
    assert torch.equal(from_seg["mask"], from_nifti["mask"])
    assert torch.equal(from_seg["image"], from_nifti["image"])


def test_seg_without_empty_frames_is_placed_back_on_the_source_grid(manifests, tmp_path):
    """highdicom omits empty frames by default: the SEG grid is then a slab of the source grid."""
    record = _lesion_case(manifests["external"])
    seg = read_image(_seg_of_case(record, tmp_path / "slab.dcm", omit_empty_frames=True))
    series = read_image(record["image"])
    assert seg.meta["n_slices"] < seg.meta["referenced_instances"] == series.array.shape[2]
    full = align_to_grid(seg.array, seg.affine, series.array.shape, series.affine)
    nifti = read_image(record["mask"])
    resampled = [
        PRE.resample_mask(torch.from_numpy(a).float(), torch.from_numpy(affine))
        for a, affine in ((full, series.affine), (nifti.array, nifti.affine))
    ]
    assert torch.equal(*resampled)
    loaded = load_transform(with_mask=True)(
        {"image": record["image"], "mask": str(tmp_path / "slab.dcm"), "case_id": "slab"}
    )
    # A slab on the image's grid is accepted; outside it is background, as in the NIfTI mask.
    prepared = PrepareVolumed(PRE)(loaded)
    assert torch.equal(prepared["mask"][0], resampled[1][0])


def test_fractional_and_several_segments_become_segment_numbers(tmp_path):
    written = write_series(tmp_path / "ct", shape=(12, 10, 7), descending=True)
    datasets = _datasets(tmp_path / "ct")
    order = [len(datasets) - 1 - k for k in range(len(datasets))]  # file index -> ascending slice
    fraction = np.zeros((7, 10, 12), dtype=np.float32)
    fraction[order.index(2), 3, 4] = 0.6  # (frame, row, column) in file order
    fraction[order.index(2), 3, 5] = 0.4
    fraction[order.index(5), 8, 1] = 0.9
    seg = read_image(_write_seg(datasets, fraction, tmp_path / "frac.dcm", kind="FRACTIONAL"))
    assert seg.meta["segmentation_type"] == "FRACTIONAL"
    assert seg.meta["fractional_threshold"] == 0.5
    np.testing.assert_allclose(seg.affine, written.affine, atol=1e-6)
    assert sorted(map(tuple, np.argwhere(seg.array))) == [(1, 8, 5), (4, 3, 2)]

    two = np.zeros((7, 10, 12, 2), dtype=bool)
    two[order.index(0), 0:2, 0:3, 0] = True
    two[order.index(6), 9, 11, 1] = True
    seg = read_image(_write_seg(datasets, two, tmp_path / "two.dcm", n_segments=2))
    assert seg.meta["segments"] == {1: "lesion", 2: "structure 2"}
    assert seg.array[0:3, 0:2, 0].tolist() == [[1, 1]] * 3
    assert seg.array[11, 9, 6] == 2
    assert int((seg.array > 0).sum()) == 7


def test_overlapping_segments_are_refused(tmp_path):
    write_series(tmp_path / "ct", shape=(12, 10, 7))
    overlap = np.zeros((7, 10, 12, 2), dtype=bool)
    overlap[3, 4, 5, :] = True
    overlap[3, 4, 6, 1] = True
    path = _write_seg(_datasets(tmp_path / "ct"), overlap, tmp_path / "overlap.dcm", n_segments=2)
    with pytest.raises(DataError, match=r"overlap\.dcm: segments overlap in 1 voxel\(s\)") as info:
        read_image(path)
    assert "1 ('lesion'), 2 ('structure 2')" in str(info.value)
    # In the mask role the refusal is final (MONAI must not read the frames as an image).
    record = {"image": str(tmp_path / "ct"), "mask": str(path)}
    with pytest.raises(RuntimeError) as info:
        load_transform(with_mask=True)(record)
    assert isinstance(info.value.__cause__, DataError)
    assert "segments overlap" in str(info.value.__cause__)


def test_seg_of_another_series_is_refused_as_a_mask(manifests, tmp_path):
    other = _lesion_case(manifests["internal"])
    record = _lesion_case(manifests["external"])
    seg = _seg_of_case(other, tmp_path / "other.dcm")
    loaded = load_transform(with_mask=True)(
        {"image": record["image"], "mask": str(seg), "case_id": "wrong"}
    )
    with pytest.raises(DataError, match="case wrong: mask geometry differs from image geometry"):
        PrepareVolumed(PRE)(loaded)


def test_seg_next_to_its_series_is_skipped_and_refused_when_listed(tmp_path):
    written = write_series(tmp_path / "ct", shape=(12, 10, 7))
    labels = np.zeros((7, 10, 12), dtype=bool)
    labels[2, 3, 4] = True
    seg = _write_seg(_datasets(tmp_path / "ct"), labels, tmp_path / "ct" / "zz_seg.dcm")
    array, _, _ = read_dicom_series(tmp_path / "ct")
    np.testing.assert_array_equal(array, written.expected())
    with pytest.raises(DataError, match=r"zz_seg\.dcm: DICOM Segmentation \(SEG\), not an image"):
        read_dicom_series([*written.paths, seg])


def test_align_to_grid_refuses_a_grid_that_is_not_a_sub_grid():
    labels = np.ones((2, 2, 2), dtype=np.uint8)
    shifted = np.eye(4)
    shifted[:3, 3] = 0.4
    with pytest.raises(DataError, match="not a sub-grid of the target grid"):
        align_to_grid(labels, shifted, (4, 4, 4), np.eye(4))
    with pytest.raises(DataError, match="fall outside the target grid"):
        align_to_grid(labels, np.eye(4), (4, 4, 1), np.eye(4))
