"""Patient pages: the list (search, filter), registration (form or file), a patient, its history."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .._errors import InputError
from .common import in_registry, page, web_of

#: The base fields of a patient file, as the registration form asks for them.
NUMBERS = ("wbc_at_diagnosis", "day8_blasts_per_ul", "height_cm", "weight_kg", "dose", "percent", "value", "anc",
           "platelets")
INTEGERS = ("bag_hours",)
BASE_FIELDS = ("id", "protocol", "birth_date", "sex", "diagnosis_date", "treatment_start", "kmt2a",
               "wbc_at_diagnosis", "prednisone_response", "day8_blasts_per_ul", "cns_status", "notes")


def typed(name: str, value: str) -> Any:
    """A form value as the patient file would hold it: numbers as numbers when they read as
    one (otherwise the text, which the library refuses with its own message), empty as None."""
    value = value.strip()
    if value == "":
        return None
    if name in NUMBERS:
        try:
            return float(value) if not value.lstrip("-").isdigit() else int(value)
        except ValueError:
            return value
    if name in INTEGERS:
        try:
            return int(value)
        except ValueError:
            return value
    return value


# --------------------------------------------------------------------------- the list


@page("read")
async def patient_list(request: Request) -> Response:
    """``GET /patients``: the patients of the user's sites; ``q`` searches the pseudonym,
    ``protocol`` and ``site`` filter; a coordinator also finds the patient-file upload here."""
    return await _list_page(request)


async def _list_page(request: Request, status: int = 200, errors: dict[str, list[str]] | None = None,
                     upload: dict[str, Any] | None = None) -> Response:
    params = {k: request.query_params.get(k, "").strip()[:100] for k in FILTERS}
    rows, sites, protocols, facts = await in_registry(request, lambda scoped: find_patients(scoped, params))
    actor = request.state.actor
    return web_of(request).render(request, "patients.html.j2", status=status, title="Patients", patients=rows,
                                  sites=sites, protocols=protocols, form=params, facts=facts, statuses=STATUSES,
                                  all_sites=sorted(set(sites.values())), errors=errors or {},
                                  upload=upload or {"site": min(actor.sites, default="")},
                                  my_sites=sorted(actor.sites))


#: The filters of the list (query parameters of ``/patients`` and ``/api/patients``).
FILTERS = ("q", "protocol", "site", "risk", "element", "status")


def find_patients(scoped: Any, params: dict[str, str]) -> tuple[list[Any], dict[str, str], list[str],
                                                                  dict[str, dict[str, str]]]:
    """``(rows, sites, protocols, facts)`` of the list: the user's patients matching the
    :data:`FILTERS` in ``params`` (``q`` in the pseudonym; risk, element and status read from
    each plan, only when one of them is asked for), patient id → site, every protocol id, and
    the plan facts read. The page and the API list through this one function.

    >>> rows, sites, protocols, facts = find_patients(scoped, {"q": "0001"})  # doctest: +SKIP
    """
    q, protocol, site = (params.get(k, "") for k in ("q", "protocol", "site"))
    planned = any(params.get(k) for k in ("risk", "element", "status"))
    sites = scoped.visible()
    every = scoped.patients()
    rows = [p for p in every
            if (not q or q.lower() in p.id.lower()) and (not protocol or p.protocol.split("@")[0] == protocol)
            and (not site or sites.get(p.id) == site)]
    facts: dict[str, dict[str, str]] = {}
    if planned:  # risk, element and status come from each patient's plan: only when asked for
        for p in rows:
            facts[p.id] = plan_facts(scoped, p.id)
        rows = [p for p in rows if all(not params.get(k) or facts[p.id][k] == params[k]
                                       for k in ("risk", "element", "status"))]
    protocols = sorted({p.protocol.split("@")[0] for p in every})
    return rows, sites, protocols, facts


#: The patient statuses the list filters on, from the plan (its outcome, or its elements).
STATUSES = ("in treatment", "not started", "completed", "hsct", "relapse", "death", "off_protocol", "cannot plan")


def plan_facts(scoped: Any, pid: str) -> dict[str, str]:
    """``{"risk", "element", "status"}`` of a patient from its plan, for the list filters."""
    try:
        p = scoped.plan(pid)
    except InputError:
        return {"risk": "", "element": "", "status": "cannot plan"}
    current = next((e for e in reversed(p.elements) if e.status == "in_progress"), None)
    if p.outcome is not None:
        status = p.outcome[0]
    elif current is not None:
        status = "in treatment"
    elif all(e.actual_start is None for e in p.elements):
        status = "not started"
    else:
        status = "completed"
    return {"risk": p.risk.group or "pending", "element": current.id if current else "", "status": status}


# --------------------------------------------------------------------------- registration


def _protocol_ids() -> list[str]:
    from .._loading import list_protocols

    return [p.id for p in list_protocols()]


@page("register")
async def new_form(request: Request) -> Response:
    """``GET /patients/new``: the registration form (and the patient-file import)."""
    actor = request.state.actor
    return web_of(request).render(request, "new.html.j2", title="Register a patient", protocols=_protocol_ids(),
                                  sites=sorted(actor.sites), form={"site": sorted(actor.sites)[0]})


def _register_errors(exc: InputError) -> dict[str, list[str]]:
    """Problems by registration field: ``measurements[0].date`` is the measured-on field."""
    out: dict[str, list[str]] = {}
    for p in exc.problems:
        field = p.field or ""
        if field.startswith("measurements"):
            rest = field.partition(".")[2]
            field = {"date": "m_date", "": "height_cm"}.get(rest, rest)
        else:
            field = field.split(".")[0].split("[")[0]
        out.setdefault(field if field in (*BASE_FIELDS, "site", "m_date", "height_cm", "weight_kg") else "",
                       []).append(p.message if field else str(p))
    return out


@page("register")
async def register(request: Request) -> Response:
    """``POST /patients/new``: register from the form; every problem is shown beside its field
    and nothing is stored until the whole patient is valid."""
    actor = request.state.actor
    form = await request.form()
    values = {k: str(form.get(k, "")) for k in (*BASE_FIELDS, "site", "m_date", "height_cm", "weight_kg")}
    data: dict[str, Any] = {}
    for name in BASE_FIELDS:
        value = typed(name, values[name])
        if value is not None:
            data[name] = value
    m = {k: typed(k, values[k]) for k in ("height_cm", "weight_kg")}
    m_date = values["m_date"].strip()
    if m_date or any(v is not None for v in m.values()):
        data["measurements"] = [{"date": m_date or None, **m}]
    site = values["site"] or None

    def add(scoped: Any) -> Any:
        return scoped.add_patient(data, site)

    try:
        entries = await in_registry(request, add)
    except InputError as exc:
        errors = _register_errors(exc)
        return web_of(request).render(request, "new.html.j2", status=400, title="Register a patient",
                                      protocols=_protocol_ids(), sites=sorted(actor.sites), form=values,
                                      errors=errors)
    return RedirectResponse(f"/patients/{entries[0].patient}?registered=1", status_code=303)


def _upload_name(filename: str | None) -> str:
    """The uploaded file's own name as the problems name it: without any folder, characters
    other than letters, digits, ``._-`` and spaces replaced by ``_``.

    >>> _upload_name("C:\\\\files\\\\INF 0042.yaml"), _upload_name("..")
    ('INF 0042.yaml', 'uploaded.yaml')
    """
    import re

    name = re.sub(r"[^A-Za-z0-9._ -]", "_", (filename or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()[:100]
    return "uploaded.yaml" if name.strip(".") == "" else name


def _import(scoped: Any, name: str, content: bytes, site: str | None) -> Any:
    """Register the patient file ``content`` (called ``name``) as the command line does:
    written to a private temporary folder and read by the library's own file reader, so its
    problems name the file's lines; then the problems name ``name``, not the folder."""
    from .._errors import Problem

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(content)
        try:
            return scoped.add_patient(path, site)
        except InputError as exc:
            raise type(exc)([Problem(name if p.file == path else p.file, p.field,
                                     p.message.replace(path, name), p.line) for p in exc.problems]) from None


