"""What every built-in dataset generator shares: a cached, atomically published folder, a process
pool that keeps task order, and manifests with a fixed column order."""

from __future__ import annotations

import concurrent.futures
import csv
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def cached_dataset(final: Path, generate: Callable[[Path], int], what: str) -> None:
    """Make sure ``final`` holds a complete dataset, generating it when it does not.

    A folder with a ``COMPLETE`` marker is used as it is; otherwise ``generate(tmp)`` writes the
    dataset into a temporary sibling folder, returns how many items it wrote, and the folder is
    renamed into place, so a reader never sees a half-written dataset.
    """
    if (final / "COMPLETE").is_file():
        logger.debug("%s cache hit: %s", what, final)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp creates 0o700; the published dataset should be readable
    try:
        count = generate(tmp)
        (tmp / "COMPLETE").write_text(f"{count} items\n")
        _publish(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Atomically rename a finished temporary dataset folder to its final name."""
    for _ in range(2):
        try:
            os.replace(tmp, final)
            return
        except OSError:
            if (final / "COMPLETE").is_file():
                logger.info("Another process finished %s first; using it", final)
                return
            if not final.exists():
                raise
            # A final-name folder without COMPLETE was not made by an atomic rename, so it is
            # debris of an interrupted run: remove it and retry once.
            logger.warning("Removing incomplete dataset folder %s", final)
            shutil.rmtree(final, ignore_errors=True)
    raise OSError(f"could not publish synthetic dataset to {final}")


def run_in_order(work: Callable[[Any], dict], tasks: Sequence[Any], workers: int) -> list[dict]:
    """``work`` applied to every task, serially or in a process pool, in task order."""
    if workers <= 1 or len(tasks) <= 1:
        return [work(task) for task in tasks]
    # Platform-default start method (fork on Linux): unlike spawn it also works from
    # unguarded scripts, stdin and notebooks; workers only use numpy/pydicom/nibabel.
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        chunk = max(1, len(tasks) // (workers * 8))
        return list(pool.map(work, tasks, chunksize=chunk))


def write_manifest_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    """Write a manifest CSV with a fixed column order."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
