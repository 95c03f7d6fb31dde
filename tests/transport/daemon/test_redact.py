"""Secrets are hidden from GetConfig: the rules, and a property over arbitrary documents."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from transport.daemon._redact import REDACTED, is_secret_name, redact


@pytest.mark.parametrize(
    "name",
    ["password", "DB_PASSWORD", "api-key", "apiKey", "SECRET_ACCESS", "token", "x_auth",
     "private_key", "signing_key", "Credentials", "SESSION_COOKIE", "dsn", "passphrase"],
)  # fmt: skip
def test_secret_names(name: str) -> None:
    """Names that hold secrets are recognised, whatever their case and separators."""
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["key_file", "keyring_file", "ca_file", "token_path", "log_level", "work_dir", "PATH"]
)
def test_paths_and_plain_names_are_not_secrets(name: str) -> None:
    """A path to a key is not the key; ordinary settings stay readable."""
    assert not is_secret_name(name)


def test_redact_hides_values_keys_urls_pem_and_options() -> None:
    """Each rule of the module docstring, on one document."""
    document = {
        "manager": {"address": "m:9090", "token": "t0k", "tls": {"key_file": "/etc/k.pem"}},
        "update": {"keyring": "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----"},
        "agents": [
            {
                "env": {"API_TOKEN": "x", "HOME": "/root", "URL": "https://u:p@h:1/x?y=1"},
                "args": ["--password", "pw", "--verbose", "--secret=s", "-v", "plain"],
            }
        ],
        "empty": {"password": ""},
    }
    assert redact(document) == {
        "manager": {"address": "m:9090", "token": REDACTED, "tls": {"key_file": "/etc/k.pem"}},
        "update": {"keyring": REDACTED},
        "agents": [
            {
                "env": {
                    "API_TOKEN": REDACTED,
                    "HOME": "/root",
                    "URL": f"https://u:{REDACTED}@h:1/x?y=1",
                },
                "args": [
                    "--password",
                    REDACTED,
                    "--verbose",
                    f"--secret={REDACTED}",
                    "-v",
                    "plain",
                ],
            }
        ],
        "empty": {"password": ""},
    }
    assert document["manager"]["token"] == "t0k", "the input is not changed"


leaves = st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=8))
names = st.one_of(
    st.sampled_from(["password", "TOKEN", "api_key", "key_file", "name", "x", "-"]),
    st.text(max_size=6),
)
documents = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=3),
    max_leaves=12,
)


def _check_hidden(original: Any, copy: Any) -> None:
    if copy == REDACTED:
        return
    if isinstance(original, dict):
        assert isinstance(copy, dict) and list(copy) == list(original)
        for key, value in original.items():
            if is_secret_name(key) and value not in (None, ""):
                assert copy[key] == REDACTED, key
            else:
                _check_hidden(value, copy[key])
    elif isinstance(original, list):
        assert isinstance(copy, list) and len(copy) == len(original)
        for value, hidden in zip(original, copy, strict=True):
            _check_hidden(value, hidden)


@given(documents)
def test_every_secret_key_is_hidden_and_redaction_is_idempotent(document: Any) -> None:
    """Under every key that names a secret, at any depth, the copy holds the placeholder;
    the shape is kept; redacting again changes nothing."""
    once = redact(document)
    _check_hidden(document, once)
    assert redact(once) == once
