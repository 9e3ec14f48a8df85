"""The worklist across the user's patients."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .common import in_registry, page, web_of

#: Rows per worklist page: a week of a thousand patients is thousands of rows.
PAGE = 250


@page("read")
async def worklist(request: Request) -> Response:
    """``GET /worklist``: due in the next ``days`` days (default 7), overdue, waiting for a
    result, out of window, and entries waiting for sign-off, by date, each linked to the form
    that clears it; ``page`` pages through the rows, 250 at a time."""
    try:
        days = max(1, min(int(request.query_params.get("days", "7")), 366))
    except ValueError:
        days = 7
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        number = 1

    def load(scoped: Any) -> Any:
        wl = scoped.worklist_page(days, number, PAGE)
        if wl.total and not wl.rows:  # past the last page: show the last one
            wl = scoped.worklist_page(days, -(-wl.total // PAGE), PAGE)
        return wl, scoped.unsigned()

    wl, unsigned = await in_registry(request, load)
    total = wl.total
    pages = max(1, -(-total // PAGE))
    number = min(number, pages)
    rows = [dict(zip(wl.fields, row, strict=True)) for row in wl.rows]
    return web_of(request).render(request, "worklist.html.j2", title="Worklist", wl=wl, rows=rows,
                                  unsigned=unsigned, days=days, counts=wl.counts(), page=number, pages=pages,
                                  first=(number - 1) * PAGE + 1 if rows else 0, last=(number - 1) * PAGE + len(rows),
                                  total=total)


routes = [Route("/worklist", worklist, methods=["GET"])]
