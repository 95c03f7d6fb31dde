"""The pre-swap version check: run the staged executable once with ``--version``.

Theory of operation
-------------------
A legacy request's signature covers only the artifact's digest, so an old, genuinely signed
binary could be offered under a newer version number: the version floor compares the
*claimed* version. Before anything is switched, the updater therefore runs the new
executable with its ``version_args`` and requires the version being installed in its output
(the decision is :func:`updater._verify.check_reported_version`; this module is its IO).

The run is confined as far as a plain process can be:

* a private scratch directory (mode 0700, under the download directory) is its working
  directory and ``HOME``/``TMPDIR``, and is removed afterwards; a single-executable artifact
  is copied into it (the copy re-hashed against the verified digest) and run from there;
* no stdin, a minimal environment (``PATH``, ``LC_ALL=C``), its own session;
* at most ``MAX_OUTPUT`` bytes of stdout and stderr are kept (the rest is read and dropped);
* a timeout: the whole process group is killed with SIGKILL when it expires, and also once
  the executable has exited, so a background child cannot hold the pipe open.

:func:`run_version_args` does not decide: it reports what happened and raises only when the
executable could not be run at all or did not finish in time; :func:`check_executable_version`
hands its report to the pure decision.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from ._config import AgentTarget
from ._errors import Reason, VerificationError
from ._fs import copy_verified, discard

__all__ = [
    "MAX_OUTPUT",
    "VersionRun",
    "check_executable_version",
    "binary_in_tree",
    "check_new_version",
    "run_version_args",
    "scratch_dir",
    "stage_executable",
    "version_args_for",
]

MAX_OUTPUT = 64 * 1024
"""Bytes of the version run's output that are kept."""

SCRATCH_PREFIX = ".download-check-"
"""Scratch directories share the staging prefix, so recovery sweeps leftovers."""


@dataclass(frozen=True, slots=True)
class VersionRun:
    """What the version run of an executable did.

    Attributes:
        status: Exit status (negative: killed by that signal).
        output: The first :data:`MAX_OUTPUT` bytes of stdout and stderr, interleaved.
        truncated: More was printed than was kept.
    """

    status: int
    output: bytes
    truncated: bool


def scratch_dir(download_dir: Path) -> Path:
    """Create a private scratch directory for one version run (synchronous)."""
    download_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = download_dir / f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    path.mkdir(mode=0o700)
    return path


def stage_executable(source: Path, scratch: Path, name: str, sha256: str) -> Path:
    """Copy a verified staged file into ``scratch`` as an executable (synchronous).

    Raises:
        HashMismatchError: The staged file no longer has ``sha256``.
        ApplyError: ``disk_full`` or ``io_error``.
    """
    executable = scratch / name
    copy_verified(source, executable, sha256, mode=0o700)
    return executable


async def _kill_group(process: trio.Process) -> None:
    """``deliver_cancel`` for the version run: SIGKILL to its whole process group."""
    _signal_group(process.pid)


def _signal_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_version_args(
    executable: Path, args: Sequence[str], *, cwd: Path, timeout_s: float
) -> VersionRun:
    """Run ``executable`` with ``args`` in ``cwd`` and capture a bounded amount of output.

    Args:
        executable: The staged executable.
        args: Its version arguments (e.g. ``("--version",)``).
        cwd: A private scratch directory (working directory, ``HOME`` and ``TMPDIR``).
        timeout_s: How long it may take, in Trio time.

    Returns:
        The exit status and output.

    Raises:
        VerificationError: ``version_check_failed`` if it cannot be executed (not an
            executable for this host, or a ``noexec`` download directory) or did not exit
            within ``timeout_s``.
    """
    kept = bytearray()
    truncated = False
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
    env |= {"HOME": str(cwd), "TMPDIR": str(cwd)}
    process: trio.Process | None = None

    async def read(stream: trio.abc.ReceiveStream) -> None:
        nonlocal truncated
        async with stream:
            while data := await stream.receive_some(MAX_OUTPUT):
                room = MAX_OUTPUT - len(kept)
                kept.extend(data[:room])
                truncated = truncated or len(data) > room

    failure: OSError | None = None
    with trio.move_on_after(timeout_s) as deadline:
        try:
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        [str(executable), *args],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        cwd=str(cwd),
                        env=env,
                        check=False,
                        start_new_session=True,
                        deliver_cancel=_kill_group,
                    )
                )
                assert process.stdout is not None
                nursery.start_soon(read, process.stdout)
                await process.wait()
                # A child it left behind may still hold the pipe: end the whole group.
                _signal_group(process.pid)
        except* OSError as group:
            failure = group.exceptions[0]  # type: ignore[assignment]
    if failure is not None:
        raise VerificationError(
            Reason.VERSION_CHECK_FAILED,
            f"cannot execute the new executable {executable.name}: {failure}"
            " (not built for this host, or the download directory is noexec?)",
        ) from failure
    if deadline.cancelled_caught or process is None or process.returncode is None:
        raise VerificationError(
            Reason.VERSION_CHECK_FAILED,
            f"the new executable did not finish its version check within {timeout_s} s",
        )
    return VersionRun(process.returncode, bytes(kept), truncated)


