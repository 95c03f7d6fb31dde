"""Signed statements and keyrings: the wire format (pure: no IO, no clock, no crypto).

Theory of operation
-------------------
An update is authorised by a *statement* that binds everything the seed left
unauthenticated: ``component``, ``platform``, ``version``, a monotonic ``counter``, the
artifact's ``sha256`` and ``length``, and an ``expires`` time. The statement travels inside an
*envelope* (version 1)::

    {"payload_type": "application/vnd.hostvisor.update+json; v=1",
     "payload": "<base64 of the payload bytes>",
     "signatures": [{"keyid": "<hex>", "sig": "<base64>"}]}

The payload bytes are canonical JSON: UTF-8, keys sorted, no insignificant whitespace, no
floats, e.g.::

    {"_type":"hostvisor.update","component":"agent","counter":10402,
     "expires":"2031-01-01T00:00:00Z","length":12345678,"platform":"linux-x86_64",
     "sha256":"<64 hex>","spec":1,"version":"1.4.2"}

Each signature is computed over the DSSE pre-authentication encoding
``b"DSSEv1 " + len(type) + b" " + type + b" " + len(payload) + b" " + payload`` (lengths in
ASCII decimal), so the verifier checks exactly the bytes that were signed and never has to
re-serialise anything; the type is bound too, so a keyring can never pass as an update. The
verifier additionally insists that the payload *is* canonical (re-encoding gives the same
bytes), so one statement has exactly one byte form.

A *keyring* lists the trusted keys: ``{"keyid", "alg", "public_key" (base64 DER
SubjectPublicKeyInfo), "components" (what the key may sign for; ``"keyring"`` lets it sign
keyring rotations), "legacy"}``. The key id is the SHA-256 hex of the DER, checked on load.
Algorithms are bound to the key record, never taken from a request: ``ed25519`` (recommended),
``ecdsa-p256-sha256``, ``rsa-pss-sha256`` and, only for records marked ``"legacy": true``,
``rsa-pkcs1v15-sha256`` (the seed's scheme: a signature over the file's SHA-256). A keyring
document has a ``version`` and an ``expires`` and is itself distributed in an envelope whose
payload type is ``application/vnd.hostvisor.keyring+json; v=1``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import Reason, SignatureError, VerificationError

__all__ = [
    "ALGORITHMS",
    "KEYRING_PAYLOAD_TYPE",
    "LEGACY_ALGORITHM",
    "SPEC_VERSION",
    "UPDATE_PAYLOAD_TYPE",
    "Envelope",
    "EnvelopeSignature",
    "Keyring",
    "Statement",
    "TrustedKey",
    "canonical_json",
    "decode_envelope",
    "decode_keyring",
    "decode_statement",
    "encode_envelope",
    "encode_keyring",
    "encode_statement",
    "format_time",
    "key_id",
    "pae",
    "parse_time",
]

SPEC_VERSION = 1
UPDATE_PAYLOAD_TYPE = "application/vnd.hostvisor.update+json; v=1"
KEYRING_PAYLOAD_TYPE = "application/vnd.hostvisor.keyring+json; v=1"
LEGACY_ALGORITHM = "rsa-pkcs1v15-sha256"
ALGORITHMS = frozenset({"ed25519", "ecdsa-p256-sha256", "rsa-pss-sha256", LEGACY_ALGORITHM})
KEYRING_ROLE = "keyring"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_MAX_COUNTER = 2**63 - 1


def _bad(message: str, reason: Reason = Reason.BAD_ENVELOPE) -> VerificationError:
    if reason is Reason.BAD_SIGNATURE:
        return SignatureError(message)
    return VerificationError(reason, message)


def canonical_json(value: object) -> bytes:
    """Encode ``value`` as canonical JSON bytes.

    Args:
        value: Nested dicts (string keys), lists, strings, ints, bools and None.

    Returns:
        UTF-8 bytes with sorted keys and no insignificant whitespace.

    Raises:
        TypeError: If ``value`` holds a float or another type without one canonical form.
    """
    _check_canonical_types(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _check_canonical_types(value: object) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_canonical_types(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON needs string keys, got {key!r}")
            _check_canonical_types(item)
        return
    raise TypeError(f"no canonical JSON form for {type(value).__name__}: {value!r}")


def _loads_strict(data: bytes, what: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, item in pairs:
            if key in result:
                raise ValueError(f"duplicate key {key!r}")
            result[key] = item
        return result

    def no_floats(text: str) -> Any:
        raise ValueError(f"float {text} is not allowed")

    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_float=no_floats
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(f"{what} is not valid JSON: {exc}") from exc


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: the exact bytes every signature covers.

    Args:
        payload_type: The envelope's payload type.
        payload: The raw payload bytes.

    Returns:
        ``DSSEv1 <len(type)> <type> <len(payload)> <payload>``.
    """
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def format_time(epoch_s: int) -> str:
    """Format whole Unix seconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    moment = _dt.datetime.fromtimestamp(epoch_s, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """Parse ``YYYY-MM-DDTHH:MM:SSZ`` into Unix seconds.

    Raises:
        VerificationError: ``bad_envelope`` if the text is not in exactly that form.
    """
    if not isinstance(text, str) or not _TIME.match(text):
        raise _bad(f"time must look like 2030-01-31T00:00:00Z, got {text!r}")
    try:
        moment = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
    except ValueError as exc:
        raise _bad(f"invalid time {text!r}: {exc}") from exc
    return int(moment.timestamp())


def key_id(public_der: bytes) -> str:
    """The id of a public key: the SHA-256 hex of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(public_der).hexdigest()


