"""The release engineers' console tool, driven through its entry point."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from updater_testlib import NOW, PLATFORM

from updater import Reason, UpdateConfig, UpdateManager, VerificationError
from updater._envelope import decode_envelope, decode_keyring, decode_statement
from updater._store import StateStore
from updater._trust import load_keyring
from updater._verify import Floor, verify_statement
from updater.sign import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    for name, alg in [("root", "ed25519"), ("release", "ecdsa-p256-sha256")]:
        status, out, _ = run(capsys, "genkey", "--alg", alg, "--out", str(tmp_path / f"{name}.pem"))
        assert status == 0
        assert json.loads(out)["alg"] == alg
        assert (tmp_path / f"{name}.pem").stat().st_mode & 0o777 == 0o600
    return tmp_path


def test_keyring_sign_verify_round_trip(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keyring = keys / "keyring.json"
    status, _, _ = run(
        capsys,
        "keyring",
        "--key",
        f"{keys}/root.pem=keyring",
        "--key",
        f"{keys}/release.pem=agent,daemon",
        "--version",
        "1",
        "--out",
        str(keyring),
    )
    assert status == 0
    ring = decode_keyring(keyring.read_bytes())
    assert sorted(sorted(k.components) for k in ring.keys.values()) == [
        ["agent", "daemon"],
        ["keyring"],
    ]
    artifact = keys / "agent-1.2.0"
    artifact.write_bytes(b"\x7fELF pretend agent" * 100)
    envelope = keys / "e.json"
    status, _, _ = run(
        capsys,
        "sign",
        "--key",
        f"{keys}/release.pem",
        "--component",
        "agent",
        "--platform",
        PLATFORM,
        "--version",
        "1.2.0",
        "--counter",
        "10200",
        "--out",
        str(envelope),
        str(artifact),
    )
    assert status == 0
    statement = decode_statement(decode_envelope(envelope.read_bytes()).payload)
    assert statement.sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert (statement.counter, statement.length) == (10200, artifact.stat().st_size)
    common = [
        "verify",
        "--keyring",
        str(keyring),
        "--envelope",
        str(envelope),
        "--platform",
        PLATFORM,
        "--version",
        "1.2.0",
    ]
    status, out, _ = run(capsys, *common, "--component", "agent", str(artifact))
    assert status == 0
    assert out.startswith("OK")
    assert re.search(r"expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", out.strip()), out
    assert f"expires={statement.expires}" not in out  # never as epoch seconds
    status, _, err = run(capsys, *common, "--component", "daemon", str(artifact))
    assert status == 1
    assert "component_mismatch" in err
    status, _, err = run(capsys, *common, "--component", "agent", "--floor", "10200")
    assert status == 1
    assert "rollback" in err
    artifact.write_bytes(b"tampered")
    status, _, err = run(capsys, *common, "--component", "agent", str(artifact))
    assert status == 1
    assert "D4002" in err


def test_rotation_envelope_accepted_by_manager(
    keys: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A host pinned to keyring v1 accepts v2 signed by the v1 root and the new root, and
    then trusts only v2's keys."""
    run(
        capsys,
        "keyring",
        "--key",
        f"{keys}/root.pem=keyring",
        "--key",
        f"{keys}/release.pem=agent",
        "--version",
        "1",
        "--out",
        str(keys / "k1.json"),
    )
    run(capsys, "genkey", "--out", str(keys / "root2.pem"))
    run(capsys, "genkey", "--out", str(keys / "release2.pem"))
    status, _, _ = run(
        capsys,
        "keyring",
        "--key",
        f"{keys}/root2.pem=keyring",
        "--key",
        f"{keys}/release2.pem=agent",
        "--version",
        "2",
        "--sign-with",
        f"{keys}/root.pem",
        "--sign-with",
        f"{keys}/root2.pem",
        "--out",
        str(keys / "k2.envelope.json"),
    )
    assert status == 0
    config = UpdateConfig(
        state_dir=tmp_path / "s",
        download_dir=tmp_path / "d",
        backup_dir=tmp_path / "b",
        platform=PLATFORM,
        keyring_file=keys / "k1.json",
    )
    manager = UpdateManager(config, wall_clock=lambda: NOW - 10**8)
    import trio

    new = trio.run(manager.rotate_keyring, (keys / "k2.envelope.json").read_bytes())
    assert new.version == 2
    assert manager.keyring().version == 2, "the rotated keyring is persisted and used"
    # Replaying the v1 -> v2 rotation again is refused (version does not grow).
    with pytest.raises(VerificationError) as info:
        trio.run(manager.rotate_keyring, (keys / "k2.envelope.json").read_bytes())
    assert info.value.reason is Reason.ROLLBACK
    # An envelope by the old release key is now from an untrusted key.
    artifact = keys / "a"
    artifact.write_bytes(b"x")
    run(
        capsys,
        "sign",
        "--key",
        f"{keys}/release.pem",
        "--component",
        "agent",
        "--platform",
        PLATFORM,
        "--version",
        "1",
        "--counter",
        "1",
        "--out",
        str(keys / "e"),
        str(artifact),
    )
    with pytest.raises(VerificationError) as info:
        verify_statement(
            (keys / "e").read_bytes(),
            manager.keyring(),
            component="agent",
            platform=PLATFORM,
            version="1",
            floor=Floor(),
            now=NOW - 10**8,
            max_length=10,
        )
    assert info.value.reason is Reason.UNTRUSTED_KEY


