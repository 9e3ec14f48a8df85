"""Amendments on the web: a pharmacist or investigator previews an amended definition (or a
site amendment) for the patients of their sites, then applies it with their signature.

The preview and the move are the library's (:func:`protocol._amend.preview` and
:func:`protocol._amend.apply`, through :class:`protocol._access.Scoped`); this module only
reads the form and shows the result.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._errors import InputError
from .common import field_errors, in_registry, page, web_of

#: The largest definition or site amendment accepted in the form (the shipped definitions are
#: under 200 KB).
MAX_TEXT = 2 * 1024 * 1024


def _form_text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _too_long(form: dict[str, str]) -> dict[str, list[str]]:
    return {name: [f"expected at most {MAX_TEXT // (1024 * 1024)} MB of text, got {len(form[name]):,} characters"]
            for name in ("definition", "site") if len(form.get(name, "")) > MAX_TEXT}


@page("amend")
async def amend_form(request: Request) -> Response:
    """``GET /amendments``: the form to preview an amended definition (pasted YAML or JSON),
    optionally with a site amendment, for the patients of the user's sites.

    Example: a pharmacist opens /amendments, pastes the amended definition, presses Preview.
    """
    return web_of(request).render(request, "amend.html.j2", title="Amendments", form={}, errors={}, result=None)


@page("amend")
async def amend_preview(request: Request) -> Response:
    """``POST /amendments/preview``: whose schedule changes, and how (nothing is written).
    The definition and the site amendment come as pasted text or as uploaded files
    (``definition_file``, ``site_file``; multipart).

    Example: POST definition=<the amended YAML>, site=<optional site amendment YAML>.
    """
    from starlette.datastructures import UploadFile

    from .guards import MAX_BODY

    errors: dict[str, list[str]] = {}
    async with request.form(max_files=2, max_fields=10, max_part_size=MAX_BODY) as raw:
        form = {k: _form_text(raw, k) for k in ("definition", "site")}
        # A chosen file takes the place of the pasted text (the form works both ways, without script).
        for name in ("definition", "site"):
            upload = raw.get(f"{name}_file")
            if isinstance(upload, UploadFile) and upload.filename:
                try:
                    form[name] = (await upload.read()).decode("utf-8").removeprefix("\ufeff")
                except UnicodeDecodeError as exc:
                    errors[name] = [f"{upload.filename}: expected UTF-8 text, got undecodable bytes at offset "
                                    f"{exc.start}"]
    web = web_of(request)
    errors = errors or _too_long(form)
    if errors:
        return web.render(request, "amend.html.j2", status=400, title="Amendments", form=form, errors=errors,
                          result=None)
    try:
        result = await in_registry(request, lambda s: s.amend_preview(form["definition"], form["site"] or None))
    except InputError as exc:
        return web.render(request, "amend.html.j2", status=400, title="Amendments", form=form,
                          errors=field_errors(exc), result=None)
    return web.render(request, "amend.html.j2", title="Amendment preview", form=form, errors={}, result=result,
                      grouped=_grouped(result))


@page("amend")
async def amend_apply(request: Request) -> Response:
    """``POST /amendments/apply``: move the previewed patients to the amended version, signed
    (the password again; the meaning "amendment approved" is recorded with each move).

    Example: POST definition, site, sha256 (from the preview), reason, password.
    """
    raw = await request.form()
    form = {k: _form_text(raw, k) for k in ("definition", "site", "sha256", "reason")}
    password = _form_text(raw, "password")
    web = web_of(request)
    errors = _too_long(form)
    if errors:
        return web.render(request, "amend.html.j2", status=400, title="Amendments", form=form, errors=errors,
                          result=None)

    def run(scoped: Any) -> Any:
        return scoped.amend_apply(form["definition"], form["sha256"], reason=form["reason"], password=password,
                                  site_text=form["site"] or None)

    try:
        done = await in_registry(request, run)
    except InputError as exc:
        errors = field_errors(exc)
        try:  # show the preview again beside the refusal, so the signer sees what they sign
            result = await in_registry(request, lambda s: s.amend_preview(form["definition"], form["site"] or None))
        except InputError:
            result = None
        return web.render(request, "amend.html.j2", status=400, title="Amendment preview", form=form,
                          errors=errors, result=result, grouped=_grouped(result) if result else {})
    return web.render(request, "amend.html.j2", title="Amendment applied", form={}, errors={}, result=None,
                      done=done)


def _grouped(result: Any) -> dict[str, list[str]]:
    """Each patient's changes in the readable lines of the text preview."""
    from .._amend import _grouped as lines

    return {p.patient: lines(p.changes) for p in result.patients}


routes = [
    Route("/amendments", amend_form, methods=["GET"]),
    Route("/amendments/preview", amend_preview, methods=["POST"]),
    Route("/amendments/apply", amend_apply, methods=["POST"]),
]
