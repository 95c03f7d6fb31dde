"""Properties of the install plan and its recovery, on a model of the file system.

The model interprets the plan's actions on dictionaries (files, symlinks, directories, the
journal, the component records) with the same contract as the real executor. Hypothesis
chooses the kind of target, whether the staged file is altered after verification, whether
the backup rots, whether an older backup exists, whether the trial succeeds, and where the
process crashes: during the update and again during each recovery. Whatever it picks, the
target always holds the old or the new version (or, only when the backup rotted, the older
fallback), never anything unverified, and once recovery finishes the records agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, strategies as st
from updater_testlib import PROPS

from updater import Reason
from updater._plan import (
    Action,
    Backup,
    CheckTree,
    Discard,
    Install,
    Journal,
    Kind,
    Outcome,
    Phase,
    Prune,
    RecordCommit,
    Release,
    RemoveJournal,
    Restore,
    SwapLink,
    WriteJournal,
    abort_steps,
    commit_steps,
    leftovers,
    prepare_steps,
    prune_candidates,
    recover,
    rollback_steps,
    switch_steps,
)

KEEP = 2


def h(content: str) -> str:
    """The model's hash: content is a token, its hash is derived from it."""
    return f"h({content})"


class Crash(Exception):
    """The process died before an action."""


class ModelError(Exception):
    def __init__(self, reason: Reason) -> None:
        self.reason = reason


@dataclass
class Model:
    files: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)
    journal: Journal | None = None
    installed: Release | None = None
    floor: int = 5
    backups: list[Release] = field(default_factory=list)
    crash_in: int | None = None
    history: list[str] = field(default_factory=list)  # target content after every action
    target: str = "/t"
    kind: Kind = Kind.FILE

    def content(self, path: str) -> str | None:
        if self.kind is Kind.FILE:
            return self.files.get(path)
        dest = self.links.get(path)
        return None if dest is None else self.dirs.get(dest)

    def observe(self) -> str | None:
        if self.kind is Kind.FILE:
            c = self.files.get(self.target)
            return None if c is None else h(c)
        return self.links.get(self.target)

    def intact(self, release: Release) -> bool:
        store = self.files if self.kind is Kind.FILE else self.dirs
        c = store.get(release.path)
        return c is not None and h(c) == release.sha256

    def run(self, steps: list[Action] | tuple[Action, ...]) -> None:
        for step in steps:
            if self.crash_in is not None:
                if self.crash_in == 0:
                    self.crash_in = None
                    raise Crash
                self.crash_in -= 1
            self.apply(step)
            c = self.content(self.target)
            assert c is not None, f"target missing after {step}"
            self.history.append(c)

    def apply(self, action: Action) -> None:
        match action:
            case WriteJournal(journal=j):
                self.journal = j
            case RemoveJournal():
                self.journal = None
            case Backup(target=t, dest=d, sha256=s):
                if h(self.files[t]) != s:
                    raise ModelError(Reason.BACKUP_FAILED)
                self.files[d] = self.files[t]
            case CheckTree(path=p, sha256=s):
                if h(self.dirs.get(p, "")) != s:
                    raise ModelError(Reason.BACKUP_FAILED)
            case Install(source=src, target=t, sha256=s):
                if self.files.get(t) is not None and h(self.files[t]) == s:
                    return
                if src not in self.files or h(self.files[src]) != s:
                    raise ModelError(Reason.HASH_MISMATCH)
                self.files[t] = self.files[src]
            case SwapLink(link=link, dest=d, sha256=s):
                if h(self.dirs.get(d, "")) != s:
                    raise ModelError(Reason.HASH_MISMATCH)
                self.links[link] = d
            case Restore(kind=_, target=t, candidates=cands):
                for r in cands:
                    if self.observe() == (r.sha256 if self.kind is Kind.FILE else r.path):
                        return
                    if not self.intact(r):
                        continue
                    if self.kind is Kind.FILE:
                        self.files[t] = self.files[r.path]
                    else:
                        self.links[t] = r.path
                    return
                raise ModelError(Reason.BACKUP_CORRUPT)
            case RecordCommit(new=new, old=old):
                self.installed = new
                self.floor = max(self.floor, new.counter)
                self.backups = [b for b in self.backups if b.path != old.path] + [old]
            case Prune(keep=keep, protect=protect, sweep=sweep):
                doomed = prune_candidates(self.backups, keep=keep, protect=protect)
                for r in doomed:
                    (self.files if self.kind is Kind.FILE else self.dirs).pop(r.path, None)
                self.backups = [b for b in self.backups if b not in doomed]
                if sweep is not None:
                    inside = [p for p in self.files if p.startswith(sweep + "/")]
                    wanted = {b.path for b in self.backups} | protect
                    for path in leftovers(inside, wanted):
                        del self.files[path]
            case Discard(path=p):
                self.files.pop(p, None)
                self.dirs.pop(p, None)


