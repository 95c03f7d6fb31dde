"""Verification decisions: envelope, artifact, legacy signature, version floor, key rotation.

Theory of operation
-------------------
Everything here is a pure function of its arguments: bytes in, a decision out. There is no
IO and no clock; the caller passes ``now`` (Unix seconds, since expiry times are absolute)
and the persisted :class:`Floor`. Each refusal raises a :class:`~updater.VerificationError`
whose ``reason`` says precisely why, checked in this order so the reason is the most specific
one that applies:

1. the envelope parses and carries the update payload type (``bad_envelope``);
2. some signature is by a key of the keyring (``untrusted_key``) and verifies
   (``bad_signature``), and that key may sign for the statement's component
   (``untrusted_key``);
3. the statement is for the requested component (``component_mismatch``, e.g. an agent
   artifact offered as the daemon), platform (``platform_mismatch``) and version
   (``version_mismatch``);
4. neither the statement nor the keyring has expired (``expired``);
5. the counter is above the floor for that component (``rollback``: a downgrade, or a replay
   of an older signed statement);
6. the signed length fits the global cap (``too_large``), before a byte is downloaded.

The artifact is then checked against the statement (:func:`check_artifact`) from the digest
computed while streaming. A legacy request (the seed's RSA PKCS#1 v1.5 signature over the
file's SHA-256, no envelope) is accepted only from a key the keyring marks legacy and that
may sign for the component, and only if its version is above the floor's version, since a
legacy request carries no counter. Nor does its signature bind a version: before anything is
switched, the new executable must also name the requested version when run with
``--version`` (:func:`check_reported_version` decides from what the run printed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from . import _crypto
from ._envelope import (
    KEYRING_PAYLOAD_TYPE,
    KEYRING_ROLE,
    UPDATE_PAYLOAD_TYPE,
    Envelope,
    Keyring,
    Statement,
    TrustedKey,
    decode_envelope,
    decode_keyring,
    decode_statement,
    format_time,
    pae,
)
from ._errors import HashMismatchError, Reason, SignatureError, VerificationError

__all__ = [
    "Floor",
    "Verified",
    "check_artifact",
    "check_floor",
    "check_reported_version",
    "compare_versions",
    "reports_version",
    "verify_keyring_rotation",
    "verify_legacy_signature",
    "verify_statement",
]


@dataclass(frozen=True, slots=True)
class Floor:
    """The persisted lower bound for one component: the last committed release.

    Attributes:
        counter: Highest committed counter; a statement must exceed it (-1: none yet).
        version: Version string of that release (used for legacy requests), if any.
    """

    counter: int = -1
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A statement whose envelope verified, and the key that signed it.

    Attributes:
        statement: The statement.
        keyid: The key that signed it.
        identity: SHA-256 hex of the signed payload bytes: the statement's one byte form,
            whoever signed it and however the envelope was wrapped (see
            :mod:`updater._replay`).
    """

    statement: Statement
    keyid: str
    identity: str


def _signed_by(
    envelope: Envelope, keyring: Keyring, message: bytes
) -> tuple[list[TrustedKey], bool]:
    """Return the keys whose signature verifies, and whether any known key signed at all."""
    valid: list[TrustedKey] = []
    known = False
    for signature in envelope.signatures:
        key = keyring.keys.get(signature.keyid)
        if key is None:
            continue
        known = True
        if key not in valid and _crypto.verify(key, signature.sig, message):
            valid.append(key)
    return valid, known


def check_floor(counter: int, floor: Floor) -> bool:
    """Whether a release ``counter`` may be installed over ``floor`` (strictly greater)."""
    return counter > floor.counter


_NUM = re.compile(r"^\d+$")


def compare_versions(a: str, b: str) -> int | None:
    """Compare two dotted numeric versions (``1.10.2`` > ``1.9``): -1, 0, 1, or None.

    Only the part before a ``-`` or ``+`` counts; None means one is not numeric, so no
    order can be proven (a legacy request with such a version is refused).
    """
    parts = []
    for text in (a, b):
        core = re.split(r"[-+]", text, maxsplit=1)[0]
        fields = core.split(".")
        if not all(_NUM.match(f) for f in fields):
            return None
        parts.append([int(f) for f in fields])
    x, y = parts
    width = max(len(x), len(y))
    x += [0] * (width - len(x))
    y += [0] * (width - len(y))
    return (x > y) - (x < y)


