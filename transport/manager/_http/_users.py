"""The REST routes of accounts: login, registration, profile, users, API tokens, audit log.

Theory of operation
-------------------
:func:`user_routes` returns Starlette routes under ``/api/v1`` for the original Manager's
auth and admin endpoints (same paths, bodies and ``data`` shapes, so its console logs in
and lists users unchanged) and ours beside them: creating users, roles, password resets,
API tokens and the audit log. Every route authenticates through :mod:`._auth` (the stored
user is checked on every request), and every state-changing route runs inside
:func:`~._auth.audited`, so the audit log records who did what, from where, and how it
ended; logins are audited here, failed ones too (actor: the name tried).

Differences from the original, on purpose: registration is off unless
``auth.allow_register`` (then it creates viewers, never operators); passwords need 8
characters; a wrong old password is 1001 (400), not a 401 that would log the console out;
an admin cannot disable or demote themself, so an active admin always remains; changing a
password ends the JWTs issued before it (``change-password`` answers a fresh ``token``).
"""

from __future__ import annotations

import math
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from transport.manager._errors import ConflictError, NotFoundError
from transport.manager._http._auth import (
    Authenticator,
    audited,
    check_active,
    client_ip,
)
from transport.manager._http._envelope import (
    ApiError,
    ErrorCode,
    Fields,
    json_body,
    ok,
    page_ok,
    paging,
    query_str,
)
from transport.manager._http._json import audit_json, rfc3339, token_json, user_json
from transport.manager._model import Role, User, UserStatus

__all__ = ["MIN_PASSWORD", "USERNAME_RULE", "LoginThrottle", "user_routes", "valid_username"]

MIN_PASSWORD = 8
"""The fewest characters a new password may have (the original allows 6)."""
_MAX_PASSWORD = 128
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,49}$")
_ROLES = tuple(str(role) for role in Role)
_MAX_TOKEN_DAYS = 3650


USERNAME_RULE = (
    "3 to 50 characters: letters, digits, '.', '_', '@', '-' (starting with a letter or digit)"
)
"""What a user name may be, in words (for error messages)."""


def valid_username(name: str) -> bool:
    """Whether ``name`` follows :data:`USERNAME_RULE`."""
    return _USERNAME.match(name) is not None


def _username(fields: Fields) -> str:
    name = fields.text("username", max_len=50)
    if not valid_username(name):
        raise ApiError(ErrorCode.INVALID_PARAMS, f"username: {USERNAME_RULE}")
    return name


def _new_password(fields: Fields, name: str) -> str:
    return fields.text(name, min_len=MIN_PASSWORD, max_len=_MAX_PASSWORD)


def _email(fields: Fields) -> str:
    email = fields.text("email", required=False, max_len=100).strip()
    if email and (email.count("@") != 1 or email.startswith("@") or email.endswith("@")):
        raise ApiError(ErrorCode.INVALID_PARAMS, f"email: not an address: {email[:40]!r}")
    return email


def _user_id(request: Request) -> int:
    value: int = request.path_params["user_id"]
    if value < 1:
        raise ApiError(ErrorCode.INVALID_PARAMS, "id: expected a positive integer")
    return value