def test_sign_legacy_and_seed_public_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sign-legacy` output verifies with the seed's public_key_file loaded as a legacy key."""
    from cryptography.hazmat.primitives import serialization

    from updater import _crypto
    from updater._verify import verify_legacy_signature

    status, _, _ = run(
        capsys, "genkey", "--alg", "rsa-pkcs1v15-sha256", "--out", str(tmp_path / "legacy.pem")
    )
    assert status == 0
    private = _crypto.load_private_key((tmp_path / "legacy.pem").read_bytes())
    (tmp_path / "update.pub").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    artifact = tmp_path / "agent"
    artifact.write_bytes(b"binary")
    status, out, _ = run(
        capsys, "sign-legacy", "--key", str(tmp_path / "legacy.pem"), str(artifact)
    )
    doc = json.loads(out)
    config = UpdateConfig(
        state_dir=tmp_path / "s",
        download_dir=tmp_path / "d",
        backup_dir=tmp_path / "b",
        platform=PLATFORM,
        public_key_file=tmp_path / "update.pub",
        legacy_components=frozenset({"agent"}),
    )
    keyring = load_keyring(config, StateStore(config.state_dir))
    keyid = verify_legacy_signature(
        doc["signature"],
        bytes.fromhex(doc["hash"]),
        keyring,
        component="agent",
        version="1",
        floor=Floor(),
        now=0,
    )
    assert keyring.keys[keyid].legacy
    assert base64.b64decode(doc["signature"])


def test_bad_keys_in_keyring_are_refused(tmp_path: Path) -> None:
    """A key record whose bytes are not a key of its algorithm: bad_keyring at load."""
    from updater._envelope import Keyring, TrustedKey, encode_keyring, key_id

    der = b"\x30\x03\x02\x01\x01"
    ring = Keyring.of([TrustedKey(key_id(der), "ed25519", der, frozenset({"agent"}))], expires=NOW)
    (tmp_path / "k.json").write_bytes(encode_keyring(ring))
    config = UpdateConfig(
        state_dir=tmp_path / "s",
        download_dir=tmp_path / "d",
        backup_dir=tmp_path / "b",
        platform=PLATFORM,
        keyring_file=tmp_path / "k.json",
    )
    with pytest.raises(VerificationError) as info:
        load_keyring(config, StateStore(config.state_dir))
    assert info.value.reason is Reason.BAD_KEYRING