@dataclass(frozen=True)
class Scenario:
    kind: Kind
    tamper_staged: bool
    rot_backup: bool
    fallback: bool
    trial_ok: bool
    crash_at: int | None
    recovery_crashes: tuple[int, ...]


scenarios = st.builds(
    Scenario,
    kind=st.sampled_from(Kind),
    tamper_staged=st.booleans(),
    rot_backup=st.booleans(),
    fallback=st.booleans(),
    trial_ok=st.booleans(),
    crash_at=st.none() | st.integers(0, 12),
    recovery_crashes=st.lists(st.integers(0, 6), max_size=3).map(tuple),
)


def setup(sc: Scenario) -> tuple[Model, Journal]:
    m = Model(kind=sc.kind)
    fallbacks: tuple[Release, ...] = ()
    if sc.kind is Kind.FILE:
        m.files.update({"/t": "OLD", "/staged": "NEW"})
        old = Release("1.0", 5, h("OLD"), "/backups/1.0")
        new = Release("2.0", 7, h("NEW"), "/staged")
        if sc.fallback:
            m.files["/backups/0.9"] = "OLDER"
            fallbacks = (Release("0.9", 3, h("OLDER"), "/backups/0.9"),)
    else:
        m.dirs.update({"/v/1.0": "OLD", "/v/2.0": "NEW"})
        m.links["/t"] = "/v/1.0"
        old = Release("1.0", 5, h("OLD"), "/v/1.0")
        new = Release("2.0", 7, h("NEW"), "/v/2.0")
        if sc.fallback:
            m.dirs["/v/0.9"] = "OLDER"
            fallbacks = (Release("0.9", 3, h("OLDER"), "/v/0.9"),)
    m.backups = list(fallbacks)
    journal = Journal("txn", "agent", sc.kind, "/t", old, new, fallbacks=fallbacks)
    return m, journal


def update_flow(m: Model, sc: Scenario, journal: Journal) -> str:
    """What the manager does, on the model. Returns how it ended."""
    try:
        m.run(prepare_steps(journal))
    except ModelError:
        m.run(abort_steps(journal))
        return "aborted"
    if sc.tamper_staged:  # someone alters the verified staged artifact
        store = m.files if sc.kind is Kind.FILE else m.dirs
        store[journal.new.path] = "EVIL"
    try:
        m.run(switch_steps(journal))
    except ModelError:
        m.run(abort_steps(journal))
        return "aborted"
    switched = journal.at(Phase.SWITCHED)
    if sc.rot_backup:  # the backup (no longer live once switched) rots
        store = m.files if sc.kind is Kind.FILE else m.dirs
        store[journal.old.path] = "ROT"
    if sc.trial_ok:
        m.run(commit_steps(switched, keep=KEEP))
        return "committed"
    try:
        m.run(rollback_steps(switched, Reason.START_FAILED, keep=KEEP))
    except ModelError as exc:
        if exc.reason is not Reason.BACKUP_CORRUPT:
            raise
        return "stuck"
    return "rolled_back"


