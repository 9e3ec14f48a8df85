"""Administration: users and sites (admins only; no patient data here)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .._auth import ROLES, add_site, add_user, disable_user, list_sites, list_users
from .._errors import InputError
from .common import field_errors, page, web_of


async def _page(request: Request, status: int = 200, **extra: Any) -> Response:
    web = web_of(request)

    def load() -> Any:
        with web.registry() as reg:
            return list_users(reg), list_sites(reg)

    users, sites = await run_in_threadpool(load)
    return web.render(request, "admin.html.j2", status=status, title="Administration", users=users, sites=sites,
                      roles=ROLES, **extra)


@page("admin")
async def admin(request: Request) -> Response:
    """``GET /admin``: users and sites."""
    return await _page(request)


async def _change(request: Request, change: Any, rename: dict[str, str]) -> Response:
    web = web_of(request)
    form = {k: v for k, v in (await request.form()).multi_items() if isinstance(v, str)}
    raw = await request.form()

    def run() -> None:
        with web.registry() as reg:
            change(reg, form, raw)

    try:
        await run_in_threadpool(run)
    except InputError as exc:
        return await _page(request, status=400, errors=field_errors(exc, rename), form=form)
    return RedirectResponse("/admin", status_code=303)


@page("admin")
async def users_add(request: Request) -> Response:
    """``POST /admin/users``: create a user (as ``protocol users add``)."""
    return await _change(request, lambda reg, f, raw: add_user(
        reg, f.get("name", "").strip(), f.get("role", ""), [s for s in raw.getlist("sites") if s],
        f.get("password", "")), {"NAME": "name", "--role": "role", "--site": "sites"})


@page("admin")
async def users_disable(request: Request) -> Response:
    """``POST /admin/users/disable``: disable a user; its sessions end now."""
    return await _change(request, lambda reg, f, raw: disable_user(reg, f.get("name", "")), {"NAME": "disable"})


@page("admin")
async def sites_add(request: Request) -> Response:
    """``POST /admin/sites``: add a site."""
    return await _change(request, lambda reg, f, raw: add_site(reg, f.get("site", "").strip()), {"SITE": "site"})


routes = [
    Route("/admin", admin, methods=["GET"]),
    Route("/admin/users", users_add, methods=["POST"]),
    Route("/admin/users/disable", users_disable, methods=["POST"]),
    Route("/admin/sites", sites_add, methods=["POST"]),
]
