"""The live plan (issue 3): item events, delays and their scopes, dose modifications, holds,
blinatumomab interruptions and bag changes, count start gates, windows and deviations, doses
recomputed on a > 10 % weight change, and the bad input that must be refused.

Everything runs on ``tests/data/timeline/timeline.yaml``, a small made-up definition whose
numbers make every date and dose computable by hand:

- diagnosis = treatment start = 2026-01-05 (study day 1); end of therapy 20 weeks after
  diagnosis = 2026-05-24; height 100 cm and weight 9 kg give a BSA of exactly 0.50 m²;
- ``alpha`` 2026-01-05..01-16 (12 days): Xdrug 100 mg/m² = 50 mg on days 1, 4, 8 (01-05,
  01-08, 01-12; window -1/+2), Ydrug 10 mg days 1-10 (01-05..01-14), marrow day 10 (01-14);
- ``blina`` 01-17..02-14 (29 days; count gate ANC ≥ 0.5 and platelets ≥ 50): blinatumomab
  15 µg/m²/day = 7.5 µg/day days 1-28 (01-17..02-13), 48 h bags by default on days 1, 3, ...
  27, premedication day 1, marrows day 15 (01-31, window -0/+1) and day 29 (02-14);
- ``gamma`` 02-15..02-21 (gate with an unknown ANC threshold): Zdrug 5 mg days 1 and 7;
- ``maint`` 02-22..05-24 (92 days): Mdrug daily, Wdrug weekly (window -1/+1).

Tests marked ``xfail(strict=True, reason="BUG: ...")`` document engine bugs found here: each
asserts the intended behaviour and fails on the engine as it is. Tests whose docstring starts
with "Regression" were such bugs, since fixed (commit 1a1f0ba).
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import protocol
from protocol import PatientError
from protocol._cli import app
from protocol._models import Event, Patient

HERE = Path(__file__).resolve().parent
DEFINITION = HERE / "data" / "timeline" / "timeline.yaml"
PROTO = protocol.load_protocol(DEFINITION)
D = dt.date.fromisoformat
EOT = D("2026-05-24")

BASE: dict[str, Any] = {
    "id": "TL-0001", "protocol": "timeline-test", "birth_date": "2025-01-01", "sex": "female",
    "diagnosis_date": "2026-01-05", "kmt2a": "rearranged", "wbc_at_diagnosis": 10,
    # 80 cm, 11.25 kg at 12 months (WHO z within ±3): BSA sqrt(80 × 11.25 / 3600) = 0.5 m² exactly.
    "measurements": [{"date": "2026-01-05", "height_cm": 80, "weight_kg": 11.25}],
}


# --------------------------------------------------------------------------- helpers


def make(events: list[dict[str, Any]] = (), **fields: Any) -> Patient:  # type: ignore[assignment]
    data = copy.deepcopy(BASE)
    data["events"] = list(events)
    data.update(fields)
    return Patient.model_validate(data)


def plan(events: list[dict[str, Any]] = (), as_of: str = "2026-01-10", **fields: Any) -> protocol.Plan:  # type: ignore[assignment]
    return protocol.plan(make(events, **fields), PROTO, as_of=D(as_of))


def refused(events: list[dict[str, Any]], as_of: str = "2026-01-10", **fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(PatientError) as exc:
        plan(events, as_of, **fields)
    return [(p.field, p.message) for p in exc.value.problems]


def item(p: protocol.Plan, ref: str) -> protocol.Item:
    found = [i for i in p.items if i.ref == ref]
    assert len(found) == 1, (ref, found)
    return found[0]


def dates(p: protocol.Plan, element: str, slot: str) -> list[str]:
    return [i.date.isoformat() for i in p.items if i.element == element and i.slot.key == slot]


def span(p: protocol.Plan, element: str) -> protocol.ElementSpan:
    return next(e for e in p.elements if e.id == element)


def spans(p: protocol.Plan) -> dict[str, tuple[str, str]]:
    return {e.id: (e.planned_start.isoformat(), e.planned_end.isoformat()) for e in p.elements}


def kinds(p: protocol.Plan) -> list[tuple[str, str | None, str]]:
    return [(d["kind"], d["item"], d["date"]) for d in p.deviations]


def started(element: str, date: str, **extra: Any) -> dict[str, Any]:
    return {"type": "element_started", "element": element, "date": date, **extra}


def completed(element: str, date: str) -> dict[str, Any]:
    return {"type": "element_completed", "element": element, "date": date}


def given(ref: str, date: str, **extra: Any) -> dict[str, Any]:
    return {"type": "item_given", "item": ref, "date": date, **extra}


def omitted(ref: str, date: str, reason: str = "vomiting") -> dict[str, Any]:
    return {"type": "item_omitted", "item": ref, "date": date, "reason": reason}


def delayed(ref: str, date: str, to: str, scope: str, reason: str = "low counts") -> dict[str, Any]:
    return {"type": "item_delayed", "item": ref, "date": date, "to": to, "scope": scope, "reason": reason}


def modified(ref: str, date: str, percent: float, of: str = "standard", scope: str = "item",
             reason: str = "toxicity") -> dict[str, Any]:
    return {"type": "dose_modified", "item": ref, "date": date, "percent": percent, "of": of, "scope": scope,
            "reason": reason}


def held(element: str, date: str) -> dict[str, Any]:
    return {"type": "element_held", "element": element, "date": date, "reason": "infection"}


def resumed(element: str, date: str) -> dict[str, Any]:
    return {"type": "element_resumed", "element": element, "date": date}


def interrupted(date: str) -> dict[str, Any]:
    return {"type": "infusion_interrupted", "element": "blina", "date": date, "reason": "CRS grade 3"}


def infusion_resumed(date: str, **extra: Any) -> dict[str, Any]:
    return {"type": "infusion_resumed", "element": "blina", "date": date, **extra}


def count(date: str, anc: float | None, platelets: float | None) -> dict[str, Any]:
    return {"date": date, "anc": anc, "platelets": platelets}


ALPHA = [started("alpha", "2026-01-05")]
#: alpha as planned, blina started on its planned day (no counts recorded: earliest date).
BLINA = [*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17")]
WALK = [*BLINA, completed("blina", "2026-02-14"), started("gamma", "2026-02-15"), completed("gamma", "2026-02-21"),
        started("maint", "2026-02-22")]


def _days(first: str, last: str, step: int = 1) -> list[str]:
    a, b = D(first).toordinal(), D(last).toordinal()
    return [dt.date.fromordinal(o).isoformat() for o in range(a, b + 1, step)]


# --------------------------------------------------------------------------- baseline


def test_baseline_projection_of_the_test_definition() -> None:
    p = plan([], as_of="2026-01-05")
    assert spans(p) == {"alpha": ("2026-01-05", "2026-01-16"), "blina": ("2026-01-17", "2026-02-14"),
                        "gamma": ("2026-02-15", "2026-02-21"), "maint": ("2026-02-22", "2026-05-24")}
    assert p.end_of_therapy == EOT
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-08", "2026-01-12"]
    assert item(p, "alpha:xdrug@1").dose.amount == 50.0
    assert item(p, "blina:blinatumomab@1").dose.amount == 7.5
    assert dates(p, "blina", "blinatumomab") == _days("2026-01-17", "2026-02-13")
    # default 48 h bags from day 1 to the infusion's last day
    bags = [i for i in p.items if i.slot.key == "blinatumomab_bag"]
    assert [i.date.isoformat() for i in bags] == _days("2026-01-17", "2026-02-12", 2)
    assert [i.element_day for i in bags] == list(range(1, 28, 2))
    assert {i.name for i in bags} == {"Blinatumomab bag (48 h)"}
    assert {i.kind for i in bags} == {"bag_change"}
    assert len(dates(p, "maint", "mdrug")) == 92 and dates(p, "maint", "mdrug")[-1] == "2026-05-24"
    assert dates(p, "maint", "wdrug")[-1] == "2026-05-24"
    assert {i.status for i in p.items} == {"planned"}
    assert p.deviations == []
    assert item(p, "gamma:zdrug@7").study_day == 48  # 2026-02-21 - 2026-01-05 + 1


def test_item_ref_and_json_fields() -> None:
    p = plan(ALPHA, as_of="2026-01-05")
    x = item(p, "alpha:xdrug@4")
    d = x.to_dict()
    assert d["ref"] == "alpha:xdrug@4"
    assert d["window"] == {"before": 1, "after": 2}
    assert d["note"] is None
    assert item(p, "alpha:ydrug@4").to_dict()["window"] is None
    assert "deviations" in p.to_dict()


# --------------------------------------------------------------------------- given / omitted / windows


def test_item_given_on_its_day_with_dose() -> None:
    p = plan([*ALPHA, given("alpha:xdrug@1", "2026-01-05", dose=50)], as_of="2026-01-05")
    x = item(p, "alpha:xdrug@1")
    assert (x.status, x.note) == ("given", "given on 2026-01-05: 50 mg")
    assert p.deviations == []


@pytest.mark.parametrize("day", ["2026-01-07", "2026-01-10"])  # due 01-08, window -1/+2: both ends are on time
def test_item_given_inside_its_window(day: str) -> None:
    p = plan([*ALPHA, given("alpha:xdrug@4", day)], as_of="2026-01-10")
    x = item(p, "alpha:xdrug@4")
    assert x.status == "given"
    assert x.date == D("2026-01-08")
    assert x.note == f"given on {day} (due 2026-01-08)"
    assert "out_of_window" not in [d["kind"] for d in p.deviations]


@pytest.mark.parametrize("day", ["2026-01-06", "2026-01-11"])  # one day outside -1/+2
def test_item_given_outside_its_window_is_a_deviation(day: str) -> None:
    p = plan([*ALPHA, given("alpha:xdrug@4", day)], as_of="2026-01-11")
    assert item(p, "alpha:xdrug@4").note == f"given on {day} (out of window)"
    dev = [d for d in p.deviations if d["kind"] == "out_of_window"]
    assert dev == [{"date": "2026-01-08", "element": "alpha", "item": "alpha:xdrug@4", "kind": "out_of_window",
                    "message": f"Xdrug due 2026-01-08 (window -1/+2 days) was given on {day}"}]


def test_item_without_window_given_late_is_no_deviation() -> None:
    p = plan([*ALPHA, given("alpha:ydrug@2", "2026-01-09")], as_of="2026-01-09")
    assert item(p, "alpha:ydrug@2").note == "given on 2026-01-09 (due 2026-01-06)"
    assert [d for d in p.deviations if d["item"] == "alpha:ydrug@2"] == []


def test_item_omitted_after_given_is_refused() -> None:
    """Regression: the given item silently became 'omitted'."""
    assert refused([*ALPHA, given("alpha:xdrug@1", "2026-01-05"), omitted("alpha:xdrug@1", "2026-01-06")]) == [
        ("events[2].item", "alpha:xdrug@1 is already recorded as given")]


def test_item_given_after_omitted_is_refused() -> None:
    assert refused([*ALPHA, omitted("alpha:xdrug@1", "2026-01-05"), given("alpha:xdrug@1", "2026-01-06")]) == [
        ("events[2].item", "alpha:xdrug@1 is already recorded as omitted")]


def test_item_omitted() -> None:
    p = plan([*ALPHA, omitted("alpha:ydrug@2", "2026-01-06", "vomiting")], as_of="2026-01-06")
    y = item(p, "alpha:ydrug@2")
    assert (y.status, y.note, y.date) == ("omitted", "omitted on 2026-01-06: vomiting", D("2026-01-06"))


def test_overdue_and_unrecorded_in_the_element_under_way() -> None:
    p = plan(ALPHA, as_of="2026-01-15")
    status = {i.ref: i.status for i in p.items if i.element == "alpha"}
    # Xdrug has a window (+2): past it with nothing recorded -> overdue; the marrow is an assessment.
    assert status["alpha:xdrug@1"] == status["alpha:xdrug@4"] == status["alpha:xdrug@8"] == "overdue"
    assert status["alpha:marrow@10"] == "overdue"
    # Ydrug (no window) is only unrecorded
    assert {status[f"alpha:ydrug@{d}"] for d in range(1, 11)} == {"unrecorded"}
    assert p.deviations == [
        {"date": "2026-01-05", "element": "alpha", "item": "alpha:xdrug@1", "kind": "overdue",
         "message": "Xdrug due 2026-01-05 (window +2 days): nothing recorded"},
        {"date": "2026-01-08", "element": "alpha", "item": "alpha:xdrug@4", "kind": "overdue",
         "message": "Xdrug due 2026-01-08 (window +2 days): nothing recorded"},
        {"date": "2026-01-12", "element": "alpha", "item": "alpha:xdrug@8", "kind": "overdue",
         "message": "Xdrug due 2026-01-12 (window +2 days): nothing recorded"},
        {"date": "2026-01-14", "element": "alpha", "item": "alpha:marrow@10", "kind": "overdue",
         "message": "Alpha marrow due 2026-01-14: nothing recorded"},
    ]


def test_overdue_waits_for_the_end_of_the_window() -> None:
    p = plan(ALPHA, as_of="2026-01-14")  # xdrug@8 due 01-12, +2 -> on time until 01-14
    assert item(p, "alpha:xdrug@8").status == "planned"
    assert item(p, "alpha:marrow@10").status == "planned"  # due today
    assert item(p, "alpha:ydrug@9").status == "unrecorded"
    assert [d["item"] for d in p.deviations] == ["alpha:xdrug@1", "alpha:xdrug@4"]


def test_assessment_with_window_becomes_overdue_after_it() -> None:
    assert item(plan(BLINA, as_of="2026-02-01"), "blina:b15@15").status == "planned"  # due 01-31, +1
    p = plan(BLINA, as_of="2026-02-02")
    assert item(p, "blina:b15@15").status == "overdue"
    assert ("overdue", "blina:b15@15", "2026-01-31") in kinds(p)


def test_result_recorded_marks_the_sample_done_not_overdue() -> None:
    p = plan(ALPHA, as_of="2026-01-15", mrd=[{"timepoint": "tp_alpha", "date": "2026-01-14", "value": 0}])
    assert item(p, "alpha:marrow@10").status == "done"
    assert "alpha:marrow@10" not in [d["item"] for d in p.deviations]


def test_nothing_overdue_once_the_element_is_completed() -> None:
    p = plan([*ALPHA, completed("alpha", "2026-01-16")], as_of="2026-01-16")
    assert {i.status for i in p.items if i.element == "alpha"} == {"done"}
    assert p.deviations == []


def test_assessment_given_and_omitted() -> None:
    p = plan([*ALPHA, given("alpha:marrow@10", "2026-01-14")], as_of="2026-01-15")
    assert item(p, "alpha:marrow@10").status == "given"
    p = plan([*ALPHA, omitted("alpha:marrow@10", "2026-01-14", "no theatre slot")], as_of="2026-01-15")
    assert item(p, "alpha:marrow@10").status == "omitted"
    assert "alpha:marrow@10" not in [d["item"] for d in p.deviations]


# --------------------------------------------------------------------------- bad input


BAD: list[tuple[str, list[dict[str, Any]], str, str, str]] = [
    ("unknown day", [*ALPHA, given("alpha:xdrug@2", "2026-01-06")], "events[1].item",
     "Xdrug is not planned on day 2 of alpha (its days: 1, 4, 8), got 'alpha:xdrug@2'", "2026-01-10"),
    ("unknown slot", [*ALPHA, given("alpha:nodrug@1", "2026-01-06")], "events[1].item",
     "expected an item of alpha (xdrug, ydrug, marrow), got 'nodrug' in 'alpha:nodrug@1'", "2026-01-10"),
    ("unknown element", [*ALPHA, given("nope:xdrug@1", "2026-01-06")], "events[1].item",
     "expected an element of timeline-test (alpha, blina, gamma, maint), got 'nope' in 'nope:xdrug@1'", "2026-01-10"),
    ("unknown element to hold", [*ALPHA, held("nope", "2026-01-06")], "events[1].element",
     "expected an element of timeline-test (alpha, blina, gamma, maint), got 'nope'", "2026-01-10"),
    ("delay earlier", [*ALPHA, delayed("alpha:xdrug@4", "2026-01-06", "2026-01-07", "item")], "events[1].to",
     "expected a date after the item's due date 2026-01-08 (a delay moves an item later), got 2026-01-07",
     "2026-01-10"),
    ("delay to the due date", [*ALPHA, delayed("alpha:xdrug@4", "2026-01-06", "2026-01-08", "all")], "events[1].to",
     "expected a date after the item's due date 2026-01-08 (a delay moves an item later), got 2026-01-08",
     "2026-01-10"),
    ("given before the element start", [started("alpha", "2026-01-06"), given("alpha:xdrug@1", "2026-01-05")],
     "events[1].date", "expected a date on or after the start of alpha (2026-01-06), got 2026-01-05", "2026-01-10"),
    ("dose above standard", [*ALPHA, given("alpha:xdrug@1", "2026-01-05", dose=52.6)], "events[1].dose",
     "expected at most the standard dose 50 mg + 5 % tolerance (placeholder) = 52.5 mg (100 mg/m² × 0.500 m² = "
     "50 mg (BSA Mosteller, 80 cm, 11.25 kg on 2026-01-05)), got 52.6", "2026-01-10"),
    ("dose for an assessment", [*ALPHA, given("alpha:marrow@10", "2026-01-14", dose=1)], "events[1].dose",
     "Alpha marrow has no dose to record (it is not an administration with a dose)", "2026-01-15"),
    ("given twice", [*ALPHA, given("alpha:xdrug@1", "2026-01-05"), given("alpha:xdrug@1", "2026-01-06")],
     "events[2].item", "alpha:xdrug@1 is already recorded as given", "2026-01-10"),
    ("delay a given item", [*ALPHA, given("alpha:xdrug@1", "2026-01-05"),
                            delayed("alpha:xdrug@1", "2026-01-06", "2026-01-07", "item")],
     "events[2].item", "alpha:xdrug@1 is already recorded as given: it cannot be delayed", "2026-01-10"),
    ("modify an assessment", [*ALPHA, modified("alpha:marrow@10", "2026-01-06", 50)], "events[1].item",
     "Alpha marrow has no dose to modify", "2026-01-10"),
    ("168 h bag under 22 kg", [*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17", bag_hours=168)],
     "events[2].bag_hours", "a 168 h bag is not for patients under 22 kg (label), got 11.25 kg on 2026-01-05",
     "2026-01-18"),
    ("168 h bag under 22 kg on resumption", [*BLINA, interrupted("2026-01-20"),
                                             infusion_resumed("2026-01-22", bag_hours=168)],
     "events[4].bag_hours", "a 168 h bag is not for patients under 22 kg (label), got 11.25 kg on 2026-01-05",
     "2026-01-22"),
    ("bag not in the definition", [*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17", bag_hours=36)],
     "events[2].bag_hours", "expected a bag duration of the definition (24 h, 48 h, 72 h, 96 h, 168 h), got 36",
     "2026-01-18"),
    ("bag for an element without infusion", [started("alpha", "2026-01-05", bag_hours=24)], "events[0].bag_hours",
     "'alpha' has no continuous infusion with bag rules", "2026-01-10"),
    ("interruption of an element without infusion", [*ALPHA, {"type": "infusion_interrupted", "element": "alpha",
                                                             "date": "2026-01-06", "reason": "x"}],
     "events[1].element", "'alpha' has no continuous infusion with interruption rules: record element_held / "
     "element_resumed instead", "2026-01-10"),
    ("resume without hold", [*ALPHA, resumed("alpha", "2026-01-06")], "events[1].type",
     "element_resumed without an earlier element_held for alpha", "2026-01-10"),
    ("infusion resumed without interruption", [*BLINA, infusion_resumed("2026-01-20")], "events[3].type",
     "infusion_resumed without an earlier infusion_interrupted for blina", "2026-01-20"),
    ("hold resumed as an infusion", [*BLINA, held("blina", "2026-01-19"), infusion_resumed("2026-01-20")],
     "events[4].type", "infusion_resumed without an earlier infusion_interrupted for blina", "2026-01-20"),
    ("second hold while held", [*ALPHA, held("alpha", "2026-01-06"), held("alpha", "2026-01-07")], "events[2].type",
     "alpha is already paused (hold on 2026-01-06); record the resumption first", "2026-01-10"),
    ("interruption while held", [*BLINA, held("blina", "2026-01-19"), interrupted("2026-01-20")], "events[4].type",
     "blina is already paused (hold on 2026-01-19); record the resumption first", "2026-01-20"),
    ("hold before the element start", [started("alpha", "2026-01-06"), held("alpha", "2026-01-05")],
     "events[1].date", "expected a date on or after the start of alpha (2026-01-06), got 2026-01-05", "2026-01-10"),
    ("item of an element the patient never reaches",
     [*ALPHA, {"type": "off_protocol", "date": "2026-01-07", "reason": "parents' choice"},
      given("blina:premed@1", "2026-01-06")],
     "events[2].item", "'blina:premed@1' is not on this patient's plan (its element is not reached, or the patient "
     "left the protocol before it)", "2026-01-20"),
]


@pytest.mark.parametrize(("events", "field", "message", "as_of"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_item_events_are_refused(events: list[dict[str, Any]], field: str, message: str, as_of: str) -> None:
    assert refused(events, as_of) == [(field, message)]


def test_item_given_after_the_start_of_a_projected_element_that_was_not_reached_yet() -> None:
    # blina is planned from 01-17: recorded on 01-10 as given, it is before its start.
    assert refused([*ALPHA, given("blina:premed@1", "2026-01-10")], "2026-01-10") == [
        ("events[1].date", "expected a date on or after the start of blina (2026-01-17), got 2026-01-10")]


@pytest.mark.parametrize("event", [given("blina:premed@1", "2026-01-17"), held("blina", "2026-01-18"),
                                   interrupted("2026-01-18")], ids=["item_given", "element_held", "interrupted"])
def test_events_in_an_element_never_started_are_refused(event: dict[str, Any]) -> None:
    """Regression: alpha completed, blina (due 01-17) never recorded as started, yet its
    premedication was accepted as given (or the element as held)."""
    assert refused([*ALPHA, completed("alpha", "2026-01-16"), event], "2026-01-19") == [
        ("events[2].type", f"blina has no recorded start: record element_started before what happened in it "
                           f"({event['type']} on {event['date']})")]


def test_omission_delay_and_dose_change_may_be_recorded_ahead_for_an_element_not_started() -> None:
    p = plan([*ALPHA, omitted("gamma:zdrug@7", "2026-01-06", "cumulative dose reached"),
              modified("blina:premed@1", "2026-01-06", 50), delayed("gamma:zdrug@1", "2026-01-06", "2026-02-16", "item")],
             as_of="2026-01-06")
    assert item(p, "gamma:zdrug@7").status == "omitted"
    assert item(p, "blina:premed@1").dose.amount == 1.25
    assert item(p, "gamma:zdrug@1").date == D("2026-02-16")


def test_item_event_after_the_patient_left_the_protocol_is_refused() -> None:
    """Regression: this item_given (01-12, five days after leaving) was accepted, and then shown
    as given in the stopped element."""
    assert refused([*ALPHA, {"type": "off_protocol", "date": "2026-01-07", "reason": "parents' choice"},
                    given("alpha:xdrug@8", "2026-01-12")], "2026-01-20") == [
        ("events[2].date", "item_given on 2026-01-12 comes after the patient left the protocol (off_protocol on "
                           "2026-01-07)")]


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"percent": 0}, "events[1]", "a 0 % dose is an omission: record an item_omitted event with the reason instead"),
    ({"percent": 120}, "events[1].percent", "expected a number <= 100, got 120"),
    ({"scope": "all"}, "events[1]", "a dose modification applies to the item or to the rest of its element "
                                    "(scope item or element), got all"),
    ({"of": "last"}, "events[1].of", "expected 'standard' or 'previous', got 'last'"),
])
def test_bad_dose_modifications_are_refused_when_loading(tmp_path: Path, change: dict[str, Any], field: str,
                                                         message: str) -> None:
    data = copy.deepcopy(BASE)
    data["events"] = [started("alpha", "2026-01-05"), {**modified("alpha:xdrug@4", "2026-01-06", 50), **change}]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(PatientError) as exc:
        protocol.load_patient(path)
    assert [(p.field, p.message) for p in exc.value.problems] == [(field, message)]


# --------------------------------------------------------------------------- delays


def test_delay_scope_item_moves_only_that_item() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@4", "2026-01-07", "2026-01-10", "item")], as_of="2026-01-07")
    x = item(p, "alpha:xdrug@4")
    assert (x.date, x.element_day, x.study_day) == (D("2026-01-10"), 4, 6)  # element day stays, study day follows
    assert x.note == "delayed 2 days on 2026-01-07: low counts"
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-10", "2026-01-12"]
    assert dates(p, "alpha", "ydrug") == _days("2026-01-05", "2026-01-14")
    assert spans(p)["alpha"] == ("2026-01-05", "2026-01-16")
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-14")


def test_delay_scope_item_beyond_the_element_end_moves_the_end() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@8", "2026-01-07", "2026-01-20", "item")], as_of="2026-01-07")
    assert item(p, "alpha:xdrug@8").date == D("2026-01-20")
    assert spans(p)["alpha"] == ("2026-01-05", "2026-01-20")
    assert spans(p)["blina"] == ("2026-01-21", "2026-02-18")


def test_delay_scope_element_that_still_fits_keeps_the_next_element() -> None:
    # alpha's last items are on day 10 (01-14) and it ends on day 12: a 2-day delay still fits.
    p = plan([*ALPHA, delayed("alpha:xdrug@8", "2026-01-07", "2026-01-14", "element")], as_of="2026-01-07")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-08", "2026-01-14"]
    assert dates(p, "alpha", "ydrug") == [*_days("2026-01-05", "2026-01-11"), "2026-01-14", "2026-01-15", "2026-01-16"]
    assert item(p, "alpha:marrow@10").date == D("2026-01-16")
    assert item(p, "alpha:ydrug@9").note == "moved 2 days with xdrug@8 (low counts)"
    assert item(p, "alpha:ydrug@7").note is None  # before the delayed item: not moved
    assert spans(p)["alpha"] == ("2026-01-05", "2026-01-16")
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-14")


def test_delay_scope_element_that_overflows_moves_the_end_only_as_far_as_needed() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@4", "2026-01-07", "2026-01-13", "element")], as_of="2026-01-07")
    # 5 days: the marrow (day 10, 01-14) moves to 01-19, three days past day 12 (01-16)
    assert item(p, "alpha:marrow@10").date == D("2026-01-19")
    assert item(p, "alpha:xdrug@8").date == D("2026-01-17")
    assert spans(p)["alpha"] == ("2026-01-05", "2026-01-19")
    assert spans(p)["blina"] == ("2026-01-20", "2026-02-17")


def test_delay_scope_all_moves_the_end_and_everything_after() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@8", "2026-01-07", "2026-01-14", "all")], as_of="2026-01-07")
    assert item(p, "alpha:marrow@10").date == D("2026-01-16")
    assert spans(p) == {"alpha": ("2026-01-05", "2026-01-18"), "blina": ("2026-01-19", "2026-02-16"),
                        "gamma": ("2026-02-17", "2026-02-23"), "maint": ("2026-02-24", "2026-05-24")}
    assert item(p, "blina:blinatumomab@1").study_day == 15


def test_delay_all_shortens_maintenance_the_end_of_therapy_stays() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@4", "2026-01-07", "2026-01-11", "all")], as_of="2026-01-07")
    assert p.end_of_therapy == EOT
    assert spans(p)["maint"] == ("2026-02-25", "2026-05-24")
    assert len(dates(p, "maint", "mdrug")) == 89  # 92 - 3
    assert dates(p, "maint", "wdrug")[-1] == "2026-05-20"  # day 85; day 92 would be 05-27
    assert max(i.date for i in p.items) == EOT


@pytest.mark.parametrize("scope", ["element", "all"])
def test_delay_in_maintenance_drops_items_past_the_end_of_therapy(scope: str) -> None:
    p = plan([*WALK, delayed("maint:wdrug@8", "2026-03-01", "2026-03-04", scope)], as_of="2026-03-01")
    assert p.end_of_therapy == EOT and span(p, "maint").planned_end == EOT
    assert dates(p, "maint", "mdrug")[-1] == "2026-05-24"
    assert item(p, "maint:mdrug@89").date == EOT
    assert [i for i in p.items if i.ref == "maint:mdrug@90"] == []
    assert dates(p, "maint", "wdrug")[-3:] == ["2026-05-06", "2026-05-13", "2026-05-20"]
    assert "dropped" in span(p, "maint").note
    assert max(i.date for i in p.items) == EOT


def test_delay_scope_item_in_maintenance_keeps_the_rest() -> None:
    p = plan([*WALK, delayed("maint:wdrug@8", "2026-03-01", "2026-03-04", "item")], as_of="2026-03-01")
    assert item(p, "maint:wdrug@8").date == D("2026-03-04")
    assert len(dates(p, "maint", "mdrug")) == 92 and len(dates(p, "maint", "wdrug")) == 14


def test_delay_then_given_is_judged_against_the_new_date() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@4", "2026-01-07", "2026-01-10", "item"), given("alpha:xdrug@4", "2026-01-12")],
             as_of="2026-01-12")
    x = item(p, "alpha:xdrug@4")
    assert x.status == "given" and x.date == D("2026-01-10")
    assert x.note == "delayed 2 days on 2026-01-07: low counts; given on 2026-01-12 (due 2026-01-10)"
    assert p.deviations == [d for d in p.deviations if d["kind"] != "out_of_window"]


def test_delay_does_not_move_items_already_given() -> None:
    p = plan([*ALPHA, given("alpha:ydrug@9", "2026-01-07"), delayed("alpha:xdrug@8", "2026-01-07", "2026-01-14", "element")],
             as_of="2026-01-07")
    assert item(p, "alpha:ydrug@9").date == D("2026-01-13")
    assert item(p, "alpha:ydrug@10").date == D("2026-01-16")


@pytest.mark.parametrize("to", ["2026-01-12", "2026-01-13"])
def test_delay_scope_item_onto_or_past_the_next_occurrence_is_refused(to: str) -> None:
    """Regression: xdrug@4 (01-08) delayed past xdrug@8 (01-12) swapped the slot's occurrences."""
    assert refused([*ALPHA, delayed("alpha:xdrug@4", "2026-01-07", to, "item")], "2026-01-07") == [
        ("events[1].to", f"{to} is on or after the next Xdrug (2026-01-12): delay with scope element to move the "
                         "later doses too")]


