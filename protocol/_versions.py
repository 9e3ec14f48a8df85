"""Protocol versions in the registry: which definition each patient is planned with.

Protocols are amended while patients are on them. The registry therefore keeps every
definition it has planned with: the file's bytes, stored once under their SHA-256 in the
table ``protocol_versions`` (registry migration 5), and an append-only log,
``version_entries``, of which version each patient is on:

- registering a patient records the version it was planned with (no reason needed);
- ``protocol amend apply`` records a move ``from_sha256 → sha256`` with who, when and why;
- a move is undone by a retraction (another row, with a reason), never by an edit.

A row names the site amendment too (migration 6): the verified values a patient is planned
with are versioned like the definition, their file's bytes kept once in ``site_amendments``,
so ``protocol amend apply --site`` records a change of verified values like an amendment.

A patient's version *as recorded up to* a time is the last live row recorded by then (a
retraction counts from when it was recorded), so a plan "as it was known on" a date is made
again with the definition in force then, even after the shipped file changed. A patient
registered before migration 5 has no row until one is recorded: it is planned with the
shipped definition, as before.

>>> with open_registry("protocol.db") as reg:                       # doctest: +SKIP
...     patient_version(reg, "INF-0001").ref
'interfant06-blinatumomab@1.0.0'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import DefinitionError, InputError, Problem

__all__ = ["PatientVersion", "parse_recorded", "patient_version", "plan_as_known", "protocol_for", "version_history",
           "version_key"]

#: Loaded definitions by SHA-256, or ``sha+site_sha`` with a site amendment (a stored version
#: is compiled once per process).
_COMPILED: dict[str, Any] = {}
#: Protocols attached to registry patients (``id(patient)`` → (patient, protocol)), for the CLI.
_ATTACHED: dict[int, tuple[Any, Any]] = {}


@dataclass(frozen=True, slots=True)
class PatientVersion:
    """The protocol version a patient is on, and the log row that put it there.

    ``seq`` is None for a patient with no recorded version (registered before versions were
    kept): it is planned with the shipped definition.

    ``site`` names the site amendment the patient is planned with (``(site, file name,
    sha256)``), or is None.

    >>> PatientVersion("INF-0001", "interfant06-blinatumomab", "1.0.0", "ab" * 32, None, None, None, None).ref
    'interfant06-blinatumomab@1.0.0'
    """

    patient: str
    protocol: str
    version: str
    sha256: str
    seq: int | None
    recorded_at: str | None
    recorded_by: str | None
    reason: str | None
    site: tuple[str, str, str] | None = None

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.protocol}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"patient": self.patient, "protocol": self.protocol, "version": self.version, "ref": self.ref,
                "sha256": self.sha256, "seq": self.seq, "recorded_at": self.recorded_at,
                "recorded_by": self.recorded_by, "reason": self.reason,
                "site": None if self.site is None else {"site": self.site[0], "file": self.site[1],
                                                        "sha256": self.site[2]}}


def version_key(version: str) -> tuple[Any, ...]:
    """A version as a sortable key: numeric parts compare as numbers (``1.10.0 > 1.9.0``).

    >>> version_key("1.10.0") > version_key("1.9.0")
    True
    """
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+-]", version))


def definition_bytes(protocol: Any) -> bytes:
    """The bytes of the file ``protocol`` was loaded from, checked against its SHA-256.

    Raises :class:`DefinitionError` when the file changed since it was loaded.
    """
    sha = getattr(protocol, "sha256", None)
    stored = _STORED_BYTES.get(sha or "")
    if stored is not None:
        return stored
    path = getattr(protocol, "path", None)
    try:
        data = Path(str(path)).read_bytes()
    except (OSError, TypeError) as exc:
        raise DefinitionError(Problem(str(path), "", f"cannot read the definition to keep it: {exc}")) from None
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise DefinitionError(Problem(str(path), "", "the file changed since it was loaded: load it again"))
    return data


#: Bytes of the versions compiled from the registry (they have no file of their own).
_STORED_BYTES: dict[str, bytes] = {}


def store(conn: sqlite3.Connection, protocol: Any, stamp: str) -> str:
    """Keep ``protocol``'s definition in the registry (once) and return its SHA-256.

    Inside the caller's transaction.
    """
    sha = getattr(protocol, "sha256", None)
    if sha and conn.execute("SELECT 1 FROM protocol_versions WHERE sha256 = ?", (sha,)).fetchone():
        return sha
    data = definition_bytes(protocol)
    sha = hashlib.sha256(data).hexdigest()
    conn.execute("INSERT OR IGNORE INTO protocol_versions (sha256, protocol, version, name, definition, stored_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (sha, protocol.id, protocol.version,
                                               Path(str(protocol.path)).name, data, stamp))
    return sha


def store_site(conn: sqlite3.Connection, protocol: Any, stamp: str) -> str | None:
    """Keep the site amendment ``protocol`` was amended with (once) and return its SHA-256,
    or None when it has none. Inside the caller's transaction."""
    sha = getattr(protocol, "site_sha256", None)
    if not sha:
        return None
    if conn.execute("SELECT 1 FROM site_amendments WHERE sha256 = ?", (sha,)).fetchone():
        return sha
    data = getattr(protocol, "site_bytes", None)
    if data is None or hashlib.sha256(data).hexdigest() != sha:
        raise DefinitionError(Problem(str((protocol.site or ("", "site amendment"))[1]), "",
                                      "the site amendment's content is not the one applied: load it again"))
    site, name = protocol.site
    conn.execute("INSERT OR IGNORE INTO site_amendments (sha256, protocol, site, name, amendment, stored_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (sha, protocol.id, site, Path(str(name)).name, data, stamp))
    return sha


def record_initial(conn: sqlite3.Connection, patient_id: str, protocol: Any, by: str, stamp: str) -> None:
    """Record the version a patient was registered with (inside the registering transaction)."""
    if protocol is None or not getattr(protocol, "path", None):
        return
    sha = store(conn, protocol, stamp)
    conn.execute("INSERT INTO version_entries (patient, sha256, recorded_by, recorded_at, site_sha256) "
                 "VALUES (?, ?, ?, ?, ?)", (patient_id, sha, by, stamp, store_site(conn, protocol, stamp)))


def record_move(conn: sqlite3.Connection, patient_id: str, protocol: Any, from_sha: str | None, by: str,
                stamp: str, reason: str, signature: str | None = None) -> int:
    """Record a move of a patient to ``protocol`` (and the site amendment it was amended
    with, if any, and the decisions it settles: ``protocol.settled``) inside the caller's
    transaction; its seq. ``signature``: the meaning of the signature when ``by`` signed it
    with the password again."""
    import json

    sha = store(conn, protocol, stamp)
    settled = getattr(protocol, "settled", None)
    cur = conn.execute("INSERT INTO version_entries (patient, sha256, from_sha256, recorded_by, recorded_at, reason, "
                       "site_sha256, signature, settled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (patient_id, sha, from_sha, by, stamp, reason, store_site(conn, protocol, stamp), signature,
                        json.dumps(dict(sorted(settled.items()))) if settled else None))
    return int(cur.lastrowid or 0)


