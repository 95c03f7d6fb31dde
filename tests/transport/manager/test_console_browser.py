"""The web console in a real browser (issue #14): headless Debian Chromium driven by
Playwright against a real Manager (``python -m transport.manager run``), two real daemons
(``hostvisor run`` reporting to it) and their real agents.

What is checked: logging in (a bad password is refused on the page, a good one lands on the
dashboard); the dashboard's numbers are the database's; the node page lists the agents with
their pids; pressing stop stops the real agent process and the page shows it stopped without
a reload (a marker set on ``window`` before survives), start brings it back; the log viewer
shows a line the agent writes after it was opened; a viewer has no stop button and the API
refuses a forced call (403, code 1003); an expired session goes back to the login page.
Selectors are the design's ``data-testid`` values. Waits are Playwright's (a condition with
a timeout as a safety net), never a fixed sleep.

Screenshots (full page, PNG) of every page -- login, dashboard, nodes, node, log viewer,
updates, audit, users -- are written to ``$HOSTVISOR_ARTIFACTS`` when set, else to
``tests/artifacts/console/`` (gitignored), for a reviewer to look at.

Without ``/usr/bin/chromium`` (Debian's ``chromium`` package) or the ``playwright`` package
the module is skipped, unless ``HOSTVISOR_REQUIRE_BROWSER`` is set (as ``.ci/run`` does), in
which case it fails. Everything started is stopped at the end, and checked to be gone.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.supervisor.helpers import alive
from transport.manager._config import parse_config
from transport.manager._run import auth_settings, open_store

from .browser_helpers import (
    PASSWORD,
    REQUIRE_ENV,
    SAFETY_S,
    ManagerProcess,
    Node,
    artifacts_dir,
    echo_agent,
    open_browser,
    processes_using,
    screenshot,
    sleeper_agent,
    wait_for,
    write_line,
)

try:
    from playwright.sync_api import BrowserContext, Page, expect
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get(REQUIRE_ENV):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

pytestmark = pytest.mark.slow

NODE_A, NODE_B = "node-a", "node-b"
USERS = {"admin": "admin", "oper": "operator", "viewer": "viewer"}
WAIT_MS = SAFETY_S * 1000 / 3
expect.set_options(timeout=WAIT_MS)


@dataclass
class World:
    """The running Manager, nodes and browser of the module."""

    manager: ManagerProcess
    node_a: Node
    node_b: Node
    fifo: Path

    @property
    def url(self) -> str:
        return self.manager.http + "/"

    admin_token: str = ""

    def agent_statuses(self, node_id: str) -> dict[str, str]:
        """The agents' statuses as the REST API has them (stored from the daemon's syncs)."""
        self.admin_token = self.admin_token or self.manager.token("admin")
        with self.manager.api(self.admin_token) as api:
            response = api.get(f"/api/v1/nodes/{node_id}/agents")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["data"]["agents"]
        return {row["agent_id"]: row["status"] for row in rows}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A Manager with three users, two daemons (node-a: worker and echo; node-b: beta)
    registered with their agents running, and a browser. Stopped and checked at the end."""
    tmp = tmp_path_factory.mktemp("console")
    fifo = tmp / "echo.fifo"
    os.mkfifo(fifo)
    (tmp / "manager").mkdir()
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    manager = ManagerProcess(tmp / "manager", USERS)
    node_a = Node(tmp / "a", NODE_A, [sleeper_agent("worker"), echo_agent("echo", fifo)])
    node_b = Node(tmp / "b", NODE_B, [sleeper_agent("beta")])
    try:
        manager.start()
        node_a.start(manager.grpc)
        node_b.start(manager.grpc)
        world = World(manager, node_a, node_b, fifo)
        for node, names in ((NODE_A, {"worker", "echo"}), (NODE_B, {"beta"})):
            ready = functools.partial(all_running, world, node, names)
            wait_for(ready, f"{node}'s agents to be registered and running")
        yield world
    finally:
        codes = (node_a.stop(), node_b.stop(), manager.stop())
    assert codes[:2] == (0, 0), node_a.log() + node_b.log()
    assert codes[2] == 0, manager.log()
    assert not processes_using(str(tmp)), "a process of the test outlived it"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile (closed, and checked gone, at the end)."""
    (artifacts_dir() / "browser-console.log").unlink(missing_ok=True)  # this run's only
    with open_browser(tmp_path_factory.mktemp("chromium")) as context:
        yield context


def all_running(world: World, node_id: str, names: set[str]) -> bool:
    try:
        statuses = world.agent_statuses(node_id)
    except AssertionError:  # the node is not registered yet
        return False
    if not names <= {name for name, status in statuses.items() if status == "running"}:
        return False
    with open_store(parse_config(world.manager.document)) as store:
        latest = store.latest_metrics(node_id)  # the dashboard's top lists need them
    return latest.get("cpu") is not None and latest.get("memory") is not None


# --------------------------------------------------------------------------- page helpers


def number(value: int) -> re.Pattern[str]:
    """An element's text showing ``value`` as a whole number."""
    return re.compile(rf"(?<![\d.]){value}(?![\d.])")


