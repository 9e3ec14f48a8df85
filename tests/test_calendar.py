"""Calendars: the ICS export read back by two independent parsers (icalendar and vobject);
UIDs stable across exports, SEQUENCE bumped on moved events (from the registry's history
without an earlier file, or against ``--previous``), reminders, cancellations, unverified marks
in titles and alarms, doses per administration."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import protocol
from protocol import _calendar
from protocol._calendar import calendar_for, dose_line, item_unverified, to_ics
from protocol._registry import Registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "patients").glob("*.yaml"))
HR = ROOT / "examples" / "patients" / "hr-to-hsct.yaml"
PENDING = ROOT / "examples" / "patients" / "mr-pending-mrd.yaml"
AS_OF = dt.date(2026, 11, 21)
STAMP = dt.datetime(2026, 9, 21, 14, 13, 20, tzinfo=dt.UTC)


def _events(data: bytes) -> dict[str, Any]:
    import icalendar

    cal = icalendar.Calendar.from_ical(data)
    events = {str(e["UID"]): e for e in cal.walk("VEVENT")}
    assert len(events) == len(cal.walk("VEVENT")), "UIDs are unique"
    return events


def _copy(src: Path, tmp: Path, edit: Any) -> Path:
    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    edit(data)
    out = tmp / src.name
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_ics_reads_back_with_two_parsers_and_covers_every_item(path: Path) -> None:
    import vobject

    plan = protocol.plan(path, as_of=AS_OF)
    data = to_ics(plan, generated=STAMP)
    events = _events(data)
    parsed = list(vobject.readComponents(data.decode("utf-8")))
    assert len(parsed) == 1
    second = {v.uid.value: v for v in parsed[0].vevent_list}
    assert set(second) == set(events)
    for uid, ev in events.items():
        other = second[uid]
        assert other.dtstart.value == ev.decoded("DTSTART")
        assert isinstance(other.dtstart.value, dt.date) and not isinstance(other.dtstart.value, dt.datetime)
        assert other.dtend.value > other.dtstart.value
        assert other.summary.value == str(ev["SUMMARY"])
        assert other.dtstamp.value == STAMP
    # Every dated item is on the calendar: an event covering its date names it.
    spans = [(e.decoded("DTSTART"), e.decoded("DTEND"), str(e["SUMMARY"])) for e in events.values()]
    for item in plan.items:
        assert any(start <= item.date < end and item.slot.name in summary for start, end, summary in spans), \
            (item.slot.name, item.date)
    # Every element and every decision is there too.
    summaries = " | ".join(s for _, _, s in spans)
    for span in plan.elements:
        assert span.title in summaries
    for d in plan.decisions:
        assert f"Decision {d.id}" in summaries


def test_placeholders_are_marked_and_branches_are_tentative() -> None:
    plan = protocol.plan(PENDING, as_of=AS_OF)
    events = _events(to_ics(plan, generated=STAMP))
    by_summary = {str(e["SUMMARY"]): e for e in events.values()}
    day8 = next(e for s, e in by_summary.items() if s.startswith("INF-0003 · ⚠ Induction day 8:"))
    assert str(day8["SUMMARY"]).endswith("(unverified)")
    text = str(day8["DESCRIPTION"])
    assert "Vincristine" in text and "⚠ UNVERIFIED" in text and "against the official protocol document" in text
    assert "1.5 mg/m² × " in text  # the dose with its working
    blina = next(e for s, e in by_summary.items() if s.startswith("INF-0003 · Blinatumomab ") and "continuous" in s)
    assert "15 µg/m²/day" in str(blina["DESCRIPTION"])
    assert blina.decoded("DTEND") - blina.decoded("DTSTART") == dt.timedelta(days=28)  # one event, 28 days
    for e in events.values():
        summary = str(e["SUMMARY"])
        assert str(e["STATUS"]) == ("TENTATIVE" if "(if pre_octadad→" in summary else "CONFIRMED"), summary


def test_uids_are_stable_and_sequence_goes_up_when_a_delay_is_recorded() -> None:
    # Before blinatumomab's (late) start is recorded, and after: IB onwards moves by 3 days.
    before = _events(to_ics(protocol.plan(HR, as_of=dt.date(2026, 8, 25)), generated=STAMP))
    after = _events(to_ics(protocol.plan(HR, as_of=AS_OF), generated=STAMP))
    common = set(before) & set(after)
    moved = [u for u in common if after[u].decoded("DTSTART") != before[u].decoded("DTSTART")]
    still = [u for u in common if after[u].decoded("DTSTART") == before[u].decoded("DTSTART")]
    ib = [u for u in common if "(Protocol IB" in str(after[u]["SUMMARY"])]
    assert ib and set(ib) <= set(moved), "IB events keep their UIDs and move"
    assert len(common) >= len(before) - 2, "re-importing updates events instead of duplicating them"
    for u in moved:
        assert after[u].decoded("DTSTART") - before[u].decoded("DTSTART") == dt.timedelta(days=3)
        assert int(after[u]["SEQUENCE"]) > int(before[u]["SEQUENCE"]), str(after[u]["SUMMARY"])
    induction = [u for u in still if "Induction" in str(after[u]["SUMMARY"])]
    assert induction
    for u in induction:
        assert int(after[u]["SEQUENCE"]) == int(before[u]["SEQUENCE"]) == 0


def test_a_later_start_keeps_uids_and_bumps_sequence(tmp_path: Path) -> None:
    def later(data: dict[str, Any]) -> None:
        for ev in data["events"]:
            if ev.get("element") == "blinatumomab" and ev["type"] == "element_started":
                ev["date"] = dt.date(2026, 8, 31)

    original = _events(to_ics(protocol.plan(HR, as_of=AS_OF), generated=STAMP))
    delayed = _events(to_ics(protocol.plan(_copy(HR, tmp_path, later), as_of=AS_OF), generated=STAMP))
    assert set(original) == set(delayed)
    moved = 0
    for uid, ev in delayed.items():
        shift = ev.decoded("DTSTART") - original[uid].decoded("DTSTART")
        if shift:
            moved += 1
            assert int(ev["SEQUENCE"]) > int(original[uid]["SEQUENCE"]), str(ev["SUMMARY"])
        elif ev.decoded("DTEND") == original[uid].decoded("DTEND"):
            assert int(ev["SEQUENCE"]) == int(original[uid]["SEQUENCE"]), str(ev["SUMMARY"])
    assert moved > 20


def test_previous_export_cancels_the_branch_not_taken(tmp_path: Path) -> None:
    old = tmp_path / "old.ics"
    old.write_bytes(to_ics(protocol.plan(PENDING, as_of=AS_OF), generated=STAMP))

    def decided(data: dict[str, Any]) -> None:
        data["mrd"].append({"timepoint": "pre_octadad", "date": dt.date(2026, 11, 2), "value": 0.0})
        data["events"].append({"type": "element_completed", "element": "marma", "date": dt.date(2026, 11, 3)})
        data["events"].append({"type": "element_started", "element": "octadad", "date": dt.date(2026, 11, 4)})

    plan = protocol.plan(_copy(PENDING, tmp_path, decided), as_of=AS_OF)
    before = _events(old.read_bytes())
    after = _events(to_ics(plan, previous=old, generated=STAMP))
    cancelled = [e for e in after.values() if str(e["STATUS"]) == "CANCELLED"]
    assert cancelled and all("HSCT" in str(e["SUMMARY"]) or "hsct" in str(e["SUMMARY"]) for e in cancelled)
    for e in cancelled:
        assert int(e["SEQUENCE"]) == int(before[str(e["UID"])]["SEQUENCE"]) + 1
    octadad = [u for u, e in after.items() if u in before and "(if pre_octadad→octadad)" in str(before[u]["SUMMARY"])]
    assert octadad
    for u in octadad:  # was tentative on a branch, now confirmed: a significant change
        assert str(before[u]["STATUS"]) == "TENTATIVE" and str(after[u]["STATUS"]) == "CONFIRMED"
        assert int(after[u]["SEQUENCE"]) >= int(before[u]["SEQUENCE"]) + 1
    # Unchanged events keep their SEQUENCE.
    same = [u for u, e in after.items() if u in before and e.to_ical() == before[u].to_ical()]
    assert same


def test_previous_export_must_be_the_same_patient(tmp_path: Path) -> None:
    old = tmp_path / "other.ics"
    old.write_bytes(to_ics(protocol.plan(HR, as_of=AS_OF)))
    with pytest.raises(protocol.InputError, match="expected a calendar exported for patient INF-0003"):
        to_ics(protocol.plan(PENDING, as_of=AS_OF), previous=old)
    bad = tmp_path / "bad.ics"
    bad.write_text("not a calendar\n", encoding="utf-8")
    with pytest.raises(protocol.InputError, match="expected an iCalendar"):
        to_ics(protocol.plan(PENDING, as_of=AS_OF), previous=bad)
    with pytest.raises(protocol.InputError, match="expected a readable iCalendar file"):
        to_ics(protocol.plan(PENDING, as_of=AS_OF), previous=tmp_path / "missing.ics")


@pytest.mark.parametrize(("days", "trigger"), [(0, dt.timedelta(hours=9)), (1, dt.timedelta(hours=-15)),
                                               (7, dt.timedelta(hours=9 - 7 * 24))])
def test_reminders(days: int, trigger: dt.timedelta) -> None:
    import icalendar

    cal = icalendar.Calendar.from_ical(to_ics(protocol.plan(HR, as_of=AS_OF), remind_days=days))
    events = cal.walk("VEVENT")
    alarms = cal.walk("VALARM")
    assert len(alarms) == len(events)
    for alarm in alarms:
        assert str(alarm["ACTION"]) == "DISPLAY" and alarm.decoded("TRIGGER") == trigger
    assert not icalendar.Calendar.from_ical(to_ics(protocol.plan(HR, as_of=AS_OF))).walk("VALARM")
    for bad in (-1, 366, True, 1.5):
        with pytest.raises(protocol.InputError, match="--remind-days"):
            to_ics(protocol.plan(HR, as_of=AS_OF), remind_days=bad)  # type: ignore[arg-type]


def test_output_is_icalendar_serialisation_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (VEVENTs written line by line) writes exactly what a plain icalendar
    build and ``Calendar.to_ical()`` write."""
    plan = protocol.plan(PENDING, as_of=AS_OF)
    fast = to_ics(plan, remind_days=2, generated=STAMP)
    monkeypatch.setattr(_calendar, "_FAST", False)  # every component built and serialised by icalendar
    assert to_ics(plan, remind_days=2, generated=STAMP) == fast
    for line in fast.split(b"\r\n"):
        assert len(line) <= 75
        line.decode("utf-8")  # never folded inside a character