class LoginThrottle:
    """Failed logins counted per (user name, address) and per address, in a sliding window.

    Pure (``now`` is a parameter) and in memory: each Manager process counts its own.
    Keying on the name together with the address means an attacker elsewhere cannot lock
    a user out; the per-address count bounds guessing over many names. Memory is bounded:
    at most ``max_keys`` keys (the least recently failed are forgotten first), each with at
    most its limit of timestamps.

    Args:
        per_name: Failures allowed per (name, address) within ``window_s``.
        per_address: Failures allowed per address within ``window_s``.
        window_s: The window, seconds.
        max_keys: The most keys remembered.
    """

    def __init__(
        self,
        *,
        per_name: int = 10,
        per_address: int = 50,
        window_s: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        self.window_s = window_s
        self._limits = {"name": per_name, "address": per_address}
        self._max_keys = max_keys
        self._failures: dict[tuple[str, ...], deque[float]] = {}

    def _keys(self, name: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        return [
            (("name", name, address), self._limits["name"]),
            (("address", address), self._limits["address"]),
        ]

    def retry_after(self, name: str, address: str, *, now: float) -> float:
        """How long until a login of ``name`` from ``address`` may be tried; 0: now.

        Args:
            name: The user name tried.
            address: The client's address.
            now: Seconds (any monotonic-enough clock, the same for every call).

        Returns:
            Seconds to wait (0 when allowed).
        """
        wait = 0.0
        for key, limit in self._keys(name, address):
            times = self._failures.get(key)
            if times is None:
                continue
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) >= limit:
                # min(): in floats, times[0] + window - now can exceed the window by an ulp.
                wait = max(wait, min(self.window_s, times[0] + self.window_s - now))
        return wait

    def failed(self, name: str, address: str, *, now: float) -> None:
        """Count a failed login.

        Args:
            name: The user name tried.
            address: The client's address.
            now: Seconds, as for :meth:`retry_after`.
        """
        for key, limit in self._keys(name, address):
            times = self._failures.pop(key, None) or deque(maxlen=limit)
            times.append(now)
            self._failures[key] = times
        while len(self._failures) > self._max_keys:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, name: str, address: str) -> None:
        """Forget the failures of ``name`` from ``address`` (not the address's own).

        Args:
            name: The user name.
            address: The client's address.
        """
        self._failures.pop(("name", name, address), None)