@page("register")
async def import_file(request: Request) -> Response:
    """``POST /patients/import``: register a patient file, uploaded (``multipart/form-data``,
    the form on ``/patients``; at most 4 MB) or pasted (the form on ``/patients/new``).
    The library's patient-file validation is the only check: its problems (with the file's
    lines) are shown beside the file field and nothing is stored."""
    from .guards import content_type

    actor = request.state.actor
    if content_type(request.scope) == "multipart/form-data":
        return await _import_upload(request)
    form = await request.form()
    text = str(form.get("file", ""))
    site = str(form.get("site", "")) or None
    errors: dict[str, list[str]] = {}
    if not text.strip():
        errors = {"file": ["paste the text of a patient file (YAML or JSON)"]}
    if errors:
        return web_of(request).render(request, "new.html.j2", status=400, title="Register a patient",
                                      protocols=_protocol_ids(), sites=sorted(actor.sites), form={"site": site},
                                      errors=errors)
    name = "pasted.json" if text.lstrip().startswith("{") else "pasted.yaml"
    try:
        entries = await in_registry(request, lambda scoped: _import(scoped, name, text.encode("utf-8"), site))
    except InputError as exc:
        return web_of(request).render(request, "new.html.j2", status=400, title="Register a patient",
                                      protocols=_protocol_ids(), sites=sorted(actor.sites),
                                      form={"site": site, "file": text}, errors={"file": [str(p) for p in exc.problems]})
    return RedirectResponse(f"/patients/{entries[0].patient}?registered=1", status_code=303)


async def _import_upload(request: Request) -> Response:
    from starlette.datastructures import UploadFile

    from .guards import MAX_BODY

    async with request.form(max_files=1, max_fields=10, max_part_size=MAX_BODY) as form:
        upload = form.get("file")
        site = str(form.get("site", "")) or None
        errors: dict[str, list[str]] = {}
        content = b""
        name = ""
        if not isinstance(upload, UploadFile) or not upload.filename:
            errors = {"file": ["choose a patient file to upload (YAML or JSON)"]}
        else:
            name = _upload_name(upload.filename)
            content = await upload.read()
    if not errors:
        try:
            entries = await in_registry(request, lambda scoped: _import(scoped, name, content, site))
        except InputError as exc:
            errors = {"file" if p.field != "site" else "site": [] for p in exc.problems}
            for p in exc.problems:
                errors["site" if p.field == "site" else "file"].append(str(p))
        else:
            return RedirectResponse(f"/patients/{entries[0].patient}?registered=1", status_code=303)
    return await _list_page(request, status=400, errors=errors, upload={"site": site or "", "name": name})