def _live_rows(conn: sqlite3.Connection, patient_id: str, upto: str | None) -> list[tuple[Any, ...]]:
    # A retraction row carries no sha256: the live rows are the moves not retracted by then.
    sql = ("SELECT seq, sha256, recorded_at, recorded_by, reason, retracts, site_sha256, settled FROM version_entries "
           "WHERE patient = ?")
    args: tuple[Any, ...] = (patient_id,)
    if upto is not None:
        sql += " AND recorded_at <= ?"
        args += (upto,)
    rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
    retracted = {r[5] for r in rows if r[5] is not None}
    return [r for r in rows if r[5] is None and r[0] not in retracted]


def current_row(conn: sqlite3.Connection, patient_id: str, upto: str | None = None) -> tuple[Any, ...] | None:
    """``(seq, sha256, recorded_at, recorded_by, reason, None, site_sha256, settled)`` of the
    patient's version, or None."""
    rows = _live_rows(conn, patient_id, upto)
    return rows[-1] if rows else None


def load_version(conn: sqlite3.Connection, sha: str, site_sha: str | None = None) -> Any:
    """The stored definition ``sha`` as a :class:`~protocol.Protocol` (compiled once), with
    the stored site amendment ``site_sha`` applied when given.

    When it is the shipped definition as released now, the shipped protocol itself
    (``origin == "shipped"``); otherwise ``origin`` is ``"registry"`` and ``provenance`` says
    the version was read from the registry.
    """
    if site_sha:
        return _with_site(conn, load_version(conn, sha), site_sha)
    cached = _COMPILED.get(sha)
    if cached is not None:
        return cached
    row = conn.execute("SELECT protocol, version, name, definition FROM protocol_versions WHERE sha256 = ?",
                       (sha,)).fetchone()
    if row is None:
        raise DefinitionError(Problem("registry", "protocol_versions", f"no stored definition with sha256 {sha}"))
    pid, version, name, data = row
    from ._loading import _load, _shipped

    if pid in _shipped():
        try:
            shipped = _load(pid)
        except DefinitionError:
            shipped = None
        if shipped is not None and shipped.sha256 == sha:
            return shipped  # not cached here: the shipped file may change
    from ._io import decode_text, parse_text
    from ._loading import _compile

    label = f"{name} (kept in the registry, sha256 {sha[:12]})"
    doc = parse_text(decode_text(bytes(data), label, error=DefinitionError), label,
                     json_only=name.lower().endswith(".json"), error=DefinitionError)
    doc.sha256 = sha
    proto = _compile(doc)
    proto.sha256 = sha
    proto.origin = "registry"
    proto.provenance = f"version {version} kept in the registry (sha256 {sha[:12]}), not the shipped definition"
    _STORED_BYTES[sha] = bytes(data)
    _COMPILED[sha] = proto
    return proto


