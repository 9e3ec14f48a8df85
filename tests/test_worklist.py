"""The worklist (``protocol._worklist``) and its projection in the registry: the rows equal what
the patients' plans say, the projection is maintained by every write and refreshed only when
stale (another day, a longer horizon, another protocol definition), and a patient that cannot
be planned is listed, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import protocol
from protocol import _schedule
from protocol._errors import PatientError, Problem
from protocol._registry import Registry
from protocol._worklist import CATEGORIES, Worklist, project

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "examples" / "patients" / f"{name}.yaml" for name in ("hr-to-hsct", "mr-on-time", "mr-pending-mrd")]
TODAY = dt.date(2026, 11, 21)


@pytest.fixture()
def reg(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "r.db", create=True, today=lambda: TODAY)
    for example in EXAMPLES:
        r.add_patient(example, by="alice")
    yield r
    r.close()


def expected_rows(start: dt.date, days: int) -> set[tuple[str, str, str, str]]:
    """(date, patient, category, item) straight from each example's plan, independently of the projection."""
    end = start + dt.timedelta(days=days)
    out = set()
    for example in EXAMPLES:
        p = protocol.plan(protocol.load_patient(example), as_of=start)
        for item in p.items:
            if item.status == "overdue":
                out.add((item.date.isoformat(), p.patient.id, "overdue", item.ref))
            elif start <= item.date < end and item.status in ("planned", "pending_decision"):
                out.add((item.date.isoformat(), p.patient.id, "due", item.ref))
        for d in p.pending:
            if d.date < end:
                out.add((d.date.isoformat(), p.patient.id, "waiting", d.id))
        for dev in p.deviations:
            if start - dt.timedelta(days=days) <= dt.date.fromisoformat(dev["date"]) < end \
                    and not (dev["kind"] == "overdue" and (dev["date"], p.patient.id, "overdue", dev["item"]) in out):
                out.add((dev["date"], p.patient.id, "deviation", dev["item"]))
    return out


@pytest.mark.parametrize("start, days", [(TODAY, 7), (TODAY, 28), (dt.date(2026, 8, 1), 14), (dt.date(2026, 9, 20), 7)])
def test_rows_are_what_the_plans_say(reg: Registry, start: dt.date, days: int) -> None:
    wl = reg.worklist(start, days)
    got = {(r[0], r[1], r[2], r[6]) for r in wl.rows}
    assert got == expected_rows(start, days)
    assert any(r[2] == "due" for r in wl.rows)
    if start == dt.date(2026, 9, 20):  # INF-0003's weight change of 2026-09-14 is in the look-back
        assert [(r[1], r[3]) for r in wl.rows if r[2] == "deviation"] == [("INF-0003", "weight_change")]
    keys = [(r[0], r[1]) for r in wl.rows]
    assert keys == sorted(keys)


def test_due_assessments_waiting_decisions_and_overdue(reg: Registry) -> None:
    rows = reg.worklist(TODAY, 7).rows
    waiting = [r for r in rows if r[2] == "waiting"]
    assert [(r[1], r[6], r[8]) for r in waiting] == [("INF-0003", "pre_octadad", "waits for mrd:pre_octadad")]
    overdue = [r for r in rows if r[2] == "overdue"]
    assert overdue and all(r[0] < TODAY.isoformat() for r in overdue)
    assert {r[3] for r in rows} <= {"administration", "assessment", "decision", "bag_change", "infusion_bag",
                                    "out_of_window", "overdue", "weight_change", "count_gate", "dose_above_plan"}
    # Doses are on the due administrations.
    assert all(r[8] for r in rows if r[2] == "due" and r[3] == "administration")


def test_writes_keep_the_projection_fresh(reg: Registry) -> None:
    assert reg.worklist(TODAY, 7).refreshed == 0  # every add projected its patient as of today
    reg.record("INF-0003", "mrd", {"timepoint": "pre_octadad", "date": "2026-11-20", "value": 0}, by="bob")
    wl = reg.worklist(TODAY, 7)
    assert wl.refreshed == 0
    assert not [r for r in wl.rows if r[2] == "waiting"]
    assert not [r for r in wl.rows if r[1] == "INF-0003" and r[10]]  # no pending branch left
    assert {(r[0], r[1], r[2], r[6]) for r in wl.rows} == {
        (d, p, c, i) for d, p, c, i in _with_result(TODAY, 7)}


def _with_result(start: dt.date, days: int) -> set[tuple[str, str, str, str]]:
    rows = set()
    for r in expected_rows(start, days):
        if r[1] != "INF-0003":
            rows.add(r)
    data = protocol.load_patient(ROOT / "examples/patients/mr-pending-mrd.yaml").model_dump(mode="json")
    data["mrd"].append({"timepoint": "pre_octadad", "date": "2026-11-20", "value": 0})
    p = protocol.plan(protocol.Patient.model_validate(data), as_of=start)
    end = start + dt.timedelta(days=days)
    for item in p.items:
        if item.status == "overdue":
            rows.add((item.date.isoformat(), "INF-0003", "overdue", item.ref))
        elif start <= item.date < end and item.status in ("planned", "pending_decision"):
            rows.add((item.date.isoformat(), "INF-0003", "due", item.ref))
    for dev in p.deviations:
        if start - dt.timedelta(days=days) <= dt.date.fromisoformat(dev["date"]) < end and dev["kind"] != "overdue":
            rows.add((dev["date"], "INF-0003", "deviation", dev["item"]))
    return rows


