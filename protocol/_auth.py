"""Users, sites, passwords, sessions and sign-in throttling, stored in the registry.

Passwords are hashed with argon2id (``argon2.PasswordHasher`` from argon2-cffi); a password
has at least 12 characters, at most 256, is not on the shipped list of common passwords and
does not contain the user's name; there are no composition rules (OWASP ASVS V6.2).

A session is a random id (``secrets.token_urlsafe``) held by the browser in a cookie; the
registry keeps only its SHA-256, the user, when it began and when it was last used. It ends
after 30 minutes without use, 12 hours after sign-in, at sign-out, or when the user is
disabled. Every sign-in attempt (success, wrong password, unknown or disabled user,
throttled) is written to the append-only ``signins`` table.

>>> from protocol._registry import open_registry                       # doctest: +SKIP
>>> with open_registry("protocol.db", create=True) as reg:            # doctest: +SKIP
...     add_site(reg, "uk-leeds")
...     add_user(reg, "alice", "coordinator", ["uk-leeds"], "a long pass phrase")
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._errors import InputError, Problem

__all__ = ["ABSOLUTE_TIMEOUT", "IDLE_TIMEOUT", "MIN_PASSWORD", "ROLES", "Session", "SignInRefused", "Throttle",
           "User", "add_site", "add_user", "authenticate", "check_password", "disable_user", "end_session",
           "list_sites", "list_users", "new_session", "resolve_session", "sessions_of", "verify_password"]

#: Roles and what each may do (the access layer, :mod:`protocol._access`, enforces them).
ROLES = {
    "coordinator": "records for the patients of their sites",
    "pharmacist": "verifies doses (signs dose-critical entries) for their sites; reads",
    "investigator": "approves decisions and verifies doses for their sites; reads",
    "monitor": "reads every site; writes nothing",
    "admin": "manages users and sites; sees no patient data",
}
MIN_PASSWORD = 12
MAX_PASSWORD = 256
#: A session ends after this long without a request ...
IDLE_TIMEOUT = dt.timedelta(minutes=30)
#: ... and this long after sign-in, whatever happens.
ABSOLUTE_TIMEOUT = dt.timedelta(hours=12)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_COMMON = Path(__file__).resolve().parent / "web" / "common-passwords.txt"


class SignInRefused(Exception):
    """A sign-in that did not succeed; ``message`` is what the sign-in page shows (never which
    of the name or the password was wrong)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class User:
    """A user account: ``sites`` are the sites whose patients it works with."""

    name: str
    role: str
    sites: tuple[str, ...]
    created: str
    disabled: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``protocol users list --json``)."""
        return {"name": self.name, "role": self.role, "sites": list(self.sites), "created": self.created,
                "disabled": self.disabled}


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: ``key`` is the hash the registry stores (never the cookie's value)."""

    key: str
    user: str
    created: str
    last_seen: str
    address: str | None
    agent: str | None


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, the library's RFC 9106 low-memory profile


@lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    return frozenset(line.strip().lower() for line in _COMMON.read_text(encoding="utf-8").splitlines()
                     if line.strip() and not line.startswith("#"))


def check_password(name: str, password: str, field: str = "password") -> None:
    """Refuse a password that is too short, too long, common, or contains the user's name.

    >>> check_password("alice", "correct horse battery")
    >>> check_password("alice", "short")
    Traceback (most recent call last):
    protocol._errors.InputError: password: expected at least 12 characters, got 5
    """
    if len(password) < MIN_PASSWORD:
        raise InputError(Problem("", field, f"expected at least {MIN_PASSWORD} characters, got {len(password)}"))
    if len(password) > MAX_PASSWORD:
        raise InputError(Problem("", field, f"expected at most {MAX_PASSWORD} characters, got {len(password)}"))
    folded = password.strip().lower()
    if folded in _common() or len(set(folded)) < 4:
        raise InputError(Problem("", field, "this password is on the list of common passwords: choose another "
                                 "(a pass phrase of several words is easiest)"))
    if name and name.lower() in folded:
        raise InputError(Problem("", field, "the password must not contain the user name"))


def hash_password(password: str) -> str:
    """The argon2id hash of a password (``$argon2id$v=19$...``)."""
    return _hasher().hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored argon2 hash (constant-time, in the library)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_hasher().verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def _stamp(reg: Any) -> str:
    return reg._stamp()


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- sites and users


def add_site(reg: Any, site: str) -> None:
    """Add a trial site (a centre): ``protocol sites add uk-leeds``."""
    if not _NAME.match(site or ""):
        raise InputError(Problem("", "SITE", "expected a site id of letters, digits, '_', '.', '-' (at most 64), "
                                 f"got {site!r}"))
    with reg._write() as conn:
        if conn.execute("SELECT 1 FROM sites WHERE id = ?", (site,)).fetchone():
            raise InputError(Problem("", "SITE", f"the site {site!r} already exists"))
        conn.execute("INSERT INTO sites (id, created) VALUES (?, ?)", (site, _stamp(reg)))


