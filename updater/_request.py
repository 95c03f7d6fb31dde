"""The seed's UpdateRequest and UpdateResult (004 section 3.4.1), plus what they lacked.

Added to the request: ``envelope``, the signed statement (see :mod:`updater._envelope`),
and ``mirrors``, further URLs tried in order when one fails (wrong hash, truncated, slow).
Without an envelope the request is a *legacy* request: ``signature`` is the seed's RSA
PKCS#1 v1.5 signature over the file's SHA-256 and is accepted only from a legacy key.

Added to the result: ``reason`` (a :class:`~updater.Reason`), ``code`` (D4001 to D4004),
``log_tail`` (the failed version's last log lines, for an agent that failed its trial),
``restored_version`` (differs from ``old_version`` when a corrupt backup forced a fallback)
and ``restart_required`` (a daemon self-update switched and now needs its restart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._errors import Reason, UpdaterError, VerificationError

__all__ = ["FIELD_LIMITS", "MAX_MIRRORS", "UpdateRequest", "UpdateResult", "check_request"]

_FIELDS = frozenset(
    {"component", "version", "download_url", "hash", "signature", "envelope", "mirrors"}
)
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")

FIELD_LIMITS = {
    "component": 64,  # as a signed statement's component
    "version": 64,  # as a signed statement's version
    "download_url": 4096,  # as any URL the downloader accepts
    "hash": 64,
    "signature": 2048,  # base64 of an RSA signature up to 8192 bits is 1368
    "envelope": 64 * 1024,  # 16 signatures with RSA-4096 keys stay under 16 KiB
    "mirrors": 4096,  # each
}
"""Most characters a request field may have (each mirror URL counts alone)."""
MAX_MIRRORS = 16
"""Most mirrors a request may list."""


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """A request to update one component.

    Attributes:
        component: ``daemon`` or an agent's component name.
        version: The version to install (must equal the signed version).
        download_url: Where to fetch the artifact.
        hash: SHA-256 hex of the artifact (required for legacy requests; else optional,
            and if given it must equal the signed hash).
        signature: The seed's base64 signature (legacy requests only).
        envelope: The signed statement (JSON text); recommended.
        mirrors: Further URLs to try in order.
    """

    component: str
    version: str
    download_url: str
    hash: str = ""
    signature: str = ""
    envelope: str | None = None
    mirrors: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> UpdateRequest:
        """Build from the seed's JSON field names (plus ``envelope`` and ``mirrors``)."""
        return cls(
            component=str(doc["component"]),
            version=str(doc["version"]),
            download_url=str(doc["download_url"]),
            hash=str(doc.get("hash", "")),
            signature=str(doc.get("signature", "")),
            envelope=doc.get("envelope"),
            mirrors=tuple(doc.get("mirrors", ())),
        )

    @classmethod
    def parse(cls, doc: object) -> UpdateRequest:
        """Build from an untrusted JSON document, checking every field's type strictly.

        ``component``, ``version`` and ``download_url`` are required non-empty strings;
        ``hash`` is empty or 64 hex digits; ``signature`` and ``envelope`` (the envelope's
        JSON text) are strings; ``mirrors`` a list of strings. No other field is allowed,
        and none may be longer than :data:`FIELD_LIMITS` says (see :func:`check_request`).
        Whether the signature or envelope *verifies* is decided later, by the manager.

        Raises:
            VerificationError: ``bad_request``, naming the first offending field.
        """
        if not isinstance(doc, dict):
            raise VerificationError(Reason.BAD_REQUEST, f"expected a JSON object; got {doc!r:.80}")
        unknown = sorted(set(doc) - _FIELDS)
        if unknown:
            raise VerificationError(Reason.BAD_REQUEST, f"unknown field {unknown[0]!r}")
        for key in ("component", "version", "download_url"):
            value = doc.get(key)
            if not isinstance(value, str) or not value.strip():
                raise VerificationError(
                    Reason.BAD_REQUEST, f"{key}: expected a non-empty string; got {value!r:.80}"
                )
        for key in ("hash", "signature", "envelope"):
            value = doc.get(key)
            if value is not None and not isinstance(value, str):
                raise VerificationError(
                    Reason.BAD_REQUEST, f"{key}: expected a string; got {value!r:.80}"
                )
        digest = doc.get("hash") or ""
        if digest and not _SHA256_HEX.match(digest):
            raise VerificationError(
                Reason.BAD_REQUEST, f"hash: expected 64 hex digits (sha256); got {digest!r:.80}"
            )
        mirrors = doc.get("mirrors") or []
        if not isinstance(mirrors, list) or not all(isinstance(m, str) and m for m in mirrors):
            raise VerificationError(
                Reason.BAD_REQUEST, f"mirrors: expected a list of URLs; got {mirrors!r:.80}"
            )
        request = cls(
            component=doc["component"],
            version=doc["version"],
            download_url=doc["download_url"],
            hash=digest,
            signature=doc.get("signature") or "",
            envelope=doc.get("envelope"),
            mirrors=tuple(mirrors),
        )
        check_request(request)
        return request

    def to_dict(self) -> dict[str, Any]:
        """The JSON form :meth:`parse` reads (empty optional fields omitted)."""
        doc: dict[str, Any] = {
            "component": self.component,
            "version": self.version,
            "download_url": self.download_url,
        }
        if self.hash:
            doc["hash"] = self.hash
        if self.signature:
            doc["signature"] = self.signature
        if self.envelope is not None:
            doc["envelope"] = self.envelope
        if self.mirrors:
            doc["mirrors"] = list(self.mirrors)
        return doc


