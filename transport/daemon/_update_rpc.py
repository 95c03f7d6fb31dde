"""PushUpdate and GetUpdateResult: update requests over gRPC, through the daemon's spool.

Theory of operation
-------------------
An update pushed over gRPC takes exactly the road of one handed over by ``hostvisor
update``: it becomes a request file in the daemon's spool (``{work_dir}/updates``, see
:class:`updater.Spool`), which :class:`~transport.daemon._updates.DaemonUpdates` runs with
the usual verification, trial and rollback, and answers with a result file. So an
update's outcome survives the daemon's restarts (a self-update restarts it), and the
spool's retention rules apply to both roads alike.

:meth:`UpdateDesk.push` validates everything it can before the request is accepted, and
answers ``INVALID_ARGUMENT`` naming the field otherwise: the fields' types and sizes
(:meth:`updater.UpdateRequest.parse`), the component, the URL's scheme, and the signature,
by the updater's own :meth:`~updater.UpdateManager.verify_request` (envelope, trust,
component, platform, version floor, replay). Only the artifact itself is checked later,
once downloaded: nothing unverified is ever installed, whatever is accepted here.

The wire's ``signature`` field carries either the original's legacy signature (base64,
with ``hash``), or our signed envelope (its JSON text, which starts with ``{``): the
original contract has no field of its own for it. ``update_data`` (an inline package) is
refused: the updater installs only what it downloaded and verified itself.

Each accepted update has an id (a spool request name): chosen by the client in the
``hostvisor-update-id`` request metadata, or made up here, and sent back in the initial
response metadata. The same id with the same request is the same update (a retry after a
timeout installs nothing twice); the same id with another request is ``ALREADY_EXISTS``.
Once the request file is written the update goes ahead, whether or not the client hears
the answer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import updater
from transport import (
    UPDATE_ID_METADATA_KEY,
    CallContext,
    InvalidMessageError,
    StatusCode,
    StatusError,
    daemon_pb2,
    hostvisor_pb2,
)
from updater import Spool, UpdateRequest

from ._updates import DAEMON_COMPONENT, DaemonUpdates

__all__ = ["VERSION_CACHE_S", "UpdateDesk"]

logger = logging.getLogger("hostvisor.updates")

VERSION_CACHE_S = 5.0
"""How long the installed versions ListAgents reports are reused before being re-read."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_TEMP_PREFIX = ".hostvisor-tmp-"  # the spool prunes leftovers with this prefix
_STATES = {
    "succeeded": hostvisor_pb2.UPDATE_STATE_SUCCEEDED,
    "failed": hostvisor_pb2.UPDATE_STATE_FAILED,
    "rolled_back": hostvisor_pb2.UPDATE_STATE_ROLLED_BACK,
}


@dataclass(frozen=True, slots=True)
class _Found:
    """One update in the spool: its request, and its result once answered."""

    name: str
    request: dict[str, Any]
    accepted_at: float
    result: dict[str, Any] | None
    finished_at: float | None