def _with_site(conn: sqlite3.Connection, base: Any, site_sha: str) -> Any:
    """``base`` with the stored site amendment ``site_sha`` applied (compiled once)."""
    key = f"{base.sha256}+{site_sha}"
    cached = _COMPILED.get(key)
    if cached is not None:
        return cached
    row = conn.execute("SELECT name, amendment FROM site_amendments WHERE sha256 = ?", (site_sha,)).fetchone()
    if row is None:
        raise DefinitionError(Problem("registry", "site_amendments", f"no stored site amendment with sha256 "
                                      f"{site_sha}"))
    from ._site import amend

    stored = _STORED_BYTES.get(base.sha256) if base.origin == "registry" else None
    proto = amend(base, f"{row[0]} (kept in the registry, sha256 {site_sha[:12]})", site_bytes=bytes(row[1]),
                  base_bytes=stored)
    _COMPILED[key] = proto
    return proto


#: Protocols with settled decisions: ``(id(base), settled JSON)`` → (base, the copy).
_SETTLED: dict[tuple[int, str], tuple[Any, Any]] = {}


def with_settled(base: Any, settled: dict[str, str] | None) -> Any:
    """``base`` with the decisions ``settled`` (``{decision: outcome}``) kept as they were
    taken, whatever this version's rule says (see ``schedule.replay``); ``base`` itself when
    there are none. A shallow copy that shares everything compiled, made once per base.

    >>> with_settled(p, {"pre_octadad": "octadad"}).settled  # doctest: +SKIP
    {'pre_octadad': 'octadad'}
    """
    if not settled:
        return base
    import copy
    import json

    key = (id(base), json.dumps(dict(sorted(settled.items()))))
    hit = _SETTLED.get(key)
    if hit is not None and hit[0] is base:
        return hit[1]
    if len(_SETTLED) > 10_000:
        _SETTLED.clear()
    out = copy.copy(base)
    out.settled = dict(settled)
    _SETTLED[key] = (base, out)
    return out


