"""Dated plans: the three example patients, doses, recorded events, as_of, outputs."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import protocol
from protocol import Plan

D = dt.date
EOT_DAYS = 104 * 7 - 1  # the last day of therapy is diagnosis + 727 days
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "patients"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))


def plan_example(stem: str, as_of: dt.date) -> Plan:
    return protocol.plan(EXAMPLES / f"{stem}.yaml", as_of=as_of)


def example_data(stem: str) -> dict[str, Any]:
    """An example patient as plain data (dates stay strings, as the engine reads them)."""
    text = (EXAMPLES / f"{stem}.yaml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_NoDates)  # noqa: S506 - a SafeLoader subclass
    return data


class _NoDates(yaml.SafeLoader):
    pass


_NoDates.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def span(p: Plan, element: str, branch: str | None = None) -> protocol.ElementSpan:
    [s] = [e for e in p.elements if e.id == element and e.branch == branch]
    return s


def items_of(p: Plan, key: str, element: str | None = None) -> list[protocol.Item]:
    return [i for i in p.items if i.slot.key == key and (element is None or i.element == element)]


def start_of(s: protocol.ElementSpan) -> dt.date:
    start = s.actual_start or s.planned_start
    assert start is not None
    return start


# --------------------------------------------------------------------------- the examples


EXPECTED_ELEMENTS: dict[str, list[tuple[str, str, str | None]]] = {
    "mr-on-time": [
        ("induction", "completed", None),
        ("blinatumomab", "completed", None),
        ("ib", "completed", None),
        ("marma", "completed", None),
        ("octadad", "in_progress", None),
        ("maintenance", "planned", None),
    ],
    "hr-to-hsct": [
        ("induction", "completed", None),
        ("blinatumomab", "in_progress", None),
        ("ib", "planned", None),
        ("marma", "planned", None),
        ("hsct", "planned", None),
    ],
    "mr-pending-mrd": [
        ("induction", "completed", None),
        ("blinatumomab", "completed", None),
        ("ib", "completed", None),
        ("marma", "in_progress", None),
        ("hsct", "pending_decision", "pre_octadad→hsct"),
        ("octadad", "pending_decision", "pre_octadad→octadad"),
        ("maintenance", "pending_decision", "pre_octadad→octadad"),
    ],
}


def test_example_elements(example_patient: Path, as_of: dt.date) -> None:
    p = protocol.plan(example_patient, as_of=as_of)
    assert [(e.id, e.status, e.branch) for e in p.elements] == EXPECTED_ELEMENTS[example_patient.stem]
    assert p.outcome is None
    # The one expected warning: infant BSA doses without an infant rule (issue 11).
    assert [w for w in p.warnings if not w.startswith("per-m² doses planned before the first birthday")] == []


def test_example_risk_groups(as_of: dt.date) -> None:
    assert plan_example("mr-on-time", as_of).risk.group == "MR"
    assert plan_example("mr-pending-mrd", as_of).risk.group == "MR"
    hr = plan_example("hr-to-hsct", as_of).risk
    assert (hr.group, hr.status) == ("HR", "assigned")
    assert hr.reasons[0] == "HR (high risk):"


def test_mr_on_time_dates(as_of: dt.date) -> None:
    p = plan_example("mr-on-time", as_of)
    expected = {
        "induction": (D(2026, 5, 4), D(2026, 6, 7), D(2026, 5, 4), D(2026, 6, 7)),
        "blinatumomab": (D(2026, 6, 8), D(2026, 7, 6), D(2026, 6, 8), D(2026, 7, 6)),
        "ib": (D(2026, 7, 7), D(2026, 8, 4), D(2026, 7, 7), D(2026, 8, 4)),
        "marma": (D(2026, 8, 5), D(2026, 9, 22), D(2026, 8, 5), D(2026, 9, 22)),
        "octadad": (D(2026, 9, 23), D(2026, 11, 10), D(2026, 9, 23), None),
        "maintenance": (D(2026, 11, 11), D(2028, 4, 30), None, None),
    }
    got = {e.id: (e.planned_start, e.planned_end, e.actual_start, e.actual_end) for e in p.elements}
    assert got == expected


def test_mr_on_time_decision_recorded(as_of: dt.date) -> None:
    p = plan_example("mr-on-time", as_of)
    [d] = p.decisions
    assert (d.id, d.at, d.status, d.outcome, d.date) == ("pre_octadad", "marma", "recorded", "octadad",
                                                         D(2026, 9, 23))
    assert d.depends_on == ("risk_group", "mrd:pre_octadad")
    assert d.waiting_for == ()
    assert d.branches == [
        {"to": "hsct", "when": "risk group = HR or MRD at pre_octadad ≥ 5e-4", "now": False},
        {"to": "octadad", "when": "otherwise", "now": True},
    ]
    assert p.pending == []


def test_hr_to_hsct_decided(as_of: dt.date) -> None:
    p = plan_example("hr-to-hsct", as_of)
    [d] = p.decisions
    assert (d.id, d.status, d.outcome, d.date) == ("pre_octadad", "decided", "hsct", D(2026, 12, 12))
    ids = [e.id for e in p.elements]
    assert "octadad" not in ids and "maintenance" not in ids
    assert {i.element for i in p.items} == {"induction", "blinatumomab", "ib", "marma"}
    hsct = span(p, "hsct")
    assert (hsct.planned_start, hsct.planned_end) == (D(2026, 12, 12), None)
    # Blinatumomab started 3 days late: planned 2026-08-24, actual 2026-08-27; the rest follows the actual start.
    blina = span(p, "blinatumomab")
    assert (blina.planned_start, blina.actual_start, blina.planned_end) == (D(2026, 8, 24), D(2026, 8, 27),
                                                                            D(2026, 9, 24))
    assert span(p, "ib").planned_start == D(2026, 9, 25)
    assert span(p, "marma").planned_start == D(2026, 10, 24)
    assert span(p, "marma").planned_end == D(2026, 12, 11)
    assert p.end_of_therapy == D(2026, 7, 20) + dt.timedelta(days=EOT_DAYS) == D(2028, 7, 16)


def test_mr_pending_mrd_both_branches(as_of: dt.date) -> None:
    p = plan_example("mr-pending-mrd", as_of)
    [d] = p.decisions
    assert (d.id, d.status, d.outcome) == ("pre_octadad", "pending", None)
    assert list(d.waiting_for) == ["mrd:pre_octadad"]
    assert [b["now"] for b in d.branches] == [None, True]
    assert [x.id for x in p.pending] == ["pre_octadad"]
    hsct = span(p, "hsct", "pre_octadad→hsct")
    octadad = span(p, "octadad", "pre_octadad→octadad")
    assert hsct.status == octadad.status == "pending_decision"
    assert hsct.planned_start == octadad.planned_start == D(2026, 11, 4)  # the day after MARMA's last day
    branch_items = [i for i in p.items if i.branch is not None]
    assert branch_items and all(i.status == "pending_decision" for i in branch_items)
    assert {i.element for i in branch_items} == {"octadad", "maintenance"}
    assert all(i.branch == "pre_octadad→octadad" for i in branch_items)
    assert all(i.branch is None for i in p.items if i.element in ("induction", "blinatumomab", "ib", "marma"))
    # Interleaved branches are still in date order.
    assert [i.ordinal for i in p.items] == sorted(i.ordinal for i in p.items)
    d_json = d.to_dict()
    assert d_json["waiting_for"] == ["mrd:pre_octadad"] and d_json["status"] == "pending"


@pytest.mark.parametrize(("stem", "end"), [("mr-on-time", D(2028, 4, 30)), ("mr-pending-mrd", D(2028, 6, 11))])
def test_maintenance_ends_104_weeks_after_diagnosis(stem: str, end: dt.date, as_of: dt.date) -> None:
    p = plan_example(stem, as_of)
    assert p.end_of_therapy == p.patient.diagnosis_date + dt.timedelta(days=EOT_DAYS) == end
    [m] = [e for e in p.elements if e.id == "maintenance"]
    assert m.planned_end == end
    daily = items_of(p, "mercaptopurine", "maintenance")
    assert daily[-1].date == end  # daily 6-MP runs to the last day
    assert daily[0].date == m.planned_start
    assert len(daily) == (end - m.planned_start).days + 1  # every day, none twice
    weekly = items_of(p, "methotrexate_po", "maintenance")
    assert [(b.date - a.date).days for a, b in zip(weekly, weekly[1:], strict=False)] == [7] * (len(weekly) - 1)
    assert weekly[0].date == m.planned_start and weekly[-1].date <= end
    assert max(i.date for i in p.items) == end


def test_items_study_day_and_element_day(example_patient: Path, as_of: dt.date) -> None:
    p = protocol.plan(example_patient, as_of=as_of)
    t0 = p.patient.start_date
    assert p.items
    spans = {(e.id, e.branch): e for e in p.elements}
    for item in p.items:
        assert item.study_day == (item.date - t0).days + 1
        el = p.protocol.elements[item.element]
        s = spans[(item.element, item.branch)]
        start = start_of(s)
        end = s.planned_end
        assert end is not None
        assert el.first_day <= item.element_day <= el.first_day + (end - start).days
        assert item.date == start + dt.timedelta(days=item.element_day - el.first_day)
        assert start <= item.date <= end


def test_items_are_in_date_order(example_patient: Path, as_of: dt.date) -> None:
    p = protocol.plan(example_patient, as_of=as_of)
    dates = [i.date for i in p.items]
    assert dates == sorted(dates)


def test_study_day_counts_from_treatment_start(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    p = protocol.plan(make_patient(treatment_start="2026-05-06"), as_of=as_of)
    assert span(p, "induction").planned_start == D(2026, 5, 6)
    first = p.items[0]
    assert (first.date, first.study_day, first.element_day) == (D(2026, 5, 6), 1, 1)
    for item in p.items:
        assert item.study_day == (item.date - D(2026, 5, 6)).days + 1
    # The end of therapy stays anchored on the diagnosis date.
    assert p.end_of_therapy == D(2026, 5, 4) + dt.timedelta(days=EOT_DAYS)


def test_item_status_follows_elements_and_results(as_of: dt.date) -> None:
    p = plan_example("hr-to-hsct", as_of)
    assert {i.status for i in p.items if i.element == "induction"} == {"done"}
    blina = {i.slot.key: i.status for i in p.items if i.element == "blinatumomab" and i.kind == "assessment"}
    # The day-15 result is recorded; the day-29 marrow was due on 2026-09-24 and nothing is
    # recorded as of 2026-11-21: overdue, and listed as a deviation.
    assert blina == {"blina_day15_marrow": "done", "blina_day29_marrow": "overdue"}
    assert {"blinatumomab:blina_day29_marrow@29"} == {d["item"] for d in p.deviations if d["kind"] == "overdue"}
    # Past administrations of the element under way are unrecorded, later ones planned.
    infusion = {i.status for i in p.items if i.element == "blinatumomab" and i.slot.key == "blinatumomab"}
    assert infusion == {"unrecorded"}
    assert {i.status for i in p.items if i.element in ("ib", "marma")} == {"planned"}


# --------------------------------------------------------------------------- doses


def test_mosteller() -> None:
    assert protocol.mosteller(66, 7.4) == pytest.approx(0.368329, abs=1e-6)
    assert protocol.mosteller(60, 6) == pytest.approx(0.316228, abs=1e-6)
    assert protocol.mosteller(180, 80) == pytest.approx(2.0, abs=1e-12)


def test_per_m2_dose_worked_by_hand(as_of: dt.date) -> None:
    # 66 cm, 7.4 kg: Mosteller sqrt(66 × 7.4 / 3600) = 0.368330 m² (unrounded, issue 11);
    # 60 mg/m²/day × 0.368330 = 22.0998 -> 22.1 mg/day (rounded once, 3 significant figures).
    p = plan_example("mr-on-time", as_of)
    first = p.items[0]
    assert (first.date, first.element, first.name, first.kind) == (D(2026, 5, 4), "induction",
                                                                    "Prednisone (prephase)", "administration")
    dose = first.dose
    assert dose is not None
    assert dose.bsa == pytest.approx(0.3683295626, abs=1e-9)
    assert dose.standard == 60
    assert dose.exact == pytest.approx(22.09977, abs=1e-5)
    assert dose.amount == 22.1
    assert dose.text == "22.1 mg/day, once a day"
    assert dose.working == ("60 mg/m²/day × 0.368 m² = 22.1 mg/day "
                            "(BSA Mosteller, 66 cm, 7.4 kg on 2026-05-04)")
    assert dose.to_dict()["bsa_m2"] == 0.3683 and dose.to_dict()["capped"] is False
    assert [i.dose.amount for i in items_of(p, "prednisone") if i.dose] == [22.1] * 7


def test_doses_follow_the_measurement_in_force(as_of: dt.date) -> None:
    p = plan_example("mr-on-time", as_of)
    blina = items_of(p, "blinatumomab")
    assert [i.date for i in (blina[0], blina[-1])] == [D(2026, 6, 8), D(2026, 7, 5)]
    assert {i.dose.amount for i in blina if i.dose} == {5.52}  # 15 µg/m²/day × 0.368330 m² = 5.5249
    assert blina[0].dose is not None and blina[0].dose.text == "5.52 µg/day, continuous infusion"
    # 68 cm, 7.9 kg on 2026-07-06 -> sqrt(537.2 / 3600) = 0.386293 m²: protocol IB starts on 2026-07-07.
    [cyclo_1, cyclo_2] = items_of(p, "cyclophosphamide", "ib")
    assert cyclo_1.date == D(2026, 7, 7) and cyclo_1.dose is not None and cyclo_1.dose.amount == 386.0
    assert cyclo_1.dose.working.endswith("(BSA Mosteller, 68 cm, 7.9 kg on 2026-07-06)")
    assert cyclo_2.date == D(2026, 8, 4) and cyclo_2.dose is not None and cyclo_2.dose.amount == 386.0
    # 70 cm, 8.3 kg on 2026-09-21 -> sqrt(581 / 3600) = 0.401732 m²: OCTADAD dexamethasone
    # 10 mg/m²/day = 4.01732 -> 4.02 mg/day.
    dexa = items_of(p, "dexamethasone", "octadad")
    assert dexa[0].date == D(2026, 9, 23) and dexa[0].dose is not None
    assert (round(dexa[0].dose.bsa, 6), dexa[0].dose.amount, dexa[0].dose.text) == (0.401732, 4.02,
                                                                                    "4.02 mg/day, once a day")


def test_later_measurement_changes_later_items_only(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    before = protocol.plan(make_patient(), as_of=as_of)
    measurements = [{"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4},
                    {"date": "2026-05-06", "height_cm": 70, "weight_kg": 9}]  # sqrt(70 × 9 / 3600) = 0.418330
    after = protocol.plan(make_patient(measurements=measurements), as_of=as_of)
    pred = [(i.date, i.dose.amount) for i in items_of(after, "prednisone") if i.dose]
    assert pred == [(D(2026, 5, 4), 22.1), (D(2026, 5, 5), 22.1)] + [
        (D(2026, 5, d), 25.1) for d in range(6, 11)]  # 60 × 0.418330 = 25.0998
    assert len(before.items) == len(after.items)
    cut = D(2026, 5, 6)
    for old, new in zip(before.items, after.items, strict=True):
        assert (old.date, old.slot) == (new.date, new.slot)
        if old.dose is None or old.dose.basis != "per_m2" or old.dose.standard is None:
            continue
        if new.date < cut:
            assert new.dose is not None and new.dose.amount == old.dose.amount
            assert new.dose.bsa == pytest.approx(0.368330, abs=1e-6)
        else:
            assert new.dose is not None and new.dose.bsa == pytest.approx(0.418330, abs=1e-6)
            assert new.dose.exact == pytest.approx(old.dose.standard * 0.418330, rel=1e-5)
            assert new.dose.amount == pytest.approx(new.dose.exact, rel=0.005)
            assert new.dose.amount != old.dose.amount


def test_measurements_after_as_of_are_not_used(make_patient: Callable[..., Path]) -> None:
    measurements = [{"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4},
                    {"date": "2026-05-06", "height_cm": 70, "weight_kg": 9}]
    p = protocol.plan(make_patient(measurements=measurements), as_of=D(2026, 5, 5))
    assert {i.dose.amount for i in items_of(p, "prednisone") if i.dose} == {22.1}


def test_no_measurement_yet(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    p = protocol.plan(make_patient(measurements=[{"date": "2026-05-06", "height_cm": 66, "weight_kg": 7.4}]),
                      as_of=as_of)
    pred = items_of(p, "prednisone")
    first = pred[0].dose
    assert first is not None
    assert first.amount is None
    assert first.text == "not computable"
    assert first.reason == "no height/weight recorded on or before this date"
    assert first.working == "60 mg/m²/day: no height/weight recorded on or before this date"
    assert [i.dose.amount for i in pred if i.dose] == [None, None, 22.1, 22.1, 22.1, 22.1, 22.1]


def test_placeholder_dose_without_value(as_of: dt.date) -> None:
    p = plan_example("mr-on-time", as_of)
    [mtx] = items_of(p, "methotrexate_it", "induction")
    assert mtx.date == D(2026, 5, 4) and mtx.route == "IT" and mtx.evidence == "placeholder"
    assert mtx.dose is not None
    assert mtx.dose.amount is None
    assert mtx.dose.standard is None
    assert mtx.dose.text == "not specified"
    assert mtx.dose.reason == "not specified in the definition (placeholder)"
    assert mtx.dose.working == "age 0 y on the day → band dose ? mg: not specified in the definition (placeholder)"
    triple = items_of(p, "triple_it", "induction")
    assert [i.element_day for i in triple] == [15, 29]
    assert all(i.dose is not None and i.dose.text == "not specified" for i in triple)
    # Asparaginase has no known days: listed in the definition, never dated.
    assert not items_of(p, "asparaginase", "induction") and not items_of(p, "asparaginase", "marma")
    assert [i.element_day for i in items_of(p, "asparaginase", "octadad")] == [8, 11, 15, 18]
    # Assessments carry no dose.
    assert all(i.dose is None for i in p.items if i.kind == "assessment")


def test_evidence_levels(as_of: dt.date) -> None:
    p = plan_example("mr-on-time", as_of)
    by_key = {(i.element, i.slot.key): i.evidence for i in p.items}
    assert by_key[("blinatumomab", "blinatumomab")] == "published"
    assert by_key[("induction", "prednisone")] == "placeholder"  # published days, placeholder dose
    # Day 8 is the BFM definition, not re-stated in an Interfant-06 source (clinical-facts §2): placeholder.
    assert by_key[("induction", "day8_blasts")] == "placeholder"
    assert by_key[("blinatumomab", "blina_day15_marrow")] == "derived"


def _ph(value: float) -> dict[str, Any]:
    return {"value": value, "evidence": "placeholder"}


def test_cap_per_kg_and_fixed_doses(write_definition: Any, make_patient: Callable[..., Path],
                                    as_of: dt.date) -> None:
    definition = {
        "format": 1, "id": "tiny-doses", "version": "0.1.0", "title": "Tiny dose bases", "status": "draft",
        "sources": [{"key": "src", "citation": "test source"}],
        "risk_groups": [{"id": "ALL", "label": "everyone", "source": "src", "evidence": "placeholder"}],
        "elements": [{"id": "course", "title": "Course", "final": True, "length_days": _ph(3),
                      "administrations": [
            {"drug": "Capped", "route": "IV", "days": _ph("1"),
             "dose": {"basis": "per_m2", "unit": "mg", "amount": _ph(5), "cap": _ph(1)}},
            {"drug": "By weight", "route": "PO", "days": {"value": "2", "evidence": "published", "source": "src"},
             "dose": {"basis": "per_kg", "unit": "mg", "amount": _ph(2.5), "per": "day"}},
            {"drug": "Flat", "route": "IT", "days": {"value": "3", "evidence": "published", "source": "src"},
             "dose": {"basis": "fixed", "unit": "mg", "cap": _ph(20),
                      "amount": {"value": 30, "evidence": "published", "source": "src"}}},
        ]}],
    }
    path = make_patient(protocol="tiny-doses", birth_date="2025-06-10", diagnosis_date="2026-06-01",
                        measurements=[{"date": "2026-06-01", "height_cm": 66, "weight_kg": 7.4}])
    p = protocol.plan(path, write_definition(definition), as_of=as_of)
    got = [(i.date, i.name, i.dose.amount, i.dose.capped, i.dose.text, i.dose.working) for i in p.items if i.dose]
    assert got == [
        (D(2026, 6, 1), "Capped", 1.0, True, "1 mg per dose, one dose on the day",
         "5 mg/m² × 0.368 m² = 1.84 mg (BSA Mosteller, 66 cm, 7.4 kg on 2026-06-01); capped at 1 mg"),
        (D(2026, 6, 2), "By weight", 18.5, False, "18.5 mg/day, once a day",
         "2.5 mg/kg/day × 7.4 kg (on 2026-06-01) = 18.5 mg/day"),
        (D(2026, 6, 3), "Flat", 20.0, True, "20 mg per dose, one dose on the day",
         "30 mg (fixed dose); capped at 20 mg"),
    ]
    # An item's evidence is the weakest of its days and its dose (amount and cap).
    assert [i.evidence for i in p.items] == ["placeholder", "placeholder", "placeholder"]
    assert [i.dose.to_dict()["bsa_m2"] for i in p.items if i.dose] == [0.3683, None, None]


@pytest.mark.parametrize(("value", "text"), [(9.996, "10"), (99.96, "100"), (0.09996, "0.1")])
def test_fmt_amount_three_significant_figures_when_rounding_up(value: float, text: str) -> None:
    from protocol._schedule import fmt_amount

    assert fmt_amount(value) == text


@pytest.mark.parametrize(("value", "text"), [(18.6, "18.6"), (4.65, "4.65"), (0.465, "0.465"), (3100, "3100"),
                                             (22.2, "22.2"), (390, "390"), (4, "4"), (0, "0"), (0.001, "0.001"),
                                             (0.5524, "0.552"), (10.04, "10"), (1.05, "1.05"), (1.0, "1")])
def test_fmt_amount(value: float, text: str) -> None:
    """Three significant figures, a leading zero, never a trailing zero ("1.0 mg" read as 10 mg)."""
    from protocol._schedule import fmt_amount

    assert fmt_amount(value) == text


# --------------------------------------------------------------------------- age-banded doses


def _banded_definition(length: int, bands: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": 1, "id": "tiny-banded", "version": "0.1.0", "title": "Tiny age-banded course", "status": "draft",
        "sources": [{"key": "src", "citation": "test source"}],
        "risk_groups": [{"id": "ALL", "label": "everyone", "source": "src", "evidence": "placeholder"}],
        "elements": [{
            "id": "course", "title": "Course", "final": True,
            "length_days": {"value": length, "evidence": "placeholder"},
            "administrations": [{
                "drug": "Drug X", "route": "IT",
                "dose": {"basis": "age_banded", "unit": "mg", "bands": bands},
                "days": {"value": f"1-{length}", "evidence": "placeholder"},
            }],
        }],
    }


def _band(value: float, below: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"amount": {"value": value, "evidence": "placeholder"}}
    if below is not None:
        out["below_age_years"] = below
    return out


def test_age_banded_dose_uses_age_on_the_day(write_definition: Any, make_patient: Callable[..., Path],
                                             as_of: dt.date) -> None:
    definition = write_definition(_banded_definition(30, [_band(6, below=1), _band(8)]))
    path = make_patient(protocol="tiny-banded", birth_date="2025-06-10", diagnosis_date="2026-06-01",
                        day8_blasts_per_ul=None)
    p = protocol.plan(path, definition, as_of=as_of)
    got = [(i.date, i.dose.amount) for i in p.items if i.dose]
    assert got == [(D(2026, 6, d), 6.0) for d in range(1, 10)] + [(D(2026, 6, d), 8.0) for d in range(10, 31)]
    first, birthday = p.items[0].dose, p.items[9].dose
    assert first is not None and birthday is not None
    assert first.working == "age 0 y on the day → band dose 6 mg"
    assert birthday.working == "age 1 y on the day → band dose 8 mg"
    assert birthday.text == "8 mg per dose, one dose on the day"
    assert {i.evidence for i in p.items} == {"placeholder"}
    assert [e.id for e in p.elements] == ["course"] and p.end_of_therapy is None


def test_age_banded_dose_after_a_birthday_beyond_one_year_from_as_of(
        write_definition: Any, make_patient: Callable[..., Path]) -> None:
    # 400-day course, planned on the day of diagnosis: the second birthday (2027-06-10) is more than
    # 366 days after as_of.
    definition = write_definition(_banded_definition(400, [_band(6, below=1), _band(7, below=2), _band(8)]))
    path = make_patient(protocol="tiny-banded", birth_date="2025-06-10", diagnosis_date="2026-06-01",
                        day8_blasts_per_ul=None)
    p = protocol.plan(path, definition, as_of=D(2026, 6, 1))
    by_date = {i.date: i.dose.amount for i in p.items if i.dose}
    assert by_date[D(2026, 6, 9)] == 6.0
    assert by_date[D(2026, 6, 10)] == 7.0
    assert by_date[D(2027, 6, 9)] == 7.0
    assert by_date[D(2027, 6, 10)] == 8.0  # age 2 on the day: the last band


# --------------------------------------------------------------------------- recorded events


def _with_events(make_patient: Callable[..., Path], events: list[dict[str, Any]], **extra: Any) -> Path:
    return make_patient(events=events, **extra)


def _problems(path: Path, error: type[protocol.InputError] = protocol.PatientError,
              as_of: dt.date = D(2026, 11, 21)) -> list[protocol.Problem]:
    with pytest.raises(error) as info:
        protocol.plan(path, as_of=as_of)
    assert type(info.value) is error
    return info.value.problems


def test_element_started_out_of_order(make_patient: Callable[..., Path]) -> None:
    path = _with_events(make_patient, [
        {"type": "element_started", "element": "induction", "date": "2026-05-04"},
        {"type": "element_started", "element": "ib", "date": "2026-06-08"},
    ])
    [problem] = _problems(path)
    assert problem.field == "events[1].element"
    assert problem.message == ("'ib' cannot follow 'induction': the protocol goes from 'induction' to "
                               "blinatumomab")
    assert problem.file == str(path) and problem.line is not None


def test_events_are_named_by_their_index_in_the_file(make_patient: Callable[..., Path]) -> None:
    # Listed out of date order: the bad event is still named by its position in the file.
    path = _with_events(make_patient, [
        {"type": "element_started", "element": "marma", "date": "2026-06-20"},
        {"type": "element_started", "element": "induction", "date": "2026-05-04"},
        {"type": "element_completed", "element": "induction", "date": "2026-06-07"},
    ])
    [problem] = _problems(path)
    assert problem.field == "events[0].element"
    assert "'marma' cannot follow 'induction'" in problem.message


def test_hsct_against_the_rule(make_patient: Callable[..., Path]) -> None:
    data = example_data("mr-on-time")
    events = data["events"][:8] + [{"type": "hsct", "date": "2026-09-23"}]
    path = make_patient(**{**data, "events": events})
    [problem] = _problems(path)
    assert problem.field.startswith("events[8]")
    assert "'hsct' on 2026-09-23 contradicts the protocol's rule for the pre_octadad decision" in problem.message
    assert "(risk group = HR or MRD at pre_octadad ≥ 5e-4)" in problem.message
    assert "✗ MRD at pre_octadad ≥ 5e-4 (is 0)" in problem.message
    assert "off_protocol" in problem.message


def test_hsct_against_the_rule_names_an_existing_field(make_patient: Callable[..., Path]) -> None:
    data = example_data("mr-on-time")
    path = make_patient(**{**data, "events": data["events"][:8] + [{"type": "hsct", "date": "2026-09-23"}]})
    [problem] = _problems(path)
    assert problem.field == "events[8].type"


def test_hsct_allowed_for_high_mrd(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    data = example_data("mr-on-time")
    data["mrd"][-1]["value"] = 1e-3
    path = make_patient(**{**data, "events": data["events"][:8] + [{"type": "hsct", "date": "2026-09-30"}]})
    p = protocol.plan(path, as_of=as_of)
    assert [(e.id, e.status) for e in p.elements][-2:] == [("marma", "completed"), ("hsct", "in_progress")]
    [d] = p.decisions
    assert (d.status, d.outcome, d.date) == ("recorded", "hsct", D(2026, 9, 30))


def test_octadad_against_the_rule_for_high_risk(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    data = example_data("mr-on-time")
    data.update(birth_date="2026-01-10", wbc_at_diagnosis=350)  # 3 months old, WBC >= 300: high risk
    path = make_patient(**data)
    try:
        p = protocol.plan(path, as_of=as_of)
    except protocol.PatientError as exc:
        assert any(pr.field.startswith("events[8]") for pr in exc.problems)
    else:
        assert p.risk.group == "HR"
        assert any("pre_octadad" in w for w in p.warnings), "an HR patient recorded as going to OCTADAD"


def test_completion_before_start(make_patient: Callable[..., Path]) -> None:
    path = _with_events(make_patient, [
        {"type": "element_started", "element": "induction", "date": "2026-05-10"},
        {"type": "element_completed", "element": "induction", "date": "2026-05-08"},
    ])
    [problem] = _problems(path)
    # Today: "'induction' completed before it was started: record element_started first" at
    # events[1].element (tests/test_malformed.py tracks that this wording ignores the recorded start).
    assert problem.field in ("events[1].element", "events[1].date")
    assert "'induction'" in problem.message or "2026-05-08" in problem.message
    assert "before" in problem.message


@pytest.mark.parametrize(
    ("events", "field", "message"),
    [
        ([{"type": "element_completed", "element": "blinatumomab", "date": "2026-05-20"}],
         "events[0].element", "completes 'blinatumomab', but the current element is 'induction'"),
        ([{"type": "element_started", "element": "induction", "date": "2026-05-04"},
          {"type": "element_started", "element": "induction", "date": "2026-05-05"}],
         "events[1].element", "'induction' already started on 2026-05-04"),
        ([{"type": "element_started", "element": "induction", "date": "2026-05-04"},
          {"type": "element_completed", "element": "induction", "date": "2026-06-07"},
          {"type": "element_completed", "element": "induction", "date": "2026-06-08"}],
         "events[2].element", "'induction' is already completed on 2026-06-07"),
        ([{"type": "element_started", "element": "induction", "date": "2026-05-04"},
          {"type": "element_completed", "element": "induction", "date": "2026-06-07"},
          {"type": "element_started", "element": "blinatumomab", "date": "2026-06-07"}],
         "events[2].date", "'blinatumomab' starts on 2026-06-07, not after 'induction' ended on 2026-06-07"),
        ([{"type": "element_started", "element": "prephase", "date": "2026-05-04"}],
         "events[0].element", "expected an element of interfant06-blinatumomab"),
        ([{"type": "element_started", "element": "induction", "date": "2026-05-04"},
          {"type": "relapse", "date": "2026-05-20"},
          {"type": "element_started", "element": "blinatumomab", "date": "2026-06-08"}],
         "events[2].type", "element_started on 2026-06-08 comes after the patient left the protocol"),
    ],
)
def test_inconsistent_events(make_patient: Callable[..., Path], events: list[dict[str, Any]], field: str,
                             message: str) -> None:
    problems = _problems(_with_events(make_patient, events))
    assert field in [p.field for p in problems]
    assert any(message in p.message for p in problems if p.field == field)


def test_event_before_treatment_start(make_patient: Callable[..., Path]) -> None:
    path = _with_events(make_patient, [{"type": "element_started", "element": "induction", "date": "2026-05-05"}],
                        treatment_start="2026-05-06")
    [problem] = _problems(path)
    assert problem.field == "events[0].date"
    assert "expected a date on or after treatment start 2026-05-06, got 2026-05-05" in problem.message


def test_event_before_diagnosis_is_a_file_error(make_patient: Callable[..., Path]) -> None:
    path = _with_events(make_patient, [{"type": "element_started", "element": "induction", "date": "2026-05-01"}])
    with pytest.raises(protocol.PatientError) as info:
        protocol.load_patient(path)
    assert [p.field for p in info.value.problems] == ["events[0].date"]


def test_kmt2a_germline_is_ineligible(make_patient: Callable[..., Path]) -> None:
    problems = _problems(make_patient(kmt2a="germline"), protocol.IneligibleError)
    assert [p.field for p in problems] == ["kmt2a"]
    assert "KMT2A-germline patients are not eligible" in problems[0].message
    assert "✗ KMT2A status = rearranged (is germline)" in problems[0].message


def test_age_one_year_is_ineligible(make_patient: Callable[..., Path]) -> None:
    problems = _problems(make_patient(birth_date="2025-05-04"), protocol.IneligibleError)  # 1 year on diagnosis
    assert [p.field for p in problems] == ["birth_date"]
    assert "younger than 1 year" in problems[0].message
    protocol.plan(make_patient(birth_date="2025-05-05"), as_of=D(2026, 11, 21))  # one day younger: eligible


def test_prednisone_conflict_is_a_patient_error(make_patient: Callable[..., Path]) -> None:
    [problem] = _problems(make_patient(day8_blasts_per_ul=1500, prednisone_response="good"))
    assert problem.field == "prednisone_response"
    assert "given as 'good', but the protocol's rule gives 'poor'" in problem.message


def test_unknown_mrd_timepoint(make_patient: Callable[..., Path]) -> None:
    path = make_patient(mrd=[{"timepoint": "day_99", "date": "2026-06-01", "value": 0}])
    [problem] = _problems(path)
    assert problem.field == "mrd[0].timepoint"


def test_protocol_mismatch(make_patient: Callable[..., Path], write_definition: Any) -> None:
    other = write_definition(_banded_definition(30, [_band(6)]))
    with pytest.raises(protocol.PatientError) as info:
        protocol.plan(make_patient(), other, as_of=D(2026, 11, 21))
    assert [p.field for p in info.value.problems] == ["protocol"]


# --------------------------------------------------------------------------- as_of


def test_as_of_before_pre_octadad_mrd_makes_the_decision_pending() -> None:
    p = plan_example("mr-on-time", D(2026, 9, 21))
    [d] = p.decisions
    assert (d.status, d.outcome, list(d.waiting_for)) == ("pending", None, ["mrd:pre_octadad"])
    assert span(p, "marma").status == "in_progress"  # the completion on 2026-09-22 is not recorded yet
    assert span(p, "marma").actual_end is None
    assert {e.branch for e in p.elements if e.id in ("hsct", "octadad", "maintenance")} == {
        "pre_octadad→hsct", "pre_octadad→octadad"}
    # The pre-OCTADAD sample is not "done" yet.
    [sample] = items_of(p, "pre_octadad_marrow")
    assert sample.status == "planned"


def test_as_of_on_the_mrd_date_decides() -> None:
    p = plan_example("mr-on-time", D(2026, 9, 22))
    [d] = p.decisions
    assert (d.status, d.outcome, d.date) == ("decided", "octadad", D(2026, 9, 23))
    assert [(e.id, e.status) for e in p.elements][-2:] == [("octadad", "planned"), ("maintenance", "planned")]
    [sample] = items_of(p, "pre_octadad_marrow")
    assert sample.status == "done"


def test_as_of_ignores_later_events() -> None:
    p = plan_example("mr-on-time", D(2026, 6, 10))
    assert [(e.id, e.status) for e in p.elements] == [
        ("induction", "completed"), ("blinatumomab", "in_progress"), ("ib", "planned"), ("marma", "planned"),
        ("hsct", "pending_decision"), ("octadad", "pending_decision"), ("maintenance", "pending_decision")]
    assert p.as_of == D(2026, 6, 10)


def test_warning_when_octadad_starts_before_the_mrd(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    data = example_data("mr-on-time")
    data["mrd"] = data["mrd"][:3]  # no pre-OCTADAD result
    p = protocol.plan(make_patient(**data), as_of=as_of)
    [d] = p.decisions
    assert (d.status, d.outcome) == ("recorded", "octadad")
    assert p.warnings[0] == ("decision pre_octadad: octadad was started on 2026-09-23 before mrd:pre_octadad "
                             "was recorded")
    assert len(p.warnings) == 2 and p.warnings[1].startswith("per-m² doses planned before the first birthday")


# --------------------------------------------------------------------------- outcomes


def test_relapse_stops_the_plan(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    data = example_data("mr-on-time")
    data["events"].append({"type": "relapse", "date": "2026-10-15"})
    p = protocol.plan(make_patient(**data), as_of=as_of)
    assert p.outcome == ("relapse", D(2026, 10, 15))
    assert [(e.id, e.status) for e in p.elements] == [
        ("induction", "completed"), ("blinatumomab", "completed"), ("ib", "completed"), ("marma", "completed"),
        ("octadad", "stopped")]
    assert max(i.date for i in p.items) == D(2026, 10, 14)
    assert not any(i.element == "maintenance" for i in p.items)
    assert p.decisions[-1].status == "recorded"
    assert json.loads(p.to_json())["outcome"] == {"type": "relapse", "date": "2026-10-15"}
    # Before the relapse date, the plan goes on.
    assert protocol.plan(make_patient(**data), as_of=D(2026, 10, 14)).outcome is None


@pytest.mark.parametrize("kind", ["death", "off_protocol"])
def test_other_outcomes_stop_the_plan(make_patient: Callable[..., Path], as_of: dt.date, kind: str) -> None:
    event = {"type": kind, "date": "2026-05-10", **({"reason": "parents' choice"} if kind == "off_protocol" else {})}
    p = protocol.plan(make_patient(events=[{"type": "element_started", "element": "induction",
                                            "date": "2026-05-04"}, event]), as_of=as_of)
    assert p.outcome == (kind, D(2026, 5, 10))
    assert [(e.id, e.status) for e in p.elements] == [("induction", "stopped")]
    assert max(i.date for i in p.items) == D(2026, 5, 9)


# --------------------------------------------------------------------------- delays


def _mr_events(blina_start: str) -> list[dict[str, Any]]:
    return [
        {"type": "element_started", "element": "induction", "date": "2026-05-04"},
        {"type": "element_completed", "element": "induction", "date": "2026-06-07"},
        {"type": "element_started", "element": "blinatumomab", "date": blina_start},
    ]


@pytest.mark.parametrize("delay", [1, 3, 17])
def test_delayed_blinatumomab_shifts_later_elements_not_the_end(make_patient: Callable[..., Path],
                                                                 as_of: dt.date, delay: int) -> None:
    on_time = protocol.plan(make_patient(events=_mr_events("2026-06-08"),
                                         mrd=[{"timepoint": "pre_octadad", "date": "2026-06-10", "value": 0}]),
                            as_of=as_of)
    late_start = D(2026, 6, 8) + dt.timedelta(days=delay)
    late = protocol.plan(make_patient(events=_mr_events(late_start.isoformat()),
                                      mrd=[{"timepoint": "pre_octadad", "date": "2026-06-10", "value": 0}]),
                         as_of=as_of)
    shift = dt.timedelta(days=delay)
    assert [e.id for e in late.elements] == [e.id for e in on_time.elements] == [
        "induction", "blinatumomab", "ib", "marma", "octadad", "maintenance"]
    assert span(late, "blinatumomab").planned_start == span(on_time, "blinatumomab").planned_start
    assert span(late, "blinatumomab").actual_start == late_start
    for element in ("ib", "marma", "octadad", "maintenance"):
        assert span(late, element).planned_start == span(on_time, element).planned_start + shift
    end = D(2026, 5, 4) + dt.timedelta(days=EOT_DAYS)
    assert span(late, "maintenance").planned_end == span(on_time, "maintenance").planned_end == end
    assert late.end_of_therapy == on_time.end_of_therapy == end
    late_days = items_of(late, "mercaptopurine", "maintenance")
    assert late_days[-1].date == end
    assert len(late_days) == len(items_of(on_time, "mercaptopurine", "maintenance")) - delay


def test_hr_delay_shifts_hsct(make_patient: Callable[..., Path], as_of: dt.date) -> None:
    data = example_data("hr-to-hsct")
    data["events"][2]["date"] = "2026-08-24"  # on time instead of 3 days late
    on_time = protocol.plan(make_patient(**data), as_of=as_of)
    late = plan_example("hr-to-hsct", as_of)
    for element in ("ib", "marma", "hsct"):
        assert span(late, element).planned_start == span(on_time, element).planned_start + dt.timedelta(days=3)


# --------------------------------------------------------------------------- outputs


def test_to_json_documented_keys(example_patient: Path, as_of: dt.date) -> None:
    p = protocol.plan(example_patient, as_of=as_of)
    data = json.loads(p.to_json())
    assert {"patient", "protocol", "risk", "elements", "items", "decisions"} <= set(data)
    assert data["patient"] == p.patient.id
    assert data["protocol"]["id"] == "interfant06-blinatumomab" and data["protocol"]["version"] == "1.0.0"
    assert data["risk"]["group"] == p.risk.group
    assert data["risk"]["reasons"] == list(p.risk.reasons) and data["risk"]["reasons"]
    assert data["as_of"] == as_of.isoformat()
    assert data["end_of_therapy"] == p.end_of_therapy.isoformat()  # type: ignore[union-attr]
    assert len(data["elements"]) == len(p.elements)
    for got, e in zip(data["elements"], p.elements, strict=True):
        assert {"id", "planned_start", "planned_end", "actual_start", "actual_end", "status"} <= set(got)
        assert got["id"] == e.id and got["status"] == e.status
        assert got["planned_start"] == e.planned_start.isoformat()  # type: ignore[union-attr]
        assert got["actual_start"] == (None if e.actual_start is None else e.actual_start.isoformat())
    assert len(data["items"]) == len(p.items)
    for got, item in zip(data["items"], p.items, strict=True):
        assert {"date", "element", "element_day", "study_day", "kind", "name", "route", "dose", "status",
                "evidence"} <= set(got)
        assert got["date"] == item.date.isoformat()
        assert (got["element"], got["element_day"], got["study_day"]) == (item.element, item.element_day,
                                                                          item.study_day)
        assert got["kind"] in ("administration", "assessment", "bag_change")
        assert got["ref"] == item.ref == f"{item.element}:{item.slot.key}@{item.element_day}"
        assert got["evidence"] in ("published", "derived", "placeholder")
        assert (got["dose"] is None) == (item.dose is None)
    assert len(data["decisions"]) == len(p.decisions)
    for got in data["decisions"]:
        assert {"id", "status", "depends_on", "outcome"} <= set(got)
        assert got["id"] == "pre_octadad"
        assert got["depends_on"] == ["risk_group", "mrd:pre_octadad"]


def test_to_json_first_item(as_of: dt.date) -> None:
    data = json.loads(plan_example("mr-on-time", as_of).to_json())
    first = data["items"][0]
    assert {k: first[k] for k in ("date", "element", "element_day", "study_day", "kind", "name", "route",
                                  "status", "evidence")} == {
        "date": "2026-05-04", "element": "induction", "element_day": 1, "study_day": 1, "kind": "administration",
        "name": "Prednisone (prephase)", "route": "IV/PO", "status": "done", "evidence": "placeholder"}
    assert first["dose"]["amount"] == 22.1 and first["dose"]["unit"] == "mg" and first["dose"]["per"] == "day"
    assert first["dose"]["frequency"] == "once_per_day" and first["dose"]["administrations_per_day"] == 1
    assert first["unverified"] is True and first["unverified_reasons"][0].startswith("the dose is a placeholder")
    assert set(data["legend"]) == {"unverified", "evidence", "dose"}
    assert [d["outcome"] for d in data["decisions"]] == ["octadad"]


def test_to_csv(example_patient: Path, as_of: dt.date) -> None:
    p = protocol.plan(example_patient, as_of=as_of)
    rows = list(csv.DictReader(io.StringIO(p.to_csv())))
    assert len(rows) == len(p.items)
    assert list(rows[0]) == ["date", "element", "element_day", "study_day", "kind", "name", "route", "dose",
                             "dose_amount", "dose_unit", "dose_per", "frequency", "administrations_per_day",
                             "dose_working", "status", "evidence", "unverified", "branch", "ref", "note"]
    for row, item in zip(rows, p.items, strict=True):
        assert row["date"] == item.date.isoformat()
        assert row["element"] == item.element
        assert int(row["study_day"]) == item.study_day and int(row["element_day"]) == item.element_day
        assert row["name"] == item.name and row["status"] == item.status
        assert row["unverified"].startswith("UNVERIFIED: ") == item.unverified
        if item.dose is not None and item.dose.amount is not None:
            assert float(row["dose_amount"]) == item.dose.amount
        else:
            assert row["dose_amount"] == ""


def test_to_csv_first_row(as_of: dt.date) -> None:
    rows = list(csv.DictReader(io.StringIO(plan_example("mr-on-time", as_of).to_csv())))
    assert rows[0]["dose"] == "22.1 mg/day, once a day"
    assert rows[0]["dose_working"] == ("60 mg/m²/day × 0.368 m² = 22.1 mg/day "
                                       "(BSA Mosteller, 66 cm, 7.4 kg on 2026-05-04)")
    assert (rows[0]["dose_per"], rows[0]["frequency"], rows[0]["administrations_per_day"]) == ("day", "once_per_day",
                                                                                              "1")
    assert rows[0]["unverified"].startswith("UNVERIFIED: the dose is a placeholder")
    assert rows[0]["branch"] == ""


# --------------------------------------------------------------------------- blinatumomab eligibility


@pytest.mark.parametrize(("fields", "reason"), [
    ({"cd19": "negative"}, "blinatumomab needs CD19-positive disease"),
    ({"eoi_marrow_blasts_percent": 30}, "blinatumomab needs fewer than 25 % marrow blasts at the end of induction"),
])
def test_an_ineligible_patient_is_not_planned_into_blinatumomab(make_patient: Callable[..., Path], as_of: dt.date,
                                                                 fields: dict[str, Any], reason: str) -> None:
    """An M3 marrow (or CD19-negative disease) is never silently planned into the cycle
    (clinical-facts §5 [46]); a recorded start is refused naming the rule."""
    p = protocol.plan(make_patient(**fields), as_of=D(2026, 5, 10))
    assert [e.id for e in p.elements] == ["induction"]
    assert not [i for i in p.items if i.element == "blinatumomab"]
    [warning] = [w for w in p.warnings if w.startswith("blinatumomab is not planned")]
    assert reason in warning and "record what was done instead" in warning
    events = [{"type": "element_started", "element": "induction", "date": "2026-05-04"},
              {"type": "element_completed", "element": "induction", "date": "2026-06-07"},
              {"type": "element_started", "element": "blinatumomab", "date": "2026-06-08"}]
    with pytest.raises(protocol.PatientError) as exc:
        protocol.plan(make_patient(events=events, **fields), as_of=as_of)
    [problem] = exc.value.problems
    assert problem.field == "events[2].element" and problem.message.startswith(
        "the patient may not start 'blinatumomab': " + reason)


def test_unknown_eligibility_plans_the_cycle_and_says_what_it_waits_for(make_patient: Callable[..., Path]) -> None:
    p = protocol.plan(make_patient(cd19=None, eoi_marrow_blasts_percent=None), as_of=D(2026, 5, 10))
    assert "blinatumomab" in [e.id for e in p.elements]
    assert ("blinatumomab is planned, but whether the patient may have it is not recorded yet: waiting for cd19, "
            "eoi_marrow_blasts_percent") in p.warnings


def test_cumulative_anthracycline_planned_and_given(make_patient: Callable[..., Path]) -> None:
    """Daunorubicin 30 mg/m² (placeholder) on induction days 8 and 9 plus OCTADAD: the
    planned and given mg/m² add up, the doxorubicin equivalent waits for a sourced factor, and
    all of it is unverified (issue 11)."""
    events = [{"type": "element_started", "element": "induction", "date": "2026-05-04"},
              {"type": "item_given", "item": "induction:daunorubicin@8", "date": "2026-05-11"},
              {"type": "item_omitted", "item": "induction:daunorubicin@9", "date": "2026-05-12", "reason": "sepsis"}]
    p = protocol.plan(make_patient(events=events), as_of=D(2026, 5, 20))
    c = p.cumulative_anthracycline()
    assert c is not None and c["unit"] == "mg/m²"
    [dauno] = c["drugs"]
    per_m2 = [i.dose.standard for i in p.items if i.slot.key == "daunorubicin" and i.branch is None
              and i.status != "omitted"]
    assert dauno["planned_mg_m2"] == sum(per_m2) and dauno["given_mg_m2"] == 30
    assert dauno["factor"] is None and dauno["factor_evidence"] == "placeholder"
    assert c["doxorubicin_equivalent"] == {"planned": None, "given": None, "computable": False}
    assert c["unverified"] and "the doxorubicin-equivalence factor is a placeholder" in dauno["unverified_reasons"]
    assert p.to_dict()["cumulative_anthracycline"] == c
    assert protocol.plan(Path(__file__).resolve().parent.parent / "examples/patients/aall1731-sr-average.yaml",
                         as_of=D(2026, 11, 21)).cumulative_anthracycline() is None


def test_a_date_that_follows_a_placeholder_length_is_unverified(as_of: dt.date) -> None:
    """Blinatumomab's dose and days are published, but before induction is recorded its start
    follows the placeholder induction length: its items are unverified, and say why."""
    p = plan_example("mr-on-time", D(2026, 5, 10))
    blina = [i for i in p.items if i.slot.key == "blinatumomab"]
    assert blina and all(i.unverified for i in blina)
    assert blina[0].unverified_reasons == ("its date follows the placeholder length of induction (35 days)",)
    span = next(e for e in p.elements if e.id == "blinatumomab")
    assert span.unverified and span.to_dict()["unverified_reasons"][0].startswith("its start date follows")
    # Once induction's end is recorded, blinatumomab's dates are facts again.
    done = plan_example("mr-on-time", as_of)
    assert not any(i.unverified for i in done.items if i.slot.key == "blinatumomab")


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=[p.stem for p in ALL_EXAMPLES])
def test_every_output_marks_every_value_that_depends_on_a_placeholder(path: Path, as_of: dt.date) -> None:
    """JSON, CSV and the risk and decisions: whatever depends on a placeholder says so."""
    p = protocol.plan(path, as_of=as_of)
    data = p.to_dict()
    rows = list(csv.DictReader(io.StringIO(p.to_csv())))
    for item, got, row in zip(p.items, data["items"], rows, strict=True):
        assert got["unverified"] == item.unverified
        assert bool(row["unverified"]) == item.unverified
        if item.unverified:
            assert got["unverified_reasons"] and row["unverified"].startswith("UNVERIFIED: ")
        if item.dose is not None and item.dose.evidence == "placeholder":
            assert item.unverified and got["dose"]["unverified"]
    assert data["risk"]["unverified"] == bool(data["risk"]["unverified_reasons"])
    for d in data["decisions"]:
        assert d["unverified"] == bool(d["unverified_reasons"])
    assert data["legend"]["unverified"].startswith("UNVERIFIED")


# --------------------------------------------------------------------------- the fast path equals the reference


def _plan_or_refusal(patient: protocol.Patient, pr: protocol.Protocol, as_of: dt.date, reference: bool) -> str:
    """The plan JSON (and its deviations) or the refusal, on the fast path or the reference."""
    from protocol.schedule.builder import _Builder

    _Builder.reference = reference
    try:
        return protocol.plan(patient, pr, as_of).to_json()
    except protocol.ProtocolError as exc:
        return f"{type(exc).__name__}: {exc.problems}"
    finally:
        _Builder.reference = False


def _recorded(draw: Any, p: Plan, as_of: dt.date) -> list[dict[str, Any]]:
    """Item events a coordinator could record against the plan, right or wrong: doses given
    on their day, early or late, with an amount (around the planned one), twice; omissions,
    delays and dose modifications; a hold of an element under way."""
    from hypothesis import strategies as st

    past = [i for i in p.items if i.branch is None and i.date <= as_of]
    if not past:
        return []
    picks = draw(st.lists(st.integers(0, len(past) - 1), max_size=min(80, len(past)), unique=True))
    if picks and draw(st.integers(0, 5)) == 0:
        picks.append(picks[0])  # recorded twice
    events: list[dict[str, Any]] = []
    # One history in three records doses given only (the bulk path of the fast path).
    kinds = ["given"] * 6 + ["given_off_day", "given_dose"]
    if draw(st.integers(0, 2)):
        kinds += ["omitted", "delayed", "modified"]
    for k in picks:
        item = past[k]
        kind = draw(st.sampled_from(kinds))
        day = item.date
        if kind == "given_off_day":
            day = max(min(item.date + dt.timedelta(days=draw(st.integers(-3, 4))), as_of), p.patient.start_date)
        if kind.startswith("given"):
            ev: dict[str, Any] = {"type": "item_given", "item": item.ref, "date": day.isoformat()}
            amount = None if item.dose is None else item.dose.amount
            if kind == "given_dose" and amount:
                ev["dose"] = round(amount * draw(st.sampled_from([0.8, 0.96, 1.0, 1.04, 1.2])), 4)
        elif kind == "omitted":
            ev = {"type": "item_omitted", "item": item.ref, "date": day.isoformat(), "reason": "generated"}
        elif kind == "delayed":
            to = item.date + dt.timedelta(days=draw(st.integers(1, 6)))
            ev = {"type": "item_delayed", "item": item.ref, "date": day.isoformat(), "to": to.isoformat(),
                  "scope": draw(st.sampled_from(["item", "element", "all"])), "reason": "generated"}
        else:
            ev = {"type": "dose_modified", "item": item.ref, "date": day.isoformat(), "percent": 75,
                  "of": draw(st.sampled_from(["standard", "previous"])),
                  "scope": draw(st.sampled_from(["item", "element"])), "reason": "generated"}
        events.append(ev)
    under_way = [e for e in p.elements if e.status == "in_progress" and e.actual_start is not None]
    if under_way and draw(st.integers(0, 4)) == 0:
        span = under_way[0]
        held = span.actual_start + dt.timedelta(days=draw(st.integers(0, 20)))
        if held <= as_of:
            events.append({"type": "element_held", "element": span.id, "date": held.isoformat(),
                           "reason": "generated"})
            resumed = held + dt.timedelta(days=draw(st.integers(1, 10)))
            if resumed <= as_of and draw(st.booleans()):
                events.append({"type": "element_resumed", "element": span.id, "date": resumed.isoformat()})
    return events


@pytest.mark.slow
def test_fast_path_equals_the_reference_on_recorded_histories() -> None:
    """The plan's fast path (moves on the compiled table, doses given applied through the
    reference index on tuples, overdue items marked as they are emitted) gives the same plan
    JSON, or the same refusal, as the reference (the ``transitions`` machine, every item event
    through the general path on lists, overdue marked in a second pass), on every example
    patient (every shipped protocol) with generated recorded histories, as of a generated day.
    The profile sets the number of examples (``ci`` 60, ``dev`` 30; see ``tests/conftest.py``)."""
    from hypothesis import event, given
    from hypothesis import strategies as st

    loaded = [protocol.load_patient(f) for f in ALL_EXAMPLES]
    assert {p.protocol.split("@")[0] for p in loaded} == {p.id for p in protocol.list_protocols()}
    end = D(2026, 11, 21)

    @given(st.sampled_from(loaded), st.data())
    def check(patient: protocol.Patient, data: Any) -> None:
        pr = protocol.load_protocol(patient.protocol)
        as_of = data.draw(st.dates(min_value=patient.start_date + dt.timedelta(days=3), max_value=end))
        base = patient.model_dump(mode="json")
        try:
            bare = protocol.plan(patient, pr, as_of)
        except protocol.ProtocolError:
            event("the example itself is refused on that day")
            return
        base["events"] = [*base["events"], *_recorded(data.draw, bare, as_of)]
        generated = protocol.Patient.model_validate(base)
        fast = _plan_or_refusal(generated, pr, as_of, reference=False)
        event("refused" if fast.startswith(("PatientError", "IneligibleError")) else "planned")
        assert fast == _plan_or_refusal(generated, pr, as_of, reference=True)

    check()
