"""The JSON API: the operations of the pages, as JSON, described by ``GET /api/openapi.json``.

Every route calls the same functions the pages call (:class:`protocol._access.Scoped`, through
:func:`protocol.web.common.in_registry`, and the pages' own :func:`~protocol.web.patients.find_patients`,
:func:`~protocol.web.patients.patient_view` and :func:`~protocol.web.recording.build_entry`): no
clinical logic and no rule lives here, and the pages do not depend on this module.

Authentication is the pages' session: ``POST /signin`` (a form with ``name``, ``password`` and
``csrftoken``), then the session cookie on every request. A state-changing request (POST) also
sends the CSRF token in the ``x-csrftoken`` header: the value of the CSRF cookie
(``protocol-csrf``, ``__Host-protocol-csrf`` off loopback) that every response sets, also given
as ``csrf_token`` by ``GET /api/session``. Bodies are ``application/json``. Every refusal is JSON
``{"error": ..., "field": ..., "problems": [...]}``: 401 without a session, 403 for a role that may
not (or a missing CSRF token), 404 for a patient that does not exist or belongs to another site,
400 with the library's message and the field it names.

>>> import httpx                                                          # doctest: +SKIP
>>> c = httpx.Client(base_url="http://127.0.0.1:8000")                    # doctest: +SKIP
>>> token = c.get("/signin").cookies["protocol-csrf"]                     # doctest: +SKIP
>>> c.post("/signin", data={"name": "alice", "password": "...", "csrftoken": token})  # doctest: +SKIP
>>> c.post("/api/patients/INF-0001/entries", headers={"x-csrftoken": token},
...        json={"action": "counts", "date": "2026-12-03", "anc": 1.2}).json()["seq"]  # doctest: +SKIP
21
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._access import Forbidden, NotFound, allowed
from .._errors import InputError, Problem
from .._models import Patient
from ..schedule.records import LEGEND
from .common import actor_of, in_registry

__all__ = ["OPERATIONS", "application", "error", "openapi"]

LOG = logging.getLogger("protocol.web.api")
Handler = Callable[[Request], Awaitable[Response]]


# --------------------------------------------------------------------------- the JSON shapes


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiProblem(_Out):
    """One problem, as the library words it: the field it names (None: the whole request)."""

    field: str | None
    message: str
    file: str | None = None
    line: int | None = None


class ApiError(_Out):
    """Every refusal: the first problem's message and field, and every problem."""

    error: str
    field: str | None = None
    problems: list[ApiProblem] = []


class SessionOut(_Out):
    """The signed-in user, and the CSRF token to send as the ``x-csrftoken`` header."""

    user: str
    role: str
    sites: list[str]
    csrf_token: str
    csrf_header: str = "x-csrftoken"


class PatientRow(_Out):
    """One patient of the list (``risk``, ``element``, ``status`` only when a filter asked for them)."""

    id: str
    site: str
    protocol: str
    diagnosis_date: str
    entries: int
    created: str
    last_recorded_at: str
    last_recorded_by: str
    risk: str | None = None
    element: str | None = None
    status: str | None = None


class PatientList(_Out):
    """The user's patients matching the filters, and every protocol id among their patients."""

    patients: list[PatientRow]
    protocols: list[str]


class Registered(_Out):
    """A registered patient: its id, site and first entry."""

    id: str
    site: str
    seq: int
    entries: int


class ProtocolOut(_Out):
    id: str
    version: str | None
    title: str
    status: str


class Risk(_Out):
    """The risk group with its explanation (``reasons``, one line per rule part)."""

    group: str | None
    label: str | None
    status: str
    reasons: list[str]
    unverified: bool
    unverified_reasons: list[str]
    candidates: list[str] = []
    waiting_for: list[str] = []


class Branch(_Out):
    to: str
    when: str | None
    now: bool | None


class DecisionOut(_Out):
    """A pending decision: what it waits for, its rules explained, unverified when a rule is a placeholder."""

    id: str
    at: str
    status: str
    unverified: bool
    unverified_reasons: list[str]
    depends_on: list[str]
    outcome: str | None
    date: dt.date | None
    branches: list[Branch]
    waiting_for: list[str]
    explanation: list[str]
    branch: str | None


