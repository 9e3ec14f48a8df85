"""Sign-in, sign-out and the user's own sessions."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .._auth import (ABSOLUTE_TIMEOUT, SignInRefused, authenticate, end_session, new_session, sessions_of)
from .common import actor_of, page, web_of


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _next(value: str | None) -> str:
    # Only a local path: never an open redirect to another site.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/patients"


async def home(request: Request) -> Response:
    """``/``: the patients (or the admin page, or the sign-in page)."""
    actor = await actor_of(request)
    if actor is None:
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse("/admin" if actor.role == "admin" else "/patients", status_code=303)


async def signin_form(request: Request) -> Response:
    """``GET /signin``: the sign-in form."""
    return web_of(request).render(request, "signin.html.j2", title="Sign in",
                                  form={"next": _next(request.query_params.get("next"))})


async def signin(request: Request) -> Response:
    """``POST /signin``: check the name and password (throttled, audited), start a session."""
    web = web_of(request)
    form = await request.form()
    name = str(form.get("name", "")).strip()[:64]
    password = str(form.get("password", ""))[:1024]
    target = _next(str(form.get("next", "")))
    address = _address(request)

    def check() -> Any:
        with web.registry() as reg:
            user = authenticate(reg, name, password, address, web.throttle)
            return user, new_session(reg, user.name, address, request.headers.get("user-agent"))

    try:
        user, token = await run_in_threadpool(check)
    except SignInRefused as exc:
        status = 429 if exc.retry_after else 401
        return web.render(request, "signin.html.j2", status=status, title="Sign in",
                          form={"name": name, "next": target}, errors={"": [exc.message]})
    if user.role == "admin" and target == "/patients":
        target = "/admin"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(web.session_cookie, token, max_age=int(ABSOLUTE_TIMEOUT.total_seconds()), path="/",
                        secure=web.secure, httponly=True, samesite="lax")
    return response


@page(None)
async def signout(request: Request) -> Response:
    """``POST /signout``: end this session."""
    web = web_of(request)
    token = request.cookies.get(web.session_cookie)

    def end() -> None:
        with web.registry() as reg:
            end_session(reg, token)

    await run_in_threadpool(end)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(web.session_cookie, path="/", secure=web.secure, httponly=True, samesite="lax")
    return response


@page(None)
async def sessions(request: Request) -> Response:
    """``GET /sessions``: the user's live sessions, each of which can be ended."""
    web = web_of(request)
    actor = request.state.actor

    def load() -> Any:
        with web.registry() as reg:
            return sessions_of(reg, actor.name)

    rows = await run_in_threadpool(load)
    import hashlib

    current = hashlib.sha256((request.cookies.get(web.session_cookie) or "").encode()).hexdigest()
    return web.render(request, "sessions.html.j2", title="Your sessions", sessions=rows, current=current)


@page(None)
async def end_one(request: Request) -> Response:
    """``POST /sessions/end``: end one of the user's own sessions."""
    web = web_of(request)
    actor = request.state.actor
    form = await request.form()
    key = str(form.get("key", ""))

    def end() -> None:
        with web.registry() as reg:
            end_session(reg, key=key, user=actor.name)

    await run_in_threadpool(end)
    return RedirectResponse("/sessions", status_code=303)


routes = [
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route("/sessions", sessions, methods=["GET"]),
    Route("/sessions/end", end_one, methods=["POST"]),
]
