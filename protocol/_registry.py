"""The patient registry: an append-only audit log and the worklist projection, in one SQLite
file or a PostgreSQL database (``--db``: a path or a URL, :mod:`protocol._db`).

A patient is the replay of its log. ``patients add`` writes the patient's base record (the
scalar fields of a patient file) and each list entry (measurement, MRD result, blood count,
event) as log entries, each stored as the exact mapping of the patient file. Later entries
add to the lists; a *correction* is a new entry that supersedes (replaces in place) or
retracts (removes) an earlier one. Log rows are never updated or deleted: triggers refuse it
(and, on PostgreSQL, the application role's grants). Replaying only the entries recorded up to a time gives the patient as it was
known then (``as_of_recorded``).

Every write is one ``BEGIN IMMEDIATE`` transaction (PostgreSQL: one that first takes the
patient's advisory lock, see :mod:`protocol._dbpg`): read the log, replay it with the new
entry, validate the result exactly as a patient file is validated (``Patient`` model, the
consistency checks, then ``plan()``, which enforces the protocol), insert, refresh the
patient's worklist projection, commit. Bad input raises :class:`~protocol.InputError` and
writes nothing. The file is in WAL mode with ``synchronous=FULL``: a write that returned is
on disk. It is created readable by its owner only (``0600``): it holds dates of birth.

Schema versions are ``PRAGMA user_version`` (PostgreSQL: the ``meta`` row ``schema_version``),
upgraded in order by :data:`MIGRATIONS` (written for SQLite, translated for PostgreSQL by
:func:`protocol._db.pg_statement`) when a database made by an older release is opened; a
database made by a newer release is refused.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._db import DbUrl, parse_url
from ._dbopen import connect
from ._dbsqlite import APPLICATION_ID, BUSY_TIMEOUT_S
from ._errors import InputError, PatientError, Problem, RegistryError
from ._io import Document, format_loc, problems_from_validation
from ._versions import parse_recorded

if TYPE_CHECKING:  # the models (pydantic) are imported where a patient is validated: a worklist
    from ._models import Patient  # served from the projection needs none of them

__all__ = [
    "DEFAULT_DB",
    "KINDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Entry",
    "PatientSummary",
    "Registry",
    "default_db_path",
    "describe_entry",
    "open_registry",
    "parse_recorded",
    "resolve_patient",
    "worklist",
]

#: The registry file used when neither ``--db`` nor ``$PROTOCOL_DB`` names one.
DEFAULT_DB = "protocol.db"
ENV_VAR = "PROTOCOL_DB"
#: Entry kind → the list of the patient file it belongs to (``base``: the scalar fields).
KINDS: dict[str, str | None] = {"base": None, "measurement": "measurements", "mrd": "mrd", "count": "counts",
                                "event": "events"}
_LIST_KIND = {v: k for k, v in KINDS.items() if v is not None}
#: How long a worklist waits for the write lock to refresh its projection before it computes
#: the stale part in memory instead (a reader never waits for a writer).
WORKLIST_WAIT_MS = 250
#: Rows of a worklist projection cover at least this many days after the day they were computed for.
MIN_HORIZON_DAYS = 7

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE patients (
    id         TEXT PRIMARY KEY,
    base       TEXT NOT NULL CHECK (json_valid(base)),
    created    TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE entries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    patient     TEXT NOT NULL REFERENCES patients(id),
    kind        TEXT NOT NULL CHECK (kind IN ('base', 'measurement', 'mrd', 'count', 'event')),
    data        TEXT NOT NULL CHECK (json_valid(data)),
    recorded_by TEXT NOT NULL CHECK (length(recorded_by) > 0),
    recorded_at TEXT NOT NULL,
    reason      TEXT,
    supersedes  INTEGER REFERENCES entries(seq),
    retracts    INTEGER REFERENCES entries(seq),
    CHECK (supersedes IS NULL OR retracts IS NULL),
    CHECK ((retracts IS NULL) = (data != 'null')),
    CHECK ((supersedes IS NULL AND retracts IS NULL) OR length(reason) > 0)
);
CREATE INDEX entries_by_patient ON entries(patient, seq);
-- An entry is corrected (superseded or retracted) at most once; correct the correction instead.
CREATE UNIQUE INDEX entries_corrected_once ON entries(coalesce(supersedes, retracts))
    WHERE supersedes IS NOT NULL OR retracts IS NOT NULL;
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: record a correction instead'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: record a retraction instead'); END;
CREATE TRIGGER patients_no_update BEFORE UPDATE ON patients
BEGIN SELECT RAISE(ABORT, 'a registered patient is never changed: correct it with a base entry'); END;
CREATE TRIGGER patients_no_delete BEFORE DELETE ON patients
BEGIN SELECT RAISE(ABORT, 'a registered patient is never deleted'); END;
CREATE TRIGGER entries_correct_own_kind BEFORE INSERT ON entries
WHEN NEW.supersedes IS NOT NULL OR NEW.retracts IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'a correction must target an earlier entry of the same patient and kind')
    WHERE NOT EXISTS (SELECT 1 FROM entries AS e WHERE e.seq = coalesce(NEW.supersedes, NEW.retracts)
                      AND e.patient = NEW.patient AND e.kind = NEW.kind AND e.retracts IS NULL);
END;
"""

# The worklist projection: a cache derived from the log, never part of the audit trail.
_V2 = """
CREATE TABLE projection (
    patient      TEXT PRIMARY KEY REFERENCES patients(id),
    computed_for TEXT NOT NULL,
    horizon      INTEGER NOT NULL,
    protocol     TEXT NOT NULL,
    definition   TEXT NOT NULL,
    last_seq     INTEGER NOT NULL,
    computed_at  TEXT NOT NULL
);
CREATE TABLE worklist_rows (
    patient  TEXT NOT NULL REFERENCES patients(id),
    date     TEXT NOT NULL,
    category TEXT NOT NULL,
    kind     TEXT NOT NULL,
    study    TEXT,
    element  TEXT,
    item     TEXT,
    name     TEXT NOT NULL,
    detail   TEXT,
    status   TEXT,
    branch   TEXT
);
CREATE INDEX worklist_rows_by_date ON worklist_rows(date, patient);
CREATE INDEX worklist_rows_by_patient ON worklist_rows(patient);
"""

# Worklist rows stored in listing order, so a query streams them from the index without sorting.
# The projection is a cache: it is dropped and rebuilt lazily (every patient is stale).
_V3 = """
DROP TABLE worklist_rows;
DELETE FROM projection;
CREATE TABLE worklist_rows (
    patient  TEXT NOT NULL REFERENCES patients(id),
    date     TEXT NOT NULL,
    rank     INTEGER NOT NULL,
    category TEXT NOT NULL,
    kind     TEXT NOT NULL,
    study    TEXT,
    element  TEXT,
    item     TEXT,
    name     TEXT NOT NULL,
    detail   TEXT,
    status   TEXT,
    branch   TEXT
);
CREATE INDEX worklist_rows_by_date ON worklist_rows(date, patient, rank, element, item);
CREATE INDEX worklist_rows_by_patient ON worklist_rows(patient);
"""