def node_link(node_id: str) -> str:
    """A link to a node's page (a CSS selector)."""
    return f'a[href="#/nodes/{node_id}"]'


def open_page(browser: BrowserContext) -> Page:
    """A new tab (its own sessionStorage: logged out) accepting every confirm dialog."""
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.on("console", lambda message: note_console(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: note_console(f"page error: {error}"))
    return page


def note_console(text: str) -> None:
    """Keep what the pages said on their console beside the screenshots (for diagnosis)."""
    with (artifacts_dir() / "browser-console.log").open("a") as log:
        log.write(text + "\n")


def log_in(world: World, page: Page, username: str) -> Page:
    """Log in on ``page``'s login page; return it once it shows the dashboard."""
    page.goto(world.url + "#/login")
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("dash-nodes-total")).to_be_visible()
    return page


def open_node(page: Page, world: World, node_id: str) -> None:
    """Go to a node's page (a hash route: no reload) and wait for its agents."""
    page.goto(world.url + f"#/nodes/{node_id}")
    expect(page.get_by_test_id("node-facts")).to_be_visible()


@pytest.fixture
def page(world: World, browser: BrowserContext) -> Iterator[Page]:
    """A tab logged in as the operator, closed afterwards."""
    tab = log_in(world, open_page(browser), "oper")
    yield tab
    tab.close()


# --------------------------------------------------------------------------- tests


def test_login_refuses_a_bad_password_and_lands_on_the_dashboard(
    world: World, browser: BrowserContext
) -> None:
    page = open_page(browser)
    try:
        page.goto(world.url)
        expect(page.get_by_test_id("login-username")).to_be_visible()  # not logged in yet
        page.get_by_test_id("login-username").fill("admin")
        page.get_by_test_id("login-password").fill("not the password")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("login-error")).to_be_visible()
        expect(page.get_by_test_id("dash-nodes-total")).to_have_count(0)
        log_in(world, page, "admin")
        expect(page.get_by_test_id("nav-dashboard")).to_be_visible()
    finally:
        page.close()


def test_the_dashboard_shows_the_databases_numbers(world: World, page: Page) -> None:
    """The counts are waited for (the page may render before its data), then compared
    with the store's own counts read from the database file."""
    config = parse_config(world.manager.document)
    with open_store(config) as store:
        nodes = store.node_counts(online_since=time.time() - 180)
        agents = store.agent_counts()
    assert (nodes["total"], nodes["online"], agents.get("running")) == (2, 2, 3)
    for name in ("total", "online", "offline"):
        expect(page.get_by_test_id(f"dash-nodes-{name}")).to_have_text(number(nodes[name]))
    expect(page.get_by_test_id("dash-agents-running")).to_have_text(number(agents["running"]))
    for hook in ("dash-alerts", "dash-top-cpu", "dash-top-memory"):
        expect(page.get_by_test_id(hook)).to_be_attached()
    # Both online nodes report CPU usage: both are in the top lists, linked to their pages.
    for hook in ("dash-top-cpu", "dash-top-memory"):
        for node_id in (NODE_A, NODE_B):
            expect(page.get_by_test_id(hook).locator(node_link(node_id))).to_be_visible()