def restart(m: Model, crashes: list[int]) -> str | None:
    """Recover until no journal is left (crashing as told). Returns the last outcome."""
    outcome = None
    if m.journal is None:
        # Crashed before the first journal write: startup sweeps the staging area
        # (UpdateManager.recover removes staged downloads no journal refers to).
        m.files.pop("/staged", None)
    for _ in range(10):
        if m.journal is None:
            return outcome
        decision = recover(m.journal, m.observe(), now=0.0, keep=KEEP)
        m.crash_in = crashes.pop(0) if crashes else None
        try:
            m.run(decision.steps)
        except Crash:
            continue
        except ModelError as exc:
            if exc.reason is not Reason.BACKUP_CORRUPT:
                raise
            return "stuck"
        outcome = decision.outcome.value
    raise AssertionError("recovery did not converge")


@PROPS
@given(scenarios)
def test_crash_anywhere_then_recover_leaves_old_or_new(sc: Scenario) -> None:
    m, journal = setup(sc)
    m.crash_in = sc.crash_at
    try:
        ended = update_flow(m, sc, journal)
    except Crash:
        ended = restart(m, list(sc.recovery_crashes)) or "recovered"
    allowed = {"OLD", "NEW"} | ({"OLDER"} if sc.rot_backup and sc.fallback else set())
    assert set(m.history) <= allowed, f"target held {set(m.history) - allowed}"
    assert "EVIL" not in m.history
    assert "ROT" not in m.history
    final = m.content("/t")
    assert final in allowed
    if ended == "stuck":
        # Only a rotten backup with nothing older makes a rollback impossible; the journal
        # stays for a human and the target still holds a complete, verified version.
        assert sc.rot_backup
        assert not sc.fallback
        assert m.journal is not None
        return
    assert m.journal is None
    if final == "NEW":
        assert m.installed is not None
        assert m.installed.version == "2.0"
        assert m.floor == 7
        assert not sc.tamper_staged
    else:
        assert m.floor == 5, "a version that was not committed never raises the floor"
    if sc.crash_at is None and not sc.tamper_staged:
        assert final == ("NEW" if sc.trial_ok else ("OLDER" if sc.rot_backup else "OLD"))
    # Staged leftovers are cleaned up, and backups respect the retention rule.
    if sc.kind is Kind.FILE:
        assert "/staged" not in m.files
    assert len(m.backups) <= max(KEEP, 2)


@PROPS
@given(
    attempts=st.integers(0, 5),
    max_attempts=st.integers(1, 4),
    now=st.floats(0, 200),
    deadline=st.floats(0, 200),
)
def test_daemon_trial_continues_only_within_limits(
    attempts: int, max_attempts: int, now: float, deadline: float
) -> None:
    """A daemon found mid-trial keeps trying only before its deadline and attempt limit."""
    old = Release("1.0", 1, "d1", "/v/1.0")
    new = Release("2.0", 2, "d2", "/v/2.0")
    j = Journal(
        "t",
        "daemon",
        Kind.LINK,
        "/current",
        old,
        new,
        phase=Phase.SWITCHED,
        trial_deadline=deadline,
        attempts=attempts,
        max_attempts=max_attempts,
    )
    decision = recover(j, "/v/2.0", now=now, keep=KEEP)
    if now < deadline and attempts < max_attempts:
        assert decision.outcome is Outcome.CONTINUE_TRIAL
        step = decision.steps[0]
        assert isinstance(step, WriteJournal)
        assert step.journal.attempts == attempts + 1
    else:
        assert decision.outcome is Outcome.ROLLED_BACK
        expected = Reason.START_FAILED if attempts >= max_attempts else Reason.TRIAL_EXPIRED
        assert decision.reason is expected


