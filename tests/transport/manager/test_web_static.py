"""The web console's files, served by the Manager's real app over a real HTTP server.

The console is crawled from ``/`` the way a browser loads it: every ``src``/``href`` of
the page, every ES module ``import``/``export ... from`` and every CSS ``url()``/``@import``
is fetched and must answer 200 with its content type and the console's security headers.
No file may reference another origin (fleets are often offline: no CDN), the vendored chart
library ships with its licence, the page's selectors for the browser tests are present,
and pyproject's package data ships every file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.transport.manager.fleet_helpers import World, fleet
from transport.manager._web import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, STATIC_DIR

ROOT = Path(__file__).resolve().parents[3]
WEB_PACKAGE = STATIC_DIR.parent

CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
}
_JS_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]""", re.M)
_JS_BARE_IMPORT = re.compile(r"""^\s*import\s*['"]([^'"]+)['"]""", re.M)
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")
_REMOTE = re.compile(r"^([a-z][a-z0-9+.-]*:)?//", re.I)

#: The browser tests' selectors (design "Test hooks"): fixed ones appear verbatim; the
#: ones ending in "-" are prefixes of ids built from data (e.g. agent-status-<agent_id>).
TEST_IDS = (
    "login-username login-password login-submit login-error nav-dashboard nav-nodes "
    "nav-updates nav-audit nav-users nav-logout session-expired dash-nodes-total "
    "dash-nodes-online dash-nodes-offline dash-agents- dash-alerts dash-top-cpu "
    "dash-top-memory nodes-search nodes-status node-row- nodes-page-info node-facts "
    "node-chart- chart-range- agent-row- agent-status- agent-pid- agent-start- "
    "agent-stop- agent-restart- agent-logs- agent-chart- log-view log-follow "
    "log-download update-form update-nodes update-submit update-row- update-target- "
    "audit-table users-table toast"
)


class _Refs(HTMLParser):
    """The ``src`` and ``href`` values of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            value = values.get(name)
            if value is not None:
                self.refs.append(value)
        if any(name.startswith("on") for name in values) or "style" in values:
            self.inline_styles += 1  # inline handlers and style attributes alike are refused
        if tag == "style":
            self.inline_styles += 1
        self._in_script = tag == "script" and "src" not in values

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def _local(ref: str) -> bool:
    """Whether a reference is fetched from the Manager (not a fragment or ``data:``)."""
    return not (ref.startswith("#") or ref.startswith("data:"))


def _references(path: str, body: str) -> list[str]:
    """What a served file makes the browser fetch (raw references)."""
    if path.endswith(".js"):
        return _JS_IMPORT.findall(body) + _JS_BARE_IMPORT.findall(body)
    if path.endswith(".css"):
        return [a or b for a, b in _CSS_URL.findall(body)]
    parser = _Refs()
    parser.feed(body)
    return parser.refs


def _static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def _check_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (str(response.url), name, response.headers)


@pytest.fixture
async def world(tmp_path: Path, sock_dir: Path) -> AsyncIterator[World]:
    async with fleet(tmp_path, sock_dir) as w:
        yield w


async def test_index_is_served_with_a_strict_policy(world: World) -> None:
    response = await world.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    _check_headers(response)
    policy = {part.split()[0]: part.split()[1:] for part in CONTENT_SECURITY_POLICY.split("; ")}
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert all("unsafe" not in source for sources in policy.values() for source in sources)
    parser = _Refs()
    parser.feed(response.text)
    assert parser.inline_scripts == 0
    assert parser.inline_styles == 0
    head = await world.client.head("/")
    assert head.status_code == 200
    _check_headers(head)


async def test_every_referenced_file_is_served_with_its_type(world: World) -> None:
    base = str(world.client.base_url).rstrip("/") + "/"
    todo = [base]
    seen: set[str] = set()
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        response = await world.client.get(url)
        assert response.status_code == 200, url
        _check_headers(response)
        path = urlsplit(url).path
        suffix = Path(path).suffix or ".html"
        expected = CONTENT_TYPES.get(suffix)
        if expected is not None:
            allowed = {expected, "application/javascript"} if suffix == ".js" else {expected}
            assert response.headers["content-type"].split(";")[0] in allowed, (url, response)
        for ref in _references(path, response.text):
            assert not _REMOTE.match(ref), (url, ref)
            if _local(ref):
                todo.append(urljoin(url, ref))
    fetched = {urlsplit(url).path for url in seen}
    # Every page module and the chart library are reached from the page.
    for name in ("main.js", "api.js", "router.js", "charts.js", "sse.js", "uPlot.esm.js"):
        assert any(path.endswith("/" + name) for path in fetched), (name, sorted(fetched))
    pages = {p.name for p in (STATIC_DIR / "js" / "pages").glob("*.js")}
    assert pages <= {Path(path).name for path in fetched}, sorted(fetched)


async def test_unknown_files_and_escapes_are_not_served(world: World) -> None:
    for path in (
        "/console/js/missing.js",
        "/console/%2e%2e/__init__.py",
        "/console/..%2f__init__.py",
        "/console/static/index.html",
    ):
        response = await world.client.get(path)
        assert response.status_code == 404, path
    # The API keeps its own envelope for unknown routes.
    response = await world.client.get("/api/v1/nope", headers=world.auth(next(iter(world.tokens))))
    assert response.status_code == 404
    assert response.json()["code"] == 1004


def test_no_file_references_another_origin() -> None:
    for path in _static_files():
        if path.suffix not in {".js", ".css", ".html"}:
            continue
        text = path.read_text(encoding="utf-8")
        refs = _references(path.name if path.suffix != ".html" else "x.html", text)
        assert not [ref for ref in refs if _REMOTE.match(ref)], path
        assert "sourceMappingURL=http" not in text, path
        if "vendor" not in path.parts:
            # Our own files name no URL at all (no CDN, no fonts, no analytics).
            assert not re.search(r"https?://", text), path


def test_the_chart_library_ships_with_its_licence() -> None:
    vendor = STATIC_DIR / "vendor"
    licence = (vendor / "uplot" / "LICENSE").read_text(encoding="utf-8")
    assert "MIT" in licence or "Permission is hereby granted" in licence
    readme = (vendor / "README").read_text(encoding="utf-8")
    assert "uplot@1.6.32" in readme
    assert "(v1.6.32)" in (vendor / "uplot" / "uPlot.esm.js").read_text(encoding="utf-8")[:400]


def test_the_browser_tests_selectors_are_present() -> None:
    text = "\n".join(
        path.read_text(encoding="utf-8")
        for path in _static_files()
        if path.suffix in {".js", ".html"} and "vendor" not in path.parts
    )
    missing = [name for name in TEST_IDS.split() if name not in text]
    assert not missing, missing
    # No inline handlers in the page or the scripts' markup.
    assert not re.search(r"\son[a-z]+=", (STATIC_DIR / "index.html").read_text(encoding="utf-8"))


def test_package_data_ships_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = config["tool"]["setuptools"]["package-data"]
    patterns = [*package_data.get("*", []), *package_data.get("transport.manager._web", [])]
    shipped: set[Path] = set()
    for pattern in patterns:
        shipped.update(p for p in WEB_PACKAGE.glob(pattern) if p.is_file())
    missing = [str(p.relative_to(WEB_PACKAGE)) for p in _static_files() if p not in shipped]
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"
