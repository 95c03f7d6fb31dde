"""Envelope encoding, signature verification, keyring rules and the version floor."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from updater_testlib import FAR, NOW, PLATFORM, PROPS, Signer

from updater import Reason, SignatureError, VerificationError
from updater._envelope import (
    KEYRING_PAYLOAD_TYPE,
    Envelope,
    Keyring,
    Statement,
    decode_envelope,
    decode_keyring,
    decode_statement,
    encode_envelope,
    encode_keyring,
    encode_statement,
)
from updater._verify import (
    Floor,
    check_artifact,
    compare_versions,
    verify_keyring_rotation,
    verify_legacy_signature,
    verify_statement,
)
from updater.sign import sign_envelope

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
versions = st.from_regex(r"[0-9][0-9A-Za-z.+_-]{0,12}", fullmatch=True)
statements = st.builds(
    Statement,
    component=names,
    platform=names,
    version=versions,
    counter=st.integers(0, 2**63 - 1),
    sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    length=st.integers(0, 2**40),
    expires=st.integers(0, 253402300799),
)


def _verify(signer: Signer, envelope: bytes, statement: Statement, **kw: object) -> object:
    args: dict[str, object] = {
        "component": statement.component,
        "platform": statement.platform,
        "version": statement.version,
        "floor": Floor(),
        "now": NOW,
        "max_length": 1 << 40,
    }
    args.update(kw)
    return verify_statement(envelope, signer.keyring, **args)  # type: ignore[arg-type]


@given(statements)
def test_statement_round_trip_is_canonical(statement: Statement) -> None:
    """Encoding then decoding gives the same statement, and the bytes are canonical JSON."""
    payload = encode_statement(statement)
    assert decode_statement(payload) == statement
    doc = json.loads(payload)
    assert payload == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@given(statements)
def test_non_canonical_payload_is_refused(statement: Statement) -> None:
    """The same statement with whitespace has a second byte form, so it is refused."""
    pretty = json.dumps(json.loads(encode_statement(statement)), indent=1).encode()
    with pytest.raises(VerificationError) as info:
        decode_statement(pretty)
    assert info.value.reason is Reason.BAD_ENVELOPE


@PROPS
@given(
    statement=st.builds(replace, statements, expires=st.integers(NOW + 1, 253402300799)),
    data=st.data(),
)
def test_sign_then_verify_and_any_flip_fails(
    signer: Signer, statement: Statement, data: st.DataObject
) -> None:
    """A signed statement verifies; flipping any payload bit makes it fail."""
    envelope = signer.envelope(statement, "release")
    statement_ok = replace(statement, component="agent")
    envelope_ok = signer.envelope(statement_ok, "release")
    assert _verify(signer, envelope_ok, statement_ok).statement == statement_ok  # type: ignore[attr-defined]
    parsed = decode_envelope(envelope)
    index = data.draw(st.integers(0, len(parsed.payload) * 8 - 1))
    flipped = bytearray(parsed.payload)
    flipped[index // 8] ^= 1 << (index % 8)
    tampered = encode_envelope(replace(parsed, payload=bytes(flipped)))
    with pytest.raises(VerificationError) as info:
        _verify(signer, tampered, statement)
    assert info.value.reason in {Reason.BAD_SIGNATURE, Reason.BAD_ENVELOPE}


@pytest.mark.parametrize("key", ["release", "ecdsa", "rsapss"])
def test_each_algorithm_verifies(signer: Signer, key: str) -> None:
    statement = signer.statement(b"x")
    verified = _verify(signer, signer.envelope(statement, key), statement)
    assert verified.keyid == signer.records[key].keyid  # type: ignore[attr-defined]


def test_wrong_signature(signer: Signer) -> None:
    statement = signer.statement(b"x")
    good = decode_envelope(signer.envelope(statement))
    other = decode_envelope(signer.envelope(replace(statement, counter=12)))
    forged = encode_envelope(replace(good, signatures=other.signatures))
    with pytest.raises(SignatureError) as info:
        _verify(signer, forged, statement)
    assert info.value.reason is Reason.BAD_SIGNATURE
    assert info.value.code == "D4002"


def test_bad_base64_signature(signer: Signer) -> None:
    doc = json.loads(signer.envelope(signer.statement(b"x")))
    doc["signatures"][0]["sig"] = "***not base64***"
    with pytest.raises(SignatureError) as info:
        _verify(signer, json.dumps(doc).encode(), signer.statement(b"x"))
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_untrusted_key(signer: Signer) -> None:
    statement = signer.statement(b"x")
    with pytest.raises(SignatureError) as info:
        _verify(signer, signer.envelope(statement, "stranger"), statement)
    assert info.value.reason is Reason.UNTRUSTED_KEY


def test_key_not_allowed_for_component(signer: Signer) -> None:
    """An agent-only key signing a daemon statement is an untrusted key for the daemon."""
    statement = signer.statement(b"x", component="daemon")
    with pytest.raises(SignatureError) as info:
        _verify(signer, signer.envelope(statement, "agentonly"), statement)
    assert info.value.reason is Reason.UNTRUSTED_KEY


def test_agent_artifact_offered_as_daemon(signer: Signer) -> None:
    statement = signer.statement(b"x", component="agent")
    with pytest.raises(VerificationError) as info:
        _verify(signer, signer.envelope(statement), statement, component="daemon")
    assert info.value.reason is Reason.COMPONENT_MISMATCH


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"platform": "linux-arm64"}, Reason.PLATFORM_MISMATCH),
        ({"version": "9.9.9"}, Reason.VERSION_MISMATCH),
        ({"now": FAR}, Reason.EXPIRED),
        ({"floor": Floor(counter=11, version="1.1.0")}, Reason.ROLLBACK),
        ({"floor": Floor(counter=50, version="5.0")}, Reason.ROLLBACK),
        ({"max_length": 0}, Reason.TOO_LARGE),
    ],
)
def test_policy_refusals(signer: Signer, override: dict[str, object], reason: Reason) -> None:
    statement = signer.statement(b"x")
    with pytest.raises(VerificationError) as info:
        _verify(signer, signer.envelope(statement), statement, **override)
    assert info.value.reason is reason


def test_keyring_expired_refuses_updates(signer: Signer) -> None:
    statement = signer.statement(b"x")
    expired = replace(signer.keyring, expires=NOW - 1)
    with pytest.raises(VerificationError) as info:
        verify_statement(
            signer.envelope(statement),
            expired,
            component="agent",
            platform=PLATFORM,
            version=statement.version,
            floor=Floor(),
            now=NOW,
            max_length=1 << 30,
        )
    assert info.value.reason is Reason.EXPIRED


@given(counter=st.integers(-1, 2**63 - 1), floor=st.integers(-1, 2**63 - 1))
def test_floor_is_strictly_increasing(counter: int, floor: int) -> None:
    """The floor admits exactly the counters above it (replays and downgrades refused)."""
    from updater._verify import check_floor

    assert check_floor(counter, Floor(counter=floor)) == (counter > floor)


@given(st.lists(st.integers(0, 99), min_size=1, max_size=4), st.integers(0, 99))
def test_compare_versions_orders_numerically(parts: list[int], bump: int) -> None:
    base = ".".join(map(str, parts))
    higher = ".".join(map(str, [*parts[:-1], parts[-1] + bump + 1]))
    assert compare_versions(higher, base) == 1
    assert compare_versions(base, higher) == -1
    assert compare_versions(base, base + ".0") == 0
    assert compare_versions("1.x", base) is None


def test_check_artifact() -> None:
    data = b"payload"
    statement = Statement("agent", PLATFORM, "1", 1, hashlib.sha256(data).hexdigest(), 7, FAR)
    check_artifact(statement, hashlib.sha256(data).hexdigest(), 7)
    with pytest.raises(VerificationError) as info:
        check_artifact(statement, hashlib.sha256(data).hexdigest(), 6)
    assert info.value.reason is Reason.LENGTH_MISMATCH
    with pytest.raises(VerificationError) as info:
        check_artifact(statement, hashlib.sha256(b"other").hexdigest(), 7)
    assert info.value.reason is Reason.HASH_MISMATCH


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_legacy_signature_matches_openssl(signer: Signer, tmp_path: Path) -> None:
    """Known-good vector: what `openssl dgst -sha256 -sign` produces is what legacy accepts."""
    key = tmp_path / "legacy.pem"
    key.write_bytes(signer.pems["legacy"])
    artifact = tmp_path / "agent"
    artifact.write_bytes(b"seed-style agent binary\n" * 1000)
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key), str(artifact)],
        check=True,
        capture_output=True,
    ).stdout
    digest = hashlib.sha256(artifact.read_bytes()).digest()
    kw = {"component": "agent", "version": "1.2.0", "floor": Floor(version="1.1.0"), "now": NOW}
    keyid = verify_legacy_signature(base64.b64encode(sig).decode(), digest, signer.keyring, **kw)  # type: ignore[arg-type]
    assert keyid == signer.records["legacy"].keyid
    # Signing the hex string instead of the digest is a different scheme: refused.
    with pytest.raises(SignatureError):
        verify_legacy_signature(
            base64.b64encode(sig).decode(),
            hashlib.sha256(digest).digest(),
            signer.keyring,
            **kw,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"component": "daemon"}, Reason.UNTRUSTED_KEY),
        ({"version": "1.0.9"}, Reason.ROLLBACK),
        ({"version": "banana"}, Reason.ROLLBACK),
    ],
)
def test_legacy_policy_still_applies(signer: Signer, kw: dict[str, object], reason: Reason) -> None:
    from updater import _crypto

    digest = hashlib.sha256(b"bin").digest()
    sig = base64.b64encode(_crypto.sign_legacy(signer.pems["legacy"], digest)).decode()
    args: dict[str, object] = {"component": "agent", "version": "1.2", "now": NOW}
    args.update(kw)
    with pytest.raises(VerificationError) as info:
        verify_legacy_signature(sig, digest, signer.keyring, floor=Floor(version="1.1.0"), **args)  # type: ignore[arg-type]
    assert info.value.reason is reason


def test_non_legacy_key_cannot_make_legacy_signatures(signer: Signer) -> None:
    """An RSA-PSS key's PKCS#1 v1.5 signature is refused: algorithms are bound to keys."""
    from updater import _crypto

    digest = hashlib.sha256(b"bin").digest()
    sig = base64.b64encode(_crypto.sign_legacy(signer.pems["rsapss"], digest)).decode()
    with pytest.raises(SignatureError) as info:
        verify_legacy_signature(
            sig, digest, signer.keyring, component="agent", version="2", floor=Floor(), now=NOW
        )
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_legacy_key_cannot_sign_envelopes(signer: Signer) -> None:
    """A legacy key in the keyring never verifies an envelope (even a valid PSS one)."""
    from updater import _crypto
    from updater._envelope import UPDATE_PAYLOAD_TYPE, EnvelopeSignature, pae

    statement = signer.statement(b"x")
    payload = encode_statement(statement)
    sig = _crypto.sign("rsa-pss-sha256", signer.pems["legacy"], pae(UPDATE_PAYLOAD_TYPE, payload))
    keyid = signer.records["legacy"].keyid
    envelope = encode_envelope(
        Envelope(UPDATE_PAYLOAD_TYPE, payload, (EnvelopeSignature(keyid, sig),))
    )
    with pytest.raises(SignatureError) as info:
        _verify(signer, envelope, statement)
    assert info.value.reason is Reason.BAD_SIGNATURE


