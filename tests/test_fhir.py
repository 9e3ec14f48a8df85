"""FHIR R5: the PlanDefinition and the CarePlan bundle re-parsed and validated by
``fhir.resources``, and checked against the protocol and the plan they came from."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

import protocol
from protocol._calendar import item_unverified
from protocol._fhir import (EXT_DOSE, EXT_ELEMENT, EXT_EVIDENCE, EXT_STATUS, EXT_UNVERIFIED, care_plan_json, fhir_id,
                            fhir_json, plan_definition_json, to_fhir_care_plan, to_fhir_plan_definition)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "patients").glob("*.yaml"))
PROTOCOLS = sorted(p.stem for p in (ROOT / "protocol" / "definitions").glob("*.yaml"))
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
AS_OF = dt.date(2026, 11, 21)
PROTOCOL_ID = "interfant06-blinatumomab"
STAMP = dt.datetime(2026, 9, 21, 14, 13, 20, tzinfo=dt.UTC)


def _ext(node: dict[str, Any], url: str) -> list[Any]:
    return [e.get("valueCode", e.get("valueString", e.get("valueBoolean"))) for e in node.get("extension", [])
            if e["url"] == url]


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
    assert [a["linkId"] for a in actions] == [fhir_id(e) for e in proto.elements]
    assert [_ext(a, EXT_ELEMENT)[0] for a in actions] == list(proto.elements)
    by_id = {a["linkId"]: a for a in actions}
    # Ordering: every transition is a relatedAction after-end of its source.
    for src, edges in proto.table.items():
        for edge in edges:
            related = by_id[fhir_id(edge.dest)].get("relatedAction", [])
            assert {"targetId": fhir_id(src), "relationship": "after-end"} in [
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
    assert by_id["maintenance.methotrexate-po"]["timingTiming"]["repeat"]["periodUnit"] == "wk"
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
    assert ro["status"] == "draft"  # the plan depends on placeholders


def test_plan_definition_of_a_definition_file_and_unknown_id(tmp_path: Path) -> None:
    path = ROOT / "protocol" / "definitions" / f"{PROTOCOL_ID}.yaml"
    assert to_fhir_plan_definition(path).version == "1.0.0"
    with pytest.raises(protocol.InputError):
        to_fhir_plan_definition("no-such-protocol")


# --------------------------------------------------------------------------- ids


def test_fhir_id_is_stable_readable_and_one_to_one() -> None:
    from hypothesis import given, settings, strategies as st

    assert fhir_id("blinatumomab_1") == "blinatumomab-1"
    assert fhir_id("delayed_intensification") == "delayed-intensification"
    assert fhir_id("maintenance", "methotrexate_po") == "maintenance.methotrexate-po"
    assert fhir_id("a" * 70).startswith("0") and FHIR_ID.fullmatch(fhir_id("a" * 70))
    ident = st.from_regex(r"[a-z][a-z0-9_]{0,40}", fullmatch=True)
    anything = st.text(min_size=1, max_size=80)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(ident, anything), min_size=1, max_size=3),
           st.lists(st.one_of(ident, anything), min_size=1, max_size=3))
    def one_to_one(a: list[str], b: list[str]) -> None:
        x, y = fhir_id(*a), fhir_id(*b)
        assert FHIR_ID.fullmatch(x) and FHIR_ID.fullmatch(y)
        assert x == fhir_id(*a)
        assert (x == y) == (a == b)

    one_to_one()


def _targets_resolve(resource: dict[str, Any]) -> None:
    """Every relatedAction.targetId is a FHIR id and the linkId of an action of the same resource."""
    actions = _walk(resource.get("action", []))
    links = [a["linkId"] for a in actions if "linkId" in a]
    for a in actions:
        for rel in a.get("relatedAction", []):
            assert FHIR_ID.fullmatch(rel["targetId"]), rel
            assert rel["targetId"] in links, rel
    for c in resource.get("contained", []):
        assert FHIR_ID.fullmatch(c["id"])
    ids = [c["id"] for c in resource.get("contained", [])]
    assert len(ids) == len(set(ids)), "contained ids are unique"


def _no_empty(node: Any, where: str = "") -> None:
    """FHIR JSON has no empty objects, arrays or strings, and no nulls."""
    assert node not in (None, "", [], {}), where
    if isinstance(node, dict):
        for k, v in node.items():
            _no_empty(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _no_empty(v, f"{where}[{i}]")


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_shipped_protocol_is_a_valid_plan_definition(name: str) -> None:
    from fhir.resources.plandefinition import PlanDefinition

    text = plan_definition_json(name)
    model = PlanDefinition.model_validate_json(text)
    data = json.loads(text)
    assert data == json.loads(model.model_dump_json(exclude_none=True)), "the text is what was validated"
    _targets_resolve(data)
    _no_empty(data)
    assert fhir_json(to_fhir_plan_definition(name)) == model.model_dump_json(indent=2) + "\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_bundle_is_valid_and_marks_every_unverified_item(path: Path) -> None:
    from fhir.resources.bundle import Bundle

    plan = protocol.plan(path, as_of=AS_OF)
    text = care_plan_json(plan, generated=STAMP)
    bundle = Bundle.model_validate_json(text)
    data = json.loads(text)
    assert data == json.loads(bundle.model_dump_json(exclude_none=True)), "the text is what was validated"
    assert text == care_plan_json(plan, generated=STAMP), "reproducible"
    _no_empty(data)
    resources = {e["resource"]["resourceType"]: e["resource"] for e in data["entry"]}
    for resource in resources.values():
        _targets_resolve(resource)
    ro = resources["RequestOrchestration"]
    items = [a for a in _walk(ro["action"]) if "timingDateTime" in a]
    assert len(items) == len(plan.items)
    by_link = {a["linkId"]: a for a in items}
    any_unverified = False
    for item in plan.items:
        link = (f"{fhir_id(item.element) if item.branch is None else f'{item.element}@{item.branch}'}"
                f":{item.slot.key}@{item.element_day}")
        action = by_link[link]
        flag, _ = item_unverified(item)
        any_unverified |= flag
        assert ("UNVERIFIED" in action["description"]) == flag, link
        assert (_ext(action, EXT_UNVERIFIED) == [True]) == flag, link
        dose = [e for e in action["extension"] if e["url"] == EXT_DOSE]
        if item.dose is not None and item.dose.amount is not None:
            (ext,) = dose
            q = next(x["valueQuantity"] for x in ext["extension"] if x["url"] == "dose")
            assert q["value"] == item.dose.amount
            assert (_ext(q, EXT_UNVERIFIED) == [True]) == flag, link  # the structured dose carries the flag
        else:
            assert not dose
    care = resources["CarePlan"]
    if plan.outcome is None and not all(s.status in ("completed", "stopped") for s in plan.elements):
        assert care["status"] == ("draft" if any_unverified else "active")
        assert ro["status"] == care["status"]
    elements = [a for a in _walk(ro["action"]) if EXT_ELEMENT in [e["url"] for e in a.get("extension", [])]]
    for action in elements:
        unverified = _ext(action, EXT_UNVERIFIED) == [True]
        assert ("UNVERIFIED" in action["description"]) == unverified
        if _ext(action, EXT_EVIDENCE) == ["placeholder"]:
            assert unverified, action["linkId"]


def test_q12h_dose_has_the_timing_and_says_per_dose() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    data = json.loads(care_plan_json(plan, generated=STAMP))
    ro = data["entry"][2]["resource"]
    q12h = [a for a in _walk(ro["action"]) if ":cytarabine_hd@" in a.get("linkId", "")]
    assert q12h
    for action in q12h:
        ext = next(e for e in action["extension"] if e["url"] == EXT_DOSE)
        timing = next(x["valueTiming"] for x in ext["extension"] if x["url"] == "timing")
        assert timing["repeat"] == {"frequency": 2, "period": 1, "periodUnit": "d"}
        assert "per dose, every 12 h (2 doses a day)" in action["description"]
    pd = data["entry"][3]["resource"]
    ad = next(c for c in pd["contained"] if c["id"] == "marma.cytarabine-hd")
    assert ad["dosage"][0]["timing"]["repeat"] == {"frequency": 2, "period": 1, "periodUnit": "d"}
    assert "per dose, every 12 h" in ad["dosage"][0]["text"]
    once = next(a for a in _walk(ro["action"]) if ":prednisone@" in a.get("linkId", ""))
    ext = next(e for e in once["extension"] if e["url"] == EXT_DOSE)
    assert [x["url"] for x in ext["extension"]] == ["dose"]  # one administration on its date


def test_bag_change_actions_are_marked_when_unverified() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    bags = [i for i in plan.items if i.slot.kind == "bag_change"]
    assert bags
    ro = json.loads(care_plan_json(plan, generated=STAMP))["entry"][2]["resource"]
    actions = {a["linkId"]: a for a in _walk(ro["action"]) if "timingDateTime" in a}
    for item in bags:
        action = actions[f"{fhir_id(item.element)}:{item.slot.key}@{item.element_day}"]
        assert "infusion bag change" in action["description"]
        assert ("UNVERIFIED" in action["description"]) == item_unverified(item)[0]


def test_each_resource_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One validation per resource (the PlanDefinition once per loaded protocol), none twice."""
    from fhir.resources.bundle import Bundle
    from fhir.resources.careplan import CarePlan
    from fhir.resources.patient import Patient
    from fhir.resources.plandefinition import PlanDefinition
    from fhir.resources.requestorchestration import RequestOrchestration

    from protocol import _fhir

    calls: dict[str, int] = {}
    for cls in (Bundle, CarePlan, Patient, PlanDefinition, RequestOrchestration):
        original = cls.model_validate.__func__  # type: ignore[attr-defined]

        def counted(klass: Any, data: Any, *a: Any, _orig: Any = original, **kw: Any) -> Any:
            calls[klass.__name__] = calls.get(klass.__name__, 0) + 1
            return _orig(klass, data, *a, **kw)

        monkeypatch.setattr(cls, "model_validate", classmethod(counted))
    monkeypatch.setattr(_fhir, "_PD_CACHE", type(_fhir._PD_CACHE)())
    proto = protocol.load_protocol(PROTOCOL_ID)
    for name in ("mr-on-time", "hr-to-hsct"):
        care_plan_json(protocol.plan(ROOT / f"examples/patients/{name}.yaml", proto, as_of=AS_OF), generated=STAMP)
    assert calls == {"Patient": 2, "CarePlan": 2, "RequestOrchestration": 2, "PlanDefinition": 1, "Bundle": 2}
