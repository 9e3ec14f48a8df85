"""Paths through a protocol (``protocol._paths``): enumeration, selecting conditions, findings.

The synthetic definitions in ``tests/data/paths/`` each hide one defect (a pre-empted
transition, a contradictory rule, a contradictory path, a gap, a rule that contradicts the
risk-group rules); ``arms.yaml`` has none. Hypothesis checks the symbolic reasoning against
the compiled guards the scheduler runs: a condition's normal form holds exactly when the
guard does, and every fully known patient lies on exactly the path the guards walk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import protocol
from protocol._cli import app
from protocol._models import Condition
from protocol._paths import Categories, Interval, Numbers, _Reasoner, paths
from protocol._rules import compile_condition

DATA = Path(__file__).resolve().parent / "data" / "paths"
SHIPPED = "interfant06-blinatumomab"


def report(name: str) -> Any:
    return paths(protocol.load_protocol(DATA / f"{name}.yaml"))


def kinds(r: Any) -> list[tuple[str, Any]]:
    return [(f.kind, f.edge or f.element) for f in r.findings]


# --------------------------------------------------------------------------- the shipped protocol


def test_shipped_protocol_has_two_paths_selected_by_the_hsct_rule() -> None:
    r = paths(protocol.load_protocol(SHIPPED))
    assert [p.elements for p in r.paths] == [
        ("induction", "blinatumomab", "ib", "marma", "hsct"),
        ("induction", "blinatumomab", "ib", "marma", "octadad", "maintenance"),
    ]
    # HSCT: high risk, or MRD >= 5e-4 before OCTADAD (bassett2023); the default edge is its negation,
    # written with the only other risk group rather than "risk group ≠ HR".
    assert [p.condition for p in r.paths] == ["risk group = HR or MRD at pre_octadad ≥ 5e-4",
                                              "risk group = MR and MRD at pre_octadad < 5e-4"]
    assert [p.decisions for p in r.paths] == [(("pre_octadad", "hsct"),), (("pre_octadad", "octadad"),)]
    assert r.unreachable == [] and r.findings == [] and r.ok
    assert r.finals == ("maintenance", "hsct")
    text = r.to_text()
    assert "risk group = MR and MRD at pre_octadad < 5e-4" in text and "octadad → maintenance" in text


def test_shipped_mermaid_labels_each_branch_with_its_condition() -> None:
    m = paths(protocol.load_protocol(SHIPPED)).mermaid()
    lines = m.splitlines()
    assert "stateDiagram-v2" in lines
    assert "  marma --> hsct: risk group = HR or MRD at pre_octadad ≥ 5e-4" in lines
    assert "  marma --> octadad: risk group = MR and MRD at pre_octadad < 5e-4" in lines
    assert "  induction --> blinatumomab" in lines  # an unconditional step carries no label
    assert "  [*] --> induction" in lines and "  hsct --> [*]" in lines and "  maintenance --> [*]" in lines
    assert "unreachable" not in m


# --------------------------------------------------------------------------- synthetic defects


def test_a_preempted_transition_makes_its_element_unreachable() -> None:
    r = report("shadowed")
    assert r.unreachable == ["c"]
    assert kinds(r) == [("unreachable", "c"), ("never_taken", ("a", "c"))]
    assert [p.condition for p in r.paths] == ["risk group = HR", "risk group = MR"]
    never = r.findings[1].message
    assert "taken earlier by “risk group = HR”" in never
    m = r.mermaid()
    assert "a --> c: never taken" in m and "class c unreachable" in m and 'state "c (unreachable)" as c' in m


def test_a_rule_that_can_never_hold_is_reported_with_the_clash() -> None:
    r = report("contradictory-guard")
    assert r.unreachable == ["c"]
    assert kinds(r) == [("unreachable", "c"), ("contradictory_guard", ("a", "c"))]
    assert "MRD at t1 < 1e-4 excludes MRD at t1 ≥ 5e-4" in r.findings[1].message
    assert [p.condition for p in r.paths] == ["always"]  # the default edge takes everyone


def test_conditions_along_a_path_that_exclude_each_other() -> None:
    r = report("contradictory-path")
    assert r.unreachable == ["c"]
    assert kinds(r) == [("unreachable", "c"), ("contradictory_path", ("b", "c"))]
    msg = r.findings[1].message
    assert msg.startswith("a → b → c:") and "MRD at t1 < 1e-4" in msg and "MRD at t1 ≥ 1e-3" in msg
    assert [(p.elements, p.condition) for p in r.paths] == [(("a", "b", "d"), "MRD at t1 ≥ 1e-3"),
                                                            (("a", "e"), "MRD at t1 < 1e-3")]


def test_rules_are_checked_against_the_risk_group_rules_and_whole_months() -> None:
    r = report("risk-contradiction")
    assert r.unreachable == ["c", "e"]
    assert kinds(r) == [("unreachable", "c"), ("unreachable", "e"),
                        ("contradictory_guard", ("a", "c")), ("contradictory_guard", ("a", "e"))]
    # Both rules are empty sets, so the default edge is taken by everyone.
    assert [p.condition for p in r.paths] == ["always"]


def test_a_branch_excluded_on_one_path_only_is_a_note() -> None:
    """One randomisation read at two decisions (as AALL1731 does): after the arm-B course
    the arm-A branch cannot be taken on that path. That is by design: a note, not a problem."""
    r = report("same-arm-twice")
    assert r.ok and r.problems == [] and r.unreachable == []
    assert [(f.kind, f.edge) for f in r.notes] == [("contradictory_path", ("mid", "late")),
                                                   ("contradictory_path", ("mid", "blina2"))]
    assert [(p.elements, p.condition) for p in r.paths] == [
        (("start", "blina1", "mid", "blina2", "late"), "arm of r = b"),
        (("start", "mid", "late"), "arm of r = a"),
    ]
    assert "notes (2)" in r.to_text() and "every element is reachable" in r.to_text()
    assert json.loads(json.dumps(r.to_dict()))["findings"][0]["severity"] == "note"
    assert report("contradictory-path").problems[0].kind == "unreachable"
    assert not report("contradictory-path").ok


def test_gaps_and_patients_without_a_risk_group() -> None:
    r = report("gap")
    assert r.unreachable == []
    assert kinds(r) == [("no_transition", "a"), ("no_risk_group", None)]
    assert r.findings[0].message == "no transition out of a applies when MRD at t1 ≥ 1e-4 and < 1e-3"
    assert "WBC at diagnosis < 10" in r.findings[1].message


def test_arms_give_one_path_per_arm_and_branch() -> None:
    r = report("arms")
    assert r.ok
    assert [(p.elements, p.condition) for p in r.paths] == [
        (("a", "exp", "late", "tx"), "arm of consolidation = experimental and (risk group = HR or MRD at t1 ≥ 1e-3)"),
        (("a", "exp", "late", "maint"), "arm of consolidation = experimental and risk group = SR and MRD at t1 < 1e-3"),
        (("a", "std", "late", "tx"), "arm of consolidation = standard and (risk group = HR or MRD at t1 ≥ 1e-3)"),
        (("a", "std", "late", "maint"), "arm of consolidation = standard and risk group = SR and MRD at t1 < 1e-3"),
    ]
    branches = {(b.source, b.dest): b.condition for b in r.branches}
    assert branches[("a", "std")] == "arm of consolidation = standard"
    assert branches[("std", "late")] == "always"


# --------------------------------------------------------------------------- the command


def test_paths_command_text_json_and_mermaid() -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["paths", SHIPPED])
    assert text.exit_code == 0, text.output
    assert "2 path(s)" in text.stdout and "risk group = HR or MRD at pre_octadad ≥ 5e-4" in text.stdout
    js = runner.invoke(app, ["paths", str(DATA / "shadowed.yaml"), "--json"])
    assert js.exit_code == 0
    data = json.loads(js.stdout)
    assert data["unreachable"] == ["c"]
    assert [f["kind"] for f in data["findings"]] == ["unreachable", "never_taken"]
    assert data["findings"][1]["edge"] == {"from": "a", "to": "c"}
    assert [p["condition"] for p in data["paths"]] == ["risk group = HR", "risk group = MR"]
    mm = runner.invoke(app, ["paths", SHIPPED, "--mermaid"])
    assert mm.exit_code == 0 and "stateDiagram-v2" in mm.stdout


def test_paths_command_bad_definition_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((DATA / "gap.yaml").read_text().replace("to: c,", "to: zz,"), encoding="utf-8")
    r = CliRunner().invoke(app, ["paths", str(bad)])
    assert r.exit_code == 2
    assert "transitions[1].to: expected an element id" in r.stderr and "Traceback" not in r.output


# --------------------------------------------------------------------------- value sets


def _member(s: Numbers, x: float) -> bool:
    return any((p.lo < x or (p.lo_closed and p.lo == x)) and (x < p.hi or (p.hi_closed and p.hi == x)) for p in s.parts)


@given(st.integers(-5, 20), st.sampled_from(["lt", "lte", "gt", "gte"]), st.booleans(), st.integers(-10, 30))
def test_integer_and_real_intervals_match_the_comparison(t: int, op: str, integer: bool, x: int) -> None:
    part = {"lt": Interval(-math.inf, False, t, False), "lte": Interval(-math.inf, False, t, True),
            "gt": Interval(t, False, math.inf, False), "gte": Interval(t, True, math.inf, False)}[op]
    s = Numbers.of([part], integer)
    value = x / (1 if integer else 2)
    inside = _member(s, value)
    expected = {"lt": value < t, "lte": value <= t, "gt": value > t, "gte": value >= t}[op]
    assert inside == expected
    universe = Numbers.of([Interval(-math.inf, False, math.inf, False)], integer)
    rest = s.complement(universe)
    inside_rest = _member(rest, value)
    assert inside_rest == (not expected)
    assert (s | rest) == universe and (s & rest).empty()


# --------------------------------------------------------------------------- symbolic = concrete

THRESHOLDS = {"wbc_at_diagnosis": [10.0, 300.0], "age_at_diagnosis_months": [3, 6], "mrd:pre_octadad": [1e-4, 5e-4]}


def _leaf(draw: Any) -> dict[str, Any]:
    key = draw(st.sampled_from(["wbc_at_diagnosis", "age_at_diagnosis_months", "mrd:pre_octadad",
                                "prednisone_response", "risk_group"]))
    if key == "prednisone_response":
        op = draw(st.sampled_from(["eq", "ne", "in"]))
        return {"fact": key, op: ["good"] if op == "in" else draw(st.sampled_from(["good", "poor"]))}
    if key == "risk_group":
        op = draw(st.sampled_from(["eq", "ne"]))
        return {"fact": key, op: draw(st.sampled_from(["HR", "MR"]))}
    op = draw(st.sampled_from(["lt", "lte", "gt", "gte"]))
    value = {"value": draw(st.sampled_from(THRESHOLDS[key])), "evidence": "placeholder"}
    if key.startswith("mrd:"):
        return {"mrd": key[4:], op: value}
    return {"fact": key, op: value}


@st.composite
def conditions(draw: Any, depth: int = 0) -> dict[str, Any]:
    kind = draw(st.sampled_from(["leaf", "leaf", "all", "any", "not"] if depth < 3 else ["leaf"]))
    if kind == "leaf":
        return _leaf(draw)
    if kind == "not":
        return {"not": draw(conditions(depth + 1))}
    return {kind: draw(st.lists(conditions(depth + 1), min_size=1, max_size=3))}


facts_strategy = st.fixed_dictionaries({
    "wbc_at_diagnosis": st.sampled_from([0.0, 9.99, 10.0, 10.01, 150.0, 299.9, 300.0, 301.0, 900.0]),
    "age_at_diagnosis_months": st.integers(0, 11),
    "mrd:pre_octadad": st.sampled_from([0.0, 5e-5, 1e-4, 2e-4, 5e-4, 6e-4, 0.01, 1.0]),
    "prednisone_response": st.sampled_from(["good", "poor"]),
    "risk_group": st.sampled_from(["HR", "MR"]),
})


def _holds(r: _Reasoner, dnf: list[dict[str, Any]], facts: dict[str, Any]) -> bool:
    def member(key: str, s: Any) -> bool:
        x = facts[key]
        if isinstance(s, Categories):
            return x in s.values
        return _member(s, x)

    return any(all(member(k, s) for k, s in term.items()) for term in dnf)


@given(conditions(), facts_strategy)
def test_normal_form_holds_exactly_when_the_compiled_guard_does(raw: dict[str, Any], facts: dict[str, Any]) -> None:
    r = _Reasoner(protocol.load_protocol(SHIPPED))
    c = Condition.model_validate(raw)
    truth = compile_condition(c)(facts)
    assert truth is not None
    assert _holds(r, r.dnf(c), facts) == truth
    assert _holds(r, r.dnf(c, negate=True), facts) == (not truth)
    assert _holds(r, r.negate(r.dnf(c)), facts) == (not truth)


@pytest.mark.parametrize("name", [SHIPPED, "arms", "shadowed", "contradictory-path", "gap", "same-arm-twice",
                                  "risk-contradiction"])
@given(facts=st.fixed_dictionaries({
    "kmt2a": st.just("rearranged"),
    "age_at_diagnosis_months": st.integers(0, 11),
    "age_at_diagnosis_years": st.just(0),
    "wbc_at_diagnosis": st.sampled_from([5.0, 10.0, 100.0, 300.0, 500.0]),
    "prednisone_response": st.sampled_from(["good", "poor"]),
    "mrd:pre_octadad": st.sampled_from([0.0, 1e-4, 4.9e-4, 5e-4, 0.02]),
    "mrd:t1": st.sampled_from([0.0, 5e-5, 1e-4, 5e-4, 1e-3, 0.5]),
    "arm:consolidation": st.sampled_from(["standard", "experimental"]),
    "arm:r": st.sampled_from(["a", "b"]),
}))
def test_each_patient_is_on_exactly_the_path_the_guards_walk(name: str, facts: dict[str, Any]) -> None:
    p = protocol.load_protocol(SHIPPED if name == SHIPPED else DATA / f"{name}.yaml")
    rep = paths(p)
    r = _Reasoner(p)
    facts = dict(facts)
    risk = p.rules.stratify(facts)
    if risk.group is None:
        return  # no risk group: the walk stops at the first rule that reads it
    facts["risk_group"] = risk.group
    walk, here = [p.initial], p.initial
    while p.table.get(here):
        nxt = next((e.dest for e in p.table[here] if e.guard is None or e.guard(facts) is True), None)
        if nxt is None:
            walk = []  # a gap: no path
            break
        walk.append(nxt)
        here = nxt
    holding = [q.elements for q in rep.paths if _holds(r, list(q._dnf), facts)]
    assert holding == ([tuple(walk)] if walk else [])
