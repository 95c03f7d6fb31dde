"""The store's users, API tokens, audit log and update jobs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.transport.manager.test_store_nodes import together
from transport.manager._errors import ConflictError, NotFoundError
from transport.manager._model import Role, UserStatus
from transport.manager._store import PENDING, Store


def test_users(store: Store) -> None:
    alice = store.create_user("alice", "hash-a", role=Role.ADMIN, email="a@x", now=10.0)
    assert (alice.username, alice.role, alice.status, alice.email) == (
        "alice",
        Role.ADMIN,
        UserStatus.ACTIVE,
        "a@x",
    )
    assert alice.created_at == alice.updated_at == 10.0 and alice.last_login_at is None
    assert store.get_user(alice.id) == alice == store.get_user_by_name("alice")
    assert store.credentials("alice") == (alice, "hash-a")
    with pytest.raises(ConflictError, match="alice exists"):
        store.create_user("alice", "other", role=Role.VIEWER, now=11.0)
    bob = store.create_user("bob", "hash-b", role=Role.VIEWER, now=12.0)  # no email: fine
    carol = store.create_user("carol", "hash-c", role=Role.OPERATOR, now=13.0)
    page = store.list_users(page=1, page_size=2)
    assert [u.username for u in page.items] == ["alice", "bob"] and page.total == 3
    assert [u.username for u in store.list_users(page=2, page_size=2).items] == ["carol"]
    disabled = store.set_user_status(bob.id, UserStatus.DISABLED, now=20.0)
    assert disabled.status is UserStatus.DISABLED and disabled.updated_at == 20.0
    assert store.set_role(carol.id, Role.ADMIN, now=21.0).role is Role.ADMIN
    store.set_password(carol.id, "new-hash", now=22.0)
    assert store.credentials("carol")[1] == "new-hash"
    logged = store.record_login(alice.id, ip="192.0.2.1", now=30.0)
    assert (logged.last_login_at, logged.last_login_ip) == (30.0, "192.0.2.1")
    for call in (
        lambda: store.get_user(999),
        lambda: store.get_user_by_name("nobody"),
        lambda: store.credentials("nobody"),
        lambda: store.set_user_status(999, UserStatus.ACTIVE, now=1.0),
        lambda: store.set_password(999, "x", now=1.0),
        lambda: store.set_role(999, Role.VIEWER, now=1.0),
        lambda: store.record_login(999, ip="", now=1.0),
    ):
        with pytest.raises(NotFoundError):
            call()


def test_concurrent_creation_of_one_user(store: Store) -> None:
    def create(index: int) -> bool:
        try:
            store.create_user("same", f"hash-{index}", role=Role.VIEWER, now=1.0)
        except ConflictError:
            return False
        return True

    assert sorted(together(8, create)) == [False] * 7 + [True]


def test_tokens(store: Store) -> None:
    alice = store.create_user("alice", "h", role=Role.ADMIN, now=1.0)
    bob = store.create_user("bob", "h", role=Role.VIEWER, now=1.0)
    token = store.create_token(alice.id, "ci", "sha-1", "hvt_abcd", expires_at=100.0, now=2.0)
    assert (token.user_id, token.name, token.prefix, token.created_at, token.expires_at) == (
        alice.id,
        "ci",
        "hvt_abcd",
        2.0,
        100.0,
    )
    assert token.last_used_at is None and token.revoked_at is None
    other = store.create_token(bob.id, "script", "sha-2", "hvt_efgh", expires_at=None, now=3.0)
    with pytest.raises(ConflictError):
        store.create_token(bob.id, "dup", "sha-2", "hvt_efgh", expires_at=None, now=3.0)
    with pytest.raises(NotFoundError):
        store.create_token(999, "x", "sha-3", "hvt_", expires_at=None, now=3.0)
    assert store.token_by_hash("sha-1") == (token, alice)
    assert store.token_by_hash("nope") is None
    store.touch_token(token.id, 5.0)
    found = store.token_by_hash("sha-1")
    assert found is not None and found[0].last_used_at == 5.0
    assert [t.id for t in store.list_tokens()] == [token.id, other.id]
    assert [t.id for t in store.list_tokens(bob.id)] == [other.id]
    revoked = store.revoke_token(other.id, now=6.0)
    assert revoked.revoked_at == 6.0
    assert store.revoke_token(other.id, now=7.0).revoked_at == 6.0
    with pytest.raises(NotFoundError):
        store.revoke_token(999, now=1.0)
    # A disabled owner comes with the token, for the HTTP layer to refuse.
    store.set_user_status(bob.id, UserStatus.DISABLED, now=8.0)
    found = store.token_by_hash("sha-2")
    assert found is not None and found[1].status is UserStatus.DISABLED
    assert found[0].revoked_at == 6.0


def test_audit_log(store: Store) -> None:
    first = store.audit("alice", "login", source_ip="192.0.2.1", now=1.0)
    assert (first.actor, first.action, first.target, first.outcome, dict(first.detail)) == (
        "alice",
        "login",
        "",
        "ok",
        {},
    )
    store.audit("bob", "node.delete", target="node-1", outcome="denied", detail={"id": 3}, now=2.0)
    store.audit("alice", "node.delete", target="node-2", detail={"id": 4}, now=3.0)
    page = store.list_audit(page=1, page_size=10)
    assert [e.at for e in page.items] == [3.0, 2.0, 1.0] and page.total == 3
    assert page.items[1].detail == {"id": 3} and page.items[1].outcome == "denied"
    mine = store.list_audit(page=1, page_size=10, actor="alice")
    assert [e.action for e in mine.items] == ["node.delete", "login"]
    deletes = store.list_audit(page=1, page_size=1, action="node.delete")
    assert deletes.total == 2 and [e.target for e in deletes.items] == ["node-2"]
    both = store.list_audit(page=1, page_size=10, actor="bob", action="node.delete")
    assert [e.target for e in both.items] == ["node-1"]


def test_update_jobs(store: Store) -> None:
    job = store.create_update_job(
        "alice", "daemon", "1.2.0", "https://x/pkg", "ab" * 32, ["n2", "n1", "n2"], now=5.0
    )
    assert (job.actor, job.component, job.version, job.download_url, job.hash) == (
        "alice",
        "daemon",
        "1.2.0",
        "https://x/pkg",
        "ab" * 32,
    )
    assert [(t.node_id, t.state, t.updated_at) for t in job.targets] == [
        ("n1", PENDING, 5.0),
        ("n2", PENDING, 5.0),
    ]
    target = store.set_update_target(job.id, "n1", state="accepted", update_id="u-1", now=6.0)
    assert (target.state, target.update_id, target.updated_at) == ("accepted", "u-1", 6.0)
    store.set_update_target(job.id, "n1", state="succeeded", message="done", now=7.0)
    again = store.get_update_job(job.id)
    assert again.targets[0].update_id == "u-1"  # kept
    assert (again.targets[0].state, again.targets[0].message) == ("succeeded", "done")
    with pytest.raises(NotFoundError):
        store.set_update_target(job.id, "n9", state="x", now=1.0)
    with pytest.raises(NotFoundError):
        store.get_update_job(999)
    second = store.create_update_job("bob", "agent", "2", "", "", [], now=8.0)
    assert second.targets == ()
    page = store.list_update_jobs(1, 1)
    assert [j.id for j in page.items] == [second.id] and page.total == 2
    assert [j.id for j in store.list_update_jobs(2, 1).items] == [job.id]
    assert store.list_update_jobs(2, 1).items[0].targets == again.targets
