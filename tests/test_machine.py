"""Definition checks, compilation, day templates, the shared transitions Machine, the diagram."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import transitions

import protocol
from protocol._machine import OUTCOMES, check_definition

Mutate = Callable[[dict[str, Any]], None]

# Indices in the shipped definition (checked in test_shipped_layout below).
INDUCTION, BLINA, IB, MARMA, OCTADAD, MAINTENANCE, HSCT = range(7)
T_MARMA_HSCT, T_MARMA_OCTADAD, T_OCTADAD_MAINTENANCE = 3, 4, 5


def test_shipped_layout(shipped_definition: dict[str, Any]) -> None:
    ids = [e["id"] for e in shipped_definition["elements"]]
    assert ids == ["induction", "blinatumomab", "ib", "marma", "octadad", "maintenance", "hsct"]
    pairs = [(t["from"], t["to"]) for t in shipped_definition["transitions"]]
    assert pairs == [("induction", "blinatumomab"), ("blinatumomab", "ib"), ("ib", "marma"), ("marma", "hsct"),
                     ("marma", "octadad"), ("octadad", "maintenance")]
    adm = [a.get("id", a["drug"]) for a in shipped_definition["elements"][INDUCTION]["administrations"]]
    assert adm[:2] == ["prednisone", "methotrexate_it"]


# --------------------------------------------------------------------------- the shipped protocols


def test_shipped_protocol_compiles(shipped_protocols: protocol.Protocol) -> None:
    p = shipped_protocols
    assert isinstance(p, protocol.Protocol)
    assert p.path is not None and Path(p.path).stem == p.id
    assert check_definition(p.definition) == []
    assert p.initial == p.definition.elements[0].id
    assert list(p.elements) == [e.id for e in p.definition.elements]
    assert p.machine is protocol.load_protocol(p.path).machine  # compiled once, cached


def test_list_protocols_matches_the_files(shipped_protocols: protocol.Protocol) -> None:
    assert shipped_protocols.id in {p.id for p in protocol.list_protocols()}


def test_shipped_protocol_numbers(shipped: protocol.Protocol) -> None:
    assert shipped.version == "1.0.0"
    assert shipped.eot_anchor == "diagnosis" and shipped.eot_days == 104 * 7
    lengths = {k: (e.length, e.first_day, e.gap, e.open_ended, e.final) for k, e in shipped.elements.items()}
    assert lengths == {
        "induction": (35, 1, 0, False, False),
        "blinatumomab": (29, 1, 0, False, False),
        "ib": (29, 36, 0, False, False),
        "marma": (49, 1, 0, False, False),
        "octadad": (49, 1, 0, False, False),
        "maintenance": (None, 1, 0, True, True),
        "hsct": (None, 1, 0, False, True),
    }
    assert [e.dest for e in shipped.table["marma"]] == ["hsct", "octadad"]
    assert {e.decision for e in shipped.table["marma"]} == {"pre_octadad"}
    assert shipped.table["marma"][1].guard is None and shipped.table["marma"][1].text == "otherwise"


def test_load_protocol_by_id_and_version(shipped: protocol.Protocol) -> None:
    assert protocol.load_protocol("interfant06-blinatumomab@1.0.0") is shipped
    with pytest.raises(protocol.DefinitionError, match="expected version 9.9.9, got 1.0.0"):
        protocol.load_protocol("interfant06-blinatumomab@9.9.9")
    with pytest.raises(protocol.DefinitionError, match="not a shipped protocol id"):
        protocol.load_protocol("no-such-protocol")


@pytest.mark.parametrize("length", [1, 7, 35, 49, 400])
def test_templates_sorted_and_inside_the_element(shipped_protocols: protocol.Protocol, length: int) -> None:
    for el in shipped_protocols.elements.values():
        if el.length is None and not el.open_ended:
            continue  # a final element without days (HSCT)
        n = length if el.open_ended else el.length
        assert n is not None
        days, ks, slots = el.template(n)
        assert len(days) == len(ks) == len(slots)
        assert list(zip(days, ks, strict=True)) == sorted(zip(days, ks, strict=True))
        assert all(el.first_day <= d <= el.first_day + n - 1 for d in days)
        assert all(s.element == el.id and el.slots[k] is s for k, s in zip(ks, slots, strict=True))
        # Every dated day of every slot is there, once.
        for slot in el.slots:
            expected = sorted({d for a, b, step in slot.days
                               for d in range(a, (el.first_day + n - 1 if b is None else b) + 1, step)})
            assert [d for d, s in zip(days, slots, strict=True) if s is slot] == expected


def test_template_contents(shipped: protocol.Protocol) -> None:
    ib = shipped.elements["ib"]
    days, _, slots = ib.template(29)
    cyclo = [d for d, s in zip(days, slots, strict=True) if s.key == "cyclophosphamide"]
    assert cyclo == [36, 64]
    cytarabine = [d for d, s in zip(days, slots, strict=True) if s.key == "cytarabine"]
    assert cytarabine == [38, 39, 40, 41, 45, 46, 47, 48, 52, 53, 54, 55, 59, 60, 61, 62]
    maint = shipped.elements["maintenance"]
    days, _, slots = maint.template(22)
    mtx = [d for d, s in zip(days, slots, strict=True) if s.key == "methotrexate_po"]
    assert mtx == [1, 8, 15, 22]
    assert [d for d, s in zip(days, slots, strict=True) if s.key == "mercaptopurine"] == list(range(1, 23))
    # Unknown days (value: null) produce no item.
    induction = shipped.elements["induction"]
    days, _, slots = induction.template(35)
    assert not any(s.key == "asparaginase" for s in slots)
    assert [d for d, s in zip(days, slots, strict=True) if s.key == "prednisone"] == [1, 2, 3, 4, 5, 6, 7]


# --------------------------------------------------------------------------- the Machine


def test_machine_is_one_shared_machine_without_auto_transitions(shipped: protocol.Protocol) -> None:
    m = shipped.machine
    assert isinstance(m, transitions.Machine)
    assert m.auto_transitions is False
    assert "to_induction" not in m.events and "to_hsct" not in m.events
    assert set(m.events) == {"start_blinatumomab", "start_ib", "start_marma", "start_hsct", "start_octadad",
                             "start_maintenance", *OUTCOMES}
    assert set(m.states) == {*shipped.elements, *OUTCOMES}
    assert m.initial == "induction"
    assert m.models == []


def test_machine_has_no_models_after_planning(shipped: protocol.Protocol, example_patients: list[Path],
                                              as_of: dt.date) -> None:
    for path in example_patients * 2:
        protocol.plan(path, shipped, as_of=as_of)
    assert shipped.machine.models == []
    assert shipped.machine is protocol.load_protocol("interfant06-blinatumomab").machine


def test_machine_replays_on_a_cursor(shipped: protocol.Protocol) -> None:
    m = shipped.machine
    cursor = shipped.cursor({"risk_group": "MR", "mrd:pre_octadad": 0.0})
    assert cursor.state == "induction"
    assert m.events["start_blinatumomab"].trigger(cursor) is True
    assert cursor.state == "blinatumomab"
    cursor.state = "marma"
    assert m.events["start_hsct"].trigger(cursor) is False  # rule false: refused
    assert cursor.state == "marma"
    assert m.events["start_octadad"].trigger(cursor) is True
    unknown = shipped.cursor({"risk_group": "MR"})
    unknown.state = "marma"
    assert m.events["start_hsct"].trigger(unknown) is True  # unknown is not "definitely false"
    with pytest.raises(transitions.MachineError):
        m.events["start_ib"].trigger(shipped.cursor({}))  # not from induction
    c = shipped.cursor({})
    assert m.events["relapse"].trigger(c) is True and c.state == "relapse"
    assert m.models == []


def test_mermaid(shipped_protocols: protocol.Protocol) -> None:
    text = shipped_protocols.mermaid()
    assert "stateDiagram-v2" in text
    for element in shipped_protocols.elements:
        assert element in text
    for el in shipped_protocols.elements.values():
        if el.final:
            assert f"{el.id} --> [*]" in text


def test_mermaid_shipped_guards(shipped: protocol.Protocol) -> None:
    text = shipped.mermaid()
    assert "marma --> hsct: start_hsct [risk group = HR or MRD at pre_octadad ≥ 5e-4]" in text
    assert "marma --> octadad: start_octadad [otherwise]" in text
    assert "induction --> blinatumomab: start_blinatumomab\n" in text
    assert "[*] --> induction" in text
    for outcome in OUTCOMES:
        assert outcome not in text


# --------------------------------------------------------------------------- invalid definitions


def _problems(write: Callable[[dict[str, Any]], Path], data: dict[str, Any]) -> tuple[Path, list[protocol.Problem]]:
    path = write(data)
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(path)
    assert isinstance(info.value, protocol.InputError)
    for p in info.value.problems:
        assert p.file == str(path)
    return path, info.value.problems


def _set(path: tuple[Any, ...], value: Any) -> Mutate:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Mutate:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _append(path: tuple[Any, ...], value: Any) -> Mutate:
    def mutate(d: dict[str, Any]) -> None:
        target: Any = d
        for key in path:
            target = target[key]
        target.append(value)

    return mutate


def _insert_cycle(d: dict[str, Any]) -> None:
    d["transitions"].insert(2, {"from": "ib", "to": "blinatumomab",
                                "when": {"fact": "wbc_at_diagnosis", "gte": {"value": 1000, "evidence": "placeholder"}},
                                "rule_source": "bfm95", "rule_evidence": "placeholder"})


def _swap_marma_edges(d: dict[str, Any]) -> None:
    t = d["transitions"]
    t[T_MARMA_HSCT], t[T_MARMA_OCTADAD] = t[T_MARMA_OCTADAD], t[T_MARMA_HSCT]


INVALID: list[tuple[str, Mutate, str, str]] = [
    ("unknown source key (days)", _set(("elements", INDUCTION, "administrations", 0, "days", "source"), "nosuch"),
     "elements[0].administrations[0].days.source", "expected the key of an entry in `sources`"),
    ("unknown source key (dose)", _set(("elements", BLINA, "administrations", 0, "dose", "amount", "source"), "nejm"),
     "elements[1].administrations[0].dose.amount.source", "got 'nejm'"),
    ("unknown source key (threshold)",
     _set(("risk_groups", 0, "when", "all", 1, "lt", "source"), "nosuch"),
     "risk_groups[0].when.all[1].lt.source", "got 'nosuch'"),
    ("unknown source key (risk group)", _set(("risk_groups", 1, "source"), "nosuch"),
     "risk_groups[1].source", "got 'nosuch'"),
    ("unknown source key (rule_source)", _set(("transitions", T_MARMA_HSCT, "rule_source"), "nosuch"),
     "transitions[3].rule_source", "got 'nosuch'"),
    ("duplicate source key", _append(("sources",), {"key": "bfm95", "citation": "again"}),
     "sources[13].key", "duplicate source key 'bfm95'"),
    ("day after the element", _set(("elements", INDUCTION, "administrations", 1, "days", "value"), "36"),
     "elements[0].administrations[1].days.value", "day 36 is after the element's last day 35"),
    ("range past the element", _set(("elements", MARMA, "administrations", 0, "days", "value"), "1, 40-50"),
     "elements[3].administrations[0].days.value", "day 50 is after the element's last day 49"),
    ("day before first_day", _set(("elements", IB, "administrations", 0, "days", "value"), "35, 64"),
     "elements[2].administrations[0].days.value", "day 35 is before the element's first day 36"),
    ("'end' in a closed element", _set(("elements", INDUCTION, "administrations", 0, "days", "value"), "1-end"),
     "elements[0].administrations[0].days.value", "'end' is only allowed in an open-ended element"),
    ("assessment day outside", _set(("elements", INDUCTION, "assessments", 1, "days", "value"), 36),
     "elements[0].assessments[1].days.value", "day 36 is after"),
    ("unreachable element", _append(("elements",), {"id": "extra", "title": "Extra", "final": True}),
     "elements[7].id", "'extra' cannot be reached from the first element 'induction'"),
    ("dead end", _delete(("transitions", T_OCTADAD_MAINTENANCE)),
     "elements[4]", "'octadad' is a dead end"),
    ("cycle", _insert_cycle,
     "transitions[2].to", "cycle: induction → blinatumomab → ib → blinatumomab"),
    ("default transition not last", _swap_marma_edges,
     "transitions[3].when", "the default transition from 'marma' (no `when`) must come last"),
    ("unknown fact", _set(("risk_groups", 1, "when"), {"fact": "favourite_colour", "eq": "blue"}),
     "risk_groups[1].when.fact", "expected a known fact"),
    ("unknown fact in a nested guard",
     _set(("transitions", T_MARMA_HSCT, "when", "any", 0), {"fact": "risk", "eq": "HR"}),
     "transitions[3].when.any[0].fact", "got 'risk'"),
    ("bad categorical value", _set(("risk_groups", 1, "when"), {"fact": "kmt2a", "eq": "rearanged"}),
     "risk_groups[1].when.eq", "expected one of rearranged, germline, got 'rearanged'"),
    ("bad categorical value in a list", _set(("risk_groups", 1, "when"), {"fact": "sex", "in": ["female", "f"]}),
     "risk_groups[1].when.in", "got 'f'"),
    ("unknown risk group", _set(("transitions", T_MARMA_HSCT, "when", "any", 0, "eq"), "LR"),
     "transitions[3].when.any[0].eq", "expected one of HR, MR, got 'LR'"),
    ("numeric fact compared with eq", _set(("risk_groups", 1, "when"), {"fact": "wbc_at_diagnosis", "eq": "300"}),
     "risk_groups[1].when.eq", "wbc_at_diagnosis is a number"),
    ("categorical fact compared with gte",
     _set(("risk_groups", 1, "when"), {"fact": "kmt2a", "gte": {"value": 1, "evidence": "placeholder"}}),
     "risk_groups[1].when.gte", "kmt2a is categorical"),
    ("derived value not allowed", _set(("derived_facts", 0, "otherwise"), "average"),
     "derived_facts[0].otherwise", "got 'average'"),
    ("timepoint not declared (assessment)", _set(("elements", INDUCTION, "assessments", 1, "timepoint"), "day33"),
     "elements[0].assessments[1].timepoint", "expected a declared time point"),
    ("timepoint not declared (guard)", _set(("transitions", T_MARMA_HSCT, "when", "any", 1, "mrd"), "pre_ocatdad"),
     "transitions[3].when.any[1].mrd", "got 'pre_ocatdad'"),
    ("guarded transition without rule_source", _delete(("transitions", T_MARMA_HSCT, "rule_source")),
     "transitions[3]", "a guarded transition needs rule_source and rule_evidence"),
    ("guarded transition without rule_evidence", _delete(("transitions", T_MARMA_HSCT, "rule_evidence")),
     "transitions[3]", "a guarded transition needs rule_source and rule_evidence"),
    ("transition to an unknown element", _set(("transitions", T_OCTADAD_MAINTENANCE, "to"), "maintainance"),
     "transitions[5].to", "expected an element id"),
    ("duplicate element id", _set(("elements", OCTADAD, "id"), "marma"),
     "elements[4].id", "duplicate element id 'marma'"),
    ("reserved element id", _set(("elements", HSCT, "id"), "relapse"),
     "elements[6].id", "'relapse' is reserved for an outcome"),
    ("final element with a transition out", _set(("elements", OCTADAD, "final"), True),
     "transitions[5].from", "'octadad' is final"),
    ("length not whole", _set(("elements", MARMA, "length_days", "value"), 48.5),
     "elements[3].length_days.value", "expected a whole number of days >= 1, got 48.5"),
    ("end_of_therapy element not open-ended", _set(("end_of_therapy", "element"), "octadad"),
     "end_of_therapy.element", "'octadad' must have until: end_of_therapy"),
    ("unknown initial element", _set(("initial",), "prephase"),
     "initial", "expected an element id"),
    ("timepoint assessment on several days", _set(("elements", MARMA, "assessments", 0, "days", "value"), "48-49"),
     "elements[3].assessments[0].days", "an assessment with a time point must be on one day"),
    # Field-level (pydantic) problems are DefinitionErrors with the same kind of path.
    ("bad day grammar", _set(("elements", INDUCTION, "administrations", 1, "days", "value"), "7-1"),
     "elements[0].administrations[1].days.value", "end is not before its start"),
    ("published without source", _delete(("elements", BLINA, "administrations", 0, "dose", "amount", "source")),
     "elements[1].administrations[0].dose.amount", "a published value must name its source"),
    ("unknown field", _set(("elements", IB, "lenght_days"), 3),
     "elements[2].lenght_days", "unknown field"),
]


@pytest.mark.parametrize(("mutate", "field", "message"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_definition_names_the_field(shipped_definition: dict[str, Any], write_definition: Any,
                                            mutate: Mutate, field: str, message: str) -> None:
    mutate(shipped_definition)
    _, problems = _problems(write_definition, shipped_definition)
    fields = [p.field for p in problems]
    assert field in fields, f"{field!r} not among {fields}"
    matching = [p for p in problems if p.field == field]
    assert any(message in p.message for p in matching), [p.message for p in matching]


def test_unchanged_copy_loads(shipped_definition: dict[str, Any], write_definition: Any) -> None:
    p = protocol.load_protocol(write_definition(shipped_definition))
    assert p.id == "interfant06-blinatumomab"
    assert [e for e in p.elements] == ["induction", "blinatumomab", "ib", "marma", "octadad", "maintenance", "hsct"]


def test_dead_end_also_reports_the_unreachable_element(shipped_definition: dict[str, Any],
                                                       write_definition: Any) -> None:
    del shipped_definition["transitions"][T_OCTADAD_MAINTENANCE]
    _, problems = _problems(write_definition, shipped_definition)
    assert [(p.field, p.message) for p in problems] == [
        ("elements[4]", "'octadad' is a dead end: give it a transition out, or mark it final: true"),
        ("elements[5].id", "'maintenance' cannot be reached from the first element 'induction'"),
    ]


def test_every_problem_is_reported_at_once(shipped_definition: dict[str, Any], write_definition: Any) -> None:
    shipped_definition["elements"][INDUCTION]["administrations"][1]["days"]["value"] = "36"
    shipped_definition["risk_groups"][1]["source"] = "nosuch"
    del shipped_definition["transitions"][T_MARMA_HSCT]["rule_source"]
    path, problems = _problems(write_definition, shipped_definition)
    assert {p.field for p in problems} == {"elements[0].administrations[1].days.value", "risk_groups[1].source",
                                          "transitions[3]"}
    text = path.read_text(encoding="utf-8").splitlines()
    for p in problems:
        assert p.line is not None and 1 <= p.line <= len(text)
    day = next(p for p in problems if p.field == "elements[0].administrations[1].days.value")
    assert "36" in text[day.line - 1]  # type: ignore[operator]


def test_error_message_reads_file_line_field(shipped_definition: dict[str, Any], write_definition: Any) -> None:
    shipped_definition["risk_groups"][1]["when"] = {"fact": "favourite_colour", "eq": "blue"}
    path = write_definition(shipped_definition)
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(path)
    assert str(info.value).startswith(f"{path}:")
    assert ": risk_groups[1].when.fact: expected a known fact" in str(info.value)


# --------------------------------------------------------------------------- the table replays as the machine does


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples" / "patients").glob("*.yaml"))


def _history(draw: Any, pr: protocol.Protocol, base: dict[str, Any], as_of: dt.date) -> list[dict[str, Any]]:
    """Element starts and completions along the protocol's table from the first element, with
    random delays, random (possibly forbidden) branch choices and sometimes an outcome: what
    a coordinator could record, right or wrong."""
    from hypothesis import strategies as st

    events: list[dict[str, Any]] = []
    day = dt.date.fromisoformat(base.get("treatment_start") or base["diagnosis_date"])
    element = pr.initial
    for _ in range(len(pr.elements)):
        if day > as_of:
            break
        events.append({"type": "element_started", "element": element, "date": day.isoformat()})
        el = pr.elements[element]
        length = el.length or 30
        day += dt.timedelta(days=length - 1 + draw(st.integers(0, 3)))
        if draw(st.integers(0, 9)) == 0:
            events.append({"type": draw(st.sampled_from(sorted(OUTCOMES))), "date": day.isoformat(),
                           "reason": "generated"})
            break
        edges = pr.table.get(element, ())
        if not edges or el.final or day > as_of:
            break
        if draw(st.booleans()):
            events.append({"type": "element_completed", "element": element, "date": day.isoformat()})
        day += dt.timedelta(days=1 + draw(st.integers(0, 2)))
        nxt = draw(st.sampled_from([e.dest for e in edges]))
        if nxt == "hsct":
            events.append({"type": "hsct", "date": day.isoformat()})
            break
        element = nxt
    return events


def _outcome(patient: protocol.Patient, pr: protocol.Protocol, as_of: dt.date, via_machine: bool) -> str:
    from protocol import _schedule

    _schedule._Builder.via_machine = via_machine
    try:
        return protocol.plan(patient, pr, as_of).to_json()
    except protocol.ProtocolError as exc:
        return f"{type(exc).__name__}: {exc.problems}"
    finally:
        _schedule._Builder.via_machine = False


def test_table_replay_equals_the_machine_replay() -> None:
    """The per-patient replay runs on the compiled table; the ``transitions`` machine is the
    reference. On generated histories for every shipped protocol (through every example
    patient), right and wrong, both give the same plan JSON or the same refusal."""
    from hypothesis import given
    from hypothesis import strategies as st

    loaded = [(f.name, protocol.load_patient(f)) for f in EXAMPLES]
    assert {p.protocol.split("@")[0] for _, p in loaded} == {p.id for p in protocol.list_protocols()}
    as_of = dt.date(2026, 11, 21)

    @given(st.sampled_from(loaded), st.data())
    def check(example: tuple[str, protocol.Patient], data: Any) -> None:
        _, patient = example
        pr = protocol.load_protocol(patient.protocol)
        base = patient.model_dump(mode="json")
        events = [e for e in base["events"] if e["type"] in ("randomised",)]
        base["events"] = events + _history(data.draw, pr, base, as_of)
        generated = protocol.Patient.model_validate(base)
        assert _outcome(generated, pr, as_of, via_machine=False) == _outcome(generated, pr, as_of, via_machine=True)

    check()


def test_allows_refuses_a_move_the_table_does_not_have(shipped: protocol.Protocol) -> None:
    assert shipped.allows("induction", "blinatumomab", {}) is True
    assert shipped.allows("induction", "maintenance", {}) is False
    # HR patients go to HSCT after MARMA: OCTADAD is refused, as the machine refuses it.
    assert shipped.allows("marma", "octadad", {"risk_group": "HR"}) is False
    assert shipped.allows("marma", "hsct", {"risk_group": "HR"}) is True
