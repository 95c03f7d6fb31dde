"""The layout of the whole project: who may import whom, small modules, pure decisions.

* Import direction (house style 4.1): ``supervisor``, ``collectors`` and ``updater`` are
  siblings that import none of the others; ``transport`` (the wiring, the daemon program
  and the Manager) is the only package that imports the other three; nothing imports
  ``transport``.
* Every module has at most 600 non-blank lines (generated code excepted).
* The pure modules of ``collectors``, ``updater`` and ``transport`` import no IO, directly
  or through a sibling (``supervisor``'s are checked by tests/supervisor/test_fitness.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("supervisor", "collectors", "updater", "transport")
GENERATED = ROOT / "transport" / "_pb"
MAX_LINES = 600

#: Which packages each package may import.
ALLOWED = {
    "supervisor": set(),
    "collectors": set(),
    "updater": set(),
    "transport": {"supervisor", "collectors", "updater"},
}

PURE = {
    "collectors._build",
    "collectors._collector",
    "collectors._config",
    "collectors._duration",
    "collectors._errors",
    "collectors._metric_data",
    "collectors._rates",
    "collectors._schedule",
    "updater._config",
    "updater._duration",
    "updater._errors",
    "updater._plan",
    "updater._replay",
    "updater._request",
    "updater._retention",
    "updater._url",
    "updater._verify",
    "transport._convert",
    "transport._errors",
    "transport.daemon._redact",
    "transport.daemon._retry",
    "transport.daemon._spool_policy",
    "transport.daemon._report_schedule",
    "transport.daemon._metric_keys",
    "transport.daemon._agent_states",
    "transport.manager._model",
    "transport.manager._errors",
    "transport.manager._downsample",
    "transport.manager._pool_policy",
    "transport.manager._validate",
}
IO = {"trio", "os", "socket", "psutil", "subprocess", "select", "threading", "grpc"}


def modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if GENERATED not in path.parents:
                found.append(path)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, typing: bool = True) -> set[str]:
    """The modules ``path`` imports, relative ones resolved; ``from . import x`` counts as
    ``package.x`` only. Without ``typing``, imports under ``if TYPE_CHECKING:`` are left
    out (they never run)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if not typing:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(id(inner) for child in node.body for inner in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if node.module:
                found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path: Path) -> None:
    """A package imports only the packages it may (transport: the other three)."""
    own = module_name(path).split(".")[0]
    others = {m.split(".")[0] for m in imports(path)} & set(PACKAGES) - {own}
    assert others <= ALLOWED[own], f"{path.relative_to(ROOT)} imports {sorted(others)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    """No module past 600 non-blank lines: split it along a real seam."""
    lines = sum(1 for line in path.read_text().splitlines() if line.strip())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} non-blank lines"


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_modules_do_no_io(name: str) -> None:
    """A decision module imports no IO, not even through a sibling it imports."""
    by_name = {module_name(path): path for path in modules()}
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen or current not in by_name:
            continue
        seen.add(current)
        found = imports(by_name[current], typing=False)
        bad = {m for m in found if m.split(".")[0] in IO}
        assert not bad, f"{name} reaches IO through {current}: {sorted(bad)}"
        pending.extend(m for m in found if m in by_name)
