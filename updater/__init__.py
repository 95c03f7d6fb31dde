"""Verified, atomic, reversible updates of agents and of the daemon itself.

A sibling of ``supervisor`` that imports nothing from it: the supervision core is reached
through the :class:`AgentControl` protocol. The pieces, from the outside in:

* :class:`UpdateManager` runs an :class:`UpdateRequest` end to end and returns an
  :class:`UpdateResult` with a machine-readable :class:`Reason` on failure.
* Authenticity: a signed :class:`Statement` in a versioned envelope, checked against a
  :class:`Keyring` (Ed25519 recommended; ECDSA P-256, RSA-PSS; the seed's legacy RSA
  PKCS#1 v1.5 only for keys marked legacy) and a persisted version floor.
  Release engineers sign with ``python -m updater.sign``.
* Downloads: https only (plain http only for named hosts), bounded by
  :class:`DownloadLimits` (connect timeout, deadline, minimum rate, size cap, free disk).
* Install: a journalled plan (backup, atomic switch, trial, commit or rollback) that a crash
  at any step cannot break; :meth:`UpdateManager.recover` finishes it at the next start and
  says what is in place for each agent (:class:`AgentInPlace`, :class:`FileIdentity`), and
  which agent's processes must be restarted because recovery undid their version.
* Replays: a validly signed request whose install was already tried is refused
  (``replayed``).
* Daemon self-update: :class:`DaemonInstall` (versioned directories and a ``current``
  link, restart, trial confirmation); see ``updater/contrib/hostvisor.service``.
* Local submission: a :class:`Spool`, a private directory where clients drop requests and
  a daemon writes their results.
* Configuration: :class:`UpdateConfig` (the seed's ``update`` block and the limits), and
  :class:`UpdateSettings` for a daemon's whole block (its updatable agents, self-update,
  restart mode); both report every problem with its key (:class:`UpdateConfigError`).
"""

from ._config import (
    AgentTarget as AgentTarget,
    DownloadLimits as DownloadLimits,
    UpdateConfig as UpdateConfig,
)
from ._control import AgentControl as AgentControl, AgentLogMarks as AgentLogMarks
from ._envelope import Keyring as Keyring, Statement as Statement, TrustedKey as TrustedKey
from ._errors import (
    ApplyError as ApplyError,
    BackupError as BackupError,
    DownloadError as DownloadError,
    HashMismatchError as HashMismatchError,
    Reason as Reason,
    RollbackError as RollbackError,
    SignatureError as SignatureError,
    SpoolError as SpoolError,
    UpdateConfigError as UpdateConfigError,
    UpdateInProgressError as UpdateInProgressError,
    UpdaterError as UpdaterError,
    VerificationError as VerificationError,
)
from ._manager import UpdateManager as UpdateManager
from ._plan import Outcome as Outcome
from ._recovery import (
    AgentInPlace as AgentInPlace,
    FileIdentity as FileIdentity,
    RecoveryReport as RecoveryReport,
)
from ._request import UpdateRequest as UpdateRequest, UpdateResult as UpdateResult
from ._selfupdate import (
    RESTART_EXIT_CODE as RESTART_EXIT_CODE,
    DaemonInstall as DaemonInstall,
    force_rollback as force_rollback,
    needs_restart as needs_restart,
    reexec as reexec,
)
from ._settings import UpdateSettings as UpdateSettings
from ._spool import Spool as Spool
from ._verify import Floor as Floor

__all__ = [
    # running updates
    "UpdateManager",
    "UpdateRequest",
    "UpdateResult",
    "RecoveryReport",
    "AgentInPlace",
    "FileIdentity",
    "Outcome",
    "AgentControl",
    "AgentLogMarks",
    # daemon self-update
    "DaemonInstall",
    "RESTART_EXIT_CODE",
    "needs_restart",
    "force_rollback",
    "reexec",
    # local submission
    "Spool",
    # configuration
    "UpdateSettings",
    "UpdateConfig",
    "AgentTarget",
    "DownloadLimits",
    # trust
    "Keyring",
    "TrustedKey",
    "Statement",
    "Floor",
    # errors
    "Reason",
    "UpdaterError",
    "DownloadError",
    "VerificationError",
    "HashMismatchError",
    "SignatureError",
    "ApplyError",
    "BackupError",
    "UpdateInProgressError",
    "RollbackError",
    "SpoolError",
    "UpdateConfigError",
]