# Sites, users, sessions, sign-in audit, calendar feeds and signatures (the web application).
# Every patient belongs to one site (patient_sites; patients registered before this migration,
# and any written without one, are in 'default'). A separate table, so the append-only
# patients rows stay exactly as an older release wrote them.
_V4 = """
CREATE TABLE sites (
    id      TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    created TEXT NOT NULL
);
INSERT INTO sites (id, created) VALUES ('default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
CREATE TABLE patient_sites (
    patient TEXT PRIMARY KEY REFERENCES patients(id),
    site    TEXT NOT NULL REFERENCES sites(id)
);
INSERT INTO patient_sites (patient, site) SELECT id, 'default' FROM patients;
CREATE INDEX patient_sites_by_site ON patient_sites(site, patient);
CREATE TRIGGER patient_sites_no_update BEFORE UPDATE ON patient_sites
BEGIN SELECT RAISE(ABORT, 'a patient never changes site'); END;
CREATE TRIGGER patient_sites_no_delete BEFORE DELETE ON patient_sites
BEGIN SELECT RAISE(ABORT, 'a patient never changes site'); END;
CREATE TABLE users (
    name     TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    role     TEXT NOT NULL CHECK (role IN ('coordinator', 'pharmacist', 'investigator', 'monitor', 'admin')),
    password TEXT NOT NULL,
    created  TEXT NOT NULL,
    disabled TEXT
);
CREATE TABLE user_sites (
    user TEXT NOT NULL REFERENCES users(name),
    site TEXT NOT NULL REFERENCES sites(id),
    PRIMARY KEY (user, site)
);
CREATE TABLE sessions (
    id_hash   TEXT PRIMARY KEY,
    user      TEXT NOT NULL REFERENCES users(name),
    created   TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    address   TEXT,
    agent     TEXT,
    ended     TEXT
);
CREATE INDEX sessions_by_user ON sessions(user);
CREATE TABLE signins (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    user    TEXT NOT NULL,
    address TEXT,
    outcome TEXT NOT NULL
);
CREATE TRIGGER signins_no_update BEFORE UPDATE ON signins
BEGIN SELECT RAISE(ABORT, 'the sign-in audit is append-only'); END;
CREATE TRIGGER signins_no_delete BEFORE DELETE ON signins
BEGIN SELECT RAISE(ABORT, 'the sign-in audit is append-only'); END;
CREATE TABLE feeds (
    token_hash TEXT PRIMARY KEY,
    patient    TEXT NOT NULL REFERENCES patients(id),
    created    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked    TEXT
);
CREATE TABLE signatures (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    entry     INTEGER NOT NULL REFERENCES entries(seq),
    meaning   TEXT NOT NULL,
    signer    TEXT NOT NULL REFERENCES users(name),
    signed_at TEXT NOT NULL
);
CREATE INDEX signatures_by_entry ON signatures(entry);
-- Entries that wait for a second person's verification, and what the signature will mean.
CREATE TABLE signoff_required (
    entry   INTEGER PRIMARY KEY REFERENCES entries(seq),
    meaning TEXT NOT NULL,
    why     TEXT NOT NULL
);
CREATE TRIGGER signatures_no_update BEFORE UPDATE ON signatures
BEGIN SELECT RAISE(ABORT, 'a signature is never changed: a correction of its entry voids it'); END;
CREATE TRIGGER signatures_no_delete BEFORE DELETE ON signatures
BEGIN SELECT RAISE(ABORT, 'a signature is never deleted'); END;
"""

# Protocol versions (issue 15): every definition a patient was planned with, its bytes stored
# once by SHA-256, and the append-only log of which version each patient is on (registration,
# amendments, their retractions). A separate log, not new kinds of ``entries``: that table's
# kinds are fixed by a CHECK, and widening it would mean rebuilding the append-only audit log.
_V5 = """
CREATE TABLE protocol_versions (
    sha256     TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    protocol   TEXT NOT NULL,
    version    TEXT NOT NULL,
    name       TEXT NOT NULL,
    definition BLOB NOT NULL,
    stored_at  TEXT NOT NULL
);
CREATE TRIGGER protocol_versions_no_update BEFORE UPDATE ON protocol_versions
BEGIN SELECT RAISE(ABORT, 'a stored protocol version is never changed'); END;
CREATE TRIGGER protocol_versions_no_delete BEFORE DELETE ON protocol_versions
BEGIN SELECT RAISE(ABORT, 'a stored protocol version is never deleted'); END;
CREATE TABLE version_entries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    patient     TEXT NOT NULL REFERENCES patients(id),
    sha256      TEXT REFERENCES protocol_versions(sha256),
    from_sha256 TEXT REFERENCES protocol_versions(sha256),
    recorded_by TEXT NOT NULL CHECK (length(recorded_by) > 0),
    recorded_at TEXT NOT NULL,
    reason      TEXT,
    retracts    INTEGER REFERENCES version_entries(seq),
    CHECK ((retracts IS NULL) = (sha256 IS NOT NULL)),
    CHECK ((from_sha256 IS NULL AND retracts IS NULL) OR length(reason) > 0)
);
CREATE INDEX version_entries_by_patient ON version_entries(patient, seq);
CREATE UNIQUE INDEX version_entries_retracted_once ON version_entries(retracts) WHERE retracts IS NOT NULL;
CREATE TRIGGER version_entries_no_update BEFORE UPDATE ON version_entries
BEGIN SELECT RAISE(ABORT, 'the version log is append-only: retract the entry instead'); END;
CREATE TRIGGER version_entries_no_delete BEFORE DELETE ON version_entries
BEGIN SELECT RAISE(ABORT, 'the version log is append-only: retract the entry instead'); END;
"""

# Site amendments (issue 15): the verified values a patient is planned with are versioned like
# the definition itself, their file's bytes stored once by SHA-256; a row of the version log
# names the definition and the site amendment (NULL: none) the patient is on from then, and
# the meaning of the signature when the move was signed with the password again (on the web),
# and the decisions already taken when the patient moved (JSON ``{decision: outcome}``): those
# were judged by the version in force when they were taken, and stay as they were.
_V6 = """
CREATE TABLE site_amendments (
    sha256     TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    protocol   TEXT NOT NULL,
    site       TEXT NOT NULL,
    name       TEXT NOT NULL,
    amendment  BLOB NOT NULL,
    stored_at  TEXT NOT NULL
);
CREATE TRIGGER site_amendments_no_update BEFORE UPDATE ON site_amendments
BEGIN SELECT RAISE(ABORT, 'a stored site amendment is never changed'); END;
CREATE TRIGGER site_amendments_no_delete BEFORE DELETE ON site_amendments
BEGIN SELECT RAISE(ABORT, 'a stored site amendment is never deleted'); END;
ALTER TABLE version_entries ADD COLUMN site_sha256 TEXT REFERENCES site_amendments(sha256);
ALTER TABLE version_entries ADD COLUMN signature TEXT CHECK (signature IS NULL OR length(signature) > 0);
ALTER TABLE version_entries ADD COLUMN settled TEXT;
"""

# The worklist rows clustered in listing order: the table is its own index (SQLite: WITHOUT
# ROWID; PostgreSQL: its primary key), so a week's rows are read as one range, in order, with
# no sort and no look-up per row, however far past the week the projection reaches. ``pos`` is
# the row's place in its patient's rows sorted by (date, category rank, element, item), so
# ``ORDER BY date, patient, pos`` is the listing order (see protocol._worklist.in_listing_order);
# the category's rank, stored before only to sort by, is no longer a column.
# The projection is a cache: it is dropped and rebuilt lazily (every patient is stale).
_V7 = """
DROP TABLE worklist_rows;
DELETE FROM projection;
CREATE TABLE worklist_rows (
    patient  TEXT NOT NULL REFERENCES patients(id),
    date     TEXT NOT NULL,
    pos      INTEGER NOT NULL,
    category TEXT NOT NULL,
    kind     TEXT NOT NULL,
    study    TEXT,
    element  TEXT,
    item     TEXT,
    name     TEXT NOT NULL,
    detail   TEXT,
    status   TEXT,
    branch   TEXT,
    PRIMARY KEY (date, patient, pos)
) WITHOUT ROWID;
CREATE INDEX worklist_rows_by_patient ON worklist_rows(patient);
"""

#: ``(version, what it does, SQL)``, applied in order to bring an older database up to date.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "patients and the append-only entry log", _V1),
    (2, "worklist projection", _V2),
    (3, "worklist rows in listing order", _V3),
    (4, "sites, users, sessions, sign-in audit, feeds and signatures", _V4),
    (5, "protocol versions and the per-patient version log", _V5),
    (6, "site amendments kept like protocol versions", _V6),
    (7, "worklist rows clustered in listing order", _V7),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def default_db_path() -> Path | str:
    """The registry: ``$PROTOCOL_DB`` if set, else ``./protocol.db`` (a path; a URL stays text,
    see :func:`protocol._db.parse_url`)."""
    value = os.environ.get(ENV_VAR) or DEFAULT_DB
    return value if "://" in value else Path(value)


def _utc_stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the audit log.

    ``data`` is the mapping exactly as in a patient file (None for a retraction);
    ``recorded_at`` is UTC (``2026-11-21T15:46:16.123456Z``). In :meth:`Registry.history`,
    ``superseded_by`` / ``retracted_by`` name the later entry that corrected this one, and
    ``changes`` says what a base correction changed (``wbc_at_diagnosis 150 → 165``).
    """

    seq: int
    patient: str
    kind: str
    data: Any
    recorded_by: str
    recorded_at: str
    reason: str | None = None
    supersedes: int | None = None
    retracts: int | None = None
    superseded_by: int | None = None
    retracted_by: int | None = None
    changes: str | None = None

    @property
    def live(self) -> bool:
        """True when no later entry superseded or retracted this one (and it is not a retraction)."""
        return self.retracts is None and self.superseded_by is None and self.retracted_by is None

    @property
    def what(self) -> str:
        """What was recorded, in words (see :func:`describe_entry`)."""
        return describe_entry(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``protocol history --json``)."""
        return {"seq": self.seq, "patient": self.patient, "kind": self.kind, "data": self.data,
                "recorded_by": self.recorded_by, "recorded_at": self.recorded_at, "reason": self.reason,
                "supersedes": self.supersedes, "retracts": self.retracts, "superseded_by": self.superseded_by,
                "retracted_by": self.retracted_by, "live": self.live, "what": self.what}


