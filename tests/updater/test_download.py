"""The downloader against a fault-injecting local server: every limit, every bad input."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from fault_server import FaultServer, TLSFiles

from updater import DownloadError, DownloadLimits, Reason
from updater._download import download

DATA = os.urandom(300_000)
LIMITS = DownloadLimits(
    connect_timeout_s=5.0,
    deadline_s=60.0,
    min_rate_bps=1000,
    rate_window_s=15.0,
    max_bytes=1 << 20,
    disk_reserve_bytes=0,
    allow_http_hosts=frozenset(),
)
HTTP_OK = DownloadLimits(
    min_rate_bps=1000,
    rate_window_s=15.0,
    disk_reserve_bytes=0,
    allow_http_hosts=frozenset({"127.0.0.1"}),
)


def _empty(directory: Path) -> bool:
    return not directory.exists() or not any(directory.iterdir())


async def _fail(url: str, tmp_path: Path, tls: TLSFiles | None, **kw: object) -> DownloadError:
    args: dict[str, object] = {"limits": LIMITS}
    if tls is not None:
        args["ssl_context"] = tls.client_context()
    args.update(kw)
    with pytest.raises(DownloadError) as info:
        await download(url, tmp_path / "staging", **args)  # type: ignore[arg-type]
    assert info.value.code == "D4001"
    assert _empty(tmp_path / "staging"), "a failed download must leave no staging file"
    return info.value


async def test_https_download_streams_hash_and_length(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    https_server.files["a"] = DATA
    got = await download(
        https_server.url("/f/a"),
        tmp_path / "s",
        limits=LIMITS,
        expected_length=len(DATA),
        ssl_context=tls_files.client_context(),
    )
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert got.length == len(DATA)
    assert got.path.read_bytes() == DATA
    mode = got.path.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600, "staged files are never executable"
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700


async def test_truncated_download(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    https_server.files["a"] = DATA
    error = await _fail(https_server.url("/truncate/a"), tmp_path, tls_files)
    assert error.reason is Reason.LENGTH_MISMATCH


async def test_short_body_without_content_length(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.files["a"] = DATA[:1000]
    error = await _fail(
        http_server.url("/nolength/a"), tmp_path, None, limits=HTTP_OK, expected_length=2000
    )
    assert error.reason is Reason.LENGTH_MISMATCH


async def test_endless_download_cut_at_signed_length(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    error = await _fail(https_server.url("/endless"), tmp_path, tls_files, expected_length=70_000)
    assert error.reason is Reason.TOO_LARGE


async def test_endless_download_cut_at_global_cap(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    """Without a signed length (legacy requests), the global cap still applies."""
    error = await _fail(https_server.url("/endless"), tmp_path, tls_files)
    assert error.reason is Reason.TOO_LARGE
    assert "1048576" in str(error)


async def test_announced_length_over_cap_refused_before_body(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    error = await _fail(https_server.url("/biglength"), tmp_path, tls_files)
    assert error.reason is Reason.TOO_LARGE
    assert "Content-Length" in str(error)


async def test_signed_length_over_cap_refused_before_connecting(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    error = await _fail(https_server.url("/f/a"), tmp_path, tls_files, expected_length=2 << 20)
    assert error.reason is Reason.TOO_LARGE
    assert https_server.hits == []


async def test_drip_feeding_server_cut_off_at_first_window(
    https_server: FaultServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One byte every 2 s is far below 1000 B/s: cut off when the first 15 s window ends."""
    https_server.files["a"] = DATA
    start = trio.current_time()
    error = await _fail(https_server.url("/drip/a?every=2"), tmp_path, tls_files)
    assert error.reason is Reason.TOO_SLOW
    assert trio.current_time() - start == pytest.approx(15.0)