def check_request(request: UpdateRequest) -> None:
    """Refuse a request with an oversized field (before it is logged or acted on).

    Raises:
        VerificationError: ``bad_request``, naming the field, its length and the limit.
    """
    fields = {
        "component": request.component,
        "version": request.version,
        "download_url": request.download_url,
        "hash": request.hash,
        "signature": request.signature,
        "envelope": request.envelope or "",
    }
    fields |= {f"mirrors[{i}]": url for i, url in enumerate(request.mirrors)}
    for name, value in fields.items():
        limit = FIELD_LIMITS[name.split("[")[0]]
        if len(value) > limit:
            raise VerificationError(
                Reason.BAD_REQUEST,
                f"{name}: at most {limit} characters; got {len(value)} ({value[:40]!r}...)",
            )
    if len(request.mirrors) > MAX_MIRRORS:
        raise VerificationError(
            Reason.BAD_REQUEST,
            f"mirrors: at most {MAX_MIRRORS} URLs; got {len(request.mirrors)}",
        )


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What happened to one request.

    Attributes:
        success: The new version is installed (and, for a daemon, awaits its restart).
        old_version: The version before the request.
        new_version: The requested version.
        error: Human-readable error, or None.
        rolled_back: The new version was installed, failed, and was replaced again.
        reason: Machine-readable cause of a failure or rollback.
        code: The seed's error code (D4001 to D4004) of a failure.
        log_tail: The failed version's last log lines.
        restored_version: What a rollback restored (may be older than ``old_version``).
        restart_required: The daemon switched versions and must restart to run the trial.
    """

    success: bool
    old_version: str | None
    new_version: str
    error: str | None = None
    rolled_back: bool = False
    reason: Reason | None = None
    code: str | None = None
    log_tail: tuple[str, ...] = ()
    restored_version: str | None = None
    restart_required: bool = False

    @classmethod
    def failed(
        cls,
        request: UpdateRequest,
        old_version: str | None,
        error: UpdaterError,
        **extra: Any,
    ) -> UpdateResult:
        """A failure result built from the error that caused it (the requested version cut
        to its length limit: an oversized request is answered, not echoed)."""
        return cls(
            success=False,
            old_version=old_version,
            new_version=request.version[: FIELD_LIMITS["version"]],
            error=str(error),
            reason=error.reason,
            code=error.code,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed's JSON form (``error`` omitted when empty) plus the added fields."""
        doc: dict[str, Any] = {
            "success": self.success,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "rolled_back": self.rolled_back,
        }
        if self.error:
            doc["error"] = self.error
        if self.reason is not None:
            doc["reason"] = self.reason.value
            doc["code"] = self.code
        if self.log_tail:
            doc["log_tail"] = list(self.log_tail)
        if self.restored_version is not None:
            doc["restored_version"] = self.restored_version
        if self.restart_required:
            doc["restart_required"] = True
        return doc
