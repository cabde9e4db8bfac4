"""``medimg infer --dicomweb`` against faulty servers: exit 3, one clear message, no traceback.

The servers are plain Python on 127.0.0.1 in a thread; each answers a bounded number of
requests and stops itself.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from medimg.cli import main
from medimg.deploy.commands import PACS_EXIT
from medimg.export.tiny import export_tiny

SERIES_JSON = b'[{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}, "00080060": {"vr": "CS", "Value": ["CT"]}, "00201209": {"vr": "IS", "Value": [2]}}]'
INSTANCES_JSON = b'[{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]}}]'
Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


def _send(handler, body: bytes, content_type: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _trickle(handler) -> None:
    """Headers at once, then one byte every two seconds (each read well within --timeout)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/dicom+json")
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    for _ in range(10):
        try:
            handler.wfile.write(b" ")
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(2)


def _html(handler) -> None:
    _send(handler, b"<html><head><title>Proxy login</title></head>\x07</html>", "text/html")


def _wrong_shape(handler) -> None:
    _send(handler, b'{"error": "not a list"}', "application/dicom+json")


def _garbage_multipart(handler) -> None:
    """Valid queries, then a multipart/related retrieve whose part is not DICOM."""
    if "/instances" in handler.path:
        # dicomweb-client pages through instances until an empty page.
        page = INSTANCES_JSON if "offset=0" in handler.path else b"[]"
        _send(handler, page, "application/dicom+json")
        return
    if "/series?" in handler.path:
        _send(handler, SERIES_JSON, "application/dicom+json")
        return
    body = (
        b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n"
        + b"\x00garbage" * 50
        + b"\r\n--XyZ--\r\n"
    )
    _send(handler, body, 'multipart/related; type="application/dicom"; boundary=XyZ')


@pytest.fixture
def server(request) -> Iterator[str]:
    answer: Answer = request.param

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            answer(self)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.timeout = 1

    def serve() -> None:
        # Bounded: a few dozen requests at most, or 40 s, then stop.
        end = time.monotonic() + 40
        for _ in range(40):
            if time.monotonic() > end or stop.is_set():
                break
            httpd.handle_request()

    stop = threading.Event()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://alice:s3cret@127.0.0.1:{httpd.server_address[1]}/dicom-web"
    stop.set()
    thread.join(5)
    httpd.server_close()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_tiny("classification", tmp_path_factory.mktemp("model") / "cls")


def _infer(model, url, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    args = ["infer", "--model", str(model), "--dicomweb", url, "--study", "1.2.3"]
    args += ["--output", str(tmp_path / "out"), "--retries", "1", "--backoff", "0", *extra]
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.err


def _assert_clean_failure(status: int, err: str, tmp_path) -> None:
    assert status == PACS_EXIT, err
    assert "Traceback" not in err
    assert "s3cret" not in err and "alice" not in err
    assert "127.0.0.1" in err
    assert len([line for line in err.splitlines() if line.startswith("medimg: error")]) == 1
    assert not (tmp_path / "out" / "result.json").exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", [_trickle], indirect=True)
def test_trickling_server_is_cut_off_at_the_deadline(server, model, tmp_path, capsys):
    start = time.monotonic()
    status, err = _infer(model, server, tmp_path, capsys, "--timeout", "3", "--deadline", "4")
    elapsed = time.monotonic() - start
    _assert_clean_failure(status, err, tmp_path)
    assert "deadline" in err
    assert elapsed < 4 + 3 + 5  # the deadline, one read timeout, and a margin


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", [_html], indirect=True)
def test_html_login_page_is_named_not_parsed(server, model, tmp_path, capsys):
    status, err = _infer(model, server, tmp_path, capsys, "--timeout", "3")
    _assert_clean_failure(status, err, tmp_path)
    assert "text/html" in err and "Proxy login" in err
    assert "Expecting value" not in err and "\x07" not in err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", [_wrong_shape], indirect=True)
def test_json_of_the_wrong_shape_is_refused(server, model, tmp_path, capsys):
    status, err = _infer(model, server, tmp_path, capsys, "--timeout", "3")
    _assert_clean_failure(status, err, tmp_path)
    assert "not DICOMweb" in err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", [_garbage_multipart], indirect=True)
def test_garbage_multipart_part_is_refused(server, model, tmp_path, capsys):
    status, err = _infer(model, server, tmp_path, capsys, "--timeout", "3")
    _assert_clean_failure(status, err, tmp_path)
    assert "multipart/related" in err
