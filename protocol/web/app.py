"""The application: the routes of every module, the CSRF, body and security-header
middleware around them, and the error pages (:func:`create_app`, what ``protocol serve`` runs).

No clinical logic lives in the web layer: every page reads through
:class:`protocol._access.Scoped` (which filters by the user's sites) and every form calls
the same registry functions as the command line. Pages are rendered with the project's one
Jinja environment (``protocol._documents._env``, autoescaped) from ``templates/web/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import admin, amend, api, auth, documents, patients, recording, worklist
from .common import STATIC, SecurityHeaders, Web, not_found, web_of
from .guards import BodyRules, NoBearer, RestoreHeaders

__all__ = ["Web", "create_app"]


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
        await api.error(403, "the CSRF token is missing or wrong: send the CSRF cookie's value as the x-csrftoken "
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