# --------------------------------------------------------------------------- a patient


def patient_view(scoped: Any, pid: str, days: int) -> dict[str, Any]:
    """What the patient page shows, read from the library's plan (no rule is applied here)."""
    from .._calendar import dose_line, item_unverified

    site = scoped.site_of(pid)
    p = scoped.plan(pid)
    today = p.as_of
    end = today + dt.timedelta(days=days)
    current = next((e for e in reversed(p.elements) if e.status == "in_progress"), None)
    current_day = None if current is None or current.actual_start is None else (today - current.actual_start).days + 1
    coming: dict[dt.date, list[dict[str, Any]]] = {}
    for item in p.items:
        # Also the past fortnight's items still to record (the element under way), to record late.
        if item.status == "overdue" or (today <= item.date < end) or (
                item.status == "unrecorded" and item.date >= today - dt.timedelta(days=14)):
            flag, why = item_unverified(item)
            coming.setdefault(item.date, []).append({
                "ref": item.ref, "name": item.name, "route": item.route, "kind": item.kind,
                "dose": None if item.dose is None else item.dose.text,
                "dose_line": dose_line(item),
                "working": None if item.dose is None else item.dose.working,
                "amount": None if item.dose is None else item.dose.amount,
                "status": item.status, "branch": item.branch, "note": item.note,
                "unverified": flag, "unverified_why": "; ".join(why), "element_day": item.element_day})
    signoffs = scoped.signoffs(pid)
    history = scoped.history(pid)
    by_seq = {e.seq: e for e in history}
    waiting = [(by_seq[s], so) for s, so in signoffs.items() if so.state == "unsigned" and s in by_seq]
    return {"pid": pid, "site": site, "plan": p, "today": today, "days": days, "current": current,
            "current_day": current_day, "coming": sorted(coming.items()), "waiting": waiting,
            "feeds": scoped.feeds(pid), "timepoints": p.protocol.definition.timepoints,
            "randomisations": p.protocol.definition.randomisations}


@page("read")
async def patient_page(request: Request) -> Response:
    """``GET /patients/{pid}``: header, pending decisions, timeline, the coming days' plan
    (dose, working, unverified mark) with a record link on each item, sign-offs, documents."""
    pid = request.path_params["pid"]
    try:
        days = max(1, min(int(request.query_params.get("days", "14")), 366))
    except ValueError:
        days = 14
    view = await in_registry(request, lambda scoped: patient_view(scoped, pid, days))
    notice = None
    if request.query_params.get("registered"):
        notice = f"Registered {pid}."
    elif request.query_params.get("recorded"):
        notice = f"Recorded entry #{request.query_params['recorded']}; the plan below is re-planned."
    elif request.query_params.get("signed"):
        notice = f"Signed entry #{request.query_params['signed']}."
    feed = request.query_params.get("feed")
    return web_of(request).render(request, "patient.html.j2", title=f"Patient {pid}", notice=notice,
                                  new_feed=feed, **view)


def _local(stamp: str) -> str:
    moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


@page("read")
async def history_page(request: Request) -> Response:
    """``GET /patients/{pid}/history``: every entry with who, when (UTC and local), why and
    what corrected it; ``as_of`` shows the record as it was known then. Printable."""
    pid = request.path_params["pid"]
    as_of = request.query_params.get("as_of", "").strip() or None

    def load(scoped: Any) -> Any:
        return scoped.history(pid, as_of_recorded=as_of), scoped.signoffs(pid)

    errors: dict[str, list[str]] = {}
    try:
        entries, signoffs = await in_registry(request, load)
    except InputError as exc:
        if "as_of" not in str(exc) and not any(p.field == "as_of_recorded" for p in exc.problems):
            raise
        errors = {"as_of": [p.message for p in exc.problems]}
        entries, signoffs = await in_registry(request, lambda s: (s.history(pid), s.signoffs(pid)))
        as_of = None
    rows = [{"e": e, "local": _local(e.recorded_at), "signoff": signoffs.get(e.seq)} for e in entries]
    return web_of(request).render(request, "history.html.j2", status=400 if errors else 200,
                                  title=f"History of {pid}", pid=pid, rows=rows, form={"as_of": as_of or ""},
                                  errors=errors)


routes = [
    Route("/patients", patient_list, methods=["GET"]),
    Route("/patients/new", new_form, methods=["GET"]),
    Route("/patients/new", register, methods=["POST"]),
    Route("/patients/import", import_file, methods=["POST"]),
    Route("/patients/{pid}", patient_page, methods=["GET"]),
    Route("/patients/{pid}/history", history_page, methods=["GET"]),
]