async def check_executable_version(
    executable: Path,
    args: Sequence[str],
    version: str,
    *,
    scratch: Path,
    timeout_s: float,
) -> None:
    """Run the version check and decide it (see :func:`updater._verify.check_reported_version`).

    Raises:
        VerificationError: ``version_check_failed`` or ``binary_version_mismatch``.
    """
    from ._verify import check_reported_version

    run = await run_version_args(executable, args, cwd=scratch, timeout_s=timeout_s)
    check_reported_version(version, run.status, run.output, truncated=run.truncated)


def version_args_for(target: AgentTarget, *, legacy: bool) -> tuple[str, ...] | None:
    """The version check's arguments for an artifact, or None if it is not checked.

    Legacy artifacts are always checked; signed ones if ``version_check_always``.

    Raises:
        VerificationError: ``version_check_failed``: a legacy artifact for a target whose
            check is disabled (nothing would bind its version).
    """
    if not (legacy or target.version_check_always):
        return None
    if target.version_args is None and legacy:
        raise VerificationError(
            Reason.VERSION_CHECK_FAILED,
            f"legacy artifacts need the pre-swap version check, which is disabled"
            f" for {target.component!r} (version_args is None)",
        )
    return target.version_args


def binary_in_tree(target: AgentTarget) -> Path:
    """Where ``target``'s executable lies inside one of its version directories.

    Raises:
        VerificationError: ``version_check_failed``: ``binary_path`` is not under
            ``install_root/current``.
    """
    assert target.install_root is not None
    try:
        return target.binary_path.relative_to(target.install_root / "current")
    except ValueError:
        raise VerificationError(
            Reason.VERSION_CHECK_FAILED,
            f"{target.binary_path} is not under {target.install_root}/current:"
            " the new version's executable cannot be found",
        ) from None


async def check_new_version(
    target: AgentTarget,
    version: str,
    *,
    legacy: bool,
    scratch_parent: Path,
    timeout_s: float,
    staged: tuple[Path, str] | None = None,
    tree: Path | None = None,
) -> None:
    """Run the pre-swap version check of a verified artifact, if it needs one.

    A single executable (``staged``: its file and verified SHA-256) is run from a private
    copy; the executable of an unpacked archive (``tree``) is run in place. Either way a
    fresh scratch directory under ``scratch_parent`` is the working directory, removed
    afterwards.

    Raises:
        VerificationError: ``version_check_failed`` or ``binary_version_mismatch``.
    """
    args = version_args_for(target, legacy=legacy)
    if args is None:
        return
    executable = None if tree is None else tree / binary_in_tree(target)
    scratch = await trio.to_thread.run_sync(scratch_dir, scratch_parent)
    try:
        if executable is None:
            assert staged is not None
            executable = await trio.to_thread.run_sync(
                stage_executable, staged[0], scratch, target.binary_path.name, staged[1]
            )
        await check_executable_version(
            executable, args, version, scratch=scratch, timeout_s=timeout_s
        )
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(discard, scratch)
