"""One agent's update: journal, stop, switch, trial, then commit or roll back (Trio shell).

Theory of operation
-------------------
:func:`update_agent` is step 5 of :meth:`UpdateManager.update` for an agent. After the
artifact is fetched and verified it builds the journal, backs the current version up, holds
the agent (no automatic restarts), stops it, remembers the request as tried (a replay is
then refused, see :mod:`updater._replay`), switches, and runs the trial
(:func:`agent_trial`). Then it commits, or
restores the old version, releases the hold and starts the old version again.

A cancellation (a request's timeout, the daemon shutting down) can arrive at any await of
that. It is handled in one place, under a shielded scope bounded by ``cancel_cleanup_s``:

* if the agent was not yet asked to stop, nothing of the new version ever ran: recovery
  aborts the transaction (or just sweeps the staged files) and the agent is left alone;
* otherwise the agent is stopped (again). If that fails or does not finish in time, the files
  and the journal are left exactly as they are: the next start's recovery finishes the job,
  and its report says ``restart_required`` for the agent. If it stopped, recovery restores the
  old version now (journal, files), the hold is released and the old version is started.

Either way the cancellation then propagates exactly as it arrived: a bare
:class:`trio.Cancelled` stays bare (it is never wrapped into an exception group here).
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ._control import AgentControl, AgentLogMarks
from ._errors import ApplyError, Reason, RollbackError, UpdaterError
from ._fs import discard, read_link, sha256_file
from ._layout import stage_tree
from ._plan import (
    Journal,
    Kind,
    Phase,
    Release,
    abort_steps,
    commit_steps,
    prepare_steps,
    rollback_steps,
    switch_steps,
)
from ._request import UpdateRequest, UpdateResult
from ._versioncheck import check_new_version

if TYPE_CHECKING:
    from ._config import AgentTarget
    from ._manager import Fetched, UpdateManager

__all__ = ["agent_trial", "is_cancellation", "update_agent"]


@dataclass
class _Progress:
    """How far an update got, for the cancellation cleanup."""

    stopping: bool = False  # the agent was asked to stop: something of ours may run


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a Trio cancellation, bare or inside an exception group."""
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None


async def update_agent(
    manager: UpdateManager, request: UpdateRequest, target: AgentTarget
) -> UpdateResult:
    """Run ``request`` for agent ``target`` (see the module docstring).

    Returns:
        The result (success, or a rollback with the failed version's log tail).

    Raises:
        UpdaterError: A refusal before anything was switched (the manager reports it).
    """
    control = manager.control
    if control is None:
        raise ApplyError(Reason.UNKNOWN_COMPONENT, "no AgentControl to update agents with")
    progress = _Progress()
    with contextlib.ExitStack() as held:
        try:
            return await _update(manager, request, target, control, held, progress)
        except BaseException as exc:
            if not is_cancellation(exc):
                raise
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + manager.cancel_cleanup_s
                await _undo_after_cancel(manager, target, control, held, progress)
            raise


async def _undo_after_cancel(
    manager: UpdateManager,
    target: AgentTarget,
    control: AgentControl,
    held: contextlib.ExitStack,
    progress: _Progress,
) -> None:
    """Put the old version back in place and running, or leave the journal for the next
    start (called shielded, with a deadline; see the module docstring)."""
    if progress.stopping:
        try:
            await control.stop_agent(target.agent_id)
        except Exception:
            return  # it may still run the new version: the next start's recovery decides
    try:
        await trio.to_thread.run_sync(manager.recover_held)
    except UpdaterError:
        return  # e.g. no intact backup: the journal stays, the next start reports it
    held.close()
    if progress.stopping:
        await _start(control, target.agent_id)


async def _update(
    manager: UpdateManager,
    request: UpdateRequest,
    target: AgentTarget,
    control: AgentControl,
    held: contextlib.ExitStack,
    progress: _Progress,
) -> UpdateResult:
    store = manager.store
    installed = store.installed(target.component)
    fetched = await manager.fetch(request, store.floor(target.component))
    txn = secrets.token_hex(6)
    old_version = installed.version if installed else "unknown"
    fallbacks = tuple(reversed(store.backups(target.component)))
    if target.install_root is None:
        staged = (fetched.staged.path, fetched.staged.sha256)
        await _check_version(manager, target, fetched, fetched.staged.path, staged=staged)
        current_sha = await trio.to_thread.run_sync(sha256_file, target.binary_path)
        backup = manager.config.backup_dir / target.component / f"{old_version}-{txn}.bin"
        old_release = Release(
            old_version, installed.counter if installed else -1, current_sha, str(backup)
        )
        new_release = Release(
            fetched.version, fetched.counter, fetched.staged.sha256, str(fetched.staged.path)
        )
        kind, switched_path = Kind.FILE, target.binary_path
    else:
        root = target.install_root
        current = read_link(root / "current")
        if installed is None or installed.path != current:
            await trio.to_thread.run_sync(discard, fetched.staged.path)
            raise ApplyError(Reason.IO_ERROR, f"{root}/current is not the adopted install")
        new_release = await trio.to_thread.run_sync(
            stage_tree, root, fetched.staged.path, fetched.version, fetched.counter
        )
        tree = Path(new_release.path)
        await _check_version(manager, target, fetched, tree, tree=tree)
        old_release, kind, switched_path = installed, Kind.LINK, root / "current"
    journal = Journal(
        txn=txn,
        component=target.component,
        kind=kind,
        target=str(switched_path),
        old=old_release,
        new=new_release,
        fallbacks=fallbacks,
    )
    try:
        await manager.run_steps(prepare_steps(journal))
    except UpdaterError:
        await manager.run_steps(abort_steps(journal))
        raise
    # Held from the stop to the end of the trial: the supervisor must not restart the
    # agent behind our back. Released (idempotently) before any start of the old one.
    try:
        held.enter_context(control.hold(target.agent_id))
    except Exception as exc:  # e.g. the agent is no longer supervised
        await manager.run_steps(abort_steps(journal))
        raise ApplyError(Reason.STOP_FAILED, f"cannot hold {target.agent_id}: {exc}") from exc
    progress.stopping = True
    try:
        await control.stop_agent(target.agent_id)
    except Exception as exc:
        await manager.run_steps(abort_steps(journal))
        raise ApplyError(Reason.STOP_FAILED, f"cannot stop {target.agent_id}: {exc}") from exc
    old = installed.version if installed else None
    return await _switch_and_trial(manager, request, target, control, journal, fetched, old, held)