def verify_statement(
    envelope_data: bytes | str,
    keyring: Keyring,
    *,
    component: str,
    platform: str,
    version: str,
    floor: Floor,
    now: float,
    max_length: int,
) -> Verified:
    """Verify an update envelope against the keyring and local policy.

    Args:
        envelope_data: The envelope as received.
        keyring: The trusted keys.
        component: The component the request claims to update.
        platform: This host's platform.
        version: The version the request claims.
        floor: The persisted floor for ``component``.
        now: Current Unix time in seconds.
        max_length: The global size cap in bytes.

    Returns:
        The verified statement and the signer's key id.

    Raises:
        SignatureError: ``bad_signature`` or ``untrusted_key``.
        VerificationError: ``bad_envelope``, ``component_mismatch``, ``platform_mismatch``,
            ``version_mismatch``, ``expired``, ``rollback`` or ``too_large``.
    """
    envelope = decode_envelope(envelope_data)
    if envelope.payload_type != UPDATE_PAYLOAD_TYPE:
        raise VerificationError(
            Reason.BAD_ENVELOPE, f"payload type {envelope.payload_type!r} is not an update"
        )
    valid, known = _signed_by(envelope, keyring, pae(envelope.payload_type, envelope.payload))
    if not known:
        ids = ", ".join(s.keyid[:16] for s in envelope.signatures)
        raise SignatureError(
            f"no signature by a trusted key (signed by {ids})", reason=Reason.UNTRUSTED_KEY
        )
    if not valid:
        raise SignatureError("signature does not verify with the trusted key")
    statement = decode_statement(envelope.payload)
    allowed = [key for key in valid if key.allows(statement.component)]
    if not allowed:
        raise SignatureError(
            f"key {valid[0].keyid[:16]} may not sign for component {statement.component!r}",
            reason=Reason.UNTRUSTED_KEY,
        )
    if statement.component != component:
        raise VerificationError(
            Reason.COMPONENT_MISMATCH,
            f"artifact is signed for {statement.component!r}, offered as {component!r}",
        )
    if statement.platform != platform:
        raise VerificationError(
            Reason.PLATFORM_MISMATCH,
            f"artifact is for platform {statement.platform!r}, this host is {platform!r}",
        )
    if statement.version != version:
        raise VerificationError(
            Reason.VERSION_MISMATCH,
            f"signed version is {statement.version!r}, request says {version!r}",
        )
    if now >= statement.expires:
        raise VerificationError(
            Reason.EXPIRED, f"statement expired at {format_time(statement.expires)}"
        )
    _check_keyring_expiry(keyring, now)
    if not check_floor(statement.counter, floor):
        raise VerificationError(
            Reason.ROLLBACK,
            f"counter {statement.counter} is not above the floor {floor.counter}"
            f" (installed {floor.version!r}) for {component!r}",
        )
    if statement.length > max_length:
        raise VerificationError(
            Reason.TOO_LARGE, f"signed length {statement.length} exceeds the cap {max_length}"
        )
    return Verified(statement, allowed[0].keyid, hashlib.sha256(envelope.payload).hexdigest())


def _check_keyring_expiry(keyring: Keyring, now: float) -> None:
    if now >= keyring.expires:
        raise VerificationError(
            Reason.EXPIRED,
            f"keyring v{keyring.version} expired at {format_time(keyring.expires)}",
        )


def check_artifact(statement: Statement, sha256_hex: str, length: int) -> None:
    """Check the digest and size computed while streaming against the statement.

    Raises:
        HashMismatchError: ``length_mismatch`` or ``hash_mismatch``.
    """
    if length != statement.length:
        raise HashMismatchError(
            f"received {length} bytes, signed length is {statement.length}",
            reason=Reason.LENGTH_MISMATCH,
        )
    if not hmac.compare_digest(sha256_hex, statement.sha256):
        raise HashMismatchError(f"sha256 {sha256_hex} != signed {statement.sha256}")


