"""Ratio benchmarks of medimg's data layer against plain pydicom / nibabel / DataLoader code.

Five figures, each measured side by side in one process with the two sides alternating (the
order flips every repeat, so drift in machine load hits both alike), medians of the repeats:

1. ``dicom_read``: ``read_image(folder)`` ÷ a plain pydicom loop over the same files (``dcmread``
   + ``pixel_array`` + ``np.stack`` + float32 rescale) on the built-in 64×64×40 series (≤ 1.25).
2. ``scan_vs_read``: ``scan_tree`` (header only, fresh index every run) ÷ a plain full read
   (``dcmread`` + ``pixel_array``) of the same files, one process each (≤ 0.25); ``workers=2``
   is reported beside it.
3. ``nifti_read``: ``read_image(path)`` ÷ plain nibabel returning the same dtype, on the built-in
   uint8 masks and on float32 volumes written here (≤ 1.2).
4. ``cached_epoch``: one epoch of ``ManifestDataModule.loader("train")`` with ``cache=True``
   (cases prepared beforehand) ÷ the same with ``cache=False`` (≤ 0.10).
5. ``scan_scaling``: ``scan_tree`` µs per file at 1,000, 5,000 and 20,000 tiny 8×8 DICOM files
   (100 per series folder); flat when the largest is within 1.25× the smallest.

All files live in a temporary folder, so they are in the OS page cache: these are warm-cache
figures. torch runs 1 intra-op thread by default (``--torch-threads``): on a small machine
shared with other jobs, more threads oversubscribe the cores and slow both sides of (4) many
times over. No timing is asserted. Run: ``python benchmarks/bench_data_layer.py`` (``--quick`` for
a short run); prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medimg.data.datamodule import ManifestDataModule
from medimg.data.image import read_image
from medimg.data.manifest import load_manifest
from medimg.data.preprocess import PreprocessConfig, VolumePreprocessor
from medimg.data.scan import scan_tree
from medimg.data.splits import split_by_patient
from medimg.data.synthetic import make_synthetic_ct

GOALS = {
    "dicom_read": 1.25,
    "scan_vs_read": 0.25,
    "nifti_read": 1.2,
    "cached_epoch": 0.10,
}
"""Upper bounds on each medimg ÷ baseline ratio."""

FLAT_WITHIN = 1.25
"""Scan cost per file counts as flat when max ÷ min over the tree sizes is at most this."""

FILES_PER_SERIES = 100

# Placeholders of fixed width in the tiny DICOM template, replaced byte for byte per file.
_SERIES_MARK, _FILE_MARK, _Z_MARK = b"9111111", b"9222222", b"9333333"


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an untimed ``prepare`` then the timed ``run``."""

    run: Callable[[], object]
    prepare: Callable[[], None] | None = None


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run."""

    repeats: int
    n_internal: int
    n_external: int
    scan_sizes: tuple[int, ...]
    float_shapes: tuple[tuple[int, int, int], ...]


FULL = Settings(5, 40, 4, (1_000, 5_000, 20_000), ((64, 64, 40), (128, 128, 96)))
QUICK = Settings(2, 12, 2, (200, 500, 1_000), ((64, 64, 40),))


# ---------------------------------------------------------------- timing


def alternate(sides: dict[str, Side], repeats: int) -> dict[str, list[float]]:
    """Seconds of each side per repeat, after one untimed warm-up; the order flips each repeat."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(-1, repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            side = sides[name]
            if side.prepare is not None:
                side.prepare()
            gc.collect()
            start = time.perf_counter()
            side.run()
            elapsed = time.perf_counter() - start
            if repeat >= 0:
                times[name].append(elapsed)
    return times


def ratio(times: dict[str, list[float]], ours: str, base: str, goal: float) -> dict[str, object]:
    """Median of the per-repeat ratios ``ours ÷ base``, the medians, and pass/fail."""
    ratios = [o / b for o, b in zip(times[ours], times[base], strict=True)]
    value = statistics.median(ratios)
    return {
        "ratio": round(value, 4),
        "ratios": [round(r, 4) for r in ratios],
        f"{ours}_s_median": round(statistics.median(times[ours]), 5),
        f"{base}_s_median": round(statistics.median(times[base]), 5),
        "goal": f"<= {goal}",
        "pass": value <= goal,
    }


# ---------------------------------------------------------------- plain baselines


def dicom_files(folder: Path) -> list[Path]:
    """Files directly in a series folder, sorted by name."""
    return sorted(Path(entry.path) for entry in os.scandir(folder) if entry.is_file())


