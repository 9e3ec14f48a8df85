"""Calendars: the ICS export read back by two independent parsers (icalendar and vobject);
UIDs stable across exports, SEQUENCE bumped on moved events, reminders, cancellations."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import protocol
from protocol import _calendar
from protocol._calendar import to_ics

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
    day8 = next(e for s, e in by_summary.items() if s.startswith("INF-0003 · Induction day 8:"))
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
    """The fast path (shared encoded values, own folding) writes exactly what a plain
    icalendar build and ``Calendar.to_ical()`` write."""
    plan = protocol.plan(PENDING, as_of=AS_OF)
    fast = to_ics(plan, remind_days=2, generated=STAMP)
    monkeypatch.setattr(_calendar, "_serialise", lambda cal: cal.to_ical())
    monkeypatch.setattr(_calendar, "_SHARE_VALUES", False)  # every value encoded by its own add()
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
    assert sorted(times)[2] < 0.3  # loose: bench/bench_documents.py checks the 30 ms budget