@dataclass(frozen=True, slots=True)
class PatientSummary:
    """One registered patient, for ``protocol patients list``."""

    id: str
    protocol: str
    diagnosis_date: str
    entries: int
    created: str
    last_recorded_at: str
    last_recorded_by: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "protocol": self.protocol, "diagnosis_date": self.diagnosis_date,
                "entries": self.entries, "created": self.created, "last_recorded_at": self.last_recorded_at,
                "last_recorded_by": self.last_recorded_by}


def describe_entry(entry: Entry) -> str:
    """An entry in words: ``measurement 2026-05-04: 66 cm, 7.4 kg``, ``retracts #7``..."""
    if entry.retracts is not None:
        return f"retracts #{entry.retracts}"
    d = entry.data if isinstance(entry.data, dict) else {}
    if entry.kind == "base":
        text = "base record" + (f": {entry.changes}" if entry.changes else "")
    elif entry.kind == "measurement":
        text = f"measurement {d.get('date')}: {d.get('height_cm')} cm, {d.get('weight_kg')} kg"
    elif entry.kind == "mrd":
        text = f"MRD {d.get('timepoint')} {d.get('date')}: {d.get('value')}"
    elif entry.kind == "count":
        parts = [f"{label} {d[k]}" for k, label in (("anc", "ANC"), ("platelets", "platelets")) if k in d]
        text = f"counts {d.get('date')}: {', '.join(parts)}"
    else:
        rest = " ".join(f"{k}={v}" for k, v in d.items() if k not in ("type", "date", "reason"))
        text = f"{d.get('type')} {d.get('date')}" + (f" {rest}" if rest else "")
    if entry.supersedes is not None:
        text += f" (replaces #{entry.supersedes})"
    return text


# --------------------------------------------------------------------------- replay


_NEW = 0  # the seq of an entry not yet written


class _State:
    """A patient assembled from its log: the base record and each list, in log order.

    A superseding entry takes the place of the one it replaces; a retraction removes it.
    ``where`` maps each live seq to its (list, slot) so corrections find their target.
    """

    __slots__ = ("base", "base_seq", "lists", "where")

    def __init__(self) -> None:
        self.base: dict[str, Any] | None = None
        self.base_seq: int | None = None
        self.lists: dict[str, dict[int, tuple[int, Any]]] = {name: {} for name in _LIST_KIND}
        self.where: dict[int, tuple[str | None, int]] = {}

    def apply(self, seq: int, kind: str, data: Any, supersedes: int | None, retracts: int | None) -> None:
        name = KINDS[kind]
        target = supersedes if supersedes is not None else retracts
        if target is not None:
            _, slot = self.where.pop(target)
        else:
            slot = seq
        if name is None:
            if retracts is None:
                self.base, self.base_seq = data, seq
                self.where[seq] = (None, seq)
            return
        if retracts is not None:
            del self.lists[name][slot]
            return
        self.lists[name][slot] = (seq, data)
        self.where[seq] = (name, slot)

    def to_dict(self) -> dict[str, Any]:
        """The patient file this state is (lists omitted when empty)."""
        out = dict(self.base or {})
        for name, entries in self.lists.items():
            if entries:
                out[name] = [data for _, data in entries.values()]
        return out

    def seqs(self, name: str) -> list[int]:
        return [seq for seq, _ in self.lists[name].values()]


def _entry_rows(conn: sqlite3.Connection, patient_id: str, upto: str | None = None) -> list[tuple[Any, ...]]:
    """The patient's log entries ``(seq, kind, data, supersedes, retracts)`` in seq order
    (optionally as recorded up to ``upto``), their JSON parsed."""
    sql = "SELECT seq, kind, data, supersedes, retracts FROM entries WHERE patient = ?"
    args: tuple[Any, ...] = (patient_id,)
    if upto is not None:
        sql += " AND recorded_at <= ?"
        args += (upto,)
    rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
    if not rows:
        return []
    # One parse of every entry's JSON as one array: json.loads per entry costs more in its
    # Python wrapper than in the parse.
    datas = json.loads("[" + ",".join([r[2] for r in rows]) + "]")
    return [(seq, kind, data, sup, ret) for (seq, kind, _, sup, ret), data in zip(rows, datas, strict=True)]


def _replay(rows: Iterable[tuple[Any, ...]]) -> _State:
    """Rows ``(seq, kind, data, supersedes, retracts)`` in seq order → the state they build."""
    state = _State()
    for seq, kind, data, supersedes, retracts in rows:
        state.apply(seq, kind, data, supersedes, retracts)
    return state


_LIST_REF = re.compile(r"\b(measurements|mrd|counts|events)\[(\d+)\]")


class _Names:
    """Turns list positions in problems (``events[3].date``) into log entries (``#17``)."""

    def __init__(self, patient_id: str, state: _State, new_label: str) -> None:
        self.pid = patient_id
        self.state = state
        self.new_label = new_label
        self.seqs = {name: state.seqs(name) for name in _LIST_KIND}

    def seq_of(self, name: str, index: int) -> int | None:
        seqs = self.seqs.get(name, [])
        return seqs[index] if index < len(seqs) else None

    def _mention(self, m: re.Match[str]) -> str:
        seq = self.seq_of(m.group(1), int(m.group(2)))
        if seq is None:
            return m.group(0)
        return "this record" if seq == _NEW else f"#{seq}"

    def problem(self, p: Problem) -> Problem:
        message = _LIST_REF.sub(self._mention, p.message)
        m = re.match(r"^(measurements|mrd|counts|events)\[(\d+)\]\.?(.*)$", p.field)
        if m:
            seq = self.seq_of(m.group(1), int(m.group(2)))
            if seq is not None:
                where = self.new_label if seq == _NEW else f"{self.pid} #{seq}"
                return Problem(where, m.group(3), message)
        if p.field.split(".")[0].split("[")[0] in _LIST_KIND:
            return Problem(self.new_label, p.field, message)
        base_seq = self.state.base_seq
        where = self.new_label if base_seq == _NEW else f"{self.pid} #{base_seq}" if base_seq else self.pid
        return Problem(where, p.field, message)

    def rewrite(self, exc: InputError) -> InputError:
        return type(exc)([self.problem(p) for p in exc.problems])


# --------------------------------------------------------------------------- the registry


def _plan_as_of(patient: Patient, today: dt.date) -> dt.date:
    """Validate with every entry counted: today, or the latest date recorded if later."""
    latest = today
    for name in _LIST_KIND:
        for entry in getattr(patient, name, ()) or ():
            for attr in ("date", "to"):
                day = getattr(entry, attr, None)
                if isinstance(day, dt.date) and day > latest:
                    latest = day
    return latest


