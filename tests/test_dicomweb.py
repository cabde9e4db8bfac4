"""``medimg infer --dicomweb``: a real Orthanc on loopback, its own config, stopped afterwards."""

from __future__ import annotations

import glob
import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import requests

from medimg.cli import main
from medimg.export.tiny import export_tiny

PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Orthanc:
    """An Orthanc process with a generated configuration and a temporary storage folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        plugins = [p for pattern in PLUGIN_GLOBS for p in sorted(glob.glob(pattern))]
        assert Path(binary).exists() and plugins, "install Debian orthanc and orthanc-dicomweb"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "Name": "medimg-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "DicomPort": _free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [plugins[0]],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        path = folder / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = (folder / "orthanc.log").open("w")
        self.process = subprocess.Popen(
            [binary, str(path)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/dicom-web/studies", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"Orthanc did not start (see {folder / 'orthanc.log'})")

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, folder: Path) -> str:
        """Store every file of a series folder through Orthanc's REST API; its study UID."""
        for path in sorted(folder.iterdir()):
            response = requests.post(f"{self.url}/instances", data=path.read_bytes(), timeout=10)
            response.raise_for_status()
        return str(
            pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID
        )

    def series_of(self, study: str, modality: str) -> list[dict]:
        query = {"Level": "Series", "Query": {"StudyInstanceUID": study, "Modality": modality}}
        found = requests.post(f"{self.url}/tools/find", json=query, timeout=10).json()
        return [requests.get(f"{self.url}/series/{i}", timeout=10).json() for i in found]

    def instance(self, orthanc_id: str) -> pydicom.Dataset:
        response = requests.get(f"{self.url}/instances/{orthanc_id}/file", timeout=10)
        return pydicom.dcmread(io.BytesIO(response.content))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: export_tiny(kind, root / kind) for kind in ("segmentation", "classification")}


@pytest.fixture(scope="module")
def series_folder(manifests) -> Path:
    return manifests["internal"].parent / pd.read_csv(manifests["internal"])["image"].iloc[0]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


def _pacs_infer(model: Path, url: str, study: str, out: Path, capsys, *extra: str):
    argv = ["infer", "--model", str(model), "--dicomweb", url, "--study", study]
    status = main([*argv, "--output", str(out), "--retries", "2", "--backoff", "0.05", *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(("kind", "modality"), [("classification", "SR"), ("segmentation", "SEG")])
def test_result_is_stored_in_the_study_and_references_the_series(
    orthanc, models, series_folder, tmp_path, capsys, kind, modality
):
    study = orthanc.upload(series_folder)
    status, out, err = _pacs_infer(models[kind], orthanc.dicomweb, study, tmp_path, capsys)
    assert status == 0, err
    stored = orthanc.series_of(study, modality)
    assert len(stored) == 1 and len(stored[0]["Instances"]) == 1
    result = orthanc.instance(stored[0]["Instances"][0])
    assert result.StudyInstanceUID == study and str(result.SOPInstanceUID) in out
    sources = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in series_folder.iterdir()
    }
    if modality == "SR":
        referenced = {
            str(i.ReferencedSOPInstanceUID)
            for s in result.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
            for i in s.ReferencedSOPSequence
        }
    else:
        referenced = {
            str(i.ReferencedSOPInstanceUID)
            for s in result.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence
        }
    assert referenced == sources
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["status"] == "ok" and summary["pacs"]["stored"] is True
    assert study not in json.dumps(summary)


def test_server_stopped_mid_run_gives_a_clear_error_and_no_success(
    models, series_folder, tmp_path, capsys, monkeypatch
):
    server = Orthanc(tmp_path / "pacs")
    try:
        study = server.upload(series_folder)
        import medimg.deploy.dicomweb as dicomweb

        original = dicomweb.run_inference

        def run_then_stop_the_server(*args, **kwargs):
            inference = original(*args, **kwargs)
            server.stop()  # the PACS goes away between retrieve and store
            return inference

        monkeypatch.setattr(dicomweb, "run_inference", run_then_stop_the_server)
        out_dir = tmp_path / "out"
        status, out, err = _pacs_infer(
            models["classification"], server.dicomweb, study, out_dir, capsys
        )
    finally:
        server.stop()
    assert status == 3
    assert "store (STOW-RS) of the result" in err and "cannot reach the server" in err
    assert "stored" not in out
    summary = json.loads((out_dir / "result.json").read_text())
    assert summary["status"] == "store_failed" and summary["pacs"]["stored"] is False


def test_unreachable_server_fails_fast_with_a_clear_error(models, tmp_path, capsys):
    url = f"http://user:secret@127.0.0.1:{_free_port()}/dicom-web"
    start = time.monotonic()
    status, out, err = _pacs_infer(models["classification"], url, "1.2.3", tmp_path, capsys)
    assert status == 3 and time.monotonic() - start < 10
    assert "failed after 2 attempt(s): cannot reach the server" in err
    assert "secret" not in err and out == ""
    assert not (tmp_path / "result.json").exists()