@dataclass(frozen=True, slots=True)
class Statement:
    """What a release engineer signs about one artifact.

    Attributes:
        component: What the artifact is for (``daemon`` or an agent's component name).
        platform: Where it runs, e.g. ``linux-x86_64``.
        version: The human version string; must equal the request's version.
        counter: Monotonic release counter; must exceed the persisted floor.
        sha256: Lower-case hex SHA-256 of the artifact.
        length: Exact size of the artifact in bytes.
        expires: Unix seconds after which the statement is refused.
    """

    component: str
    platform: str
    version: str
    counter: int
    sha256: str
    length: int
    expires: int

    def __post_init__(self) -> None:
        if not _NAME.match(self.component):
            raise _bad(f"invalid component {self.component!r}")
        if not _NAME.match(self.platform):
            raise _bad(f"invalid platform {self.platform!r}")
        if not _VERSION.match(self.version):
            raise _bad(f"invalid version {self.version!r}")
        if not 0 <= self.counter <= _MAX_COUNTER:
            raise _bad(f"counter out of range: {self.counter!r}")
        if not _HEX64.match(self.sha256):
            raise _bad(f"sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if self.length < 0 or self.length > _MAX_COUNTER:
            raise _bad(f"length out of range: {self.length!r}")
        if not 0 <= self.expires <= 253402300799:  # 9999-12-31T23:59:59Z
            raise _bad(f"expires out of range: {self.expires!r}")


def encode_statement(statement: Statement) -> bytes:
    """Return the canonical payload bytes for ``statement``."""
    return canonical_json(
        {
            "_type": "hostvisor.update",
            "spec": SPEC_VERSION,
            "component": statement.component,
            "platform": statement.platform,
            "version": statement.version,
            "counter": statement.counter,
            "sha256": statement.sha256,
            "length": statement.length,
            "expires": format_time(statement.expires),
        }
    )


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in doc:
        raise _bad(f"missing field {name!r}")
    value = doc[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"field {name!r} has the wrong type: {value!r}")
    return value


def decode_statement(payload: bytes) -> Statement:
    """Parse canonical payload bytes into a :class:`Statement`.

    Raises:
        VerificationError: ``bad_envelope`` for anything but a canonical version-1 statement.
    """
    doc = _loads_strict(payload, "statement")
    if not isinstance(doc, dict):
        raise _bad("statement must be a JSON object")
    if doc.get("_type") != "hostvisor.update" or doc.get("spec") != SPEC_VERSION:
        raise _bad(f"not a version-{SPEC_VERSION} update statement")
    expected = {"_type", "spec", "component", "platform", "version", "counter", "sha256"}
    expected |= {"length", "expires"}
    if set(doc) != expected:
        raise _bad(f"unexpected statement fields: {sorted(set(doc) ^ expected)}")
    statement = Statement(
        component=_field(doc, "component", str),
        platform=_field(doc, "platform", str),
        version=_field(doc, "version", str),
        counter=_field(doc, "counter", int),
        sha256=_field(doc, "sha256", str),
        length=_field(doc, "length", int),
        expires=parse_time(_field(doc, "expires", str)),
    )
    if encode_statement(statement) != payload:
        raise _bad("statement payload is not in canonical form")
    return statement


@dataclass(frozen=True, slots=True)
class EnvelopeSignature:
    """One signature in an envelope: the signer's key id and the raw signature bytes."""

    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed payload (version 1 of the envelope format; see the module docstring)."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]


def encode_envelope(envelope: Envelope) -> bytes:
    """Serialise an envelope as canonical JSON bytes."""
    return canonical_json(
        {
            "payload_type": envelope.payload_type,
            "payload": base64.b64encode(envelope.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in envelope.signatures
            ],
        }
    )


def _b64(text: object, what: str, reason: Reason) -> bytes:
    if not isinstance(text, str):
        raise _bad(f"{what} must be a base64 string", reason)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise _bad(f"{what} is not valid base64: {exc}", reason) from exc


def decode_envelope(data: bytes | str) -> Envelope:
    """Parse an envelope (any JSON whitespace; the payload inside is checked separately).

    Raises:
        VerificationError: ``bad_envelope`` if malformed, ``bad_signature`` if a signature
            is not valid base64.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > 1 << 20:
        raise _bad(f"envelope too large: {len(raw)} bytes")
    doc = _loads_strict(raw, "envelope")
    if not isinstance(doc, dict) or set(doc) != {"payload_type", "payload", "signatures"}:
        raise _bad("envelope must have exactly payload_type, payload and signatures")
    payload_type = _field(doc, "payload_type", str)
    payload = _b64(doc["payload"], "payload", Reason.BAD_ENVELOPE)
    raw_sigs = _field(doc, "signatures", list)
    if not raw_sigs or len(raw_sigs) > 16:
        raise _bad(f"an envelope needs 1 to 16 signatures, got {len(raw_sigs)}")
    signatures = []
    for item in raw_sigs:
        if not isinstance(item, dict) or set(item) != {"keyid", "sig"}:
            raise _bad(f"malformed signature entry {item!r}")
        keyid = _field(item, "keyid", str)
        signatures.append(EnvelopeSignature(keyid, _b64(item["sig"], "sig", Reason.BAD_SIGNATURE)))
    return Envelope(payload_type, payload, tuple(signatures))


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One key of a keyring.

    Attributes:
        keyid: SHA-256 hex of ``public_der``.
        alg: One of :data:`ALGORITHMS`; bound to the key, never chosen by a request.
        public_der: DER SubjectPublicKeyInfo.
        components: What the key may sign for (``"keyring"``: may sign keyring rotations).
        legacy: Only legacy keys verify the seed's PKCS#1 v1.5 signatures over a file hash,
            and they verify nothing else.
    """

    keyid: str
    alg: str
    public_der: bytes
    components: frozenset[str]
    legacy: bool = False

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise _bad(f"unknown algorithm {self.alg!r}", Reason.BAD_KEYRING)
        if self.legacy != (self.alg == LEGACY_ALGORITHM):
            raise _bad(
                f"key {self.keyid[:16]}: only {LEGACY_ALGORITHM} keys are legacy, and they must"
                " be marked so",
                Reason.BAD_KEYRING,
            )
        if self.keyid != key_id(self.public_der):
            raise _bad(f"key id {self.keyid!r} does not match its public key", Reason.BAD_KEYRING)
        for component in self.components:
            if not _NAME.match(component):
                raise _bad(f"invalid component {component!r} in key", Reason.BAD_KEYRING)

    def allows(self, component: str) -> bool:
        """Whether this key may sign for ``component``."""
        return component in self.components


@dataclass(frozen=True, slots=True)
class Keyring:
    """The set of trusted keys, with its own version and expiry.

    Attributes:
        version: Increases with every rotation; a rotation must increase it.
        expires: Unix seconds; an expired keyring can still be rotated away from (so an
            offline host can recover) but verifies no updates.
        keys: The trusted keys by key id.
    """

    version: int
    expires: int
    keys: Mapping[str, TrustedKey] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Sequence[TrustedKey], *, version: int = 1, expires: int) -> Keyring:
        """Build a keyring from a sequence of keys (ids must be unique)."""
        by_id: dict[str, TrustedKey] = {}
        for key in keys:
            if key.keyid in by_id:
                raise _bad(f"duplicate key {key.keyid}", Reason.BAD_KEYRING)
            by_id[key.keyid] = key
        return cls(version=version, expires=expires, keys=by_id)


