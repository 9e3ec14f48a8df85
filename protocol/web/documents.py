"""Documents of a patient (roadmap HTML and PDF, plan CSV, FHIR JSON) and calendar feeds."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .common import in_registry, not_found, page, web_of

#: The roadmap is a document with its own inline styles, and no script: its own policy.
ROADMAP_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")


def _attachment(name: str) -> str:
    return f'attachment; filename="{name}"'


async def _download(request: Request, make: Any, media_type: str, suffix: str) -> Response:
    """A patient document as an attachment named ``{pid}{suffix}``, made through the
    signed-in user's site-scoped access (another site's patient is a 404 there)."""
    pid = request.path_params["pid"]
    body = await in_registry(request, lambda s: make(s, pid))
    return Response(body, media_type=media_type, headers={"content-disposition": _attachment(f"{pid}{suffix}")})


@page("read")
async def roadmap(request: Request) -> Response:
    """``GET /patients/{pid}/roadmap``: the printable roadmap (HTML), as ``protocol roadmap``, with
    each dose-critical entry's sign-off (awaiting verification, or verified by whom and when)."""
    from .._documents import render_roadmap

    pid = request.path_params["pid"]
    html = await in_registry(request, lambda s: render_roadmap(s.plan(pid), "html", signoffs=s.signoff_marks(pid)))
    return Response(html, media_type="text/html; charset=utf-8",
                    headers={"content-security-policy": ROADMAP_CSP})


@page("read")
async def roadmap_pdf(request: Request) -> Response:
    """``GET /patients/{pid}/roadmap.pdf``: the roadmap as PDF (WeasyPrint)."""
    from .._documents import render_pdf

    return await _download(request, lambda s, pid: render_pdf(s.plan(pid), signoffs=s.signoff_marks(pid)),
                           "application/pdf", "-roadmap.pdf")


@page("read")
async def plan_csv(request: Request) -> Response:
    """``GET /patients/{pid}/plan.csv``: one row per item, as ``protocol plan --format csv``."""
    return await _download(request, lambda s, pid: s.plan(pid).to_csv(), "text/csv; charset=utf-8", "-plan.csv")


@page("read")
async def fhir(request: Request) -> Response:
    """``GET /patients/{pid}/fhir.json``: the FHIR R5 CarePlan bundle, as ``protocol fhir``."""
    from .._fhir import care_plan_json

    return await _download(request, lambda s, pid: care_plan_json(s.plan(pid)), "application/fhir+json",
                           "-careplan.json")


@page("read")
async def calendar(request: Request) -> Response:
    """``GET /patients/{pid}/calendar.ics``: the calendar file, as ``protocol calendar``."""
    return await _download(request, lambda s, pid: s.calendar(pid), "text/calendar; charset=utf-8", ".ics")


@page("feed")
async def new_feed(request: Request) -> Response:
    """``POST /patients/{pid}/feeds``: a new subscription URL (shown once; stored hashed)."""
    pid = request.path_params["pid"]
    token = await in_registry(request, lambda s: s.new_feed(pid))
    return RedirectResponse(f"/patients/{pid}?feed={token}#feeds", status_code=303)


@page("feed")
async def revoke_feed(request: Request) -> Response:
    """``POST /patients/{pid}/feeds/revoke``: revoke a feed; its URL answers 404 from now on."""
    pid = request.path_params["pid"]
    form = await request.form()
    key = str(form.get("key", ""))
    await in_registry(request, lambda s: s.revoke_feed(pid, key))
    return RedirectResponse(f"/patients/{pid}#feeds", status_code=303)


async def feed(request: Request) -> Response:
    """``GET /feeds/{token}.ics``: a patient's calendar for a calendar application that
    subscribes; no session (the random token is the credential), read-only, revocable."""
    from .._access import feed_patient
    from .._calendar import calendar_for

    web = web_of(request)
    token = request.path_params["token"]

    def load() -> Any:
        with web.registry() as reg:
            pid = feed_patient(reg, token)
            return None if pid is None else calendar_for(reg, pid)

    data = await run_in_threadpool(load)
    if data is None:
        return not_found(request)
    return Response(data, media_type="text/calendar; charset=utf-8")


routes = [
    Route("/patients/{pid}/roadmap", roadmap, methods=["GET"]),
    Route("/patients/{pid}/roadmap.pdf", roadmap_pdf, methods=["GET"]),
    Route("/patients/{pid}/plan.csv", plan_csv, methods=["GET"]),
    Route("/patients/{pid}/fhir.json", fhir, methods=["GET"]),
    Route("/patients/{pid}/calendar.ics", calendar, methods=["GET"]),
    Route("/patients/{pid}/feeds", new_feed, methods=["POST"]),
    Route("/patients/{pid}/feeds/revoke", revoke_feed, methods=["POST"]),
    Route("/feeds/{token}.ics", feed, methods=["GET"]),
]
