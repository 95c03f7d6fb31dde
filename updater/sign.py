"""Release-engineer console tool: generate keys, build keyrings, sign artifacts.

Run it as ``python -m updater.sign`` (or the ``hostvisor-sign`` console script)::

    # 1. keys (private PEM written 0600; the public key record is printed as JSON)
    python -m updater.sign genkey --alg ed25519 --out release.pem
    python -m updater.sign genkey --alg ed25519 --out root.pem

    # 2. the keyring every host pins (``keyring`` = may sign keyring rotations)
    python -m updater.sign keyring --key root.pem=keyring --key release.pem=agent,daemon \\
        --version 1 --expires-days 730 --out keyring.json

    # 3. sign an artifact: prints/writes the envelope that goes into UpdateRequest.envelope
    python -m updater.sign sign --key release.pem --component agent \\
        --platform linux-x86_64 --version 1.4.2 --counter 10402 --expires-days 30 \\
        --out agent-1.4.2.envelope.json ./agent-1.4.2

    # 4. rotate: a new keyring signed by a current keyring key and a new one
    python -m updater.sign keyring --key root2.pem=keyring --key release2.pem=agent,daemon \\
        --version 2 --expires-days 730 --sign-with root.pem --sign-with root2.pem \\
        --out keyring-v2.envelope.json

    # 5. verify what a host would accept
    python -m updater.sign verify --keyring keyring.json --envelope e.json --component agent \\
        --platform linux-x86_64 --version 1.4.2 ./agent-1.4.2

    # the seed's legacy signature (RSA PKCS#1 v1.5 over the file's SHA-256, base64)
    python -m updater.sign sign-legacy --key legacy-rsa.pem ./agent-1.4.2

``--key FILE=COMPONENTS`` accepts a private key PEM (its public half is used) or a public key
PEM; ``--legacy`` marks RSA keys given that way as legacy keys.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import _crypto
from ._envelope import (
    KEYRING_PAYLOAD_TYPE,
    LEGACY_ALGORITHM,
    UPDATE_PAYLOAD_TYPE,
    Envelope,
    EnvelopeSignature,
    Keyring,
    Statement,
    TrustedKey,
    decode_keyring,
    encode_envelope,
    encode_keyring,
    encode_statement,
    format_time,
    key_id,
    pae,
)
from ._errors import UpdaterError
from ._verify import Floor, check_artifact, verify_statement

__all__ = ["main", "sign_envelope", "sign_statement"]

_DAY_S = 86400


def sign_envelope(payload_type: str, payload: bytes, private_pems: Sequence[bytes]) -> bytes:
    """Sign ``payload`` with every key in ``private_pems`` and return the envelope bytes.

    Args:
        payload_type: The envelope's payload type (update or keyring).
        payload: Canonical payload bytes.
        private_pems: PEM private keys; RSA keys sign with PSS.

    Returns:
        The canonical envelope bytes.
    """
    signatures = []
    for pem in private_pems:
        alg = _crypto.alg_of_private(pem)
        sig = _crypto.sign(alg, pem, pae(payload_type, payload))
        signatures.append(EnvelopeSignature(key_id(_crypto.public_der_of(pem)), sig))
    return encode_envelope(Envelope(payload_type, payload, tuple(signatures)))


def sign_statement(statement: Statement, private_pems: Sequence[bytes]) -> bytes:
    """Sign an update :class:`~updater.Statement`; returns the envelope bytes."""
    return sign_envelope(UPDATE_PAYLOAD_TYPE, encode_statement(statement), private_pems)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write(path: str | None, data: bytes, *, private: bool = False) -> None:
    if path is None or path == "-":
        sys.stdout.write(data.decode("utf-8") + "\n")
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def _key_record(spec: str, *, legacy: bool) -> TrustedKey:
    path, _, components = spec.partition("=")
    if not components:
        raise SystemExit(f"--key {spec!r}: expected FILE=COMPONENT[,COMPONENT...]")
    pem = Path(path).read_bytes()
    if b"PRIVATE KEY" in pem:
        der = _crypto.public_der_of(pem)
        alg = _crypto.alg_of_private(pem)
    else:
        der = _crypto.public_der_from_pem(pem)
        alg = ""
    if legacy:
        alg = LEGACY_ALGORITHM
    elif not alg:
        for candidate in ("ed25519", "ecdsa-p256-sha256", "rsa-pss-sha256"):
            try:
                _crypto.check_public_key(candidate, der)
            except _crypto.KeyProblem:
                continue
            alg = candidate
            break
    return _crypto.public_key_record(
        alg, der, frozenset(c.strip() for c in components.split(",")), legacy=legacy
    )


def _cmd_genkey(args: argparse.Namespace) -> int:
    pem = _crypto.generate_private_key(args.alg)
    _write(args.out, pem, private=True)
    der = _crypto.public_der_of(pem)
    record = {"keyid": key_id(der), "alg": args.alg, "public_key": base64.b64encode(der).decode()}
    print(json.dumps(record, indent=2), file=sys.stderr if args.out in (None, "-") else sys.stdout)
    return 0


def _cmd_keyring(args: argparse.Namespace) -> int:
    keys = [_key_record(spec, legacy=False) for spec in args.key]
    keys += [_key_record(spec, legacy=True) for spec in args.legacy_key]
    expires = int(time.time()) + int(args.expires_days * _DAY_S)
    payload = encode_keyring(Keyring.of(keys, version=args.version, expires=expires))
    if args.sign_with:
        pems = [Path(p).read_bytes() for p in args.sign_with]
        _write(args.out, sign_envelope(KEYRING_PAYLOAD_TYPE, payload, pems))
    else:
        _write(args.out, payload)
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    sha256, length = _hash_file(Path(args.artifact))
    statement = Statement(
        component=args.component,
        platform=args.platform,
        version=args.version,
        counter=args.counter,
        sha256=sha256,
        length=length,
        expires=int(time.time()) + int(args.expires_days * _DAY_S),
    )
    pems = [Path(p).read_bytes() for p in args.key]
    _write(args.out, sign_statement(statement, pems))
    return 0


def _cmd_sign_legacy(args: argparse.Namespace) -> int:
    sha256, _ = _hash_file(Path(args.artifact))
    sig = _crypto.sign_legacy(Path(args.key).read_bytes(), bytes.fromhex(sha256))
    print(json.dumps({"hash": sha256, "signature": base64.b64encode(sig).decode()}))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    keyring = decode_keyring(Path(args.keyring).read_bytes())
    try:
        verified = verify_statement(
            Path(args.envelope).read_bytes(),
            keyring,
            component=args.component,
            platform=args.platform,
            version=args.version,
            floor=Floor(counter=args.floor),
            now=time.time(),
            max_length=1 << 62,
        )
        if args.artifact:
            check_artifact(verified.statement, *_hash_file(Path(args.artifact)))
    except UpdaterError as exc:
        print(f"REFUSED {exc.code} {exc}", file=sys.stderr)
        return 1
    st = verified.statement
    print(
        f"OK signed by {verified.keyid}: {st.component} {st.version} for {st.platform},"
        f" counter {st.counter}, sha256 {st.sha256}, {st.length} bytes,"
        f" expires {format_time(st.expires)}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostvisor-sign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("genkey", help="generate a private key (PEM, mode 0600)")
    p.add_argument("--alg", default="ed25519", choices=sorted(_crypto_algs()))
    p.add_argument("--out", help="private key file (default: stdout)")
    p.set_defaults(run=_cmd_genkey)

    p = sub.add_parser("keyring", help="build a keyring; with --sign-with, a rotation envelope")
    p.add_argument("--key", action="append", default=[], metavar="FILE=COMPONENTS")
    p.add_argument("--legacy-key", action="append", default=[], metavar="FILE=COMPONENTS")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--expires-days", type=float, default=730.0)
    p.add_argument("--sign-with", action="append", default=[], metavar="PRIVATE_PEM")
    p.add_argument("--out")
    p.set_defaults(run=_cmd_keyring)

    p = sub.add_parser("sign", help="sign an artifact and print its envelope")
    p.add_argument("--key", action="append", required=True, metavar="PRIVATE_PEM")
    p.add_argument("--component", required=True)
    p.add_argument("--platform", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--counter", type=int, required=True)
    p.add_argument("--expires-days", type=float, default=30.0)
    p.add_argument("--out")
    p.add_argument("artifact")
    p.set_defaults(run=_cmd_sign)

    p = sub.add_parser("sign-legacy", help="the seed's RSA PKCS#1 v1.5 signature (base64)")
    p.add_argument("--key", required=True, metavar="RSA_PRIVATE_PEM")
    p.add_argument("artifact")
    p.set_defaults(run=_cmd_sign_legacy)

    p = sub.add_parser("verify", help="check an envelope (and artifact) as a host would")
    p.add_argument("--keyring", required=True)
    p.add_argument("--envelope", required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--platform", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--floor", type=int, default=-1)
    p.add_argument("artifact", nargs="?")
    p.set_defaults(run=_cmd_verify)
    return parser


def _crypto_algs() -> set[str]:
    return {"ed25519", "ecdsa-p256-sha256", "rsa-pss-sha256", LEGACY_ALGORITHM}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hostvisor-sign`` / ``python -m updater.sign``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The process exit status (0 on success, 1 if ``verify`` refused).
    """
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except (UpdaterError, _crypto.KeyProblem, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
