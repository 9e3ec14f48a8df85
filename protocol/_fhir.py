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

**Unverified, in the structure as well as the text.** An item whose date or dose depends on a
placeholder (decided in one place, :func:`protocol._calendar.item_unverified`) says UNVERIFIED
in its ``description`` and carries ``EXT_UNVERIFIED`` (``valueBoolean: true``, with a
``valueString`` reason per cause); an element action with a placeholder length or dates does
too. The computed dose of an item is the complex extension ``EXT_DOSE``: ``dose``
(``valueQuantity``, the amount of one administration, or of the day or week when the
definition doses per day or week), ``timing`` (``valueTiming``: ``repeat.frequency``/
``period``/``periodUnit``, e.g. 2 per 1 d for q12h; absent for a continuous infusion),
``perAdministration`` (``valueBoolean``), ``text`` and ``unverified`` (``valueBoolean``);
the ``dose`` quantity itself also carries ``EXT_UNVERIFIED`` when it is unverified, so a
reader of the quantity alone sees the flag. In the PlanDefinition, the ``doseQuantity`` of
each ActivityDefinition carries ``EXT_EVIDENCE`` and its ``timing`` says how many a day. A
plan with any unverified item or element is a ``draft`` CarePlan and RequestOrchestration,
never ``active`` (a completed or stopped plan keeps ``completed``/``revoked``).

**Ids.** FHIR ``id`` values (``relatedAction.targetId`` and every resource id) allow only
``[A-Za-z0-9-.]{1,64}``. :func:`fhir_id` maps this tool's ids to them stably and without
collisions: each part of an id (element, item) written with ``-`` for ``_`` (``blinatumomab_1``
→ ``blinatumomab-1``; element and item ids have no ``-`` of their own, so the mapping is
one-to-one) and parts joined with ``.``; anything else (other characters, too long) becomes a
digest that starts with a digit, which a mapped id never does. Element actions keep the
element id as written in ``EXT_ELEMENT``.

**Validated once.** Each resource is validated by ``fhir.resources`` exactly once (the
PlanDefinition once per loaded protocol); the JSON text is written from the very data that was
validated, so the output is what the validator accepted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import uuid
import weakref
from typing import Any

from ._calendar import administrations, dose_line, item_unverified
from ._machine import Protocol
from .schedule import Plan

__all__ = ["EXT_DOSE", "EXT_ELEMENT", "EXT_EVIDENCE", "EXT_STATUS", "EXT_UNVERIFIED", "care_plan_json", "fhir_id",
           "fhir_json", "plan_definition_json", "to_fhir_care_plan", "to_fhir_plan_definition"]

_BASE = "http://example.org/fhir/protocol"  # a site publishing these resources sets its own base
EXT_EVIDENCE = f"{_BASE}/StructureDefinition/evidence"
EXT_EVIDENCE_NOTE = f"{_BASE}/StructureDefinition/evidence-note"
EXT_STATUS = f"{_BASE}/StructureDefinition/status"
EXT_UNVERIFIED = f"{_BASE}/StructureDefinition/unverified"
EXT_DOSE = f"{_BASE}/StructureDefinition/computed-dose"
EXT_ELEMENT = f"{_BASE}/StructureDefinition/element-id"
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


_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PART = re.compile(r"[a-z][a-z0-9_]*")
_PER_DAY_TIMING = {1: {"frequency": 1, "period": 1, "periodUnit": "d"},
                   2: {"frequency": 2, "period": 1, "periodUnit": "d"}}


def fhir_id(*parts: str) -> str:
    """This tool's id (one part or several, e.g. element and item) as a FHIR ``id``.

    Stable and one-to-one: lower-case parts of letters, digits and ``_`` are written with
    ``-`` for ``_`` and joined with ``.``; anything else becomes a digest starting with a digit.

    >>> fhir_id("blinatumomab_1"), fhir_id("maintenance", "methotrexate_po")
    ('blinatumomab-1', 'maintenance.methotrexate-po')
    """
    if parts and all(_PART.fullmatch(p) for p in parts):
        out = ".".join(parts).replace("_", "-")
        if len(out) <= 64:
            return out
    return "0" + hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:40]


