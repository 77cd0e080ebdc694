"""A resumable download of one file with retries: ``fetch(url, dest)`` for http, https and file URLs.

Bytes are streamed into ``<dest>.part`` and renamed to ``dest`` only when complete, so an
interrupted download resumes with an HTTP Range request (a file:// copy from the part's size).
Connection errors, timeouts, broken transfers and the answers in RETRY_STATUS are retried with
urllib3's backoff, or after the server's Retry-After; a host name that does not resolve and any
other 4xx fail at once. A download may be given an overall deadline and a size cap (a server that
drips a byte at a time, or streams without end): past either it stops, its part is deleted, and it
is not retried. Processes fetching the same ``dest`` take turns on ``<dest>.lock``. Every failure
raises FetchError with a one-line message naming the URL, but a full disk: its OSError names the
part, which stays to be resumed."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests
import urllib3
from filelock import FileLock
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util import Retry

from faceswap_ela.outputs import disk_full

log = logging.getLogger(__name__)

BACKOFF_S = 1.0  # urllib3's backoff_factor: the second retry waits 2 s, each later one twice as long
RETRY_AFTER_MAX_S = 120.0  # the longest Retry-After obeyed
CHUNK = 1 << 16
# Answers worth another try; every other 4xx is final.
RETRY_STATUS = frozenset({408, 425, 429, *range(500, 600)})
URL_SCHEMES = ("http", "https", "file")


class FetchError(RuntimeError):
    """A download that failed, with a one-line message naming the URL; ``status`` is the HTTP
    status of a final answer (404, say), None for any other failure."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """How long one download may take in all, retries included (None: no limit), and how many
    bytes it may write (None: any), with the names of the parameters that set them, for the
    message. ``end`` is set when the download starts (``started``)."""

    deadline_s: float | None = None
    max_bytes: int | None = None
    deadline_key: str = "deadline_s"
    max_bytes_key: str = "max_bytes"
    end: float | None = None

    def started(self) -> Limits:
        return replace(self, end=None if self.deadline_s is None else time.monotonic() + self.deadline_s)

    def check(self, url: str, part: Path, size: int) -> None:
        """FetchError (and ``part`` deleted) when ``size`` bytes are over the cap or time is up."""
        problem = None
        if self.max_bytes is not None and size > self.max_bytes:
            problem = f"it is larger than {_mib(self.max_bytes)} ({self.max_bytes_key})"
        elif self.end is not None and time.monotonic() > self.end:
            problem = f"it took longer than {self.deadline_s:g} s ({self.deadline_key}; {size:,} bytes came)"
        if problem:
            part.unlink(missing_ok=True)
            raise FetchError(f"refusing {url}: {problem}; the partial download was deleted")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


class _Restart(Exception):
    """The partial file can't be resumed: it was deleted, start again from zero (once, free)."""


class _Retry(Retry):
    """urllib3's Retry, except that a host name that does not resolve fails at once (offline, no
    retry helps) and that a server's Retry-After is capped at RETRY_AFTER_MAX_S."""

    def increment(self, method=None, url=None, *args, error=None, **kwargs):
        if isinstance(error, urllib3.exceptions.NameResolutionError):
            raise urllib3.exceptions.MaxRetryError(kwargs.get("_pool"), url, error) from error
        return super().increment(method, url, *args, error=error, **kwargs)

    def get_retry_after(self, response):
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, RETRY_AFTER_MAX_S)


def _bar(name: str, total: int | None, initial: int, progress: bool) -> tqdm:
    return tqdm(
        total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not progress, mininterval=0.5, leave=False,
    )  # fmt: skip


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def _receive(
    response: requests.Response, url: str, part: Path, offset: int, progress: bool, limits: Limits
) -> None:
    """Write the body of an answer to a GET that asked for ``part``'s missing bytes from ``offset``,
    within ``limits`` (checked after every read: a read returns what has come, not a full chunk)."""
    status = response.status_code
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if status == 206 and offset:
        content_range = response.headers.get("Content-Range")
        if _content_range_start(content_range) != offset:
            raise _Restart(f"server resumed at the wrong offset ({content_range})")
        mode, total = "ab", (offset + length if length is not None else None)
    elif status == 200:
        if offset:
            log.info("%s: server ignored the Range request; restarting from zero", url)
        offset, mode, total = 0, "wb", length
    elif status == 416 and offset:
        raise _Restart("server can't resume this file (HTTP 416)")
    else:
        raise FetchError(f"HTTP {status} {response.reason} for {url}", status)
    size = offset
    if total is not None:
        limits.check(url, part, total)  # announced too large: refused before a byte is written
    with _bar(part.name[: -len(".part")], total, offset, progress) as bar, open(part, mode) as handle:
        # bytes as sent: a server that labels a .tar.gz "Content-Encoding: gzip" mustn't get it unzipped
        while chunk := response.raw.read1(CHUNK, decode_content=False):
            handle.write(chunk)
            bar.update(len(chunk))
            size += len(chunk)
            limits.check(url, part, size)
    size = part.stat().st_size
    if total is not None and size != total:
        raise urllib3.exceptions.ProtocolError(f"connection ended after {size:,} of {total:,} bytes")


