"""Amendments for living patients (``protocol amend``): whose schedule changes, and how.

:func:`preview` re-plans every registered patient on the amended protocol twice, as of the
same day: with the version the patient is on and with the new one, and compares the two
plans from that day on, item by item (matched by their reference ``ELEMENT:ITEM@DAY``):

- a dose that changes (old → new, each with its evidence level), a date that moves, an item
  added or removed, an element whose planned start moves, appears or disappears;
- a decision whose outcome or status changes (a patient who would now go to HSCT);
- items already recorded (given, omitted, done) never change: if the new version would plan
  them differently, they are listed apart, as kept;
- a patient whose recorded history is not valid under the new version is listed with the
  problems (``apply`` refuses it).

:func:`apply` moves the chosen patients, one audited row of the version log per patient
(who, when, why, from which version to which, the definition's SHA-256), after which the
registry plans them with the new version; :func:`retract` undoes a move, with a reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import InputError, Problem

__all__ = ["AmendResult", "PatientPreview", "Preview", "apply", "as_files", "preview", "retract"]

_RECORDED = frozenset({"given", "omitted", "done"})


@dataclass(frozen=True, slots=True)
class Change:
    """One difference in a patient's plan: ``kind`` is ``dose``, ``date``, ``added``,
    ``removed``, ``element`` or ``decision``; ``old``/``new`` in words (None: absent).

    >>> Change("dose", "octadad:dexamethasone@1", "Dexamethasone", "2026-12-01", "3 mg/day [placeholder]",
    ...        "2.4 mg/day [placeholder]").text
    '2026-12-01 octadad:dexamethasone@1 Dexamethasone: dose 3 mg/day [placeholder] → 2.4 mg/day [placeholder]'
    """

    kind: str
    ref: str
    name: str
    date: str | None
    old: str | None
    new: str | None

    @property
    def text(self) -> str:
        """The change in one line."""
        head = f"{self.date} {self.ref} {self.name}" if self.date else f"{self.ref} {self.name}"
        if self.kind == "added":
            return f"{head}: added ({self.new})"
        if self.kind == "removed":
            return f"{head}: removed (was {self.old})"
        what = {"dose": "dose ", "date": "date ", "element": "", "decision": ""}.get(self.kind, "")
        return f"{head}: {what}{self.old} → {self.new}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "ref": self.ref, "name": self.name, "date": self.date, "old": self.old,
                "new": self.new, "text": self.text}


@dataclass(slots=True)
class PatientPreview:
    """What the amendment changes for one patient.

    ``changes``: from the as-of day on; ``kept``: recorded items the new version would plan
    differently (never changed); ``problems``: why the history is invalid under the new
    version (then ``changes`` is empty and ``apply`` refuses the patient).
    """

    patient: str
    from_ref: str
    from_sha256: str
    changes: list[Change] = field(default_factory=list)
    kept: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    already: bool = False
    #: What the patient would be on: ``id@version``, with the site amendment's file if any.
    to_ref: str = ""

    @property
    def changed(self) -> bool:
        """True when something from the as-of day on changes."""
        return bool(self.changes)

    @property
    def decision_changed(self) -> bool:
        """True when a decision's outcome or status changes."""
        return any(c.kind == "decision" for c in self.changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"patient": self.patient, "from": self.from_ref, "from_sha256": self.from_sha256,
                "to": self.to_ref, "already_on_new_version": self.already, "changed": self.changed,
                "decision_changed": self.decision_changed, "invalid": bool(self.problems),
                "problems": self.problems, "changes": [c.to_dict() for c in self.changes],
                "kept": [c.to_dict() for c in self.kept]}