async def _switch_and_trial(
    manager: UpdateManager,
    request: UpdateRequest,
    target: AgentTarget,
    control: AgentControl,
    journal: Journal,
    fetched: Fetched,
    old: str | None,
    held: contextlib.ExitStack,
) -> UpdateResult:
    config, agent_id = manager.config, target.agent_id
    try:
        # From here the new version may be activated: a replay would be refused.
        await manager.remember_tried(target.component, fetched)
        await manager.run_steps(switch_steps(journal))
    except UpdaterError as exc:
        await manager.run_steps(abort_steps(journal))
        held.close()
        problem = await _start(control, agent_id)
        if problem:
            exc.add_note(problem)
        raise
    switched = journal.at(Phase.SWITCHED)
    mark = control.log_mark(agent_id) if isinstance(control, AgentLogMarks) else None
    failure = await agent_trial(control, agent_id, config.trial_s)
    if failure is None:
        await manager.run_steps(commit_steps(switched, keep=config.max_backups))
        return UpdateResult(True, old, journal.new.version)
    reason, detail = failure
    if mark is not None and isinstance(control, AgentLogMarks):
        tail = tuple(control.tail_since(agent_id, mark, config.log_tail_lines))
    else:
        tail = tuple(control.tail(agent_id, config.log_tail_lines))
    try:
        await control.stop_agent(agent_id)
    except Exception as exc:  # replacing a running binary is safe: roll back anyway
        detail += f"; stopping it failed: {exc}"
    manager.executor.restored = None
    try:
        await manager.run_steps(rollback_steps(switched, reason, keep=config.max_backups))
    except RollbackError as exc:
        exc.journal = switched
        return UpdateResult.failed(request, old, exc, log_tail=tail)
    restored = manager.executor.restored or journal.old
    if restored.path != journal.old.path:
        detail += f"; backup of {journal.old.version} was corrupt, restored {restored.version}"
    held.close()
    problem = await _start(control, agent_id)
    if problem:
        detail += f"; {problem}"
    error = ApplyError(reason, f"{journal.new.version} {detail}; rolled back")
    return UpdateResult.failed(
        request, old, error, rolled_back=True, log_tail=tail, restored_version=restored.version
    )


async def _check_version(
    manager: UpdateManager, target: AgentTarget, fetched: Fetched, staging: Path, **where: Any
) -> None:
    """The pre-swap version check (:func:`updater._versioncheck.check_new_version`);
    on failure the staged file or tree ``staging`` is removed.

    Raises:
        VerificationError: ``version_check_failed`` or ``binary_version_mismatch``.
    """
    try:
        await check_new_version(
            target,
            fetched.version,
            legacy=fetched.legacy,
            scratch_parent=manager.config.download_dir,
            timeout_s=manager.config.version_check_timeout_s,
            **where,
        )
    except UpdaterError:
        await trio.to_thread.run_sync(discard, staging)
        raise


async def _start(control: AgentControl, agent_id: str) -> str | None:
    """Start the (restored) agent; a failure is reported, not raised: the files are
    already right, and the supervisor's restart policy takes it from there."""
    try:
        await control.start_agent(agent_id)
    except Exception as exc:
        return f"restarting {agent_id} failed: {exc}"
    return None


async def agent_trial(
    control: AgentControl, agent_id: str, trial_s: float
) -> tuple[Reason, str] | None:
    """Start the agent and watch it for ``trial_s`` seconds of Trio time.

    It passes if it becomes ready, does not exit before the window ends and its health
    checks pass when it ends; an exit fails it at once, not being ready or healthy when the
    window ends fails it then. ``trial_s == 0`` skips the watch.

    Returns:
        None if it passed, else the reason (``start_failed``, ``not_ready``,
        ``unhealthy``) and a detail.
    """
    try:
        await control.start_agent(agent_id)
    except Exception as exc:
        return Reason.START_FAILED, f"could not be started: {exc}"
    if trial_s == 0:
        return None
    ready = False
    exit_status: list[int | None] = []
    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + trial_s

        async def watch_exit() -> None:
            exit_status.append(await control.wait_exit(agent_id))
            nursery.cancel_scope.cancel()

        async def watch_ready() -> None:
            nonlocal ready
            await control.wait_ready(agent_id)
            ready = True

        nursery.start_soon(watch_exit)
        nursery.start_soon(watch_ready)
    if exit_status:
        return Reason.START_FAILED, f"exited with status {exit_status[0]} during its trial"
    if not ready:
        return Reason.NOT_READY, f"was not ready within the {trial_s} s trial"
    problem = control.health_problem(agent_id)
    if problem is not None:
        return Reason.UNHEALTHY, f"was unhealthy at the end of its {trial_s} s trial: {problem}"
    return None