def plain_series(folder: Path, rescale: bool) -> np.ndarray:
    """Plain pydicom: dcmread + pixel_array + np.stack (+ float32 rescale of the first slice)."""
    datasets = [pydicom.dcmread(path) for path in dicom_files(folder)]
    stack = np.stack([ds.pixel_array for ds in datasets])
    if not rescale:
        return stack
    slope = float(datasets[0].get("RescaleSlope", 1.0))
    intercept = float(datasets[0].get("RescaleIntercept", 0.0))
    return stack.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def plain_full_read(files: list[Path]) -> int:
    """Plain pydicom full read of every file (dcmread + pixel_array); returns the voxel count."""
    return sum(pydicom.dcmread(path).pixel_array.size for path in files)


def plain_header_read(files: list[Path]) -> int:
    """Plain pydicom header-only read of every file (``stop_before_pixels``): pydicom's floor."""
    return sum(len(pydicom.dcmread(path, stop_before_pixels=True)) for path in files)


def plain_nifti(path: Path, dtype: np.dtype) -> np.ndarray:
    """Plain nibabel read giving ``dtype``: the stored integers, or get_fdata as float32."""
    image = nib.load(str(path))
    if np.issubdtype(dtype, np.integer):
        return np.asanyarray(image.dataobj)
    return image.get_fdata(dtype=np.float32)


def all_files(root: Path) -> list[Path]:
    """Every file below ``root``, sorted."""
    return sorted(Path(d, f) for d, _, files in os.walk(root) for f in files)


# ---------------------------------------------------------------- the five comparisons


def bench_dicom_read(series: list[Path], repeats: int) -> dict[str, object]:
    """read_image(folder) ÷ plain pydicom loop, over every built-in internal series."""
    check = read_image(series[0]).array
    plain = plain_series(series[0], rescale=True).transpose(2, 1, 0)
    times = alternate(
        {
            "medimg": Side(lambda: [read_image(s) for s in series]),
            "plain_rescaled": Side(lambda: [plain_series(s, rescale=True) for s in series]),
            "plain_stored": Side(lambda: [plain_series(s, rescale=False) for s in series]),
        },
        repeats,
    )
    result = ratio(times, "medimg", "plain_rescaled", GOALS["dicom_read"])
    stored = ratio(times, "medimg", "plain_stored", GOALS["dicom_read"])
    shape = list(check.shape)
    return {
        "series": len(series),
        "shape": shape,
        "files": len(series) * shape[2],
        "baseline": "dcmread + pixel_array + np.stack + float32 rescale (first slice's slope)",
        **result,
        "ratio_vs_plain_without_rescale": stored["ratio"],
        "plain_stored_s_median": stored["plain_stored_s_median"],
        "same_values_as_plain": bool(np.array_equal(check, plain)),
    }


def bench_scan_vs_read(tree: Path, work: Path, repeats: int) -> dict[str, object]:
    """scan_tree (fresh index each run) ÷ full pydicom read of the same files."""
    files = all_files(tree)
    index = work / "scan-vs-read.json"

    def fresh() -> None:
        index.unlink(missing_ok=True)

    times = alternate(
        {
            "scan_w1": Side(lambda: scan_tree(tree, index_path=index, workers=1), fresh),
            "full_read": Side(lambda: plain_full_read(files)),
            "scan_w2": Side(lambda: scan_tree(tree, index_path=index, workers=2), fresh),
            "plain_headers": Side(lambda: plain_header_read(files)),
        },
        repeats,
    )
    frame = scan_tree(tree, index_path=index, workers=1)
    index.unlink(missing_ok=True)
    w2 = ratio(times, "scan_w2", "full_read", GOALS["scan_vs_read"])
    floor = ratio(times, "plain_headers", "full_read", GOALS["scan_vs_read"])
    return {
        "series": len(frame),
        "files": len(files),
        "series_ok": int((frame["status"] == "ok").sum()),
        "baseline": "dcmread + pixel_array of every file, one process",
        **ratio(times, "scan_w1", "full_read", GOALS["scan_vs_read"]),
        "ratio_workers2": w2["ratio"],
        "scan_w2_s_median": w2["scan_w2_s_median"],
        "plain_header_read_ratio": floor["ratio"],
        "plain_header_read_s_median": floor["plain_headers_s_median"],
        "us_per_file": {
            name: round(statistics.median(times[name]) / len(files) * 1e6, 1) for name in times
        },
    }


