"""Secrets out of a configuration before it leaves the daemon (GetConfig). PURE.

What GetConfig shows is the effective configuration (:func:`~transport.daemon.dump_config`),
which anyone allowed to call the daemon may read: the Manager, and through it the web
console's users. Agents' environments and arguments, and sections kept verbatim for other
packages (``manager``, ``update``), may hold credentials. The rules, in the order applied:

* A mapping key that names a secret (``password``, ``passwd``, ``secret``, ``token``,
  ``api_key``, ``apikey``, ``private_key``, ``credential(s)``, ``auth``, ``cookie``,
  ``session``, ``signature``, ``dsn``, or ending in ``key``; case and ``-``/``_`` do not
  matter, and a key that *contains* one counts, e.g. ``DB_PASSWORD``) has its value replaced by
  :data:`REDACTED` whatever the value is (a nested block included). Keys ending in
  ``_file``, ``_path`` or ``_dir`` are exempt: a path to a key is not the key (TLS's
  ``key_file`` stays readable, its contents never appear).
* Any string value holding PEM material (``-----BEGIN``) is replaced whole.
* The password of a URL with credentials (``scheme://user:pass@host``) is replaced, in
  any string, anywhere.
* In an argument list, ``--password=x`` and ``-token=x`` keep the option and lose the
  value; ``--password x`` loses the argument after the option.

Every agent's ``env`` values pass through the same rules by variable name, so
``HTTP_PROXY=http://u:p@proxy`` keeps its URL without the password, ``API_TOKEN`` is
hidden and ``LOG_LEVEL`` stays. Redaction errs on the side of hiding: the daemon's own
files keep everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["REDACTED", "is_secret_name", "redact"]

REDACTED = "<redacted>"
"""What a hidden value is replaced by."""

_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "credential",
    "auth",
    "cookie",
    "session",
    "signature",
    "dsn",
)
_PATH_SUFFIXES = ("_file", "_path", "_dir", "file", "path")
_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]*(?=@)")
_OPTION = re.compile(r"^(?P<flag>--?[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<eq>=)(?P<value>.*)$", re.S)


def is_secret_name(name: str) -> bool:
    """Whether a key or variable called ``name`` holds a secret (see the module docstring).

    Args:
        name: The key, e.g. ``DB_PASSWORD``, ``key_file``, ``api-key``.

    Returns:
        True for names of secrets; False for paths to them and for anything else.
    """
    lowered = name.lower()
    if lowered.endswith(_PATH_SUFFIXES):
        return False
    squashed = lowered.replace("-", "").replace("_", "").replace(".", "")
    return squashed.endswith("key") or any(word in squashed for word in _SECRET_WORDS)


def _text(value: str) -> str:
    if "-----BEGIN" in value:
        return REDACTED
    return _URL_CREDENTIALS.sub(lambda m: m.group("head") + REDACTED, value)


def _arguments(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    hide_next = False
    for value in values:
        if hide_next:
            hide_next = False
            out.append(REDACTED)
            continue
        if isinstance(value, str):
            option = _OPTION.match(value)
            if option is not None and is_secret_name(option.group("flag").lstrip("-")):
                out.append(f"{option.group('flag')}={REDACTED}")
                continue
            if value.startswith("-") and is_secret_name(value.lstrip("-")):
                hide_next = True
                out.append(value)
                continue
        out.append(redact(value))
    return out


def redact(value: Any) -> Any:
    """A copy of a plain document (dicts, lists, scalars) with its secrets hidden.

    Args:
        value: The document, e.g. the result of :func:`~transport.daemon.dump_config`.

    Returns:
        An equal document except for the hidden values (the input is not changed).
    """
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_name(key) and item not in (None, "")
            else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return _arguments(value)
    if isinstance(value, str):
        return _text(value)
    return value