def _statements(script: str) -> Iterator[str]:
    """Split a schema script into statements (triggers hold ``;`` inside BEGIN ... END)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        yield buf.strip()


class Registry:
    """A patient registry (an SQLite file or a PostgreSQL database). Open it with :func:`open_registry`.

    ``today`` and ``now`` may be replaced (tests, simulations): ``today()`` is the local date
    plans and the worklist projection are computed for, ``now()`` the recording time (UTC).

    >>> with open_registry("protocol.db", create=True) as reg:        # doctest: +SKIP
    ...     reg.add_patient("examples/patients/mr-on-time.yaml", by="alice")
    ...     reg.record("INF-0001", "measurement", {"date": "2026-11-20", "height_cm": 72,
    ...                "weight_kg": 8.9}, by="alice")
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False,
                 today: Callable[[], dt.date] | None = None, now: Callable[[], dt.datetime] | None = None) -> None:
        url = parse_url(path)
        #: The file (SQLite), or the server's URL without its password (PostgreSQL).
        self.path: Path | str = url.path if url.path is not None else url.label
        self.today = today or dt.date.today
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self._db = self._conn = connect(url, create)
        try:
            from . import __version__

            self._db.migrate(MIGRATIONS, _statements, self._stamp, __version__)
        except BaseException:
            self._db.close()
            raise

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._db.dialect

    # -- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stamp(self) -> str:
        return _utc_stamp(self.now())

    @contextmanager
    def _write(self, wait_ms: int | None = None) -> Iterator[Any]:
        # A writer excludes other writers (SQLite) or locks the patients it writes (PostgreSQL,
        # see _state); a writer that waits too long is a RegistryError (exit 2, nothing written).
        db = self._db
        db.begin(True, wait_ms)
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.commit()

    @contextmanager
    def _read(self) -> Iterator[Any]:
        db = self._db
        db.begin(False)  # one snapshot for every SELECT inside
        try:
            yield db
        finally:
            db.commit()

    def _recorded_at(self, conn: sqlite3.Connection) -> str:
        # Never earlier than the last entry: the log is ordered in time as well as by seq,
        # so "as recorded up to T" is always a prefix of the log, even if the clock steps back.
        stamp = self._stamp()
        last = conn.execute("SELECT recorded_at FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return max(stamp, last[0]) if last else stamp

    def _rows(self, conn: sqlite3.Connection, patient_id: str, upto: str | None = None) -> list[tuple[Any, ...]]:
        return _entry_rows(conn, patient_id, upto)

    def _unknown(self, conn: sqlite3.Connection, patient_id: str, label: str, upto: str | None = None) -> PatientError:
        known = [r[0] for r in conn.execute("SELECT id FROM patients ORDER BY id LIMIT 6")]
        shown = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "") if known else "none yet"
        if upto is not None and conn.execute("SELECT 1 FROM patients WHERE id = ?", (patient_id,)).fetchone():
            return PatientError(Problem(label, "", f"{patient_id!r} was not registered yet at {upto}"))
        return PatientError(Problem(label, "", f"no patient {patient_id!r} in the registry {self.path} "
                                    f"(registered: {shown}); add one with: protocol patients add FILE"))

    def _state(self, conn: Any, patient_id: str, label: str, upto: str | None = None) -> _State:
        conn.lock_patient(patient_id)  # in a write: the log read here is the log appended to
        rows = self._rows(conn, patient_id, upto)
        if not rows:
            raise self._unknown(conn, patient_id, label, upto)
        return _replay(rows)

    def _validate(self, patient_id: str, state: _State, label: str, *, rename: bool = True) -> tuple[Patient, Any]:
        """The patient the state describes, validated as a patient file is, and its plan.

        Raises an :class:`InputError`; with ``rename`` its problems name log entries
        (``INF-0001 #17``) or ``label`` for the entry being written, not list positions.
        """
        from pydantic import ValidationError

        from ._loading import _check_patient
        from ._models import Patient

        names = _Names(patient_id, state, label)
        data = state.to_dict()
        try:
            try:
                patient = Patient.model_validate(data)
            except ValidationError as exc:
                raise PatientError(problems_from_validation(exc, Document(label, data))) from None
            problems = [Problem(label, format_loc(loc), msg) for loc, msg in _check_patient(patient)]
            if problems:
                raise PatientError(problems)
            patient._source = label
            return patient, self._plan(patient)
        except InputError as exc:
            if not rename:
                raise
            raise names.rewrite(exc) from None

    def _plan(self, patient: Patient) -> Any:
        from ._versions import protocol_for
        from .schedule import plan

        today = self.today()
        # The version the patient is on (issue 15), if one is recorded.
        protocol = protocol_for(self._conn, patient.id, patient.protocol)
        # An entry dated after the day it is recorded is refused (issue 11: a dose given in 2062).
        return plan(patient, protocol, as_of=_plan_as_of(patient, today), today=today)

    # -- writing --------------------------------------------------------------------------

    def add_patient(self, source: str | os.PathLike[str] | dict[str, Any], *, by: str | None = None,
                    reason: str | None = None, site: str = "default") -> list[Entry]:
        """Register a patient from a patient file (or its parsed mapping).

        The base record and each measurement, MRD result, blood count and event become log
        entries, in file order. The whole patient is validated first (a file's problems name
        its lines); raises :class:`InputError` and writes nothing if it is invalid or the id
        is already registered. ``site``: the trial site the patient belongs to (``protocol sites add``).
        """
        from ._io import read_document
        from ._loading import load_patient

        by = _who(by)
        if isinstance(source, dict):
            data, label, loaded = source, "patient", None
        else:
            label = os.fspath(source)
            loaded = load_patient(source)  # every problem, with the file's line numbers
            data = read_document(source, error=PatientError).data
        if not isinstance(data, dict):
            raise PatientError(Problem(label, "", "expected a mapping of fields at the top level"))
        base = {k: v for k, v in data.items() if k not in _LIST_KIND}
        items: list[tuple[str, Any]] = [("base", base)]
        for name, kind in _LIST_KIND.items():
            entries = data.get(name) or []
            if not isinstance(entries, list):
                raise PatientError(Problem(label, name, f"expected a list, got {type(entries).__name__}"))
            items.extend((kind, e) for e in entries)
        state = _State()
        for i, (kind, entry_data) in enumerate(items):
            state.apply(-i - 1, kind, entry_data, None, None)
        if loaded is None:
            patient, result = self._validate(str(base.get("id")), state, label, rename=False)
        else:
            patient, result = loaded, self._plan(loaded)
        pid = patient.id
        with self._write() as conn:
            conn.lock_patient(pid)
            row = conn.execute("SELECT created, created_by FROM patients WHERE id = ?", (pid,)).fetchone()
            if row is not None:
                raise PatientError(Problem(label, "id", f"{pid!r} is already in the registry (added {row[0]} by "
                                           f"{row[1]}): record new results with `protocol record {pid} ...`"))
            if conn.execute("SELECT 1 FROM sites WHERE id = ?", (site,)).fetchone() is None:
                known = ", ".join(r[0] for r in conn.execute("SELECT id FROM sites ORDER BY id"))
                raise InputError(Problem(label, "site", f"no site {site!r} (sites: {known}); add it with "
                                         f"`protocol sites add {site}`"))
            stamp = self._recorded_at(conn)
            conn.execute("INSERT INTO patients (id, base, created, created_by) VALUES (?, ?, ?, ?)",
                         (pid, _dumps(base), stamp, by))
            conn.execute("INSERT INTO patient_sites (patient, site) VALUES (?, ?)", (pid, site))
            written = [self._insert(conn, pid, kind, entry_data, by, stamp, reason if kind == "base" else None)
                       for kind, entry_data in items]
            from ._versions import record_initial

            record_initial(conn, pid, result.protocol, by, stamp)
            _note_signoffs(conn, written, result)
            self._project_patient(conn, pid, self.today(), None, (patient, result, written[-1].seq))
        return written

    def record(self, patient_id: str, kind: str, data: dict[str, Any], *, by: str | None = None,
               reason: str | None = None, supersedes: int | None = None, label: str = "record",
               then: Callable[[Any, Entry, Any], None] | None = None) -> Entry:
        """Append one entry to a patient's log, after validating the patient with it.

        ``kind``: ``measurement``, ``mrd``, ``count``, ``event`` (``data`` as in a patient
        file's list) or ``base`` (the whole new base record; it supersedes the current one).
        ``supersedes``: the seq of an entry of the same kind this one corrects (it takes its
        place); a correction needs a ``reason``. A dose-critical entry is noted as waiting for
        a second person's sign-off in the same transaction (:mod:`protocol._signoff`), whoever
        records it: the web, the API or the command line. ``then(conn, entry, plan)``: more to
        write in the same transaction, under the same patient lock, once the entry is inserted
        (``plan``: the patient's plan with it); if it raises, nothing is stored. Returns the
        entry once it is on disk.
        """
        by = _who(by)
        if kind not in KINDS:
            raise InputError(Problem(label, "kind", f"expected one of {', '.join(KINDS)}, got {kind!r}"))
        if not isinstance(data, dict):
            raise InputError(Problem(label, "", f"expected a mapping of fields, got {type(data).__name__}"))
        with self._write() as conn:
            state = self._state(conn, patient_id, label)
            if kind == "base":
                if data.get("id", patient_id) != patient_id:
                    raise InputError(Problem(label, "id", f"a patient's id is never changed: expected {patient_id!r}, "
                                             f"got {data.get('id')!r}"))
                if supersedes is not None and supersedes != state.base_seq:
                    raise InputError(Problem(label, "supersedes", f"a base correction replaces the current base "
                                             f"record #{state.base_seq}, got #{supersedes}"))
                supersedes = state.base_seq
                merged = dict(state.base or {})
                for key, value in data.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                if merged == state.base:
                    raise InputError(Problem(label, "", "nothing to correct: the base record already says this"))
                data = merged
            if supersedes is not None:
                self._check_target(conn, state, patient_id, kind, supersedes, reason, label, "supersedes")
            state.apply(_NEW, kind, data, supersedes, None)
            patient, result = self._validate(patient_id, state, label)
            entry = self._insert(conn, patient_id, kind, data, by, self._recorded_at(conn), reason, supersedes)
            _note_signoffs(conn, (entry,), result)
            if then is not None:
                then(conn, entry, result)
            self._project_patient(conn, patient_id, self.today(), None, (patient, result, entry.seq))
        return entry

    def record_many(self, patient_id: str, entries: Sequence[tuple[str, dict[str, Any]]], *, by: str | None = None,
                    labels: Sequence[str] | None = None) -> list[Entry]:
        """Append several entries (``(kind, data)``, not ``base``) to one patient's log: all of
        them or none. The patient is validated with all of them; if that fails, the first entry
        that cannot be added is named (``labels[i]``, e.g. its item) in the problems.

        >>> reg.record_many("INF-0001", [("event", {"type": "item_given", "date": "2026-05-11",  # doctest: +SKIP
        ...     "item": "induction:vincristine@8"}), ("event", {"type": "item_given", "date": "2026-05-11",
        ...     "item": "induction:daunorubicin@8"})], by="alice")
        """
        by = _who(by)
        if not entries:
            raise InputError(Problem("record", "", "nothing to record"))
        for kind, data in entries:
            if KINDS.get(kind) is None or not isinstance(data, dict):
                raise InputError(Problem("record", "kind", f"expected one of measurement, mrd, count, event with a "
                                         f"mapping of fields, got {kind!r}"))
        with self._write() as conn:
            def attempt(upto: int) -> tuple[Patient, Any]:
                state = self._state(conn, patient_id, "record")
                for k, (kind, data) in enumerate(entries[:upto]):  # the last one is "this record"
                    state.apply(_NEW if k == upto - 1 else -1 - k, kind, data, None, None)
                return self._validate(patient_id, state, "record")

            try:
                patient, result = attempt(len(entries))
            except InputError as exc:
                failing, error = len(entries) - 1, exc
                for k in range(1, len(entries)):
                    try:
                        attempt(k)
                    except InputError as first:
                        failing, error = k - 1, first
                        break
                label = labels[failing] if labels else f"entry {failing + 1}"
                raise type(error)([p if label in p.message else Problem(p.file, p.field, f"{label}: {p.message}", p.line)
                                   for p in error.problems]) from None
            stamp = self._recorded_at(conn)
            written = [self._insert(conn, patient_id, kind, data, by, stamp, None) for kind, data in entries]
            _note_signoffs(conn, written, result)
            self._project_patient(conn, patient_id, self.today(), None, (patient, result, written[-1].seq))
        return written

    def retract(self, patient_id: str, seq: int, *, by: str | None = None, reason: str | None = None) -> Entry:
        """Withdraw an entry recorded in error (it stays in the log, marked retracted).

        Needs a ``reason``. The base record cannot be retracted (correct it instead), and
        the patient without the entry must still be valid (e.g. an element's start cannot
        be retracted while its completion stands).
        """
        by = _who(by)
        label = "retract"
        with self._write() as conn:
            state = self._state(conn, patient_id, label)
            row = conn.execute("SELECT kind, patient FROM entries WHERE seq = ?", (seq,)).fetchone()
            kind = row[0] if row else "event"
            if kind == "base" and row[1] == patient_id:
                raise InputError(Problem(label, "", "the base record cannot be retracted: correct it with "
                                         f"`protocol record {patient_id} base --set FIELD=VALUE --why ...`"))
            self._check_target(conn, state, patient_id, kind, seq, reason, label, "seq")
            state.apply(_NEW, kind, None, None, seq)
            patient, result = self._validate(patient_id, state, label)
            entry = self._insert(conn, patient_id, kind, None, by, self._recorded_at(conn), reason, None, seq)
            self._project_patient(conn, patient_id, self.today(), None, (patient, result, entry.seq))
        return entry

    def _bulk_insert(self, patients: Iterable[dict[str, Any]], by: str, site: str = "default") -> int:
        """Register many patients in one transaction *without* validating them or projecting
        their worklist: for benchmarks and tests that build large registries. Patient files go
        through :meth:`add_patient`. Returns the number of entries written."""
        count = 0
        with self._write() as conn:
            stamp = self._recorded_at(conn)
            for data in patients:
                base = {k: v for k, v in data.items() if k not in _LIST_KIND}
                conn.execute("INSERT INTO patients (id, base, created, created_by) VALUES (?, ?, ?, ?)",
                             (base["id"], _dumps(base), stamp, by))
                conn.execute("INSERT INTO patient_sites (patient, site) VALUES (?, ?)", (base["id"], site))
                rows = [("base", base)] + [(kind, e) for name, kind in _LIST_KIND.items() for e in data.get(name) or ()]
                conn.executemany("INSERT INTO entries (patient, kind, data, recorded_by, recorded_at) "
                                 "VALUES (?, ?, ?, ?, ?)", [(base["id"], k, _dumps(d), by, stamp) for k, d in rows])
                count += len(rows)
        return count

    def _check_target(self, conn: sqlite3.Connection, state: _State, patient_id: str, kind: str, seq: int,
                      reason: str | None, label: str, field: str) -> None:
        if not (reason or "").strip():
            raise InputError(Problem(label, "reason", "a correction needs a reason (why the entry was wrong)"))
        row = conn.execute("SELECT patient, kind, retracts FROM entries WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise InputError(Problem(label, field, f"no entry #{seq} in the log"))
        if row[0] != patient_id:
            raise InputError(Problem(label, field, f"#{seq} belongs to patient {row[0]!r}, not {patient_id!r}"))
        if row[2] is not None:
            raise InputError(Problem(label, field, f"#{seq} is itself a retraction (of #{row[2]}); it cannot be "
                                     "corrected"))
        if row[1] != kind:
            raise InputError(Problem(label, field, f"#{seq} is a {row[1]} entry, not a {kind} one: retract it and "
                                     "record the right kind"))
        if seq not in state.where:
            later = conn.execute("SELECT seq, retracts FROM entries WHERE supersedes = ? OR retracts = ?",
                                 (seq, seq)).fetchone()
            how = "retracted" if later and later[1] == seq else "superseded"
            raise InputError(Problem(label, field, f"#{seq} was already {how} by #{later[0] if later else '?'}"
                                     + ("" if how == "retracted" else f": correct #{later[0] if later else '?'}"
                                        " instead")))

    def _insert(self, conn: sqlite3.Connection, patient_id: str, kind: str, data: Any, by: str, stamp: str,
                reason: str | None, supersedes: int | None = None, retracts: int | None = None) -> Entry:
        cur = conn.execute(
            "INSERT INTO entries (patient, kind, data, recorded_by, recorded_at, reason, supersedes, retracts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (patient_id, kind, _dumps(data), by, stamp, reason, supersedes, retracts))
        return Entry(int(cur.lastrowid or 0), patient_id, kind, data, by, stamp, reason, supersedes, retracts)

    # -- reading --------------------------------------------------------------------------

    def patient_data(self, patient_id: str, *, as_of_recorded: str | dt.date | dt.datetime | None = None
                     ) -> dict[str, Any]:
        """The patient file the log replays to (optionally as recorded up to a time)."""
        upto = None if as_of_recorded is None else parse_recorded(as_of_recorded)
        with self._read() as conn:
            return self._state(conn, patient_id, patient_id, upto).to_dict()

    def patient(self, patient_id: str, *, as_of_recorded: str | dt.date | dt.datetime | None = None) -> Patient:
        """The validated :class:`Patient` the log replays to (optionally as recorded up to a time)."""
        from pydantic import ValidationError

        from ._loading import _check_patient
        from ._models import Patient

        data = self.patient_data(patient_id, as_of_recorded=as_of_recorded)
        label = f"{patient_id} in {self.path}"
        try:
            patient = Patient.model_validate(data)
        except ValidationError as exc:  # pragma: no cover - every write was validated
            raise PatientError(problems_from_validation(exc, Document(label, data))) from None
        problems = [Problem(label, format_loc(loc), msg) for loc, msg in _check_patient(patient)]
        if problems:  # pragma: no cover - every write was validated
            raise PatientError(problems)
        patient._source = label
        return patient

    def export(self, patient_id: str, *, format: str = "yaml",
               as_of_recorded: str | dt.date | dt.datetime | None = None) -> str:
        """The patient as a patient file (YAML or JSON text) that loads to the same :class:`Patient`."""
        data = self.patient_data(patient_id, as_of_recorded=as_of_recorded)
        if format == "json":
            return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        head = f"# {patient_id}, exported from the registry {self.path}"
        if as_of_recorded is not None:
            head += f" as recorded up to {parse_recorded(as_of_recorded)}"
        return head + "\n" + _yaml_dump(data)

    def history(self, patient_id: str, *, as_of_recorded: str | dt.date | dt.datetime | None = None) -> list[Entry]:
        """The patient's audit trail: every entry in order, with what corrected it (up to a time)."""
        upto = None if as_of_recorded is None else parse_recorded(as_of_recorded)
        sql = ("SELECT seq, patient, kind, data, recorded_by, recorded_at, reason, supersedes, retracts "
               "FROM entries WHERE patient = ?")
        args: tuple[Any, ...] = (patient_id,)
        if upto is not None:
            sql += " AND recorded_at <= ?"
            args += (upto,)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
            if not rows:
                raise self._unknown(conn, patient_id, patient_id, upto)
        entries = [Entry(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in rows]
        by_sup = {e.supersedes: e.seq for e in entries if e.supersedes is not None}
        by_ret = {e.retracts: e.seq for e in entries if e.retracts is not None}
        out = []
        base: dict[str, Any] | None = None
        for e in entries:
            changes = None
            if e.kind == "base" and isinstance(e.data, dict):
                changes = "registered" if base is None else _diff(base, e.data)
                base = e.data
            out.append(replace(e, superseded_by=by_sup.get(e.seq), retracted_by=by_ret.get(e.seq), changes=changes))
        return out

    def check(self) -> dict[str, Any]:
        """The full check of ``protocol db check``: SQLite's ``integrity_check`` and every
        patient replayed and planned as a write would be. ``{"integrity": [...], "patients":
        N, "problems": [(patient, message), ...]}``; ``integrity == ["ok"]`` and no problems
        mean the registry is sound.

        >>> with open_registry("protocol.db") as reg: reg.check()["problems"]  # doctest: +SKIP
        []
        """
        with self._read() as conn:
            integrity = conn.integrity(20)
            ids = [r[0] for r in conn.execute("SELECT id FROM patients ORDER BY id")]
        problems: list[tuple[str, str]] = []
        for pid in ids:
            try:
                self._plan(self.patient(pid))
            except InputError as exc:
                problems.append((pid, str(exc)))
        return {"integrity": integrity, "patients": len(ids), "problems": problems}

    def patients(self) -> list[PatientSummary]:
        """Every registered patient, by id, with its current base record and log counts."""
        with self._read() as conn:
            stats = {r[0]: r[1:] for r in conn.execute(
                "SELECT patient, count(*), max(seq) FROM entries GROUP BY patient")}
            last = {seq: (at, by) for seq, at, by in conn.execute(
                "SELECT seq, recorded_at, recorded_by FROM entries WHERE seq IN "
                "(SELECT max(seq) FROM entries GROUP BY patient)")}
            # The live base record is the latest base entry: each one supersedes the one before.
            bases = {pid: json.loads(data) for pid, data in conn.execute(
                "SELECT patient, data FROM entries WHERE seq IN "
                "(SELECT max(seq) FROM entries WHERE kind = 'base' GROUP BY patient)")}
            created = conn.execute("SELECT id, created FROM patients ORDER BY id").fetchall()
        out = []
        for pid, when in created:
            count, last_seq = stats.get(pid, (0, None))
            at, by = last.get(last_seq, ("", ""))
            base = bases.get(pid, {})
            out.append(PatientSummary(pid, str(base.get("protocol", "")), str(base.get("diagnosis_date", "")),
                                      count, when, at, by))
        return out

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` (``ok`` when the file is sound; see
        :meth:`protocol._dbpg.PgDatabase.integrity` for a server)."""
        return "; ".join(self._db.integrity(1000))

    # -- the worklist projection ----------------------------------------------------------

    def worklist(self, start: dt.date | None = None, days: int = MIN_HORIZON_DAYS,
                 as_of: dt.date | None = None) -> Any:
        """What is due across all patients in ``[start, start + days)``, what is overdue or
        unrecorded, which decisions wait for a result, which items are out of window (see
        :mod:`protocol._worklist`), with the plans made as of ``as_of`` (default today): the
        window (``start``, default the as-of day) only chooses what is listed as due.

        Served from the projection table; patients whose projection is stale (computed for
        another day, a shorter horizon, or another protocol version) are re-planned first.
        """
        from ._worklist import Worklist, query

        return self._serve(start, days, as_of, lambda conn, start, days, day, refreshed: Worklist(
            start, days, query(conn, start, days, day), refreshed, self.path, day))

    def write_worklist(self, out: Any, start: dt.date | None = None, days: int = MIN_HORIZON_DAYS,
                       as_of: dt.date | None = None, *, json_output: bool = False) -> None:
        """Write the worklist's table text (or its JSON) to ``out``, the same text as
        ``worklist(...).table()`` (``.to_json()``), streamed from the projection without
        holding every row (what ``protocol worklist`` prints: 10,000 patients in a fraction of
        the memory).

        >>> reg.write_worklist(sys.stdout, dt.date(2026, 11, 21), 7)  # doctest: +SKIP
        """
        from ._worklist import stream

        self._serve(start, days, as_of, lambda conn, start, days, day, refreshed: stream(
            conn, start, days, day, refreshed, out, json_output))

    def worklist_page(self, start: dt.date | None = None, days: int = MIN_HORIZON_DAYS,
                      as_of: dt.date | None = None, *, sites: Sequence[str] | None = None,
                      offset: int = 0, limit: int = 250) -> Any:
        """One page of :meth:`worklist` (``limit`` rows from ``offset``), only the patients of
        ``sites`` (``None``: every site), as a :class:`~protocol._worklist.Worklist` whose
        ``rows`` are that page, with ``total`` and ``counted`` (rows per category) of the
        whole list: the web's worklist page.

        >>> wl = reg.worklist_page(days=7, sites=["site-a"], offset=0, limit=250)  # doctest: +SKIP
        >>> wl.total, wl.counts()["due"]  # doctest: +SKIP
        """
        from ._worklist import Worklist, page

        def serve(conn: Any, start: dt.date, days: int, day: dt.date, refreshed: int) -> Any:
            counts, rows = page(conn, start, days, day, None if sites is None else sorted(sites), offset, limit)
            return Worklist(start, days, rows, refreshed, self.path, day, counted=counts)

        return self._serve(start, days, as_of, serve)

    def _serve(self, start: dt.date | None, days: int, as_of: dt.date | None, serve: Callable[..., Any]) -> Any:
        """Refresh what is stale, then ``serve(conn, start, days, as_of, refreshed)`` from one
        read snapshot of a fresh projection."""
        if days < 1:
            raise InputError(Problem("", "--days", f"expected a whole number of days >= 1, got {days}"))
        day = as_of or self.today()
        start = start or day
        # The projection covers the days from the as-of day to the window's end.
        horizon = max(days, (start - day).days + days)
        refreshed = 0
        for _ in range(3):
            with self._read() as conn:
                stale = self._stale(conn, day, horizon)
                if not stale:
                    return serve(conn, start, days, day, refreshed)
            if self._db.scope.read_only:  # a monitor writes nothing, not even the cache
                return self._worklist_without_lock(start, days, day, horizon, serve)
            try:
                refreshed += self._refresh(stale, day, horizon, wait_ms=WORKLIST_WAIT_MS)
            except RegistryError:
                # Another process is writing: a reader never waits for it (issue 16 §5). The
                # stale part is recomputed into temporary copies, served, and dropped.
                return self._worklist_without_lock(start, days, day, horizon, serve)
        # Writers keep changing the projection under us: refresh and read in one transaction.
        with self._write() as conn:
            stale = self._stale(conn, day, horizon)
            refreshed += len(stale)
            self._refresh_in(conn, stale, day, horizon)
            return serve(conn, start, days, day, refreshed)

    def _stale(self, conn: sqlite3.Connection, start: dt.date, days: int) -> list[str]:
        """Patients whose projection cannot serve a worklist from ``start`` for ``days`` days."""
        from ._versions import expected_keys

        current = _current_keys(conn.execute("SELECT DISTINCT protocol, definition FROM projection").fetchall())
        versioned = expected_keys(conn, current)
        rows = conn.execute(
            "SELECT p.id, j.computed_for, j.horizon, j.protocol, j.definition FROM patients AS p "
            "LEFT JOIN projection AS j ON j.patient = p.id").fetchall()
        day = start.isoformat()
        return [pid for pid, computed_for, horizon, ref, definition in rows
                if computed_for != day or horizon < days
                or definition != (versioned.get(pid) or current.get(ref) or "") or not definition]

    def _refresh(self, stale: Sequence[str], start: dt.date, days: int, chunk: int = 500,
                 wait_ms: int | None = None) -> int:
        # Planning is the cost of a refresh: with many patients stale (the first worklist of a
        # day), a forked process plans half of them from its own read snapshot while this one
        # plans the other half; each result is written only if the patient's log has not grown
        # since (else it is planned again inside the write).
        # (SQLite only: the worker reads the file; PostgreSQL serves each process its own connection.)
        computed = _parallel_projections(self.path, stale, start, days) \
            if len(stale) >= PARALLEL_REFRESH_MIN and self._db.dialect == "sqlite" else {}
        for i in range(0, len(stale), chunk):
            with self._write(wait_ms) as conn:
                self._refresh_in(conn, stale[i:i + chunk], start, days, computed)
        return len(stale)

    def _worklist_without_lock(self, start: dt.date, days: int, day: dt.date, horizon: int,
                               serve: Callable[..., Any]) -> Any:
        """The worklist from a read snapshot while another process holds the write lock: the
        projection tables are copied into TEMP tables of the same names (which shadow them for
        this connection), the stale patients recomputed there, the rows read, the copies
        dropped. Nothing is written to the registry file."""
        conn = self._db
        tables = ("projection", "worklist_rows")
        conn.begin(False)
        try:
            conn.shadow(tables)
            stale = self._stale(conn, day, horizon)
            self._refresh_in(conn, stale, day, horizon)
            return serve(conn, start, days, day, len(stale))
        finally:
            conn.unshadow(tables)
            conn.commit()

    def _refresh_in(self, conn: sqlite3.Connection, patients: Sequence[str], start: dt.date, days: int,
                    computed: dict[str, _Projected] | None = None) -> None:
        protocols: dict[str, Any] = {}
        ready: dict[str, _Projected] = {}
        if computed and patients:
            marks = "?," * (len(patients) - 1) + "?"
            current = dict(conn.execute(f"SELECT patient, max(seq) FROM entries WHERE patient IN ({marks}) "
                                        "GROUP BY patient", tuple(patients)).fetchall())
            ready = {pid: done for pid in patients
                     if (done := computed.get(pid)) is not None and done.last_seq == current.get(pid)}
            _store_projections(conn, start, ready, self._stamp())
        todo = [pid for pid in sorted(patients) if pid not in ready]
        for pid in todo:  # in one order: two refreshes never wait for each other in a cycle
            conn.lock_patient(pid)  # PostgreSQL: never over a writer of the patient
        # The logs are read after every lock is held, a few hundred patients per query.
        _store_projections(conn, start, _projections(conn, self.path, todo, start, days, protocols), self._stamp())

    def _project_patient(self, conn: sqlite3.Connection, patient_id: str, day: dt.date, days: int | None,
                         planned: tuple[Patient, Any, int] | None = None, protocols: dict[str, Any] | None = None
                         ) -> None:
        """Recompute one patient's worklist rows as of ``day`` (inside the caller's transaction).

        ``planned``: the patient, a plan of it and the last seq, when the caller just made
        them (a write); the plan is reused if it was made as of ``day``. ``protocols`` caches
        the loaded protocols across the patients of one refresh.
        """
        done = _projection(conn, self.path, patient_id, day, days, planned, protocols)
        _store_projection(conn, patient_id, day, done, self._stamp())


# --------------------------------------------------------------------------- projections


#: Stale patients from which a refresh plans in two processes (below, the fork costs more).
PARALLEL_REFRESH_MIN = 2000


@dataclass(frozen=True)
class _Projected:
    """One patient's projection, computed: its worklist rows and what they were made from."""

    rows: list[tuple[Any, ...]]
    horizon: int
    protocol: str
    key: str
    last_seq: int


def _projection(conn: sqlite3.Connection, path: Path, patient_id: str, day: dt.date, days: int | None,
                planned: tuple[Patient, Any, int] | None = None, protocols: dict[str, Any] | None = None,
                read: _Read | None = None) -> _Projected:
    """The worklist rows of one patient as of ``day`` from what ``conn`` sees (see
    :meth:`Registry._project_patient`); a patient that cannot be planned gets a problem row.
    ``read``: what :func:`_read_many` read of the patient in the same transaction (else each
    is read here)."""
    from ._models import Patient
    from . import schedule
    from ._worklist import problem_row, project

    if read is None:
        old = conn.execute("SELECT horizon FROM projection WHERE patient = ?", (patient_id,)).fetchone()
        old_horizon = old[0] if old else 0
    else:
        old_horizon = read.horizons.get(patient_id) or 0
    horizon = max(days or 0, old_horizon, MIN_HORIZON_DAYS)
    try:
        if planned is None:
            rows_ = _entry_rows(conn, patient_id) if read is None else read.entries.get(patient_id, [])
            last_seq = rows_[-1][0]
            patient = Patient.model_validate(_replay(rows_).to_dict())
            patient._source = f"{patient_id} in {path}"
            result = None
        else:
            patient, result, last_seq = planned
        ref = patient.protocol
        if result is None or result.as_of != day:
            from ._versions import protocol_for

            cache = {} if protocols is None else protocols
            if ref not in cache:
                cache[ref] = _protocol(ref)
            # A patient with no version entry has no recorded version (protocol_for is None).
            version = protocol_for(conn, patient_id, ref) \
                if read is None or patient_id in read.versioned else None
            # Only the rows up to the projection's horizon are listed (_worklist._selected):
            # the items of the elements after it are not made.
            result = schedule.plan_rows_before(patient, version or cache[ref], day, day + dt.timedelta(days=horizon))
        rows = project(result, day, horizon)
        key = _definition_key(result.protocol)
    except Exception as exc:  # noqa: BLE001 - a patient that cannot be planned is listed, never dropped
        rows = [problem_row(day, exc)]
        ref = str(json.loads(conn.execute("SELECT data FROM entries WHERE patient = ? AND kind = 'base' "
                                          "ORDER BY seq DESC LIMIT 1", (patient_id,)).fetchone()[0])
                  .get("protocol", ""))
        last_seq = conn.execute("SELECT max(seq) FROM entries WHERE patient = ?", (patient_id,)).fetchone()[0]
        key = _definition_key(ref)
    return _Projected(rows, horizon, ref, key or "", last_seq or 0)


def _store_projection(conn: sqlite3.Connection, patient_id: str, day: dt.date, done: _Projected, stamp: str) -> None:
    """Replace the patient's worklist rows and projection record (inside the caller's write)."""
    _store_projections(conn, day, {patient_id: done}, stamp)


def _store_projections(conn: sqlite3.Connection, day: dt.date, ready: dict[str, _Projected], stamp: str) -> None:
    """Replace the worklist rows and projection records of the patients of ``ready`` (inside
    the caller's write), in three statements."""
    from ._worklist import in_listing_order

    if not ready:
        return
    conn.executemany("DELETE FROM worklist_rows WHERE patient = ?", [(pid,) for pid in ready])
    conn.executemany("INSERT INTO worklist_rows (patient, date, pos, category, kind, study, element, item, name, "
                     "detail, status, branch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [row for pid, done in ready.items() for row in in_listing_order(pid, done.rows)])
    iso = day.isoformat()
    conn.executemany("INSERT OR REPLACE INTO projection (patient, computed_for, horizon, protocol, definition, "
                     "last_seq, computed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(pid, iso, d.horizon, d.protocol, d.key, d.last_seq, stamp) for pid, d in ready.items()])


@dataclass(frozen=True)
class _Read:
    """What a refresh reads of many patients at once, in one transaction: each one's log
    entries (as :func:`_entry_rows` gives them), its projection's horizon, and the patients
    with a recorded protocol version."""

    entries: dict[str, list[tuple[Any, ...]]]
    horizons: dict[str, int]
    versioned: set[str]


#: Patients whose logs one query reads (well under SQLite's limit of bound parameters).
READ_CHUNK = 500


def _read_many(conn: Any, patients: Sequence[str]) -> _Read:
    """The logs and horizons of ``patients`` in a few queries rather than two per patient.

    >>> _read_many(conn, ["INF-0001"]).entries["INF-0001"][0][1]  # doctest: +SKIP
    'base'
    """
    entries: dict[str, list[tuple[Any, ...]]] = {}
    horizons: dict[str, int] = {}
    for i in range(0, len(patients), READ_CHUNK):
        part = tuple(patients[i:i + READ_CHUNK])
        marks = "?," * (len(part) - 1) + "?"
        rows = conn.execute(f"SELECT patient, seq, kind, data, supersedes, retracts FROM entries "
                            f"WHERE patient IN ({marks}) ORDER BY patient, seq", part).fetchall()
        if rows:
            # One parse of every entry's JSON as one array (see _entry_rows).
            datas = json.loads("[" + ",".join([r[3] for r in rows]) + "]")
            for (pid, seq, kind, _, sup, ret), data in zip(rows, datas, strict=True):
                got = entries.get(pid)
                if got is None:
                    got = entries[pid] = []
                got.append((seq, kind, data, sup, ret))
        horizons.update(conn.execute(f"SELECT patient, horizon FROM projection WHERE patient IN ({marks})",
                                     part).fetchall())
    versioned = {pid for (pid,) in conn.execute("SELECT DISTINCT patient FROM version_entries")}
    return _Read(entries, horizons, versioned)


def _projections(conn: Any, path: Path, patients: Sequence[str], day: dt.date, days: int | None,
                 protocols: dict[str, Any]) -> dict[str, _Projected]:
    """:func:`_projection` of each of ``patients`` (in their order), their logs read by
    :func:`_read_many` in the caller's transaction."""
    out: dict[str, _Projected] = {}
    # A chunk at a time: the parsed logs of thousands of patients held at once would make each
    # garbage collection pass scan them all (1.2 ms a patient at 3,000 rather than 0.55 ms).
    for i in range(0, len(patients), READ_CHUNK):
        part = patients[i:i + READ_CHUNK]
        read = _read_many(conn, part)
        for pid in part:
            out[pid] = _projection(conn, path, pid, day, days, protocols=protocols, read=read)
    return out


def _projections_from(path: Path, patients: Sequence[str], day: dt.date, days: int) -> dict[str, _Projected]:
    """The projections of ``patients`` from one read snapshot of the registry at ``path``,
    on a connection of this process's own (a forked worker never uses its parent's)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN")
        return _projections(conn, path, patients, day, days, {})
    finally:
        conn.close()


def _parallel_projections(path: Path, patients: Sequence[str], day: dt.date, days: int) -> dict[str, _Projected]:
    """Half of ``patients`` planned by a forked process, half by this one (Linux, 2 cores or
    more); ``{}`` where a second process is not available, so the caller plans them itself."""
    import multiprocessing as mp
    import sys
    import threading

    # Fork only a single-threaded process (a web server's threads could hold locks the child
    # would wait on forever).
    if not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2 or threading.active_count() > 1:
        return {}
    try:
        pool = mp.get_context("fork").Pool(1)
    except (OSError, ValueError):  # pragma: no cover - no process can be started here
        return {}
    try:
        theirs = pool.apply_async(_projections_from, (path, list(patients[1::2]), day, days))
        out = _projections_from(path, patients[0::2], day, days)
        try:
            out.update(theirs.get())
        except Exception:  # noqa: BLE001 - the other half is then planned inside the write, as usual
            pass
        return out
    finally:
        pool.terminate()


# --------------------------------------------------------------------------- helpers


def _who(by: str | None) -> str:
    who = (by or "").strip() or os.environ.get("USER", "").strip()
    if not who:
        try:
            who = getpass.getuser().strip()
        except Exception:  # noqa: BLE001 - no user name from the system: ask for one below
            who = ""
    if not who:
        raise InputError(Problem("", "--by", "who is recording? give --by NAME (or set $USER)"))
    return who


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``wbc_at_diagnosis 150 → 165, notes removed``: what a base correction changed."""
    parts = []
    for key in dict.fromkeys([*old, *new]):
        if key not in new:
            parts.append(f"{key} removed")
        elif key not in old:
            parts.append(f"{key} = {new[key]}")
        elif old[key] != new[key]:
            parts.append(f"{key} {old[key]} → {new[key]}")
    return ", ".join(parts) or "no change"


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


_KEY_CACHE: dict[int, tuple[Any, str]] = {}


def _protocol(ref: str) -> Any:
    """The protocol a patient names (or None: ``plan`` then loads it itself, and reports a
    protocol that cannot be loaded against the patient's field)."""
    from ._loading import load_protocol

    try:
        return load_protocol(ref)
    except Exception:  # noqa: BLE001 - plan() reports it, naming the patient's field
        return None


def _current_keys(stored: Iterable[tuple[str, str | None]]) -> dict[str, str | None]:
    """``{protocol reference: its definition key now}`` (see :func:`_definition_key`) for the
    references of ``stored`` (``(reference, key)`` pairs of the projection).

    A stored key already names this release and the SHA-256 of the definition's bytes: when
    the file the reference names still has those bytes (and, for a shipped id, they are the
    released ones of the manifest), the key is the stored one, found from the file and its hash
    without validating the definition (a worklist served from a fresh projection then imports
    neither the models nor the machine). Otherwise the definition is loaded, as
    :func:`_definition_key` does; ``tests/test_registry.py`` holds both equal.

    >>> _current_keys([("interfant06-blinatumomab", None)])["interfant06-blinatumomab"]  # doctest: +SKIP
    '0.1.0|interfant06-blinatumomab@1.0.0|b28cb32adaa93b22'
    """
    from . import __version__

    keys: dict[str, list[str]] = {}
    for ref, key in stored:
        keys.setdefault(ref, [])
        if key:
            keys[ref].append(key)
    out: dict[str, str | None] = {}
    for ref, candidates in keys.items():
        found = _definition_file(ref) if candidates else None
        if found is not None:
            sha, version = found
            out[ref] = next((k for k in candidates if k.startswith(f"{__version__}|") and k.endswith(f"|{sha[:16]}")
                             and (not version or k.split("|")[1].rpartition("@")[2] == version)), None)
        if out.get(ref) is None:
            out[ref] = _definition_key(ref)
    return out


def _definition_file(ref: str) -> tuple[str, str] | None:
    """``(SHA-256 of the file, version asked for or "")`` of the definition ``ref`` names, the
    way :func:`~protocol._loading.load_protocol` finds it; None when that needs loading it
    (not found, unreadable, or a shipped file whose bytes are not the released ones)."""
    from ._loading import _ID_REF, _shipped_index

    _, shipped, sums = _shipped_index()
    named = _ID_REF.fullmatch(ref)
    if named is not None:
        path = shipped.get(named["id"])
        if path is None:
            return None
    else:
        path = Path(ref)
    try:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return None
    if named is not None and sums.get(path.name) != sha:
        return None
    return sha, (named["version"] or "") if named is not None else ""


def _definition_key(protocol_ref: Any) -> str | None:
    """What a projection was computed with: this release and the protocol file's content.

    ``protocol_ref``: a loaded :class:`~protocol.Protocol` or the reference a patient file
    gives. A new release or an edited definition makes every projection that used it stale.
    None when the protocol cannot be loaded.
    """
    from . import __version__
    from ._loading import load_protocol
    from ._machine import Protocol

    if isinstance(protocol_ref, Protocol):
        proto = protocol_ref
    else:
        try:
            proto = load_protocol(protocol_ref)  # cached on the file's path, mtime and size
        except Exception:  # noqa: BLE001 - an unloadable protocol: its patients are projected as problem rows
            return None
    cached = _KEY_CACHE.get(id(proto))
    if cached is None or cached[0] is not proto:
        sha = getattr(proto, "sha256", None)
        digest = sha[:16] if sha else (hashlib.sha256(Path(str(proto.path)).read_bytes()).hexdigest()[:16]
                                       if proto.path else "")
        site = getattr(proto, "site_sha256", None)
        if site:
            digest += "+" + site[:16]  # the site's verified values change the plan too
        cached = (proto, f"{__version__}|{proto.id}@{proto.version}|{digest}")
        _KEY_CACHE[id(proto)] = cached
    return cached[1]


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Dumper(base):  # type: ignore[misc, valid-type]
        """Dates stay plain ``2026-05-04`` (the package's loader reads them as text, as written)."""

    Dumper.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    scalars = {k: v for k, v in data.items() if k not in _LIST_KIND}
    out = yaml.dump(scalars, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=10_000)
    for name in _LIST_KIND:
        if data.get(name):
            out += f"{name}:\n"
            for entry in data[name]:
                line = yaml.dump([entry], Dumper=Dumper, sort_keys=False, allow_unicode=True, width=10_000,
                                 default_flow_style=True)
                out += "  - " + line.strip()[1:-1] + "\n"
    return out


# --------------------------------------------------------------------------- entry points


def _note_signoffs(conn: Any, written: Iterable[Entry], plan: Any) -> None:
    """Inside a write: note each dose-critical entry of ``written`` as waiting for sign-off.

    Every path that appends entries calls it (registration, ``record``, ``record_many``), so
    a dose modification typed on the command line waits for a pharmacist exactly as one
    entered on the web does (issue 10: a dose-critical entry waits for a second person).
    """
    from ._signoff import notes_required

    notes_required(conn, written, plan)


def open_registry(path: str | os.PathLike[str] | None = None, *, create: bool = False) -> Registry:
    """Open the registry at ``path`` (default: :func:`default_db_path`), migrating an older schema.

    ``create``: make an empty registry (mode 0600) if there is none; otherwise a missing file
    is an :class:`InputError` that says how to add the first patient.
    """
    return Registry(default_db_path() if path is None else path, create=create)


def resolve_patient(ref: str, db: str | os.PathLike[str] | None = None) -> Patient:
    """The registry patient ``ref`` (an id), as a validated :class:`Patient` (what ``plan`` takes).

    Raises :class:`PatientError` when there is no registry or no such patient, naming how to add it.
    """
    path = default_db_path() if db is None else db
    file = parse_url(path).path
    if file is not None and not file.exists():
        raise PatientError(Problem(ref, "", f"no such patient file, and no registry at {path} to look the id up in "
                                   "(add patients with `protocol patients add FILE`, or give --db)"))
    with Registry(path) as reg:
        from ._versions import attach, protocol_for

        patient = reg.patient(ref)
        return attach(patient, protocol_for(reg._conn, ref, patient.protocol))


def worklist(db: str | os.PathLike[str] | None = None, start: dt.date | None = None, days: int = 7,
             as_of: dt.date | None = None) -> Any:
    """The worklist of every patient in the registry ``db`` (see :meth:`Registry.worklist`)."""
    with open_registry(db) as reg:
        return reg.worklist(start, days, as_of)