def list_sites(reg: Any) -> list[tuple[str, int]]:
    """Every site with its number of patients, by id."""
    with reg._read() as conn:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT s.id, count(p.patient) FROM sites AS s LEFT JOIN patient_sites AS p ON p.site = s.id "
            "GROUP BY s.id ORDER BY s.id")]


def add_user(reg: Any, name: str, role: str, sites: Iterable[str], password: str) -> User:
    """Create a user with a role, the sites it works with, and a checked, hashed password.

    An admin needs no site; every other role needs at least one (a monitor reads every site
    whatever its list says).
    """
    sites = tuple(dict.fromkeys(sites))
    if not _NAME.match(name or ""):
        raise InputError(Problem("", "NAME", "expected a user name of letters, digits, '_', '.', '@', '-' "
                                 f"(at most 64), got {name!r}"))
    if role not in ROLES:
        raise InputError(Problem("", "--role", f"expected one of {', '.join(ROLES)}, got {role!r}"))
    if role not in ("admin", "monitor") and not sites:
        raise InputError(Problem("", "--site", f"a {role} works with at least one site: give --site SITE"))
    check_password(name, password)
    hashed = hash_password(password)
    with reg._write() as conn:
        if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise InputError(Problem("", "NAME", f"the user {name!r} already exists (user names are never reused)"))
        known = {r[0] for r in conn.execute("SELECT id FROM sites")}
        for site in sites:
            if site not in known:
                raise InputError(Problem("", "--site", f"no site {site!r} (sites: {', '.join(sorted(known))}); add "
                                         f"it with `protocol sites add {site}`"))
        stamp = _stamp(reg)
        conn.execute("INSERT INTO users (name, role, password, created) VALUES (?, ?, ?, ?)",
                     (name, role, hashed, stamp))
        conn.executemany("INSERT INTO user_sites (user, site) VALUES (?, ?)", [(name, s) for s in sites])
    return User(name, role, sites, stamp)


def list_users(reg: Any) -> list[User]:
    """Every user, by name, with role, sites and whether it is disabled."""
    with reg._read() as conn:
        sites: dict[str, list[str]] = {}
        for user, site in conn.execute("SELECT user, site FROM user_sites ORDER BY site"):
            sites.setdefault(user, []).append(site)
        rows = conn.execute("SELECT name, role, created, disabled FROM users ORDER BY name").fetchall()
    return [User(n, r, tuple(sites.get(n, ())), c, d) for n, r, c, d in rows]


def get_user(reg: Any, name: str) -> tuple[User, str] | None:
    """The user and its password hash, or None."""
    with reg._read() as conn:
        row = conn.execute("SELECT name, role, created, disabled, password FROM users WHERE name = ?",
                           (name,)).fetchone()
        if row is None:
            return None
        sites = tuple(r[0] for r in conn.execute("SELECT site FROM user_sites WHERE user = ? ORDER BY site", (name,)))
    return User(row[0], row[1], sites, row[2], row[3]), row[4]


def disable_user(reg: Any, name: str) -> None:
    """Disable a user (a leaver): it can no longer sign in, and its sessions end now."""
    with reg._write() as conn:
        row = conn.execute("SELECT disabled FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise InputError(Problem("users", "NAME", f"no user {name!r}"))
        if row[0] is not None:
            raise InputError(Problem("users", "NAME", f"the user {name!r} was already disabled at {row[0]}"))
        stamp = _stamp(reg)
        # users rows are mutable (unlike the audit log): disabling is the one change made.
        conn.execute("UPDATE users SET disabled = ? WHERE name = ?", (stamp, name))
        conn.execute("UPDATE sessions SET ended = ? WHERE user = ? AND ended IS NULL", (stamp, name))


# --------------------------------------------------------------------------- sign-in and sessions


class Throttle:
    """Sign-in throttling per address and per (account, address), in memory.

    After ``free`` failures within ``window`` seconds, each further attempt from that address
    (or for that account from that address) waits ``2**(n - free)`` seconds after the last
    failure, at most ``cap`` seconds. Keying the account on the address too means an attacker
    elsewhere cannot lock the real user out; the cap means nobody is locked out for long.
    """

    def __init__(self, free: int = 5, window: float = 900.0, cap: float = 300.0,
                 clock: Any = time.monotonic) -> None:
        self.free, self.window, self.cap, self.clock = free, window, cap, clock
        self._fails: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, user: str, address: str) -> tuple[tuple[str, ...], ...]:
        return (("addr", address), ("user", user.lower(), address))

    def wait(self, user: str, address: str) -> float:
        """Seconds to wait before the next attempt may be checked (0: go ahead)."""
        now = self.clock()
        longest = 0.0
        with self._lock:
            for key in self._keys(user, address):
                fails = [t for t in self._fails.get(key, ()) if now - t < self.window]
                self._fails[key] = fails
                if len(fails) >= self.free:
                    delay = min(self.cap, 2.0 ** (len(fails) - self.free))
                    longest = max(longest, fails[-1] + delay - now)
        return max(0.0, longest)

    def failed(self, user: str, address: str) -> None:
        """Count a failed attempt."""
        now = self.clock()
        with self._lock:
            for key in self._keys(user, address):
                self._fails.setdefault(key, []).append(now)

    def succeeded(self, user: str, address: str) -> None:
        """Forget the failures of this account from this address."""
        with self._lock:
            self._fails.pop(("user", user.lower(), address), None)


