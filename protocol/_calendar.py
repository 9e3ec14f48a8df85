"""Calendars: a patient's plan as an iCalendar file (RFC 5545) that updates in place.

What goes in (all-day events, ``VALUE=DATE``):

* one event per **treatment day** of an element (the summary lists the items, the description
  has every dose with its working and notes);
* one event per **long daily run** (a continuous infusion, daily oral maintenance): the same
  rule as the roadmap's day grid, so a 28-day infusion is one 28-day event, not 28 events;
* one event per **assessment** (marrow, MRD, lumbar puncture...);
* one event per **element** spanning its dates, and one per **decision point**.

Placeholder values are marked ``⚠ UNVERIFIED`` in descriptions, and every description ends
with "check against the official protocol document". Events on a branch that waits for a
decision are ``STATUS:TENTATIVE`` and say which branch.

**Stable UIDs.** A UID is a hash of the patient id, the protocol id, the element and the item
(element day, slot), never of a date: when an element starts late, a re-export carries the
same UIDs with new dates, so a calendar that re-imports it moves the events instead of adding
copies.

**SEQUENCE without state.** RFC 5545 wants SEQUENCE to grow with every significant revision
(a moved DTSTART/DTEND). It is derived from the plan alone, as the *days the event was moved
by recorded changes*: the sum, over the recorded element starts and ends on the path up to the
event, of how many days each differs from the date it was due (plus one when an item carries a
note of its own: a delay, a hold, a dose change). Recorded history only grows, and every newly
recorded change that moves an event adds its days, so SEQUENCE goes up exactly when an event
moves, and an element ending early then the next one starting late (net move zero) still
counts both moves. The net distance from the original date was rejected (an event moved
forward then back would return to an old SEQUENCE and be ignored), and so was a plain count of
changes (correcting a recorded date from the 27th to the 31st moves events without adding a
change). What no stateless rule can see is a correction that *shortens* a recorded delay: for
that, ``previous=`` compares with the earlier export: an event whose dates or text changed
gets at least the old SEQUENCE + 1, and an event of the old file that is gone (e.g. the branch
not taken) is sent again as ``STATUS:CANCELLED``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import InputError, Problem
from ._schedule import Item, Plan

__all__ = ["to_ics"]

_RUN = 8  # a daily run longer than this is one event (the roadmap's day grid uses the same rule)
_ROUTINE = frozenset({"planned", "done", "pending_decision"})
_DOMAIN = "protocol.roadmap"
_CHECK = "Check every dose and day against the official protocol document."
_UNVERIFIED = "⚠ UNVERIFIED (placeholder: not confirmed from a public source)"
_PER = {"dose": "", "day": "/day", "week": "/week"}
_SHARE_VALUES = True  # re-use encoded property values across events (tests compare with False)


class _Event(NamedTuple):
    key: tuple[str, ...]
    start: dt.date
    end: dt.date  # exclusive (DTEND of an all-day event)
    summary: str
    description: str
    sequence: int
    tentative: bool
    categories: str
    alarm: bool


def _uid(patient: str, protocol: str, key: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\x1f".join((patient, protocol, *key)).encode("utf-8")).hexdigest()[:32]
    return f"{digest}@{_DOMAIN}"


def _short(title: str) -> str:
    return title.split(":")[0].split(" (")[0].strip() or title


def _generated_at() -> dt.datetime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
    return dt.datetime.now(tz=dt.UTC).replace(microsecond=0)


def _item_line(item: Item) -> str:
    slot = item.slot
    parts = [f"- {slot.name}"]
    if slot.route:
        parts.append(slot.route)
    dose = item.dose
    if dose is not None:
        parts.append(f"{dose.text} ({dose.working})")
    elif slot.kind != "administration":
        parts.append(str(slot.kind).replace("_", " "))
    line = " ".join(parts)
    if slot.evidence == "placeholder":
        line += f" {_UNVERIFIED}"
    if item.status not in _ROUTINE:
        line += f" [{str(item.status).replace('_', ' ')}]"
    note = getattr(item, "note", None)
    if note:
        line += f" — {note}"
    return line


def _shift(actual: dt.date | None, planned: dt.date | None) -> int:
    return 0 if actual is None or planned is None else abs((actual - planned).days)


def _changes(plan: Plan) -> list[tuple[int, int]]:
    """Per element span, the days its items and its end were moved by recorded changes:
    ``(shift of everything before it + its own start, that + its own end)``."""
    out: list[tuple[int, int]] = []
    spans = plan.elements
    for i, span in enumerate(spans):
        before = 0
        for j in range(i):
            other = spans[j]
            if other.branch is None or (span.branch is not None and span.branch.startswith(other.branch)):
                before += _shift(other.actual_start, other.planned_start) + _shift(other.actual_end,
                                                                                   other.planned_end)
        start = before + _shift(span.actual_start, span.planned_start)
        out.append((start, start + _shift(span.actual_end, span.planned_end)))
    return out


def _events(plan: Plan) -> list[_Event]:
    p = plan.protocol
    pid = plan.patient.id
    spans = plan.elements
    seen: dict[str, int] = {}
    for s in spans:
        seen[s.id] = seen.get(s.id, 0) + 1
    changes = _changes(plan)
    index = {(s.id, s.branch): n for n, s in enumerate(spans)}
    by_span: dict[int, list[Item]] = {}
    for item in plan.items:
        n = index.get((item.slot.element, item.branch))
        if n is not None:
            by_span.setdefault(n, []).append(item)
    events: list[_Event] = []
    for n, span in enumerate(spans):
        # The branch is part of the key only when the same element is on two branches at once.
        ekey = (span.id,) if seen[span.id] == 1 else (span.id, span.branch or "")
        tentative = span.branch is not None
        cond = f" (if {span.branch})" if span.branch else ""
        short = _short(span.title)
        seq_start, seq_end = changes[n]
        start = span.actual_start or span.planned_start
        if start is None:
            continue
        last = span.actual_end or span.planned_end
        el = p.elements.get(span.id)
        first_day = el.first_day if el is not None else 1
        length = f" (days {first_day}–{first_day + (last - start).days})" if last is not None else ""
        desc = [f"{span.title}{cond}", f"Status: {str(span.status).replace('_', ' ')}",
                f"Planned: {span.planned_start or ''} – {span.planned_end or 'open'}",
                f"Actual: {span.actual_start or 'not started'} – {span.actual_end or 'not ended'}"]
        if span.evidence == "placeholder":
            desc.append(f"Length {_UNVERIFIED}")
        if getattr(span, "note", None):
            desc.append(f"Note: {span.note}")
        desc.append(_CHECK)
        events.append(_Event((*ekey, "element"), start, (last or start) + dt.timedelta(days=1),
                             f"{pid} · {span.title}{length}{cond}", "\n".join(desc), seq_end, tentative, "element",
                             True))
        items = by_span.get(n, [])
        # Long daily runs: one event each.
        runs: dict[int, tuple[int, int]] = {}
        by_slot: dict[int, list[Item]] = {}
        for item in items:
            if item.slot.kind != "assessment":
                by_slot.setdefault(id(item.slot), []).append(item)
        for own in by_slot.values():
            if len(own) > _RUN and own[-1].ordinal - own[0].ordinal + 1 == len(own):
                runs[id(own[0].slot)] = (own[0].ordinal, own[-1].ordinal)
                slot = own[0].slot
                segments: list[str] = []
                for item in own:
                    text = "" if item.dose is None else item.dose.text
                    if not segments or not segments[-1].endswith(f": {text}"):
                        segments.append(f"from {item.date.isoformat()}: {text}")
                dose = own[0].dose
                label = "" if dose is None else f" {dose.text}"
                kind = "continuous infusion" if slot.frequency == "continuous" else "daily"
                desc = [f"{slot.name}{(' ' + slot.route) if slot.route else ''}, {kind} "
                        f"(day {own[0].element_day} to day {own[-1].element_day} of {short}){cond}"]
                if dose is not None:
                    desc.append(f"Dose: {dose.working}")
                if len(segments) > 1 or dose is None:
                    desc.append("Doses: " + "; ".join(segments))
                if slot.evidence == "placeholder":
                    desc.append(_UNVERIFIED)
                desc.extend(slot.notes)
                desc.append(_CHECK)
                seq = seq_start + int(any(getattr(i, "note", None) for i in own))
                events.append(_Event((*ekey, "run", slot.key, str(own[0].element_day)), own[0].date,
                                     own[-1].date + dt.timedelta(days=1),
                                     f"{pid} · {slot.name}{label}, {kind} day {own[0].element_day}–"
                                     f"{own[-1].element_day} ({short}){cond}", "\n".join(desc), seq, tentative,
                                     "treatment", True))
        # Treatment days (everything but assessments and the inside of runs) and assessments.
        days: dict[int, list[Item]] = {}
        for item in items:
            if item.slot.kind == "assessment":
                note = getattr(item, "note", None)
                desc = [f"{item.slot.name}: {short} day {item.element_day}, study day {item.study_day}{cond}"]
                if item.slot.evidence == "placeholder":
                    desc.append(f"Day {_UNVERIFIED}")
                if item.status not in _ROUTINE:
                    desc.append(f"Status: {str(item.status).replace('_', ' ')}")
                if note:
                    desc.append(f"Note: {note}")
                desc.append(_CHECK)
                events.append(_Event((*ekey, "assessment", item.slot.key, str(item.element_day)), item.date,
                                     item.date + dt.timedelta(days=1),
                                     f"{pid} · {item.slot.name} ({short} day {item.element_day}){cond}",
                                     "\n".join(desc), seq_start + int(bool(note)), tentative, "assessment", True))
                continue
            run = runs.get(id(item.slot))
            if run is not None and item.status in _ROUTINE and not getattr(item, "note", None):
                continue
            days.setdefault(item.element_day, []).append(item)
        for day, todays in days.items():
            first = todays[0]
            names = list(dict.fromkeys(i.slot.name for i in todays))
            desc = [f"{short} day {day}, study day {first.study_day}{cond}", *(_item_line(i) for i in todays),
                    _CHECK]
            seq = seq_start + int(any(getattr(i, "note", None) for i in todays))
            events.append(_Event((*ekey, "day", str(day)), first.date, first.date + dt.timedelta(days=1),
                                 f"{pid} · {short} day {day}: {', '.join(names)}{cond}", "\n".join(desc), seq,
                                 tentative, "treatment", True))
    # Decision points, on the day the next element is due.
    for d in plan.decisions:
        if d.date is None:
            continue
        n = index.get((d.at, d.branch))
        seq = changes[n][1] if n is not None else 0
        rules = "; ".join(f"→ {b['to']} " + ("otherwise" if b["when"] == "otherwise" else f"if {b['when']}")
                          for b in d.branches)
        state = (f"pending: waits for {', '.join(d.waiting_for)}" if d.status == "pending"
                 else f"{str(d.status).replace('_', ' ')}{': ' + d.outcome if d.outcome else ''}")
        key = ("decision", d.id) if d.branch is None else ("decision", d.id, d.branch)
        events.append(_Event(key, d.date, d.date + dt.timedelta(days=1), f"{pid} · Decision {d.id} ({state})",
                             "\n".join([f"Decision {d.id} at the end of {d.at}: {state}", rules,
                                        *d.explanation, _CHECK]), seq, d.branch is not None, "decision", True))
    return events


def _read_previous(path: str | os.PathLike[str], patient: str, protocol: str) -> dict[str, Any]:
    """UID → the previous export's VEVENT (only events of the same patient and protocol)."""
    import icalendar

    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(Problem(name, "", f"expected a readable iCalendar file, got {exc.strerror}")) from None
    try:
        cal = icalendar.Calendar.from_ical(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure is bad input
        raise InputError(Problem(name, "", f"expected an iCalendar (.ics) file, got unparsable text ({exc})")) from None
    if not isinstance(cal, icalendar.Calendar) or cal.name != "VCALENDAR":
        raise InputError(Problem(name, "", "expected an iCalendar file starting with BEGIN:VCALENDAR"))
    got = (str(cal.get("X-PROTOCOL-PATIENT", "")), str(cal.get("X-PROTOCOL-ID", "")))
    if got != (patient, protocol):
        raise InputError(Problem(name, "X-PROTOCOL-PATIENT", f"expected a calendar exported for patient {patient} "
                                 f"on {protocol}, got one for {got[0] or '?'} on {got[1] or '?'}"))
    return {str(ev["UID"]): ev for ev in cal.walk("VEVENT") if "UID" in ev}


def to_ics(plan: Plan, remind_days: int | None = None, previous: str | os.PathLike[str] | None = None,
           generated: dt.datetime | None = None) -> bytes:
    """A patient's plan as an iCalendar file (bytes, RFC 5545), built with ``icalendar``.

    ``remind_days``: add a reminder (VALARM, display) at 09:00 that many days before each event
    (0 = 09:00 on the day). ``previous``: an earlier export of the same patient's calendar;
    changed events then get a SEQUENCE above the old one and events that disappeared are sent
    as cancelled. ``generated``: the DTSTAMP (default now, or ``SOURCE_DATE_EPOCH``).

    >>> ics = to_ics(plan("examples/patients/hr-to-hsct.yaml"), remind_days=1)  # doctest: +SKIP
    """
    import icalendar

    if remind_days is not None and (isinstance(remind_days, bool) or not isinstance(remind_days, int)
                                    or not 0 <= remind_days <= 365):
        raise InputError(Problem("", "--remind-days", f"expected a whole number of days from 0 to 365, "
                                 f"got {remind_days!r}"))
    pid, proto = plan.patient.id, plan.protocol.id
    old = {} if previous is None else _read_previous(previous, pid, proto)
    stamp = generated if generated is not None else _generated_at()
    stamp = stamp.astimezone(dt.UTC).replace(microsecond=0)
    cal = icalendar.Calendar()
    cal.add("prodid", "-//protocol//treatment roadmap calendar//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    name = f"{pid} · {proto} {plan.protocol.version}"
    cal.add("name", name)
    cal.add("x-wr-calname", name)
    cal.add("x-wr-caldesc", f"Treatment plan of {pid} on {proto} {plan.protocol.version}, as of "
                            f"{plan.as_of.isoformat()}. {_CHECK}")
    cal.add("x-protocol-patient", pid)
    cal.add("x-protocol-id", proto)
    trigger = None if remind_days is None else dt.timedelta(hours=9 - 24 * remind_days)
    shared: dict[tuple[str, Any], Any] = {}

    def put(component: Any, name: str, value: Any) -> None:
        # Values that repeat across events (the stamp, dates, status, sequence...) are encoded
        # by icalendar once and the encoded property is re-used: same bytes, less time.
        if not _SHARE_VALUES:
            component.add(name, value)
            return
        key = (name, tuple(value) if isinstance(value, list) else value)
        encoded = shared.get(key)
        if encoded is None:
            component.add(name, value)
            shared[key] = component[name]
        else:
            component.add(name, encoded, encode=False)

    emitted: set[str] = set()
    for ev in _events(plan):
        uid = _uid(pid, proto, ev.key)
        if uid in emitted:  # pragma: no cover - keys are unique by construction
            continue
        emitted.add(uid)
        status = "TENTATIVE" if ev.tentative else "CONFIRMED"
        seq = ev.sequence
        before = old.get(uid)
        if before is not None:
            old_seq = int(before.get("SEQUENCE", 0))
            changed = (before.decoded("DTSTART") != ev.start or ("DTEND" in before and before.decoded("DTEND") != ev.end)
                       or str(before.get("SUMMARY", "")) != ev.summary
                       or str(before.get("DESCRIPTION", "")) != ev.description
                       or str(before.get("STATUS", "")) != status)
            seq = max(seq, old_seq + 1 if changed else old_seq)
        event = icalendar.Event()
        event.add("uid", uid)
        put(event, "dtstamp", stamp)
        put(event, "dtstart", ev.start)
        put(event, "dtend", ev.end)
        event.add("summary", ev.summary)
        event.add("description", ev.description)
        put(event, "sequence", seq)
        put(event, "status", status)
        put(event, "transp", "TRANSPARENT")
        put(event, "categories", [ev.categories])
        if trigger is not None and ev.alarm:
            alarm = icalendar.Alarm()
            put(alarm, "action", "DISPLAY")
            alarm.add("description", ev.summary)
            put(alarm, "trigger", trigger)
            event.add_component(alarm)
        cal.add_component(event)
    for uid, before in old.items():
        if uid in emitted or str(before.get("STATUS", "")).upper() == "CANCELLED":
            continue
        event = icalendar.Event()
        event.add("uid", uid)
        event.add("dtstamp", stamp)
        event.add("dtstart", before.decoded("DTSTART"))
        if "DTEND" in before:
            event.add("dtend", before.decoded("DTEND"))
        event.add("summary", f"Cancelled: {before.get('SUMMARY', '')}")
        event.add("description", f"No longer in the plan as of {plan.as_of.isoformat()}.\n{before.get('DESCRIPTION', '')}")
        event.add("sequence", int(before.get("SEQUENCE", 0)) + 1)
        event.add("status", "CANCELLED")
        cal.add_component(event)
    return _serialise(cal)


def _serialise(cal: Any) -> bytes:
    """``cal.to_ical()``, byte for byte, in a third of the time: icalendar's own property
    values and parameters are encoded by icalendar; only the per-line wrapping (a fresh
    ``Parameters`` per property) and the character-by-character folding are done here."""
    out = []
    for name, value in cal.property_items():
        text = value.to_ical() if hasattr(value, "to_ical") else value  # BEGIN/END come encoded
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        params = getattr(value, "params", None)
        head = params.to_ical() if params else b""
        if head:
            out.append(_fold(f"{name};{head.decode('utf-8')}:{text}"))
        else:
            out.append(_fold(f"{name}:{text}"))
    return b"".join(out)


def _fold(line: str) -> bytes:
    """One content line folded as icalendar folds it (RFC 5545 §3.1: lines of at most 75
    octets): pieces of at most 74 octets, never cut inside a UTF-8 sequence nor after the
    backslash of an escape."""
    data = line.encode("utf-8")
    if len(data) <= 74:
        return data + b"\r\n"
    out = []
    start = 0
    while len(data) - start > 74:
        cut = start + 74
        while data[cut] & 0xC0 == 0x80:  # a continuation byte: cut before its lead byte
            cut -= 1
        if data[cut - 1] in b"\\^" and cut - 1 > start:  # keep an escape (``\n``) on one line
            cut -= 1
        out.append(data[start:cut])
        start = cut
    out.append(data[start:])
    return b"\r\n ".join(out) + b"\r\n"