@dataclass(slots=True)
class Preview:
    """The preview of an amendment for every registered patient on its protocol."""

    protocol: str
    to_version: str
    to_sha256: str
    file: str
    as_of: dt.date
    patients: list[PatientPreview]
    definition_changes: list[str]
    #: The site amendment files applied: to the version patients are on, and to the new one.
    sites: tuple[str | None, str | None] = (None, None)

    @property
    def summary(self) -> str:
        """``37 patients: 12 change, 3 with a changed decision, 25 unchanged``."""
        n = len(self.patients)
        changed = sum(p.changed for p in self.patients)
        decided = sum(p.decision_changed for p in self.patients)
        invalid = sum(bool(p.problems) for p in self.patients)
        already = sum(p.already for p in self.patients)
        unchanged = n - changed - invalid - already
        text = (f"{n} patient{'s' if n != 1 else ''}: {changed} change, {decided} with a changed decision, "
                f"{unchanged} unchanged")
        if invalid:
            text += f", {invalid} refused (history invalid under the new version)"
        if already:
            text += f", {already} already on it"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``protocol amend preview --format json``)."""
        return {"protocol": self.protocol, "to": f"{self.protocol}@{self.to_version}", "to_sha256": self.to_sha256,
                "file": self.file, "as_of": self.as_of.isoformat(), "summary": self.summary,
                "sites": {"from": self.sites[0], "to": self.sites[1]},
                "definition_changes": self.definition_changes, "patients": [p.to_dict() for p in self.patients]}

    def to_text(self) -> str:
        """Readable form: the summary first, then each patient."""
        head = f"amendment {self.file}: {self.protocol} → {self.to_version} (sha256 {self.to_sha256[:12]})"
        if self.sites != (None, None):
            head += f", site amendment {self.sites[0] or 'none'} → {self.sites[1] or 'none'}"
        lines = [f"{head}, as of {self.as_of.isoformat()}", self.summary, ""]
        if self.definition_changes:
            lines.append("definition changes (protocol diff):")
            lines.extend(f"  {c}" for c in self.definition_changes)
            lines.append("")
        for p in self.patients:
            if p.already:
                lines.append(f"{p.patient} ({p.from_ref}): already on {p.to_ref or self.to_version}")
                continue
            if p.problems:
                lines.append(f"{p.patient} ({p.from_ref}): REFUSED, its recorded history is invalid under "
                             f"{self.to_version}:")
                lines.extend(f"  - {m}" for m in p.problems)
                continue
            if not p.changes and not p.kept:
                lines.append(f"{p.patient} ({p.from_ref}): no change")
                continue
            moved = f" → {p.to_ref}" if p.to_ref and p.to_ref != p.from_ref else ""
            lines.append(f"{p.patient} ({p.from_ref}{moved}): {len(p.changes)} change"
                         f"{'s' if len(p.changes) != 1 else ''}")
            lines.extend(f"  {line}" for line in _grouped(p.changes))
            if p.kept:
                lines.append("  recorded, kept as recorded (the new version would plan them differently):")
                lines.extend(f"    {line}" for line in _grouped(p.kept))
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """One row per change (and one per patient without any), for a spreadsheet."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["patient", "from", "to", "status", "kind", "ref", "name", "date", "old", "new"])
        for p in self.patients:
            to = p.to_ref or f"{self.protocol}@{self.to_version}"
            if p.already or p.problems or not (p.changes or p.kept):
                status = "already" if p.already else "refused" if p.problems else "no change"
                w.writerow([p.patient, p.from_ref, to, status, "", "", "", "", "; ".join(p.problems), ""])
            for c in p.changes:
                w.writerow([p.patient, p.from_ref, to, "change", c.kind, c.ref, c.name, c.date or "", c.old or "",
                            c.new or ""])
            for c in p.kept:
                w.writerow([p.patient, p.from_ref, to, "kept (recorded)", c.kind, c.ref, c.name, c.date or "",
                            c.old or "", c.new or ""])
        return out.getvalue()


_REF = re.compile(r"^(?P<element>[^:]+):(?P<item>[^@]+)@(?P<day>\d+)(?P<rest>.*)$")


