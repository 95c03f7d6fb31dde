"""The daemon program's deferred modules (transport/daemon/_lean.py): ssl and hmac load on use.

Each test runs a fresh interpreter: in this one, pytest and the other tests imported ssl
long ago.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Loads _lean alone (as transport.daemon does first), without importing the package.
LEAN_ALONE = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location(
        "transport.daemon._lean", "transport/daemon/_lean.py"
    )
    lean = sys.modules["transport.daemon._lean"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lean)
    """
)


def run(*parts: str) -> str:
    """Run the code in a fresh interpreter at the repository root; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(textwrap.dedent(part) for part in parts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_importing_trio_leaves_ssl_and_hmac_unloaded() -> None:
    """Trio only names ssl and hmac at import: neither one's code nor OpenSSL is loaded."""
    out = run(
        LEAN_ALONE,
        """
        assert lean.install() == []  # installed on import already: idempotent
        import trio
        print(lean.is_lazy(sys.modules["ssl"]), lean.is_lazy(sys.modules["hmac"]))
        print(sorted(m for m in ("_ssl", "_hashlib", "hashlib") if m in sys.modules))
        """,
    )
    assert out.split("\n")[:2] == ["True True", "[]"]


def test_the_daemon_program_defers_ssl() -> None:
    """Importing transport.daemon installs the hook before trio is imported."""
    out = run(
        """
        import sys
        import transport.daemon
        from transport.daemon import _lean
        print(_lean.is_lazy(sys.modules["ssl"]), "_ssl" in sys.modules)
        """
    )
    assert out.split() == ["True", "False"]


def test_first_use_loads_the_real_module_in_place() -> None:
    """``import ssl`` again costs nothing; the first attribute loads ssl into the same object,
    which every earlier reference (trio's) sees."""
    out = run(
        LEAN_ALONE,
        """
        import types
        import trio._ssl
        import ssl
        lazy = sys.modules["ssl"]
        assert lean.is_lazy(lazy) and ssl is lazy and trio._ssl._stdlib_ssl is lazy
        assert lazy.__name__ == "ssl" and lazy.__spec__.name == "ssl" and lazy.__file__
        assert lean.is_lazy(lazy), "metadata must not load the module"
        from ssl import SSLContext
        assert type(lazy) is types.ModuleType and "_ssl" in sys.modules
        assert trio._ssl._stdlib_ssl.SSLContext is SSLContext
        context = ssl.create_default_context()
        print(type(context).__name__, context.verify_mode == ssl.CERT_REQUIRED)
        """,
    )
    assert out.split() == ["SSLContext", "True"]


def test_concurrent_first_uses_all_see_the_loaded_module() -> None:
    """Threads touching a deferred module at once wait for one load and all succeed."""
    out = run(
        LEAN_ALONE,
        """
        import threading
        import ssl
        barrier = threading.Barrier(8)
        seen = []

        def use():
            barrier.wait()
            seen.append(ssl.PROTOCOL_TLS_CLIENT)

        threads = [threading.Thread(target=use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(len(seen), len(set(seen)), lean.is_lazy(ssl))
        """,
    )
    assert out.split() == ["8", "1", "False"]


def test_a_failed_load_is_raised_and_retried(tmp_path: Path) -> None:
    """A deferred module whose code fails raises at first use, and loads at a later use."""
    (tmp_path / "flaky.py").write_text(
        "import os\nif os.path.exists(os.environ['FAIL']):\n    raise ImportError('not now')\n"
        "VALUE = 42\n"
    )
    fail = tmp_path / "fail"
    fail.touch()
    out = run(
        LEAN_ALONE,
        f"""
        import os
        sys.path.insert(0, {str(tmp_path)!r})
        os.environ["FAIL"] = {str(fail)!r}
        lean.LAZY_MODULES = {{"flaky": "os"}}
        assert lean.install() == ["flaky"]
        import flaky
        try:
            flaky.VALUE
        except ImportError as exc:
            print("failed:", exc)
        os.unlink(os.environ["FAIL"])
        print(flaky.VALUE, lean.is_lazy(flaky))
        """,
    )
    assert out.splitlines() == ["failed: not now", "42 False"]


def test_modules_already_imported_are_left_alone() -> None:
    """install() skips a module that is already loaded."""
    out = run(
        """
        import ssl, sys, importlib.util
        spec = importlib.util.spec_from_file_location("lean", "transport/daemon/_lean.py")
        lean = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lean)
        print(sys.modules["ssl"] is ssl, lean.is_lazy(ssl), lean.install())
        """
    )
    assert out.split() == ["True", "False", "[]"]


def test_https_probes_and_downloads_work_with_the_deferred_modules() -> None:
    """The HTTPS health-probe tests and the update download tests pass in an interpreter
    whose ssl and hmac were deferred first, as in the daemon."""
    out = run(
        LEAN_ALONE,
        """
        import pytest
        assert lean.is_lazy(sys.modules["ssl"])
        code = pytest.main([
            "-q", "-p", "no:cacheprovider",
            "tests/supervisor/test_probes.py", "tests/updater/test_download.py",
            "-k", "https or test_download",
        ])
        print("exit", int(code), "lazy", lean.is_lazy(sys.modules["ssl"]))
        """,
    )
    assert out.splitlines()[-1] == "exit 0 lazy False"
