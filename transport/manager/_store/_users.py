"""Users, API tokens and the audit log.

Theory of operation: plain rows, one short transaction per call. Unique user names and
token hashes are constraints of the database, so a race between two creations ends in one
success and one :class:`~transport.manager.ConflictError`. The store never sees a password
or a token's secret: the HTTP layer hashes them first (Argon2 for passwords, SHA-256 for
tokens) and looks tokens up by hash. Disabled users and revoked or expired tokens are
returned as they are; deciding what they may do is the HTTP layer's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

from transport.manager._errors import ConflictError, NotFoundError
from transport.manager._model import ApiToken, AuditEntry, Page, Role, User, UserStatus

from ._engine import StoreBase, record
from ._schema import api_tokens, audit_log, users

__all__ = ["UsersMixin"]


def _user(row: Mapping[Any, Any]) -> User:
    return record(User, row, role=Role(row["role"]), status=UserStatus(row["status"]))


def _token(row: Mapping[Any, Any]) -> ApiToken:
    return record(ApiToken, row)


def _entry(row: Mapping[Any, Any]) -> AuditEntry:
    return record(AuditEntry, row, detail=MappingProxyType(dict(row["detail"] or {})))


_USER_COLUMNS = [column for column in users.c if column.name != "password_hash"]


class UsersMixin(StoreBase):
    """The user, token and audit methods of :class:`~transport.manager._store.Store`."""

    def create_user(
        self,
        username: str,
        password_hash: str,
        *,
        role: Role,
        email: str = "",
        now: float,
    ) -> User:
        """Create an active user.

        Raises:
            ConflictError: The name is taken.
            StoreError: The database failed.
        """
        stmt = (
            sa.insert(users)
            .values(
                username=username,
                password_hash=password_hash,
                role=role.value,
                status=UserStatus.ACTIVE.value,
                email=email,
                created_at=now,
                updated_at=now,
            )
            .returning(*_USER_COLUMNS)
        )
        try:
            with self._write() as conn:
                return _user(conn.execute(stmt).one()._mapping)
        except ConflictError as exc:
            raise ConflictError(f"user {username} exists") from exc.__cause__

    def _one_user(self, where: sa.ColumnElement[bool], what: str) -> User:
        query = sa.select(*_USER_COLUMNS).where(where)
        return _user(self._first(query, NotFoundError(f"no user {what}")))

    def get_user(self, id: int) -> User:
        """The user with ``id``.

        Raises:
            NotFoundError: No such user.
            StoreError: The database failed.
        """
        return self._one_user(users.c.id == id, f"has id {id}")

    def get_user_by_name(self, username: str) -> User:
        """The user called ``username``.

        Raises:
            NotFoundError: No such user.
            StoreError: The database failed.
        """
        return self._one_user(users.c.username == username, f"is called {username}")

    def credentials(self, username: str) -> tuple[User, str]:
        """A user with the hash of their password (for login).

        Raises:
            NotFoundError: No such user.
            StoreError: The database failed.
        """
        query = sa.select(users).where(users.c.username == username)
        row = self._first(query, NotFoundError(f"no user is called {username}"))
        return _user(row), row["password_hash"]

    def list_users(self, *, page: int, page_size: int) -> Page[User]:
        """One page of the users, by id.

        Raises:
            ValueError: ``page`` or ``page_size`` below 1.
            StoreError: The database failed.
        """
        query = sa.select(*_USER_COLUMNS).order_by(users.c.id)
        return self._page(query, _user, page=page, page_size=page_size)

    def _update_user(self, id: int, now: float, **values: Any) -> User:
        stmt = (
            sa.update(users)
            .where(users.c.id == id)
            .values(updated_at=now, **values)
            .returning(*_USER_COLUMNS)
        )
        with self._write() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise NotFoundError(f"no user has id {id}")
        return _user(row._mapping)

    def set_user_status(self, id: int, status: UserStatus, *, now: float) -> User:
        """Enable or disable a user.

        Raises:
            NotFoundError: No such user.
            StoreError: The database failed.
        """
        return self._update_user(id, now, status=status.value)

    def set_password(self, id: int, password_hash: str, *, now: float) -> User:
        """Replace a user's password hash.

        Raises:
            NotFoundError: No such user.
            StoreError: The database failed.
        """
        return self._update_user(id, now, password_hash=password_hash)

    def set_role(self, id: int, role: Role, *, now: float) -> User:
        """Change a user's role.

        Raises:
            NotFoundError: No such user.
            StoreError: The database failed.
        """
        return self._update_user(id, now, role=role.value)

    def record_login(self, id: int, *, ip: str, now: float) -> User:
        """Remember a successful login (time and address).

        Raises:
            NotFoundError: No such user.
            StoreError: The database failed.
        """
        return self._update_user(id, now, last_login_at=now, last_login_ip=ip)

    def create_token(
        self,
        user_id: int,
        name: str,
        token_hash: str,
        prefix: str,
        *,
        expires_at: float | None,
        now: float,
    ) -> ApiToken:
        """Store a new API token of a user.

        Args:
            user_id: The owner.
            name: What the owner calls it.
            token_hash: The hash the HTTP layer looks the token up by.
            prefix: The first characters of the secret (shown in lists).
            expires_at: When it stops working, or None.
            now: Its creation time.

        Returns:
            The token.

        Raises:
            NotFoundError: No such user.
            ConflictError: A token with this hash exists.
            StoreError: The database failed.
        """
        with self._write() as conn:
            if conn.scalar(sa.select(users.c.id).where(users.c.id == user_id)) is None:
                raise NotFoundError(f"no user has id {user_id}")
            row = conn.execute(
                sa.insert(api_tokens)
                .values(
                    user_id=user_id,
                    name=name,
                    token_hash=token_hash,
                    prefix=prefix,
                    created_at=now,
                    expires_at=expires_at,
                )
                .returning(*api_tokens.c)
            ).one()
        return _token(row._mapping)

    def token_by_hash(self, token_hash: str) -> tuple[ApiToken, User] | None:
        """The token with this hash and its owner (revoked or expired ones too), or None.

        Raises:
            StoreError: The database failed.
        """
        query = (
            sa.select(api_tokens, *_USER_COLUMNS)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.token_hash == token_hash)
        )
        with self._read() as conn:
            row = conn.execute(query.set_label_style(sa.LABEL_STYLE_TABLENAME_PLUS_COL)).first()
        if row is None:
            return None
        mapping = row._mapping
        token = {c.name: mapping[f"api_tokens_{c.name}"] for c in api_tokens.c}
        user = {c.name: mapping[f"users_{c.name}"] for c in _USER_COLUMNS}
        return _token(token), _user(user)

    def touch_token(self, id: int, now: float) -> None:
        """Remember that a token was used ``now``.

        Raises:
            StoreError: The database failed.
        """
        with self._write() as conn:
            conn.execute(
                sa.update(api_tokens).where(api_tokens.c.id == id).values(last_used_at=now)
            )

    def list_tokens(self, user_id: int | None = None) -> list[ApiToken]:
        """The tokens of one user, or of everyone, by id.

        Raises:
            StoreError: The database failed.
        """
        query = sa.select(api_tokens).order_by(api_tokens.c.id)
        if user_id is not None:
            query = query.where(api_tokens.c.user_id == user_id)
        with self._read() as conn:
            return [_token(row._mapping) for row in conn.execute(query)]

    def revoke_token(self, id: int, *, now: float) -> ApiToken:
        """Revoke a token (revoking twice keeps the first time).

        Raises:
            NotFoundError: No such token.
            StoreError: The database failed.
        """
        stmt = (
            sa.update(api_tokens)
            .where(api_tokens.c.id == id)
            .values(revoked_at=sa.func.coalesce(api_tokens.c.revoked_at, now))
            .returning(*api_tokens.c)
        )
        with self._write() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise NotFoundError(f"no token has id {id}")
        return _token(row._mapping)

    def audit(
        self,
        actor: str,
        action: str,
        *,
        target: str = "",
        source_ip: str = "",
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
        now: float,
    ) -> AuditEntry:
        """Record who did what, to what, from where, and how it ended.

        Args:
            actor: The user name (or ``"system"``).
            action: What, e.g. ``node.delete``.
            target: What it was done to.
            source_ip: The client's address.
            outcome: ``ok``, ``denied``, ``failed``, ...
            detail: More, as JSON-able values.
            now: When.

        Returns:
            The entry.

        Raises:
            StoreError: The database failed.
        """
        stmt = (
            sa.insert(audit_log)
            .values(
                at=now,
                actor=actor,
                action=action,
                target=target,
                source_ip=source_ip,
                outcome=outcome,
                detail=dict(detail or {}),
            )
            .returning(*audit_log.c)
        )
        with self._write() as conn:
            return _entry(conn.execute(stmt).one()._mapping)

    def list_audit(
        self,
        *,
        page: int,
        page_size: int,
        actor: str | None = None,
        action: str | None = None,
    ) -> Page[AuditEntry]:
        """One page of the audit log, newest first.

        Args:
            page: The page, from 1.
            page_size: Entries per page.
            actor: Only this actor's entries.
            action: Only entries of this action.

        Returns:
            The page.

        Raises:
            ValueError: ``page`` or ``page_size`` below 1.
            StoreError: The database failed.
        """
        query = sa.select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        if actor is not None:
            query = query.where(audit_log.c.actor == actor)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        return self._page(query, _entry, page=page, page_size=page_size)