def test_delay_scope_item_up_to_the_day_before_the_next_occurrence() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@4", "2026-01-07", "2026-01-11", "item")], as_of="2026-01-07")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-11", "2026-01-12"]


def test_delay_during_a_hold_lands_on_its_date() -> None:
    """Regression: the delay landed on ``to`` plus the hold's length (01-17)."""
    events = [*ALPHA, held("alpha", "2026-01-08")]
    # As of 01-09 the hold is projected to end on 01-10: xdrug@8 is shown on 01-14 ...
    assert item(plan(events, as_of="2026-01-09"), "alpha:xdrug@8").date == D("2026-01-14")
    # ... the coordinator delays it to 01-15.
    p = plan([*events, delayed("alpha:xdrug@8", "2026-01-09", "2026-01-15", "item")], as_of="2026-01-09")
    assert item(p, "alpha:xdrug@8").date == D("2026-01-15")


def test_a_delay_recorded_during_a_hold_does_not_overtake_the_held_items() -> None:
    """Regression: the same delay (xdrug@8 to 01-15, recorded on 01-09) with the hold still open
    on 01-20: xdrug@4 was projected to 01-21 while xdrug@8 stayed pinned on 01-15, inside the
    hold, before xdrug@4 and 'overdue'. A delay recorded during a hold is relative to the plan as
    shown then (the hold ending on 01-10, two days); the hold lasting 13 days moves it 11 more."""
    p = plan([*ALPHA, held("alpha", "2026-01-08"), delayed("alpha:xdrug@8", "2026-01-09", "2026-01-15", "item")],
             as_of="2026-01-20")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-21", "2026-01-26"]
    assert item(p, "alpha:xdrug@8").status == "held"
    # Resumed on 01-12 (four days, two more than shown): 01-15 moves two more days.
    p = plan([*ALPHA, held("alpha", "2026-01-08"), delayed("alpha:xdrug@8", "2026-01-09", "2026-01-15", "item"),
              resumed("alpha", "2026-01-12")], as_of="2026-01-12")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-12", "2026-01-17"]
    # Resumed on 01-10, as the plan showed: the delayed date stands.
    p = plan([*ALPHA, held("alpha", "2026-01-08"), delayed("alpha:xdrug@8", "2026-01-09", "2026-01-15", "item"),
              resumed("alpha", "2026-01-10")], as_of="2026-01-12")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-10", "2026-01-15"]