def _grouped(changes: list[Change]) -> list[str]:
    """The changes in lines a reader can take in: the items of an element that the new
    version adds or removes as a whole are counted on one line, and the changes that differ
    only by day (the same drug, the same old and new dose) share one line with the days."""
    whole = {c.ref: c for c in changes if c.kind == "element" and (c.old == "absent" or c.new == "removed")}
    counted: dict[str, list[Change]] = {}
    groups: dict[tuple[Any, ...], list[tuple[int, Change]]] = {}
    rest: list[Change] = []
    for c in changes:
        m = _REF.match(c.ref) if c.kind in ("added", "removed", "dose", "date") else None
        if m is None:
            rest.append(c)
        elif c.kind in ("added", "removed") and m["element"] in whole:
            counted.setdefault(m["element"], []).append(c)
        else:
            key = (c.kind, m["element"], m["item"], m["rest"], c.name, c.old if c.kind == "dose" else None,
                   c.new if c.kind == "dose" else None)
            groups.setdefault(key, []).append((int(m["day"]), c))
    lines = []
    for (kind, element, item, branch, name, old, new), members in groups.items():
        if len(members) == 1:
            lines.append(members[0][1].text)
            continue
        days = ", ".join(str(d) for d, _ in members) if len(members) <= 6 else \
            f"{members[0][0]}-{members[-1][0]} ({len(members)} items)"
        first, last = members[0][1].date, members[-1][1].date
        head = f"{first} to {last} {element}:{item} days {days}{branch} {name}"
        if kind == "dose":
            lines.append(f"{head}: dose {old} → {new}")
        elif kind == "date":
            lines.append(f"{head}: dates move (first {members[0][1].old} → {members[0][1].new})")
        else:
            lines.append(f"{head}: {kind}")
    for c in rest:
        lines.append(c.text)
        items = counted.get(c.ref)
        if items:
            how = "added with it" if c.old == "absent" else "removed with it"
            lines.append(f"  {len(items)} item{'s' if len(items) != 1 else ''} {how} ({items[0].date} to "
                         f"{items[-1].date})")
    return lines


# --------------------------------------------------------------------------- comparing plans


def _items(p: Any) -> dict[tuple[Any, ...], Any]:
    """The plan's rows by identity ``(element, item, element day, branch)`` (the plan's own
    tuples: wrapping each as an :class:`Item` and naming it costs more than the comparison)."""
    rows = p.rows
    out: dict[tuple[Any, ...], Any] = {(r[3].element, r[3].key, r[1], r[6]): r for r in rows}
    if len(out) == len(rows):
        return out
    out = {}
    for row in rows:
        slot = row[3]
        key = (slot.element, slot.key, row[1], row[6])
        while key in out:  # the same reference twice (never in a valid plan): keep both
            key += ("'",)
        out[key] = row
    return out


def _name(key: tuple[Any, ...]) -> str:
    """``octadad:dexamethasone@18 (pre_octadad→octadad)``: an item's reference and branch."""
    element, item, day, branch = key[:4]
    text = f"{element}:{item}@{day}" + "'" * (len(key) - 4)
    return text if branch is None else f"{text} ({branch})"


def _same_dose(i: Any, j: Any, same_slots: dict[tuple[Any, Any], bool]) -> bool:
    """True when two items' doses are certainly equal without computing them: the same dose
    definition, for the same measurement, body surface area and age (a dose is a function of
    these alone). Computing every dose text of two plans cost three quarters of a preview."""
    a, b = i[4], j[4]
    if a is None or b is None:
        return a is None and b is None
    key = (i[3], j[3])
    same = same_slots.get(key)
    if same is None:
        x, y = i[3], j[3]
        same = same_slots[key] = (x.dose == y.dose and x.source == y.source and x.frequency == y.frequency
                                  and x.evidence == y.evidence)
    return (same and (a.measurement is b.measurement or a.measurement == b.measurement) and a.bsa == b.bsa
            and a.age_years == b.age_years and a.age_months == b.age_months)


def _dose(row: Any) -> str | None:
    d = row[4]
    if d is None:
        return None
    return f"{d.text} [{d.evidence}]"


def _iso(row: Any) -> str:
    return dt.date.fromordinal(row[0]).isoformat()


