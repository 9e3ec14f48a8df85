"""The application: routes, the session and security-header middleware, CSRF, rendering.

No clinical logic lives in the web layer: every page reads through
:class:`protocol._access.Scoped` (which filters by the user's sites) and every form calls
the same registry functions as the command line. Pages are rendered with the project's one
Jinja environment (``protocol._documents._env``, autoescaped) from ``templates/web/``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._access import Actor, Forbidden, NotFound, Scoped
from .._auth import Throttle, resolve_session
from .._errors import InputError

__all__ = ["Web", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
#: Pages: no script at all, styles from the package only, never framed.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
       "object-src 'none'; frame-ancestors 'none'")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Web:
    """What every route needs: the registry path, the cookie names, the throttle, rendering."""

    def __init__(self, db: str | Path, host: str = "127.0.0.1") -> None:
        self.db = db if isinstance(db, str) and "://" in db else Path(db)  # a URL stays text
        self.secure = not _loopback(host)
        # `__Host-` cookies must be Secure; on loopback (development, tests) plain names.
        prefix = "__Host-" if self.secure else ""
        self.session_cookie = f"{prefix}protocol-session"
        self.csrf_cookie = f"{prefix}protocol-csrf"
        self.throttle = Throttle()

    @contextmanager
    def registry(self) -> Any:
        """An open registry for one request (SQLite connections are not shared across threads)."""
        from .._registry import open_registry

        reg = open_registry(self.db)
        try:
            yield reg
        finally:
            reg.close()

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page from ``templates/web/`` with the user, the CSRF token and the context."""
        from .._documents import _env

        token = request.scope.get("csrftoken")
        context.setdefault("errors", {})
        context.setdefault("form", {})
        context.setdefault("notice", None)
        context.setdefault("title", "")
        html = _env(None).get_template(f"web/{template}").render(
            request=request, actor=getattr(request.state, "actor", None), csrf=token() if token else "",
            path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)


def web_of(request: Request) -> Web:
    """The :class:`Web` of the application serving ``request``."""
    return request.app.state.web


async def actor_of(request: Request) -> Actor | None:
    """The signed-in user of the request (None without a live session)."""
    web = web_of(request)
    token = request.cookies.get(web.session_cookie)
    if not token:
        return None

    def resolve() -> Any:
        with web.registry() as reg:
            return resolve_session(reg, token)

    found = await run_in_threadpool(resolve)
    return None if found is None else Actor.of(found[0])


Handler = Callable[[Request], Awaitable[Response]]


def page(action: str | None = "read") -> Callable[[Handler], Handler]:
    """A route that needs a signed-in user allowed to do ``action`` (None: any signed-in user).

    Without a session: a redirect to the sign-in page (GET) or 401 (POST). A role that may not
    do it: 403. A patient the user may not see: 404, exactly as one that does not exist.
    """
    from .._access import allowed

    def wrap(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            actor = await actor_of(request)
            web = web_of(request)
            if actor is None:
                if request.method == "GET":
                    return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)
                return web.render(request, "error.html.j2", status=401, title="Sign in first",
                                  message="Your session has ended: sign in again.")
            request.state.actor = actor
            if action is not None and not allowed(actor, action):
                return forbidden(request)
            try:
                return await handler(request)
            except NotFound:
                return not_found(request)
            except Forbidden:
                return forbidden(request)
            except InputError as exc:  # a refusal no form claimed: shown, never a 500
                return web.render(request, "error.html.j2", status=400, title="Not accepted",
                                  message="; ".join(p.message for p in exc.problems))

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


def not_found(request: Request) -> Response:
    """The 404 page (also for another site's patient)."""
    return web_of(request).render(request, "error.html.j2", status=404, title="Not found",
                                  message="There is no such page or patient.")


def forbidden(request: Request) -> Response:
    """The 403 page."""
    return web_of(request).render(request, "error.html.j2", status=403, title="Not allowed",
                                  message="Your role does not allow this.")


async def in_registry(request: Request, work: Callable[[Scoped], Any]) -> Any:
    """Run ``work(scoped)`` in a worker thread with the request's registry and user."""
    web = web_of(request)
    actor = request.state.actor

    def run() -> Any:
        with web.registry() as reg:
            return work(Scoped(reg, actor))

    return await run_in_threadpool(run)


def field_errors(exc: InputError, rename: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Problems by form field (``""`` for those that name none), as the library words them."""
    out: dict[str, list[str]] = {}
    for p in exc.problems:
        field = (p.field or "").split(".")[0].split("[")[0]
        field = (rename or {}).get(field, field)
        out.setdefault(field, []).append(p.message)
    return out


class SecurityHeaders:
    """Adds the security headers to every response (a route may set its own CSP)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                extra = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                         (b"cross-origin-opener-policy", b"same-origin"), (b"cache-control", b"no-store"),
                         (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]
                if https:
                    extra.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(db: str | Path, host: str = "127.0.0.1", csrf_secret: str | None = None,
               secret_file: str | Path | None = None) -> Any:
    """The ASGI application serving the registry ``db`` (what ``protocol serve`` runs).

    ``host``: where it listens; on loopback cookies are not marked Secure (development).
    ``secret_file``: the file of the key that signs CSRF tokens (default beside the registry,
    see :mod:`protocol._websecret`; made ``0600`` on first use, refused if others may read it);
    ``csrf_secret`` gives the key itself instead.

    >>> app = create_app("protocol.db")    # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from asgi_csrf import asgi_csrf

    from .._registry import open_registry
    from . import admin, amend, api, auth, documents, patients, recording, worklist
    from .guards import BodyRules, NoBearer, RestoreHeaders

    with open_registry(db):  # refuse a missing or foreign file now, not at the first request
        pass
    if csrf_secret is None:  # one key per registry, kept in a file: restarts and other servers agree
        from .._websecret import load_secret, secret_path

        csrf_secret = load_secret(secret_path(db, secret_file))
    web = Web(db, host)
    routes = [
        Route("/", auth.home),
        *auth.routes, *patients.routes, *recording.routes, *documents.routes, *worklist.routes, *admin.routes,
        *amend.routes, Mount("/api", app=api.application(web)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _404, 405: _405, 500: _500})
    app.state.web = web
    protected = asgi_csrf(RestoreHeaders(app), cookie_name=web.csrf_cookie, signing_secret=csrf_secret,
                          always_protect={"/signin"}, always_set_cookie=True, cookie_secure=web.secure,
                          send_csrf_failed=_csrf_failed)
    return SecurityHeaders(BodyRules(NoBearer(protected)))


async def _csrf_failed(scope: Any, send: Any, message_id: Any) -> None:
    if scope["path"].startswith("/api/"):
        from .api import error

        await error(403, "the CSRF token is missing or wrong: send the CSRF cookie's value as the x-csrftoken "
                    "header")(scope, None, send)
        return
    body = (b"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Form expired</title></head>"
            b"<body><main><h1>Form expired</h1><p>The form was not accepted (its security token is missing or "
            b"wrong). Go back, reload the page and submit it again.</p></main></body></html>")
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


async def _404(request: Request, exc: Exception) -> Response:
    return not_found(request)


async def _405(request: Request, exc: Exception) -> Response:
    return web_of(request).render(request, "error.html.j2", status=405, title="Not allowed",
                                  message="This address does not take that method.")


async def _500(request: Request, exc: Exception) -> Response:
    return HTMLResponse("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error</title></head>"
                        "<body><main><h1>Something went wrong</h1><p>Nothing was recorded by this request. "
                        "Please report it.</p></main></body></html>", status_code=500)
