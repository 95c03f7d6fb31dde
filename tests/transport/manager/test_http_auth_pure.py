"""The pure decisions of the API's authentication: header parsing, JWT claims at a time,
API token state, roles; JWT signing and password hashing without a store."""

from __future__ import annotations

from typing import Any

import argon2
import jwt
import pytest
from hypothesis import given, strategies as st

from transport.manager._http._auth import (
    TOKEN_PREFIX,
    Authenticator,
    AuthSettings,
    check_active,
    check_claims,
    check_role,
    check_token,
    parse_bearer,
    token_digest,
)
from transport.manager._http._envelope import ApiError
from transport.manager._http._users import LoginThrottle
from transport.manager._model import ApiToken, Role, User, UserStatus

ROLES = st.sampled_from(list(Role))
TIMES = st.floats(min_value=1e9, max_value=4e9, allow_nan=False)


def _code(call: Any, *args: Any, **kwargs: Any) -> int:
    try:
        call(*args, **kwargs)
    except ApiError as error:
        return error.code
    return 0


@given(st.text(max_size=60).filter(lambda s: s.strip() and " " not in s.strip()))
def test_bearer_round_trip(credential: str) -> None:
    assert parse_bearer(f"Bearer {credential}") == credential.strip()
    assert parse_bearer(f"bearer   {credential}  ") == credential.strip()


@given(st.text(max_size=60))
def test_bearer_never_crashes(header: str) -> None:
    code = _code(parse_bearer, header)
    assert code in (0, 1002, 1007)
    if not header.strip():
        assert code == 1002
    assert _code(parse_bearer, None) == 1002


def test_bearer_cases() -> None:
    assert _code(parse_bearer, "Basic abc") == 1007
    assert _code(parse_bearer, "Bearer") == 1007
    assert _code(parse_bearer, "Bearer a b") == 1007
    assert _code(parse_bearer, "   ") == 1002


def _claims(user_id: int, iat: float, exp: float, **extra: Any) -> dict[str, Any]:
    return {"sub": str(user_id), "user_id": user_id, "iat": iat, "exp": exp, **extra}


@given(st.integers(1, 2**31), TIMES, st.floats(1, 1e6), st.floats(-1e6, 1e6))
def test_claims_expiry(user_id: int, iat: float, life: float, offset: float) -> None:
    now = iat + offset
    claims = _claims(user_id, iat, iat + life)
    code = _code(check_claims, claims, now=now)
    if iat > now + 30:
        assert code == 1007
    elif iat + life <= now:
        assert code == 1008
    else:
        assert code == 0
        assert check_claims(claims, now=now) == user_id


@given(
    st.dictionaries(
        st.sampled_from(["sub", "user_id", "iat", "exp", "nbf"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3)),
    )
)
def test_malformed_claims_are_invalid(claims: dict[str, Any]) -> None:
    assert _code(check_claims, claims, now=1e9) in (1007, 1008)


def test_claims_cases() -> None:
    good = _claims(3, 100, 200)
    assert check_claims(good, now=150) == 3
    assert _code(check_claims, {**good, "sub": "4"}, now=150) == 1007
    assert _code(check_claims, {**good, "user_id": True, "sub": "True"}, now=150) == 1007
    assert _code(check_claims, {**good, "nbf": 1000}, now=150) == 1007
    assert _code(check_claims, {**good, "exp": "200"}, now=150) == 1007
    assert _code(check_claims, good, now=200) == 1008


def _user(role: Role = Role.VIEWER, status: UserStatus = UserStatus.ACTIVE, uid: int = 1) -> User:
    return User(id=uid, username="u", role=role, status=status)


@given(
    st.one_of(st.none(), TIMES),
    st.one_of(st.none(), TIMES),
    st.sampled_from(list(UserStatus)),
    TIMES,
    st.booleans(),
)
def test_token_state(
    expires: float | None, revoked: float | None, status: UserStatus, now: float, mine: bool
) -> None:
    token = ApiToken(
        id=1,
        user_id=1 if mine else 2,
        name="n",
        prefix="hvt_",
        created_at=0,
        expires_at=expires,
        revoked_at=revoked,
    )
    code = _code(check_token, token, _user(status=status), now=now)
    if not mine or revoked is not None:
        assert code == 1007
    elif expires is not None and expires <= now:
        assert code == 1008
    elif status is UserStatus.DISABLED:
        assert code == 2008
    else:
        assert code == 0