def compare(old: Any, new: Any, day: dt.date, same_slots: dict[tuple[Any, Any], bool] | None = None
            ) -> tuple[list[Change], list[Change]]:
    """What changes between two plans of one patient from ``day`` on, and which recorded
    items the new plan would plan differently: ``(changes, kept)``. ``same_slots`` caches,
    across the patients of one preview, which item definitions of the two versions agree."""
    same_slots = {} if same_slots is None else same_slots
    changes: list[Change] = []
    kept: list[Change] = []
    a, b = _items(old), _items(new)
    first = day.toordinal()
    for key, i in a.items():
        recorded = i[5] in _RECORDED
        if i[0] < first and not recorded:
            continue  # a past item nothing was recorded for (if the new plan moves it ahead: below)
        j = b.get(key)
        if j is None:
            (kept if recorded else changes).append(Change("removed", _name(key), i[3].name, _iso(i),
                                                          _dose(i) or i[3].kind, None))
            continue
        if i[0] == j[0] and i[4] is None and j[4] is None:
            continue  # the same day, no dose on either side (most assessments)
        if not _same_dose(i, j, same_slots) and _dose(i) != _dose(j):
            (kept if recorded else changes).append(Change("dose", _name(key), i[3].name, _iso(i), _dose(i),
                                                          _dose(j)))
        if i[0] != j[0] and not recorded:
            changes.append(Change("date", _name(key), i[3].name, _iso(i), _iso(i), _iso(j)))
    for key, j in b.items():
        if j[0] < first:
            continue
        i = a.get(key)
        if i is None:
            changes.append(Change("added", _name(key), j[3].name, _iso(j), None, _dose(j) or j[3].kind))
        elif i[0] < first and i[5] not in _RECORDED:
            # Past in the old plan, ahead in the new one: the new version moves it.
            if not _same_dose(i, j, same_slots) and _dose(i) != _dose(j):
                changes.append(Change("dose", _name(key), i[3].name, _iso(i), _dose(i), _dose(j)))
            changes.append(Change("date", _name(key), i[3].name, _iso(i), _iso(i), _iso(j)))
    ea = {e.id: e for e in old.elements}
    eb = {e.id: e for e in new.elements}
    for eid in dict.fromkeys([*ea, *eb]):
        e, f = ea.get(eid), eb.get(eid)
        if e is not None and e.status == "completed":
            continue
        start = lambda s: None if s is None or s.planned_start is None else s.planned_start.isoformat()  # noqa: E731
        if e is None:
            changes.append(Change("element", eid, f.title, start(f), "absent", f"planned from {start(f)}"))
        elif f is None:
            changes.append(Change("element", eid, e.title, start(e), f"planned from {start(e)}", "removed"))
        elif start(e) != start(f) or e.status != f.status:
            changes.append(Change("element", eid, e.title, start(e), f"{e.status} from {start(e)}",
                                  f"{f.status} from {start(f)}"))
    da = {d.id: d for d in old.decisions}
    db = {d.id: d for d in new.decisions}
    for did in dict.fromkeys([*da, *db]):
        d, g = da.get(did), db.get(did)
        was = None if d is None else f"{d.outcome or 'undecided'} ({d.status})"
        now = None if g is None else f"{g.outcome or 'undecided'} ({g.status})"
        if was != now:
            changes.append(Change("decision", did, "decision", None, was or "absent", now or "absent"))
    return changes, kept


# --------------------------------------------------------------------------- preview / apply


def _site_key(site: str | os.PathLike[str] | None) -> tuple[str, str] | None:
    """A site amendment file by its path and content (None: no site amendment)."""
    if site is None:
        return None
    import hashlib

    try:
        return os.path.realpath(site), hashlib.sha256(open(site, "rb").read()).hexdigest()
    except OSError:
        return os.path.realpath(site), ""  # unreadable: amend() reports it


def _on(reg: Any, conn: Any, pid: str, protocol_field: str, shipped: dict[str, Any] | None = None
        ) -> tuple[Any, Any]:
    """The version a patient is on as written (its definition) and as planned (with the site
    amendment recorded with it, if any). ``shipped``: a cache, for one preview, of the
    definitions patients with no recorded version name."""
    from ._loading import load_protocol
    from ._versions import load_version, protocol_for

    planned = protocol_for(conn, pid, protocol_field)
    if planned is None:
        if shipped is None:
            planned = load_protocol(protocol_field)
        else:
            planned = shipped.get(protocol_field) or shipped.setdefault(protocol_field, load_protocol(protocol_field))
    if getattr(planned, "site_sha256", None):
        return load_version(conn, planned.sha256), planned
    return planned, planned