def verify_legacy_signature(
    signature_b64: str,
    sha256_digest: bytes,
    keyring: Keyring,
    *,
    component: str,
    version: str,
    floor: Floor,
    now: float,
) -> str:
    """Verify a seed-style request: RSA PKCS#1 v1.5 over the locally computed digest.

    Args:
        signature_b64: The request's base64 signature.
        sha256_digest: The 32-byte digest computed while downloading.
        keyring: Trusted keys; only those marked legacy are tried.
        component: The requested component.
        version: The requested (unsigned) version.
        floor: The persisted floor for ``component``.
        now: Current Unix time (the keyring's expiry still applies).

    Returns:
        The id of the legacy key that verified.

    Raises:
        SignatureError: ``bad_signature`` or ``untrusted_key``.
        VerificationError: ``expired`` or ``rollback``.
    """
    try:
        signature = base64.b64decode(signature_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SignatureError(f"signature is not valid base64: {exc}") from exc
    legacy = [key for key in keyring.keys.values() if key.legacy]
    if not legacy:
        raise SignatureError("no legacy key is trusted", reason=Reason.UNTRUSTED_KEY)
    valid = [key for key in legacy if _crypto.verify_legacy(key, signature, sha256_digest)]
    if not valid:
        raise SignatureError("legacy signature does not verify with any legacy key")
    allowed = [key for key in valid if key.allows(component)]
    if not allowed:
        raise SignatureError(
            f"legacy key {valid[0].keyid[:16]} may not sign for {component!r}",
            reason=Reason.UNTRUSTED_KEY,
        )
    _check_keyring_expiry(keyring, now)
    if floor.version is not None:
        order = compare_versions(version, floor.version)
        if order is None or order <= 0:
            raise VerificationError(
                Reason.ROLLBACK,
                f"legacy version {version!r} is not provably newer than {floor.version!r}",
            )
    return allowed[0].keyid


def verify_keyring_rotation(envelope_data: bytes | str, current: Keyring, now: float) -> Keyring:
    """Accept a new keyring only if a current keyring key and a new one both signed it.

    The chain works like TUF's root rotation: version N+1 must be signed by a key of version
    N that may sign keyrings (component ``keyring``), proving authority, and by a key of
    N+1 with the same role, proving the new key holders have their keys. The version must
    grow and the new document must not be expired. An expired *current* keyring may still
    be rotated away from.

    Args:
        envelope_data: An envelope whose payload type is the keyring type.
        current: The keyring in force.
        now: Current Unix time in seconds.

    Returns:
        The new keyring.

    Raises:
        SignatureError: ``untrusted_key`` / ``bad_signature`` if not signed as required.
        VerificationError: ``bad_keyring``, ``rollback`` (version not higher), ``expired``.
    """
    envelope = decode_envelope(envelope_data)
    if envelope.payload_type != KEYRING_PAYLOAD_TYPE:
        raise VerificationError(
            Reason.BAD_KEYRING, f"payload type {envelope.payload_type!r} is not a keyring"
        )
    message = pae(envelope.payload_type, envelope.payload)
    valid, known = _signed_by(envelope, current, message)
    if not known:
        raise SignatureError("keyring is not signed by a current key", reason=Reason.UNTRUSTED_KEY)
    if not any(key.allows(KEYRING_ROLE) for key in valid):
        if not valid:
            raise SignatureError("keyring signature does not verify with the current key")
        raise SignatureError(
            "keyring is signed by a current key without the keyring role",
            reason=Reason.UNTRUSTED_KEY,
        )
    new = decode_keyring(envelope.payload)
    new_valid, _ = _signed_by(envelope, new, message)
    if not any(key.allows(KEYRING_ROLE) for key in new_valid):
        raise SignatureError(
            "keyring is not signed by any of its own keyring keys", reason=Reason.UNTRUSTED_KEY
        )
    if new.version <= current.version:
        raise VerificationError(
            Reason.ROLLBACK, f"keyring version {new.version} is not above {current.version}"
        )
    if now >= new.expires:
        raise VerificationError(
            Reason.EXPIRED,
            f"keyring v{new.version} is already expired (at {format_time(new.expires)})",
        )
    return new


def reports_version(output: str, version: str) -> bool:
    """Whether ``version`` appears in ``output`` as a whole token.

    A token is delimited by anything but letters, digits, ``_``, ``+``, ``-`` and a ``.``
    followed by one of those, and may carry a leading ``v``: for ``1.2.3``,
    ``node_exporter, version 1.2.3 (branch: HEAD)``, ``Telegraf v1.2.3`` and ``1.2.3.``
    match, while ``1.2.30``, ``11.2.3``, ``1.2.3.4``, ``1.2.3-rc1`` and ``1.2.3+dirty`` do not.
    """
    if not version.strip():
        return False
    pattern = rf"(?<![\w.+-])v?{re.escape(version)}(?![\w+-]|\.\w)"
    return re.search(pattern, output) is not None


def check_reported_version(version: str, status: int, output: bytes, *, truncated: bool) -> None:
    """Decide the pre-swap version check from the staged executable's ``--version`` run.

    Args:
        version: The version being installed (the signed or requested one).
        status: The run's exit status (negative: killed by that signal).
        output: What it printed (stdout and stderr), possibly cut at the capture limit.
        truncated: Whether ``output`` was cut.

    Raises:
        VerificationError: ``version_check_failed`` if it did not exit 0;
            ``binary_version_mismatch`` if it does not name ``version`` (an old binary
            relabelled as a newer version, or a wrong artifact).
    """
    text = output.decode("utf-8", errors="replace")
    excerpt = text.strip()[:200] + ("..." if truncated or len(text.strip()) > 200 else "")
    if status != 0:
        raise VerificationError(
            Reason.VERSION_CHECK_FAILED,
            f"the new executable exited with status {status} on its version check;"
            f" it printed {excerpt!r}",
        )
    if not reports_version(text, version):
        raise VerificationError(
            Reason.BINARY_VERSION_MISMATCH,
            f"the new executable does not report version {version!r}; it printed {excerpt!r}",
        )