class _Routes:
    """The handlers, sharing one :class:`Authenticator`."""

    def __init__(self, auth: Authenticator, throttle: LoginThrottle) -> None:
        self.auth = auth
        self.store = auth.store
        self.throttle = throttle

    async def _user(self, user_id: int) -> User:
        try:
            return await self.auth.run(self.store.get_user, user_id)
        except NotFoundError:
            raise ApiError(ErrorCode.USER_NOT_FOUND, f"user {user_id} not found") from None

    def _check_throttle(self, name: str, ip: str) -> None:
        wait = self.throttle.retry_after(name, ip, now=self.auth.clock())
        if wait > 0:
            raise ApiError(
                ErrorCode.TOO_MANY_REQUESTS,
                f"too many failed password attempts; try again in {math.ceil(wait)} s",
            )

    # --- /auth ---------------------------------------------------------------------------

    async def login(self, request: Request) -> JSONResponse:
        """``POST /auth/login {username, password}`` → ``{token, user, expires_at}``."""
        fields = Fields(await json_body(request))
        username = fields.text("username", max_len=100)
        password = fields.text("password", max_len=1024)
        ip = client_ip(request)
        try:
            self._check_throttle(username, ip)
        except ApiError:
            await self.auth.audit(request, username, "auth.login", outcome="throttled")
            raise
        user, stored = await self.auth.check_password(username, password)
        if user is None:
            self.throttle.failed(username, ip, now=self.auth.clock())
            await self.auth.audit(request, username, "auth.login", outcome="failed")
            raise ApiError(ErrorCode.INVALID_CREDENTIALS, "invalid username or password")
        self.throttle.succeeded(username, ip)
        try:
            check_active(user)
        except ApiError:
            await self.auth.audit(request, username, "auth.login", outcome="denied")
            raise
        now = self.auth.clock()
        if self.auth.needs_rehash(stored):
            stored = await self.auth.hash_password(password)
            await self.auth.run(self.store.set_password, user.id, stored, now=now)
        user = await self.auth.run(self.store.record_login, user.id, ip=ip, now=now)
        await self.auth.audit(request, username, "auth.login", target=f"user:{user.id}")
        token = self.auth.issue_jwt(user, stored, now=now)
        expires = rfc3339(now + self.auth.settings.expire_s)
        return ok({"token": token, "user": user_json(user), "expires_at": expires})

    async def register(self, request: Request) -> JSONResponse:
        """``POST /auth/register {username, password, email?}`` → 201 ``{user}`` (a viewer)."""
        if not self.auth.settings.allow_register:
            raise ApiError(
                ErrorCode.FORBIDDEN,
                "registration is disabled on this Manager (auth.allow_register); "
                "ask an administrator for an account",
            )
        fields = Fields(await json_body(request))
        username = _username(fields)
        password = _new_password(fields, "password")
        email = _email(fields)
        hashed = await self.auth.hash_password(password)
        try:
            user = await self.auth.run(
                self.store.create_user,
                username,
                hashed,
                role=Role.VIEWER,
                email=email,
                now=self.auth.clock(),
            )
        except ConflictError:
            await self.auth.audit(request, username, "auth.register", outcome="error:2009")
            raise ApiError(ErrorCode.USER_EXISTS, f"user {username} already exists") from None
        await self.auth.audit(request, username, "auth.register", target=f"user:{user.id}")
        return ok({"user": user_json(user)}, status=201, message="created")

    async def profile(self, request: Request) -> JSONResponse:
        """``GET /auth/profile`` → ``{user}``."""
        who = await self.auth.principal(request, Role.VIEWER)
        return ok({"user": user_json(who.user)})

    async def change_password(self, request: Request) -> JSONResponse:
        """``POST /auth/change-password {old_password, new_password}`` → ``{message, token}``."""
        async with audited(request, Role.VIEWER, "auth.change_password") as act:
            act.target = f"user:{act.principal.user.id}"
            fields = Fields(await json_body(request))
            old = fields.text("old_password", max_len=1024)
            new = _new_password(fields, "new_password")
            name, ip = act.principal.name, client_ip(request)
            self._check_throttle(name, ip)
            user, _ = await self.auth.check_password(name, old)
            if user is None or user.id != act.principal.user.id:
                self.throttle.failed(name, ip, now=self.auth.clock())
                raise ApiError(ErrorCode.INVALID_PARAMS, "old_password: incorrect")
            stored = await self.auth.hash_password(new)
            now = self.auth.clock()
            await self.auth.run(self.store.set_password, user.id, stored, now=now)
            token = self.auth.issue_jwt(user, stored, now=now)
        return ok({"message": "password changed; earlier logins have ended", "token": token})

    # --- /admin/users --------------------------------------------------------------------

    async def list_users(self, request: Request) -> JSONResponse:
        """``GET /admin/users?page&page_size`` → a page of users (admin)."""
        await self.auth.principal(request, Role.ADMIN)
        page, size = paging(request)
        users = await self.auth.run(self.store.list_users, page=page, page_size=size)
        return page_ok(users, user_json)

    async def create_user(self, request: Request) -> JSONResponse:
        """``POST /admin/users {username, password, role?, email?}`` → 201 ``{user}`` (admin)."""
        async with audited(request, Role.ADMIN, "user.create") as act:
            fields = Fields(await json_body(request))
            username = _username(fields)
            act.target = f"username:{username}"
            password = _new_password(fields, "password")
            role = Role(fields.text("role", required=False, default="viewer", choices=_ROLES))
            email = _email(fields)
            act.detail["role"] = str(role)
            hashed = await self.auth.hash_password(password)
            try:
                user = await self.auth.run(
                    self.store.create_user,
                    username,
                    hashed,
                    role=role,
                    email=email,
                    now=self.auth.clock(),
                )
            except ConflictError:
                raise ApiError(ErrorCode.USER_EXISTS, f"user {username} already exists") from None
            act.target = f"user:{user.id}"
        return ok({"user": user_json(user)}, status=201, message="created")

    async def _set_status(self, request: Request, status: UserStatus) -> JSONResponse:
        user_id = _user_id(request)
        verb = "disable" if status is UserStatus.DISABLED else "enable"
        async with audited(request, Role.ADMIN, f"user.{verb}", target=f"user:{user_id}") as act:
            if status is UserStatus.DISABLED and user_id == act.principal.user.id:
                raise ApiError(ErrorCode.INVALID_PARAMS, "id: you cannot disable yourself")
            await self._user(user_id)
            await self.auth.run(self.store.set_user_status, user_id, status, now=self.auth.clock())
        return ok({"message": f"user {user_id} {verb}d"})

    async def disable(self, request: Request) -> JSONResponse:
        """``POST /admin/users/:id/disable`` → ``{message}`` (admin)."""
        return await self._set_status(request, UserStatus.DISABLED)

    async def enable(self, request: Request) -> JSONResponse:
        """``POST /admin/users/:id/enable`` → ``{message}`` (admin)."""
        return await self._set_status(request, UserStatus.ACTIVE)

    async def set_role(self, request: Request) -> JSONResponse:
        """``PUT or POST /admin/users/:id/role {role}`` → ``{user}`` (admin)."""
        user_id = _user_id(request)
        async with audited(request, Role.ADMIN, "user.role", target=f"user:{user_id}") as act:
            role = Role(Fields(await json_body(request)).text("role", choices=_ROLES))
            act.detail["role"] = str(role)
            if user_id == act.principal.user.id and role is not Role.ADMIN:
                raise ApiError(ErrorCode.INVALID_PARAMS, "role: you cannot lower your own role")
            before = await self._user(user_id)
            act.detail["was"] = str(before.role)
            await self.auth.run(self.store.set_role, user_id, role, now=self.auth.clock())
            user = await self._user(user_id)
        return ok({"user": user_json(user)})

    async def reset_password(self, request: Request) -> JSONResponse:
        """``POST /admin/users/:id/reset-password {password?}`` → ``{message, password?}``.

        Without a password one is generated and answered once.
        """
        user_id = _user_id(request)
        target = f"user:{user_id}"
        async with audited(request, Role.ADMIN, "user.reset_password", target=target):
            fields = Fields(await json_body(request, required=False))
            given = fields.text(
                "password", required=False, min_len=MIN_PASSWORD, max_len=_MAX_PASSWORD
            )
            password = given or secrets.token_urlsafe(15)
            await self._user(user_id)
            hashed = await self.auth.hash_password(password)
            await self.auth.run(self.store.set_password, user_id, hashed, now=self.auth.clock())
        data: dict[str, Any] = {"message": f"password of user {user_id} reset"}
        if not given:
            data["password"] = password
        return ok(data)

    # --- /tokens ---------------------------------------------------------------------------

    async def list_tokens(self, request: Request) -> JSONResponse:
        """``GET /tokens[?all=true]`` → ``{tokens, count}``: your own; every user's for an
        admin who asks for ``all``."""
        who = await self.auth.principal(request, Role.VIEWER)
        everyone = query_str(request, "all", default="false", choices=("true", "false", "1", "0"))
        owner: int | None = who.user.id
        if everyone in ("true", "1"):
            if not who.user.role.allows(Role.ADMIN):
                raise ApiError(ErrorCode.FORBIDDEN, "forbidden: all=true needs role admin")
            owner = None
        tokens = await self.auth.run(self.store.list_tokens, owner)
        listed = [token_json(token) for token in tokens]
        return ok({"tokens": listed, "count": len(listed)})

    async def create_token(self, request: Request) -> JSONResponse:
        """``POST /tokens {name, expires_in_days?}`` → 201 ``{token, api_token}``; the secret
        ``token`` is shown this once."""
        async with audited(request, Role.VIEWER, "token.create") as act:
            fields = Fields(await json_body(request))
            name = fields.text("name", max_len=100)
            days = fields.integer(
                "expires_in_days", required=False, default=90, minimum=1, maximum=_MAX_TOKEN_DAYS
            )
            secret, digest, prefix = self.auth.new_token_secret()
            now = self.auth.clock()
            token = await self.auth.run(
                self.store.create_token,
                act.principal.user.id,
                name,
                digest,
                prefix,
                expires_at=now + days * 86400.0,
                now=now,
            )
            act.target = f"token:{token.id}"
            act.detail.update(name=name, prefix=prefix)
        return ok({"token": secret, "api_token": token_json(token)}, status=201, message="created")

    async def revoke_token(self, request: Request) -> JSONResponse:
        """``DELETE /tokens/:id`` → ``{message}``: your own token, or any for an admin."""
        token_id: int = request.path_params["token_id"]
        async with audited(request, Role.VIEWER, "token.revoke", target=f"token:{token_id}") as act:
            user = act.principal.user
            owner = None if user.role.allows(Role.ADMIN) else user.id
            tokens = await self.auth.run(self.store.list_tokens, owner)
            if not any(token.id == token_id for token in tokens):
                raise ApiError(ErrorCode.NOT_FOUND, f"token {token_id} not found")
            await self.auth.run(self.store.revoke_token, token_id, now=self.auth.clock())
        return ok({"message": f"token {token_id} revoked"})

    # --- /admin/audit ----------------------------------------------------------------------

    async def audit_log(self, request: Request) -> JSONResponse:
        """``GET /admin/audit?page&page_size&actor&action`` → a page of entries (admin)."""
        await self.auth.principal(request, Role.ADMIN)
        page, size = paging(request)
        actor = query_str(request, "actor") or None
        action = query_str(request, "action") or None
        entries = await self.auth.run(
            self.store.list_audit, page=page, page_size=size, actor=actor, action=action
        )
        return page_ok(entries, audit_json)