_UNVERIFIED_FLAG = [{"url": EXT_UNVERIFIED, "valueBoolean": True}]


def _ext_unverified(reasons: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """The unverified flag; the reasons (joined, one string) when they say more than the default."""
    from ._calendar import _PLACEHOLDER_REASON

    shown = [r for r in reasons if r != _PLACEHOLDER_REASON]
    if not shown:
        return _UNVERIFIED_FLAG
    return [*_UNVERIFIED_FLAG, {"url": EXT_UNVERIFIED + "-reason", "valueString": "; ".join(shown)}]


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
            q["extension"] = _ext_evidence(dose.amount.evidence)
            dosage["doseAndRate"] = [{"doseQuantity": q}]
    if dose.cap is not None and dose.cap.value is not None:
        dosage["maxDosePerAdministration"] = {"value": dose.cap.value, "unit": dose.unit,
                                              **({"system": UCUM, "code": _UCUM_UNIT[dose.unit]}
                                                 if dose.unit in _UCUM_UNIT else {})}
    if slot.frequency == "continuous":
        dosage["additionalInstruction"] = [{"text": "continuous infusion"}]
    elif slot.frequency == "q12h":
        dosage["text"] += " per dose, every 12 h (2 doses a day)" if dose.per == "dose" else \
            ", given as 2 administrations a day, every 12 h"
        dosage["timing"] = {"repeat": dict(_PER_DAY_TIMING[2])}
    elif slot.frequency == "once_per_day":
        dosage["timing"] = {"repeat": dict(_PER_DAY_TIMING[1])}
    note = getattr(dose.amount, "note", None) if dose.basis != "age_banded" else None
    return {
        "resourceType": "ActivityDefinition",
        "id": fhir_id(el.id, slot.key),
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
    Serialise with :func:`fhir_json`, or get the text directly with :func:`plan_definition_json`.

    >>> to_fhir_plan_definition("interfant06-blinatumomab").version  # doctest: +SKIP
    '1.0.0'
    """
    return _validated_plan_definition(_as_protocol(protocol))[1]


def plan_definition_json(protocol: Protocol | str | os.PathLike[str]) -> str:
    """A protocol as FHIR R5 ``PlanDefinition`` JSON text, validated by ``fhir.resources``.

    >>> text = plan_definition_json("interfant06-blinatumomab")  # doctest: +SKIP
    """
    return _dumps(_validated_plan_definition(_as_protocol(protocol))[0])


def _as_protocol(protocol: Protocol | str | os.PathLike[str]) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    from ._loading import load_protocol

    return load_protocol(protocol)


# One validation per loaded protocol: the PlanDefinition of a protocol never changes, and every
# CarePlan bundle of a patient on it carries it.
_PD_CACHE: weakref.WeakKeyDictionary[Protocol, tuple[dict[str, Any], Any]] = weakref.WeakKeyDictionary()


def _validated_plan_definition(p: Protocol) -> tuple[dict[str, Any], Any]:
    """``(data, validated model)`` of a protocol's PlanDefinition (validated once per protocol)."""
    hit = _PD_CACHE.get(p)
    if hit is None:
        from fhir.resources.plandefinition import PlanDefinition

        data = _plan_definition(p)
        hit = _PD_CACHE[p] = (data, PlanDefinition.model_validate(data))
    return hit


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


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
        action: dict[str, Any] = {"linkId": fhir_id(el.id), "title": el.title,
                                  "extension": [{"url": EXT_ELEMENT, "valueString": el.id}]}
        desc = [model.description] if model.description else []
        if el.open_ended and d.end_of_therapy is not None:
            eot = d.end_of_therapy
            desc.append(f"Until the end of therapy: {eot.text} after {eot.anchor}"
                        + (f" {_UNVERIFIED}" if eot.length.evidence == "placeholder" else ""))
            action["extension"].extend(_ext_evidence(eot.length.evidence, eot.length.note))
        elif el.length is not None:
            action["timingDuration"] = _days(el.length)
            ld = model.length_days
            action["extension"].extend(_ext_evidence(ld.evidence, ld.note))
            if ld.evidence == "placeholder":
                desc.append(f"Length {el.length} days {_UNVERIFIED}")
            if el.first_day != 1:
                desc.append(f"Days are numbered from {el.first_day} (day {el.first_day} = cycle day 1).")
        desc.extend(model.notes)
        if desc:
            action["description"] = "\n".join(desc)
        related, conditions = [], []
        for src, edge, before in incoming.get(el.id, []):
            rel: dict[str, Any] = {"targetId": fhir_id(src), "relationship": "after-end"}
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
            sub: dict[str, Any] = {"linkId": fhir_id(el.id, slot.key), "title": slot.name}
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
            ext = [*_ext_evidence(slot.evidence), *timing.pop("extension", [])]
            if ext:
                sub["extension"] = ext
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
        **({"relatedArtifact": related_artifacts} if related_artifacts else {}),
        **({"contained": contained} if contained else {}),
        "action": actions,
    }


def to_fhir_care_plan(plan: Plan, generated: dt.datetime | None = None) -> Any:
    """A patient's plan as a FHIR R5 ``Bundle`` (collection): the ``Patient`` (pseudonym),
    a ``CarePlan`` and its ``RequestOrchestration`` with every dated item, and the
    ``PlanDefinition`` they instantiate — each validated once by ``fhir.resources``.

    Serialise with :func:`fhir_json`, or get the text directly (faster: no second pass
    through the models) with :func:`care_plan_json`. ``generated``: the bundle timestamp
    (default now, or ``SOURCE_DATE_EPOCH``).

    >>> bundle = to_fhir_care_plan(plan("examples/patients/mr-on-time.yaml"))  # doctest: +SKIP
    """
    return _care_plan_bundle(plan, generated)[1]


def care_plan_json(plan: Plan, generated: dt.datetime | None = None) -> str:
    """A patient's plan as FHIR R5 Bundle JSON text (see :func:`to_fhir_care_plan`): every
    resource validated once by ``fhir.resources``, the text written from the validated data.

    >>> text = care_plan_json(plan("examples/patients/mr-on-time.yaml"))  # doctest: +SKIP
    """
    return _dumps(_care_plan_bundle(plan, generated)[0])


def plan_unverified(plan: Plan) -> bool:
    """True when any item or element of the plan depends on a placeholder."""
    return (any(item_unverified(i)[0] for i in plan.items)
            or any(s.evidence == "placeholder" or getattr(s, "unverified", False) for s in plan.elements))


def _care_plan_bundle(plan: Plan, generated: dt.datetime | None) -> tuple[dict[str, Any], Any]:
    """``(data, validated Bundle)``: each resource validated once, the bundle around them
    assembled from the validated models (pydantic does not validate a model instance again)."""
    from fhir.resources.bundle import Bundle
    from fhir.resources.careplan import CarePlan
    from fhir.resources.patient import Patient
    from fhir.resources.requestorchestration import RequestOrchestration

    from ._documents import _generated_at

    stamp = (generated or _generated_at()).astimezone(dt.UTC).replace(microsecond=0)
    p = plan.protocol
    pat = plan.patient
    ids = {k: _rid(pat.id, p.id, k) for k in ("patient", "careplan", "orchestration")}
    ref = {k: f"urn:uuid:{v}" for k, v in ids.items()}
    canonical = f"{_canonical(p)}|{p.version}"
    unverified = plan_unverified(plan)
    patient = {
        "resourceType": "Patient", "id": ids["patient"],
        "identifier": [{"type": {"text": "pseudonym"}, "value": pat.id}],
        "gender": pat.sex if pat.sex in ("female", "male", "other", "unknown") else "unknown",
        "birthDate": pat.birth_date.isoformat(),
    }
    finished = all(s.status in ("completed", "stopped") for s in plan.elements)
    status = ("revoked" if plan.outcome is not None else "completed" if finished and plan.elements
              else "draft" if unverified else "active")
    orchestration = _orchestration(plan, ids["orchestration"], ref["patient"], canonical, stamp,
                                   "draft" if status == "draft" else "revoked" if status == "revoked" else "active")
    notes = [{"text": "Placeholder values (dose, day, length) are marked UNVERIFIED: they were not confirmed from a "
                      "public source. Check every dose and day against the official protocol document."}]
    if unverified:
        notes.insert(0, {"text": "DRAFT: this plan depends on unverified (placeholder) values; it is not an "
                                 "active order until a site verifies them."})
    if plan.outcome is not None:
        notes.append({"text": f"{plan.outcome[0].replace('_', ' ')} on {plan.outcome[1].isoformat()}"})
    notes.extend({"text": f"warning: {w}"} for w in plan.warnings)
    period: dict[str, Any] = {"start": pat.start_date.isoformat()}
    if plan.end_of_therapy is not None:
        period["end"] = plan.end_of_therapy.isoformat()
    risk = plan.risk
    care_plan = {
        "resourceType": "CarePlan", "id": ids["careplan"],
        "instantiatesCanonical": [canonical],
        "status": status, "intent": "plan",
        "title": f"{p.definition.title}: plan of {pat.id}",
        "description": f"Risk group {risk.group or risk.status}; plan as of {plan.as_of.isoformat()}."
                       + (" Draft: depends on unverified values." if unverified else ""),
        "subject": {"reference": ref["patient"], "display": pat.id},
        "period": period,
        "created": stamp.isoformat().replace("+00:00", "Z"),
        "activity": [{"plannedActivityReference": {"reference": ref["orchestration"]}}],
        "note": notes,
    }
    if unverified:
        care_plan["extension"] = _ext_unverified(["the plan depends on placeholder values"])
    pd_data, pd_model = _validated_plan_definition(p)
    parts = [(ref["patient"], patient, Patient), (ref["careplan"], care_plan, CarePlan),
             (ref["orchestration"], orchestration, RequestOrchestration)]
    models = [(url, kind.model_validate(_validate_shared(data))) for url, data, kind in parts]
    models.append((canonical.split("|")[0], pd_model))
    head = {"resourceType": "Bundle", "id": _rid(pat.id, p.id, "bundle", plan.as_of.isoformat()),
            "type": "collection", "timestamp": stamp.isoformat().replace("+00:00", "Z")}
    bundle = Bundle.model_validate({**head, "entry": [{"fullUrl": url, "resource": m} for url, m in models]})
    datas = [patient, care_plan, orchestration, pd_data]
    data = {**head, "entry": [{"fullUrl": url, "resource": d} for (url, _), d in zip(models, datas, strict=True)]}
    return data, bundle


def _validate_shared(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every ``extension`` list of its actions replaced by validated
    ``Extension`` models, each distinct list object validated once: the thousand items of a
    plan share a few dozen extension lists (status, evidence, dose of their segment), and
    pydantic accepts a validated model instance without validating it again."""
    actions = data.get("action")
    if not actions:
        return data
    from fhir.resources.extension import Extension

    done: dict[int, list[Any]] = {}

    def walk(action: dict[str, Any]) -> dict[str, Any]:
        out = dict(action)
        ext = action.get("extension")
        if ext:
            models = done.get(id(ext))
            if models is None:
                models = done[id(ext)] = [Extension.model_validate(e) for e in ext]
            out["extension"] = models
        if action.get("action"):
            out["action"] = [walk(a) for a in action["action"]]
        return out

    return {**data, "action": [walk(a) for a in actions]}


def _item_dose(item: Any, unverified: bool) -> dict[str, Any] | None:
    """The computed dose of an item as the ``EXT_DOSE`` complex extension (None without an amount)."""
    dose = item.dose
    if dose is None or dose.amount is None:
        return None
    q: dict[str, Any] = {"value": dose.amount, "unit": f"{dose.unit}{_SHOW_PER[dose.per]}"}
    base = _UCUM_UNIT.get(dose.unit)
    if base is not None:
        q.update(system=UCUM, code=f"{base}{_UCUM_PER[dose.per]}")
    if unverified:
        q["extension"] = _UNVERIFIED_FLAG
    parts: list[dict[str, Any]] = [{"url": "dose", "valueQuantity": q}]
    frequency, per_day = administrations(item)
    if per_day is not None and per_day > 1 and frequency != "continuous":
        parts.append({"url": "timing", "valueTiming": {"repeat": _PER_DAY_TIMING.get(
            per_day, {"frequency": per_day, "period": 1, "periodUnit": "d"})}})
    return {"url": EXT_DOSE, "extension": parts}


def _orchestration(plan: Plan, rid: str, subject: str, canonical: str, stamp: dt.datetime,
                   status: str = "active") -> dict[str, Any]:
    p = plan.protocol
    shared: dict[Any, list[dict[str, Any]]] = {}
    by_span: dict[tuple[str, str | None], list[Any]] = {}
    for item in plan.items:
        by_span.setdefault((item.slot.element, item.branch), []).append(item)
    certain: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}  # decision id → exactly-one group
    branches: dict[str, dict[str, Any]] = {}  # top-level branch label → its group
    decisions = {d.id: d for d in plan.decisions if d.branch is None}
    previous: str | None = None
    for span in plan.elements:
        # Certain elements are the targets of relatedAction: their linkId is a FHIR id.
        link = fhir_id(span.id) if span.branch is None else f"{span.id}@{span.branch}"
        span_unverified = span.evidence == "placeholder" or bool(getattr(span, "unverified", False))
        action: dict[str, Any] = {"linkId": link, "title": span.title,
                                  "extension": [{"url": EXT_ELEMENT, "valueString": span.id},
                                                {"url": EXT_STATUS, "valueString": str(span.status)},
                                                *_ext_evidence(span.evidence)]}
        if span_unverified:
            action["extension"].extend(_ext_unverified(["its length or dates depend on a placeholder value"]))
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
        if span_unverified:
            desc.append(f"Length or dates {_UNVERIFIED}")
        action["description"] = "\n".join(desc)
        subs = []
        for item in by_span.get((span.id, span.branch), []):
            slot = item.slot
            flag, reasons = item_unverified(item)
            # Identical extensions are one shared object (validated once, see _validate_shared).
            key = (item.status, slot.evidence, flag, reasons, id(item.dose), item.dose is not None and
                   administrations(item))
            ext = shared.get(key)
            if ext is None:
                ext = [{"url": EXT_STATUS, "valueString": str(item.status)}, *_ext_evidence(slot.evidence)]
                if flag:
                    ext.extend(_ext_unverified(reasons))
                dose = _item_dose(item, flag)
                if dose is not None:
                    ext.append(dose)
                shared[key] = ext
            sub: dict[str, Any] = {"linkId": f"{link}:{slot.key}@{item.element_day}", "title": slot.name,
                                   "timingDateTime": item.date.isoformat(), "extension": ext}
            text = [f"day {item.element_day}, study day {item.study_day}"]
            if item.dose is not None:
                text.insert(0, f"{dose_line(item)} ({item.dose.working})")
            elif slot.kind == "bag_change":
                text.insert(0, "infusion bag change")
            if slot.route:
                text.insert(0, slot.route)
            if flag:
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
        "status": status, "intent": "plan",
        "subject": {"reference": subject, "display": plan.patient.id},
        "authoredOn": stamp.isoformat().replace("+00:00", "Z"),
        "note": [{"text": f"Plan as of {plan.as_of.isoformat()}; item and element status in the {EXT_STATUS} "
                          "extension. Check every dose and day against the official protocol document."}],
        "action": certain,
    }


def fhir_json(resource: Any) -> str:
    """A ``fhir.resources`` resource as FHIR JSON text (indented, no empty fields).

    >>> fhir_json(to_fhir_plan_definition("interfant06"))[:1]  # doctest: +SKIP
    '{'
    """
    return resource.model_dump_json(indent=2) + "\n"
