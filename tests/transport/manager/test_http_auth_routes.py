"""The account routes through a real HTTP server on a real SQLite store: login, register,
profile, passwords, users and roles, API tokens, the audit log, and every error code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import httpx
import pytest
import trio
from starlette.applications import Starlette

from tests.transport.manager.http_helpers import envelope, error_of, is_rfc3339, serve_app
from transport.manager._http._auth import Authenticator, AuthSettings, install
from transport.manager._http._envelope import exception_handlers, middleware
from transport.manager._http._users import LoginThrottle, user_routes
from transport.manager._model import Role, User
from transport.manager._store import Store

USER_FIELDS = {
    "id",
    "created_at",
    "updated_at",
    "username",
    "email",
    "phone",
    "real_name",
    "role",
    "status",
    "last_login_at",
    "last_login_ip",
}
PAGE_INFO = {"page", "page_size", "total", "pages", "total_pages"}
T0 = 1_800_000_000.0


class Clock:
    """The authenticator's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """A Manager's account routes served over a fresh SQLite store."""

    store: Store
    auth: Authenticator
    clock: Clock
    client: httpx.AsyncClient

    async def user(self, name: str, role: Role, password: str = "password-1") -> User:
        hashed = await self.auth.hash_password(password)
        return await trio.to_thread.run_sync(
            lambda: self.store.create_user(name, hashed, role=role, now=self.clock())
        )

    async def login(self, name: str, password: str = "password-1") -> dict[str, str]:
        body = {"username": name, "password": password}
        data = envelope(await self.client.post("/api/v1/auth/login", json=body))
        return {"Authorization": f"Bearer {data['token']}"}

    async def audit(self, **filters: str) -> list[dict[str, Any]]:
        page = await trio.to_thread.run_sync(
            lambda: self.store.list_audit(page=1, page_size=100, **filters)
        )
        return [
            {
                "actor": e.actor,
                "action": e.action,
                "outcome": e.outcome,
                "target": e.target,
                "ip": e.source_ip,
            }
            for e in page.items
        ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path}/manager.db")
    try:
        yield store
    finally:
        store.close()


@asynccontextmanager
async def world(
    store: Store, *, allow_register: bool = False, throttle: LoginThrottle | None = None
) -> AsyncIterator[World]:
    clock = Clock()
    settings = AuthSettings(
        jwt_secret="test-secret",
        allow_register=allow_register,
        password_params=argon2.profiles.CHEAPEST,
        expire_s=3600,
    )
    auth = Authenticator(store, settings, clock=clock)
    app = Starlette(
        routes=user_routes(auth, throttle=throttle),
        exception_handlers=exception_handlers(),
        middleware=middleware(),
    )
    install(app, auth)
    async with serve_app(app) as client:
        yield World(store, auth, clock, client)


async def test_login_and_profile(store: Store) -> None:
    async with world(store) as w:
        admin = await w.user("root", Role.ADMIN)
        r = await w.client.post(
            "/api/v1/auth/login", json={"username": "root", "password": "password-1"}
        )
        data = envelope(r)
        assert set(data) == {"token", "user", "expires_at"}
        assert set(data["user"]) == USER_FIELDS
        assert data["user"]["username"] == "root" and data["user"]["role"] == "admin"
        assert data["user"]["last_login_ip"] == "127.0.0.1"
        assert data["user"]["last_login_at"] == "2027-01-15T08:00:00Z"
        assert is_rfc3339(data["user"]["created_at"]) and is_rfc3339(data["expires_at"])
        assert "password" not in r.text and "argon2" not in r.text
        headers = {"Authorization": f"Bearer {data['token']}"}
        profile = envelope(await w.client.get("/api/v1/auth/profile", headers=headers))
        assert profile["user"]["id"] == admin.id and set(profile["user"]) == USER_FIELDS
        assert await w.audit(action="auth.login") == [
            {
                "actor": "root",
                "action": "auth.login",
                "outcome": "ok",
                "target": f"user:{admin.id}",
                "ip": "127.0.0.1",
            }
        ]


async def test_login_failures(store: Store) -> None:
    async with world(store) as w:
        await w.user("amy", Role.VIEWER)
        login = "/api/v1/auth/login"
        wrong = error_of(
            await w.client.post(login, json={"username": "amy", "password": "nope"}), 1009
        )
        unknown = error_of(
            await w.client.post(login, json={"username": "bob", "password": "nope"}), 1009
        )
        assert wrong == unknown
        assert (
            error_of(await w.client.post(login, json={"username": "amy"}), 1001)
            == "password: required"
        )
        assert (
            error_of(await w.client.post(login, json={"password": "x"}), 1001)
            == "username: required"
        )
        assert "invalid JSON" in error_of(await w.client.post(login, content=b"{x"), 1001)
        assert "405" not in error_of(await w.client.get(login), 1004, status=405)
        outcomes = [(e["actor"], e["outcome"]) for e in await w.audit(action="auth.login")]
        assert sorted(outcomes) == [("amy", "failed"), ("bob", "failed")]


async def test_credential_errors(store: Store) -> None:
    async with world(store) as w:
        await w.user("amy", Role.VIEWER)
        headers = await w.login("amy")
        profile = "/api/v1/auth/profile"
        assert "Authorization" in error_of(await w.client.get(profile), 1002)
        for bad in ("Bearer garbage", "Basic YTpi", "Bearer hvt_unknown", "Bearer a.b.c"):
            error_of(await w.client.get(profile, headers={"Authorization": bad}), 1007)
        envelope(await w.client.get(profile, headers=headers))
        w.clock.now += 3600
        assert "expired" in error_of(await w.client.get(profile, headers=headers), 1008)
        other = Authenticator(store, AuthSettings(jwt_secret="another-secret"))
        user = await trio.to_thread.run_sync(store.get_user_by_name, "amy")
        forged = other.issue_jwt(user, "whatever", now=w.clock())
        error_of(await w.client.get(profile, headers={"Authorization": f"Bearer {forged}"}), 1007)


async def test_register(store: Store, tmp_path: Path) -> None:
    body = {"username": "newbie", "password": "long-enough"}
    async with world(store) as w:
        message = error_of(await w.client.post("/api/v1/auth/register", json=body), 1003)
        assert "disabled" in message
    async with world(store, allow_register=True) as w:
        data = envelope(
            await w.client.post("/api/v1/auth/register", json=body), status=201, message="created"
        )
        assert set(data) == {"user"} and set(data["user"]) == USER_FIELDS
        assert data["user"]["role"] == "viewer" and data["user"]["status"] == "active"
        error_of(await w.client.post("/api/v1/auth/register", json=body), 2009)
        second = {"username": "second", "password": "long-enough"}
        envelope(
            await w.client.post("/api/v1/auth/register", json=second), status=201, message="created"
        )
        for bad, field in (
            ({"username": "ab", "password": "long-enough"}, "username"),
            ({"username": "has space", "password": "long-enough"}, "username"),
            ({"username": "okname", "password": "short"}, "password"),
            ({"username": "okname", "password": "long-enough", "email": "nope"}, "email"),
        ):
            message = error_of(await w.client.post("/api/v1/auth/register", json=bad), 1001)
            assert message.startswith(f"{field}: "), message
        await w.login("newbie", "long-enough")
        outcomes = [(e["actor"], e["outcome"]) for e in await w.audit(action="auth.register")]
        assert sorted(outcomes) == [("newbie", "error:2009"), ("newbie", "ok"), ("second", "ok")]


ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/admin/users", None),
    ("POST", "/api/v1/admin/users", {"username": "made", "password": "password-9"}),
    ("POST", "/api/v1/admin/users/{victim}/disable", None),
    ("POST", "/api/v1/admin/users/{victim}/enable", None),
    ("PUT", "/api/v1/admin/users/{victim}/role", {"role": "operator"}),
    ("POST", "/api/v1/admin/users/{victim}/role", {"role": "viewer"}),
    ("POST", "/api/v1/admin/users/{victim}/reset-password", {"password": "password-1"}),
    ("GET", "/api/v1/admin/audit", None),
    ("GET", "/api/v1/tokens?all=true", None),
]


async def test_role_matrix(store: Store) -> None:
    async with world(store) as w:
        victim = await w.user("victim", Role.VIEWER)
        for role in Role:
            await w.user(f"as-{role}", role)
            headers = await w.login(f"as-{role}")
            for method, path, body in ADMIN_CALLS:
                url = path.format(victim=victim.id)
                r = await w.client.request(method, url, json=body, headers=headers)
                if role is Role.ADMIN:
                    assert r.status_code in (200, 201), (method, url, r.text)
                else:
                    assert "admin" in error_of(r, 1003), (role, method, url)
            # every signed-in role reads its profile and its tokens
            envelope(await w.client.get("/api/v1/auth/profile", headers=headers))
            envelope(await w.client.get("/api/v1/tokens", headers=headers))
        denied = await w.audit(action="user.disable")
        assert {(e["actor"], e["outcome"]) for e in denied} == {
            ("as-viewer", "denied"),
            ("as-operator", "denied"),
            ("as-admin", "ok"),
        }


async def test_admin_users(store: Store) -> None:
    async with world(store) as w:
        admin = await w.user("root", Role.ADMIN)
        root = await w.login("root")
        for n in range(24):
            await w.user(f"user{n:02d}", Role.VIEWER)
        data = envelope(
            await w.client.get(
                "/api/v1/admin/users", params={"page": 2, "page_size": 10}, headers=root
            )
        )
        assert set(data) == {"list", "page_info"} and set(data["page_info"]) == PAGE_INFO
        assert data["page_info"] == {
            "page": 2,
            "page_size": 10,
            "total": 25,
            "pages": 3,
            "total_pages": 3,
        }
        assert len(data["list"]) == 10 and all(set(u) == USER_FIELDS for u in data["list"])
        message = error_of(
            await w.client.get("/api/v1/admin/users", params={"page_size": 500}, headers=root), 1001
        )
        assert message.startswith("page_size: ")

        body = {"username": "ops", "password": "password-2", "role": "operator", "email": "o@x"}
        made = envelope(
            await w.client.post("/api/v1/admin/users", json=body, headers=root),
            status=201,
            message="created",
        )
        assert made["user"]["role"] == "operator" and made["user"]["email"] == "o@x"
        error_of(await w.client.post("/api/v1/admin/users", json=body, headers=root), 2009)
        bad = {**body, "username": "other", "role": "king"}
        assert error_of(
            await w.client.post("/api/v1/admin/users", json=bad, headers=root), 1001
        ).startswith("role: ")
        ops_id = made["user"]["id"]
        ops = await w.login("ops", "password-2")

        # disable: the user's JWTs stop at once, and login says disabled
        envelope(await w.client.post(f"/api/v1/admin/users/{ops_id}/disable", headers=root))
        error_of(await w.client.get("/api/v1/auth/profile", headers=ops), 2008)
        login = {"username": "ops", "password": "password-2"}
        error_of(await w.client.post("/api/v1/auth/login", json=login), 2008)
        wrong = {"username": "ops", "password": "password-x"}
        error_of(await w.client.post("/api/v1/auth/login", json=wrong), 1009)
        envelope(await w.client.post(f"/api/v1/admin/users/{ops_id}/enable", headers=root))
        envelope(await w.client.get("/api/v1/auth/profile", headers=ops))

        # a role change applies to the next request, without a new login
        error_of(await w.client.get("/api/v1/admin/users", headers=ops), 1003)
        changed = envelope(
            await w.client.put(
                f"/api/v1/admin/users/{ops_id}/role", json={"role": "admin"}, headers=root
            )
        )
        assert changed["user"]["role"] == "admin"
        envelope(await w.client.get("/api/v1/admin/users", headers=ops))

        # an admin cannot disable or demote themself; unknown users are 2007
        me = f"/api/v1/admin/users/{admin.id}"
        assert "yourself" in error_of(await w.client.post(f"{me}/disable", headers=root), 1001)
        assert "own role" in error_of(
            await w.client.post(f"{me}/role", json={"role": "viewer"}, headers=root), 1001
        )
        for action in ("disable", "enable", "reset-password"):
            error_of(await w.client.post(f"/api/v1/admin/users/999/{action}", headers=root), 2007)
        error_of(
            await w.client.put(
                "/api/v1/admin/users/999/role", json={"role": "viewer"}, headers=root
            ),
            2007,
        )
        error_of(await w.client.post("/api/v1/admin/users/abc/disable", headers=root), 1004)

        # a reset ends the user's sessions; a generated password is answered once
        reset = envelope(
            await w.client.post(f"/api/v1/admin/users/{ops_id}/reset-password", headers=root)
        )
        assert len(reset["password"]) >= 16
        error_of(await w.client.get("/api/v1/auth/profile", headers=ops), 1007)
        await w.login("ops", reset["password"])
        short = {"password": "short"}
        error_of(
            await w.client.post(
                f"/api/v1/admin/users/{ops_id}/reset-password", json=short, headers=root
            ),
            1001,
        )
        actions = {(e["action"], e["outcome"]) for e in await w.audit(actor="root")}
        assert {
            ("user.create", "ok"),
            ("user.create", "error:2009"),
            ("user.disable", "ok"),
            ("user.enable", "ok"),
            ("user.role", "ok"),
            ("user.reset_password", "ok"),
            ("user.disable", "error:1001"),
            ("user.disable", "error:2007"),
        } <= actions


async def test_change_password(store: Store) -> None:
    async with world(store) as w:
        await w.user("amy", Role.VIEWER, "password-1")
        old = await w.login("amy")
        url = "/api/v1/auth/change-password"
        body = {"old_password": "wrong-one", "new_password": "password-2"}
        assert (
            error_of(await w.client.post(url, json=body, headers=old), 1001)
            == "old_password: incorrect"
        )
        body = {"old_password": "password-1", "new_password": "short"}
        assert error_of(await w.client.post(url, json=body, headers=old), 1001).startswith(
            "new_password: "
        )
        error_of(await w.client.post(url, json={"old_password": "password-1"}), 1002)
        body = {"old_password": "password-1", "new_password": "password-2"}
        data = envelope(await w.client.post(url, json=body, headers=old))
        assert set(data) == {"message", "token"}
        error_of(await w.client.get("/api/v1/auth/profile", headers=old), 1007)
        fresh = {"Authorization": f"Bearer {data['token']}"}
        envelope(await w.client.get("/api/v1/auth/profile", headers=fresh))
        await w.login("amy", "password-2")
        error_of(
            await w.client.post(
                "/api/v1/auth/login", json={"username": "amy", "password": "password-1"}
            ),
            1009,
        )
        outcomes = sorted(e["outcome"] for e in await w.audit(action="auth.change_password"))
        assert outcomes == ["error:1001", "error:1001", "ok"]


async def test_api_tokens(store: Store) -> None:
    async with world(store) as w:
        amy = await w.user("amy", Role.OPERATOR)
        await w.user("root", Role.ADMIN)
        await w.user("bob", Role.VIEWER)
        jwt_amy, root, bob = await w.login("amy"), await w.login("root"), await w.login("bob")
        made = envelope(
            await w.client.post("/api/v1/tokens", json={"name": "ci"}, headers=jwt_amy),
            status=201,
            message="created",
        )
        secret = made["token"]
        assert secret.startswith("hvt_") and made["api_token"]["prefix"] == secret[:12]
        assert made["api_token"]["expires_at"] == "2027-04-15T08:00:00Z"
        assert made["api_token"]["user_id"] == amy.id and made["api_token"]["revoked"] is False
        token_id = made["api_token"]["id"]
        amy_token = {"Authorization": f"Bearer {secret}"}
        profile = envelope(await w.client.get("/api/v1/auth/profile", headers=amy_token))
        assert profile["user"]["username"] == "amy"

        listed = envelope(await w.client.get("/api/v1/tokens", headers=jwt_amy))
        assert (
            listed["count"] == 1 and listed["tokens"][0]["last_used_at"] == "2027-01-15T08:00:00Z"
        )
        response = await w.client.get("/api/v1/tokens", headers=amy_token)
        assert secret not in response.text and secret[12:] not in response.text
        assert envelope(await w.client.get("/api/v1/tokens", headers=bob))["count"] == 0
        error_of(await w.client.get("/api/v1/tokens", params={"all": "true"}, headers=bob), 1003)
        assert (
            envelope(await w.client.get("/api/v1/tokens", params={"all": "true"}, headers=root))[
                "count"
            ]
            == 1
        )
        for bad in (
            {},
            {"name": "x", "expires_in_days": 0},
            {"name": "x", "expires_in_days": 3651},
        ):
            error_of(await w.client.post("/api/v1/tokens", json=bad, headers=jwt_amy), 1001)

        # a token stops when its owner is disabled, and after it expires
        amy_url = f"/api/v1/admin/users/{amy.id}"
        envelope(await w.client.post(f"{amy_url}/disable", headers=root))
        error_of(await w.client.get("/api/v1/auth/profile", headers=amy_token), 2008)
        envelope(await w.client.post(f"{amy_url}/enable", headers=root))
        envelope(await w.client.get("/api/v1/auth/profile", headers=amy_token))
        short = envelope(
            await w.client.post(
                "/api/v1/tokens", json={"name": "day", "expires_in_days": 1}, headers=jwt_amy
            ),
            status=201,
            message="created",
        )
        w.clock.now += 86400
        error_of(
            await w.client.get(
                "/api/v1/auth/profile", headers={"Authorization": f"Bearer {short['token']}"}
            ),
            1008,
        )
        error_of(await w.client.get("/api/v1/auth/profile", headers=jwt_amy), 1008)
        jwt_amy, root, bob = await w.login("amy"), await w.login("root"), await w.login("bob")

        # only the owner (or an admin) revokes; a revoked token is refused
        error_of(await w.client.delete(f"/api/v1/tokens/{token_id}", headers=bob), 1004)
        error_of(await w.client.delete("/api/v1/tokens/999", headers=jwt_amy), 1004)
        envelope(await w.client.delete(f"/api/v1/tokens/{token_id}", headers=amy_token))
        assert "revoked" in error_of(
            await w.client.get("/api/v1/auth/profile", headers=amy_token), 1007
        )
        envelope(await w.client.delete(f"/api/v1/tokens/{short['api_token']['id']}", headers=root))
        listed = envelope(await w.client.get("/api/v1/tokens", headers=jwt_amy))
        assert all(t["revoked"] and is_rfc3339(t["revoked_at"]) for t in listed["tokens"])
        actions = sorted(
            (e["action"], e["outcome"])
            for e in await w.audit(actor="amy")
            if e["action"].startswith("token")
        )
        assert actions == [("token.create", "error:1001")] * 3 + [("token.create", "ok")] * 2 + [
            ("token.revoke", "error:1004"),
            ("token.revoke", "ok"),
        ]


async def test_audit_log(store: Store) -> None:
    async with world(store) as w:
        await w.user("root", Role.ADMIN)
        root = await w.login("root")
        for _ in range(3):
            await w.client.post("/api/v1/auth/login", json={"username": "eve", "password": "guess"})
        data = envelope(
            await w.client.get(
                "/api/v1/admin/audit", params={"actor": "eve", "page_size": 2}, headers=root
            )
        )
        assert data["page_info"] == {
            "page": 1,
            "page_size": 2,
            "total": 3,
            "pages": 2,
            "total_pages": 2,
        }
        entry = data["list"][0]
        assert set(entry) == {
            "id",
            "created_at",
            "actor",
            "username",
            "action",
            "target",
            "ip",
            "source_ip",
            "outcome",
            "detail",
        }
        assert entry["actor"] == "eve" and entry["action"] == "auth.login"
        assert entry["outcome"] == "failed" and entry["ip"] == "127.0.0.1" and entry["detail"] == {}
        assert is_rfc3339(entry["created_at"])
        data = envelope(
            await w.client.get("/api/v1/admin/audit", params={"action": "auth.login"}, headers=root)
        )
        assert data["page_info"]["total"] == 4
        error_of(await w.client.get("/api/v1/admin/audit", params={"page": 0}, headers=root), 1001)


async def test_login_throttle(store: Store) -> None:
    throttle = LoginThrottle(per_name=3, per_address=5, window_s=60)
    async with world(store, throttle=throttle) as w:
        await w.user("amy", Role.VIEWER)
        login = "/api/v1/auth/login"
        wrong = {"username": "amy", "password": "wrong-one"}
        for _ in range(3):
            error_of(await w.client.post(login, json=wrong), 1009)
        message = error_of(await w.client.post(login, json=wrong), 1006)
        assert message == "too many failed password attempts; try again in 60 s"
        right = {"username": "amy", "password": "password-1"}
        error_of(await w.client.post(login, json=right), 1006)
        w.clock.now += 60
        envelope(await w.client.post(login, json=right))
        for name in ("x1", "x2", "x3", "x4", "x5"):
            error_of(await w.client.post(login, json={"username": name, "password": "p"}), 1009)
        error_of(await w.client.post(login, json={"username": "x6", "password": "p"}), 1006)
        outcomes = [e["outcome"] for e in await w.audit(action="auth.login")]
        assert outcomes.count("throttled") == 3 and outcomes.count("ok") == 1

        # guessing the old password through change-password counts too
        w.clock.now += 60
        headers = await w.login("amy")
        url = "/api/v1/auth/change-password"
        body = {"old_password": "wrong-one", "new_password": "password-2"}
        for _ in range(3):
            error_of(await w.client.post(url, json=body, headers=headers), 1001)
        error_of(await w.client.post(url, json=body, headers=headers), 1006)
        assert "error:1006" in [e["outcome"] for e in await w.audit(action="auth.change_password")]
