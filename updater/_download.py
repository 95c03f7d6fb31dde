"""The downloader: one GET over h11 on Trio streams, streamed into a private staging file.

Theory of operation
-------------------
``download()`` fetches one URL into a new file in the staging directory and returns its
SHA-256 and length, computed while the bytes stream through (the file is never read back,
and never held in memory). Every way a server can waste our time or disk is bounded:

* **URL policy** (:mod:`updater._url`): https only unless the host is allowed plain http;
  every redirect target passes the same check; at most ``max_redirects`` hops.
* **Connect timeout**: TCP connect plus TLS handshake, per hop.
* **Total deadline**: the whole download, redirects included (``too_slow``).
* **Minimum rate**: the bytes received (headers too) are counted in consecutive windows of
  ``rate_window_s``; a window below ``min_rate_bps`` ends the download (``too_slow``). A
  server that drips one byte every few seconds, or says nothing at all, is cut off at the
  end of the first window, whatever its read-gap timing.
* **Size**: a ``Content-Length`` above the cap is refused before the body is read; the body
  is cut off at ``cap + 1`` bytes (``too_large``), where the cap is the signed length (when
  known) and never more than ``max_bytes``. A body shorter than announced or signed is
  ``length_mismatch``.
* **Disk**: free space for the artifact plus a reserve is checked before downloading and
  again once ``Content-Length`` is known (``disk_full``); ENOSPC while writing is also
  ``disk_full``. The staging file is removed on every failure.

Staging files are created with ``O_EXCL`` and mode 0600 in a directory only we can write:
nothing downloaded is executable or in place until the install step has verified it.

Writes to the staging file are synchronous ``os.write`` calls of at most 64 KiB, made from the
event loop: they land in the page cache in microseconds, and a thread hop per chunk would
cost more than it saves (and would let ``MockClock``'s autojump skip the rate windows in
tests). The single ``fsync`` at the end runs in a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h11
import trio

from ._config import DownloadLimits
from ._errors import DownloadError, Reason
from ._url import Endpoint, check_url, resolve_redirect

__all__ = ["Downloaded", "download"]

_CHUNK = 64 * 1024
_USER_AGENT = "hostvisor-updater/1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

ChunkWriter = Callable[[int, bytes], int]
"""``os.write``-compatible: write bytes to a file descriptor, return how many were written."""
FreeSpace = Callable[[Path], int]
"""Return the free bytes on the filesystem holding a directory."""


def _free_space(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A fully received, fsynced staging file (not yet verified against a statement).

    Attributes:
        path: The staging file (mode 0600). The caller owns it and must remove it.
        sha256: Hex SHA-256 of the bytes received.
        length: Number of bytes received.
        url: The URL the bytes finally came from (after redirects).
    """

    path: Path
    sha256: str
    length: int
    url: str


class _Meter:
    """Counts bytes per rate window and enforces the minimum rate."""

    def __init__(self, limits: DownloadLimits) -> None:
        self.limits = limits
        self.window_end = trio.current_time() + limits.rate_window_s
        self.window_bytes = 0

    async def receive(self, stream: trio.abc.ReceiveStream) -> bytes | bytearray:
        while True:
            with trio.move_on_at(self.window_end):
                data = await stream.receive_some(_CHUNK)
                self.window_bytes += len(data)
                if trio.current_time() < self.window_end:
                    return data
                self._close_window()
                return data
            self._close_window()

    def _close_window(self) -> None:
        need = self.limits.min_rate_bps * self.limits.rate_window_s
        if self.window_bytes < need:
            raise DownloadError(
                Reason.TOO_SLOW,
                f"{self.window_bytes} bytes in {self.limits.rate_window_s} s, below the minimum"
                f" rate of {self.limits.min_rate_bps} B/s",
            )
        self.window_bytes = 0
        self.window_end = trio.current_time() + self.limits.rate_window_s


