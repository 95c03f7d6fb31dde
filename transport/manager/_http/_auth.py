"""Authentication and authorisation of the REST API: passwords, JWTs, API tokens, roles.

Theory of operation
-------------------
A request proves who it is with ``Authorization: Bearer <credential>``, where the
credential is either a JWT from ``POST /auth/login`` (what the console sends) or an API
token (``hvt_`` + 43 random characters; what scripts send). The console's Server-Sent
Events routes alone also take it as ``?access_token=`` (EventSource cannot send headers),
checked the same way; the HTTP server keeps no access log, so it is not written down.
:func:`principal` turns the request into a :class:`Principal` or raises the original's
codes: 1002 no credential, 1007 invalid, 1008 expired, 2008 user disabled, 1003 role too
low.

The stored user is read on EVERY request, so nothing the token says about the user is
trusted beyond its id: a role change applies at the next request, disabling a user stops
their JWTs and API tokens at once, and a password change ends every JWT issued before it
(each JWT carries ``pwv``, a keyed digest of the password hash it was issued under). API
tokens are stored as SHA-256 digests only (the secret is shown once); a lookup by digest
compares nothing secret in Python. JWTs are HS256 with a key derived from ``jwt.secret``
(HMAC-SHA256, so short configured secrets still make a full-length key).

Passwords are hashed with Argon2id (argon2-cffi; RFC 9106's low-memory profile by default),
in worker threads behind a small limiter (each hash takes 64 MiB on purpose). A login of
an unknown user verifies against a dummy hash, so the answer takes as long and says the
same as a wrong password (1009). Old-parameter hashes are rehashed at the next login.

The pure decisions (parsing the header, checking a JWT's claims and a token's state at
``now``) are plain functions, property-tested; :class:`Authenticator` is the IO shell
around them and the store (whose synchronous calls run in threads).

Every state-changing call is audited through :func:`audited` (an async context manager
that authorises, then records actor, action, target, source IP and outcome whether the
body succeeds or raises); logins are audited by the login route.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol, TypeVar

import argon2
import jwt
import trio
from starlette.applications import Starlette
from starlette.requests import Request

from transport.manager._errors import NotFoundError
from transport.manager._http._envelope import ApiError, ErrorCode
from transport.manager._model import ApiToken, AuditEntry, Page, Role, User, UserStatus

__all__ = [
    "TOKEN_PREFIX",
    "Act",
    "AuthSettings",
    "Authenticator",
    "Principal",
    "UserStore",
    "audited",
    "authenticator",
    "check_claims",
    "check_token",
    "client_ip",
    "install",
    "parse_bearer",
    "principal",
]

T = TypeVar("T")

TOKEN_PREFIX = "hvt_"
"""How every API token starts (what tells it from a JWT)."""

_ALGORITHM = "HS256"
_SHOWN_PREFIX = 12
"""Characters of a token kept in clear to tell tokens apart (``hvt_`` + 8)."""


@dataclasses.dataclass(frozen=True, slots=True)
class AuthSettings:
    """How the API authenticates (``jwt.*`` and ``auth.*`` of manager.yaml).

    Attributes:
        jwt_secret: The HMAC secret for JWTs (``jwt.secret``; never empty).
        expire_s: How long a JWT is valid, seconds (``jwt.expire_time``, 24 h).
        issuer: The JWTs' ``iss`` (``jwt.issuer``).
        allow_register: Whether ``POST /auth/register`` creates viewers (off by default).
        password_params: Argon2 parameters (None: RFC 9106 low memory; tests pass cheaper).
        hash_threads: How many password hashes may run at once.
    """

    jwt_secret: str
    expire_s: float = 24 * 3600.0
    issuer: str = "ops-manager"
    allow_register: bool = False
    password_params: argon2.Parameters | None = None
    hash_threads: int = 2

    def __post_init__(self) -> None:
        if not self.jwt_secret:
            raise ValueError("jwt_secret: required")
        if not self.expire_s > 0:
            raise ValueError(f"expire_s: must be > 0; got {self.expire_s!r}")
        if self.hash_threads < 1:
            raise ValueError(f"hash_threads: must be >= 1; got {self.hash_threads!r}")


class UserStore(Protocol):
    """The part of the Manager's ``Store`` this module and the user routes use."""

    def create_user(
        self, username: str, password_hash: str, /, *, role: Role, email: str = "", now: float
    ) -> User: ...
    def get_user(self, user_id: int, /) -> User: ...
    def credentials(self, username: str, /) -> tuple[User, str]: ...
    def list_users(self, *, page: int, page_size: int) -> Page[User]: ...
    def set_user_status(self, user_id: int, status: UserStatus, /, *, now: float) -> User: ...
    def set_password(self, user_id: int, password_hash: str, /, *, now: float) -> Any: ...
    def set_role(self, user_id: int, role: Role, /, *, now: float) -> Any: ...
    def record_login(self, user_id: int, /, *, ip: str, now: float) -> User: ...
    def create_token(
        self,
        user_id: int,
        name: str,
        token_hash: str,
        prefix: str,
        /,
        *,
        expires_at: float | None,
        now: float,
    ) -> ApiToken: ...
    def token_by_hash(self, token_hash: str, /) -> tuple[ApiToken, User] | None: ...
    def touch_token(self, token_id: int, /, *, now: float) -> Any: ...
    def list_tokens(self, user_id: int | None, /) -> Sequence[ApiToken]: ...
    def revoke_token(self, token_id: int, /, *, now: float) -> Any: ...
    def audit(
        self,
        actor: str,
        action: str,
        /,
        *,
        target: str,
        source_ip: str,
        outcome: str,
        detail: Mapping[str, Any],
        now: float,
    ) -> AuditEntry: ...
    def list_audit(
        self, *, page: int, page_size: int, actor: str | None = None, action: str | None = None
    ) -> Page[AuditEntry]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, as the store knows them now.

    Attributes:
        user: The user (read from the store for this request).
        via: ``"jwt"`` (a login) or ``"token"`` (an API token).
        token_id: The API token's id when ``via`` is ``"token"``.
    """

    user: User
    via: Literal["jwt", "token"]
    token_id: int | None = None

    @property
    def name(self) -> str:
        """The user name (what the audit log records as the actor)."""
        return self.user.username


# --- pure decisions ------------------------------------------------------------------


def parse_bearer(header: str | None) -> str:
    """The credential of an ``Authorization: Bearer <credential>`` header.

    Args:
        header: The header's value, or None when absent.

    Returns:
        The credential.

    Raises:
        ApiError: 1002 when absent or empty; 1007 when not a Bearer credential.
    """
    if header is None or not header.strip():
        raise ApiError(ErrorCode.UNAUTHORIZED, "missing Authorization header (Bearer token)")
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise ApiError(ErrorCode.INVALID_TOKEN, "Authorization: expected 'Bearer <token>'")
    return credential


def check_claims(claims: Mapping[str, Any], *, now: float, leeway_s: float = 30.0) -> int:
    """Check a signature-verified JWT's claims at ``now``; the user id they name.

    Args:
        claims: The decoded claims.
        now: Unix seconds.
        leeway_s: Clock skew allowed on ``iat`` and ``nbf``.

    Returns:
        The user id (``user_id``, which must agree with ``sub``).

    Raises:
        ApiError: 1008 when expired (``exp`` <= now); 1007 for anything malformed, or
            issued or valid only in the future.
    """
    exp = _number(claims, "exp")
    iat = _number(claims, "iat")
    nbf = _number(claims, "nbf") if "nbf" in claims else iat
    user_id = claims.get("user_id")
    if (
        isinstance(user_id, bool)
        or not isinstance(user_id, int)
        or user_id < 1
        or claims.get("sub") != str(user_id)
    ):
        raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token: subject malformed")
    if iat > now + leeway_s or nbf > now + leeway_s:
        raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token: not valid yet")
    if exp <= now:
        raise ApiError(ErrorCode.TOKEN_EXPIRED, "token expired: log in again")
    return user_id


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(ErrorCode.INVALID_TOKEN, f"invalid token: {name} missing or malformed")
    return float(value)


def check_token(token: ApiToken, user: User, *, now: float) -> None:
    """Check that an API token (found by its digest) and its user may be used at ``now``.

    Args:
        token: The stored token.
        user: Its owner as stored.
        now: Unix seconds.

    Raises:
        ApiError: 1007 revoked; 1008 expired; 2008 the owner is disabled.
    """
    if token.user_id != user.id or token.revoked_at is not None:
        raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token: revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise ApiError(ErrorCode.TOKEN_EXPIRED, "token expired")
    check_active(user)


def check_active(user: User) -> None:
    """Refuse a disabled user.

    Args:
        user: The stored user.

    Raises:
        ApiError: 2008 when the user is disabled.
    """
    if user.status is not UserStatus.ACTIVE:
        raise ApiError(ErrorCode.USER_DISABLED, "user is disabled")


def check_role(user: User, minimum: Role) -> None:
    """Refuse a user whose role does not include ``minimum``.

    Args:
        user: The stored user.
        minimum: The least role allowed.

    Raises:
        ApiError: 1003 naming the role needed.
    """
    if not user.role.allows(minimum):
        raise ApiError(ErrorCode.FORBIDDEN, f"forbidden: needs role {minimum} or higher")


def token_digest(secret: str) -> str:
    """The stored form of an API token: its SHA-256, hex.

    Args:
        secret: The token as the client sends it.

    Returns:
        64 hex digits.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