def _download(url: str, part: Path, retry: Retry, timeout_s: float, progress: bool, limits: Limits) -> None:
    """GET ``url`` into ``part``: urllib3 retries connection errors, timeouts and RETRY_STATUS
    answers; a transfer that breaks off is resumed with a Range request from what ``part`` holds
    (a retry too, from the same budget); a part the server can't resume starts again (once, free)."""
    restarted = False
    with requests.Session() as session:
        adapter = HTTPAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        while True:
            adapter.max_retries = retry
            offset = part.stat().st_size if part.exists() else 0
            limits.check(url, part, offset)
            headers = {"Accept-Encoding": "identity"}  # the archive's own bytes, never re-encoded
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                with session.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
                    retry = response.raw.retries or retry
                    _receive(response, url, part, offset, progress, limits)
                return
            except _Restart as exc:
                part.unlink()
                if restarted:
                    raise FetchError(f"could not download {url}: {exc}") from None
                restarted = True
                log.info("%s: %s; restarting from zero", url, exc)
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
                retry = retry.increment("GET", url, error=exc)
                log.warning("%s: %s; resuming (retry %d)", url, exc, len(retry.history))
                retry.sleep()


def _copy(url: str, part: Path, progress: bool, limits: Limits) -> None:
    """Copy a file:// URL into ``part``, resuming from its size; a file over the size cap is refused."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise FetchError(f"file:// URLs must name a local path, not host {parsed.netloc!r}: {url}")
    source = Path(url2pathname(parsed.path))
    if not source.is_file():
        raise FetchError(f"not found: {url} ({source} is not a file)")
    total = source.stat().st_size
    limits.check(url, part, total)
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        offset = 0
    with (
        open(source, "rb") as src,
        open(part, "ab" if offset else "wb") as dst,
        _bar(source.name, total, offset, progress) as bar,
    ):
        src.seek(offset)
        for block in iter(lambda: src.read(CHUNK), b""):
            dst.write(block)
            bar.update(len(block))
    if part.stat().st_size != total:
        raise FetchError(f"could not copy {url}: copied {part.stat().st_size:,} of {total:,} bytes")


def _cause(exc: BaseException) -> BaseException:
    """The error inside a requests or urllib3 one (after the retries: the last one's)."""
    inner = exc.args[0] if isinstance(exc, requests.RequestException) and exc.args else exc
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner if isinstance(inner, BaseException) else exc


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float | None = None,
    progress: bool = True,
    limits: Limits | None = None,
) -> Path:
    """Download ``url`` (http, https or file) to ``dest`` unless it is already there.

    Bytes go to ``dest.part``, renamed only when complete; a partial file is resumed with a Range
    request (a server answering 200 instead restarts from zero). Connection errors, timeouts (of
    ``timeout_s`` each), broken transfers and RETRY_STATUS answers are retried ``retries`` times
    in all, with urllib3's backoff (none before the first retry, then ``backoff_s``, default
    BACKOFF_S, times 2, 4, ...) or the server's Retry-After; a host name that does not resolve and
    any other 4xx fail at once. A download that goes past ``limits`` (its deadline, counted from
    now, or its size cap) is stopped, its part deleted, and not retried. Raises FetchError naming
    the URL."""
    dest = Path(dest)
    if dest.exists():
        return dest
    scheme = urlparse(url).scheme.lower()
    if scheme not in URL_SCHEMES:
        raise FetchError(f"unsupported URL scheme {scheme!r}: {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    retry = _Retry(
        total=retries, status_forcelist=RETRY_STATUS, respect_retry_after_header=True,
        backoff_factor=BACKOFF_S if backoff_s is None else backoff_s,
    )  # fmt: skip
    with FileLock(dest.with_name(dest.name + ".lock")):
        if dest.exists():  # another process finished it while we waited for the lock
            return dest
        limits = (limits or Limits()).started()
        try:
            if scheme == "file":
                _copy(url, part, progress, limits)
            else:
                _download(url, part, retry, timeout_s, progress, limits)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            full = disk_full(exc)
            if full is not None:  # not the server's fault, and no retry helps: the part stays to resume
                raise OSError(full.errno, full.strerror, str(part)) from exc
            cause = _cause(exc)
            tries = (
                ""
                if isinstance(cause, urllib3.exceptions.NameResolutionError)
                else f" after {retries + 1} attempts"
            )
            raise FetchError(
                f"could not download {url}{tries}: {str(cause) or type(cause).__name__}"
            ) from None
        os.replace(part, dest)
    return dest