class UpdateDesk:
    """The daemon's update service, as the gRPC services see it.

    Args:
        updates: The daemon's update service (it owns the spool and the manager).
    """

    def __init__(self, updates: DaemonUpdates) -> None:
        self.updates = updates
        self.spool: Spool = updates.spool
        self._versions: dict[str, str] = {}
        self._versions_at = -float("inf")

    # -- ListAgents ---------------------------------------------------------------------

    async def versions(self) -> Mapping[str, str]:
        """The version the updater installed, by agent id (re-read every few seconds)."""
        now = trio.current_time()
        if now - self._versions_at >= VERSION_CACHE_S:
            self._versions = await trio.to_thread.run_sync(self.updates.installed_versions)
            self._versions_at = now
        return self._versions

    # -- PushUpdate ---------------------------------------------------------------------

    async def push(self, message: daemon_pb2.UpdateRequest, ctx: CallContext) -> str:
        """Validate an update and hand it to the daemon's update service.

        Args:
            message: PushUpdate's request.
            ctx: The call (its ``hostvisor-update-id`` metadata, if any, names the update).

        Returns:
            The update's id.

        Raises:
            InvalidMessageError: A field is invalid (the error names it).
            StatusError: ``FAILED_PRECONDITION`` (self-update not configured; a replayed
                request), ``ALREADY_EXISTS`` (the id names another request),
                ``UNAVAILABLE`` (the spool cannot be written).
        """
        chosen = ctx.get(UPDATE_ID_METADATA_KEY)
        if chosen is not None and not _NAME.fullmatch(chosen):
            raise InvalidMessageError(
                f"metadata {UPDATE_ID_METADATA_KEY}",
                f"expected 1 to 128 letters, digits, '-' or '_' (not first); got {chosen!r:.80}",
            )
        request = self._parse(message)
        document = request.to_dict()
        if chosen is not None and await self._accepted_before(chosen, document):
            return chosen  # a retry of an accepted request: the same update
        await self._verify(request)
        name = chosen or f"req-{secrets.token_hex(8)}"
        data = json.dumps(document, indent=1).encode()
        try:
            written = await trio.to_thread.run_sync(_write_request, self.spool, name, data)
        except (OSError, updater.UpdaterError) as exc:
            raise StatusError(
                StatusCode.UNAVAILABLE, f"the update spool cannot take the request: {exc}"
            ) from exc
        if not written:  # the same id pushed twice at once: one of them wrote it
            if not await self._accepted_before(name, document):
                raise StatusError(StatusCode.ABORTED, f"update id {name!r} is busy; try again")
            return name
        self.updates.poke()
        logger.info(
            "update %s accepted from %s: %s %s from %s",
            name,
            ctx.peer or "?",
            request.component,
            request.version,
            request.download_url,
        )
        return name

    async def _accepted_before(self, name: str, document: dict[str, Any]) -> bool:
        """Whether update ``name`` exists with this very request.

        Raises:
            StatusError: ``ALREADY_EXISTS``: it exists with another request.
        """
        existing = await trio.to_thread.run_sync(self._find, name)
        if existing is None:
            return False
        if existing.request != document:
            raise StatusError(
                StatusCode.ALREADY_EXISTS,
                f"update id {name!r} was already used for another request",
            )
        return True

    def _parse(self, message: daemon_pb2.UpdateRequest) -> UpdateRequest:
        if message.update_data:
            raise InvalidMessageError(
                "UpdateRequest.update_data",
                "inline packages are not accepted: serve the package and give download_url"
                " (the updater installs only what it downloaded and verified itself)",
            )
        component = self._component(message.component)
        envelope = message.signature if message.signature.lstrip().startswith("{") else None
        document: dict[str, Any] = {
            "component": component,
            "version": message.version,
            "download_url": message.download_url,
            "hash": message.hash,
            "signature": "" if envelope is not None else message.signature,
        }
        if envelope is not None:
            document["envelope"] = envelope
        try:
            request = UpdateRequest.parse(document)
        except updater.VerificationError as exc:
            raise _field_error(str(exc).removeprefix(f"{exc.reason.value}: ")) from None
        self._check_url(request.download_url)
        return request

    def _component(self, text: str) -> str:
        settings = self.updates.settings
        agents = sorted(target.component for target in settings.targets)
        known = [*agents, *([DAEMON_COMPONENT] if settings.install_root is not None else [])]
        if not text:
            raise InvalidMessageError("UpdateRequest.component", f"empty (one of {known})")
        if text == DAEMON_COMPONENT and settings.install_root is None:
            raise StatusError(
                StatusCode.FAILED_PRECONDITION,
                "UpdateRequest.component: this daemon does not update itself"
                " (update.install_root is not set)",
            )
        if text == "agent" and text not in agents:  # the original's word for "the agent"
            if len(agents) == 1:
                return agents[0]
            raise InvalidMessageError(
                "UpdateRequest.component", f"'agent' is ambiguous here: name one of {agents}"
            )
        if text not in known:
            raise InvalidMessageError(
                "UpdateRequest.component", f"unknown component {text!r} (one of {known})"
            )
        return text

    def _check_url(self, url: str) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError as exc:
            raise InvalidMessageError("UpdateRequest.download_url", f"unparsable: {exc}") from None
        allowed = {h.lower() for h in self.updates.settings.config.limits.allow_http_hosts}
        scheme = parts.scheme.lower()
        if not host:
            raise InvalidMessageError("UpdateRequest.download_url", f"no host in {url!r:.200}")
        if scheme != "https" and not (scheme == "http" and host in allowed):
            raise InvalidMessageError(
                "UpdateRequest.download_url",
                f"only https is accepted (plain http only for update.limits.allow_http_hosts);"
                f" got {url!r:.200}",
            )

    async def _verify(self, request: UpdateRequest) -> None:
        manager = self.updates.manager
        try:
            floor = await trio.to_thread.run_sync(manager.floor, request.component)
            await manager.verify_request(request, floor)
        except updater.VerificationError as exc:
            field = "UpdateRequest.signature"
            if exc.reason is updater.Reason.HASH_MISMATCH:
                field = "UpdateRequest.hash"
            elif exc.reason is updater.Reason.VERSION_MISMATCH:
                field = "UpdateRequest.version"
            elif exc.reason is updater.Reason.COMPONENT_MISMATCH:
                field = "UpdateRequest.component"
            if exc.reason is updater.Reason.REPLAYED:
                raise StatusError(StatusCode.FAILED_PRECONDITION, f"{field}: {exc}") from None
            raise InvalidMessageError(field, str(exc)) from None
        except (OSError, updater.UpdaterError) as exc:
            raise StatusError(
                StatusCode.UNAVAILABLE, f"the update's signature cannot be checked now: {exc}"
            ) from exc

    # -- GetUpdateResult ----------------------------------------------------------------

    async def result(
        self, message: hostvisor_pb2.GetUpdateResultRequest
    ) -> hostvisor_pb2.UpdateResult:
        """The state of an accepted update.

        Args:
            message: The update's id, or (id empty) a component: its latest update.

        Returns:
            The result (``PENDING`` or ``RUNNING`` until it is answered).

        Raises:
            InvalidMessageError: Neither field, or a malformed id.
            StatusError: ``NOT_FOUND``: no such update (answered updates are kept for the
                newest 100, at most 7 days).
        """
        if message.update_id:
            if not _NAME.fullmatch(message.update_id):
                raise InvalidMessageError(
                    "GetUpdateResultRequest.update_id",
                    f"not an update id: {message.update_id!r:.80}",
                )
            found = await trio.to_thread.run_sync(self._find, message.update_id)
            what = f"update {message.update_id!r}"
        elif message.component:
            found = await trio.to_thread.run_sync(self._latest, message.component)
            what = f"update of {message.component!r}"
        else:
            raise InvalidMessageError(
                "GetUpdateResultRequest.update_id", "empty, and no component either"
            )
        if found is None:
            raise StatusError(
                StatusCode.NOT_FOUND,
                f"no {what} is known (answers are kept for the newest 100, at most 7 days)",
            )
        return await self._describe(found)

    async def _describe(self, found: _Found) -> hostvisor_pb2.UpdateResult:
        component = str(found.request.get("component", ""))
        message = hostvisor_pb2.UpdateResult(
            update_id=found.name,
            component=component,
            new_version=str(found.request.get("version", "")),
            accepted_at_ms=_millis(found.accepted_at),
        )
        result = found.result
        if result is None:
            running = self.updates.current == found.name
            message.state = (
                hostvisor_pb2.UPDATE_STATE_RUNNING
                if running
                else hostvisor_pb2.UPDATE_STATE_PENDING
            )
            manager = self.updates.manager
            old = await trio.to_thread.run_sync(manager.current_version, component)
            message.old_version = old or ""
            return message
        if result.get("success") is True:
            state = "succeeded"
        elif result.get("rolled_back") is True:
            state = "rolled_back"
        else:
            state = "failed"
        message.state = _STATES[state]
        message.old_version = _text(result.get("old_version"))
        message.new_version = _text(result.get("new_version")) or message.new_version
        message.restored_version = _text(result.get("restored_version"))
        message.reason = _text(result.get("reason"))
        message.code = _text(result.get("code"))
        message.error = _text(result.get("error"))
        tail = result.get("log_tail")
        if isinstance(tail, list):
            message.log_tail.extend(_text(line) for line in tail)
        message.restart_required = result.get("restart_required") is True
        message.finished_at_ms = _millis(found.finished_at)
        return message

    def _find(self, name: str) -> _Found | None:
        """Update ``name`` in the spool (pending, or answered and perhaps collected)."""
        spool = self.spool
        request = _read_json(spool.request_path(name)) or _read_json(
            spool.done / spool.request_path(name).name
        )
        if request is None:
            return None
        result = _read_json(spool.result_path(name)) or _read_json(
            spool.done / spool.result_path(name).name
        )
        return _Found(
            name,
            request[0],
            request[1],
            result[0] if result is not None else None,
            result[1] if result is not None else None,
        )

    def _latest(self, component: str) -> _Found | None:
        """The newest update of ``component`` in the spool."""
        newest: tuple[float, str] | None = None
        for directory in (self.spool.directory, self.spool.done):
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                name = entry.name.removesuffix(".json")
                if name == entry.name or name.endswith(".result") or not _NAME.fullmatch(name):
                    continue
                found = _read_json(Path(entry.path))
                if found is None or found[0].get("component") != component:
                    continue
                if newest is None or (found[1], name) > newest:
                    newest = (found[1], name)
        return self._find(newest[1]) if newest is not None else None