class DoseOut(BaseModel):
    """An item's dose: the amount, its ``text``, the ``working`` with every factor, its evidence."""

    model_config = ConfigDict(extra="allow")
    amount: float | None
    unit: str | None
    text: str
    working: str | None
    evidence: str
    unverified: bool
    unverified_reasons: list[str]


class Window(_Out):
    before: int
    after: int


class PlanItem(_Out):
    """One item of the coming days (or overdue, or of the past fortnight still to record)."""

    date: dt.date
    ref: str
    element: str
    element_day: int
    study_day: int
    kind: str
    name: str
    route: str | None
    dose: DoseOut | None
    dose_line: str | None
    status: str
    evidence: str
    unverified: bool
    unverified_reasons: list[str]
    branch: str | None
    note: str | None
    window: Window | None


class Current(_Out):
    id: str
    title: str
    day: int | None


class Outcome(_Out):
    type: str
    date: dt.date


class ElementOut(_Out):
    id: str
    title: str
    planned_start: dt.date | None
    planned_end: dt.date | None
    actual_start: dt.date | None
    actual_end: dt.date | None
    status: str
    branch: str | None
    evidence: str
    note: str | None
    unverified: bool
    unverified_reasons: list[str]


class Deviation(BaseModel):
    model_config = ConfigDict(extra="allow")
    date: dt.date | None = None
    kind: str
    message: str


class Waiting(_Out):
    """An entry waiting for a second person's sign-off."""

    seq: int
    what: str
    recorded_by: str
    recorded_at: str
    meaning: str
    why: str


class PatientDetail(_Out):
    """The patient page as data: header, pending decisions, the coming items, elements, sign-offs."""

    id: str
    site: str
    protocol: ProtocolOut
    as_of: dt.date
    days: int
    risk: Risk
    current: Current | None
    end_of_therapy: dt.date | None
    outcome: Outcome | None
    pending: list[DecisionOut]
    items: list[PlanItem]
    elements: list[ElementOut]
    deviations: list[Deviation]
    warnings: list[str]
    waiting_signoff: list[Waiting]
    legend: dict[str, str]


class SignOffOut(_Out):
    meaning: str
    why: str
    signer: str | None
    signed_at: str | None
    state: str


class EntryOut(_Out):
    """One entry of the audit trail: who, when (UTC and the server's local time), why, what corrected it."""

    seq: int
    patient: str
    kind: str
    data: Any
    what: str
    recorded_by: str
    recorded_at: str
    recorded_at_local: str
    reason: str | None
    supersedes: int | None
    retracts: int | None
    superseded_by: int | None
    retracted_by: int | None
    changes: str | None
    live: bool
    signoff: SignOffOut | None


class History(_Out):
    patient: str
    as_of: str | None
    entries: list[EntryOut]


class Recorded(_Out):
    """A recorded entry (``seq``), and its sign-off when it waits for one."""

    seq: int
    patient: str
    entry: EntryOut


class Signed(SignOffOut):
    """A signed entry: its seq and patient, the meaning, the signer and the time."""

    seq: int
    patient: str


class WorklistRow(_Out):
    date: str
    patient: str
    category: str
    kind: str | None
    study: str | None
    element: str | None
    item: str | None
    name: str | None
    detail: str | None
    status: str | None
    branch: str | None


class Unsigned(_Out):
    patient: str
    seq: int
    meaning: str
    why: str
    recorded_at: str


class WorklistOut(_Out):
    """Due in the coming ``days``, overdue, waiting, out of window; and entries waiting for sign-off."""

    start: dt.date
    end: dt.date
    days: int
    as_of: dt.date
    counts: dict[str, int]
    total: int
    page: int
    per_page: int
    pages: int
    rows: list[WorklistRow]
    unsigned: list[Unsigned]