@given(ROLES, ROLES)
def test_roles(have: Role, need: Role) -> None:
    order = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
    allowed = order.index(have) >= order.index(need)
    assert _code(check_role, _user(have), need) == (0 if allowed else 1003)
    assert _code(check_active, _user(have, UserStatus.DISABLED)) == 2008


def _auth(**settings: Any) -> Authenticator:
    base: dict[str, Any] = {"jwt_secret": "s", "password_params": argon2.profiles.CHEAPEST}
    return Authenticator(None, AuthSettings(**{**base, **settings}))  # type: ignore[arg-type]


def test_jwt_round_trip_and_forgery() -> None:
    auth = _auth(issuer="me", expire_s=60)
    user = _user(Role.ADMIN, uid=7)
    token = auth.issue_jwt(user, "hash", now=1000)
    claims = auth.decode_jwt(token)
    assert claims["user_id"] == 7 and claims["sub"] == "7" and claims["role"] == "admin"
    assert claims["iss"] == "me" and claims["exp"] == 1060 and claims["iat"] == 1000
    assert check_claims(claims, now=1059) == 7
    assert _code(check_claims, claims, now=1060) == 1008
    for other in (_auth(issuer="other"), _auth(jwt_secret="t", issuer="me")):
        assert _code(other.decode_jwt, token) == 1007
    forged = jwt.encode({**claims, "user_id": 1, "sub": "1"}, "g" * 32, algorithm="HS256")
    assert _code(auth.decode_jwt, forged) == 1007
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    assert _code(auth.decode_jwt, unsigned) == 1007
    assert _code(auth.decode_jwt, "not.a.jwt") == 1007


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="jwt_secret"):
        AuthSettings(jwt_secret="")
    with pytest.raises(ValueError, match="expire_s"):
        AuthSettings(jwt_secret="x", expire_s=0)
    with pytest.raises(ValueError, match="hash_threads"):
        AuthSettings(jwt_secret="x", hash_threads=0)


def test_token_secrets() -> None:
    secret, digest, prefix = Authenticator.new_token_secret()
    assert secret.startswith(TOKEN_PREFIX) and len(secret) >= 40
    assert digest == token_digest(secret) and len(digest) == 64 and secret not in digest
    assert secret.startswith(prefix) and len(prefix) == 12
    assert Authenticator.new_token_secret()[0] != secret


async def test_passwords() -> None:
    auth = _auth()
    stored = await auth.hash_password("correct horse")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert await auth.verify_password(stored, "correct horse")
    assert not await auth.verify_password(stored, "wrong")
    assert not await auth.verify_password("not a hash", "wrong")
    assert not auth.needs_rehash(stored)
    assert _auth(password_params=argon2.profiles.PRE_21_2).needs_rehash(stored)
    assert auth.needs_rehash("garbage")


@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.sampled_from(["a", "b"]), st.sampled_from(["1", "2"])),
        max_size=80,
    ),
    st.integers(1, 5),
    st.integers(1, 8),
)
def test_login_throttle(
    attempts: list[tuple[float, str, str]], per_name: int, per_address: int
) -> None:
    """Every failure is allowed unless the window already holds its limit of allowed failures
    of that (name, address) or that address; none is refused otherwise."""
    window = 60.0
    throttle = LoginThrottle(per_name=per_name, per_address=per_address, window_s=window)
    allowed: list[tuple[float, str, str]] = []
    now = 0.0
    for gap, name, address in attempts:
        now += gap
        recent = [(n, a) for t, n, a in allowed if t > now - window]
        full = (
            recent.count((name, address)) >= per_name
            or sum(a == address for _, a in recent) >= per_address
        )
        wait = throttle.retry_after(name, address, now=now)
        assert (wait > 0) == full
        assert wait <= window
        if not full:
            throttle.failed(name, address, now=now)
            allowed.append((now, name, address))


def test_login_throttle_memory_and_success() -> None:
    throttle = LoginThrottle(per_name=1, per_address=100, window_s=60, max_keys=4)
    for n in range(10):
        throttle.failed(f"u{n}", "ip", now=0)
    assert len(throttle._failures) <= 4
    throttle.failed("amy", "ip2", now=0)
    assert throttle.retry_after("amy", "ip2", now=1) == 59
    throttle.succeeded("amy", "ip2")
    assert throttle.retry_after("amy", "ip2", now=1) == 0