def _write_request(spool: Spool, name: str, data: bytes) -> bool:
    """Put request ``name`` into the spool atomically, unless that name exists already.

    Returns:
        False when the name is taken (pending or answered).

    Raises:
        SpoolError: The spool is not private.
        OSError: It cannot be written.
    """
    spool.check()
    final = spool.request_path(name)
    taken = (final, spool.done / final.name, spool.result_path(name))
    if any(path.exists() for path in taken):
        return False
    temp = spool.directory / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, final)  # never replaces: two pushes of one id race safely
        except FileExistsError:
            return False
    finally:
        os.unlink(temp)
    directory = os.open(spool.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return True


def _read_json(path: Path) -> tuple[dict[str, Any], float] | None:
    """A JSON object from a spool file and the file's mtime; None if absent or unreadable."""
    try:
        with open(path, "rb") as file:
            modified = os.fstat(file.fileno()).st_mtime
            data = file.read(1 << 20)
        document = json.loads(data)
    except (OSError, ValueError):
        return None
    return (document, modified) if isinstance(document, dict) else None


def _field_error(text: str) -> InvalidMessageError:
    """``UpdateRequest.parse``'s message ("field: problem") as an error naming the field."""
    key, _, problem = text.partition(": ")
    wire = {"envelope": "signature"}.get(key, key)
    if problem and wire in daemon_pb2.UpdateRequest.DESCRIPTOR.fields_by_name:
        return InvalidMessageError(f"UpdateRequest.{wire}", problem)
    return InvalidMessageError("UpdateRequest", text)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _millis(wall: float | None) -> int:
    return round(wall * 1000) if wall is not None and wall > 0 else 0