def bench_nifti(masks: list[Path], floats: list[Path], repeats: int) -> dict[str, object]:
    """read_image(path) ÷ plain nibabel, per kind of NIfTI file."""
    out: dict[str, object] = {}
    for name, paths in [("masks_uint8_gz", masks)] + [(p.name, [p]) for p in floats]:
        sample = read_image(paths[0]).array
        dtype = sample.dtype
        reads = max(1, 20 // len(paths))  # enough work per timed run to rise above timer noise
        times = alternate(
            {
                "medimg": Side(
                    lambda p=paths, n=reads: [read_image(q) for q in p for _ in range(n)]
                ),
                "nibabel": Side(
                    lambda p=paths, n=reads, d=dtype: [
                        plain_nifti(q, d) for q in p for _ in range(n)
                    ]
                ),
            },
            repeats,
        )
        shape = list(nib.load(str(paths[0])).shape)
        out[name] = {
            "files": len(paths),
            "reads_per_run": len(paths) * reads,
            "shape": shape,
            "dtype": str(dtype),
            # An uncompressed .nii comes back memory-mapped on both sides: nothing is read yet.
            "lazy_memmap": isinstance(sample, np.memmap),
            **ratio(times, "medimg", "nibabel", GOALS["nifti_read"]),
        }
    worst = max(v["ratio"] for v in out.values())
    return {"worst_ratio": worst, "pass": worst <= GOALS["nifti_read"], "cases": out}


def bench_cached_epoch(manifest: Path, repeats: int) -> dict[str, object]:
    """One epoch of loader('train') with cache=True (prepared) ÷ the same with cache=False."""
    frame = split_by_patient(
        load_manifest(manifest, "classification"), val_fraction=0.15, test_fraction=0.2, seed=0
    )
    config = PreprocessConfig(spacing=(4.0, 4.0, 4.0), size=(48, 48, 40))

    def module(cache: bool) -> ManifestDataModule:
        return ManifestDataModule(
            frame,
            None,
            "classification",
            VolumePreprocessor(config),
            batch_size=8,
            num_workers=0,
            cache=cache,
            prepare_workers=0,
        )

    cached, uncached = module(True), module(False)
    start = time.perf_counter()
    cached.prepared("train")
    prepare_s = time.perf_counter() - start

    def epoch(dm: ManifestDataModule) -> int:
        return sum(len(batch["image"]) for batch in dm.loader("train", train=True))

    times = alternate(
        {"cached": Side(lambda: epoch(cached)), "uncached": Side(lambda: epoch(uncached))},
        repeats,
    )
    return {
        "train_cases": len(cached.records("train")),
        "batch_size": 8,
        "num_workers": 0,
        "preprocess": {"spacing": list(config.spacing), "size": list(config.size)},
        "prepare_once_s": round(prepare_s, 4),
        **ratio(times, "cached", "uncached", GOALS["cached_epoch"]),
    }


def bench_scan_scaling(root: Path, sizes: tuple[int, ...], work: Path, repeats: int) -> dict:
    """scan_tree µs per file at each tree size, workers=1 and workers=2."""
    roots = write_nested_tree(root, sizes)
    index = work / "scaling.json"

    def fresh() -> None:
        index.unlink(missing_ok=True)

    sides = {
        f"{n}_w{w}": Side(lambda r=r, w=w: scan_tree(r, index_path=index, workers=w), fresh)
        for n, r in zip(sizes, roots, strict=True)
        for w in (1, 2)
    }
    times = alternate(sides, repeats)
    out: dict[str, object] = {"files_per_series": FILES_PER_SERIES, "flat_within": FLAT_WITHIN}
    for w in (1, 2):
        per_file = {n: statistics.median(times[f"{n}_w{w}"]) / n * 1e6 for n in sizes}
        spread = max(per_file.values()) / min(per_file.values())
        out[f"workers{w}"] = {
            "us_per_file": {str(n): round(v, 1) for n, v in per_file.items()},
            "max_over_min": round(spread, 3),
            # > 1: cost per file grows with the tree; < 1: fixed costs (pool start) amortised.
            "largest_over_smallest": round(per_file[max(sizes)] / per_file[min(sizes)], 3),
            "flat": spread <= FLAT_WITHIN,
        }
    check = scan_tree(roots[-1], index_path=index, workers=2)
    index.unlink(missing_ok=True)
    out["largest_tree"] = {"series": len(check), "ok": int((check["status"] == "ok").sum())}
    return out


# ---------------------------------------------------------------- data written here


def write_float_niftis(folder: Path, shapes: tuple[tuple[int, int, int], ...]) -> list[Path]:
    """A CT-like float32 volume of each shape written as .nii.gz and as .nii (not timed)."""
    return [path for shape in shapes for path in write_float_nifti(folder, shape)]


def write_float_nifti(folder: Path, shape: tuple[int, int, int]) -> list[Path]:
    """One CT-like float32 volume (body disc plus noise) as .nii.gz and as .nii."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    body = np.where(sum(g * g for g in grid) < 0.7, 40.0, -1000.0).astype(np.float32)
    volume = body + rng.normal(0, 15, shape).astype(np.float32)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    stem = "float32_" + "x".join(str(n) for n in shape)
    paths = [folder / f"{stem}.nii.gz", folder / f"{stem}.nii"]
    for path in paths:
        nib.save(nib.Nifti1Image(volume, affine), str(path))
    return paths


def tiny_dicom_template() -> bytes:
    """Bytes of one 8×8 CT slice with fixed-width placeholders for series, file and z."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    sop = f"2.25.{_SERIES_MARK.decode()}.{_FILE_MARK.decode()}"
    meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID = "2.25.1"
    ds.SeriesInstanceUID = f"2.25.{_SERIES_MARK.decode()}"
    ds.PatientID, ds.Modality, ds.Manufacturer = "BENCH", "CT", "bench"
    ds.InstanceNumber = _FILE_MARK.decode()
    ds.ImagePositionPatient = ["0", "0", _Z_MARK.decode()]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing, ds.SliceThickness = ["1", "1"], "1"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.PixelData = np.arange(64, dtype="<u2").tobytes()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_nested_tree(root: Path, sizes: tuple[int, ...]) -> list[Path]:
    """Nested folders holding ``sizes`` files in all (smallest innermost); their roots.

    Each root holds its own series folders plus the next smaller root, so one tree of
    ``max(sizes)`` files serves every size (scan_tree recurses).
    """
    template = tiny_dicom_template()
    ordered = sorted(sizes)
    roots: dict[int, Path] = {}
    here, series = root, 0
    for total in reversed(ordered):  # the largest outermost, the smallest innermost
        here = here / f"tree{total}"
        here.mkdir(parents=True)
        roots[total] = here
    for total in ordered:
        smaller = max((n for n in ordered if n < total), default=0)
        for _ in range((total - smaller) // FILES_PER_SERIES):
            folder = roots[total] / f"s{series:05d}"
            folder.mkdir()
            marked = template.replace(_SERIES_MARK, b"9%06d" % series)
            for k in range(FILES_PER_SERIES):
                data = marked.replace(_FILE_MARK, b"9%06d" % k).replace(_Z_MARK, b"%07d" % k)
                (folder / f"{k:03d}.dcm").write_bytes(data)
            series += 1
    return [roots[n] for n in sizes]


# ---------------------------------------------------------------- entry point


def machine() -> str:
    """Architecture, cores, GPU and library versions."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {gpu}; python {platform.python_version()}, "
        f"pydicom {pydicom.__version__}, nibabel {nib.__version__}, numpy {np.__version__}, "
        f"torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per side")
    parser.add_argument(
        "--scan-sizes", type=int, nargs="+", default=None, help="file counts for scan_scaling"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on 2 busy cores more threads oversubscribe)",
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    repeats = args.repeats or settings.repeats
    sizes = tuple(args.scan_sizes or settings.scan_sizes)
    bad_sizes = len(set(sizes)) < len(sizes) or any(n < 1 or n % FILES_PER_SERIES for n in sizes)
    if repeats < 1 or bad_sizes or args.torch_threads < 1:
        parser.error(
            "--repeats and --torch-threads must be >= 1; --scan-sizes distinct positive "
            f"multiples of {FILES_PER_SERIES}"
        )
    torch.set_num_threads(args.torch_threads)
    logging.disable(logging.WARNING)  # medimg/MONAI info lines would interleave with the JSON
    warnings.simplefilter("ignore")
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="medimg-bench-") as tmp:
        work = Path(tmp)
        manifests = make_synthetic_ct(
            work / "data", seed=0, n_internal=settings.n_internal, n_external=settings.n_external
        )
        site_a = manifests["internal"].parent
        series = sorted(p for p in (site_a / "images").iterdir() if p.is_dir())
        masks = sorted((site_a / "masks").glob("*.nii.gz"))
        masks += sorted((manifests["external"].parent / "masks").glob("*.nii.gz"))
        floats = write_float_niftis(work, settings.float_shapes)
        results = {
            "dicom_read": bench_dicom_read(series, repeats),
            "scan_vs_read": bench_scan_vs_read(site_a / "images", work, repeats),
            "nifti_read": bench_nifti(masks, floats, repeats),
            "cached_epoch": bench_cached_epoch(manifests["internal"], repeats),
            "scan_scaling": bench_scan_scaling(work / "scaling", sizes, work, repeats),
        }
    report = {
        "benchmark": "medimg data layer ÷ plain pydicom / nibabel / DataLoader",
        "mode": "quick" if args.quick else "full",
        "repeats": repeats,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "page_cache": "warm (files written just before timing)",
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **results,
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