# --- the IO shell ----------------------------------------------------------------------


class Authenticator:
    """Checks credentials against the store; one per app (see :func:`install`).

    Args:
        store: The Manager's store (or anything with :class:`UserStore`'s methods).
        settings: JWT and password settings.
        clock: Unix seconds now (``time.time``; tests may pass their own).
    """

    def __init__(
        self, store: UserStore, settings: AuthSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._key = hmac.new(settings.jwt_secret.encode(), b"hostvisor-jwt", "sha256").digest()
        params = settings.password_params or argon2.profiles.RFC_9106_LOW_MEMORY
        self._hasher = argon2.PasswordHasher.from_parameters(params)
        self._hashing = trio.CapacityLimiter(settings.hash_threads)
        self._dummy: str | None = None

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous store call in a worker thread.

        Args:
            function: The call (e.g. ``store.get_user``).
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            What it returns.
        """
        return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs))

    # passwords

    async def hash_password(self, password: str) -> str:
        """Hash a password with Argon2id (in a worker thread).

        Args:
            password: The password.

        Returns:
            The PHC string to store.
        """
        return await trio.to_thread.run_sync(self._hasher.hash, password, limiter=self._hashing)

    async def verify_password(self, stored: str, password: str) -> bool:
        """Whether ``password`` matches the stored hash (in a worker thread).

        Args:
            stored: The PHC string.
            password: The candidate.

        Returns:
            True on a match.
        """

        def verify() -> bool:
            try:
                return self._hasher.verify(stored, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        return await trio.to_thread.run_sync(verify, limiter=self._hashing)

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash_password(secrets.token_urlsafe(16))
        return self._dummy

    async def check_password(self, username: str, password: str) -> tuple[User | None, str]:
        """Verify a user name and password, taking as long whether the user exists or not.

        Args:
            username: The user name.
            password: The password.

        Returns:
            ``(user, hash)`` on a match (the user may be disabled: the caller decides),
            else ``(None, "")``.
        """
        try:
            user, stored = await self.run(self.store.credentials, username)
        except NotFoundError:
            await self.verify_password(await self._dummy_hash(), password)
            return None, ""
        if not await self.verify_password(stored, password):
            return None, ""
        return user, stored

    def needs_rehash(self, stored: str) -> bool:
        """Whether a stored hash was made with other parameters than the current ones.

        Args:
            stored: The PHC string.

        Returns:
            True when it should be rehashed (at the next successful login).
        """
        try:
            return self._hasher.check_needs_rehash(stored)
        except argon2.exceptions.InvalidHashError:
            return True

    # JWTs

    def _pwv(self, user_id: int, stored: str) -> str:
        message = f"{user_id}:{stored}".encode()
        return hmac.new(self._key, message, "sha256").hexdigest()[:24]

    def issue_jwt(self, user: User, stored_hash: str, *, now: float) -> str:
        """A signed JWT for ``user`` (valid ``expire_s`` from ``now``).

        Args:
            user: The user.
            stored_hash: The user's current password hash (binds the JWT to it).
            now: Unix seconds.

        Returns:
            The compact JWT.
        """
        claims = {
            "sub": str(user.id),
            "user_id": user.id,
            "username": user.username,
            "role": str(user.role),
            "iss": self.settings.issuer,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + self.settings.expire_s),
            "pwv": self._pwv(user.id, stored_hash),
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def decode_jwt(self, token: str) -> dict[str, Any]:
        """Verify a JWT's signature and issuer (times are checked by :func:`check_claims`).

        Args:
            token: The compact JWT.

        Returns:
            Its claims.

        Raises:
            ApiError: 1007 when it is malformed, forged, or from another issuer.
        """
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                issuer=self.settings.issuer,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub", "iss"],
                },
            )
        except jwt.InvalidTokenError:
            raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token") from None

    # API tokens

    @staticmethod
    def new_token_secret() -> tuple[str, str, str]:
        """A new API token.

        Returns:
            ``(secret, digest, prefix)``: the secret shown once, what is stored, and the
            clear prefix kept to tell tokens apart.
        """
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        return secret, token_digest(secret), secret[:_SHOWN_PREFIX]

    # requests

    async def authenticate(self, request: Request, *, query_token: bool = False) -> Principal:
        """Who made ``request``, as the store knows them now.

        Args:
            request: The request.
            query_token: Accept the credential from the ``access_token`` query parameter
                when there is no Authorization header (the console's Server-Sent Events:
                EventSource cannot send headers). Checked exactly as the header.

        Returns:
            The principal.

        Raises:
            ApiError: 1002, 1007, 1008 or 2008.
        """
        header = request.headers.get("authorization")
        from_query = request.query_params.get("access_token") if query_token else None
        if header is None and from_query is not None:
            header = f"Bearer {from_query}"
        credential = parse_bearer(header)
        now = self.clock()
        if credential.startswith(TOKEN_PREFIX):
            return await self._by_token(credential, now)
        claims = self.decode_jwt(credential)
        user_id = check_claims(claims, now=now)
        username = claims.get("username")
        if not isinstance(username, str):
            raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token")
        try:
            user, stored = await self.run(self.store.credentials, username)
        except NotFoundError:
            raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token: no such user") from None
        pwv = claims.get("pwv")
        if (
            user.id != user_id
            or not isinstance(pwv, str)
            or not hmac.compare_digest(pwv, self._pwv(user.id, stored))
        ):
            raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token: password changed")
        check_active(user)
        return Principal(user, "jwt")

    async def _by_token(self, credential: str, now: float) -> Principal:
        found = await self.run(self.store.token_by_hash, token_digest(credential))
        if found is None:
            raise ApiError(ErrorCode.INVALID_TOKEN, "invalid token")
        token, user = found
        check_token(token, user, now=now)
        if token.last_used_at is None or now - token.last_used_at >= 60:
            await self.run(self.store.touch_token, token.id, now=now)
        return Principal(user, "token", token.id)

    async def principal(
        self, request: Request, minimum: Role, *, query_token: bool = False
    ) -> Principal:
        """Who made ``request``, refused unless their role includes ``minimum``.

        Args:
            request: The request.
            minimum: The least role allowed.
            query_token: As for :meth:`authenticate`.

        Returns:
            The principal.

        Raises:
            ApiError: 1002, 1007, 1008, 2008, or 1003.
        """
        who = await self.authenticate(request, query_token=query_token)
        check_role(who.user, minimum)
        return who

    async def audit(
        self,
        request: Request,
        actor: str,
        action: str,
        *,
        target: str = "",
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Record an audit entry for ``request`` (its source IP) now.

        Args:
            request: The request.
            actor: Who (a user name; for a failed login, the name tried).
            action: What, e.g. ``user.disable``.
            target: On what, e.g. ``user:3``.
            outcome: ``ok``, ``denied``, ``failed``, or ``error:<code>``.
            detail: More, as JSON.

        Returns:
            The stored entry.
        """
        return await self.run(
            self.store.audit,
            actor[:100],
            action,
            target=target,
            source_ip=client_ip(request),
            outcome=outcome,
            detail=dict(detail or {}),
            now=self.clock(),
        )


def client_ip(request: Request) -> str:
    """The request's peer address (the load balancer's, behind one).

    Args:
        request: The request.

    Returns:
        The IP, or ``""`` when unknown.
    """
    return request.client.host if request.client is not None else ""


def install(app: Starlette, auth: Authenticator) -> None:
    """Make ``auth`` the authenticator of ``app``'s requests (``build_app`` calls this).

    Args:
        app: The application.
        auth: Its authenticator.
    """
    app.state.authenticator = auth


def authenticator(request: Request) -> Authenticator:
    """The authenticator :func:`install` gave the request's app.

    Args:
        request: The request.

    Returns:
        The authenticator.

    Raises:
        RuntimeError: None was installed (a wiring bug: answered as 5001).
    """
    auth = getattr(request.app.state, "authenticator", None)
    if not isinstance(auth, Authenticator):
        raise RuntimeError("no Authenticator installed on the app (call _auth.install)")
    return auth


async def principal(request: Request, minimum: Role, *, query_token: bool = False) -> Principal:
    """Who made ``request``, refused unless their role includes ``minimum``.

    Args:
        request: The request.
        minimum: The least role allowed (``Role.VIEWER`` for any signed-in user).
        query_token: Also accept ``?access_token=`` (Server-Sent Events routes only; see
            :meth:`Authenticator.authenticate`).

    Returns:
        The principal (the user as stored now).

    Raises:
        ApiError: 1002 no credential, 1007 invalid, 1008 expired, 2008 disabled, 1003
            role too low.
    """
    return await authenticator(request).principal(request, minimum, query_token=query_token)


@dataclasses.dataclass(slots=True)
class Act:
    """An audited action in progress (what :func:`audited` yields).

    Attributes:
        principal: Who is acting.
        target: On what; the body may set it once known (e.g. a created user's id).
        detail: More to record; the body may add to it.
    """

    principal: Principal
    target: str = ""
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


@asynccontextmanager
async def audited(
    request: Request, minimum: Role, action: str, *, target: str = ""
) -> AsyncIterator[Act]:
    """Authorise a state-changing call and audit it however it ends.

    ``async with audited(request, Role.ADMIN, "user.disable", target="user:3") as act:``
    authenticates (1002/1007/1008/2008 are raised unaudited: there is no actor), audits a
    role too low as ``denied`` and raises 1003, then runs the body and records ``ok``, or
    ``error:<code>`` for an :class:`ApiError`, or ``failed`` for anything else (re-raised).

    Args:
        request: The request.
        minimum: The least role allowed.
        action: What is done, e.g. ``agent.operate``.
        target: On what, e.g. ``node:web-1/agent:nginx``.

    Yields:
        The :class:`Act` (its principal, and target and detail the body may change).

    Raises:
        ApiError: As above, and whatever the body raises.
    """
    auth = authenticator(request)
    who = await auth.authenticate(request)
    try:
        check_role(who.user, minimum)
    except ApiError as error:
        await auth.audit(request, who.name, action, target=target, outcome="denied")
        raise error from None
    act = Act(who, target)
    try:
        yield act
    except ApiError as error:
        detail = {**act.detail, "message": error.message}
        outcome = f"error:{error.code}"
        await auth.audit(
            request, who.name, action, target=act.target, outcome=outcome, detail=detail
        )
        raise
    except Exception:
        await auth.audit(
            request, who.name, action, target=act.target, outcome="failed", detail=act.detail
        )
        raise
    await auth.audit(request, who.name, action, target=act.target, detail=act.detail)
