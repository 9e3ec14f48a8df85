"""Sign-off of dose-critical entries by a second person (21 CFR 11.50/11.70, EU Annex 11 §14).

A dose-critical entry waits for verification by a pharmacist or an investigator who did not
record it:

- a dose modification (``dose_modified``): the signature means "dose verified";
- a given dose that differs from the planned dose as the plan shows it (3 significant
  figures, the precision printed on the plan): "dose verified";
- an element started before the counts recovered (the plan's ``count_gate`` deviation):
  "decision approved";
- an HSCT (``hsct``): "decision approved".

Signing asks for the signer's password again. The signature stores the meaning, the signer
and the time (UTC) and is linked to the entry: a later correction (supersession or
retraction) voids it, and the correcting entry, if dose-critical, waits for its own.

:meth:`~protocol._registry.Registry.record` (and registration, and ``record_many``) writes
an entry and the note that it waits (``signoff_required``, :func:`note_required`) in one
registry transaction, under the patient's lock on PostgreSQL: both are stored or neither, and
every path that records (the web, the API, the command line) notes it.

>>> required_meaning({"type": "dose_modified", "item": "ib:mercaptopurine@1", "percent": 50})
('dose verified', 'a dose modification')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._errors import InputError, Problem

__all__ = ["SignMark", "SignOff", "marks", "note_required", "notes_required", "record", "required_meaning", "sign", "signoffs",
           "unsigned"]

DOSE = "dose verified"
DECISION = "decision approved"


@dataclass(frozen=True, slots=True)
class SignOff:
    """An entry's sign-off: what it waits for, and the signature if there is one.

    ``state``: ``unsigned`` (waits), ``signed``, or ``void`` (signed, then corrected).
    """

    entry: int
    meaning: str
    why: str
    signer: str | None
    signed_at: str | None
    state: str


@dataclass(frozen=True, slots=True)
class SignMark:
    """A live dose-critical entry as the documents show it: what it is, and where its sign-off stands.

    ``item`` / ``element``: where the roadmap prints it (the item's cell in the day grid, the
    element's actual start); ``date``: the event's date; ``recorded_at`` / ``signed_at``: UTC
    stamps of the registry.
    """

    entry: int
    type: str
    item: str | None
    element: str | None
    date: str
    meaning: str
    why: str
    recorded_by: str
    recorded_at: str
    signer: str | None = None
    signed_at: str | None = None

    @property
    def signed(self) -> bool:
        """Whether a second person signed it."""
        return self.signer is not None

    @property
    def text(self) -> str:
        """Where its sign-off stands, in words.

        >>> SignMark(17, "dose_modified", "induction:dexamethasone@8", None, "2026-11-21", DOSE,
        ...          "a dose modification", "alice", "2026-11-21T09:30:00.000000Z").text
        'awaiting verification (recorded by alice on 2026-11-21 09:30 UTC)'
        >>> SignMark(18, "hsct", None, None, "2026-11-22", DECISION, "an HSCT decision", "alice",
        ...          "2026-11-22T08:00:00.000000Z", "ines", "2026-11-22T10:15:42.000000Z").text
        'decision approved by ines on 2026-11-22 10:15 UTC'
        """
        if self.signer is not None:
            return f"{self.meaning} by {self.signer} on {_when(self.signed_at)}"
        waits = "approval" if self.meaning == DECISION else "verification"
        return f"awaiting {waits} (recorded by {self.recorded_by} on {_when(self.recorded_at)})"

    @property
    def summary(self) -> str:
        """The entry in one line, for the roadmap's cover: ``#17 2026-11-21 a dose modification
        (induction:dexamethasone@8)``."""
        where = self.item or self.element
        return f"#{self.entry} {self.date} {self.why}" + (f" ({where})" if where else "")


def _when(stamp: str | None) -> str:
    """A registry stamp (``2026-11-21T09:30:00.000000Z``) as ``2026-11-21 09:30 UTC``."""
    text = stamp or ""
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 else text


def required_meaning(data: Any, planned: str | None = None, deviations: Any = ()) -> tuple[str, str] | None:
    """``(meaning, why)`` when an event needs a second person's sign-off, else None.

    ``planned``: the planned dose of the item as the plan shows it (for ``item_given``);
    ``deviations``: the plan's deviations after the entry (for ``element_started``).
    """
    from ._schedule import fmt_amount

    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    if kind == "dose_modified":
        return DOSE, "a dose modification"
    if kind == "hsct":
        return DECISION, "an HSCT decision"
    if kind == "item_given" and data.get("dose") is not None and planned is not None:
        given = fmt_amount(float(data["dose"]))
        if given != planned:
            return DOSE, f"dose given {given} differs from the planned {planned}"
    if kind == "element_started":
        for dev in deviations or ():
            if dev.get("kind") == "count_gate" and dev.get("element") == data.get("element"):
                return DECISION, "started before the counts recovered"
    return None


def _planned_amounts(plan: Any) -> dict[str, str]:
    """Item ref → its planned dose as the plan prints it (one pass over the plan)."""
    from ._schedule import fmt_amount

    out: dict[str, str] = {}
    for item in plan.items:
        if item.dose is not None and item.dose.amount is not None:
            out.setdefault(item.ref, fmt_amount(item.dose.amount))
    return out


def _needed(entry: Any, plan: Any, planned: dict[str, str] | None = None) -> tuple[str, str] | None:
    """What ``entry`` waits for, given the patient's ``plan`` with it (the planned dose of a
    given item is its planned dose there too: recording it given does not change it);
    ``planned``: :func:`_planned_amounts` of the plan, when the caller has it."""
    if entry.kind != "event" or not isinstance(entry.data, dict):
        return None
    data = entry.data
    amount = None
    if "item" in data:
        amount = (planned if planned is not None else _planned_amounts(plan)).get(data.get("item", ""))
    deviations = plan.deviations if data.get("type") == "element_started" else ()
    return required_meaning(data, amount, deviations)


def note_required(conn: Any, entry: Any, plan: Any, planned: dict[str, str] | None = None) -> SignOff | None:
    """Inside the write that recorded ``entry``: store that it waits for sign-off, if it is
    dose-critical (``plan``: the patient's plan with the entry; ``planned``: its
    :func:`_planned_amounts`, computed once for several entries).
    """
    need = _needed(entry, plan, planned)
    if need is None:
        return None
    conn.execute("INSERT INTO signoff_required (entry, meaning, why) VALUES (?, ?, ?)", (entry.seq, *need))
    return SignOff(entry.seq, need[0], need[1], None, None, "unsigned")


def notes_required(conn: Any, entries: Any, plan: Any) -> None:
    """:func:`note_required` for each of ``entries`` (one write), the plan's doses read once:
    registering a patient with 700 given doses stays linear."""
    planned: dict[str, str] | None = None
    for entry in entries:
        if planned is None and entry.kind == "event" and isinstance(entry.data, dict) and "item" in entry.data:
            planned = _planned_amounts(plan)
        note_required(conn, entry, plan, planned if planned is not None else {})


def record(reg: Any, patient_id: str, kind: str, data: dict[str, Any], *, by: str, reason: str | None = None,
           supersedes: int | None = None) -> Any:
    """Record an entry (:meth:`Registry.record`) and, in the same transaction, that it waits
    for a second person's sign-off if it is dose-critical: both are stored, or neither.

    >>> entry = record(reg, "INF-0001", "event", {"type": "dose_modified", "item": ref,  # doctest: +SKIP
    ...                "date": "2026-11-21", "percent": 50, "of": "standard", "scope": "item",
    ...                "reason": "liver toxicity"}, by="alice")
    >>> signoffs(reg, "INF-0001")[entry.seq].state  # doctest: +SKIP
    'unsigned'
    """
    return reg.record(patient_id, kind, data, by=by, reason=reason, supersedes=supersedes)


def signoffs(reg: Any, patient_id: str) -> dict[int, SignOff]:
    """Entry seq → its sign-off, for every entry of the patient that needs one."""
    with reg._read() as conn:
        rows = conn.execute(
            "SELECT r.entry, r.meaning, r.why, g.signer, g.signed_at, "
            "EXISTS (SELECT 1 FROM entries AS c WHERE c.supersedes = r.entry OR c.retracts = r.entry) "
            "FROM signoff_required AS r JOIN entries AS e ON e.seq = r.entry "
            "LEFT JOIN signatures AS g ON g.entry = r.entry WHERE e.patient = ? ORDER BY r.entry",
            (patient_id,)).fetchall()
    out = {}
    for seq, meaning, why, signer, at, corrected in rows:
        state = "void" if corrected and signer else ("signed" if signer else ("corrected" if corrected else "unsigned"))
        out[seq] = SignOff(seq, meaning, why, signer, at, state)
    return out


def marks(reg: Any, patient_id: str) -> tuple[SignMark, ...]:
    """The patient's live dose-critical entries (not corrected), signed or waiting, in log
    order: what the roadmap prints beside the values they changed (:mod:`protocol._documents`).

    A corrected entry is left out (its correction, if dose-critical, has its own mark).

    >>> [m.text for m in marks(reg, "INF-0001")]  # doctest: +SKIP
    ['awaiting verification (recorded by alice on 2026-11-21 09:30 UTC)']
    """
    import json

    with reg._read() as conn:
        rows = conn.execute(
            "SELECT r.entry, r.meaning, r.why, e.data, e.recorded_by, e.recorded_at, g.signer, g.signed_at "
            "FROM signoff_required AS r JOIN entries AS e ON e.seq = r.entry "
            "LEFT JOIN signatures AS g ON g.entry = r.entry WHERE e.patient = ? "
            "AND NOT EXISTS (SELECT 1 FROM entries AS c WHERE c.supersedes = r.entry OR c.retracts = r.entry) "
            "ORDER BY r.entry", (patient_id,)).fetchall()
    out = []
    for seq, meaning, why, data, by, at, signer, signed_at in rows:
        event = json.loads(data) if isinstance(data, str) else (data or {})
        out.append(SignMark(int(seq), str(event.get("type", "")), event.get("item"), event.get("element"),
                            str(event.get("date", "")), meaning, why, by, at, signer, signed_at))
    return tuple(out)


def unsigned(reg: Any, patients: Any) -> list[tuple[str, int, str, str, str]]:
    """``(patient, seq, meaning, why, recorded_at)`` of live entries still waiting, for the worklist."""
    wanted = set(patients)
    with reg._read() as conn:
        rows = conn.execute(
            "SELECT e.patient, r.entry, r.meaning, r.why, e.recorded_at FROM signoff_required AS r "
            "JOIN entries AS e ON e.seq = r.entry "
            "WHERE NOT EXISTS (SELECT 1 FROM signatures AS g WHERE g.entry = r.entry) "
            "AND NOT EXISTS (SELECT 1 FROM entries AS c WHERE c.supersedes = r.entry OR c.retracts = r.entry) "
            "ORDER BY e.recorded_at").fetchall()
    return [r for r in rows if r[0] in wanted]


def sign(reg: Any, actor: Any, seq: int, password: str) -> SignOff:
    """Sign entry ``seq`` as ``actor`` after checking the password again.

    Refused (:class:`InputError`, field ``password`` or ``entry``) when the password is wrong,
    the signer recorded the entry, the entry needs no sign-off, is already signed, or was
    corrected. The role check is the caller's (:class:`protocol._access.Scoped`).
    """
    from ._auth import get_user, verify_password

    found = get_user(reg, actor.name)
    if found is None or found[0].disabled or not verify_password(found[1], password):
        raise InputError(Problem("sign", "password", "the password is wrong: the signature was not recorded"))
    with reg._write() as conn:
        row = conn.execute("SELECT r.meaning, r.why, e.recorded_by FROM signoff_required AS r JOIN entries AS e "
                           "ON e.seq = r.entry WHERE r.entry = ?", (seq,)).fetchone()
        if row is None:
            raise InputError(Problem("sign", "entry", f"#{seq} needs no sign-off"))
        meaning, why, recorder = row
        if recorder == actor.name:
            raise InputError(Problem("sign", "entry", f"#{seq} was recorded by you: a second person verifies it"))
        if conn.execute("SELECT 1 FROM entries WHERE supersedes = ? OR retracts = ?", (seq, seq)).fetchone():
            raise InputError(Problem("sign", "entry", f"#{seq} was corrected: sign the entry that corrected it"))
        signed = conn.execute("SELECT signer, signed_at FROM signatures WHERE entry = ?", (seq,)).fetchone()
        if signed:
            raise InputError(Problem("sign", "entry", f"#{seq} was already signed by {signed[0]} at {signed[1]}"))
        stamp = reg._stamp()
        conn.execute("INSERT INTO signatures (entry, meaning, signer, signed_at) VALUES (?, ?, ?, ?)",
                     (seq, meaning, actor.name, stamp))
    return SignOff(seq, meaning, why, actor.name, stamp, "signed")
