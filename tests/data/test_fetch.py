"""Fetching against a real HTTP server on the loopback interface: success, 404, cut and stalled transfers."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spokenwords.cli import UserError
from spokenwords.data import fetch as fetch_module
from spokenwords.data.fetch import fetch, sha256_of

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: more than one read chunk
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
WRONG = "0" * 64


class Server(ThreadingHTTPServer):
    """Loopback server that records each request path and can hold stalled handlers until the test ends."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[str] = []
        self.release = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when a client this test abandoned has closed its socket."""


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        """No request log on stderr: tests read stderr."""

    def send_body_head(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.path in ("/data/archive.tar.gz", "/data/%C3%BCber%20archive.tar.gz"):
            self.send_body_head(len(PAYLOAD))
            self.wfile.write(PAYLOAD)
        elif self.path == "/flaky.tar.gz" and self.server.hits.count(self.path) == 1:
            self.send_error(503)
        elif self.path == "/flaky.tar.gz":
            self.send_body_head(len(PAYLOAD))
            self.wfile.write(PAYLOAD)
        elif self.path.startswith("/redirect"):
            target = "ftp://127.0.0.1/archive.tar.gz" if self.path == "/redirect-to-ftp" else "/data/archive.tar.gz"
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/cut.tar.gz":  # promises the whole payload, sends a tenth, hangs up
            self.send_body_head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 10])
            self.close_connection = True
        elif self.path == "/stall-before-headers.tar.gz":
            self.server.release.wait(10)
        elif self.path == "/stall-in-body.tar.gz":
            self.send_body_head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            self.server.release.wait(10)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's URL, with a short timeout and quick retries so failure paths take well under a second."""
    server.hits.clear()
    monkeypatch.setattr(fetch_module, "TIMEOUT_S", 0.3)
    monkeypatch.setattr(fetch_module, "ATTEMPTS", 2)
    monkeypatch.setattr(fetch_module, "BACKOFF_S", 0.01)
    for name in ("no_proxy", "NO_PROXY"):  # a proxy from the environment must not see loopback requests
        monkeypatch.setenv(name, "127.0.0.1")
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def test_download_with_digest(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{base}/data/archive.tar.gz"
    path = fetch(url, tmp_path, DIGEST.upper())
    assert path == tmp_path / "archive.tar.gz"
    assert path.read_bytes() == PAYLOAD
    assert list(tmp_path.iterdir()) == [path]
    assert f"fetching {url}" in capsys.readouterr().err


def test_spaces_and_unicode_in_the_url_are_escaped(base: str, tmp_path: Path) -> None:
    path = fetch(f"{base}/data/über archive.tar.gz", tmp_path, DIGEST)
    assert path == tmp_path / "_ber_archive.tar.gz"
    assert path.read_bytes() == PAYLOAD


def test_5xx_is_retried(base: str, server: Server, tmp_path: Path) -> None:
    assert fetch(f"{base}/flaky.tar.gz", tmp_path).read_bytes() == PAYLOAD
    assert server.hits == ["/flaky.tar.gz"] * 2


def test_redirects_are_followed_to_http_only(base: str, server: Server, tmp_path: Path) -> None:
    assert fetch(f"{base}/redirect", tmp_path, DIGEST).read_bytes() == PAYLOAD
    with pytest.raises(UserError) as caught:
        fetch(f"{base}/redirect-to-ftp", tmp_path / "other")
    assert "redirects to ftp://127.0.0.1/archive.tar.gz, which is not http(s)" in str(caught.value)
    assert server.hits == ["/redirect", "/data/archive.tar.gz", "/redirect-to-ftp"]
    assert list((tmp_path / "other").iterdir()) == []


def test_404_fails_at_once(base: str, server: Server, tmp_path: Path) -> None:
    url = f"{base}/missing.tar.gz"
    with pytest.raises(UserError, match="HTTP 404") as caught:
        fetch(url, tmp_path)
    assert url in str(caught.value)
    assert "data.url" in str(caught.value)
    assert server.hits == ["/missing.tar.gz"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/cut.tar.gz", "connection cut after"),
        ("/stall-before-headers.tar.gz", "no data from the server for 0.3 s"),
        ("/stall-in-body.tar.gz", "no data from the server for 0.3 s"),
    ],
)
def test_broken_transfer_is_retried_then_reported(
    base: str, server: Server, tmp_path: Path, path: str, reason: str
) -> None:
    url = f"{base}{path}"
    with pytest.raises(UserError) as caught:
        fetch(url, tmp_path, DIGEST)
    message = str(caught.value)
    assert url in message
    assert reason in message
    assert "after 2 attempts" in message
    assert "retry" in message
    assert server.hits == [path] * 2
    assert list(tmp_path.iterdir()) == []


def test_download_digest_mismatch_leaves_nothing(base: str, tmp_path: Path) -> None:
    url = f"{base}/data/archive.tar.gz"
    with pytest.raises(UserError) as caught:
        fetch(url, tmp_path, WRONG)
    message = str(caught.value)
    assert all(part in message for part in (url, WRONG, DIGEST, "data.sha256"))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "local" / "speech.tar.gz"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_local_path_and_file_url_are_used_in_place(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    assert fetch(str(archive), work, DIGEST) == archive
    assert fetch(archive.as_uri(), work, DIGEST) == archive
    assert fetch(archive.as_uri().replace("file://", "file://localhost"), work) == archive
    assert not work.exists()
    assert capsys.readouterr().err.count(f"using local archive {archive}") == 3


def test_local_digest_mismatch_names_both_digests(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        fetch(str(archive), tmp_path / "work", WRONG)
    message = str(caught.value)
    assert all(part in message for part in (str(archive), WRONG, DIGEST))
    assert archive.read_bytes() == PAYLOAD


def test_folder_is_used_as_is_but_takes_no_digest(tmp_path: Path) -> None:
    folder = tmp_path / "extracted"
    folder.mkdir()
    assert fetch(str(folder), tmp_path / "work") == folder
    with pytest.raises(UserError, match=r"folder.*data\.sha256"):
        fetch(str(folder), tmp_path / "work", DIGEST)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("ftp://example.com/data.tar.gz", "scheme must be one of http, https, file"),
        ("s3://bucket/data.tar.gz", "scheme must be one of http, https, file"),
        ("file://server/share/data.tar.gz", "must name a local path"),
        ("http:///data.tar.gz", "no host name"),
    ],
)
def test_unusable_urls_are_refused(tmp_path: Path, location: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as caught:
        fetch(location, tmp_path)
    assert location in str(caught.value)


def test_missing_local_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    for location in (str(missing), missing.as_uri()):
        with pytest.raises(UserError, match="does not exist") as caught:
            fetch(location, tmp_path)
        assert location in str(caught.value)


def test_sha256_of_streams_the_file(archive: Path) -> None:
    assert sha256_of(archive) == DIGEST
