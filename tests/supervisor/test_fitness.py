"""Fitness of the supervisor package: small modules, pure decisions, IO in named places.

Ruff's banned-api list (pyproject.toml) catches a banned import in every module that has
no allowance; it cannot scope a ban to a directory, and an allowance covers a whole file.
These tests check what it cannot: that the pure modules import no IO at all, even
indirectly through a sibling, and that the files allowed one banned API use only that one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import supervisor

PACKAGE = Path(supervisor.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 600  # non-blank lines

#: The decisions: synchronous, time as an argument, no IO (house style 4.6, rule 1).
PURE = {
    "supervisor._backoff",
    "supervisor._duration",
    "supervisor._errors",
    "supervisor._spec",
    "supervisor._lifecycle",
    "supervisor._machine",
    "supervisor._registry",
    "supervisor._health._trackers",
    "supervisor._health._agent_health",
    "supervisor._health._history",
    "supervisor._health._judge",
}
#: What a pure module may not import.
IO = {"trio", "os", "socket", "psutil", "subprocess", "select", "threading"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The modules ``path`` imports, relative imports resolved to absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # ``from . import x`` and ``from pkg import sub`` may name submodules.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def top_levels(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


IMPORTS = {module_name(path): imports(path) for path in MODULES}


def test_modules_stay_small() -> None:
    """No module of the package, sub-packages included, has more than 600 non-blank lines."""
    sizes = {
        module_name(path): sum(1 for line in path.read_text().splitlines() if line.strip())
        for path in MODULES
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_pure_modules_exist() -> None:
    """The list above names real modules (a rename must update it)."""
    assert PURE - set(IMPORTS) == set()


def test_pure_modules_import_no_io() -> None:
    """The pure modules import none of trio, os, socket, psutil (nor other IO modules)."""
    offenders = {name: top_levels(IMPORTS[name]) & IO for name in PURE}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_pure_modules_import_only_pure_siblings() -> None:
    """A pure module reaches no IO through the package either: it imports pure modules only."""
    offenders = {
        name: {imported for imported in IMPORTS[name] if imported in IMPORTS} - PURE
        for name in PURE
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_psutil_stays_out_of_the_core() -> None:
    """No module of the supervisor imports psutil: /proc is read by supervisor._proc."""
    assert sorted(name for name, found in IMPORTS.items() if "psutil" in top_levels(found)) == []


def test_processes_are_spawned_in_one_module() -> None:
    """Only supervisor._process imports subprocess."""
    users = sorted(name for name, found in IMPORTS.items() if "subprocess" in top_levels(found))
    assert users == ["supervisor._process"]


def test_no_blocking_sleep() -> None:
    """Nothing in the package calls time.sleep (it would stall every agent's task)."""
    users = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "sleep"
                and isinstance(node.value, ast.Name)
                and node.value.id == "time"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "time"
                and any(alias.name == "sleep" for alias in node.names)
            ):
                users.add(module_name(path))
    assert users == set()


def test_the_library_imports_no_sibling_package() -> None:
    """supervisor imports none of collectors, updater and transport (transport imports it)."""
    siblings = {"collectors", "updater", "transport"}
    offenders = {name: top_levels(found) & siblings for name, found in IMPORTS.items()}
    assert {name: found for name, found in offenders.items() if found} == {}