@pytest.mark.parametrize("to", ["2026-01-13", "2026-01-14"])
def test_a_delay_during_a_hold_must_move_the_item_later_than_shown(to: str) -> None:
    # Held from 01-06; as of 01-07 the plan shows xdrug@8 on 01-14 (resumption projected on
    # 01-08). A "delay" to 01-13 or 01-14 is accepted because it is after the date before the
    # hold (01-12): the first moves the item earlier than shown.
    events = [*ALPHA, held("alpha", "2026-01-06")]
    assert item(plan(events, as_of="2026-01-07"), "alpha:xdrug@8").date == D("2026-01-14")
    with pytest.raises(PatientError):
        plan([*events, delayed("alpha:xdrug@8", "2026-01-07", to, "item")], as_of="2026-01-07")


@pytest.mark.parametrize("to", ["2026-01-15", "2026-01-16"])
def test_a_delay_during_a_hold_keeps_the_slot_order_after_the_resumption(to: str) -> None:
    # Held from 01-06, xdrug@8 delayed on 01-07 to 01-15/01-16 (the plan showed it on 01-14);
    # resumed on 01-13 (7 days, 5 more than shown): xdrug@4 moves 01-08 -> 01-15 and xdrug@8
    # moves 5 more days, so day 8 stays after day 4 (it used to keep its date: Xdrug twice on
    # 01-15, or in reverse order).
    p = plan([*ALPHA, held("alpha", "2026-01-06"), delayed("alpha:xdrug@8", "2026-01-07", to, "item"),
              resumed("alpha", "2026-01-13")], as_of="2026-01-13")
    assert item(p, "alpha:xdrug@4").date == D("2026-01-15")
    assert item(p, "alpha:xdrug@8").date > D("2026-01-15")