def _record_body() -> type[BaseModel]:
    """The request body of ``POST /api/patients/{pid}/entries``: one variant per action of the
    record form (:data:`protocol.web.recording.ACTIONS`), each field described by the patient
    file's model and required as the library requires it (documentation: the library checks)."""
    from .._models import EVENT_FIELDS, BloodCount, Event, Measurement, MrdResult
    from .patients import INTEGERS, NUMBERS
    from .recording import ACTIONS

    models = {"measurement": Measurement, "mrd": MrdResult, "count": BloodCount}
    variants: list[type[BaseModel]] = []
    for action, (kind, event, names) in ACTIONS.items():
        model = Event if event is not None else models[kind]
        required = ({"date", *EVENT_FIELDS[event][1]} if event is not None
                    else {n for n, f in model.model_fields.items() if f.is_required()})
        fields: dict[str, Any] = {"action": (Literal[action], ...)}  # type: ignore[valid-type]
        for name in names:
            info = model.model_fields.get(name)
            kind_of: Any = (float | str) if name in NUMBERS else (int | str) if name in INTEGERS else str
            fields[name] = (kind_of if name in required else kind_of | None,
                            Field(... if name in required else None, description=info.description if info else None))
        fields["supersedes"] = (int | None, Field(None, description="The seq of the entry this one corrects."))
        fields["why"] = (str | None, Field(None, description="Why the corrected entry was wrong (with supersedes)."))
        title = "Record" + "".join(part.title() for part in action.split("-"))
        variants.append(create_model(title, __config__=ConfigDict(extra="forbid"),
                                     __doc__=f"Record {action} ({event or kind}).", **fields))
    union = Annotated[Union[tuple(variants)], Field(discriminator="action")]  # noqa: UP007
    return type("RecordBody", (RootModel[union],), {"__doc__": "One entry, as the record form takes it."})


RecordBody = _record_body()


class RetractBody(BaseModel):
    """The entry to retract and why."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(description="The seq of the entry recorded in error.")
    reason: str = Field(description="Why it is withdrawn (required).")


class SignBody(BaseModel):
    """The signer's password, asked again for every signature."""

    model_config = ConfigDict(extra="forbid")
    password: str


# --------------------------------------------------------------------------- errors and the wrapper


def error(status: int, message: str, field: str | None = None, problems: list[Problem] | None = None) -> JSONResponse:
    """A JSON refusal ``{"error", "field", "problems"}``.

    >>> error(404, "no patient 'X'").status_code
    404
    """
    listed = [ApiProblem(field=p.field or None, message=p.message, file=p.file or None, line=p.line)
              for p in problems or []]
    body = ApiError(error=message, field=field, problems=listed)
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def _refused(exc: InputError, rename: dict[str, str] | None = None) -> JSONResponse:
    first = exc.problems[0] if exc.problems else Problem("", "", str(exc))
    name = (rename or {}).get(first.field, first.field) or None
    return error(400, "; ".join(p.message for p in exc.problems), name, exc.problems)