Handler = Callable[[Request], Awaitable[JSONResponse]]


def user_routes(auth: Authenticator, *, throttle: LoginThrottle | None = None) -> list[Route]:
    """The account routes, under ``/api/v1``.

    The app must also have ``auth`` installed (``_auth.install(app, auth)``), which
    :func:`~._auth.principal` and :func:`~._auth.audited` read, and the envelope's
    ``exception_handlers()`` and ``middleware()``.

    Args:
        auth: The authenticator (store and settings).
        throttle: Counts failed logins (answered 1006 / HTTP 429 past its limits); a
            default one when None.

    Returns:
        Routes for ``/api/v1/auth/{login,register,profile,change-password}``,
        ``/api/v1/admin/users[/{id}/{disable,enable,role,reset-password}]``,
        ``/api/v1/tokens[/{id}]`` and ``/api/v1/admin/audit``.
    """
    r = _Routes(auth, throttle or LoginThrottle())
    users = "/api/v1/admin/users/{user_id:int}"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/api/v1/auth/login", r.login, ["POST"]),
        ("/api/v1/auth/register", r.register, ["POST"]),
        ("/api/v1/auth/profile", r.profile, ["GET"]),
        ("/api/v1/auth/change-password", r.change_password, ["POST"]),
        ("/api/v1/admin/users", r.list_users, ["GET"]),
        ("/api/v1/admin/users", r.create_user, ["POST"]),
        (f"{users}/disable", r.disable, ["POST"]),
        (f"{users}/enable", r.enable, ["POST"]),
        (f"{users}/role", r.set_role, ["PUT", "POST"]),
        (f"{users}/reset-password", r.reset_password, ["POST"]),
        ("/api/v1/tokens", r.list_tokens, ["GET"]),
        ("/api/v1/tokens", r.create_token, ["POST"]),
        ("/api/v1/tokens/{token_id:int}", r.revoke_token, ["DELETE"]),
        ("/api/v1/admin/audit", r.audit_log, ["GET"]),
    ]
    return [Route(path, handler, methods=methods) for path, handler, methods in table]
