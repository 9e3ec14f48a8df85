"""The worklist across the user's patients."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .app import in_registry, page, web_of


@page("read")
async def worklist(request: Request) -> Response:
    """``GET /worklist``: due in the next ``days`` days (default 7), overdue, waiting for a
    result, out of window, and entries waiting for sign-off, by date, each linked to the form
    that clears it."""
    try:
        days = max(1, min(int(request.query_params.get("days", "7")), 366))
    except ValueError:
        days = 7

    def load(scoped: Any) -> Any:
        wl = scoped.worklist(None, days)
        return wl, wl.records(), scoped.unsigned()

    wl, rows, unsigned = await in_registry(request, load)
    return web_of(request).render(request, "worklist.html.j2", title="Worklist", wl=wl, rows=rows,
                                  unsigned=unsigned, days=days, counts=wl.counts())


routes = [Route("/worklist", worklist, methods=["GET"])]
