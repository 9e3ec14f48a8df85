"""Site-scoped access to the registry: the one place that decides what a user may see and do.

Every query that returns patient data goes through :class:`Scoped`, which filters by the
signed-in user's sites before anything is read. A patient of another site is answered
exactly as a patient that does not exist (:class:`NotFound`, a 404 on the web), so a URL
tells nothing about another site. What a role may do is :func:`allowed`; a refusal is
:class:`Forbidden` (a 403).

>>> from protocol._registry import open_registry                      # doctest: +SKIP
>>> with open_registry("protocol.db") as reg:                        # doctest: +SKIP
...     scoped = Scoped(reg, Actor("alice", "coordinator", frozenset({"uk-leeds"})))
...     [p.id for p in scoped.patients()]
['INF-0001']
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ._errors import InputError, PatientError, Problem

__all__ = ["ACTIONS", "Actor", "Forbidden", "NotFound", "Scoped", "allowed", "feed_patient"]

#: Action → the roles allowed to do it. Reading patient data is ``read``.
ACTIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"coordinator", "pharmacist", "investigator", "monitor"}),
    "record": frozenset({"coordinator"}),
    "register": frozenset({"coordinator"}),
    "sign": frozenset({"pharmacist", "investigator"}),
    "amend": frozenset({"pharmacist", "investigator"}),
    "feed": frozenset({"coordinator"}),
    "admin": frozenset({"admin"}),
}


class NotFound(PatientError):
    """No such patient for this user: it does not exist, or it belongs to another site."""


class Forbidden(Exception):
    """The user's role may not do this (``action``)."""

    def __init__(self, action: str, role: str) -> None:
        super().__init__(f"a {role} may not {action}")
        self.action = action
        self.role = role


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking: a user name, its role and its sites. A monitor reads every site."""

    name: str
    role: str
    sites: frozenset[str]

    @classmethod
    def of(cls, user: Any) -> Actor:
        """The actor of a :class:`protocol._auth.User`."""
        return cls(user.name, user.role, frozenset(user.sites))

    @property
    def every_site(self) -> bool:
        """True for a monitor: reads the patients of every site."""
        return self.role == "monitor"


def allowed(actor: Actor, action: str) -> bool:
    """Whether the actor's role may do ``action`` (a key of :data:`ACTIONS`).

    >>> allowed(Actor("m", "monitor", frozenset()), "record")
    False
    """
    return actor.role in ACTIONS.get(action, frozenset())


def _require(actor: Actor, action: str) -> None:
    if not allowed(actor, action):
        raise Forbidden(action, actor.role)


def _in_scope(method: Any) -> Any:
    """Run a :class:`Scoped` method with the database scoped to its actor (PostgreSQL's
    row-level security, the second wall behind the checks), the previous scope restored after:
    one registry can serve several actors in turn."""
    import functools

    @functools.wraps(method)
    def run(self: Scoped, *args: Any, **kwargs: Any) -> Any:
        db = getattr(self.reg, "_db", None)
        if db is None:
            return method(self, *args, **kwargs)
        saved, db.scope = db.scope, self.scope
        try:
            return method(self, *args, **kwargs)
        finally:
            db.scope = saved

    return run


class Scoped:
    """The registry as one user sees it. Every method checks the role and the patient's site first."""

    def __init__(self, registry: Any, actor: Actor) -> None:
        self.reg = registry
        self.actor = actor
        from ._db import Scope

        self.scope = Scope.of(actor)

    # -- which patients -----------------------------------------------------------------

    def _site_clause(self) -> tuple[str, list[Any]]:
        if self.actor.every_site:
            return "1 = 1", []
        sites = sorted(self.actor.sites)
        return f"coalesce(s.site, 'default') IN ({', '.join('?' * len(sites))})", sites

    def visible(self) -> dict[str, str]:
        """Patient id → site, for every patient this user may read."""
        _require(self.actor, "read")
        where, args = self._site_clause()
        if where != "1 = 1" and not args:
            return {}
        with self.reg._read() as conn:
            return dict(conn.execute(
                f"SELECT p.id, coalesce(s.site, 'default') FROM patients AS p LEFT JOIN patient_sites AS s "
                f"ON s.patient = p.id WHERE {where}", args).fetchall())

    def site_of(self, patient_id: str) -> str:
        """The patient's site, or :class:`NotFound` when this user may not read it."""
        _require(self.actor, "read")
        with self.reg._read() as conn:
            row = conn.execute("SELECT coalesce(s.site, 'default') FROM patients AS p LEFT JOIN patient_sites AS s "
                               "ON s.patient = p.id WHERE p.id = ?", (patient_id,)).fetchone()
        if row is None or not (self.actor.every_site or row[0] in self.actor.sites):
            raise NotFound(Problem(str(patient_id), "", f"no patient {patient_id!r}"))
        return str(row[0])

    # -- reading ------------------------------------------------------------------------

    def patients(self) -> list[Any]:
        """The :class:`~protocol._registry.PatientSummary` of every patient this user may read."""
        ids = self.visible()
        return [p for p in self.reg.patients() if p.id in ids]

    def patient(self, patient_id: str, **kw: Any) -> Any:
        """The validated patient (see :meth:`Registry.patient`)."""
        self.site_of(patient_id)
        return self.reg.patient(patient_id, **kw)

    def patient_data(self, patient_id: str, **kw: Any) -> dict[str, Any]:
        """The patient file the log replays to."""
        self.site_of(patient_id)
        return self.reg.patient_data(patient_id, **kw)

    def history(self, patient_id: str, **kw: Any) -> list[Any]:
        """The patient's audit trail."""
        self.site_of(patient_id)
        return self.reg.history(patient_id, **kw)

    def export(self, patient_id: str, **kw: Any) -> str:
        """The patient as a patient file."""
        self.site_of(patient_id)
        return self.reg.export(patient_id, **kw)

    def plan(self, patient_id: str, as_of: dt.date | None = None) -> Any:
        """The patient's plan as of today (the registry's ``today``), as ``protocol plan`` makes it."""
        from ._schedule import plan

        from ._versions import protocol_for

        patient = self.patient(patient_id)
        # The protocol version the patient is on (protocol amend), if one is recorded.
        return plan(patient, protocol_for(self.reg._conn, patient_id, patient.protocol),
                    as_of=as_of or self.reg.today())

    def calendar(self, patient_id: str) -> bytes:
        """The patient's iCalendar (SEQUENCE from the registry's history), as ``protocol calendar`` makes it."""
        from ._calendar import calendar_for

        self.site_of(patient_id)
        return calendar_for(self.reg, patient_id)

    def worklist(self, start: dt.date | None = None, days: int = 7) -> Any:
        """The worklist, only the rows of this user's patients."""
        ids = self.visible()
        wl = self.reg.worklist(start, days)
        wl.rows = [r for r in wl.rows if r[1] in ids]
        return wl

    def worklist_page(self, days: int = 7, number: int = 1, per_page: int = 250) -> Any:
        """Page ``number`` (from 1) of this user's worklist, ``per_page`` rows, with the counts
        and total of the whole list (filtered by the user's sites in SQL; on PostgreSQL row-level
        security filters it again).

        >>> wl = scoped.worklist_page(7, 1)  # doctest: +SKIP
        >>> wl.total, len(wl.rows)  # doctest: +SKIP
        (19000, 250)
        """
        _require(self.actor, "read")
        sites = None if self.actor.every_site else sorted(self.actor.sites)
        return self.reg.worklist_page(None, days, sites=sites, offset=(max(1, number) - 1) * per_page,
                                      limit=per_page)

    # -- writing ------------------------------------------------------------------------

    def add_patient(self, data: dict[str, Any] | str, site: str | None = None) -> list[Any]:
        """Register a patient in one of this user's sites (the only one, when it has one)."""
        _require(self.actor, "register")
        sites = sorted(self.actor.sites)
        if site is None:
            if len(sites) != 1:
                raise InputError(Problem("patient", "site", f"choose the site: one of {', '.join(sites)}"))
            site = sites[0]
        if site not in self.actor.sites:
            raise InputError(Problem("patient", "site", f"you register patients for {', '.join(sites)}, "
                                     f"not {site!r}"))
        return self.reg.add_patient(data, by=self.actor.name, site=site)

    def record(self, patient_id: str, kind: str, data: dict[str, Any], *, reason: str | None = None,
               supersedes: int | None = None) -> Any:
        """Record an entry as this user (see :meth:`Registry.record`) and, in the same
        transaction, whether it waits for a second person's sign-off (:mod:`protocol._signoff`)."""
        from ._signoff import record

        _require(self.actor, "record")
        self.site_of(patient_id)
        return record(self.reg, patient_id, kind, data, by=self.actor.name, reason=reason, supersedes=supersedes)

    def retract(self, patient_id: str, seq: int, *, reason: str | None = None) -> Any:
        """Retract an entry as this user (see :meth:`Registry.retract`)."""
        _require(self.actor, "record")
        self.site_of(patient_id)
        return self.reg.retract(patient_id, seq, by=self.actor.name, reason=reason)

    def entry_patient(self, seq: int) -> str:
        """The patient of log entry ``seq``, or :class:`NotFound` (another site's entry too)."""
        with self.reg._read() as conn:
            row = conn.execute("SELECT patient FROM entries WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise NotFound(Problem(f"#{seq}", "", f"no entry #{seq}"))
        try:
            self.site_of(row[0])
        except NotFound:
            raise NotFound(Problem(f"#{seq}", "", f"no entry #{seq}")) from None
        return str(row[0])

    # -- sign-off -------------------------------------------------------------------------

    def signoffs(self, patient_id: str) -> dict[int, Any]:
        """Entry seq → :class:`~protocol._signoff.SignOff` for the patient's dose-critical entries."""
        from ._signoff import signoffs

        self.site_of(patient_id)
        return signoffs(self.reg, patient_id)

    def signoff_marks(self, patient_id: str) -> tuple[Any, ...]:
        """The patient's live dose-critical entries with their sign-off, as the roadmap prints
        them (:func:`protocol._signoff.marks`)."""
        from ._signoff import marks

        self.site_of(patient_id)
        return marks(self.reg, patient_id)

    def unsigned(self) -> list[tuple[str, int, str, str, str]]:
        """Entries of this user's patients still waiting for sign-off."""
        from ._signoff import unsigned

        return unsigned(self.reg, self.visible())

    def sign(self, seq: int, password: str) -> Any:
        """Sign entry ``seq`` (pharmacist or investigator; never the recorder; password again)."""
        from ._signoff import sign

        _require(self.actor, "sign")
        self.entry_patient(seq)
        return sign(self.reg, self.actor, seq, password)

    # -- amendments ----------------------------------------------------------------------

    def _amendable(self, protocol_id: str) -> list[str]:
        visible = self.visible()
        return sorted(s.id for s in self.reg.patients()
                      if s.id in visible and s.protocol.partition("@")[0] == protocol_id)

    def amend_preview(self, text: str, site_text: str | None = None) -> Any:
        """Preview an amended definition given as text (and a site amendment's text) for this
        user's patients on its protocol (pharmacist or investigator). Writes nothing."""
        from ._amend import as_files, preview
        from ._loading import load_protocol

        _require(self.actor, "amend")
        with as_files(text, site_text) as (file, site):
            ids = self._amendable(load_protocol(file).id)
            if not ids:
                raise InputError(Problem("definition", "definition", "none of your patients is on this protocol"))
            return preview(self.reg, file, site=site, patients=ids)

    def amend_apply(self, text: str, sha256: str, *, reason: str, password: str,
                    site_text: str | None = None) -> Any:
        """Move this user's patients on the protocol to the amended definition given as text,
        signed: the password again, and ``sha256`` must be the definition previewed (a text
        changed since the preview is refused). Each move records the signer and the meaning
        "amendment approved"."""
        from ._amend import apply, as_files
        from ._auth import get_user, verify_password
        from ._loading import load_protocol

        _require(self.actor, "amend")
        if not (reason or "").strip():
            raise InputError(Problem("reason", "reason", "an amendment needs a reason (which amendment, approved by "
                                     "whom)"))
        found = get_user(self.reg, self.actor.name)
        if found is None or found[0].disabled or not verify_password(found[1], password):
            raise InputError(Problem("password", "password", "the password is wrong: nothing was applied"))
        with as_files(text, site_text) as (file, site):
            loaded = load_protocol(file)
            if loaded.sha256 != sha256:
                raise InputError(Problem("definition", "definition", "the definition is not the one previewed: "
                                         "preview it again before applying it"))
            ids = self._amendable(loaded.id)
            if not ids:
                raise InputError(Problem("definition", "definition", "none of your patients is on this protocol"))
            return apply(self.reg, file, reason=reason, patients=ids, by=self.actor.name, site=site,
                         signature="amendment approved")

    # -- calendar feeds -------------------------------------------------------------------

    def new_feed(self, patient_id: str) -> str:
        """A new calendar subscription token for the patient (shown once; stored hashed)."""
        import secrets

        _require(self.actor, "feed")
        self.site_of(patient_id)
        token = secrets.token_urlsafe(32)
        with self.reg._write() as conn:
            conn.execute("INSERT INTO feeds (token_hash, patient, created, created_by) VALUES (?, ?, ?, ?)",
                         (_feed_key(token), patient_id, self.reg._stamp(), self.actor.name))
        return token

    def feeds(self, patient_id: str) -> list[tuple[str, str, str]]:
        """``(key, created, created_by)`` of the patient's live feeds (the key is the stored hash)."""
        self.site_of(patient_id)
        with self.reg._read() as conn:
            return [tuple(r) for r in conn.execute(
                "SELECT token_hash, created, created_by FROM feeds WHERE patient = ? AND revoked IS NULL "
                "ORDER BY created", (patient_id,))]

    def revoke_feed(self, patient_id: str, key: str) -> None:
        """Revoke a feed: its URL answers 404 from now on."""
        _require(self.actor, "feed")
        self.site_of(patient_id)
        with self.reg._write() as conn:
            done = conn.execute("UPDATE feeds SET revoked = ? WHERE token_hash = ? AND patient = ? AND revoked IS NULL",
                                (self.reg._stamp(), key, patient_id)).rowcount
        if not done:
            raise NotFound(Problem(patient_id, "feed", "no such feed"))


for _name, _method in list(vars(Scoped).items()):
    if callable(_method) and not _name.startswith("__"):
        setattr(Scoped, _name, _in_scope(_method))
del _name, _method


def _feed_key(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def feed_patient(registry: Any, token: str) -> str | None:
    """The patient a live calendar feed token is for, or None (unknown or revoked)."""
    if not token or len(token) > 100:
        return None
    with registry._read() as conn:
        row = conn.execute("SELECT patient FROM feeds WHERE token_hash = ? AND revoked IS NULL",
                           (_feed_key(token),)).fetchone()
    return None if row is None else str(row[0])
