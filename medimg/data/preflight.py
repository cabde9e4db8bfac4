"""Preflight: read every case of a manifest in parallel and report all problems at once."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from medimg.data import keys
from medimg.data.errors import DataError
from medimg.data.image import read_image
from medimg.data.loading import mask_on_image_grid

MAX_SHOWN = 50


def check_case(record: dict, task: str, repair_tilt: bool = False) -> list[str]:
    """Problems reading one case: its image, and for segmentation its mask and their geometry."""
    try:
        image = read_image(record[keys.IMAGE], repair_tilt=repair_tilt)
    except DataError as err:
        return [f"column 'image': {err}"]
    if task != "segmentation" or not record.get(keys.MASK):
        return []
    try:
        mask = read_image(record[keys.MASK])
    except DataError as err:
        return [f"column 'mask': {err}"]
    try:
        mask_on_image_grid(mask.array, mask.affine, image.array.shape, image.affine)
    except DataError as err:
        return [f"column 'mask': geometry differs from the image: {err}"]
    return []


def _check_row(args: tuple[dict, str, bool]) -> list[str]:
    return check_case(*args)


def check_cases(
    frame: pd.DataFrame,
    manifest_path: str | Path,
    task: str,
    workers: int = 2,
    repair_tilt: bool = False,
) -> None:
    """Read every case with :func:`read_image` (``workers`` processes) before any training.

    Raises:
        DataError: one line per problem, ``<manifest> row N (case X): column 'c': problem``.
    """
    records = frame.to_dict("records")
    jobs = [(record, task, repair_tilt) for record in records]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_check_row, jobs, chunksize=8))
    else:
        results = [_check_row(job) for job in jobs]
    problems = [
        f"{manifest_path} row {row} (case {record[keys.CASE_ID]}): {problem}"
        for row, (record, found) in enumerate(zip(records, results, strict=True), start=2)
        for problem in found
    ]
    if problems:
        shown = "\n  ".join(problems[:MAX_SHOWN])
        more = f"\n  … and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise DataError(
            f"{len(problems)} case(s) cannot be read in {manifest_path}:\n  {shown}{more}"
        )