def test_a_delay_recorded_before_the_hold_on_the_same_day_moves_with_it() -> None:
    """Regression: recorded before the hold (events[1], then the hold events[2], both on 01-08),
    the delayed items (Ydrug days 8-10 on 01-14..16) stayed put while the earlier ones moved 5
    days (as of 01-12): ydrug@6 (01-15) and ydrug@7 (01-16) came after ydrug@8 (01-14)."""
    p = plan([*ALPHA, delayed("alpha:xdrug@8", "2026-01-08", "2026-01-14", "element"), held("alpha", "2026-01-08")],
             as_of="2026-01-12")
    assert dates(p, "alpha", "ydrug") == [*_days("2026-01-05", "2026-01-07"), *_days("2026-01-13", "2026-01-16"),
                                          *_days("2026-01-19", "2026-01-21")]
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-13", "2026-01-19"]


@pytest.mark.parametrize("record", [given("alpha:ydrug@4", "2026-01-07"),
                                    omitted("alpha:ydrug@4", "2026-01-07", "planned omission")],
                         ids=["given-early", "omitted-ahead"])
def test_delay_scope_element_past_a_recorded_later_occurrence_is_refused(record: dict[str, Any]) -> None:
    # On 01-07 Ydrug day 4 (due 01-08) is recorded (given early, or omitted ahead), then day 3
    # (01-07) is delayed 2 days with scope element: the recorded day 4 stays on 01-08 and day 3
    # lands after it on 01-09 (the same move with scope item is refused: "on or after the next").
    with pytest.raises(PatientError):
        plan([*ALPHA, record, delayed("alpha:ydrug@3", "2026-01-07", "2026-01-09", "element")], as_of="2026-01-07")


def test_delay_of_the_last_maintenance_dose_is_not_refused_for_an_item_past_the_end() -> None:
    # After a 2-day element delay, Mdrug day 90 is the last one on the plan (05-24, the end of
    # therapy); days 91-92 (05-25, 05-26) are dropped. Delaying day 90 by one day (scope item)
    # is refused: "2026-05-25 is on or after the next Mdrug (2026-05-25)", an item not on the
    # plan. Delaying the very last dose past the end otherwise drops it (see below).
    p = plan([*WALK, delayed("maint:mdrug@10", "2026-03-01", "2026-03-05", "element"),
              delayed("maint:mdrug@90", "2026-03-01", "2026-05-25", "item")], as_of="2026-03-01")
    assert dates(p, "maint", "mdrug")[-1] == "2026-05-23"


def test_delay_of_the_last_maintenance_dose_past_the_end_drops_it() -> None:
    p = plan([*WALK, delayed("maint:mdrug@92", "2026-03-01", "2026-05-25", "item")], as_of="2026-03-01")
    assert [i.ref for i in p.items if i.slot.key == "mdrug"][-1] == "maint:mdrug@91"
    assert "dropped" in span(p, "maint").note


# --------------------------------------------------------------------------- dose modifications


def test_dose_modified_item_scope() -> None:
    p = plan([*ALPHA, modified("alpha:xdrug@4", "2026-01-06", 75)], as_of="2026-01-06")
    x = item(p, "alpha:xdrug@4")
    assert x.dose.amount == 37.5 and x.dose.text == "37.5 mg per dose, one dose on the day"
    assert x.note == "dose 75 % of standard (toxicity)"
    assert x.dose.working.endswith("× 75 % (toxicity, 2026-01-06) = 37.5 mg")
    assert x.dose.to_dict()["percent"] == 75
    assert item(p, "alpha:xdrug@8").dose.amount == 50.0
    assert item(p, "alpha:xdrug@1").dose.amount == 50.0


def test_dose_modified_element_scope_applies_to_the_later_doses_of_that_drug_only() -> None:
    p = plan([*ALPHA, modified("alpha:xdrug@4", "2026-01-06", 75, scope="element")], as_of="2026-01-06")
    assert [item(p, f"alpha:xdrug@{d}").dose.amount for d in (1, 4, 8)] == [50.0, 37.5, 37.5]
    assert {i.dose.amount for i in p.items if i.slot.key == "ydrug"} == {10.0}
    assert item(p, "gamma:zdrug@1").dose.amount == 5.0  # not beyond the element


def test_dose_modified_of_previous_compounds() -> None:
    p = plan([*ALPHA, modified("alpha:xdrug@1", "2026-01-05", 80, scope="element"),
              modified("alpha:xdrug@4", "2026-01-06", 50, of="previous", scope="element")], as_of="2026-01-06")
    assert [item(p, f"alpha:xdrug@{d}").dose.amount for d in (1, 4, 8)] == [40.0, 20.0, 20.0]
    assert item(p, "alpha:xdrug@8").note == "dose 80 % of standard (toxicity); dose 40 % of standard (toxicity)"


def test_dose_modified_of_previous_without_earlier_modification_is_of_standard() -> None:
    p = plan([*ALPHA, modified("alpha:xdrug@4", "2026-01-06", 60, of="previous")], as_of="2026-01-06")
    assert item(p, "alpha:xdrug@4").dose.amount == 30.0


def test_dose_modified_of_previous_is_the_immediately_previous_dose() -> None:
    """Regression: 'of previous' took the last *modified* dose (xdrug@1's 80 %: 20 mg).

    xdrug@1 at 80 % (this item only), xdrug@4 at the standard 50 mg: 50 % of the previous dose
    of xdrug@8 is 50 % of 50 mg = 25 mg."""
    p = plan([*ALPHA, modified("alpha:xdrug@1", "2026-01-05", 80),
              modified("alpha:xdrug@8", "2026-01-06", 50, of="previous")], as_of="2026-01-06")
    assert item(p, "alpha:xdrug@4").dose.amount == 50.0
    assert item(p, "alpha:xdrug@8").dose.amount == 25.0


def test_given_above_a_modified_dose_is_a_deviation_above_standard_is_refused() -> None:
    events = [*ALPHA, modified("alpha:xdrug@4", "2026-01-06", 50, scope="element")]
    p = plan([*events, given("alpha:xdrug@4", "2026-01-08", dose=30)], as_of="2026-01-08")
    assert item(p, "alpha:xdrug@4").note == "dose 50 % of standard (toxicity); given on 2026-01-08: 30 mg"
    assert [d for d in p.deviations if d["kind"] == "dose_above_plan"] == [
        {"date": "2026-01-08", "element": "alpha", "item": "alpha:xdrug@4", "kind": "dose_above_plan",
         "message": "Xdrug given 30 mg, above the modified dose 25 mg (+5 % tolerance (placeholder))"}]
    # exactly the modified dose: no deviation; exactly the standard: a deviation, not an error
    p = plan([*events, given("alpha:xdrug@4", "2026-01-08", dose=25)], as_of="2026-01-08")
    assert [d for d in p.deviations if d["kind"] == "dose_above_plan"] == []
    p = plan([*events, given("alpha:xdrug@4", "2026-01-08", dose=50)], as_of="2026-01-08")
    assert [d["item"] for d in p.deviations if d["kind"] == "dose_above_plan"] == ["alpha:xdrug@4"]
    [(field, message)] = refused([*events, given("alpha:xdrug@4", "2026-01-08", dose=52.6)], "2026-01-08")
    assert field == "events[2].dose"
    assert message.startswith("expected at most the standard dose 50 mg + 5 % tolerance") and message.endswith(
        "got 52.6")