def _with_site(written: Any, planned_on: Any, site: str | os.PathLike[str] | None, cache: dict[Any, Any]) -> Any:
    """The new version as a patient would be planned with it: with ``site`` (a file; ``""``:
    none), or by default with the site amendment the patient is planned with now, carried over.
    Raises :class:`DefinitionError` when that amendment does not apply to the new version."""
    from ._site import amend

    if site == "":
        return written
    if site is None:
        recorded = getattr(planned_on, "site_sha256", None)
        if not recorded:
            return written
        key = (written.sha256, recorded)
        if key not in cache:
            cache[key] = amend(written, planned_on.site[1], site_bytes=planned_on.site_bytes)
        return cache[key]
    key = (written.sha256, _site_key(site))
    if key not in cache:
        cache[key] = amend(written, site)
    return cache[key]


def _taken(planned: Any) -> dict[str, str]:
    """The decisions already taken in a plan (``{decision: outcome}``): a move to a new
    version keeps them, since the version in force when they were taken judged them."""
    return {d.id: d.outcome for d in planned.decisions if d.status == "recorded" and d.outcome}


def _same(a: Any, b: Any) -> bool:
    """The same definition with the same site amendment (or none on both)."""
    return a.sha256 == b.sha256 and getattr(a, "site_sha256", None) == getattr(b, "site_sha256", None)


def _label(proto: Any) -> str:
    """``id@version``, with the site amendment's file when there is one."""
    site = getattr(proto, "site", None)
    ref = f"{proto.id}@{proto.version}"
    if not getattr(proto, "site_sha256", None):
        return ref
    return f"{ref} + {os.path.basename(site[1].split(' (kept in', 1)[0])}"


def _candidates(reg: Any, protocol_id: str, patients: Sequence[str] | None) -> list[str]:
    listed = [s.id for s in reg.patients() if s.protocol.partition("@")[0] == protocol_id]
    if not patients:
        return listed
    unknown = [p for p in patients if p not in listed]
    if unknown:
        raise InputError(Problem("--patients", "", f"not registered on {protocol_id}: {', '.join(unknown)} "
                                 f"(on it: {', '.join(listed[:5]) or 'none'}{', ...' if len(listed) > 5 else ''})"))
    return list(dict.fromkeys(patients))


