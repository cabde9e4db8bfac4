"""Inference against a PACS over DICOMweb: QIDO-RS query, WADO-RS retrieve, STOW-RS store.

Every request goes through one bounded retry loop (connection errors, timeouts and HTTP
408/429/5xx; exponential backoff), and the store is only reported when the server's
STOW-RS response lists the instance as stored *and* a QIDO-RS query finds it in the study.
A retrieve is checked against the query (same instance UIDs, full pixel data), because a
transfer cut off mid-way can come back as a shortened list without an error.
"""

from __future__ import annotations

import logging
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medimg.deploy.infer import Inference, run_inference
from medimg.export import LoadedModel, load_model
from medimg.files import write_json

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIABLE_STATUS = (408, 429, 500, 502, 503, 504)
NOT_IMAGES = ("SEG", "SR", "PR", "KO", "RTSTRUCT", "DOC")
# What decoding a garbage answer (HTML, a broken multipart part, JSON of the wrong shape)
# raises inside dicomweb-client and pydicom: the server's fault, reported, not a traceback.
GARBAGE = (ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError, struct.error)
GARBAGE += (InvalidDicomError,)
SNIPPET_CHARS = 40


class PacsError(RuntimeError):
    """The DICOMweb server is unreachable, or a query, retrieve or store failed."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries in all, waiting ``backoff_s * 2**n`` in between."""

    attempts: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 30.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError(f"retry policy needs attempts >= 1, backoff >= 0, timeout > 0: {self}")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError(f"retry policy needs deadline > 0: {self}")

    @property
    def overall_s(self) -> float:
        """Seconds the whole exchange with the server may take (``deadline_s``, else derived).

        The timeout is per read (a server trickling a byte at a time never trips it), so every
        PACS exchange also has this overall deadline. Default: each of the four requests of an
        inference (query, instance query, retrieve, store + confirming query) may use every
        attempt at ten timeouts each, plus the backoff waits.
        """
        if self.deadline_s is not None:
            return self.deadline_s
        waits = sum(self.backoff_s * 2**n for n in range(self.attempts - 1))
        return 5 * (self.attempts * 10 * self.timeout_s + waits)


