"""Versioned install directories: ``<root>/versions/<...>`` and a ``current`` link.

Used by the daemon's self-update and by agents whose artifacts are archives (an
:class:`~updater.AgentTarget` with ``install_root``). Synchronous helpers; the async shells
run them in a worker thread.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from ._errors import ApplyError, Reason
from ._fs import discard, read_link, tree_digest, unpack_archive
from ._plan import Journal, Release
from ._store import StateStore

__all__ = ["adopt_tree", "stage_tree", "sweep_versions", "version_of_directory"]


def adopt_tree(root: Path, version: str, counter: int) -> Release:
    """The release ``<root>/current`` points at now.

    Raises:
        ApplyError: ``current`` is not a symlink to a directory.
    """
    dest = read_link(root / "current")
    if dest is None or not Path(dest).is_dir():
        raise ApplyError(Reason.IO_ERROR, f"{root / 'current'} is not a link to a directory")
    return Release(version, counter, tree_digest(Path(dest)), dest)


_STAGED_NAME = re.compile(r"^(?P<version>.+)-(?P<counter>-?\d+)-[0-9a-f]{6}$")


def version_of_directory(path: str) -> str:
    """The version a version directory holds, from its name.

    ``stage_tree`` names directories ``<version>-<counter>-<id>``; anything else (a version
    installed by hand, e.g. ``versions/1.4.2``) is taken as the version itself.
    """
    name = Path(path).name
    match = _STAGED_NAME.match(name)
    return match.group("version") if match else name


def stage_tree(root: Path, archive: Path, version: str, counter: int) -> Release:
    """Unpack a verified archive into a new directory under ``<root>/versions``.

    The archive file is removed in any case.

    Raises:
        VerificationError: ``bad_archive``.
        ApplyError: ``disk_full`` or ``io_error``.
    """
    directory = root / "versions" / f"{version}-{counter}-{secrets.token_hex(3)}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        digest = unpack_archive(archive, directory)
    finally:
        discard(archive)
    return Release(version, counter, digest, str(directory))


def sweep_versions(root: Path, component: str, store: StateStore, journal: Journal | None) -> None:
    """Remove directories under ``<root>/versions`` that nothing refers to.

    Kept: what ``current`` and ``previous`` point at, the installed release, recorded
    backups, and everything an open journal of ``component`` names. Anything else there is a
    version unpacked by an update that crashed before its journal was written.
    """
    versions = root / "versions"
    if not versions.is_dir():
        return
    keep = {read_link(root / "current"), read_link(root / "previous")}
    installed = store.installed(component)
    keep |= {installed.path} if installed else set()
    keep |= {r.path for r in store.backups(component)}
    if journal is not None and journal.component == component:
        keep |= {journal.old.path, journal.new.path} | {r.path for r in journal.fallbacks}
    for entry in versions.iterdir():
        if str(entry) not in keep:
            discard(entry)
