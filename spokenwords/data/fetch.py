"""Find the dataset archive: download it (retries, progress bar, timeout) or use a local file or folder,
and check its SHA-256 so a truncated or tampered archive is caught before anything is built from it."""

from __future__ import annotations

import hashlib
import http.client
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import quote, unquote, urlsplit

from tqdm import tqdm

from spokenwords.cli import UserError
from spokenwords.fileio import atomic_path, ensure_space

SCHEMES = ("http", "https", "file")
TIMEOUT_S = 60.0  # longest silence from the server before an attempt counts as failed
ATTEMPTS = 4
BACKOFF_S = 2.0  # wait before the second attempt; doubled before each later one
CHUNK = 1 << 20
USER_AGENT = "spoken-words-pipeline/0.1"


class RetryableError(Exception):
    """A failure that another attempt may not repeat: connection error, timeout, HTTP 5xx, cut body."""


class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only: the allowed schemes must hold for where the data really comes from."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise UserError(f"cannot fetch {req.full_url}: it redirects to {newurl}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so multi-GB archives need no memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fetch(location: str, workdir: Path, sha256: str = "") -> Path:
    """Return a local path to the archive or folder that `location` names, verified against sha256 when given.

    `location` is an http(s) or file:// URL, a local archive or an extracted folder. Downloads land in
    `workdir` (the caller deletes it), appear there only when complete and verified, and are retried on
    transient failures.
    """
    expected = sha256.strip().lower()
    if "://" not in location:
        return _local(location, Path(location).expanduser(), expected)
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UserError(f"cannot fetch {location}: the URL scheme must be one of {', '.join(SCHEMES)}")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UserError(f"cannot fetch {location}: file:// URLs must name a local path, not host {parts.netloc!r}")
        return _local(location, Path(urllib.request.url2pathname(parts.path)), expected)
    if not parts.hostname:
        raise UserError(f"cannot fetch {location}: the URL has no host name; check data.url")
    return _download(location, workdir, expected)


def _local(location: str, path: Path, expected: str) -> Path:
    if path.is_dir():
        if expected:
            raise UserError(
                f"data.sha256 is set but {location} is a folder: a checksum applies only to an archive; "
                "clear data.sha256 or point data.url at the archive"
            )
        print(f"using local folder {path}", file=sys.stderr)
        return path
    if not path.is_file():
        raise UserError(f"{location} does not exist (no such file or folder); check data.url")
    print(f"using local archive {path}", file=sys.stderr)
    if expected:
        try:
            actual = sha256_of(path)
        except OSError as error:
            raise UserError(f"cannot read {path}: {error.strerror}") from None
        _verify(location, expected, actual)
    return path


def _verify(location: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise UserError(
            f"SHA-256 mismatch for {location}: expected {expected}, got {actual}. The archive is damaged or "
            "has changed upstream: retry, or if you trust the new file set data.sha256 to the new digest "
            "(or empty it to skip the check)"
        )


def _download(url: str, workdir: Path, expected: str) -> Path:
    """Download with retries and exponential backoff; only a complete, verified file gets its final name."""
    print(f"fetching {url}", file=sys.stderr)
    final = workdir / _file_name(url)
    delay = BACKOFF_S
    attempt = 1
    while True:
        try:
            with atomic_path(final) as part:  # a failed attempt leaves no file behind
                digest = hashlib.sha256()
                with open(part, "wb") as out:
                    for chunk in _body(url, final):
                        digest.update(chunk)
                        out.write(chunk)
                if expected:
                    _verify(url, expected, digest.hexdigest())
            return final
        except OSError as error:
            raise UserError(f"cannot save the download of {url} in {workdir}: {error}") from None
        except RetryableError as error:
            if attempt >= ATTEMPTS:
                raise UserError(
                    f"could not download {url} after {ATTEMPTS} attempts ({error}); check your connection and "
                    "retry, or download the archive yourself and set data.url to its local path"
                ) from None
            print(f"attempt {attempt} of {ATTEMPTS} failed ({error}); retrying in {delay:g} s", file=sys.stderr)
            time.sleep(delay)
            delay *= 2
            attempt += 1


def _file_name(url: str) -> str:
    """A safe local name that keeps the URL's suffix, which tells extract() the archive format."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "download"


def _body(url: str, final: Path) -> Iterator[bytes]:
    """Yield the response body in chunks; transient failures raise RetryableError, permanent ones UserError.

    A Content-Length the disk that holds ``final`` has no room for is refused before the first byte is written.
    """
    # fetch() checked the scheme and HttpOnlyRedirects checks redirects, so this never reaches file: or ftp:.
    # Quoting turns spaces and non-ASCII characters, which http.client refuses, into %-escapes.
    quoted = quote(url, safe=":/?#[]@!$&'()*+,;=%~")
    request = urllib.request.Request(quoted, headers={"User-Agent": USER_AGENT})  # noqa: S310
    received = 0
    try:
        # Built per call so proxy settings are read from the environment as it is now.
        opener = urllib.request.build_opener(HttpOnlyRedirects)
        with opener.open(request, timeout=TIMEOUT_S) as response:
            header = response.headers.get("Content-Length", "")
            length = int(header) if header.isdigit() else None
            if length is not None:
                ensure_space(final.parent, length)
            with tqdm(
                total=length,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=final.name,
                file=sys.stderr,
                disable=None,
            ) as bar:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    bar.update(len(chunk))
                    yield chunk
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code == 429:
            raise RetryableError(f"HTTP {error.code} {error.reason}") from None
        raise UserError(f"cannot download {url}: HTTP {error.code} {error.reason}; check data.url") from None
    except (OSError, http.client.HTTPException) as error:
        raise RetryableError(_describe(error)) from None
    if length is not None and received < length:
        raise RetryableError(f"connection cut after {received} of {length} bytes")


def _describe(error: Exception) -> str:
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, TimeoutError):
        return f"no data from the server for {TIMEOUT_S:g} s"
    return str(cause) or type(cause).__name__