def test_the_node_page_lists_the_agents(world: World, page: Page) -> None:
    page.get_by_test_id("nav-nodes").click()
    expect(page.get_by_test_id(f"node-row-{NODE_A}")).to_be_visible()
    expect(page.get_by_test_id(f"node-row-{NODE_B}")).to_be_visible()
    page.get_by_test_id("nodes-search").fill(NODE_B)  # a search narrows the list
    expect(page.get_by_test_id(f"node-row-{NODE_A}")).to_have_count(0)
    expect(page.get_by_test_id(f"node-row-{NODE_B}")).to_be_visible()
    page.get_by_test_id("nodes-search").fill("")
    page.get_by_test_id(f"node-row-{NODE_A}").locator(node_link(NODE_A)).first.click()
    expect(page.get_by_test_id("node-facts")).to_contain_text(NODE_A)
    pids = world.node_a.pids()
    for agent_id in ("worker", "echo"):
        expect(page.get_by_test_id(f"agent-row-{agent_id}")).to_be_visible()
        expect(page.get_by_test_id(f"agent-status-{agent_id}")).to_contain_text("running")
        expect(page.get_by_test_id(f"agent-pid-{agent_id}")).to_have_text(number(pids[agent_id]))
    expect(page.get_by_test_id("agent-row-beta")).to_have_count(0)  # node-b's


def test_stop_and_start_a_real_agent_without_a_reload(world: World, page: Page) -> None:
    open_node(page, world, NODE_A)
    status = page.get_by_test_id("agent-status-worker")
    expect(status).to_contain_text("running")
    pid = world.node_a.pids()["worker"]
    assert alive(pid)
    marker = secrets.token_hex(8)
    page.evaluate("marker => { window.__hostvisorMarker = marker; }", marker)
    url = page.url

    page.get_by_test_id("agent-stop-worker").click()
    wait_for(lambda: not alive(pid), "the worker process to exit")
    expect(status).to_contain_text("stopped")
    assert page.evaluate("() => window.__hostvisorMarker") == marker  # the same document
    assert page.url == url

    page.get_by_test_id("agent-start-worker").click()
    expect(status).to_contain_text("running")
    wait_for(lambda: world.node_a.pids().get("worker", pid) != pid, "a new worker pid")
    new_pid = world.node_a.pids()["worker"]
    assert alive(new_pid)
    expect(page.get_by_test_id("agent-pid-worker")).to_have_text(number(new_pid))
    assert page.evaluate("() => window.__hostvisorMarker") == marker


def test_the_node_page_follows_changes_made_elsewhere(world: World, page: Page) -> None:
    """Another user stops and starts the agent through the API: the open page shows each
    change as the Manager's event stream tells it, without a reload."""
    open_node(page, world, NODE_A)
    status = page.get_by_test_id("agent-status-worker")
    expect(status).to_contain_text("running")
    page.evaluate("() => { window.__hostvisorMarker = 'elsewhere'; }")
    pid = world.node_a.pids()["worker"]
    with world.manager.api(world.manager.token("admin")) as api:
        for operation, shown in (("stop", "stopped"), ("start", "running")):
            path = f"/api/v1/nodes/{NODE_A}/agents/worker/operate"
            response = api.post(path, json={"operation": operation})
            assert response.status_code == 200, response.text
            expect(status).to_contain_text(shown)
    assert not alive(pid)
    assert page.evaluate("() => window.__hostvisorMarker") == "elsewhere"


def test_the_log_viewer_shows_a_line_just_written(world: World, page: Page) -> None:
    open_node(page, world, NODE_A)
    page.get_by_test_id("agent-logs-echo").click()
    view = page.get_by_test_id("log-view")
    expect(view).to_contain_text("echo")  # the history: its "ready" line
    expect(view).to_contain_text("ready")
    token = f"token-{secrets.token_hex(8)}"
    expect(view).not_to_contain_text(token)
    write_line(world.fifo, token)  # the agent prints it now, after the viewer opened
    expect(view).to_contain_text(f"echo says {token}")