@pytest.mark.parametrize(("dose", "kinds"), [(47.5, []), (52.5, []), (47.4, ["dose_below_plan"])])
def test_a_given_dose_within_the_tolerance_is_the_dose(dose: float, kinds: list[str]) -> None:
    """The pharmacy rounds: within ±5 % (a placeholder tolerance) of the computed 50 mg is no
    deviation; below it, a deviation (dose_below_plan); above the standard beyond it, refused."""
    p = plan([*ALPHA, given("alpha:xdrug@1", "2026-01-05", dose=dose)], as_of="2026-01-06")
    assert [d["kind"] for d in p.deviations if d["kind"].startswith("dose_")] == kinds
    if kinds:
        assert p.deviations[0]["message"] == ("Xdrug given 47.4 mg, below the planned dose 50 mg "
                                              "(−5 % tolerance (placeholder))")


def test_dose_modified_on_an_item_already_given_is_refused() -> None:
    """Regression: given 50 mg on 01-05, a later 50 % modification of that item changed the
    plan's dose of the given item to 25 mg."""
    assert refused([*ALPHA, given("alpha:xdrug@1", "2026-01-05", dose=50), modified("alpha:xdrug@1", "2026-01-06", 50)],
                   "2026-01-06") == [
        ("events[2].item", "alpha:xdrug@1 is already recorded as given: its dose cannot be modified")]


def test_dose_modified_element_scope_skips_items_already_given() -> None:
    p = plan([*ALPHA, given("alpha:xdrug@1", "2026-01-05", dose=50),
              modified("alpha:xdrug@1", "2026-01-06", 50, scope="element")], as_of="2026-01-06")
    assert [item(p, f"alpha:xdrug@{d}").dose.amount for d in (1, 4, 8)] == [50.0, 25.0, 25.0]


# --------------------------------------------------------------------------- holds


def test_hold_and_resume_move_later_items_and_the_end() -> None:
    p = plan([*ALPHA, held("alpha", "2026-01-08"), resumed("alpha", "2026-01-11")], as_of="2026-01-11")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-11", "2026-01-15"]
    assert dates(p, "alpha", "ydrug") == [*_days("2026-01-05", "2026-01-07"), *_days("2026-01-11", "2026-01-17")]
    x = item(p, "alpha:xdrug@4")
    assert (x.element_day, x.study_day, x.status) == (4, 7, "planned")
    assert x.note == "moved 3 days by the hold from 2026-01-08"
    assert spans(p) == {"alpha": ("2026-01-05", "2026-01-19"), "blina": ("2026-01-20", "2026-02-17"),
                        "gamma": ("2026-02-18", "2026-02-24"), "maint": ("2026-02-25", "2026-05-24")}
    assert span(p, "alpha").note == "on hold from 2026-01-08 to 2026-01-11: later items and the end move 3 days"
    assert p.warnings == []


def test_unresumed_hold_is_projected_to_resume_the_day_after_as_of() -> None:
    p = plan([*ALPHA, held("alpha", "2026-01-08")], as_of="2026-01-10")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-11", "2026-01-15"]
    later = [i for i in p.items if i.element == "alpha" and i.date >= D("2026-01-11")]
    assert later and {i.status for i in later} == {"held"}
    assert {i.status for i in p.items if i.element == "blina"} == {"planned"}
    note = "on hold from 2026-01-08; dates assume it resumes on 2026-01-11: later items and the end move 3 days"
    assert span(p, "alpha").note == note
    assert p.warnings == [f"alpha: {note}"]
    assert spans(p)["blina"] == ("2026-01-20", "2026-02-17")
    # a day later, still held: everything moves one more day
    p = plan([*ALPHA, held("alpha", "2026-01-08")], as_of="2026-01-11")
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-12", "2026-01-16"]
    assert spans(p)["blina"] == ("2026-01-21", "2026-02-18")


def test_a_hold_does_not_move_items_past_an_occurrence_recorded_ahead() -> None:
    # Ydrug day 9 (01-13) omitted ahead on 01-06; held 01-08..01-11: days 4-8 and 10 move 3 days
    # (day 8 to 01-15) while the omitted day 9 stays on 01-13, before days 7 and 8.
    p = plan([*ALPHA, omitted("alpha:ydrug@9", "2026-01-06", "planned omission"), held("alpha", "2026-01-08"),
              resumed("alpha", "2026-01-11")], as_of="2026-01-11")
    yd = sorted((i.element_day, i.date) for i in p.items if i.slot.key == "ydrug")
    assert [d for _, d in yd] == sorted(d for _, d in yd), yd


def test_hold_in_maintenance_shortens_it() -> None:
    p = plan([*WALK, held("maint", "2026-03-02"), resumed("maint", "2026-03-12")], as_of="2026-03-12")
    assert p.end_of_therapy == EOT and span(p, "maint").planned_end == EOT
    md = dates(p, "maint", "mdrug")
    assert md[:9] == [*_days("2026-02-22", "2026-03-01"), "2026-03-12"]
    assert len(md) == 82 and md[-1] == "2026-05-24"  # days 1-8, then 9-82 from 03-12
    assert dates(p, "maint", "wdrug") == ["2026-02-22", "2026-03-01", *_days("2026-03-18", "2026-05-20", 7)]


def test_element_completed_while_held_is_no_longer_on_hold() -> None:
    """Regression: held 01-08 and completed 01-16 without resumption, the plan warned "dates
    assume it resumes on 2026-01-21", planned alpha's end on 01-29 and dropped the items after
    the hold."""
    p = plan([*ALPHA, held("alpha", "2026-01-08"), completed("alpha", "2026-01-16")], as_of="2026-01-20")
    assert p.warnings == []
    assert span(p, "alpha").planned_end == D("2026-01-16")
    assert span(p, "alpha").note == "on hold from 2026-01-08 until its recorded end on 2026-01-16"
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-08", "2026-01-12"]
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-14")


# --------------------------------------------------------------------------- blinatumomab


def _infusion_days(p: protocol.Plan) -> list[str]:
    return dates(p, "blina", "blinatumomab")


def test_short_interruption_continues_to_28_infusion_days() -> None:
    p = plan([*BLINA, interrupted("2026-01-20"), infusion_resumed("2026-01-23")], as_of="2026-01-23")
    days = _infusion_days(p)
    assert len(days) == 28
    assert days == [*_days("2026-01-17", "2026-01-19"), *_days("2026-01-23", "2026-02-16")]
    assert [i.element_day for i in p.items if i.slot.key == "blinatumomab"] == list(range(1, 29))
    assert item(p, "blina:blinatumomab@4").study_day == 19
    assert item(p, "blina:b15@15").date == D("2026-02-03")
    assert item(p, "blina:b29@29").date == D("2026-02-17")
    # bag changes restart on the resume day, every 48 h, to the infusion's last day
    assert dates(p, "blina", "blinatumomab_bag") == ["2026-01-17", "2026-01-19", *_days("2026-01-23", "2026-02-16", 2)]
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-17")
    assert spans(p)["gamma"] == ("2026-02-18", "2026-02-24")
    assert span(p, "blina").note == ("infusion interrupted from 2026-01-20 to 2026-01-23 (3 days, at most 7): the "
                                     "cycle continues to 28 infusion days; its end moves 3 days")


def test_interruption_of_exactly_7_days_still_continues() -> None:
    p = plan([*BLINA, interrupted("2026-01-20"), infusion_resumed("2026-01-27")], as_of="2026-01-27")
    assert _infusion_days(p) == [*_days("2026-01-17", "2026-01-19"), *_days("2026-01-27", "2026-02-20")]
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-21")
    assert [i for i in p.items if i.slot.key == "premed"] == [item(p, "blina:premed@1")]


def test_interruption_over_7_days_starts_a_new_cycle() -> None:
    p = plan([*BLINA, interrupted("2026-01-20"), infusion_resumed("2026-01-28")], as_of="2026-01-28")
    days = _infusion_days(p)
    # the three days given before the interruption stay; a whole new 28-day cycle from 01-28
    assert days == [*_days("2026-01-17", "2026-01-19"), *_days("2026-01-28", "2026-02-24")]
    assert [i.element_day for i in p.items if i.slot.key == "blinatumomab"] == [1, 2, 3, *range(1, 29)]
    assert dates(p, "blina", "premed") == ["2026-01-17", "2026-01-28"]
    assert dates(p, "blina", "b15") == ["2026-02-11"] and dates(p, "blina", "b29") == ["2026-02-25"]
    assert dates(p, "blina", "blinatumomab_bag") == ["2026-01-17", "2026-01-19", *_days("2026-01-28", "2026-02-23", 2)]
    new = [i for i in p.items if i.element == "blina" and i.date >= D("2026-01-28")]
    assert {i.note for i in new} == {"new cycle after a 8-day interruption"}
    assert next(i for i in new if i.slot.key == "blinatumomab").study_day == 24
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-25")
    assert spans(p)["gamma"] == ("2026-02-26", "2026-03-04")
    assert span(p, "blina").note == ("infusion interrupted from 2026-01-20 to 2026-01-28 (8 days, more than 7): a new "
                                     "cycle starts on 2026-01-28")


def test_unresumed_interruption_is_projected_to_resume_after_as_of() -> None:
    p = plan([*BLINA, interrupted("2026-01-20")], as_of="2026-01-22")
    assert _infusion_days(p) == [*_days("2026-01-17", "2026-01-19"), *_days("2026-01-23", "2026-02-16")]
    assert p.warnings == ["blina: infusion interrupted from 2026-01-20; dates assume it resumes on 2026-01-23 (3 days, "
                          "at most 7): the cycle continues to 28 infusion days; its end moves 3 days"]
    # as of 01-28 the projected resumption (01-29) is 9 days after: a new cycle
    p = plan([*BLINA, interrupted("2026-01-20")], as_of="2026-01-28")
    assert _infusion_days(p) == [*_days("2026-01-17", "2026-01-19"), *_days("2026-01-29", "2026-02-25")]
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-26")