def test_staleness_rules(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    tomorrow = TODAY + dt.timedelta(days=1)
    assert reg.worklist(tomorrow, 7).refreshed == 3  # computed for another day
    assert reg.worklist(tomorrow, 7).refreshed == 0
    assert reg.worklist(tomorrow, 30).refreshed == 3  # a longer horizon than stored
    assert reg.worklist(tomorrow, 10).refreshed == 0  # a shorter one is served
    monkeypatch.setattr("protocol._registry._definition_key", lambda ref: "another release")
    assert reg.worklist(tomorrow, 10).refreshed == 3  # computed by another release/definition
    assert reg.worklist(tomorrow, 10).refreshed == 0


def test_a_fresh_projection_is_served_without_planning(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_plan(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("plan() called for a fresh projection")

    monkeypatch.setattr(_schedule, "plan", no_plan)
    wl = reg.worklist(TODAY, 7)
    assert wl.refreshed == 0 and wl.rows


def test_a_patient_that_cannot_be_planned_is_listed(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    real = _schedule.plan

    def broken_for_one(patient: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(patient, "id", None) == "INF-0002":
            raise PatientError(Problem("INF-0002", "protocol", "no such protocol"))
        return real(patient, *args, **kwargs)

    monkeypatch.setattr(_schedule, "plan", broken_for_one)
    wl = reg.worklist(TODAY + dt.timedelta(days=1), 7)
    problems = [r for r in wl.rows if r[2] == "problem"]
    assert [(r[1], r[8]) for r in problems] == [("INF-0002", "INF-0002: protocol: no such protocol")]
    assert {r[1] for r in wl.rows} == {"INF-0001", "INF-0002", "INF-0003"}
    assert "1 patients that cannot be planned" in wl.table()


def test_days_must_be_positive(reg: Registry) -> None:
    with pytest.raises(protocol.InputError, match="--days"):
        reg.worklist(TODAY, 0)


# --------------------------------------------------------------------------- project() on its own


def _item(date: dt.date, ref: str, status: str, kind: str = "administration", study: str | None = None) -> Any:
    element, rest = ref.split(":")
    key, day = rest.split("@")
    slot = SimpleNamespace(element=element, key=key, kind=kind, study=study, name=key.title(),
                           route="IV" if kind == "administration" else None)
    return SimpleNamespace(ordinal=date.toordinal(), date=date, status=status, slot=slot, ref=ref,
                           element_day=int(day), dose=None, branch=None, note=None)


def test_project_selects_by_status_and_window() -> None:
    d = TODAY
    plan = SimpleNamespace(
        items=[
            _item(d - dt.timedelta(days=3), "ib:marrow@29", "overdue", "assessment", "mrd"),
            _item(d - dt.timedelta(days=1), "ib:drug@27", "unrecorded"),
            _item(d, "ib:drug@30", "given"),
            _item(d, "ib:lp@30", "planned", "assessment", "lumbar_puncture"),
            _item(d + dt.timedelta(days=1), "ib:drug@31", "held"),
            _item(d + dt.timedelta(days=2), "ib:drug@32", "omitted"),
            _item(d + dt.timedelta(days=6), "ib:drug@36", "planned"),
            _item(d + dt.timedelta(days=7), "ib:drug@37", "planned"),  # past the horizon
        ],
        pending=[SimpleNamespace(date=d + dt.timedelta(days=2), at="ib", id="soon", waiting_for=("mrd:x",),
                                 status="pending", branch=None),
                 SimpleNamespace(date=d + dt.timedelta(days=40), at="ib", id="later", waiting_for=("mrd:y",),
                                 status="pending", branch=None)],
        deviations=[
            {"date": (d - dt.timedelta(days=3)).isoformat(), "element": "ib", "item": "ib:marrow@29",
             "kind": "overdue", "message": "nothing recorded"},  # already an overdue row
            {"date": (d - dt.timedelta(days=5)).isoformat(), "element": "ib", "item": "ib:drug@25",
             "kind": "out_of_window", "message": "given 3 days late"},
            {"date": (d - dt.timedelta(days=30)).isoformat(), "element": "ib", "item": None,
             "kind": "weight_change", "message": "too old for this worklist"},
        ],
    )
    rows = project(plan, d, 7)
    assert [(r[1], r[5]) for r in rows] == [("overdue", "ib:marrow@29"), ("due", "ib:lp@30"), ("due", "ib:drug@36"),
                                            ("waiting", "soon"), ("deviation", "ib:drug@25")]
    assert rows[1][3] == "lumbar_puncture" and rows[3][7] == "waits for mrd:x"


def test_output_forms() -> None:
    rows = [("2026-11-21", "P-1", "due", "administration", None, "ib", "ib:x@1", "X", "IV 1 mg", "planned", None),
            ("2026-11-21", "P-22", "waiting", "decision", None, "ib", "d", "decision d", "waits for mrd:d",
             "pending", "a→b")]
    wl = Worklist(TODAY, 7, rows, 0)
    data = json.loads(wl.to_json())
    assert data == wl.to_dict()
    assert data["to"] == "2026-11-27" and data["counts"]["due"] == 1
    assert [dict(zip(data["fields"], r)) for r in data["rows"]] == wl.records()
    assert wl.records()[1]["branch"] == "a→b"
    text = wl.table()
    assert text.splitlines()[0].startswith("worklist 2026-11-21 to 2026-11-27 (7 days): 1 due")
    assert "P-22" in text and "WAITING" in text and "(if a→b)" in text
    assert "nothing to do" in Worklist(TODAY, 7, [], 0).table()
    assert json.loads(Worklist(TODAY, 7, [], 0).to_json())["rows"] == []
    assert set(CATEGORIES) == {"problem", "overdue", "waiting", "deviation", "due"}