def test_fold_never_splits_characters_or_escapes() -> None:
    line = "DESCRIPTION:" + "é" * 50 + "\\n" + "µ" * 40 + "a\\,b" * 20
    folded = _calendar._fold(line)
    parts = folded.rstrip(b"\r\n").split(b"\r\n ")
    assert b"".join(parts).decode("utf-8") == line
    assert all(len(p) <= 74 for p in parts)
    assert not any(p.endswith(b"\\") for p in parts[:-1])


def test_reproducible_with_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    plan = protocol.plan(HR, as_of=AS_OF)
    first = to_ics(plan)
    assert first == to_ics(protocol.plan(HR, as_of=AS_OF))
    assert b"DTSTAMP:20260921T141320Z" in first


def test_ics_time_is_within_budget() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    to_ics(plan)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        to_ics(plan)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.3  # loose: bench/bench_calendar_fhir.py checks the 30 ms budget


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_fast_writer_is_icalendar_byte_for_byte_on_every_example(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = protocol.plan(path, as_of=AS_OF)
    for days in (None, 0, 7):
        fast = to_ics(plan, remind_days=days, generated=STAMP)
        with monkeypatch.context() as m:
            m.setattr(_calendar, "_FAST", False)
            assert to_ics(plan, remind_days=days, generated=STAMP) == fast, (path.stem, days)


# --------------------------------------------------------------------------- unverified marks, frequencies


def test_unverified_mark_in_titles_alarms_and_descriptions() -> None:
    """Every event that holds an unverified item says so in its title, its alarm and its
    description; an event with nothing unverified carries no mark."""
    import icalendar

    plan = protocol.plan(PENDING, as_of=AS_OF)
    cal = icalendar.Calendar.from_ical(to_ics(plan, remind_days=1, generated=STAMP))
    marked = unmarked = 0
    for ev in cal.walk("VEVENT"):
        start, end = ev.decoded("DTSTART"), ev.decoded("DTEND")
        summary = str(ev["SUMMARY"])
        alarm = str(ev.walk("VALARM")[0]["DESCRIPTION"])
        covered = [i for i in plan.items if start <= i.date < end and i.slot.name in summary]
        if str(ev["CATEGORIES"].cats[0]) in ("treatment", "assessment") and any(item_unverified(i)[0]
                                                                                for i in covered):
            assert "⚠" in summary and summary.endswith("(unverified)"), summary
            assert "⚠ UNVERIFIED" in alarm and summary in alarm
            assert "⚠ UNVERIFIED" in str(ev["DESCRIPTION"])
            marked += 1
        if "⚠" not in summary:
            assert "UNVERIFIED" not in alarm
            unmarked += 1
    assert marked > 20 and unmarked > 0


def test_unverified_comes_from_the_item_when_the_plan_provides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Item.unverified`` (a date that follows a placeholder) wins over the slot's evidence."""
    plan = protocol.plan(PENDING, as_of=AS_OF)
    published = next(i for i in plan.items if i.slot.evidence == "published")
    assert item_unverified(published) == (False, ())

    class Marked(type(published)):  # type: ignore[misc]
        unverified = True
        unverified_reasons = ("date follows the placeholder length of induction",)

    flagged = Marked(*published)
    assert item_unverified(flagged) == (True, ("date follows the placeholder length of induction",))
    assert "date follows the placeholder length of induction" in _calendar._item_line(flagged)


def test_q12h_dose_says_per_dose_and_how_many_a_day() -> None:
    """High-dose cytarabine q12h in MARMA: '... mg per dose, every 12 h (2 doses a day)' in the
    event, never a bare amount that reads as the daily dose."""
    import icalendar

    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    q12h = [i for i in plan.items if i.slot.frequency == "q12h" and i.dose is not None and i.dose.amount]
    assert q12h
    line = dose_line(q12h[0])
    amount = q12h[0].dose.amount_text
    assert line == q12h[0].dose.text == f"{amount} per dose, every 12 h (2 doses a day)"
    cal = icalendar.Calendar.from_ical(to_ics(plan, generated=STAMP))
    texts = [str(e["DESCRIPTION"]) for e in cal.walk("VEVENT")]
    for item in q12h:
        assert any(f"{item.slot.name} {item.slot.route} {item.dose.amount_text} per dose, every 12 h "
                   f"(2 doses a day)" in t for t in texts), item.ref
    assert not any("(2 doses a day) per dose" in t for t in texts)  # said once, not twice
    once = next(i for i in plan.items if i.slot.frequency == "once_per_day" and i.dose is not None
                and i.dose.per == "dose" and i.dose.amount)
    assert dose_line(once) == f"{once.dose.amount_text} per dose, one dose on the day"


# --------------------------------------------------------------------------- SEQUENCE from the registry


class _Clock:
    def __init__(self) -> None:
        self.t = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(minutes=1)
        return self.t


def _parsed(data: bytes) -> dict[str, tuple[dt.date, dt.date, int, str, str]]:
    """UID → (start, end, SEQUENCE, STATUS, SUMMARY), read by icalendar and checked against vobject."""
    import vobject

    events = _events(data)
    other = {v.uid.value: v for v in vobject.readOne(data.decode("utf-8")).vevent_list}
    assert set(other) == set(events)
    out = {}
    for uid, ev in events.items():
        v = other[uid]
        assert int(v.sequence.value) == int(ev["SEQUENCE"]) and v.dtstart.value == ev.decoded("DTSTART")
        out[uid] = (ev.decoded("DTSTART"), ev.decoded("DTEND"), int(ev["SEQUENCE"]), str(ev["STATUS"]),
                    str(ev["SUMMARY"]))
    return out


def test_registry_calendar_updates_in_place_without_previous(tmp_path: Path) -> None:
    """Record a delay in a registry and export again without --previous: every moved event
    keeps its UID and has a higher SEQUENCE (icalendar and vobject agree); nothing else
    changes SEQUENCE; correcting the delay away moves them back with a higher SEQUENCE still."""
    as_of = dt.date(2026, 10, 1)
    reg = Registry(tmp_path / "r.db", create=True, today=lambda: as_of, now=_Clock())
    try:
        reg.add_patient(ROOT / "examples/patients/mr-on-time.yaml", by="test")
        pid = "INF-0001"
        first = calendar_for(reg, pid, as_of=as_of, generated=STAMP)
        assert calendar_for(reg, pid, as_of=as_of, generated=STAMP) == first  # nothing new: same bytes
        before = _parsed(first)
        assert {seq for _, _, seq, _, _ in before.values()} == {0}  # one revision: nothing changed yet
        delay = reg.record(pid, "event", {"type": "item_delayed", "item": "octadad:dexamethasone@10",
                                          "date": "2026-10-01", "to": "2026-10-04", "scope": "all",
                                          "reason": "neutropenic fever"}, by="test")
        after = _parsed(calendar_for(reg, pid, as_of=as_of, generated=STAMP))
        moved = [u for u in before if u in after and after[u][:2] != before[u][:2]]
        assert len(moved) > 20
        for uid in moved:
            assert after[uid][2] > before[uid][2], after[uid][4]
        for uid in set(before) & set(after):
            if after[uid] [:2] == before[uid][:2] and after[uid][4] == before[uid][4]:
                continue
            assert after[uid][2] > before[uid][2], after[uid][4]  # changed in any way: higher
        untouched = [u for u in before if after.get(u) == before[u]]
        assert untouched, "events the delay did not touch keep SEQUENCE 0"
        # The plain file export cannot see a delay inside an element: most moved events would
        # keep their SEQUENCE there (the defect this replaces).
        plain = _parsed(to_ics(protocol.plan(reg.patient(pid), as_of=as_of), generated=STAMP))
        assert sum(plain[u][2] <= before[u][2] for u in moved if u in plain) > len(moved) // 2
        # Correct the delay away: back to the old dates, and SEQUENCE higher again, never old.
        reg.retract(pid, delay.seq, by="test", reason="recorded on the wrong patient")
        back = _parsed(calendar_for(reg, pid, as_of=as_of, generated=STAMP))
        for uid in moved:
            if uid in back:
                assert back[uid][:2] == before[uid][:2]
                assert back[uid][2] > after[uid][2]
    finally:
        reg.close()


def test_registry_calendar_cancels_what_is_gone(tmp_path: Path) -> None:
    """A branch that waited for a result and is not taken is sent as cancelled by the feed,
    without an earlier file, and its SEQUENCE counts the disappearance."""
    as_of = AS_OF
    reg = Registry(tmp_path / "r.db", create=True, today=lambda: as_of, now=_Clock())
    try:
        reg.add_patient(PENDING, by="test")
        pid = "INF-0003"
        before = _parsed(calendar_for(reg, pid, as_of=as_of, generated=STAMP))
        hsct = {u for u, v in before.items() if "(if pre_octadad→hsct)" in v[4]}
        assert hsct
        reg.record(pid, "mrd", {"timepoint": "pre_octadad", "date": "2026-11-02", "value": 0.0}, by="test")
        after = _parsed(calendar_for(reg, pid, as_of=as_of, generated=STAMP))
        for uid in hsct:
            assert after[uid][3] == "CANCELLED" and after[uid][2] > before[uid][2]
        assert all(v[3] != "CANCELLED" for u, v in after.items() if u not in hsct)
    finally:
        reg.close()


def test_calendar_for_takes_a_registry_path(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with Registry(path, create=True, today=lambda: AS_OF, now=_Clock()) as reg:
        reg.add_patient(HR, by="test")
    data = calendar_for(path, "INF-0002", as_of=AS_OF, generated=STAMP)
    assert data == to_ics(protocol.plan(HR, as_of=AS_OF), generated=STAMP, history=[])


def test_previous_never_echoes_a_file_that_is_not_a_calendar(tmp_path: Path) -> None:
    """``--previous /etc/shadow``: the message names the file and what was expected, never
    a word of what is in it."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$S3CRETHASH:19000:0:99999:7:::\n", encoding="utf-8")
    calendarish = tmp_path / "broken.ics"
    calendarish.write_text("BEGIN:VCALENDAR\nS3CRETHASH;;;:::\n\x00\x01garbage\n", encoding="utf-8")
    plan = protocol.plan(HR, as_of=AS_OF)
    for path in (secret, calendarish):
        with pytest.raises(protocol.InputError) as info:
            to_ics(plan, previous=path)
        text = str(info.value)
        assert str(path) in text and "expected an iCalendar" in text
        assert "S3CRET" not in text and "19000" not in text
    other = tmp_path / "other.ics"
    other.write_bytes(to_ics(protocol.plan(PENDING, as_of=AS_OF)).replace(b"X-PROTOCOL-PATIENT:INF-0003",
                                                                           b"X-PROTOCOL-PATIENT:root:S3CRET x"))
    with pytest.raises(protocol.InputError) as info:
        to_ics(plan, previous=other)
    assert "S3CRET" not in str(info.value) and "got one for ?" in str(info.value)


@pytest.mark.parametrize("example", sorted((ROOT / "examples" / "patients").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_run_s_title_says_how_it_runs_once(example: Path) -> None:
    """A daily run's title carries the dose text, which already says how it is given: the
    kind is not said again (``4.82 µg/day, continuous infusion, continuous infusion day
    1–28`` was the defect)."""
    import icalendar

    cal = icalendar.Calendar.from_ical(protocol.to_ics(protocol.plan(protocol.load_patient(example))))
    for event in cal.walk("VEVENT"):
        title = str(event["SUMMARY"])
        for phrase in ("continuous infusion", "once a day", "twice a day", "daily"):
            assert title.count(phrase) <= 1, title
        assert ", daily day" not in title or " a day" not in title, title