async def test_silent_server_cut_off(
    https_server: FaultServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    error = await _fail(https_server.url("/silent"), tmp_path, tls_files)
    assert error.reason is Reason.TOO_SLOW
    assert trio.current_time() - start == pytest.approx(15.0)


async def test_total_deadline(
    https_server: FaultServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server fast enough for the rate rule still cannot exceed the total deadline."""
    https_server.files["a"] = DATA[:500]
    limits = DownloadLimits(min_rate_bps=1, rate_window_s=5.0, deadline_s=42.0)
    start = trio.current_time()
    error = await _fail(https_server.url("/drip/a?every=1"), tmp_path, tls_files, limits=limits)
    assert error.reason is Reason.TOO_SLOW
    assert "deadline" in str(error)
    assert trio.current_time() - start == pytest.approx(42.0)


async def test_rate_windows_pass_when_fast_enough(
    https_server: FaultServer,
    tls_files: TLSFiles,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """20 bytes at one per second against 1 B/s windows of 5 s: never too slow."""
    https_server.files["a"] = DATA[:20]
    limits = DownloadLimits(
        min_rate_bps=1, rate_window_s=5.0, deadline_s=60.0, disk_reserve_bytes=0
    )
    got = await download(
        https_server.url("/drip/a?every=1"),
        tmp_path / "s",
        limits=limits,
        ssl_context=tls_files.client_context(),
    )
    assert got.length == 20
    assert trio.current_time() == pytest.approx(20.0)


async def test_plain_http_refused(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.files["a"] = DATA
    error = await _fail(http_server.url("/f/a"), tmp_path, None)
    assert error.reason is Reason.BAD_URL
    assert http_server.hits == []


async def test_plain_http_allowed_for_named_host(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.files["a"] = DATA
    got = await download(http_server.url("/f/a"), tmp_path / "s", limits=HTTP_OK)
    assert got.length == len(DATA)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "https://user:pw@127.0.0.1/x",
        "https:///nohost",
        "https://127.0.0.1/a b",
    ],
)
async def test_bad_urls(url: str, tmp_path: Path) -> None:
    error = await _fail(url, tmp_path, None)
    assert error.reason is Reason.BAD_URL


async def test_redirect_to_plain_http_refused(
    https_server: FaultServer, http_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    http_server.files["a"] = DATA
    to = http_server.url("/f/a")
    error = await _fail(https_server.url(f"/redirect?to={to}"), tmp_path, tls_files)
    assert error.reason is Reason.BAD_URL
    assert http_server.hits == []


async def test_redirect_to_file_refused(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    error = await _fail(https_server.url("/redirect?to=file:///etc/passwd"), tmp_path, tls_files)
    assert error.reason is Reason.BAD_URL


async def test_redirect_within_https_followed(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    https_server.files["a"] = DATA
    got = await download(
        https_server.url("/redirect?to=/f/a"),
        tmp_path / "s",
        limits=LIMITS,
        ssl_context=tls_files.client_context(),
    )
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert got.url.endswith("/f/a")


async def test_redirect_loop(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    limits = DownloadLimits(max_redirects=1, disk_reserve_bytes=0)
    url = https_server.url("/redirect?to=/redirect%3Fto%3D/f/a")
    error = await _fail(url, tmp_path, tls_files, limits=limits)
    assert error.reason is Reason.TOO_MANY_REDIRECTS


async def test_http_error_status(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    error = await _fail(https_server.url("/status/503"), tmp_path, tls_files)
    assert error.reason is Reason.HTTP_STATUS


async def test_untrusted_server_certificate(https_server: FaultServer, tmp_path: Path) -> None:
    """Without the test CA in the context, the handshake fails: tls_error."""
    import ssl

    error = await _fail(
        https_server.url("/f/a"), tmp_path, None, ssl_context=ssl.create_default_context()
    )
    assert error.reason is Reason.TLS_ERROR


async def test_connection_refused(tmp_path: Path) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await _fail(f"https://127.0.0.1:{port}/x", tmp_path, None)
    assert error.reason is Reason.UNREACHABLE


async def test_disk_full_while_staging(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    """ENOSPC at the write seam after 100 kB: disk_full, staging file removed."""
    https_server.files["a"] = DATA
    written = 0

    def write(fd: int, data: bytes) -> int:
        nonlocal written
        if written + len(data) > 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written += len(data)
        return os.write(fd, data)

    error = await _fail(https_server.url("/f/a"), tmp_path, tls_files, write=write)
    assert error.reason is Reason.DISK_FULL
    assert written > 0


async def test_free_space_checked_before_download(
    https_server: FaultServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    https_server.files["a"] = DATA
    error = await _fail(
        https_server.url("/f/a"),
        tmp_path,
        tls_files,
        expected_length=len(DATA),
        free_space=lambda _path: len(DATA) - 1,
    )
    assert error.reason is Reason.DISK_FULL
    assert https_server.hits == []
