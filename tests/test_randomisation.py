"""Randomised arms as data: a guard reads the recorded arm; until it is recorded, every arm is
projected as a pending branch (the shape Interfant-06's IB versus ADE/MAE randomisation needs)."""

from __future__ import annotations

import copy
import re
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

import protocol

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2026, 11, 21)


def _definition() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "protocol/definitions/interfant06-blinatumomab.yaml").read_text(encoding="utf-8"))
    data["id"] = "arms-test"
    data["randomisations"] = [{
        "id": "consolidation", "label": "IB versus an experimental block",
        "arms": [{"id": "standard", "label": "protocol IB"}, {"id": "experimental", "label": "block X"}],
        "source": "pieters2019", "evidence": "published",
    }]
    data["elements"].insert(3, {"id": "block_x", "title": "Block X", "length_days": {
        "value": 10, "evidence": "placeholder", "note": "test element"}})
    data["transitions"] = [t for t in data["transitions"] if t["from"] != "blinatumomab"] + [
        {"from": "blinatumomab", "to": "ib", "decision": "consolidation_arm",
         "when": {"arm": "consolidation", "eq": "standard"}, "rule_source": "pieters2019", "rule_evidence": "published"},
        {"from": "blinatumomab", "to": "block_x", "decision": "consolidation_arm"},
        {"from": "block_x", "to": "marma"},
    ]
    return data


@pytest.fixture
def arms(tmp_path: Path) -> protocol.Protocol:
    path = tmp_path / "arms.yaml"
    path.write_text(yaml.safe_dump(_definition(), allow_unicode=True), encoding="utf-8")
    return protocol.load_protocol(path)


def _patient(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    data = yaml.safe_load((ROOT / "examples/patients/hr-to-hsct.yaml").read_text(encoding="utf-8"))
    data["protocol"] = "arms-test"
    data["events"] = [{"type": "element_started", "element": "induction", "date": "2026-07-20"}, *events]
    path = tmp_path / "patient.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_unrecorded_arm_projects_both_arms_as_pending(arms: protocol.Protocol, tmp_path: Path) -> None:
    plan = protocol.plan(_patient(tmp_path, []), arms, as_of=AS_OF)
    decision = next(d for d in plan.decisions if d.id == "consolidation_arm")
    assert decision.status == "pending" and decision.waiting_for == ("arm:consolidation",)
    branches = {e.id: e.branch for e in plan.elements if e.branch}
    assert branches["ib"] == "consolidation_arm→ib"
    assert branches["block_x"] == "consolidation_arm→block_x"
    # MARMA follows both arms, on different dates (IB is 29 days, block X 10).
    marma = [e for e in plan.elements if e.id == "marma"]
    assert len(marma) == 2 and (marma[0].planned_start - marma[1].planned_start).days in (19, -19)
    assert all(i.status == "pending_decision" for i in plan.items if i.branch)


def test_recorded_arm_decides(arms: protocol.Protocol, tmp_path: Path) -> None:
    events = [{"type": "randomised", "randomisation": "consolidation", "arm": "experimental", "date": "2026-08-20"}]
    plan = protocol.plan(_patient(tmp_path, events), arms, as_of=AS_OF)
    decision = next(d for d in plan.decisions if d.id == "consolidation_arm")
    assert (decision.status, decision.outcome) == ("decided", "block_x")
    assert "ib" not in [e.id for e in plan.elements]
    # as_of before the randomisation: pending again.
    earlier = protocol.plan(_patient(tmp_path, events), arms, as_of=dt.date(2026, 8, 19))
    assert next(d for d in earlier.decisions if d.id == "consolidation_arm").status == "pending"


def test_recorded_start_against_the_arm_is_rejected(arms: protocol.Protocol, tmp_path: Path) -> None:
    events = [{"type": "randomised", "randomisation": "consolidation", "arm": "experimental", "date": "2026-08-20"},
              {"type": "element_started", "element": "blinatumomab", "date": "2026-08-24"},
              {"type": "element_started", "element": "ib", "date": "2026-09-22"}]
    with pytest.raises(protocol.PatientError, match=r"events\[3\]\.element: 'ib' on 2026-09-22 contradicts the "
                                                    r"protocol's rule for the consolidation_arm decision"):
        protocol.plan(_patient(tmp_path, events), arms, as_of=AS_OF)


@pytest.mark.parametrize(("event", "field", "phrase"), [
    ({"randomisation": "nope", "arm": "standard"}, "events[1].randomisation", "expected a randomisation of arms-test"),
    ({"randomisation": "consolidation", "arm": "other"}, "events[1].arm", "expected an arm of consolidation"),
])
def test_bad_randomised_events(arms: protocol.Protocol, tmp_path: Path, event: dict[str, str], field: str,
                               phrase: str) -> None:
    path = _patient(tmp_path, [{"type": "randomised", "date": "2026-08-20", **event}])
    with pytest.raises(protocol.PatientError) as info:
        protocol.plan(path, arms, as_of=AS_OF)
    (problem,) = info.value.problems
    assert problem.field == field and phrase in problem.message


def test_randomised_twice_is_rejected(arms: protocol.Protocol, tmp_path: Path) -> None:
    one = {"type": "randomised", "randomisation": "consolidation", "arm": "standard", "date": "2026-08-20"}
    path = _patient(tmp_path, [one, {**one, "date": "2026-08-21"}])
    with pytest.raises(protocol.PatientError, match="a patient is randomised once"):
        protocol.plan(path, arms, as_of=AS_OF)


def test_randomised_event_needs_its_fields(tmp_path: Path) -> None:
    with pytest.raises(protocol.PatientError, match="a randomised event must name its randomisation and arm"):
        protocol.load_patient(_patient(tmp_path, [{"type": "randomised", "date": "2026-08-20"}]))


@pytest.mark.parametrize(("guard", "message"), [
    ({"arm": "elsewhere", "eq": "standard"}, "expected a declared randomisation (consolidation)"),
    ({"arm": "consolidation", "eq": "placebo"}, "expected an arm of consolidation (standard, experimental)"),
])
def test_definition_guards_on_arms_are_checked(tmp_path: Path, guard: dict[str, str], message: str) -> None:
    data = _definition()
    bad = copy.deepcopy(data)
    next(t for t in bad["transitions"] if t.get("when") and "arm" in t["when"])["when"] = guard
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad, allow_unicode=True), encoding="utf-8")
    with pytest.raises(protocol.DefinitionError, match=re.escape(message)):
        protocol.load_protocol(path)