def test_a_viewer_has_no_stop_button_and_the_api_refuses(
    world: World, browser: BrowserContext
) -> None:
    page = log_in(world, open_page(browser), "viewer")
    try:
        open_node(page, world, NODE_A)
        expect(page.get_by_test_id("agent-status-worker")).to_contain_text("running")
        for action in ("stop", "start", "restart"):
            expect(page.get_by_test_id(f"agent-{action}-worker")).to_have_count(0)
    finally:
        page.close()
    pid = world.node_a.pids()["worker"]
    with world.manager.api(world.manager.token("viewer")) as api:
        forced = api.post(
            f"/api/v1/nodes/{NODE_A}/agents/worker/operate", json={"operation": "stop"}
        )
    assert forced.status_code == 403, forced.text
    assert forced.json()["code"] == 1003
    assert alive(pid) and world.agent_statuses(NODE_A)["worker"] == "running"


def test_an_expired_session_goes_back_to_the_login_page(world: World, page: Page) -> None:
    """The tab's JWT is replaced by one of the same user that expired an hour ago
    (signed with the Manager's secret), then the page asks the API for something."""
    config = parse_config(world.manager.document)
    settings = auth_settings(config)
    with open_store(config) as store:
        from transport.manager._http._auth import Authenticator

        user, stored = store.credentials("oper")
        past = time.time() - settings.expire_s - 3600
        expired = Authenticator(store, settings).issue_jwt(user, stored, now=past)
    replaced = page.evaluate(
        """expired => {
            let n = 0;
            for (const key of Object.keys(sessionStorage)) {
                if (sessionStorage.getItem(key).includes("eyJ")) {
                    sessionStorage.setItem(key, sessionStorage.getItem(key).replace(
                        /eyJ[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]*/, expired));
                    n += 1;
                }
            }
            return n;
        }""",
        expired,
    )
    assert replaced >= 1, "no JWT in sessionStorage"
    page.goto(world.url + "#/nodes")
    expect(page.get_by_test_id("session-expired")).to_be_visible()
    expect(page.get_by_test_id("login-username")).to_be_visible()


def test_every_page_has_a_screenshot(world: World, browser: BrowserContext) -> None:
    """Login, dashboard, nodes, node, log viewer, updates, audit and users, as an admin,
    each once its data is on the page."""
    page = open_page(browser)
    try:
        page.goto(world.url + "#/login")
        expect(page.get_by_test_id("login-submit")).to_be_visible()
        screenshot(page, "01-login")
        log_in(world, page, "admin")
        expect(page.get_by_test_id("dash-nodes-total")).to_have_text(number(2))
        expect(page.get_by_test_id("dash-top-cpu").locator(node_link(NODE_B))).to_be_visible()
        screenshot(page, "02-dashboard")
        page.get_by_test_id("nav-nodes").click()
        expect(page.get_by_test_id(f"node-row-{NODE_B}")).to_be_visible()
        screenshot(page, "03-nodes")
        page.get_by_test_id(f"node-row-{NODE_A}").locator(node_link(NODE_A)).first.click()
        expect(page.get_by_test_id("agent-status-echo")).to_contain_text("running")
        expect(page.get_by_test_id("node-chart-cpu")).to_be_visible()
        screenshot(page, "04-node")
        page.get_by_test_id("agent-logs-echo").click()
        expect(page.get_by_test_id("log-view")).to_contain_text("ready")
        screenshot(page, "05-log-viewer")
        screenshot_after(page, "nav-updates", "update-form", "06-updates")
        screenshot_after(page, "nav-audit", "audit-table", "07-audit")
        screenshot_after(page, "nav-users", "users-table", "08-users")
        expect(page.get_by_test_id("users-table")).to_contain_text("viewer")
    finally:
        page.close()


def screenshot_after(page: Page, nav: str, hook: str, name: str) -> None:
    """Click a navigation link, wait for the page's main element, take the screenshot."""
    page.get_by_test_id(nav).click()
    expect(page.get_by_test_id(hook)).to_be_visible()
    screenshot(page, name)