def preview(reg: Any, file: str | os.PathLike[str], *, site: str | os.PathLike[str] | None = None,
            as_of: dt.date | None = None, patients: Sequence[str] | None = None,
            from_site: str | os.PathLike[str] | None = None) -> Preview:
    """Preview the amendment ``file`` for every registered patient on its protocol (or the
    ``patients`` named), planned as of ``as_of`` (default the registry's today).

    Each patient is compared as planned now (its recorded version with its recorded site
    amendment, or with ``from_site`` when given; ``""``: none) with the new version planned
    with ``site`` (a file; ``""``: none; default: the patient's recorded site amendment,
    carried over). A change of verified values alone is previewed by giving the version
    patients are on as ``file`` (``interfant06-blinatumomab``) and the changed site file as
    ``site``.

    Raises :class:`InputError` (nothing written) for a file that does not validate, an
    amendment of a protocol no patient is on, or a version not greater than a patient's.

    >>> with open_registry("protocol.db") as reg:                             # doctest: +SKIP
    ...     print(preview(reg, "amendment.yaml").summary)
    37 patients: 12 change, 3 with a changed decision, 25 unchanged
    """
    from ._diff import diff_protocols
    from ._errors import DefinitionError
    from ._loading import load_protocol
    from ._versions import check_amendment, with_settled
    from .schedule import plan

    written = load_protocol(file)
    day = as_of or reg.today()
    today = max(day, reg.today())
    out: list[PatientPreview] = []
    diffs: dict[tuple[Any, ...], list[str]] = {}
    amended: dict[Any, Any] = {}
    same_slots: dict[tuple[Any, Any], bool] = {}
    ids = _candidates(reg, written.id, patients)
    if not ids:
        raise InputError(Problem(str(file), "id", f"no registered patient is on {written.id} (nothing to amend)"))
    shipped: dict[str, Any] = {}  # a patient with no recorded version: the shipped file, loaded once
    for pid in ids:
        patient = reg.patient(pid)
        with reg._read() as conn:
            old_written, old_p = _on(reg, conn, pid, patient.protocol, shipped)
        if from_site is not None:
            old_p = _with_site(old_written, old_written, from_site or "", amended)
        row = PatientPreview(pid, _label(old_p), old_written.sha256)
        try:
            new = _with_site(written, old_p, site, amended)
        except DefinitionError as exc:
            if site is not None:
                raise  # the file given is wrong for everyone
            row.problems = [f"its site amendment does not apply to {written.id}@{written.version} (give --site): "
                            f"{p}" for p in exc.problems]
            out.append(row)
            continue
        row.to_ref = _label(new)
        if _same(old_p, new):
            row.already = True
            out.append(row)
            continue
        if old_written.sha256 != written.sha256:
            check_amendment(written, old_written)
        key = (old_p.sha256, getattr(old_p, "site_sha256", None), getattr(new, "site_sha256", None))
        if key not in diffs:
            diffs[key] = [f"{c.marker} {c.path}: {c.old_text or ''} → {c.new_text or ''}".strip()
                          for c in diff_protocols(old_p, new).changes]
        before = plan(patient, old_p, as_of=day, today=today)
        new = with_settled(new, _taken(before))
        try:
            from ._registry import _plan_as_of

            after = plan(patient, new, as_of=day, today=today)
            # The history must be valid as a registry write would check it (every entry counted).
            check = _plan_as_of(patient, reg.today())
            if check != day or today != reg.today():
                plan(patient, new, as_of=check, today=reg.today())
        except InputError as exc:
            row.problems = [str(p) for p in exc.problems]
        else:
            row.changes, row.kept = compare(before, after, day, same_slots)
        out.append(row)
    definition = next(iter(diffs.values()), [])
    sites = (None if not from_site else os.fspath(from_site), None if not site else os.fspath(site))
    return Preview(written.id, written.version, written.sha256, os.fspath(file), day, out, definition, sites)


@dataclass(slots=True)
class AmendResult:
    """What :func:`apply` did: ``moved`` ``(patient, seq, from, to)``, ``refused``
    ``(patient, problems)``, ``already`` (patients on the new version already)."""

    to: str
    sha256: str
    moved: list[tuple[str, int, str, str]] = field(default_factory=list)
    refused: list[tuple[str, list[str]]] = field(default_factory=list)
    already: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"to": self.to, "sha256": self.sha256,
                "moved": [{"patient": p, "seq": s, "from": f, "to": t} for p, s, f, t in self.moved],
                "refused": [{"patient": p, "problems": m} for p, m in self.refused], "already": self.already}


