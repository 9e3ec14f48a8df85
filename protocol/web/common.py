"""What every route shares: the server's settings (:class:`Web`), the signed-in user, the
``page`` guard, rendering, the 404/403 pages, the registry in a worker thread, the security
headers. The application itself is assembled in :mod:`protocol.web.app`.

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

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .._access import Actor, Forbidden, NotFound, Scoped
from .._auth import Throttle, resolve_session
from .._errors import InputError

__all__ = ["SecurityHeaders", "Web", "actor_of", "field_errors", "forbidden", "in_registry", "not_found", "page",
           "web_of"]

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
