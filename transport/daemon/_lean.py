"""Defer the daemon's rarely used standard modules until first use: ``ssl`` and ``hmac``.

``import trio`` imports :mod:`ssl` (for ``trio.SSLStream``) and :mod:`hmac` (for DTLS
cookies) eagerly, and the two load OpenSSL's libcrypto and libssl: about 6 MiB of RSS, a
fifth of the daemon, that a daemon without HTTPS probes, update downloads or TLS never
uses. Trio only names these modules at import time; it reads their attributes when a TLS
stream or a DTLS endpoint is used.

:func:`install` puts a lazy module into ``sys.modules`` for each of them, before trio is
imported. A lazy module is the real module object, still empty: the first access to any
attribute other than the import system's own metadata (``__spec__``, ``__file__``, ...)
executes the real module's code in it, under a lock, and turns it into an ordinary module.
So ``import ssl`` anywhere returns it at no cost, ``from ssl import SSLContext`` or
``ssl.create_default_context()`` load the real thing at that moment, and every reference
taken earlier (trio's ``_stdlib_ssl``) sees the loaded module, because it is the same
object. The standard library's :class:`importlib.util.LazyLoader` cannot be used: on
Python 3.11 it loads the module on any attribute access, and every ``import`` statement
reads ``__spec__``, so the next ``import ssl`` (trio's own) would load it; it is also not
thread-safe there.

Only the daemon program installs them: ``transport.daemon`` imports this module first
thing, and importing it calls :func:`install`; the library packages never do. Guards: a
module already imported is left alone, and so is one that could not be imported eagerly
(``ssl`` without its ``_ssl`` extension stays as it was: the import error comes where it
always came).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any

__all__ = ["LAZY_MODULES", "install", "is_lazy"]

#: The modules :func:`install` defers, and the extension each one needs to load.
LAZY_MODULES = {"ssl": "_ssl", "hmac": "_hashlib"}

# What the import system and introspection read without needing the module's contents;
# anything else (``__dict__`` and ``__doc__`` included) loads the module first.
_METADATA = frozenset(
    {"__spec__", "__name__", "__loader__", "__package__", "__path__", "__file__", "__cached__"}
)


class _LazyModule(types.ModuleType):
    """A module whose code runs on first use of one of its attributes (see module doc)."""

    def __getattribute__(self, name: str) -> Any:
        if name not in _METADATA and name != "__class__":
            _load(self)
        # The module type's own lookup: globals, then a module-level __getattr__.
        return types.ModuleType.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        _load(self)
        types.ModuleType.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        _load(self)
        types.ModuleType.__delattr__(self, name)


def _load(module: _LazyModule) -> None:
    """Run the real module's code in ``module``, once, whichever thread comes first."""
    spec: importlib.machinery.ModuleSpec = object.__getattribute__(module, "__spec__")
    state: dict[str, Any] = spec.loader_state
    with state["lock"]:
        if type(module) is not _LazyModule:
            return  # loaded by another thread while this one waited
        if state["loading"]:
            return  # re-entered from the module's own code: it reads its globals as usual
        state["loading"] = True
        try:
            assert spec.loader is not None
            spec.loader.exec_module(module)
        except BaseException:
            state["loading"] = False  # the next use tries again, and fails the same way
            raise
        object.__setattr__(module, "__class__", types.ModuleType)


def is_lazy(module: types.ModuleType) -> bool:
    """Whether ``module`` is a deferred module whose code has not run yet."""
    return type(module) is _LazyModule


def install() -> list[str]:
    """Put a lazy module into ``sys.modules`` for each of :data:`LAZY_MODULES`.

    Call it before anything imports trio. Idempotent.

    Returns:
        The names made lazy by this call (those already imported, or that could not be
        imported, are skipped).
    """
    installed = []
    for name, needs in LAZY_MODULES.items():
        if name in sys.modules or importlib.util.find_spec(needs) is None:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            continue
        # One lock per module: a thread loading one never waits for another's.
        spec.loader_state = {"lock": threading.RLock(), "loading": False}
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _LazyModule
        sys.modules[name] = module
        installed.append(name)
    return installed


# Importing this module is what the daemon program does first (``transport.daemon``).
install()
