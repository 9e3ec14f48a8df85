"""FHIR R5: the PlanDefinition and the CarePlan bundle re-parsed and validated by
``fhir.resources``, and checked against the protocol and the plan they came from."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import protocol
from protocol._fhir import EXT_EVIDENCE, EXT_STATUS, fhir_json, to_fhir_care_plan, to_fhir_plan_definition

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2026, 11, 21)
PROTOCOL_ID = "interfant06-blinatumomab"
STAMP = dt.datetime(2026, 9, 21, 14, 13, 20, tzinfo=dt.UTC)


def _ext(node: dict[str, Any], url: str) -> list[Any]:
    return [e.get("valueCode", e.get("valueString")) for e in node.get("extension", []) if e["url"] == url]


def _walk(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for a in actions:
        out.append(a)
        out.extend(_walk(a.get("action", [])))
    return out


@pytest.fixture(scope="module")
def plan_definition() -> dict[str, Any]:
    from fhir.resources.plandefinition import PlanDefinition

    text = fhir_json(to_fhir_plan_definition(PROTOCOL_ID))
    PlanDefinition.model_validate_json(text)  # re-parsed and validated from the JSON text
    return json.loads(text)


def test_plan_definition_has_an_action_per_element_in_order(plan_definition: dict[str, Any]) -> None:
    proto = protocol.load_protocol(PROTOCOL_ID)
    assert plan_definition["resourceType"] == "PlanDefinition"
    assert plan_definition["version"] == proto.version and plan_definition["status"] == "draft"
    assert plan_definition["type"]["coding"][0]["code"] == "clinical-protocol"
    actions = plan_definition["action"]
    assert [a["linkId"] for a in actions] == list(proto.elements)
    by_id = {a["linkId"]: a for a in actions}
    # Ordering: every transition is a relatedAction after-end of its source.
    for src, edges in proto.table.items():
        for edge in edges:
            related = by_id[edge.dest].get("relatedAction", [])
            assert {"targetId": src, "relationship": "after-end"} in [
                {k: r[k] for k in ("targetId", "relationship")} for r in related]
    assert by_id["induction"]["timingDuration"]["value"] == 35
    assert by_id["induction"]["timingDuration"]["code"] == "d"
    # Citations.
    keys = {a["label"] for a in plan_definition["relatedArtifact"]}
    assert keys == {s.key for s in proto.definition.sources}


def test_branches_are_applicability_conditions_with_the_rule(plan_definition: dict[str, Any]) -> None:
    by_id = {a["linkId"]: a for a in plan_definition["action"]}
    hsct = by_id["hsct"]["condition"][0]
    assert hsct["kind"] == "applicability"
    rule = json.loads(hsct["expression"]["expression"])
    assert rule == {"any": [{"eq": "HR", "fact": "risk_group"}, {"gte": {
        "evidence": "published", "note": "MRD >= 5x10^-4 before OCTADAD (the ASH 2021 abstract reads '> 0.05 %')",
        "source": "bassett2023", "value": 0.0005}, "mrd": "pre_octadad"}]}
    assert "risk group = HR or MRD at pre_octadad ≥ 5e-4" in hsct["expression"]["description"]
    octadad = by_id["octadad"]["condition"][0]
    assert json.loads(octadad["expression"]["expression"]) == {"not": {"any": [rule]}}
    assert "otherwise" in octadad["expression"]["description"]
    assert "condition" not in by_id["ib"]  # an unconditional step


def test_items_have_days_and_doses_and_placeholders_are_marked(plan_definition: dict[str, Any]) -> None:
    by_id = {a["linkId"]: a for a in _walk(plan_definition["action"])}
    prednisone = by_id["induction.prednisone"]
    days = next(e for e in prednisone["extension"] if e["url"].endswith("timing-daysOfCycle"))
    assert [d["valueInteger"] for d in days["extension"]] == [1, 2, 3, 4, 5, 6, 7]
    contained = {r["id"]: r for r in plan_definition["contained"]}
    ad = contained[prednisone["definitionCanonical"].lstrip("#")]
    assert ad["resourceType"] == "ActivityDefinition" and ad["kind"] == "MedicationRequest"
    q = ad["dosage"][0]["doseAndRate"][0]["doseQuantity"]
    assert (q["value"], q["code"], q["system"]) == (60, "mg/m2/d", "http://unitsofmeasure.org")
    assert _ext(ad, EXT_EVIDENCE) == ["placeholder"] and "UNVERIFIED" in ad["dosage"][0]["text"]
    blina = contained[by_id["blinatumomab.blinatumomab"]["definitionCanonical"].lstrip("#")]
    assert _ext(blina, EXT_EVIDENCE) == ["published"] and "UNVERIFIED" not in blina["dosage"][0]["text"]
    assert blina["dosage"][0]["doseAndRate"][0]["doseQuantity"]["code"] == "ug/m2/d"
    # IB numbers its days from 36: cycle day 1 is day 36.
    cyclo = by_id["ib.cyclophosphamide"]
    days = next(e for e in cyclo["extension"] if e["url"].endswith("timing-daysOfCycle"))
    assert [d["valueInteger"] for d in days["extension"]] == [1, 29]
    # Maintenance repeats to the end of therapy: daily and weekly timing.
    assert by_id["maintenance.mercaptopurine"]["timingTiming"]["repeat"] == {"frequency": 1, "period": 1.0,
                                                                               "periodUnit": "d"}
    assert by_id["maintenance.methotrexate_po"]["timingTiming"]["repeat"]["periodUnit"] == "wk"
    every_canonical = {a["definitionCanonical"].lstrip("#") for a in by_id.values() if "definitionCanonical" in a}
    assert every_canonical == set(contained)
    placeholders = sum(1 for a in by_id.values() if _ext(a, EXT_EVIDENCE) == ["placeholder"])
    assert placeholders > 20


@pytest.mark.parametrize("name", ["mr-on-time", "hr-to-hsct", "mr-pending-mrd"])
def test_care_plan_bundle_reparses_and_carries_every_item(name: str) -> None:
    from fhir.resources import get_fhir_model_class
    from fhir.resources.bundle import Bundle

    plan = protocol.plan(ROOT / f"examples/patients/{name}.yaml", as_of=AS_OF)
    text = fhir_json(to_fhir_care_plan(plan, generated=STAMP))
    Bundle.model_validate_json(text)
    data = json.loads(text)
    assert data["type"] == "collection" and data["timestamp"] == "2026-09-21T14:13:20Z"
    resources = {e["resource"]["resourceType"]: (e["fullUrl"], e["resource"]) for e in data["entry"]}
    assert set(resources) == {"Patient", "CarePlan", "RequestOrchestration", "PlanDefinition"}
    for kind, (_, resource) in resources.items():
        get_fhir_model_class(kind).model_validate(resource)  # each resource valid on its own
    patient = resources["Patient"][1]
    assert patient["identifier"][0]["value"] == plan.patient.id
    assert patient["birthDate"] == plan.patient.birth_date.isoformat()
    care = resources["CarePlan"][1]
    ro_url, ro = resources["RequestOrchestration"]
    assert care["intent"] == "plan" and care["subject"]["reference"] == resources["Patient"][0]
    assert care["activity"][0]["plannedActivityReference"]["reference"] == ro_url
    assert care["instantiatesCanonical"] == [f"{resources['PlanDefinition'][0]}|{plan.protocol.version}"]
    assert care["period"] == {"start": plan.patient.start_date.isoformat(), "end": plan.end_of_therapy.isoformat()}
    items = [a for a in _walk(ro["action"]) if "timingDateTime" in a]
    assert len(items) == len(plan.items)
    dated = sorted((a["timingDateTime"], a["title"]) for a in items)
    assert dated == sorted((i.date.isoformat(), i.slot.name) for i in plan.items)
    statuses = {tuple(_ext(a, EXT_STATUS)) for a in items}
    assert statuses == {(s,) for s in {i.status for i in plan.items}}
    unverified = [a for a in items if _ext(a, EXT_EVIDENCE) == ["placeholder"]]
    assert unverified and all("UNVERIFIED" in a["description"] for a in unverified)


def test_a_pending_decision_is_an_exactly_one_group() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-pending-mrd.yaml", as_of=AS_OF)
    ro = json.loads(fhir_json(to_fhir_care_plan(plan)))["entry"][2]["resource"]
    group = next(a for a in ro["action"] if a["linkId"] == "decision:pre_octadad")
    assert group["selectionBehavior"] == "exactly-one"
    assert "waits for mrd:pre_octadad" in group["title"]
    branches = {b["linkId"]: [a["linkId"].split("@")[0] for a in b["action"]] for b in group["action"]}
    assert branches == {"pre_octadad→hsct": ["hsct"], "pre_octadad→octadad": ["octadad", "maintenance"]}
    assert group["relatedAction"] == [{"targetId": "marma", "relationship": "after-end"}]


def test_plan_definition_of_a_definition_file_and_unknown_id(tmp_path: Path) -> None:
    path = ROOT / "protocol" / "definitions" / f"{PROTOCOL_ID}.yaml"
    assert to_fhir_plan_definition(path).version == "1.0.0"
    with pytest.raises(protocol.InputError):
        to_fhir_plan_definition("no-such-protocol")