@given(
    st.lists(st.integers(0, 50), max_size=12, unique=True),
    st.integers(1, 5),
    st.data(),
)
def test_prune_keeps_newest_and_protected(
    counters: list[int], keep: int, data: st.DataObject
) -> None:
    backups = [Release(str(c), c, "x", f"/b/{c}") for c in counters]
    protect = frozenset(data.draw(st.sets(st.sampled_from([b.path for b in backups] or ["/x"]))))
    doomed = prune_candidates(backups, keep=keep, protect=protect)
    kept = [b for b in backups if b not in doomed]
    assert not any(b.path in protect for b in doomed)
    newest = sorted(backups, key=lambda b: b.counter, reverse=True)[:keep]
    assert all(b in kept for b in newest)
    assert len(kept) <= keep + len(protect)


@given(
    phase=st.sampled_from(Phase),
    reason=st.none() | st.sampled_from([r.value for r in Reason]),
    deadline=st.none() | st.floats(0, 1e10, allow_nan=False).map(lambda x: round(x, 3)),
    attempts=st.integers(0, 10),
)
def test_journal_round_trip(
    phase: Phase, reason: str | None, deadline: float | None, attempts: int
) -> None:
    j = Journal(
        "t",
        "agent",
        Kind.FILE,
        "/t",
        Release("1", 1, "a", "/a"),
        Release("2", 2, "b", "/b"),
        phase=phase,
        fallbacks=(Release("0", 0, "c", "/c"),),
        reason=reason,
        trial_deadline=deadline,
        attempts=attempts,
    )
    back = Journal.from_bytes(j.to_bytes())
    assert back == j or (deadline is not None and back.trial_deadline == pytest.approx(deadline))


def test_journal_refuses_other_documents() -> None:
    with pytest.raises(ValueError, match="journal"):
        Journal.from_bytes(b'{"spec": 9}')


@dataclass(frozen=True)
class Attempt:
    """One update in a series: how its trial ends, and where (if anywhere) it crashes."""

    trial_ok: bool
    crash_at: int | None


@PROPS
@given(st.lists(st.builds(Attempt, st.booleans(), st.none() | st.integers(0, 12)), max_size=12))
def test_backups_never_exceed_keep_however_updates_end(attempts: list[Attempt]) -> None:
    """Whatever a series of updates of one file does (commit, roll back, crash anywhere and
    be finished by the next start), once each is over at most ``keep`` backup files remain,
    each a recorded, intact backup: stray files there (from a crash, or older code) are
    swept too."""
    m = Model(kind=Kind.FILE)
    m.files.update({"/t": "V0", "/backups/stray-from-old-code.bin": "JUNK"})
    version = Release("v0", 0, h("V0"), "")
    for i, attempt in enumerate(attempts, start=1):
        old = Release(version.version, version.counter, version.sha256, f"/backups/{i}.bin")
        m.files[f"/staged{i}"] = f"V{i}"
        new = Release(f"v{i}", i, h(f"V{i}"), f"/staged{i}")
        journal = Journal(
            str(i), "agent", Kind.FILE, "/t", old, new, fallbacks=tuple(reversed(m.backups))
        )
        sc = Scenario(Kind.FILE, False, False, False, attempt.trial_ok, attempt.crash_at, ())
        m.crash_in = attempt.crash_at
        try:
            update_flow(m, sc, journal)
        except Crash:
            m.crash_in = None
            restart(m, [])
            # Every start prunes each file agent's backups, journal or not (recover_locked).
            m.run([Prune("agent", KEEP, frozenset(), "/backups")])
        m.files.pop(f"/staged{i}", None)  # a crash before the journal: the start sweeps it
        assert m.journal is None
        content = m.files["/t"]
        version = new if content == f"V{i}" else version
        stored = sorted(p for p in m.files if p.startswith("/backups/"))
        assert stored == sorted(b.path for b in m.backups)
        assert len(stored) <= KEEP
        assert all(h(m.files[b.path]) == b.sha256 for b in m.backups)
