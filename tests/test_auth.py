"""protocol._auth: password rules, argon2id hashing, users and sites, sessions (idle and
absolute timeouts, sign-out, disabling), sign-in audit and throttling."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from protocol._auth import (Throttle, SignInRefused, add_site, add_user, authenticate, check_password,
                            disable_user, end_session, hash_password, list_sites, list_users, new_session,
                            resolve_session, sessions_of, verify_password)
from protocol._errors import InputError
from protocol._registry import open_registry

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a long pass phrase"


class Clock:
    """A settable UTC clock for the registry's ``now``."""

    def __init__(self) -> None:
        self.t = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.t


@pytest.fixture
def reg(db_url: str):
    """A registry on SQLite, then on PostgreSQL."""
    with open_registry(db_url, create=True) as r:
        r.now = Clock()
        add_site(r, "uk-leeds")
        add_user(r, "alice", "coordinator", ["uk-leeds"], PASSWORD)
        yield r


@pytest.mark.parametrize("password, message", [
    ("short", "expected at least 12 characters, got 5"),
    ("password1234", "list of common passwords"),
    ("aaaaaaaaaaaaaaaa", "list of common passwords"),
    ("alice-is-my-password", "must not contain the user name"),
    ("x" * 257, "expected at most 256 characters"),
])
def test_weak_passwords_are_refused(password: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_password("alice", password)


def test_a_pass_phrase_is_accepted_without_composition_rules() -> None:
    check_password("alice", "correct mule battery paper")  # no digits, no capitals: fine


def test_passwords_are_hashed_with_argon2id() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "x")
    assert not verify_password("not a hash", PASSWORD)


def test_users_and_sites(reg) -> None:
    assert [(u.name, u.role, u.sites) for u in list_users(reg)] == [("alice", "coordinator", ("uk-leeds",))]
    assert dict(list_sites(reg)) == {"default": 0, "uk-leeds": 0}
    row = reg._conn.execute("SELECT password FROM users WHERE name = 'alice'").fetchone()[0]
    assert PASSWORD not in row and row.startswith("$argon2id$")
    with pytest.raises(InputError, match="already exists"):
        add_user(reg, "alice", "monitor", [], PASSWORD)
    with pytest.raises(InputError, match="no site 'nowhere'"):
        add_user(reg, "bob", "coordinator", ["nowhere"], PASSWORD)
    with pytest.raises(InputError, match="at least one site"):
        add_user(reg, "bob", "coordinator", [], PASSWORD)
    with pytest.raises(InputError, match="expected one of"):
        add_user(reg, "bob", "nurse", ["uk-leeds"], PASSWORD)
    with pytest.raises(InputError, match="already exists"):
        add_site(reg, "uk-leeds")
    assert [u.name for u in list_users(reg)] == ["alice"]  # nothing half-written


def test_sign_in_is_audited_and_never_says_which_part_was_wrong(reg) -> None:
    throttle = Throttle()
    assert authenticate(reg, "alice", PASSWORD, "10.0.0.1", throttle).name == "alice"
    with pytest.raises(SignInRefused) as wrong:
        authenticate(reg, "alice", "wrong password here", "10.0.0.1", throttle)
    with pytest.raises(SignInRefused) as unknown:
        authenticate(reg, "nobody", PASSWORD, "10.0.0.1", throttle)
    assert wrong.value.message == unknown.value.message
    outcomes = [r[0] for r in reg._conn.execute("SELECT outcome FROM signins ORDER BY seq")]
    assert outcomes == ["signed in", "wrong password", "unknown user"]
    with pytest.raises(Exception, match="append-only"):
        reg._conn.execute("DELETE FROM signins")


def test_throttling_backs_off_per_address_and_never_locks_out_for_long() -> None:
    now = [0.0]
    throttle = Throttle(free=3, cap=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait("alice", "10.0.0.9") == 0
        throttle.failed("alice", "10.0.0.9")
    assert throttle.wait("alice", "10.0.0.9") == pytest.approx(1.0)
    assert throttle.wait("alice", "10.0.0.7") == 0  # the real user elsewhere is not locked out
    for _ in range(20):
        throttle.failed("alice", "10.0.0.9")
    assert throttle.wait("alice", "10.0.0.9") == pytest.approx(60.0)  # capped
    now[0] += 61
    assert throttle.wait("alice", "10.0.0.9") == 0


def test_throttled_sign_in_is_refused_before_the_password_is_checked(reg) -> None:
    throttle = Throttle(free=2)
    for _ in range(2):
        with pytest.raises(SignInRefused):
            authenticate(reg, "alice", "wrong password here", "10.0.0.2", throttle)
    with pytest.raises(SignInRefused, match="too many failed sign-ins") as refused:
        authenticate(reg, "alice", PASSWORD, "10.0.0.2", throttle)
    assert refused.value.retry_after
    assert reg._conn.execute("SELECT outcome FROM signins ORDER BY seq DESC LIMIT 1").fetchone()[0] == "throttled"


def test_sessions_end_when_idle_old_signed_out_or_disabled(reg) -> None:
    clock = reg.now
    token = new_session(reg, "alice", "10.0.0.1")
    stored = reg._conn.execute("SELECT id_hash FROM sessions").fetchone()[0]
    assert token not in stored  # only the hash is kept
    assert resolve_session(reg, token)[0].name == "alice"
    clock.t += dt.timedelta(minutes=29)
    assert resolve_session(reg, token) is not None  # used: the idle timer restarts
    clock.t += dt.timedelta(minutes=31)
    assert resolve_session(reg, token) is None  # idle for more than 30 minutes

    token = new_session(reg, "alice")
    for _ in range(25):  # used every 29 minutes: still ends 12 hours after sign-in
        clock.t += dt.timedelta(minutes=29)
        alive = resolve_session(reg, token) is not None
    assert not alive

    token = new_session(reg, "alice")
    assert [s.user for s in sessions_of(reg, "alice")] == ["alice"]
    assert end_session(reg, token)
    assert resolve_session(reg, token) is None
    token = new_session(reg, "alice")
    disable_user(reg, "alice")
    assert resolve_session(reg, token) is None
    with pytest.raises(SignInRefused, match="disabled"):
        authenticate(reg, "alice", PASSWORD, "10.0.0.1", Throttle())
    assert resolve_session(reg, "made-up") is None


def test_the_cli_manages_users_and_sites(tmp_path: Path, monkeypatch, capsys) -> None:
    from protocol._cli import main

    db = str(tmp_path / "c.db")
    def run(*args: str, stdin: str = "") -> int:
        import io
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as done:
            main(list(args))
        return done.value.code

    assert run("sites", "add", "uk-leeds", "--db", db) == 0
    assert run("users", "add", "alice", "--role", "coordinator", "--site", "uk-leeds", "--password-stdin",
               "--db", db, stdin=PASSWORD + "\n") == 0
    assert run("users", "add", "bob", "--role", "coordinator", "--site", "uk-leeds", "--password-stdin",
               "--db", db, stdin="short\n") == 2
    err = capsys.readouterr().err
    assert "error: password: expected at least 12 characters" in err and "Traceback" not in err
    assert run("users", "list", "--db", db) == 0
    assert "alice\tcoordinator\tuk-leeds" in capsys.readouterr().out
    assert run("users", "disable", "alice", "--db", db) == 0
    assert run("users", "disable", "alice", "--db", db) == 2