def apply(reg: Any, file: str | os.PathLike[str], *, reason: str, patients: Sequence[str] | None = None,
          by: str | None = None, site: str | os.PathLike[str] | None = None,
          signature: str | None = None) -> AmendResult:
    """Move the chosen registered patients (default: every one on the protocol) to the
    amendment ``file``: one row of the version log per patient, each in its own transaction.

    ``site``: the site amendment to plan them with from now on (a file; ``""``: none;
    default: the one each patient is planned with now, carried over). A change of verified
    values alone is applied by giving the version patients are on as ``file`` and the new
    site file as ``site``; the registry keeps the file's bytes like a definition's.
    ``signature``: the meaning recorded with each move when ``by`` signed it (the web asks
    for the password again, see :meth:`protocol._access.Scoped.amend_apply`).

    A patient whose recorded history is invalid under the new version is refused (listed with
    the problems) and stays on its version. Raises :class:`InputError` (nothing written) for
    a missing reason, a file that does not validate, another protocol or a version not greater.

    >>> apply(reg, "amendment.yaml", reason="amendment 3, approved 2027-01-10", by="alice").moved  # doctest: +SKIP
    [('INF-0001', 41, 'interfant06-blinatumomab@1.0.0', 'interfant06-blinatumomab@1.1.0')]
    """
    from ._errors import DefinitionError
    from ._loading import load_protocol
    from ._models import Patient
    from ._registry import _plan_as_of, _who
    from ._versions import check_amendment, current_row, record_move, store, with_settled
    from .schedule import plan

    if not (reason or "").strip():
        raise InputError(Problem("apply", "--reason", "an amendment needs a reason (which amendment, approved "
                                 "by whom)"))
    by = _who(by)
    written = load_protocol(file)
    ids = _candidates(reg, written.id, patients)
    if not ids:
        raise InputError(Problem(str(file), "id", f"no registered patient is on {written.id} (nothing to amend)"))
    to = f"{written.id}@{written.version}"
    result = AmendResult(to, written.sha256)
    amended: dict[Any, Any] = {}
    # Every patient's version (and the site file given) is checked before anything is
    # written: a version not greater than one patient's refuses the whole amendment.
    fields = {pid: reg.patient(pid).protocol for pid in ids}
    with reg._read() as conn:
        for pid in ids:
            old_written, old_p = _on(reg, conn, pid, fields[pid])
            if site is not None:
                _with_site(written, old_p, site, amended)
            if old_written.sha256 != written.sha256:
                check_amendment(written, old_written)
    today = reg.today()
    for pid in ids:
        with reg._write() as conn:
            state = reg._state(conn, pid, "apply")
            patient = Patient.model_validate(state.to_dict())
            patient._source = f"{pid} in {reg.path}"
            old_written, old_p = _on(reg, conn, pid, patient.protocol)
            try:
                new = _with_site(written, old_p, site, amended)
            except DefinitionError as exc:
                result.refused.append((pid, [f"its site amendment does not apply to {to} (give --site): {p}"
                                             for p in exc.problems]))
                continue
            if _same(old_p, new):
                result.already.append(pid)
                continue
            as_of = _plan_as_of(patient, today)
            new = with_settled(new, _taken(plan(patient, old_p, as_of=as_of, today=today)))
            try:
                planned = plan(patient, new, as_of=as_of, today=today)
            except InputError as exc:
                result.refused.append((pid, [str(p) for p in exc.problems]))
                continue
            row = current_row(conn, pid)
            stamp = reg._recorded_at(conn)
            # A patient registered before versions were kept moves from the shipped definition.
            from_sha = row[1] if row is not None else store(conn, old_written, stamp)
            seq = record_move(conn, pid, new, from_sha, by, stamp, reason.strip(), signature)
            last = conn.execute("SELECT max(seq) FROM entries WHERE patient = ?", (pid,)).fetchone()[0]
            reg._project_patient(conn, pid, today, None, (patient, planned, last))
            result.moved.append((pid, seq, _label(old_p), _label(new)))
    return result


def _live_before(conn: Any, patient_id: str, seq: int) -> list[tuple[Any, ...]]:
    """The patient's live version rows before ``seq`` (the one a retraction of ``seq`` returns to)."""
    from ._versions import _live_rows

    return [r for r in _live_rows(conn, patient_id, None) if r[0] < seq]