def _json(model: type[BaseModel], data: Any, status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(model.model_validate(data).model_dump(mode="json"), status_code=status, headers=headers)


def endpoint(action: str | None) -> Callable[[Handler], Handler]:
    """A route for a signed-in user allowed to do ``action`` (None: any signed-in user): 401, 403,
    404 and 400 as JSON; anything unexpected is a JSON 500 without a traceback (and logged)."""

    def wrap(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                actor = await actor_of(request)
                if actor is None:
                    return error(401, "sign in first: no live session (POST /signin, then send its cookie)")
                request.state.actor = actor
                if action is not None and not allowed(actor, action):
                    return error(403, f"a {actor.role} may not {action}")
                return await handler(request)
            except NotFound as exc:
                return error(404, "; ".join(p.message for p in exc.problems) or "not found")
            except Forbidden as exc:
                return error(403, str(exc))
            except InputError as exc:
                return _refused(exc)
            except Exception:  # never a traceback to the client
                LOG.exception("API request %s %s failed", request.method, request.url.path)
                return error(500, "internal error: check the patient's history before sending it again")

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(Problem("body", "", f"expected a JSON object, got text that is not JSON ({exc})")) from None
    if not isinstance(data, dict):
        raise InputError(Problem("body", "", f"expected a JSON object, got {type(data).__name__}"))
    return data


def _days(request: Request, default: int) -> int:
    return _whole(request, "days", default, 366)


# --------------------------------------------------------------------------- routes


@endpoint(None)
async def session(request: Request) -> Response:
    """``GET /api/session``: who is signed in, and the CSRF token for ``x-csrftoken``.

    >>> client.get("/api/session").json()["csrf_token"]  # doctest: +SKIP
    'IjQ3...'
    """
    actor = request.state.actor
    token = request.scope.get("csrftoken")
    return _json(SessionOut, {"user": actor.name, "role": actor.role, "sites": sorted(actor.sites),
                              "csrf_token": token() if token else ""})


@endpoint("read")
async def patients(request: Request) -> Response:
    """``GET /api/patients``: the patients of the user's sites, with the filters of ``/patients``
    (``q`` in the pseudonym, ``protocol``, ``site``, ``risk``, ``element``, ``status``).

    >>> client.get("/api/patients", params={"risk": "MR"}).json()["patients"][0]["id"]  # doctest: +SKIP
    'INF-0001'
    """
    from .patients import FILTERS, find_patients

    params = {k: request.query_params.get(k, "").strip()[:100] for k in FILTERS}
    rows, sites, protocols, facts = await in_registry(request, lambda scoped: find_patients(scoped, params))
    return _json(PatientList, {"protocols": protocols, "patients": [
        {**p.to_dict(), "site": sites[p.id], **facts.get(p.id, {})} for p in rows]})


@endpoint("register")
async def register(request: Request) -> Response:
    """``POST /api/patients?site=SITE``: register a patient from the JSON of a patient file (the
    patient file's own validation; every problem names its field; nothing stored until valid).
    ``site`` may be left out by a user of one site. 201 with the id and the first entry's seq.

    >>> client.post("/api/patients?site=site-a", headers={"x-csrftoken": token},
    ...             json=yaml.safe_load(open("examples/patients/mr-on-time.yaml"))).status_code  # doctest: +SKIP
    201
    """
    data = await _body(request)
    site = request.query_params.get("site", "").strip() or None
    entries = await in_registry(request, lambda scoped: scoped.add_patient(data, site))
    pid = entries[0].patient
    where = await in_registry(request, lambda scoped: scoped.site_of(pid))
    return _json(Registered, {"id": pid, "site": where, "seq": entries[0].seq, "entries": len(entries)}, 201,
                 location=f"/api/patients/{pid}")


@endpoint("read")
async def patient(request: Request) -> Response:
    """``GET /api/patients/{pid}?days=14``: the header (protocol and version, risk group with its
    reasons, the element under way and its day, end of therapy), the pending decisions, and the
    items of the coming ``days`` (with overdue ones and the past fortnight's still to record),
    each with its dose, working, evidence and unverified mark; elements, warnings, sign-offs.

    >>> client.get("/api/patients/INF-0001").json()["items"][0]["dose"]["working"]  # doctest: +SKIP
    '50 mg/m²/day × 0.402 m² = 20.1 mg/day (...)'
    """
    from .patients import patient_view

    pid = request.path_params["pid"]
    days = _days(request, 14)
    view = await in_registry(request, lambda scoped: patient_view(scoped, pid, days))
    p = view["plan"]
    by_key: dict[tuple[dt.date, str], list[Any]] = {}
    for item in p.items:
        by_key.setdefault((item.date, item.ref), []).append(item)
    items = []
    for day, shown in view["coming"]:  # the page's own selection, as the library's items
        for row in shown:
            item = by_key[(day, row["ref"])].pop(0)
            items.append({**item.to_dict(), "dose_line": row["dose_line"]})
    current = view["current"]
    return _json(PatientDetail, {
        "id": pid, "site": view["site"], "as_of": p.as_of, "days": days,
        "protocol": {"id": p.protocol.id, "version": p.protocol.version, "title": p.protocol.definition.title,
                     "status": p.protocol.definition.status},
        "risk": p.risk.to_dict(), "end_of_therapy": p.end_of_therapy,
        "current": None if current is None else {"id": current.id, "title": current.title, "day": view["current_day"]},
        "outcome": None if p.outcome is None else {"type": p.outcome[0], "date": p.outcome[1]},
        "pending": [d.to_dict() for d in p.pending], "items": items, "elements": [e.to_dict() for e in p.elements],
        "deviations": list(p.deviations), "warnings": list(p.warnings),
        "waiting_signoff": [{"seq": e.seq, "what": e.what, "recorded_by": e.recorded_by, "recorded_at": e.recorded_at,
                             "meaning": so.meaning, "why": so.why} for e, so in view["waiting"]],
        "legend": LEGEND})


def _entry(e: Any, signoffs: dict[int, Any]) -> dict[str, Any]:
    from .patients import _local

    so = signoffs.get(e.seq)
    return {**e.to_dict(), "changes": e.changes, "recorded_at_local": _local(e.recorded_at),
            "signoff": None if so is None else {"meaning": so.meaning, "why": so.why, "signer": so.signer,
                                                "signed_at": so.signed_at, "state": so.state}}


@endpoint("read")
async def history(request: Request) -> Response:
    """``GET /api/patients/{pid}/history?as_of=2026-11-21T12:00:00Z``: every entry with who, when,
    why and what corrected it; ``as_of`` gives the record as it was known then.

    >>> [e["recorded_by"] for e in client.get("/api/patients/INF-0001/history").json()["entries"]][:1]  # doctest: +SKIP
    ['alice']
    """
    pid = request.path_params["pid"]
    as_of = request.query_params.get("as_of", "").strip() or None

    def load(scoped: Any) -> Any:
        return scoped.history(pid, as_of_recorded=as_of), scoped.signoffs(pid)

    try:
        entries, signoffs = await in_registry(request, load)
    except NotFound:
        raise
    except InputError as exc:
        return _refused(exc, {"as_of_recorded": "as_of"})
    return _json(History, {"patient": pid, "as_of": as_of, "entries": [_entry(e, signoffs) for e in entries]})


@endpoint("record")
async def record(request: Request) -> Response:
    """``POST /api/patients/{pid}/entries``: record one entry as the signed-in user, with the
    fields of the record form (``{"action": "given", "item": "induction:prednisone@1", "date":
    "2026-05-04", "dose": 22.1}``; see the ``RecordBody`` schema). The library's checks are the
    only checks; a refusal is 400 with its message and field, and nothing is stored. A correction
    gives ``supersedes`` (the entry's seq) and ``why``. 201 with the entry's ``seq``.

    >>> client.post("/api/patients/INF-0001/entries", headers={"x-csrftoken": token},
    ...             json={"action": "measurement", "date": "2026-12-03", "height_cm": 71, "weight_kg": 8.5}
    ...             ).json()["seq"]  # doctest: +SKIP
    21
    """
    from .recording import ACTIONS, _beside, build_entry

    pid = request.path_params["pid"]
    body = await _body(request)
    action = body.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise InputError(Problem("record", "action", f"expected one of {', '.join(ACTIONS)}, got {action!r}"))
    takes = ACTIONS[action][2]
    form: dict[str, str] = {}
    for key, value in body.items():
        if key == "action":
            continue
        if key not in (*takes, "supersedes", "why"):
            raise InputError(Problem("record", key, f"{action} takes {', '.join(takes)} (and supersedes, why), "
                                     f"not {key!r}"))
        if isinstance(value, bool) or not isinstance(value, str | int | float | type(None)):
            raise InputError(Problem("record", key, f"expected a text or a number, got {json.dumps(value)}"))
        form[key] = "" if value is None else str(value)
    supersedes = form.get("supersedes", "").strip()
    if supersedes and not supersedes.isdigit():
        raise InputError(Problem("record", "supersedes",
                                 f"expected an entry's seq (a whole number), got {supersedes!r}"))
    why = form.get("why", "").strip() or None

    def write(scoped: Any) -> Any:
        kind, data = build_entry(action, form)
        entry = scoped.record(pid, kind, data, reason=why, supersedes=int(supersedes) if supersedes else None)
        return entry, scoped.signoffs(pid)

    try:
        entry, signoffs = await in_registry(request, write)
    except NotFound:
        raise
    except InputError as exc:
        beside = _beside(exc, action, form)
        if "type" in beside:  # the event type is what the client calls the action
            beside["action"] = beside.pop("type")
        named = next((k for k in beside if k), None)
        message = "; ".join(m for ms in beside.values() for m in ms)
        problems = [Problem("record", k, m) for k, ms in beside.items() for m in ms]
        return error(400, message, named, problems)
    return _json(Recorded, {"seq": entry.seq, "patient": pid, "entry": _entry(entry, signoffs)}, 201,
                 location=f"/api/patients/{pid}/history")


def _seq(value: Any, name: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise InputError(Problem("body", name, f"expected an entry's seq (a whole number), got {json.dumps(value)}"))
    return int(value)


def _text(body: dict[str, Any], name: str, limit: int = 10_000) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InputError(Problem("body", name, f"expected a text, got {json.dumps(value)}"))
    return (value or "")[:limit].strip() or None


def _only(body: dict[str, Any], names: tuple[str, ...]) -> None:
    for key in body:
        if key not in names:
            raise InputError(Problem("body", key, f"takes {', '.join(names)}, not {key!r}"))


@endpoint("record")
async def retract(request: Request) -> Response:
    """``POST /api/patients/{pid}/retract``: withdraw entry ``seq`` recorded in error, with a
    ``reason`` (the library requires one), as the signed-in user. 201 with the retraction's seq.

    >>> client.post("/api/patients/INF-0001/retract", headers={"x-csrftoken": token},
    ...             json={"seq": 21, "reason": "wrong patient"}).json()["seq"]  # doctest: +SKIP
    22
    """
    pid = request.path_params["pid"]
    body = await _body(request)
    _only(body, ("seq", "reason"))
    seq, reason = _seq(body.get("seq"), "seq"), _text(body, "reason")

    def write(scoped: Any) -> Any:
        entry = scoped.retract(pid, seq, reason=reason)
        return entry, scoped.signoffs(pid)

    entry, signoffs = await in_registry(request, write)
    return _json(Recorded, {"seq": entry.seq, "patient": pid, "entry": _entry(entry, signoffs)}, 201,
                 location=f"/api/patients/{pid}/history")


@endpoint("sign")
async def sign(request: Request) -> Response:
    """``POST /api/entries/{seq}/sign``: a pharmacist or investigator (never the recorder) signs
    a dose-critical entry, giving the ``password`` again; 200 with the signature. Another site's
    entry is 404; a wrong password or an entry that needs no signature is 400.

    >>> client.post("/api/entries/21/sign", headers={"x-csrftoken": token},
    ...             json={"password": "..."}).json()["state"]  # doctest: +SKIP
    'signed'
    """
    raw = request.path_params["seq"]
    if not raw.isdigit():
        raise NotFound(Problem(f"#{raw}", "", f"no entry #{raw}"))
    seq = int(raw)
    body = await _body(request)
    _only(body, ("password",))
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise InputError(Problem("sign", "password", "expected your password, to sign"))

    def do(scoped: Any) -> Any:
        pid = scoped.entry_patient(seq)
        scoped.sign(seq, password[:1024])
        return pid, scoped.signoffs(pid)[seq]

    pid, so = await in_registry(request, do)
    return _json(Signed, {"seq": seq, "patient": pid, "meaning": so.meaning, "why": so.why, "signer": so.signer,
                          "signed_at": so.signed_at, "state": so.state})


def _whole(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name, str(default)).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise InputError(Problem("query", name, f"expected a whole number from 1 to {high}, got {raw!r}"))
    return int(raw)


@endpoint("read")
async def worklist(request: Request) -> Response:
    """``GET /api/worklist?days=7&page=1&per_page=250``: across the user's patients, what is due
    in the next ``days`` days (1 to 366), overdue, waiting for a result, out of window, one page
    of rows (as the page reads them), the counts and total of the whole list; and the entries
    waiting for sign-off.

    >>> client.get("/api/worklist", params={"days": 28}).json()["counts"]["due"]  # doctest: +SKIP
    12
    """
    days = _days(request, 7)
    number = _whole(request, "page", 1, 10**6)
    per_page = _whole(request, "per_page", 250, 5000)
    wl, unsigned = await in_registry(request, lambda scoped: (scoped.worklist_page(days, number, per_page),
                                                              scoped.unsigned()))
    return _json(WorklistOut, {
        "start": wl.start, "end": wl.end, "days": wl.days, "as_of": wl.as_of, "counts": wl.counts(),
        "total": wl.total, "page": number, "per_page": per_page, "pages": max(1, -(-wl.total // per_page)),
        "rows": wl.records(),
        "unsigned": [dict(zip(("patient", "seq", "meaning", "why", "recorded_at"), u, strict=True)) for u in unsigned]})


@endpoint(None)
async def openapi_json(request: Request) -> Response:
    """``GET /api/openapi.json``: the OpenAPI 3.1 document of every ``/api/`` route.

    >>> sorted(client.get("/api/openapi.json").json()["paths"])[:2]  # doctest: +SKIP
    ['/api/openapi.json', '/api/patients']
    """
    web = request.app.state.web
    return JSONResponse(openapi(web.session_cookie))


# --------------------------------------------------------------------------- the OpenAPI document


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" or "path"
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    """One route: what it answers with, and what the OpenAPI document says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    ok: tuple[int, type[BaseModel]] | None = None
    patient: bool = False


PID = Param("pid", "path", "The patient's pseudonym (404 when it does not exist or belongs to another site).")
FILTER_PARAMS = tuple(Param(n, "query", d) for n, d in (
    ("q", "Part of the pseudonym."), ("protocol", "A protocol id."), ("site", "A site."),
    ("risk", "A risk group (read from each plan)."), ("element", "The element under way."),
    ("status", "in treatment, not started, completed, hsct, relapse, death, off_protocol or cannot plan.")))

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/api/session", session, "The signed-in user and the CSRF token", ok=(200, SessionOut)),
    Operation("GET", "/api/patients", patients, "The patients of the user's sites", FILTER_PARAMS,
              ok=(200, PatientList)),
    Operation("POST", "/api/patients", register, "Register a patient from the JSON of a patient file",
              (Param("site", "query", "The site (one of the user's; optional for a user of one site)."),),
              body=Patient, ok=(201, Registered)),
    Operation("GET", "/api/patients/{pid}", patient, "A patient: header, decisions, coming items with doses",
              (PID, Param("days", "query", "Days of plan, 1 to 366 (default 14).", {"type": "integer", "minimum": 1,
                                                                                        "maximum": 366})),
              ok=(200, PatientDetail), patient=True),
    Operation("GET", "/api/patients/{pid}/history", history, "A patient's audit trail",
              (PID, Param("as_of", "query", "The record as it was known at this time (ISO 8601, UTC).")),
              ok=(200, History), patient=True),
    Operation("POST", "/api/patients/{pid}/entries", record, "Record an entry", (PID,), body=RecordBody,
              ok=(201, Recorded), patient=True),
    Operation("POST", "/api/patients/{pid}/retract", retract, "Retract an entry recorded in error", (PID,),
              body=RetractBody, ok=(201, Recorded), patient=True),
    Operation("POST", "/api/entries/{seq}/sign", sign, "Sign a dose-critical entry (password again)",
              (Param("seq", "path", "The entry's seq (404 when it is another site's).", {"type": "integer"}),),
              body=SignBody, ok=(200, Signed), patient=True),
    Operation("GET", "/api/worklist", worklist, "The worklist across the user's patients",
              (Param("days", "query", "Days ahead, 1 to 366 (default 7).", {"type": "integer", "minimum": 1,
                                                                            "maximum": 366}),
               Param("page", "query", "The page of rows, from 1 (default 1).", {"type": "integer", "minimum": 1}),
               Param("per_page", "query", "Rows a page, 1 to 5000 (default 250).",
                     {"type": "integer", "minimum": 1, "maximum": 5000})),
              ok=(200, WorklistOut)),
    Operation("GET", "/api/openapi.json", openapi_json, "This document"),
)

_STATUS = {400: "Not accepted: the library's message and the field it names; nothing stored",
           401: "No live session", 403: "The role may not do this, or the CSRF token is missing or wrong",
           404: "No such patient for this user (it does not exist or belongs to another site)",
           413: "The body is larger than 4 MB", 415: "The body is not application/json",
           500: "Internal error (no traceback)"}


@functools.lru_cache(maxsize=4)
def openapi(session_cookie: str = "protocol-session") -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`OPERATIONS`, the schemas from the pydantic models
    (the patient file's :class:`~protocol._models.Patient` for registration); made once per
    session cookie name (do not change the mapping returned).

    >>> openapi()["openapi"], "/api/worklist" in openapi()["paths"]
    ('3.1.0', True)
    """
    from pydantic.json_schema import models_json_schema

    wanted: list[tuple[type[BaseModel], Any]] = [(ApiError, "serialization")]
    wanted += list(dict.fromkeys((op.body, "validation") for op in OPERATIONS if op.body))
    wanted += [(op.ok[1], "serialization") for op in OPERATIONS if op.ok]
    refs, top = models_json_schema(wanted, ref_template="#/components/schemas/{model}")
    ref = {model: refs[(model, mode)] for model, mode in wanted}
    failure = {"application/json": {"schema": ref[ApiError]}}
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {}
        if op.ok:
            responses[str(op.ok[0])] = {"description": op.ok[1].__doc__.split("\n")[0] if op.ok[1].__doc__ else "OK",
                                        "content": {"application/json": {"schema": ref[op.ok[1]]}}}
        else:
            responses["200"] = {"description": "The OpenAPI document", "content": {"application/json": {
                "schema": {"type": "object"}}}}
        codes = [401, 403, 500]
        if op.params or op.method == "POST":
            codes.append(400)
        if op.patient:
            codes.append(404)
        if op.method == "POST":
            codes += [413, 415]
        for code in sorted(codes):
            responses[str(code)] = {"description": _STATUS[code], "content": failure}
        entry: dict[str, Any] = {
            "operationId": op.handler.__name__, "summary": op.summary,
            "description": (op.handler.__doc__ or "").split(">>>")[0].strip(),
            "parameters": [{"name": p.name, "in": p.where, "required": p.where == "path", "description": p.description,
                            "schema": p.schema} for p in op.params],
            "responses": responses,
            "security": [{"session": [], "csrf": []}] if op.method == "POST" else [{"session": []}]}
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[op.body]}}}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "protocol JSON API", "version": "1",
                 "description": (__doc__ or "").split(">>>")[0].strip()},
        "paths": paths,
        "components": {"schemas": top.get("$defs", {}), "securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": session_cookie,
                        "description": "The session cookie set by POST /signin."},
            "csrf": {"type": "apiKey", "in": "header", "name": "x-csrftoken",
                     "description": "The value of the CSRF cookie (or csrf_token of GET /api/session)."}}},
    }


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, f"no API route {request.url.path}")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, f"{request.url.path} does not take {request.method}")


def application(web: Any) -> Starlette:
    """The API as an application of its own, mounted at ``/api`` by :func:`protocol.web.create_app`
    (its own JSON 404 and 405; the pages never call it).

    >>> Mount("/api", app=application(web))  # doctest: +SKIP
    """
    routes = [Route(op.path.removeprefix("/api"), op.handler, methods=[op.method]) for op in OPERATIONS]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.web = web
    return app