def redact(url: str) -> str:
    """``url`` without user name or password (they would leak into messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Pacs:
    """A DICOMweb endpoint (``http://host:port/dicom-web``) with bounded retries.

    Args:
        url: the DICOMweb root (QIDO, WADO and STOW share it).
        retry: how often and how patiently to retry.
    """

    def __init__(self, url: str, retry: RetryPolicy | None = None) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = url.rstrip("/")
        self.where = redact(self.url)
        self.retry = retry or RetryPolicy()
        self.deadline = time.monotonic() + self.retry.overall_s
        self.last: requests.Response | None = None
        session = requests.Session()
        # Read every answer here, under the deadline, before dicomweb-client decodes it.
        session.hooks["response"].append(self._read_within_deadline)
        self.client = DICOMwebClient(url=self.url, session=session, timeout=self.retry.timeout_s)
        # One retry loop, ours: the client's default (5 tries per error) hides outages.
        self.client.set_http_retry_params(retry=False)

    def _read_within_deadline(self, response: requests.Response, *_: Any, **__: Any) -> None:
        """Read the body chunk by chunk (read1: whatever arrived), checking the deadline."""
        self.last = response
        if response._content_consumed:  # noqa: SLF001 (already read: nothing to bound)
            return
        chunks = []
        while True:
            if time.monotonic() > self.deadline:
                response.close()
                raise PacsError(
                    f"{self.where} did not answer within the {self.retry.overall_s:g} s deadline "
                    f"(--deadline; {redact(response.url)})"
                )
            try:
                chunk = response.raw.read1(65536, decode_content=True)
            except Exception as err:  # urllib3's timeouts and resets, re-raised as requests'
                raise requests.ConnectionError(str(err)) from err
            if not chunk:
                break
            chunks.append(chunk)
        response._content = b"".join(chunks)  # noqa: SLF001 (requests' buffered body)
        response._content_consumed = True  # noqa: SLF001

    def _garbage(self, what: str, err: Exception) -> PacsError:
        """A message for an answer that is not DICOMweb: the URL and what came back."""
        response = self.last
        if response is None:
            return PacsError(f"{what} at {self.where}: unreadable answer ({type(err).__name__})")
        kind = response.headers.get("Content-Type", "no content type")
        head = (response._content or b"")[:SNIPPET_CHARS].decode("ascii", "replace")  # noqa: SLF001
        head = "".join(c if c.isprintable() else "?" for c in head)
        return PacsError(
            f"{what} at {redact(response.url)}: the answer is not DICOMweb "
            f"(HTTP {response.status_code}, {kind[:80]}, starts with {head!r})"
        )

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with retries; PacsError naming ``what`` when it gives up."""
        problem = ""
        for attempt in range(self.retry.attempts):
            if attempt:
                time.sleep(self.retry.backoff_s * 2 ** (attempt - 1))
            if time.monotonic() > self.deadline:
                problem = f"the {self.retry.overall_s:g} s deadline passed (--deadline)"
                break
            try:
                return fn(*args, **kwargs)
            except GARBAGE as err:
                raise self._garbage(what, err) from None
            except requests.HTTPError as err:
                status = err.response.status_code if err.response is not None else None
                problem = f"HTTP {status}"
                if status not in RETRIABLE_STATUS:
                    break
            except (requests.ConnectionError, requests.Timeout) as err:
                problem = f"cannot reach the server ({type(err).__name__})"
            log.warning("%s at %s: %s (attempt %d)", what, self.where, problem, attempt + 1)
        raise PacsError(f"{what} at {self.where} failed after {attempt + 1} attempt(s): {problem}")

    def series(self, study: str) -> list[dict[str, Any]]:
        """The study's series: ``uid``, ``modality``, ``instances`` (QIDO-RS)."""
        rows = self._call(
            "query of the study's series",
            self.client.search_for_series,
            search_filters={"StudyInstanceUID": study},
            fields=["Modality", "NumberOfSeriesRelatedInstances"],
        )
        rows = self._rows(what="query of the study's series", rows=rows)
        out = []
        for row in rows:
            try:
                values = {tag: (item.get("Value") or [None])[0] for tag, item in row.items()}
            except GARBAGE as err:
                raise self._garbage("query of the study's series", err) from None
            out.append(
                {
                    "uid": values.get("0020000E"),
                    "modality": values.get("00080060") or "",
                    "instances": int(values.get("00201209") or 0),
                }
            )
        return [s for s in out if s["uid"]]

    def pick_series(self, study: str, modalities: list[str], series: str | None = None) -> str:
        """The series to run on: ``series`` if given, else the largest image series of an
        accepted modality (any non-derived modality when ``modalities`` is empty)."""
        found = self.series(study)
        if not found:
            raise PacsError(f"study not found at {self.where} (QIDO-RS returned no series)")
        if series is not None:
            if series not in {s["uid"] for s in found}:
                raise PacsError(f"the study at {self.where} has no series {series}")
            return series
        images = [
            s
            for s in found
            if s["modality"] not in NOT_IMAGES and (not modalities or s["modality"] in modalities)
        ]
        if not images:
            seen = sorted({s["modality"] for s in found})
            raise PacsError(f"the study has no {modalities or 'image'} series (found {seen})")
        return max(images, key=lambda s: s["instances"])["uid"]

    def instance_uids(self, study: str, series: str) -> set[str]:
        """SOP Instance UIDs of a series (QIDO-RS)."""
        rows = self._call(
            "query of the series' instances",
            self.client.search_for_instances,
            study_instance_uid=study,
            series_instance_uid=series,
            get_remaining=True,
        )
        rows = self._rows(what="query of the series' instances", rows=rows)
        try:
            return {row["00080018"]["Value"][0] for row in rows if "00080018" in row}
        except GARBAGE as err:
            raise self._garbage("query of the series' instances", err) from None

    def _rows(self, what: str, rows: Any) -> list[dict[str, Any]]:
        """QIDO-RS rows, refused unless a list of DICOM JSON objects."""
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise self._garbage(what, TypeError("not a list of DICOM JSON objects"))
        return rows

    def retrieve_series(self, study: str, series: str, folder: Path) -> list[Path]:
        """Retrieve a series (WADO-RS) into ``folder``, checked against the query.

        Raises:
            PacsError: fewer/other instances than the query lists, or truncated pixel data.
        """
        expected = self.instance_uids(study, series)
        datasets = self._call("retrieve of the series", self.client.retrieve_series, study, series)
        got = {str(ds.SOPInstanceUID) for ds in datasets}
        if got != expected:
            raise PacsError(
                f"retrieve from {self.where} incomplete: {len(got & expected)} of "
                f"{len(expected)} instances arrived"
            )
        paths = []
        for index, ds in enumerate(datasets):
            _check_pixels(ds, self.where)
            path = folder / f"{index:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths

    def store(self, dataset: Dataset, study: str) -> None:
        """Store ``dataset`` (STOW-RS) and confirm it: response lists it, QIDO finds it.

        Raises:
            PacsError: the server refused or did not confirm the instance.
        """
        uid = str(dataset.SOPInstanceUID)
        response = self._call(
            "store (STOW-RS) of the result",
            self.client.store_instances,
            [dataset],
            study_instance_uid=study,
        )
        stored = {
            str(item.get("ReferencedSOPInstanceUID", ""))
            for item in response.get("ReferencedSOPSequence", [])
        }
        failed = response.get("FailedSOPSequence", [])
        if uid not in stored or failed:
            raise PacsError(f"store (STOW-RS) at {self.where} did not confirm the result")
        found = self._call(
            "query for the stored result",
            self.client.search_for_instances,
            study_instance_uid=study,
            series_instance_uid=str(dataset.SeriesInstanceUID),
            search_filters={"SOPInstanceUID": uid},
        )
        if not found:
            raise PacsError(f"the stored result is not found in the study at {self.where}")


def _check_pixels(ds: Dataset, where: str) -> None:
    """Refuse an instance whose native pixel data is shorter than its header says."""
    if "PixelData" not in ds:
        raise PacsError(f"retrieve from {where}: an instance arrived without pixel data")
    if getattr(ds.file_meta, "TransferSyntaxUID", None) is not None and (
        ds.file_meta.TransferSyntaxUID.is_compressed
    ):
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    needed = ds.Rows * ds.Columns * ds.SamplesPerPixel * frames * ds.BitsAllocated // 8
    if len(ds.PixelData) < needed:
        raise PacsError(f"retrieve from {where}: truncated pixel data in an instance")


def infer_from_pacs(
    url: str,
    study: str,
    model: str | Path | LoadedModel,
    output_dir: str | Path,
    series: str | None = None,
    retry: RetryPolicy | None = None,
    on_result: Callable[[Inference], None] | None = None,
    covariates: list[float] | None = None,
) -> Inference:
    """Query and retrieve a study's series, run the model, store the DICOM result back.

    ``result.json`` says ``"status": "pending_store"`` until the store is confirmed, then
    ``"ok"``; on a failed store it says ``"store_failed"`` and PacsError is raised.

    Args:
        url: DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        study: StudyInstanceUID.
        model: exported model file (verified) or a loaded model.
        output_dir: where result.json and the DICOM result are written.
        series: SeriesInstanceUID to use instead of the automatic choice.
        retry: retry policy for every request.
        on_result: called after inference, before the store (a hook for monitoring).
        covariates: clinical values for models that take them (card order, NaN = missing).

    Raises:
        PacsError: unreachable server, failed query/retrieve, or an unconfirmed store.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    pacs = Pacs(url, retry)
    modalities = list((loaded.card.get("input") or {}).get("modality") or [])
    chosen = pacs.pick_series(study, modalities, series)
    with tempfile.TemporaryDirectory(prefix="medimg-wado-") as scratch:
        pacs.retrieve_series(study, chosen, Path(scratch))
        inference = run_inference(
            loaded, scratch, output_dir, status="pending_store", covariates=covariates
        )
    if on_result is not None:
        on_result(inference)
    if inference.dicom is None:
        raise PacsError("this model writes no DICOM result to store (regression model)")
    result_path = inference.files["json"]
    try:
        pacs.store(inference.dicom, study)
    except PacsError as err:
        inference.result.update(status="store_failed", pacs={"stored": False, "error": str(err)})
        write_json(result_path, inference.result)
        raise
    inference.result.update(
        status="ok",
        pacs={"stored": True, "confirmed_by_query": True, "server": pacs.where},
    )
    write_json(result_path, inference.result)
    return inference