def retract(reg: Any, patient_id: str, seq: int, *, reason: str, by: str | None = None) -> int:
    """Undo the move ``seq`` of a patient's version log (a retraction row, with a reason):
    the patient is planned with the version it was on before. Only the patient's current
    move can be retracted, and its history must be valid under the earlier version.

    >>> retract(reg, "INF-0001", 41, reason="applied to the wrong patient", by="alice")  # doctest: +SKIP
    42
    """
    from ._models import Patient
    from ._registry import _plan_as_of, _who
    from ._versions import current_row, load_version, protocol_of_row
    from .schedule import plan

    if not (reason or "").strip():
        raise InputError(Problem("retract", "--reason", "a retraction needs a reason (why the move was wrong)"))
    by = _who(by)
    today = reg.today()
    with reg._write() as conn:
        row = conn.execute("SELECT patient, from_sha256, retracts FROM version_entries WHERE seq = ?",
                           (seq,)).fetchone()
        if row is None or row[0] != patient_id:
            raise InputError(Problem("retract", "seq", f"no version move #{seq} of patient {patient_id!r}"))
        if row[2] is not None:
            raise InputError(Problem("retract", "seq", f"#{seq} is itself a retraction"))
        if row[1] is None:
            raise InputError(Problem("retract", "seq", f"#{seq} is the version {patient_id} was registered with, "
                                     "not an amendment: it cannot be retracted"))
        current = current_row(conn, patient_id)
        if current is None or current[0] != seq:
            raise InputError(Problem("retract", "seq", f"#{seq} is not {patient_id}'s current version (that is "
                                     f"#{current[0] if current else '?'}): retract the later move first"))
        state = reg._state(conn, patient_id, "retract")
        patient = Patient.model_validate(state.to_dict())
        patient._source = f"{patient_id} in {reg.path}"
        live = [r for r in _live_before(conn, patient_id, seq)]
        earlier = protocol_of_row(conn, live[-1]) if live else load_version(conn, row[1])
        planned = plan(patient, earlier, as_of=_plan_as_of(patient, today), today=today)
        cur = conn.execute("INSERT INTO version_entries (patient, sha256, from_sha256, recorded_by, recorded_at, "
                           "reason, retracts) VALUES (?, NULL, ?, ?, ?, ?, ?)",
                           (patient_id, current[1], by, reg._recorded_at(conn), reason.strip(), seq))
        last = conn.execute("SELECT max(seq) FROM entries WHERE patient = ?", (patient_id,)).fetchone()[0]
        reg._project_patient(conn, patient_id, today, None, (patient, planned, last))
        return int(cur.lastrowid or 0)


class as_files:
    """An amendment given as text (a web form) written to files the loaders read, in a
    private temporary folder removed afterwards: ``with as_files(text, site_text) as (file,
    site):``. ``file`` is named ``amendment.yaml`` (``.json`` for JSON text); ``site`` is
    None without ``site_text``. Problems naming the files are reported by field name
    (``definition``, ``site``), never by the temporary path.

    >>> with as_files("format: 1\nid: x\n") as (file, site):  # doctest: +SKIP
    ...     preview(reg, file)
    """

    def __init__(self, text: str, site_text: str | None = None) -> None:
        self.text, self.site_text = text, site_text

    def __enter__(self) -> tuple[str, str | None]:
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="protocol-amend-")
        folder = self._dir.name

        def write(name: str, text: str) -> str:
            # A browser sends a form's line breaks as CRLF: the file kept is the text as typed.
            text = text.replace("\r\n", "\n")
            path = os.path.join(folder, name + (".json" if text.lstrip().startswith("{") else ".yaml"))
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            return path

        if not (self.text or "").strip():
            self._dir.cleanup()
            raise InputError(Problem("amendment", "definition", "expected the amended definition's text (YAML or "
                                     "JSON), got nothing"))
        self.paths = (write("amendment", self.text),
                      write("site-amendment", self.site_text) if (self.site_text or "").strip() else None)
        return self.paths

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        folder = self._dir.name
        self._dir.cleanup()
        if not isinstance(exc, InputError):
            return
        names = [(os.path.basename(p), field) for p, field in zip(self.paths, ("definition", "site")) if p]
        out = []
        for p in exc.problems:
            # A problem of a file given as text belongs to its form field; the rest (a version
            # not greater, no patient on the protocol) to the definition.
            field = next((f for name, f in names if name in (p.file or "")), "definition")
            where = ", ".join(x for x in (f"line {p.line}" if p.line else "", p.field or "") if x)
            text = p.message.replace(folder + os.sep, "")
            out.append(Problem(field, field, f"{where}: {text}" if where else text))
        exc.problems[:] = out
