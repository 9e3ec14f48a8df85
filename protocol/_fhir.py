"""FHIR R5: a protocol as a PlanDefinition, a patient's plan as a CarePlan with a
RequestOrchestration, built and validated with ``fhir.resources`` (its default package is R5).

The mapping follows the FHIR Clinical Reasoning module and the chemotherapy-regimen IGs
(HL7 NZ Cancer Control Agency; the core ``timing-daysOfCycle`` extension):

* protocol → ``PlanDefinition`` (type ``clinical-protocol``), sources → ``relatedArtifact``;
* element → top-level ``action`` (``linkId`` = element id, ``timingDuration`` = its length),
  ordered by ``relatedAction`` ``after-end`` of the element before it (with the start gap as
  ``offsetDuration``); a branch of a decision → ``condition`` of kind ``applicability`` whose
  ``expression`` is the rule in this tool's rule format (JSON) and whose ``description`` is
  the rule in words (the default branch is "not any of the branches before it");
* administration → sub-``action`` with the days as ``timing-daysOfCycle`` (cycle day 1 = the
  element's first day) or a ``timingTiming`` for open-ended repeats, pointing at a contained
  ``ActivityDefinition`` (kind MedicationRequest) whose ``dosage`` holds the dose per m²/kg
  in UCUM; assessments → sub-actions without a definition;
* patient plan → ``Bundle`` (collection) of ``Patient`` (pseudonym, birth date, sex),
  ``CarePlan`` (intent plan, period = treatment start to end of therapy, instantiates the
  PlanDefinition, one activity = the RequestOrchestration) and ``RequestOrchestration``
  (one action per element with its planned and actual period, one sub-action per dated item
  with its date and computed dose; a pending decision is an ``exactly-one`` group of its
  branches), plus the PlanDefinition itself.

Every value's evidence level is an extension (``EXT_EVIDENCE``: published, derived,
placeholder) and placeholder values also say "UNVERIFIED" in their text. Statuses that FHIR
has no field for (an item done, planned, pending a decision, or any status the engine adds
later) go in ``EXT_STATUS`` as text.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from typing import Any

from ._machine import Protocol
from ._schedule import Plan

__all__ = ["EXT_EVIDENCE", "EXT_STATUS", "fhir_json", "to_fhir_care_plan", "to_fhir_plan_definition"]

_BASE = "http://example.org/fhir/protocol"  # a site publishing these resources sets its own base
EXT_EVIDENCE = f"{_BASE}/StructureDefinition/evidence"
EXT_EVIDENCE_NOTE = f"{_BASE}/StructureDefinition/evidence-note"
EXT_STATUS = f"{_BASE}/StructureDefinition/status"
EXT_DAYS_OF_CYCLE = "http://hl7.org/fhir/StructureDefinition/timing-daysOfCycle"
UCUM = "http://unitsofmeasure.org"
RULE_LANGUAGE = "application/json"  # the rule as data, in the definition format's rule shape
_UNVERIFIED = "⚠ UNVERIFIED (placeholder: not confirmed from a public source; check against the official protocol document)"
_STATUS = {"draft": "draft", "active": "active", "retired": "retired", "under_review": "draft"}
_UCUM_UNIT = {"mg": "mg", "µg": "ug", "ug": "ug", "mcg": "ug", "g": "g", "IU": "[iU]", "U": "[U]", "mL": "mL",
              "ml": "mL", "mmol": "mmol"}
_UCUM_BASIS = {"per_m2": "/m2", "per_kg": "/kg", "fixed": "", "age_banded": ""}
_UCUM_PER = {"dose": "", "day": "/d", "week": "/wk"}
_SHOW_BASIS = {"per_m2": "/m²", "per_kg": "/kg", "fixed": "", "age_banded": ""}
_SHOW_PER = {"dose": "", "day": "/day", "week": "/week"}
_NS = uuid.UUID("6f1c8f0e-1d7e-4c55-9a51-0c4c7b7a3f10")  # namespace of this tool's resource ids


def _ext_evidence(level: str | None, note: str | None = None) -> list[dict[str, Any]]:
    if not level:
        return []
    out: list[dict[str, Any]] = [{"url": EXT_EVIDENCE, "valueCode": level}]
    if note:
        out.append({"url": EXT_EVIDENCE_NOTE, "valueString": note})
    return out


def _rid(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "\x1f".join(parts)))


def _canonical(protocol: Protocol) -> str:
    return f"{_BASE}/PlanDefinition/{protocol.id}"


def _days(n: int) -> dict[str, Any]:
    return {"value": n, "unit": "days" if n != 1 else "day", "system": UCUM, "code": "d"}


def _rule(condition: Any) -> Any:
    return condition.model_dump(mode="json", by_alias=True, exclude_none=True)


def _dose_quantity(dose: Any, value: float | None) -> dict[str, Any] | None:
    if value is None:
        return None
    unit = f"{dose.unit}{_SHOW_BASIS[dose.basis]}{_SHOW_PER[dose.per]}"
    q: dict[str, Any] = {"value": value, "unit": unit}
    base = _UCUM_UNIT.get(dose.unit)
    if base is not None:
        q.update(system=UCUM, code=f"{base}{_UCUM_BASIS[dose.basis]}{_UCUM_PER[dose.per]}")
    return q


def _dosage_text(dose: Any) -> tuple[str, str | None]:
    """The dose as written in the definition, and its weakest evidence."""
    if dose.basis == "age_banded":
        parts, levels = [], []
        for band in dose.bands or ():
            v = band.amount.value
            levels.append(band.amount.evidence)
            label = f"< {band.below_age_years} y" if band.below_age_years else "otherwise"
            parts.append(f"{label}: {'not specified' if v is None else f'{v:g} {dose.unit}'}")
        text = "age-banded (" + "; ".join(parts) + ")"
    else:
        v = dose.amount.value
        levels = [dose.amount.evidence]
        text = "not specified" if v is None else f"{v:g} {dose.unit}{_SHOW_BASIS[dose.basis]}{_SHOW_PER[dose.per]}"
    if dose.cap is not None:
        levels.append(dose.cap.evidence)
        text += f", max {dose.cap.value:g} {dose.unit}"
    level = "placeholder" if "placeholder" in levels else ("derived" if "derived" in levels else "published")
    return text, level


def _activity_definition(protocol: Protocol, el: Any, slot: Any) -> dict[str, Any]:
    a = slot.source
    dose = a.dose
    text, level = _dosage_text(dose)
    dosage: dict[str, Any] = {"text": text + (f" {_UNVERIFIED}" if level == "placeholder" else "")}
    if slot.route:
        dosage["route"] = {"text": slot.route}
    if dose.basis != "age_banded":
        q = _dose_quantity(dose, dose.amount.value)
        if q is not None:
            dosage["doseAndRate"] = [{"doseQuantity": q}]
    if dose.cap is not None and dose.cap.value is not None:
        dosage["maxDosePerAdministration"] = {"value": dose.cap.value, "unit": dose.unit,
                                              **({"system": UCUM, "code": _UCUM_UNIT[dose.unit]}
                                                 if dose.unit in _UCUM_UNIT else {})}
    if slot.frequency == "continuous":
        dosage["additionalInstruction"] = [{"text": "continuous infusion"}]
    elif slot.frequency == "q12h":
        dosage["timing"] = {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}
    note = getattr(dose.amount, "note", None) if dose.basis != "age_banded" else None
    return {
        "resourceType": "ActivityDefinition",
        "id": f"{el.id}.{slot.key}".replace("_", "-")[:64],
        "extension": _ext_evidence(level, note),
        "status": "draft",
        "title": f"{slot.name} ({el.title})",
        "kind": "MedicationRequest",
        "productCodeableConcept": {"text": slot.name},
        "dosage": [dosage],
    }


def _slot_timing(el: Any, slot: Any) -> dict[str, Any]:
    """The days of one administration or assessment, as FHIR timing on its action."""
    out: dict[str, Any] = {}
    terms = slot.days
    if not terms:
        return out
    open_ended = any(stop is None for _, stop, _ in terms)
    if open_ended or el.length is None:
        _, _, step = terms[0]
        out["timingTiming"] = {"repeat": {"frequency": 1, "period": 1 if step % 7 else step // 7,
                                          "periodUnit": "d" if step % 7 else "wk"}}
        return out  # the first day is in the action's description
    last = el.first_day + el.length - 1
    days = sorted({d for start, stop, step in terms for d in range(start, min(stop, last) + 1, step)
                   if d >= el.first_day})
    out["extension"] = [{"url": EXT_DAYS_OF_CYCLE,
                         "extension": [{"url": "day", "valueInteger": d - el.first_day + 1} for d in days]}]
    return out


def to_fhir_plan_definition(protocol: Protocol | str | os.PathLike[str]) -> Any:
    """A protocol as a FHIR R5 ``PlanDefinition`` (a validated ``fhir.resources`` object).

    One action per element, ordered with ``relatedAction``; a sub-action per administration
    and assessment with its days; branch conditions as ``applicability`` conditions. Placeholder
    values carry the ``EXT_EVIDENCE`` extension and say UNVERIFIED in their text.
    Serialise with :func:`fhir_json`.
    """
    from fhir.resources.plandefinition import PlanDefinition

    from ._loading import load_protocol

    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    return PlanDefinition.model_validate(_plan_definition(protocol))


def _plan_definition(p: Protocol) -> dict[str, Any]:
    d = p.definition
    incoming: dict[str, list[tuple[str, Any, list[Any]]]] = {}
    for src, edges in p.table.items():
        before: list[Any] = []
        for e in edges:
            incoming.setdefault(e.dest, []).append((src, e, list(before)))
            if e.condition is not None:
                before.append(e.condition)
    contained: list[dict[str, Any]] = []
    actions = []
    for el in p.elements.values():
        model = el.model
        action: dict[str, Any] = {"linkId": el.id, "title": el.title}
        desc = [model.description] if model.description else []
        if el.open_ended and d.end_of_therapy is not None:
            eot = d.end_of_therapy
            desc.append(f"Until the end of therapy: {eot.weeks.value:g} weeks after {eot.anchor}"
                        + (f" {_UNVERIFIED}" if eot.weeks.evidence == "placeholder" else ""))
            action["extension"] = _ext_evidence(eot.weeks.evidence, eot.weeks.note)
        elif el.length is not None:
            action["timingDuration"] = _days(el.length)
            ld = model.length_days
            action["extension"] = _ext_evidence(ld.evidence, ld.note)
            if ld.evidence == "placeholder":
                desc.append(f"Length {el.length} days {_UNVERIFIED}")
            if el.first_day != 1:
                desc.append(f"Days are numbered from {el.first_day} (day {el.first_day} = cycle day 1).")
        desc.extend(model.notes)
        if desc:
            action["description"] = "\n".join(desc)
        related, conditions = [], []
        for src, edge, before in incoming.get(el.id, []):
            rel: dict[str, Any] = {"targetId": src, "relationship": "after-end"}
            if el.gap:
                rel["offsetDuration"] = _days(el.gap)
            related.append(rel)
            if len(p.table[src]) > 1 or edge.condition is not None:
                if edge.condition is not None:
                    rule, text = _rule(edge.condition), edge.text
                else:
                    rule = {"not": {"any": [_rule(c) for c in before]}} if before else {}
                    text = "otherwise (none of the rules before it holds)"
                conditions.append({"kind": "applicability", "expression": {
                    "name": f"{edge.decision}_{el.id}".replace("-", "_"),
                    "description": f"decision {edge.decision} at the end of {src}: {text}",
                    "language": RULE_LANGUAGE, "expression": json.dumps(rule, ensure_ascii=False,
                                                                         sort_keys=True)}})
        if conditions:
            action["condition"] = conditions
        if related:
            action["relatedAction"] = related
        subs = []
        for slot in el.slots:
            sub: dict[str, Any] = {"linkId": f"{el.id}.{slot.key}", "title": slot.name}
            text = f"days {slot.days_text}" + (f" (element days; from {el.first_day})" if el.first_day != 1 else "")
            days_ev = getattr(getattr(slot.source, "days", None), "evidence", slot.evidence)
            if days_ev == "placeholder":
                text += f" {_UNVERIFIED}"
            if slot.kind == "administration" and slot.dose is not None:
                ad = _activity_definition(p, el, slot)
                contained.append(ad)
                sub["definitionCanonical"] = f"#{ad['id']}"
                sub["description"] = f"{ad['dosage'][0]['text']}; {text}"
            else:
                sub["description"] = f"{str(slot.kind).replace('_', ' ')}; {text}"
            timing = _slot_timing(el, slot)
            sub["extension"] = [*_ext_evidence(slot.evidence), *timing.pop("extension", [])]
            sub.update(timing)
            subs.append(sub)
        if subs:
            action["action"] = subs
        actions.append(action)
    related_artifacts = []
    for src in d.sources:
        art: dict[str, Any] = {"type": "citation", "label": src.key, "citation": src.citation}
        url = src.url or (f"https://doi.org/{src.doi}" if src.doi else None)
        if url:
            art["document"] = {"url": url}
        related_artifacts.append(art)
    name = "".join(w.capitalize() for w in p.id.replace("-", " ").replace("_", " ").split())
    return {
        "resourceType": "PlanDefinition",
        "id": p.id[:64],
        "url": _canonical(p),
        "version": p.version,
        "name": name if name[:1].isalpha() else f"P{name}",
        "title": d.title,
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type",
                             "code": "clinical-protocol", "display": "Clinical Protocol"}]},
        "status": _STATUS.get(d.status, "unknown"),
        "experimental": d.status != "active",
        "description": (d.description or d.title) + "\n\nPlaceholder values are marked UNVERIFIED: check every "
                                                     "dose and day against the official protocol document.",
        "relatedArtifact": related_artifacts,
        "contained": contained,
        "action": actions,
    }


def to_fhir_care_plan(plan: Plan, generated: dt.datetime | None = None) -> Any:
    """A patient's plan as a FHIR R5 ``Bundle`` (collection): the ``Patient`` (pseudonym),
    a ``CarePlan`` and its ``RequestOrchestration`` with every dated item, and the
    ``PlanDefinition`` they instantiate — each validated by ``fhir.resources``.

    Serialise with :func:`fhir_json`. ``generated``: the bundle timestamp (default now, or
    ``SOURCE_DATE_EPOCH``).
    """
    from fhir.resources.bundle import Bundle
    from fhir.resources.careplan import CarePlan
    from fhir.resources.patient import Patient
    from fhir.resources.plandefinition import PlanDefinition
    from fhir.resources.requestorchestration import RequestOrchestration

    from ._documents import _generated_at

    stamp = (generated or _generated_at()).astimezone(dt.UTC).replace(microsecond=0)
    p = plan.protocol
    pat = plan.patient
    ids = {k: _rid(pat.id, p.id, k) for k in ("patient", "careplan", "orchestration")}
    ref = {k: f"urn:uuid:{v}" for k, v in ids.items()}
    canonical = f"{_canonical(p)}|{p.version}"
    patient = Patient.model_validate({
        "resourceType": "Patient", "id": ids["patient"],
        "identifier": [{"type": {"text": "pseudonym"}, "value": pat.id}],
        "gender": pat.sex if pat.sex in ("female", "male", "other", "unknown") else "unknown",
        "birthDate": pat.birth_date.isoformat(),
    })
    orchestration = RequestOrchestration.model_validate(_orchestration(plan, ids["orchestration"], ref["patient"],
                                                                       canonical, stamp))
    finished = all(s.status in ("completed", "stopped") for s in plan.elements)
    status = "revoked" if plan.outcome is not None else ("completed" if finished and plan.elements else "active")
    notes = [{"text": "Placeholder values (dose, day, length) are marked UNVERIFIED: they were not confirmed from a "
                      "public source. Check every dose and day against the official protocol document."}]
    if plan.outcome is not None:
        notes.append({"text": f"{plan.outcome[0].replace('_', ' ')} on {plan.outcome[1].isoformat()}"})
    notes.extend({"text": f"warning: {w}"} for w in plan.warnings)
    period: dict[str, Any] = {"start": pat.start_date.isoformat()}
    if plan.end_of_therapy is not None:
        period["end"] = plan.end_of_therapy.isoformat()
    risk = plan.risk
    care_plan = CarePlan.model_validate({
        "resourceType": "CarePlan", "id": ids["careplan"],
        "instantiatesCanonical": [canonical],
        "status": status, "intent": "plan",
        "title": f"{p.definition.title}: plan of {pat.id}",
        "description": f"Risk group {risk.group or risk.status}; plan as of {plan.as_of.isoformat()}.",
        "subject": {"reference": ref["patient"], "display": pat.id},
        "period": period,
        "created": stamp.isoformat().replace("+00:00", "Z"),
        "activity": [{"plannedActivityReference": {"reference": ref["orchestration"]}}],
        "note": notes,
    })
    plan_definition = PlanDefinition.model_validate(_plan_definition(p))
    entries = [(ref["patient"], patient), (ref["careplan"], care_plan), (ref["orchestration"], orchestration),
               (canonical.split("|")[0], plan_definition)]
    bundle = Bundle.model_validate({
        "resourceType": "Bundle", "id": _rid(pat.id, p.id, "bundle", plan.as_of.isoformat()), "type": "collection",
        "timestamp": stamp.isoformat().replace("+00:00", "Z"),
        "entry": [{"fullUrl": url, "resource": r.model_dump(mode="json", exclude_none=True)} for url, r in entries],
    })
    return bundle


def _orchestration(plan: Plan, rid: str, subject: str, canonical: str, stamp: dt.datetime) -> dict[str, Any]:
    p = plan.protocol
    by_span: dict[tuple[str, str | None], list[Any]] = {}
    for item in plan.items:
        by_span.setdefault((item.slot.element, item.branch), []).append(item)
    certain: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}  # decision id → exactly-one group
    branches: dict[str, dict[str, Any]] = {}  # top-level branch label → its group
    decisions = {d.id: d for d in plan.decisions if d.branch is None}
    previous: str | None = None
    for span in plan.elements:
        link = span.id if span.branch is None else f"{span.id}@{span.branch}"
        action: dict[str, Any] = {"linkId": link, "title": span.title,
                                  "extension": [{"url": EXT_STATUS, "valueString": str(span.status)},
                                                *_ext_evidence(span.evidence)]}
        start = span.actual_start or span.planned_start
        end = span.actual_end or span.planned_end
        period: dict[str, Any] = {}
        if start is not None:
            period["start"] = start.isoformat()
        if end is not None:
            period["end"] = end.isoformat()
        if period:
            action["timingPeriod"] = period
        desc = [f"planned {span.planned_start or ''} – {span.planned_end or 'open'}; actual "
                f"{span.actual_start or 'not started'} – {span.actual_end or 'not ended'}; "
                f"{str(span.status).replace('_', ' ')}"]
        if getattr(span, "note", None):
            desc.append(str(span.note))
        action["description"] = "\n".join(desc)
        subs = []
        for item in by_span.get((span.id, span.branch), []):
            slot = item.slot
            sub: dict[str, Any] = {"linkId": f"{link}:{slot.key}@{item.element_day}", "title": slot.name,
                                   "timingDateTime": item.date.isoformat(),
                                   "extension": [{"url": EXT_STATUS, "valueString": str(item.status)},
                                                 *_ext_evidence(slot.evidence)]}
            text = [f"day {item.element_day}, study day {item.study_day}"]
            if item.dose is not None:
                text.insert(0, f"{item.dose.text} ({item.dose.working})")
            if slot.route:
                text.insert(0, slot.route)
            if slot.evidence == "placeholder":
                text.append(_UNVERIFIED)
            if getattr(item, "note", None):
                text.append(str(item.note))
            sub["description"] = "; ".join(text)
            subs.append(sub)
        if subs:
            action["action"] = subs
        if span.branch is None:
            if previous is not None:
                action["relatedAction"] = [{"targetId": previous, "relationship": "after-end"}]
            previous = link
            certain.append(action)
            continue
        # A branch of a pending decision: grouped, one group per decision, one sub-group per branch.
        top = span.branch.split(" / ")[0]
        decision_id = top.split("→")[0]
        group = groups.get(decision_id)
        if group is None:
            d = decisions.get(decision_id)
            waits = ", ".join(d.waiting_for) if d is not None else ""
            group = {"linkId": f"decision:{decision_id}", "title": f"Decision {decision_id} (pending"
                     + (f": waits for {waits})" if waits else ")"),
                     "selectionBehavior": "exactly-one", "groupingBehavior": "logical-group", "action": [],
                     "extension": [{"url": EXT_STATUS, "valueString": "pending"}]}
            if previous is not None:
                group["relatedAction"] = [{"targetId": previous, "relationship": "after-end"}]
            groups[decision_id] = group
            certain.append(group)
        branch = branches.get(top)
        if branch is None:
            dest = top.split("→")[-1]
            d = decisions.get(decision_id)
            rule = next((b["when"] for b in (d.branches if d is not None else []) if b["to"] == dest), "")
            branch = {"linkId": top, "title": f"→ {dest}" + (f" if {rule}" if rule and rule != "otherwise"
                                                              else " otherwise" if rule else ""),
                      "groupingBehavior": "logical-group", "action": []}
            if rule:
                branch["condition"] = [{"kind": "applicability", "expression": {
                    "description": rule, "language": RULE_LANGUAGE,
                    "expression": json.dumps({"decision": decision_id, "branch": dest})}}]
            branches[top] = branch
            group["action"].append(branch)
        branch["action"].append(action)
    return {
        "resourceType": "RequestOrchestration", "id": rid,
        "instantiatesCanonical": [canonical],
        "status": "revoked" if plan.outcome is not None else "active", "intent": "plan",
        "subject": {"reference": subject, "display": plan.patient.id},
        "authoredOn": stamp.isoformat().replace("+00:00", "Z"),
        "note": [{"text": f"Plan as of {plan.as_of.isoformat()}; item and element status in the {EXT_STATUS} "
                          "extension. Check every dose and day against the official protocol document."}],
        "action": certain,
    }


def fhir_json(resource: Any) -> str:
    """A ``fhir.resources`` resource as FHIR JSON text (indented, no empty fields)."""
    return resource.model_dump_json(indent=2) + "\n"