_DUMMY_HASH: list[str] = []


def _audit(reg: Any, user: str, address: str | None, outcome: str) -> None:
    with reg._write() as conn:
        conn.execute("INSERT INTO signins (at, user, address, outcome) VALUES (?, ?, ?, ?)",
                     (_stamp(reg), user[:64], address, outcome))


def authenticate(reg: Any, name: str, password: str, address: str, throttle: Throttle) -> User:
    """Check a sign-in; return the user, or raise :class:`SignInRefused`. Every attempt is audited.

    An unknown user costs the same hash verification as a known one (no timing oracle).
    """
    wait = throttle.wait(name, address)
    if wait > 0:
        _audit(reg, name, address, "throttled")
        raise SignInRefused(f"too many failed sign-ins: try again in {int(wait) + 1} s", wait)
    found = get_user(reg, name) if name else None
    if found is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password(secrets.token_urlsafe(16)))
        verify_password(_DUMMY_HASH[0], password)
        throttle.failed(name, address)
        _audit(reg, name, address, "unknown user")
        raise SignInRefused("the user name or the password is wrong")
    user, stored = found
    if not verify_password(stored, password):
        throttle.failed(name, address)
        _audit(reg, name, address, "wrong password")
        raise SignInRefused("the user name or the password is wrong")
    if user.disabled:
        _audit(reg, name, address, "disabled user")
        raise SignInRefused("this account is disabled: ask an administrator")
    throttle.succeeded(name, address)
    _audit(reg, name, address, "signed in")
    return user


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_session(reg: Any, user: str, address: str | None = None, agent: str | None = None) -> str:
    """Start a session; returns the random id for the cookie (the registry keeps its hash)."""
    token = secrets.token_urlsafe(32)
    stamp = _stamp(reg)
    with reg._write() as conn:
        conn.execute("INSERT INTO sessions (id_hash, user, created, last_seen, address, agent) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (_key(token), user, stamp, stamp, address, (agent or "")[:200]))
    return token


def resolve_session(reg: Any, token: str | None) -> tuple[User, Session] | None:
    """The user of a live session (and the session), touching its last use; None when the id
    is unknown, ended, idle for more than 30 minutes, older than 12 hours, or its user disabled."""
    if not token or len(token) > 100:
        return None
    key = _key(token)
    now = reg.now()
    with reg._write() as conn:
        row = conn.execute("SELECT s.user, s.created, s.last_seen, s.address, s.agent, s.ended, u.disabled "
                           "FROM sessions AS s JOIN users AS u ON u.name = s.user WHERE s.id_hash = ?",
                           (key,)).fetchone()
        if row is None or row[5] is not None:
            return None
        user, created, last_seen, address, agent, _, disabled = row
        if disabled or now - _parse(last_seen) > IDLE_TIMEOUT or now - _parse(created) > ABSOLUTE_TIMEOUT:
            conn.execute("UPDATE sessions SET ended = ? WHERE id_hash = ?", (_stamp(reg), key))
            return None
        stamp = _stamp(reg)
        conn.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (stamp, key))
    found = get_user(reg, user)
    assert found is not None
    return found[0], Session(key, user, created, stamp, address, agent)


def end_session(reg: Any, token: str | None = None, *, key: str | None = None, user: str | None = None) -> bool:
    """End a session by its cookie value (sign-out) or by its stored ``key`` (from
    :func:`sessions_of`; then only the ``user``'s own). Returns whether one was ended."""
    key = key if token is None else _key(token)
    sql, args = "UPDATE sessions SET ended = ? WHERE id_hash = ? AND ended IS NULL", [_stamp(reg), key]
    if user is not None:
        sql += " AND user = ?"
        args.append(user)
    with reg._write() as conn:
        return conn.execute(sql, args).rowcount > 0


def sessions_of(reg: Any, user: str) -> list[Session]:
    """The user's sessions still live (newest first)."""
    now = reg.now()
    with reg._read() as conn:
        rows = conn.execute("SELECT id_hash, user, created, last_seen, address, agent FROM sessions "
                            "WHERE user = ? AND ended IS NULL ORDER BY created DESC", (user,)).fetchall()
    return [Session(*r) for r in rows
            if now - _parse(r[3]) <= IDLE_TIMEOUT and now - _parse(r[2]) <= ABSOLUTE_TIMEOUT]