def test_two_short_interruptions_add_up() -> None:
    p = plan([*BLINA, interrupted("2026-01-20"), infusion_resumed("2026-01-22"), interrupted("2026-01-25"),
              infusion_resumed("2026-01-26")], as_of="2026-01-26")
    days = _infusion_days(p)
    assert len(days) == 28
    assert days[:8] == ["2026-01-17", "2026-01-18", "2026-01-19", "2026-01-22", "2026-01-23", "2026-01-24",
                        "2026-01-26", "2026-01-27"]
    assert days[-1] == "2026-02-16"
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-17")


@pytest.mark.parametrize(("hours", "step", "count"), [(24, 1, 28), (48, 2, 14), (72, 3, 10), (96, 4, 7)])
def test_bag_hours_at_start(hours: int, step: int, count: int) -> None:
    events = [*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17", bag_hours=hours)]
    p = plan(events, as_of="2026-01-17")
    bags = [i for i in p.items if i.slot.key == "blinatumomab_bag"]
    assert [i.date.isoformat() for i in bags] == _days("2026-01-17", "2026-02-13", step)
    assert len(bags) == count
    assert [i.element_day for i in bags] == list(range(1, 29, step))
    assert {i.name for i in bags} == {f"Blinatumomab bag ({hours} h)"}
    assert {i.status for i in bags} == {"planned"}


def test_seven_day_bag_just_under_22_kg_is_refused() -> None:
    events = [*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17", bag_hours=168)]
    assert refused(events, "2026-01-17", birth_date="2020-01-01",
                   measurements=[{"date": "2026-01-05", "height_cm": 115, "weight_kg": 21.9}]) == [
        ("events[2].bag_hours", "a 168 h bag is not for patients under 22 kg (label), got 21.9 kg on 2026-01-05")]


def test_seven_day_bag_from_22_kg() -> None:
    events = [*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17", bag_hours=168)]
    p = plan(events, as_of="2026-01-17", birth_date="2020-01-01",
             measurements=[{"date": "2026-01-05", "height_cm": 115, "weight_kg": 22}])
    assert dates(p, "blina", "blinatumomab_bag") == ["2026-01-17", "2026-01-24", "2026-01-31", "2026-02-07"]


def test_bag_hours_chosen_on_resumption_apply_from_the_resume_day() -> None:
    events = [*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17", bag_hours=72),
              interrupted("2026-01-20"), infusion_resumed("2026-01-23", bag_hours=24)]
    p = plan(events, as_of="2026-01-23")
    assert dates(p, "blina", "blinatumomab_bag") == ["2026-01-17", *_days("2026-01-23", "2026-02-16")]


def test_bag_hours_chosen_on_resumption_keep_the_earlier_default_bags() -> None:
    """Regression: default 48 h bags ran on 01-17 and 01-19; from 01-23, 96 h bags. The 01-19
    bag disappeared (the 96 h choice was applied to the whole element first)."""
    p = plan([*BLINA, interrupted("2026-01-20"), infusion_resumed("2026-01-23", bag_hours=96)], as_of="2026-01-23")
    assert dates(p, "blina", "blinatumomab_bag") == ["2026-01-17", "2026-01-19", *_days("2026-01-23", "2026-02-16", 4)]


def test_rebagged_changes_after_an_interruption_are_planned() -> None:
    """Regression: the first bag recorded as given, every re-planned bag change after a 3-day
    interruption, all in the future, showed as 'given' too."""
    p = plan([*BLINA, given("blina:blinatumomab_bag@1", "2026-01-17"), interrupted("2026-01-20"),
              infusion_resumed("2026-01-23")], as_of="2026-01-23")
    future = [i for i in p.items if i.slot.key == "blinatumomab_bag" and i.date >= D("2026-01-23")]
    assert future and {i.status for i in future} == {"planned"}


def test_long_interruption_keeps_the_items_recorded_on_its_first_day() -> None:
    """Regression: day 4 of the infusion (01-20) recorded as given, the infusion stopped that
    day and resumed 8 days later: the new cycle replaced every row from 01-20, the given one
    included."""
    p = plan([*BLINA, given("blina:blinatumomab@4", "2026-01-20"), interrupted("2026-01-20"),
              infusion_resumed("2026-01-28")], as_of="2026-01-28")
    assert [i.date.isoformat() for i in p.items if i.slot.key == "blinatumomab" and i.status == "given"] == [
        "2026-01-20"]


def test_short_interruption_keeps_the_items_recorded_on_its_first_day() -> None:
    p = plan([*BLINA, given("blina:blinatumomab@4", "2026-01-20"), interrupted("2026-01-20"),
              infusion_resumed("2026-01-23")], as_of="2026-01-23")
    assert item(p, "blina:blinatumomab@4").status == "given"
    assert item(p, "blina:blinatumomab@4").date == D("2026-01-20")


def test_rebagged_changes_keep_the_element_days() -> None:
    """Regression: day 4 given on the day of a 3-day interruption, the remaining days move from
    day 5 (01-21 -> 01-24), so the resume day 01-23 has no infusion row; its bag change was
    numbered from the resume day (day 1), a second 'blina:blinatumomab_bag@1'."""
    p = plan([*BLINA, given("blina:blinatumomab@4", "2026-01-20"), interrupted("2026-01-20"),
              infusion_resumed("2026-01-23")], as_of="2026-01-23")
    bags = [i for i in p.items if i.slot.key == "blinatumomab_bag"]
    assert [i.ref for i in bags].count("blina:blinatumomab_bag@1") == 1
    assert [i.element_day for i in bags] == sorted(i.element_day for i in bags)


def test_new_cycle_bag_changes_say_why_they_moved() -> None:
    """Regression: re-planned bag changes of a new cycle (72 h bags) had no note."""
    p = plan([*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17", bag_hours=72),
              interrupted("2026-01-20"), infusion_resumed("2026-01-28")], as_of="2026-01-28")
    new = [i for i in p.items if i.element == "blina" and i.date >= D("2026-01-28")]
    assert {i.note for i in new} == {"new cycle after a 8-day interruption"}


@pytest.mark.parametrize(("resume", "as_of"), [([], "2026-01-20"), ([infusion_resumed("2026-01-23")], "2026-01-23")],
                         ids=["while-interrupted", "recorded-before-the-resumption"])
def test_a_bag_change_shown_during_an_interruption_can_be_recorded(resume: list[dict[str, Any]], as_of: str) -> None:
    # Interrupted on 01-20: the plan shows the re-planned bag changes ('blina:blinatumomab_bag@4'
    # on the resume day). Recording that item (omitted, decided on 01-20) is refused: "Blinatumomab
    # bag (48 h) is not planned on day 4 of blina (its days: 1-28/2)"; events dated before the
    # resumption are matched against the bags as they were before the re-planning.
    events = [*BLINA, interrupted("2026-01-20"), *resume]
    assert "blina:blinatumomab_bag@4" in [i.ref for i in plan(events, as_of=as_of).items]
    p = plan([*events, omitted("blina:blinatumomab_bag@4", "2026-01-20", "not needed")], as_of=as_of)
    assert item(p, "blina:blinatumomab_bag@4").status == "omitted"


def test_hold_of_the_blinatumomab_element_moves_its_bags() -> None:
    p = plan([*BLINA, held("blina", "2026-01-20"), resumed("blina", "2026-01-22")], as_of="2026-01-22")
    assert dates(p, "blina", "blinatumomab_bag")[:3] == ["2026-01-17", "2026-01-19", "2026-01-23"]
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-16")


# --------------------------------------------------------------------------- count gates

GATE = "ANC ≥ 0.5 ×10⁹/L and platelets ≥ 50 ×10⁹/L"


def test_gate_without_counts_projects_the_earliest_date() -> None:
    p = plan(ALPHA, as_of="2026-01-10")
    assert spans(p)["blina"] == ("2026-01-17", "2026-02-14")
    assert span(p, "blina").note == (f"starts when counts recover ({GATE}): projected on the earliest date until "
                                      "counts are recorded")


@pytest.mark.parametrize(("counts", "as_of", "start"), [
    ([count("2026-01-16", 0.6, 60)], "2026-01-16", "2026-01-17"),  # recovered on alpha's last day
    ([count("2026-01-16", 0.5, 50)], "2026-01-16", "2026-01-17"),  # thresholds are inclusive
    ([count("2026-01-16", 0.3, 60), count("2026-01-21", 0.6, 60)], "2026-01-22", "2026-01-21"),
    ([count("2026-01-18", 0.2, 20), count("2026-01-19", 0.7, 80), count("2026-01-20", 0.1, 5)], "2026-01-22",
     "2026-01-19"),  # the first recovered count counts
])
def test_gate_starts_on_recovery_or_the_planned_day_whichever_is_later(counts: list[dict[str, Any]], as_of: str,
                                                                       start: str) -> None:
    p = plan(ALPHA, as_of=as_of, counts=counts)
    assert span(p, "blina").planned_start == D(start)
    assert item(p, "blina:blinatumomab@1").date == D(start)
    first_ok = next(c for c in counts if c["anc"] >= 0.5 and c["platelets"] >= 50)
    assert span(p, "blina").note == f"counts recovered on {first_ok['date']} ({GATE})"


def test_gate_not_recovered_projects_from_the_day_after_as_of() -> None:
    p = plan(ALPHA, as_of="2026-01-20", counts=[count("2026-01-16", 0.3, 60), count("2026-01-19", 0.6, 40)])
    assert spans(p)["blina"] == ("2026-01-21", "2026-02-18")
    assert spans(p)["gamma"] == ("2026-02-19", "2026-02-25")
    assert span(p, "blina").note == (f"waiting for counts to recover ({GATE}); last count 2026-01-19: ANC 0.6, "
                                      "platelets 40 ×10⁹/L; projected from the day after 2026-01-20")


def test_gate_needs_every_threshold() -> None:
    p = plan(ALPHA, as_of="2026-01-22", counts=[{"date": "2026-01-21", "anc": 0.9}])
    assert span(p, "blina").planned_start == D("2026-01-23")


def test_gate_ignores_counts_before_the_previous_elements_last_day() -> None:
    p = plan(ALPHA, as_of="2026-01-16", counts=[count("2026-01-15", 0.9, 90)])
    assert span(p, "blina").planned_start == D("2026-01-17")
    assert "until counts are recorded" in span(p, "blina").note


def test_gate_ignores_counts_after_as_of() -> None:
    counts = [count("2026-01-16", 0.3, 60), count("2026-01-25", 0.6, 60)]
    assert span(plan(ALPHA, as_of="2026-01-20", counts=counts), "blina").planned_start == D("2026-01-21")
    assert span(plan(ALPHA, as_of="2026-01-25", counts=counts), "blina").planned_start == D("2026-01-25")


def test_gate_follows_the_previous_elements_moved_end() -> None:
    events = [*ALPHA, delayed("alpha:xdrug@8", "2026-01-07", "2026-01-14", "all")]  # alpha ends 01-18
    p = plan(events, as_of="2026-01-18", counts=[count("2026-01-17", 0.9, 90)])  # before 01-18: ignored
    assert span(p, "blina").planned_start == D("2026-01-19")
    assert "until counts are recorded" in span(p, "blina").note


def test_gate_after_an_early_completion_reads_counts_from_the_recorded_end() -> None:
    # alpha completed early on 01-12: blina is due 01-13; the count of 01-11 is before the end
    events = [*ALPHA, completed("alpha", "2026-01-12")]
    p = plan(events, as_of="2026-01-12", counts=[count("2026-01-11", 0.9, 90)])
    assert span(p, "blina").planned_start == D("2026-01-13")
    assert "until counts are recorded" in span(p, "blina").note
    p = plan(events, as_of="2026-01-12", counts=[count("2026-01-12", 0.9, 90)])
    assert span(p, "blina").note == f"counts recovered on 2026-01-12 ({GATE})"
    p = plan(events, as_of="2026-01-14", counts=[count("2026-01-12", 0.2, 90)])
    assert spans(p)["blina"] == ("2026-01-15", "2026-02-12")


def test_start_before_recovery_is_a_count_gate_deviation() -> None:
    counts = [count("2026-01-16", 0.3, 60), count("2026-01-21", 0.6, 60)]
    p = plan([*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-18")], as_of="2026-01-22",
             counts=counts)
    assert [d for d in p.deviations if d["kind"] == "count_gate"] == [
        {"date": "2026-01-18", "element": "blina", "item": None, "kind": "count_gate",
         "message": f"blina started on 2026-01-18 before counts recovered ({GATE}); last count 2026-01-16: ANC 0.3, "
                    "platelets 60 ×10⁹/L"}]
    assert span(p, "blina").actual_start == D("2026-01-18")
    assert item(p, "blina:blinatumomab@1").date == D("2026-01-18")


def test_start_after_recovery_or_without_counts_is_no_deviation() -> None:
    counts = [count("2026-01-16", 0.3, 60), count("2026-01-21", 0.6, 60)]
    p = plan([*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-22")], as_of="2026-01-22",
             counts=counts)
    assert p.deviations == []
    p = plan([*ALPHA, completed("alpha", "2026-01-16"), started("blina", "2026-01-17")], as_of="2026-01-22")
    assert p.deviations == []


def test_gate_with_unknown_threshold_projects_the_earliest_date_with_a_note() -> None:
    p = plan(BLINA, as_of="2026-01-20", counts=[count("2026-02-14", 0.0, 0.0)])  # counts after as_of anyway
    assert spans(p)["gamma"] == ("2026-02-15", "2026-02-21")
    assert span(p, "gamma").note == ("starts when counts recover (ANC ≥ ? ×10⁹/L (not specified)): the thresholds are "
                                      "not specified in the definition (placeholder); projected on the earliest date")
    p = plan([*BLINA, completed("blina", "2026-02-14")], as_of="2026-02-20", counts=[count("2026-02-14", 0.0, 0.0)])
    assert span(p, "gamma").planned_start == D("2026-02-15")
    p = plan([*BLINA, completed("blina", "2026-02-14"), started("gamma", "2026-02-15")], as_of="2026-02-20",
             counts=[count("2026-02-14", 0.0, 0.0)])
    assert p.deviations == []


# --------------------------------------------------------------------------- doses and weight


M0 = {"date": "2026-01-05", "height_cm": 80, "weight_kg": 11.25}


def _xdoses(p: protocol.Plan) -> list[float]:
    return [item(p, f"alpha:xdrug@{d}").dose.amount for d in (1, 4, 8)]


# 80 cm: 12.5 kg -> sqrt(1000 / 3600) = 0.527046 m², 100 mg/m² = 52.7046 -> 52.7 mg;
#        10 kg   -> sqrt(800 / 3600)  = 0.471405 m², 100 mg/m² = 47.1405 -> 47.1 mg.
@pytest.mark.parametrize(("weight", "bsa", "amount", "change"), [(12.5, "0.527", 52.7, "+11%"),
                                                                 (10, "0.471", 47.1, "-11%")])
def test_weight_change_over_10_percent_recomputes_within_the_element(weight: float, bsa: str, amount: float,
                                                                     change: str) -> None:
    p = plan(ALPHA, as_of="2026-01-10", measurements=[M0, {"date": "2026-01-07", "height_cm": 80, "weight_kg": weight}])
    assert _xdoses(p) == [50.0, amount, amount]
    assert item(p, "alpha:xdrug@4").dose.working == (f"100 mg/m² × {bsa} m² = {amount:g} mg (BSA Mosteller, "
                                                     f"80 cm, {weight:g} kg on 2026-01-07)")
    assert [d for d in p.deviations if d["kind"] == "weight_change"] == [
        {"date": "2026-01-07", "element": "alpha", "item": None, "kind": "weight_change",
         "message": f"weight {weight:g} kg on 2026-01-07 is {change} from the 11.25 kg of 2026-01-05 used for the "
                    "doses: doses recomputed from 2026-01-07"}]


def test_weight_change_under_10_percent_keeps_the_doses() -> None:
    p = plan(ALPHA, as_of="2026-01-10", measurements=[M0, {"date": "2026-01-07", "height_cm": 80, "weight_kg": 11.9}])
    assert _xdoses(p) == [50.0, 50.0, 50.0]
    assert p.deviations == [d for d in p.deviations if d["kind"] != "weight_change"]


@pytest.mark.parametrize("weight", [12.375, 10.125])
def test_weight_change_of_exactly_10_percent_keeps_the_doses(weight: float) -> None:
    """Regression: 9 kg -> 9.9 kg is +10 %, not more than 10 %, but abs(9.9 - 9) =
    0.9000000000000004 > 0.9 recomputed the doses (here 11.25 kg -> 12.375 and 10.125)."""
    p = plan(ALPHA, as_of="2026-01-10", measurements=[M0, {"date": "2026-01-07", "height_cm": 80, "weight_kg": weight}])
    assert _xdoses(p) == [50.0, 50.0, 50.0]
    assert [d for d in p.deviations if d["kind"] == "weight_change"] == []


def test_weight_change_is_measured_from_the_weight_in_use() -> None:
    # 11.25 -> 12.25 (+8.9 %, kept) -> 12.5 (+11 % from the 11.25 kg in use): recomputed from the third.
    p = plan(ALPHA, as_of="2026-01-10", measurements=[M0, {"date": "2026-01-06", "height_cm": 80, "weight_kg": 12.25},
                                                     {"date": "2026-01-09", "height_cm": 80, "weight_kg": 12.5}])
    assert _xdoses(p) == [50.0, 50.0, 52.7]
    assert [d["message"] for d in p.deviations if d["kind"] == "weight_change"] == [
        "weight 12.5 kg on 2026-01-09 is +11% from the 11.25 kg of 2026-01-05 used for the doses: doses recomputed "
        "from 2026-01-09"]


def test_doses_are_recomputed_at_each_element_start_from_the_measurement_in_force() -> None:
    ms = [M0, {"date": "2026-02-01", "height_cm": 80, "weight_kg": 11.9}]  # +5.8 %, during blina
    p = plan(WALK[:5], as_of="2026-02-15", measurements=ms)
    assert item(p, "blina:blinatumomab@28").dose.amount == 7.5  # not recomputed within blina
    z = item(p, "gamma:zdrug@1")
    assert z.dose.amount == 5.14  # 10 mg/m² × sqrt(80 × 11.9 / 3600) = 10 × 0.514242 = 5.14242
    assert "11.9 kg on 2026-02-01" in z.dose.working
    assert p.deviations == []


def test_the_exact_standard_dose_may_be_given() -> None:
    # Regression: 17.14 kg, 100 cm gave 15 × 0.69 = 10.35 µg/day shown as "10.3" (10.35 is
    # 10.3499999... in binary) and recording 10.35 was refused. Now: 80 cm, 11.7 kg:
    # 15 × sqrt(936 / 3600) = 15 × 0.509902 = 7.64853 -> 7.65 µg/day, the dose shown and allowed.
    ms = [{"date": "2026-01-05", "height_cm": 80, "weight_kg": 11.7}]
    p = plan([*BLINA, given("blina:blinatumomab@1", "2026-01-17", dose=7.65)], as_of="2026-01-17", measurements=ms)
    assert item(p, "blina:blinatumomab@1").dose.amount == 7.65
    assert item(p, "blina:blinatumomab@1").status == "given"


@pytest.mark.parametrize(("events", "weight"), [
    ([*ALPHA, given("alpha:xdrug@4", "2026-01-08", dose=50)], 10),  # a > 10 % change on the day of the dose
    ([started("alpha", "2026-01-06"), given("alpha:xdrug@1", "2026-01-06", dose=50)], 10.625),  # the start day
], ids=["weight-change", "element-start"])
def test_a_later_measurement_does_not_invalidate_a_recorded_dose(events: list[dict[str, Any]], weight: float) -> None:
    """Regression: 50 mg is the planned dose when it is given; the child is weighed the same day
    afterwards. The dose was re-checked against the new weight (47 / 49 mg) and the whole plan
    refused (PatientError: events[1].dose above the standard dose): the weight could not be
    recorded."""
    date = events[-1]["date"]
    p = plan(events, as_of="2026-01-09", measurements=[M0, {"date": date, "height_cm": 80, "weight_kg": weight}])
    assert item(p, events[-1]["item"]).status == "given"


def test_a_measurement_the_day_after_a_dose_does_not_touch_it() -> None:
    p = plan([*ALPHA, given("alpha:xdrug@4", "2026-01-08", dose=50)], as_of="2026-01-09",
             measurements=[M0, {"date": "2026-01-09", "height_cm": 80, "weight_kg": 10}])
    assert item(p, "alpha:xdrug@4").status == "given"
    assert item(p, "alpha:xdrug@8").dose.amount == 47.1  # 100 mg/m² × sqrt(800 / 3600) = 47.1405


def test_measurements_after_as_of_are_ignored() -> None:
    ms = [M0, {"date": "2026-01-07", "height_cm": 80, "weight_kg": 12.5}]
    assert _xdoses(plan(ALPHA, as_of="2026-01-06", measurements=ms)) == [50.0, 50.0, 50.0]


# --------------------------------------------------------------------------- recorded history is kept


def test_item_given_early_survives_an_early_completion() -> None:
    """Regression: xdrug@8 (due 01-12, window -1) given on 01-11 and alpha completed the same
    day: the given item disappeared from the plan."""
    p = plan([*ALPHA, given("alpha:xdrug@8", "2026-01-11"), completed("alpha", "2026-01-11")], as_of="2026-01-12")
    assert item(p, "alpha:xdrug@8").status == "given"


def test_events_after_as_of_do_not_count() -> None:
    events = [*ALPHA, given("alpha:xdrug@4", "2026-01-08"), delayed("alpha:xdrug@8", "2026-01-09", "2026-01-13", "all"),
              held("alpha", "2026-01-10")]
    p = plan(events, as_of="2026-01-07")
    assert item(p, "alpha:xdrug@4").status == "planned"
    assert dates(p, "alpha", "xdrug") == ["2026-01-05", "2026-01-08", "2026-01-12"]
    assert p.warnings == [] and spans(p)["alpha"] == ("2026-01-05", "2026-01-16")
    p = plan(events, as_of="2026-01-09")
    assert item(p, "alpha:xdrug@4").status == "given"
    assert spans(p)["alpha"] == ("2026-01-05", "2026-01-17")


def test_csv_has_ref_and_note() -> None:
    p = plan([*ALPHA, delayed("alpha:xdrug@4", "2026-01-07", "2026-01-10", "item")], as_of="2026-01-07")
    rows = list(csv.DictReader(io.StringIO(p.to_csv())))
    x = next(r for r in rows if r["ref"] == "alpha:xdrug@4")
    assert (x["date"], x["element_day"], x["study_day"], x["note"]) == ("2026-01-10", "4", "6",
                                                                       "delayed 2 days on 2026-01-07: low counts")


def test_statuses_are_from_the_documented_set() -> None:
    documented = {"given", "omitted", "done", "planned", "overdue", "unrecorded", "held", "pending_decision"}
    p = plan([*BLINA, given("blina:premed@1", "2026-01-17"), omitted("blina:blinatumomab_bag@3", "2026-01-19"),
              held("blina", "2026-01-21")], as_of="2026-01-22")
    assert {i.status for i in p.items} <= documented
    assert {"given", "omitted", "held", "done", "unrecorded"} <= {i.status for i in p.items}


# --------------------------------------------------------------------------- through the CLI (shipped protocol)

SHIPPED_PATIENT: dict[str, Any] = {
    "id": "CLI-0001", "protocol": "interfant06-blinatumomab", "birth_date": "2025-10-20", "sex": "female",
    "diagnosis_date": "2026-05-04", "kmt2a": "rearranged", "wbc_at_diagnosis": 150, "day8_blasts_per_ul": 300,
    "measurements": [{"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4}],
}
INDUCTION = [started("induction", "2026-05-04")]


def _cli_plan(tmp_path: Path, events: list[dict[str, Any]], as_of: str) -> Any:
    """Write the patient with one event per line (JSON flow style), so that events[i] is on
    line ``EVENTS_LINE + i``, and run ``protocol plan --format json``."""
    lines = [f"{k}: {json.dumps(v)}" for k, v in SHIPPED_PATIENT.items()]
    assert len(lines) + 2 == EVENTS_LINE
    lines += ["events:", *(f"  - {json.dumps(e)}" for e in events)]
    path = tmp_path / "patient.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CliRunner().invoke(app, ["plan", str(path), "--format", "json", "--as-of", as_of])


EVENTS_LINE = 11  # nine fields, then "events:" on line 10

CLI_BAD = [
    ("168 h bag", [*INDUCTION, completed("induction", "2026-06-07"), started("blinatumomab", "2026-06-08", bag_hours=168)],
     "2026-06-10", "events[2].bag_hours: a 168 h bag is not for patients under 22 kg (label), got 7.4 kg on "
     "2026-05-04"),
    ("unknown item", [*INDUCTION, given("induction:vincristine@9", "2026-05-12")], "2026-05-20",
     "events[1].item: Vincristine is not planned on day 9 of induction (its days: 8, 15, 22, 29), got "
     "'induction:vincristine@9'"),
    ("delay earlier", [*INDUCTION, delayed("induction:vincristine@15", "2026-05-12", "2026-05-17", "all")], "2026-05-20",
     "events[1].to: expected a date after the item's due date 2026-05-18 (a delay moves an item later), got "
     "2026-05-17"),
    ("dose above standard", [*INDUCTION, given("induction:vincristine@8", "2026-05-11", dose=0.6)], "2026-05-20",
     "events[1].dose: expected at most the standard dose 0.552 mg + 5 % tolerance (placeholder) = 0.58 mg "
     "(1.5 mg/m² × 0.368 m² = 0.552 mg (BSA Mosteller, 66 cm, 7.4 kg on 2026-05-04)), got 0.6"),
    ("resume without hold", [*INDUCTION, resumed("induction", "2026-05-12")], "2026-05-20",
     "events[1].type: element_resumed without an earlier element_held for induction"),
    ("element never reached", [*INDUCTION, {"type": "off_protocol", "date": "2026-05-20", "reason": "parents' choice"},
                               given("blinatumomab:dexamethasone_premedication@1", "2026-05-19")], "2026-06-20",
     "events[2].item: 'blinatumomab:dexamethasone_premedication@1' is not on this patient's plan (its element is not "
     "reached, or the patient left the protocol before it)"),
    ("given before start", [started("induction", "2026-05-05"), given("induction:prednisone@1", "2026-05-04")],
     "2026-05-20", "events[1].date: expected a date on or after the start of induction (2026-05-05), got 2026-05-04"),
    ("zero percent", [*INDUCTION, modified("induction:vincristine@8", "2026-05-10", 0)], "2026-05-20",
     "events[1]: a 0 % dose is an omission: record an item_omitted event with the reason instead"),
]


@pytest.mark.parametrize(("events", "as_of", "message"), [c[1:] for c in CLI_BAD], ids=[c[0] for c in CLI_BAD])
def test_cli_bad_item_events_exit_2(tmp_path: Path, events: list[dict[str, Any]], as_of: str, message: str) -> None:
    result = _cli_plan(tmp_path, events, as_of)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    index = int(message[len("events["):message.index("]")])
    assert result.stderr.strip() == f"error: {tmp_path / 'patient.yaml'}:{EVENTS_LINE + index}: {message}"
    assert "Traceback" not in result.output


def test_cli_plan_json_shows_a_delay_with_scope_all(tmp_path: Path) -> None:
    events = [*INDUCTION, delayed("induction:vincristine@8", "2026-05-10", "2026-05-13", "all", "ileus"),
              given("induction:vincristine@8", "2026-05-13", dose=0.5)]
    result = _cli_plan(tmp_path, events, "2026-05-20")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    vcr = next(i for i in data["items"] if i["ref"] == "induction:vincristine@8")
    assert (vcr["date"], vcr["element_day"], vcr["study_day"], vcr["status"]) == ("2026-05-13", 8, 10, "given")
    assert vcr["note"] == "delayed 2 days on 2026-05-10: ileus; given on 2026-05-13: 0.5 mg"
    elements = {e["id"]: e for e in data["elements"]}
    assert elements["induction"]["planned_end"] == "2026-06-09"  # 35 days from 05-04, plus 2
    assert elements["blinatumomab"]["planned_start"] == "2026-06-10"
    blina = next(i for i in data["items"] if i["ref"] == "blinatumomab:blinatumomab@1")
    assert blina["date"] == "2026-06-10"
    assert data["end_of_therapy"] == "2028-04-30"  # 104 weeks from diagnosis, unchanged
    assert isinstance(data["deviations"], list)


# --------------------------------------------------------------------------- premedication on restart


@pytest.fixture(scope="module")
def restart_proto(tmp_path_factory: pytest.TempPathFactory) -> protocol.Protocol:
    """The timeline definition with its premedication planned again on an infusion restart
    after an interruption of 4 h or more (the blinatumomab label's rule)."""
    import yaml

    data = yaml.safe_load(DEFINITION.read_text(encoding="utf-8"))
    blina = next(e for e in data["elements"] if e["id"] == "blina")
    premed = next(a for a in blina["administrations"] if a.get("id") == "premed")
    premed["on_infusion_restart"] = {"value": 4, "evidence": "published", "source": "test"}
    path = tmp_path_factory.mktemp("restart") / "timeline-restart.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return protocol.load_protocol(path)


@pytest.mark.parametrize(("hours", "planned"), [(None, True), (4, True), (30, True), (3.5, False)])
def test_premedication_is_planned_on_the_restart_day(restart_proto: protocol.Protocol, hours: float | None,
                                                      planned: bool) -> None:
    resume = {"type": "infusion_resumed", "element": "blina", "date": "2026-01-21"}
    if hours is not None:
        resume["interruption_hours"] = hours
    p = protocol.plan(make([*BLINA, interrupted("2026-01-20"), resume]), restart_proto, as_of=D("2026-01-21"))
    premeds = [i for i in p.items if i.slot.key == "premed"]
    assert premeds[0].date == D("2026-01-17")
    restart = [i for i in premeds if i.date == D("2026-01-21")]
    assert bool(restart) == planned
    if planned:
        [item_] = restart
        assert item_.ref == "blina:premed@5" and item_.dose is not None and item_.dose.amount == 2.5
        assert item_.note.endswith("planned again before the restart (≥ 4 h)")
        # It can be recorded like any item.
        given_ = protocol.plan(make([*BLINA, interrupted("2026-01-20"), resume,
                                     given("blina:premed@5", "2026-01-21")]), restart_proto, as_of=D("2026-01-21"))
        assert item(given_, "blina:premed@5").status == "given"


def test_interruption_hours_only_on_infusion_resumed() -> None:
    with pytest.raises(ValueError, match="takes no interruption_hours"):
        Event.model_validate({"type": "element_resumed", "element": "alpha", "date": "2026-01-21",
                                       "interruption_hours": 5})