def protocol_of_row(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Any:
    """The protocol a version-log row (of :func:`current_row`) puts a patient on: its
    definition, its site amendment and the decisions it settled."""
    import json

    proto = load_version(conn, row[1], row[6])
    return with_settled(proto, json.loads(row[7]) if row[7] else None)


def protocol_for(conn: sqlite3.Connection, patient_id: str, protocol_field: str,
                 upto: str | None = None) -> Any:
    """The protocol to plan a registry patient with: its recorded version (up to ``upto``)
    with its recorded site amendment, or None (the one its ``protocol`` field names) when none
    is recorded or the field names another protocol or version."""
    row = current_row(conn, patient_id, upto)
    if row is None:
        return None
    proto = protocol_of_row(conn, row)
    name, _, version = str(protocol_field).partition("@")
    if name != proto.id or (version and version != proto.version):
        return None
    return proto


def patient_version(reg: Any, patient_id: str, *, as_of_recorded: str | dt.date | dt.datetime | None = None
                    ) -> PatientVersion:
    """The version ``patient_id`` is on (as recorded up to a time, if given).

    >>> patient_version(reg, "INF-0001").version  # doctest: +SKIP
    '1.0.0'
    """

    upto = None if as_of_recorded is None else parse_recorded(as_of_recorded)
    patient = reg.patient(patient_id, as_of_recorded=as_of_recorded)
    with reg._read() as conn:
        row = current_row(conn, patient_id, upto)
        proto = None if row is None else protocol_for(conn, patient_id, patient.protocol, upto)
    if proto is None:
        from ._loading import load_protocol

        proto = load_protocol(patient.protocol)
        return PatientVersion(patient_id, proto.id, proto.version, proto.sha256, None, None, None, None)
    site = None if not row[6] else (proto.site[0], proto.site[1].split(" (kept in", 1)[0], row[6])
    return PatientVersion(patient_id, proto.id, proto.version, row[1], row[0], row[2], row[3], row[4], site)


def version_history(reg: Any, patient_id: str) -> list[dict[str, Any]]:
    """Every row of the patient's version log, in order, with the versions named (``to`` /
    ``from``: ``id@version``; ``to_label`` / ``from_label`` add the site amendment's file).

    >>> [r["to"] for r in version_history(reg, "INF-0001")]  # doctest: +SKIP
    ['interfant06-blinatumomab@1.0.0', 'interfant06-blinatumomab@1.1.0']
    """
    with reg._read() as conn:
        names = {sha: f"{p}@{v}" for sha, p, v in conn.execute("SELECT sha256, protocol, version FROM "
                                                               "protocol_versions")}
        sites = {sha: {"site": site, "file": name, "sha256": sha}
                 for sha, site, name in conn.execute("SELECT sha256, site, name FROM site_amendments")}
        rows = conn.execute("SELECT seq, sha256, from_sha256, recorded_by, recorded_at, reason, retracts, site_sha256, "
                            "signature FROM version_entries WHERE patient = ? ORDER BY seq", (patient_id,)).fetchall()
    retracted = {r[6]: r[0] for r in rows if r[6] is not None}
    out = []
    live: list[tuple[int, str]] = []  # (seq, label) of the moves in force, the current one last

    def label(sha: str | None, site: str | None) -> str | None:
        name = names.get(sha) if sha else None
        return name if name is None or site not in sites else f"{name} + {sites[site]['file']}"

    for seq, sha, frm, by, at, reason, ret, site, signature in rows:
        if ret is not None:
            live = [x for x in live if x[0] != ret]
        before = live[-1][1] if live else label(frm, None)
        if sha is not None:
            live.append((seq, label(sha, site) or ""))
        out.append({"seq": seq, "to": names.get(sha) if sha else None, "sha256": sha,
                    "from": names.get(frm) if frm else None, "from_sha256": frm, "recorded_by": by,
                    "recorded_at": at, "reason": reason, "retracts": ret, "retracted_by": retracted.get(seq),
                    "site": sites.get(site), "to_label": label(sha, site), "signature": signature,
                    "from_label": before if frm is not None else None})
    return out


def plan_as_known(reg: Any, patient_id: str, on: dt.date, *, today: dt.date | None = None) -> Any:
    """The patient's plan as it was known at the end of ``on``: the entries recorded up to
    then, planned as of ``on`` with the protocol version in force then.

    >>> plan_as_known(reg, "INF-0001", dt.date(2026, 11, 1)).protocol.version  # doctest: +SKIP
    '1.0.0'
    """
    from .schedule import plan

    upto = parse_recorded(on)
    patient = reg.patient(patient_id, as_of_recorded=on)
    with reg._read() as conn:
        proto = protocol_for(conn, patient_id, patient.protocol, upto)
    return plan(patient, proto, as_of=on, today=today or on)


def attach(patient: Any, protocol: Any) -> Any:
    """Remember the protocol a registry patient is planned with (read by the CLI); the patient."""
    if protocol is not None:
        if len(_ATTACHED) > 10_000:
            _ATTACHED.clear()
        _ATTACHED[id(patient)] = (patient, protocol)
    return patient


def attached(patient: Any) -> Any:
    """The protocol :func:`attach` remembered for ``patient``, or None."""
    hit = _ATTACHED.get(id(patient))
    return hit[1] if hit is not None and hit[0] is patient else None


def check_amendment(new: Any, old: Any) -> None:
    """Refuse an amendment for another protocol, or one whose version is not greater."""
    if new.id != old.id:
        raise InputError(Problem(str(new.path), "id", f"expected an amendment of {old.id}, got {new.id!r}"))
    if version_key(new.version) <= version_key(old.version):
        raise InputError(Problem(str(new.path), "version", f"expected a version greater than {old.version} "
                                 f"(the version patients are on), got {new.version}"))


def expected_keys(conn: sqlite3.Connection, current: dict[str, str | None]) -> dict[str, str]:
    """Projection keys (see ``_registry._definition_key``) of the patients whose recorded
    version is not the shipped definition as released now: ``{patient: key}``."""
    from . import __version__

    rows = conn.execute("SELECT seq, patient, sha256, retracts, site_sha256 FROM version_entries "
                        "ORDER BY seq").fetchall()
    if not rows:
        return {}
    retracted = {r[3] for r in rows if r[3] is not None}
    live: dict[str, tuple[str, str | None]] = {}
    for seq, pid, sha, ret, site in rows:
        if ret is None and seq not in retracted:
            live[pid] = (sha, site)
    shipped = {key.rsplit("|", 1)[-1] for key in current.values() if key}
    names: dict[tuple[str, str | None], str] = {}
    out = {}
    for pid, (sha, site) in live.items():
        if site is None and sha[:16] in shipped:
            continue
        if (sha, site) not in names:
            row = conn.execute("SELECT protocol, version FROM protocol_versions WHERE sha256 = ?", (sha,)).fetchone()
            names[(sha, site)] = f"{__version__}|{row[0]}@{row[1]}|{digest(sha, site)}"
        out[pid] = names[(sha, site)]
    return out


def digest(sha: str, site_sha: str | None) -> str:
    """The definition part of a projection key: the definition's and the site amendment's
    hashes (see ``_registry._definition_key``).

    >>> digest("ab" * 32, None), digest("ab" * 32, "cd" * 32)
    ('abababababababab', 'abababababababab+cdcdcdcdcdcdcdcd')
    """
    return sha[:16] + ("+" + site_sha[:16] if site_sha else "")


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_recorded(value: str | dt.date | dt.datetime, field: str = "as_of_recorded") -> str:
    """A point in recording time as the stored form (UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``).

    A date means the end of that day (UTC): everything recorded on it counts. Text may be a
    date ``YYYY-MM-DD`` or an ISO 8601 date-time; a time without a zone is UTC.
    """
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                value = dt.date.fromisoformat(text)
            except ValueError:
                value = None  # type: ignore[assignment]
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?", text):
            try:
                value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                value = None  # type: ignore[assignment]
        else:
            value = None  # type: ignore[assignment]
        if value is None:
            raise InputError(Problem("", field, "expected a date YYYY-MM-DD or a date-time YYYY-MM-DDTHH:MM[:SS][Z], "
                                     f"got {text!r}"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return _stamp(value)
    end = dt.datetime.combine(value, dt.time.max, tzinfo=dt.timezone.utc)
    return _stamp(end)