def _rotation(signer: Signer, version: int, signers: list[str], keep: list[str]) -> bytes:
    keys = [signer.records[name] for name in keep]
    payload = encode_keyring(Keyring.of(keys, version=version, expires=FAR))
    return sign_envelope(KEYRING_PAYLOAD_TYPE, payload, [signer.pems[n] for n in signers])


def test_keyring_round_trip(signer: Signer) -> None:
    assert decode_keyring(encode_keyring(signer.keyring)) == signer.keyring


def test_keyring_rotation_accepted_and_revokes(signer: Signer) -> None:
    """v2 drops `release`: signed by root (current) and root (new) it is accepted, and then
    `release` is an untrusted key."""
    new = verify_keyring_rotation(
        _rotation(signer, 2, ["root"], ["root", "ecdsa"]), signer.keyring, NOW
    )
    assert new.version == 2
    statement = signer.statement(b"x")
    with pytest.raises(SignatureError) as info:
        verify_statement(
            signer.envelope(statement),
            new,
            component="agent",
            platform=PLATFORM,
            version=statement.version,
            floor=Floor(),
            now=NOW,
            max_length=1 << 30,
        )
    assert info.value.reason is Reason.UNTRUSTED_KEY


@pytest.mark.parametrize(
    ("version", "signers", "keep", "reason"),
    [
        (2, ["stranger"], ["stranger"], Reason.UNTRUSTED_KEY),  # not signed by a current key
        (2, ["release"], ["release"], Reason.UNTRUSTED_KEY),  # current key lacks keyring role
        (1, ["root"], ["root"], Reason.ROLLBACK),  # version does not grow
        (2, ["root"], ["release"], Reason.UNTRUSTED_KEY),  # new keyring has no signing root
    ],
)
def test_keyring_rotation_refused(
    signer: Signer, version: int, signers: list[str], keep: list[str], reason: Reason
) -> None:
    with pytest.raises(VerificationError) as info:
        verify_keyring_rotation(_rotation(signer, version, signers, keep), signer.keyring, NOW)
    assert info.value.reason is reason


def test_update_envelope_is_not_a_keyring(signer: Signer) -> None:
    """Payload types are signed: an update envelope cannot pass as a keyring."""
    with pytest.raises(VerificationError) as info:
        verify_keyring_rotation(signer.envelope(signer.statement(b"x")), signer.keyring, NOW)
    assert info.value.reason is Reason.BAD_KEYRING


@pytest.mark.parametrize(
    "doc",
    [
        b"[]",
        b'{"payload_type":"x","payload":"AA==","signatures":[]}',
        b'{"payload_type":"x","payload":"AA==","signatures":[{"keyid":"a","sig":"AA=="}],"x":1}',
        b'{"payload_type":"x","payload":"!!","signatures":[{"keyid":"a","sig":"AA=="}]}',
        b'{"payload_type":"x","payload_type":"y","payload":"","signatures":[]}',
        b"\xff",
    ],
)
def test_malformed_envelopes(doc: bytes) -> None:
    with pytest.raises(VerificationError) as info:
        decode_envelope(doc)
    assert info.value.reason is Reason.BAD_ENVELOPE
