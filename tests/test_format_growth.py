"""Format growth in ``_machine`` (``check_sugar``, ``expand``) and ``_schedule``: repeated
elements (cycles), elements that replace another on a condition, and an end of therapy
anchored to an element's start. Each is tested on a mutated copy of the shipped definition
and through the plan of a patient."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import protocol

D = dt.date
PH = {"evidence": "placeholder"}


def _element(defn: dict[str, Any], eid: str) -> dict[str, Any]:
    return next(e for e in defn["elements"] if e["id"] == eid)


def _repeat_blina(defn: dict[str, Any], count: int = 2, gap: int | None = 14) -> dict[str, Any]:
    rep: dict[str, Any] = {"count": {"value": count, **PH}}
    if gap is not None:
        rep["gap_days"] = {"value": gap, **PH}
    _element(defn, "blinatumomab")["repeat"] = rep
    return defn


def _replacement(defn: dict[str, Any]) -> dict[str, Any]:
    alt = copy.deepcopy(_element(defn, "ib"))
    alt["id"], alt["title"] = "alt_ib", "Alternative consolidation"
    alt["replaces"] = {"element": "ib", "when": {"fact": "risk_group", "eq": "HR"},
                       "rule_source": "vandersluis2023", "rule_evidence": "placeholder"}
    defn["elements"].insert(3, alt)
    return defn


# --------------------------------------------------------------------------- repeat


def test_repeat_expands_into_cycles_with_their_own_time_points(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path]) -> None:
    p = protocol.load_protocol(write_definition(_repeat_blina(shipped_definition, 3)))
    assert {"blinatumomab", "blinatumomab_2", "blinatumomab_3"} <= set(p.elements)
    assert [e.dest for e in p.table["blinatumomab"]] == ["blinatumomab_2"]
    assert [e.dest for e in p.table["blinatumomab_2"]] == ["blinatumomab_3"]
    assert [e.dest for e in p.table["blinatumomab_3"]] == ["ib"]  # the element's own way out leaves the last cycle
    assert p.elements["blinatumomab_2"].title.endswith("(cycle 2 of 3)")
    assert p.elements["blinatumomab"].title.endswith("(cycle 1 of 3)")
    assert "blinatumomab_day15_3" in p.timepoints and "blinatumomab_day29_2" in p.timepoints
    assert p.elements["blinatumomab_2"].gap == 14
    # The file as written is kept: validation counts each value once.
    assert p.source.elements[1].repeat is not None
    assert p.definition.elements[1].repeat is None


def test_repeated_cycles_are_planned_one_after_another(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path],
        make_patient: Callable[..., Path], as_of: dt.date) -> None:
    p = protocol.load_protocol(write_definition(_repeat_blina(shipped_definition, 2, gap=14)))
    plan = protocol.plan(make_patient(events=[]), p, as_of=as_of)
    spans = {e.id: e for e in plan.elements}
    one, two, ib = spans["blinatumomab"], spans["blinatumomab_2"], spans["ib"]
    assert one.planned_end is not None and two.planned_start is not None and two.planned_end is not None
    assert two.planned_start == one.planned_end + dt.timedelta(days=15)  # 14 treatment-free days
    assert ib.planned_start == two.planned_end + dt.timedelta(days=1)
    marrows = [i for i in plan.items if i.kind == "assessment" and i.element == "blinatumomab_2"]
    assert {i.slot.timepoint for i in marrows} == {"blinatumomab_day15_2", "blinatumomab_day29_2"}


@pytest.mark.parametrize(("mutate", "field", "phrase"), [
    (lambda d: _repeat_blina(d, 1), "elements[1].repeat", "expected a whole number of cycles from 2 to 20"),
    (lambda d: _repeat_blina(d, 2, gap=-1), "elements[1].repeat.gap_days", "number of days from 0 to 3653"),
    (lambda d: (_repeat_blina(d), d["elements"].append({**copy.deepcopy(_element(d, "ib")),
                                                        "id": "blinatumomab_2"}))[0],
     "elements[1].repeat", "already an element id"),
])
def test_bad_repeats_point_at_the_file(shipped_definition: dict[str, Any], write_definition: Callable[..., Path],
                                       mutate: Callable[[dict[str, Any]], Any], field: str, phrase: str) -> None:
    mutate(shipped_definition)
    path = write_definition(shipped_definition)
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(path)
    assert any(p.field.startswith(field) and phrase in p.message for p in info.value.problems), info.value.problems


def test_problem_in_a_later_cycle_points_at_the_element_as_written(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path]) -> None:
    # A day outside the element is reported once per cycle, each at the element's line.
    blina = _element(_repeat_blina(shipped_definition), "blinatumomab")
    blina["assessments"][0]["days"] = {"value": 40, **PH}
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(write_definition(shipped_definition))
    fields = {p.field for p in info.value.problems}
    assert fields == {"elements[1].assessments[0].days.value"}
    assert all(p.line is not None for p in info.value.problems)


# --------------------------------------------------------------------------- replaces


def test_replacement_takes_the_place_of_its_element_for_whom_its_rule_holds(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path]) -> None:
    p = protocol.load_protocol(write_definition(_replacement(shipped_definition)))
    edges = p.table["blinatumomab"]
    assert [(e.dest, e.text) for e in edges] == [("alt_ib", "risk group = HR"), ("ib", "otherwise")]
    assert [e.dest for e in p.table["alt_ib"]] == [e.dest for e in p.table["ib"]] == ["marma"]
    assert any("Replaces ib when risk group = HR" in n for n in p.elements["alt_ib"].model.notes)


def test_replacement_is_planned_for_hr_and_not_for_mr(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path],
        make_patient: Callable[..., Path], as_of: dt.date) -> None:
    p = protocol.load_protocol(write_definition(_replacement(shipped_definition)))
    mr = protocol.plan(make_patient(events=[]), p, as_of=as_of)
    hr = protocol.plan(make_patient(events=[], wbc_at_diagnosis=400, day8_blasts_per_ul=2400,
                                    birth_date="2026-01-01"), p, as_of=as_of)
    assert hr.risk.group == "HR" and mr.risk.group == "MR"
    assert [e.id for e in mr.elements][:4] == ["induction", "blinatumomab", "ib", "marma"]
    assert [e.id for e in hr.elements][:4] == ["induction", "blinatumomab", "alt_ib", "marma"]


def test_replacement_combined_with_a_guarded_entry(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path]) -> None:
    # Replace OCTADAD (entered by a default edge after a guarded HSCT edge): the copy is tried
    # before the edge it copies, so the guard order of the decision is kept.
    alt = copy.deepcopy(_element(shipped_definition, "octadad"))
    alt["id"] = "alt_octadad"
    alt["replaces"] = {"element": "octadad", "when": {"mrd": "pre_octadad", "lt": {"value": 1e-4, **PH}},
                       "rule_source": "vandersluis2023", "rule_evidence": "placeholder"}
    shipped_definition["elements"].append(alt)
    p = protocol.load_protocol(write_definition(shipped_definition))
    assert [e.dest for e in p.table["marma"]] == ["hsct", "alt_octadad", "octadad"]


@pytest.mark.parametrize(("replaces", "field", "phrase"), [
    ({"element": "nowhere"}, "elements[3].replaces.element", "expected an element id"),
    ({"element": "alt_ib"}, "elements[3].replaces.element", "cannot replace itself"),
    ({"element": "induction"}, "elements[3].replaces.element", "cannot be replaced"),
])
def test_bad_replacements(shipped_definition: dict[str, Any], write_definition: Callable[..., Path],
                          replaces: dict[str, Any], field: str, phrase: str) -> None:
    _replacement(shipped_definition)
    _element(shipped_definition, "alt_ib")["replaces"].update(replaces)
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(write_definition(shipped_definition))
    assert any(p.field == field and phrase in p.message for p in info.value.problems), info.value.problems


def test_replacement_with_its_own_transition_is_refused(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path]) -> None:
    _replacement(shipped_definition)
    shipped_definition["transitions"].append({"from": "alt_ib", "to": "marma"})
    with pytest.raises(protocol.DefinitionError, match="takes its transitions from it"):
        protocol.load_protocol(write_definition(shipped_definition))


# --------------------------------------------------------------------------- end of therapy


def _anchor_on_octadad(defn: dict[str, Any]) -> dict[str, Any]:
    defn["end_of_therapy"].update({"anchor": "element_start", "anchor_element": "octadad",
                                   "weeks": {"value": 52, **PH}})
    return defn


def test_end_of_therapy_anchored_to_an_element_start_moves_with_it(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path],
        make_patient: Callable[..., Path]) -> None:
    p = protocol.load_protocol(write_definition(_anchor_on_octadad(shipped_definition)))
    planned = protocol.plan(make_patient(events=[]), p, as_of=D(2026, 5, 10))
    octadad = next(e for e in planned.elements if e.id == "octadad")
    assert octadad.planned_start is not None
    assert planned.end_of_therapy == octadad.planned_start + dt.timedelta(days=52 * 7 - 1)
    # A recorded late start of OCTADAD moves the end of therapy with it.
    events = [{"type": "element_started", "element": "induction", "date": "2026-05-04"},
              {"type": "element_completed", "element": "induction", "date": "2026-06-07"},
              {"type": "element_started", "element": "blinatumomab", "date": "2026-06-08"},
              {"type": "element_completed", "element": "blinatumomab", "date": "2026-07-06"},
              {"type": "element_started", "element": "ib", "date": "2026-07-07"},
              {"type": "element_completed", "element": "ib", "date": "2026-08-04"},
              {"type": "element_started", "element": "marma", "date": "2026-08-05"},
              {"type": "element_completed", "element": "marma", "date": "2026-09-22"},
              {"type": "element_started", "element": "octadad", "date": "2026-10-01"}]
    late = protocol.plan(make_patient(events=events, mrd=[{"timepoint": "pre_octadad", "date": "2026-09-22",
                                                          "value": 0}]), p, as_of=D(2026, 11, 21))
    assert late.end_of_therapy == D(2026, 10, 1) + dt.timedelta(days=52 * 7 - 1)
    maintenance = next(e for e in late.elements if e.id == "maintenance")
    assert maintenance.planned_end == late.end_of_therapy
    assert max(i.date for i in late.items) == late.end_of_therapy


def test_element_anchor_needs_its_element(shipped_definition: dict[str, Any],
                                          write_definition: Callable[..., Path]) -> None:
    shipped_definition["end_of_therapy"].update({"anchor": "element_start", "anchor_element": "nowhere"})
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(write_definition(shipped_definition))
    assert [p.field for p in info.value.problems] == ["end_of_therapy.anchor_element"]
    shipped_definition["end_of_therapy"].pop("anchor_element")
    with pytest.raises(protocol.DefinitionError, match="anchor: element_start needs anchor_element"):
        protocol.load_protocol(write_definition(shipped_definition))


def test_an_unknown_length_or_gap_is_a_clear_error_not_a_crash(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path]) -> None:
    _element(shipped_definition, "ib")["length_days"] = {"value": None, **PH}
    _element(shipped_definition, "marma")["start"] = {"gap_days": {"value": None, **PH}}
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(write_definition(shipped_definition))
    got = {(p.field, p.message.split(":")[0]) for p in info.value.problems}
    assert got == {("elements[2].length_days.value", "a length cannot be unknown (value"),
                   ("elements[3].start.gap_days.value", "a gap cannot be unknown (value")}


def test_repeat_up_to_makes_later_cycles_a_recorded_choice(
        shipped_definition: dict[str, Any], write_definition: Callable[..., Path],
        make_patient: Callable[..., Path], as_of: dt.date) -> None:
    _repeat_blina(shipped_definition, 3, gap=0)
    _element(shipped_definition, "blinatumomab")["repeat"]["up_to"] = True
    p = protocol.load_protocol(write_definition(shipped_definition))
    assert p.choices == {"blinatumomab_after_1", "blinatumomab_after_2"}
    assert [e.dest for e in p.table["blinatumomab"]] == ["blinatumomab_2", "ib"]
    assert [e.dest for e in p.table["blinatumomab_2"]] == ["blinatumomab_3", "ib"]
    assert [e.dest for e in p.table["blinatumomab_3"]] == ["ib"]
    # Planned: the choice after cycle 1 is pending, every option projected.
    plan = protocol.plan(make_patient(events=[]), p, as_of=D(2026, 5, 10))
    assert plan.pending[0].id == "blinatumomab_after_1" and plan.pending[0].branch is None
    assert {"blinatumomab_after_1", "blinatumomab_after_2"} <= {d.id for d in plan.pending}
    # Recorded: starting IB after one cycle records "no more cycles", with no warning.
    events = [{"type": "element_started", "element": "induction", "date": "2026-05-04"},
              {"type": "element_completed", "element": "induction", "date": "2026-06-07"},
              {"type": "element_started", "element": "blinatumomab", "date": "2026-06-08"},
              {"type": "element_completed", "element": "blinatumomab", "date": "2026-07-06"},
              {"type": "element_started", "element": "ib", "date": "2026-07-07"}]
    plan = protocol.plan(make_patient(events=events), p, as_of=as_of)
    assert plan.facts["arm:blinatumomab_after_1"] == "no_more_cycles"
    assert "blinatumomab_2" not in {e.id for e in plan.elements}
    assert not [w for w in plan.warnings if "blinatumomab_after_1" in w]
    # A recorded randomised event for a choice is refused when it contradicts the start.
    contradiction = [*events[:4], {"type": "randomised", "randomisation": "blinatumomab_after_1",
                                   "arm": "another_cycle", "date": "2026-07-06"}, events[4]]
    with pytest.raises(protocol.PatientError, match="contradicts the protocol's rule"):
        protocol.plan(make_patient(events=contradiction), p, as_of=as_of)