def encode_keyring(keyring: Keyring) -> bytes:
    """Return the canonical payload bytes of a keyring document."""
    return canonical_json(
        {
            "_type": "hostvisor.keyring",
            "spec": SPEC_VERSION,
            "version": keyring.version,
            "expires": format_time(keyring.expires),
            "keys": [
                {
                    "keyid": key.keyid,
                    "alg": key.alg,
                    "public_key": base64.b64encode(key.public_der).decode("ascii"),
                    "components": sorted(key.components),
                    "legacy": key.legacy,
                }
                for key in sorted(keyring.keys.values(), key=lambda k: k.keyid)
            ],
        }
    )


def decode_keyring(payload: bytes) -> Keyring:
    """Parse a keyring document (canonical form not required: pinned files are hand-edited).

    Raises:
        VerificationError: ``bad_keyring`` if the document is malformed.
    """
    try:
        doc = _loads_strict(payload, "keyring")
        if not isinstance(doc, dict):
            raise _bad("keyring must be a JSON object")
        if doc.get("_type") != "hostvisor.keyring" or doc.get("spec") != SPEC_VERSION:
            raise _bad(f"not a version-{SPEC_VERSION} keyring")
        keys = []
        for item in _field(doc, "keys", list):
            if not isinstance(item, dict):
                raise _bad(f"malformed key entry {item!r}")
            components = _field(item, "components", list)
            if not all(isinstance(c, str) for c in components):
                raise _bad(f"components must be strings: {components!r}")
            keys.append(
                TrustedKey(
                    keyid=_field(item, "keyid", str),
                    alg=_field(item, "alg", str),
                    public_der=_b64(item.get("public_key"), "public_key", Reason.BAD_KEYRING),
                    components=frozenset(components),
                    legacy=_field(item, "legacy", bool),
                )
            )
        version = _field(doc, "version", int)
        if version < 1:
            raise _bad(f"keyring version must be >= 1, got {version}")
        return Keyring.of(keys, version=version, expires=parse_time(_field(doc, "expires", str)))
    except VerificationError as exc:
        if exc.reason is Reason.BAD_KEYRING:
            raise
        raise _bad(str(exc).split(": ", 1)[-1], Reason.BAD_KEYRING) from exc
