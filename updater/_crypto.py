"""Signature primitives over ``cryptography``, imported lazily.

``cryptography`` costs about 8 MB of resident memory once imported and the memory is never
returned, so nothing here imports it at module level: every function imports what it needs.
A daemon that never receives an update never pays for it.

All verification functions return ``bool`` and never raise on a bad signature: the
decisions (which reason to report) belong to :mod:`updater._verify`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._envelope import LEGACY_ALGORITHM, TrustedKey, key_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        PrivateKeyTypes,
        PublicKeyTypes,
    )

__all__ = [
    "KeyProblem",
    "check_public_key",
    "generate_private_key",
    "load_private_key",
    "public_key_record",
    "sign",
    "sign_legacy",
    "verify",
    "verify_legacy",
]

_MIN_RSA_BITS = 2048


class KeyProblem(ValueError):
    """A public or private key does not fit the algorithm it is recorded with."""


def _load_public(der: bytes) -> PublicKeyTypes:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"not a DER SubjectPublicKeyInfo: {exc}") from exc


def check_public_key(alg: str, der: bytes) -> None:
    """Check that ``der`` is a usable public key for ``alg``.

    Raises:
        KeyProblem: Wrong key type, wrong curve, or an RSA key under 2048 bits.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    key = _load_public(der)
    if alg == "ed25519":
        ok = isinstance(key, ed25519.Ed25519PublicKey)
    elif alg == "ecdsa-p256-sha256":
        ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    elif alg in ("rsa-pss-sha256", LEGACY_ALGORITHM):
        ok = isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS
    else:
        ok = False
    if not ok:
        raise KeyProblem(f"key {key_id(der)[:16]} is not a valid {alg} public key")


def verify(key: TrustedKey, signature: bytes, message: bytes) -> bool:
    """Verify ``signature`` over ``message`` with a non-legacy key of the keyring.

    Args:
        key: The trusted key; its ``alg`` decides the scheme.
        signature: Raw signature bytes (DER for ECDSA).
        message: The signed bytes (the envelope's PAE).

    Returns:
        True only for a valid signature by this key under its recorded algorithm.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if key.legacy:
        return False
    try:
        check_public_key(key.alg, key.public_der)
        public = _load_public(key.public_der)
        if key.alg == "ed25519" and isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif key.alg == "ecdsa-p256-sha256" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif key.alg == "rsa-pss-sha256" and isinstance(public, rsa.RSAPublicKey):
            pss = padding.PSS(
                mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH
            )
            public.verify(signature, message, pss, hashes.SHA256())
        else:
            return False
    except (InvalidSignature, KeyProblem, ValueError):
        return False
    return True


def verify_legacy(key: TrustedKey, signature: bytes, sha256_digest: bytes) -> bool:
    """Verify the seed's signature: RSA PKCS#1 v1.5 over the artifact's SHA-256 digest.

    This accepts exactly what ``openssl dgst -sha256 -sign key.pem artifact`` produces.

    Args:
        key: A key marked legacy in the keyring (any other key returns False).
        signature: The raw signature (the seed's base64, decoded).
        sha256_digest: The 32-byte digest computed locally while streaming the download.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    if not key.legacy or len(sha256_digest) != 32:
        return False
    try:
        check_public_key(key.alg, key.public_der)
        public = _load_public(key.public_der)
        if not isinstance(public, rsa.RSAPublicKey):
            return False
        public.verify(
            signature, sha256_digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
        )
    except (InvalidSignature, KeyProblem, ValueError):
        return False
    return True


def generate_private_key(alg: str) -> bytes:
    """Generate a private key for ``alg`` and return it as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    private: Any
    if alg == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ecdsa-p256-sha256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg in ("rsa-pss-sha256", LEGACY_ALGORITHM):
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise KeyProblem(f"unknown algorithm {alg!r}")
    pem: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def load_private_key(pem: bytes) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key."""
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"cannot load private key: {exc}") from exc


def public_der_of(private_pem: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a PEM private key."""
    from cryptography.hazmat.primitives import serialization

    der: bytes = (
        load_private_key(private_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return der


def public_der_from_pem(public_pem: bytes) -> bytes:
    """Convert a PEM public key (the seed's ``public_key_file``) to DER."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError) as exc:
        raise KeyProblem(f"cannot load public key: {exc}") from exc
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_record(
    alg: str, public_der: bytes, components: frozenset[str], *, legacy: bool = False
) -> TrustedKey:
    """Build a keyring record for a public key, checking that it fits ``alg``."""
    check_public_key(alg, public_der)
    return TrustedKey(key_id(public_der), alg, public_der, components, legacy)


def sign(alg: str, private_pem: bytes, message: bytes) -> bytes:
    """Sign ``message`` (an envelope PAE) with a private key under ``alg``.

    Raises:
        KeyProblem: The key does not fit ``alg``, or ``alg`` is the legacy scheme.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    private = load_private_key(private_pem)
    if alg == "ed25519" and isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(message)
    if alg == "ecdsa-p256-sha256" and isinstance(private, ec.EllipticCurvePrivateKey):
        return private.sign(message, ec.ECDSA(hashes.SHA256()))
    if alg == "rsa-pss-sha256" and isinstance(private, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        return private.sign(message, pss, hashes.SHA256())
    raise KeyProblem(f"a {type(private).__name__} cannot sign envelopes as {alg!r}")


def sign_legacy(private_pem: bytes, sha256_digest: bytes) -> bytes:
    """Produce the seed's signature: RSA PKCS#1 v1.5 over a file's SHA-256 digest."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    private = load_private_key(private_pem)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise KeyProblem("legacy signatures need an RSA key")
    return private.sign(sha256_digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def alg_of_private(private_pem: bytes) -> str:
    """The default envelope algorithm for a private key (RSA keys sign with PSS)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    private = load_private_key(private_pem)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
        return "ecdsa-p256-sha256"
    if isinstance(private, rsa.RSAPrivateKey):
        return "rsa-pss-sha256"
    raise KeyProblem(f"unsupported private key type {type(private).__name__}")