class _Staging:
    """A staging file being written: hashes and counts as it goes, removed unless kept."""

    def __init__(self, directory: Path, write: ChunkWriter) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / f".download-{secrets.token_hex(8)}.part"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.write_chunk = write
        self.digest = hashlib.sha256()
        self.length = 0

    def reset(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.digest = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = self.write_chunk(self.fd, view.tobytes())
                view = view[written:]
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(Reason.DISK_FULL, f"disk full while staging: {exc}") from exc
            raise DownloadError(Reason.IO_ERROR, f"cannot write staging file: {exc}") from exc
        self.digest.update(data)
        self.length += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


async def _connect(
    endpoint: Endpoint, limits: DownloadLimits, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    with trio.move_on_after(limits.connect_timeout_s):
        try:
            tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        except OSError as exc:
            raise DownloadError(
                Reason.UNREACHABLE, f"cannot connect to {endpoint.host_header}: {exc}"
            ) from exc
        if not endpoint.tls:
            return tcp
        context = ssl_context or ssl.create_default_context()
        stream = trio.SSLStream(tcp, context, server_hostname=endpoint.host, https_compatible=True)
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(stream)
            raise DownloadError(
                Reason.TLS_ERROR,
                f"TLS handshake with {endpoint.host_header} failed: {exc.__cause__}",
            ) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream
    raise DownloadError(
        Reason.UNREACHABLE,
        f"connecting to {endpoint.host_header} took over {limits.connect_timeout_s} s",
    )


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream, meter: _Meter) -> h11.Event:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise DownloadError(Reason.PROTOCOL_ERROR, f"bad HTTP response: {exc}") from exc
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:  # only after a complete response, which we never read past
            raise DownloadError(Reason.PROTOCOL_ERROR, "unexpected pause in the HTTP stream")
        try:
            data = await meter.receive(stream)
        except trio.BrokenResourceError as exc:
            raise DownloadError(Reason.PROTOCOL_ERROR, f"connection broken: {exc}") from exc
        conn.receive_data(bytes(data))


async def _fetch_once(
    endpoint: Endpoint,
    staging: _Staging,
    *,
    cap: int,
    expected_length: int | None,
    limits: DownloadLimits,
    ssl_context: ssl.SSLContext | None,
    free_space: FreeSpace,
    meter: _Meter,
) -> str | None:
    """Fetch one hop. Returns a redirect location, or None once the body is staged."""
    stream = await _connect(endpoint, limits, ssl_context)
    try:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
        request = h11.Request(
            method="GET",
            target=endpoint.target,
            headers=[
                ("Host", endpoint.host_header),
                ("User-Agent", _USER_AGENT),
                ("Accept-Encoding", "identity"),
                ("Connection", "close"),
            ],
        )
        try:
            await stream.send_all(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
        except trio.BrokenResourceError as exc:
            raise DownloadError(Reason.UNREACHABLE, f"connection broken: {exc}") from exc
        while True:
            event = await _next_event(conn, stream, meter)
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise DownloadError(Reason.PROTOCOL_ERROR, "connection closed before a response")
        headers = {name.lower(): value for name, value in event.headers}
        if event.status_code in _REDIRECTS:
            location = headers.get(b"location")
            if not location:
                raise DownloadError(Reason.PROTOCOL_ERROR, f"{event.status_code} without Location")
            return location.decode("latin-1")
        if event.status_code != 200:
            raise DownloadError(Reason.HTTP_STATUS, f"HTTP {event.status_code} from {endpoint.url}")
        if headers.get(b"content-encoding", b"identity").lower() != b"identity":
            raise DownloadError(Reason.PROTOCOL_ERROR, "server ignored Accept-Encoding: identity")
        announced = headers.get(b"content-length")
        if announced is not None:
            size = int(announced)
            if size > cap:
                raise DownloadError(
                    Reason.TOO_LARGE, f"Content-Length {size} exceeds the cap of {cap} bytes"
                )
            _check_disk(staging.path.parent, size, limits, free_space)
        while True:
            try:
                event = await _next_event(conn, stream, meter)
            except DownloadError as exc:
                if exc.reason is Reason.PROTOCOL_ERROR and announced is not None:
                    raise DownloadError(
                        Reason.LENGTH_MISMATCH,
                        f"connection closed after {staging.length} of {int(announced)} bytes",
                    ) from exc
                raise
            if isinstance(event, h11.Data):
                if staging.length + len(event.data) > cap:
                    raise DownloadError(
                        Reason.TOO_LARGE, f"body exceeds the cap of {cap} bytes; cut off"
                    )
                staging.write(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if expected_length is not None and staging.length != expected_length:
            raise DownloadError(
                Reason.LENGTH_MISMATCH,
                f"received {staging.length} bytes, expected {expected_length}",
            )
        return None
    finally:
        await trio.aclose_forcefully(stream)


def _check_disk(directory: Path, size: int, limits: DownloadLimits, free_space: FreeSpace) -> None:
    try:
        free = free_space(directory)
    except OSError as exc:
        raise DownloadError(Reason.IO_ERROR, f"cannot stat {directory}: {exc}") from exc
    if free < size + limits.disk_reserve_bytes:
        raise DownloadError(
            Reason.DISK_FULL,
            f"{free} bytes free in {directory}, need {size} + {limits.disk_reserve_bytes} reserve",
        )


async def download(
    url: str,
    staging_dir: Path,
    *,
    limits: DownloadLimits,
    expected_length: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    write: ChunkWriter = os.write,
    free_space: FreeSpace = _free_space,
) -> Downloaded:
    """Download ``url`` into a new staging file under ``staging_dir``.

    Args:
        url: The URL (checked against the policy in ``limits``).
        staging_dir: Private directory for the staging file (created 0700 if missing).
        limits: Timeouts, rates and caps.
        expected_length: The signed length, if known: the cap, and the exact size required.
        ssl_context: Trust settings for https (default: the system's CAs).
        write: The write seam (``os.write``); tests inject ENOSPC here.
        free_space: The free-space seam (``shutil.disk_usage(...).free``).

    Returns:
        The staged, fsynced file with its SHA-256 and length.

    Raises:
        DownloadError: With reason ``bad_url``, ``unreachable``, ``tls_error``,
            ``http_status``, ``protocol_error``, ``too_many_redirects``, ``too_large``,
            ``too_slow``, ``length_mismatch``, ``disk_full`` or ``io_error``.
    """
    endpoint = check_url(url, allow_http_hosts=limits.allow_http_hosts)
    cap = limits.max_bytes if expected_length is None else min(expected_length, limits.max_bytes)
    if expected_length is not None and expected_length > limits.max_bytes:
        raise DownloadError(
            Reason.TOO_LARGE, f"length {expected_length} exceeds the cap {limits.max_bytes}"
        )
    staging = _Staging(staging_dir, write)
    try:
        _check_disk(staging_dir, expected_length or 0, limits, free_space)
    except BaseException:
        staging.discard()
        raise
    try:
        with trio.move_on_after(limits.deadline_s) as deadline:
            meter = _Meter(limits)
            for _hop in range(limits.max_redirects + 1):
                location = await _fetch_once(
                    endpoint,
                    staging,
                    cap=cap,
                    expected_length=expected_length,
                    limits=limits,
                    ssl_context=ssl_context,
                    free_space=free_space,
                    meter=meter,
                )
                if location is None:
                    break
                staging.reset()
                endpoint = check_url(
                    resolve_redirect(
                        endpoint.url, location, allow_http_hosts=limits.allow_http_hosts
                    ),
                    allow_http_hosts=limits.allow_http_hosts,
                )
            else:
                raise DownloadError(
                    Reason.TOO_MANY_REDIRECTS, f"more than {limits.max_redirects} redirects"
                )
        if deadline.cancelled_caught:
            raise DownloadError(
                Reason.TOO_SLOW,
                f"download not finished within the deadline of {limits.deadline_s} s"
                f" ({staging.length} bytes received)",
            )
        fd = staging.fd
        try:
            await trio.to_thread.run_sync(os.fsync, fd)
        except OSError as exc:
            reason = Reason.DISK_FULL if exc.errno == errno.ENOSPC else Reason.IO_ERROR
            raise DownloadError(reason, f"cannot fsync the staging file: {exc}") from exc
        staging.close()
        return Downloaded(staging.path, staging.digest.hexdigest(), staging.length, endpoint.url)
    except BaseException:
        staging.discard()
        raise
