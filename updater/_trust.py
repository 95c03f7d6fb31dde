"""Loading the keyring in force: the rotated one, else the pinned file, plus the legacy key.

IO lives here (reading files); the decisions are in :mod:`updater._verify`.
"""

from __future__ import annotations

from ._config import UpdateConfig
from ._envelope import Keyring, TrustedKey, decode_keyring
from ._errors import Reason, VerificationError
from ._store import StateStore

__all__ = ["load_keyring"]

_NEVER = 253402300799


def load_keyring(config: UpdateConfig, store: StateStore) -> Keyring:
    """The keyring that verifies updates now (synchronous; reads small files).

    The keyring stored by the last accepted rotation wins over ``config.keyring_file``; the
    seed's ``public_key_file``, if configured, is added as a legacy key for
    ``config.legacy_components``. Every key is checked to fit its algorithm.

    Raises:
        VerificationError: ``bad_keyring`` if a document or key is unusable.
    """
    from . import _crypto

    rotated = store.read_keyring()
    if rotated is not None:
        keyring = decode_keyring(rotated)
    elif config.keyring_file is not None:
        try:
            keyring = decode_keyring(config.keyring_file.read_bytes())
        except OSError as exc:
            raise VerificationError(
                Reason.BAD_KEYRING, f"cannot read {config.keyring_file}: {exc}"
            ) from exc
    else:
        keyring = Keyring(version=0, expires=_NEVER, keys={})
    keys: dict[str, TrustedKey] = dict(keyring.keys)
    if config.public_key_file is not None:
        try:
            der = _crypto.public_der_from_pem(config.public_key_file.read_bytes())
            record = _crypto.public_key_record(
                "rsa-pkcs1v15-sha256", der, config.legacy_components, legacy=True
            )
        except (OSError, _crypto.KeyProblem) as exc:
            raise VerificationError(
                Reason.BAD_KEYRING, f"legacy key {config.public_key_file}: {exc}"
            ) from exc
        keys.setdefault(record.keyid, record)
    for key in keys.values():
        try:
            _crypto.check_public_key(key.alg, key.public_der)
        except _crypto.KeyProblem as exc:
            raise VerificationError(Reason.BAD_KEYRING, str(exc)) from exc
    return Keyring(version=keyring.version, expires=keyring.expires, keys=keys)
