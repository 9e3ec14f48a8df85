"""Recording from the item itself: the forms of an item, an element, or the patient's results,
and the sign-off of dose-critical entries. Each form builds the same entry the command line's
``protocol record`` builds and calls the same :meth:`Registry.record` (through the access
layer); the library's checks are the only checks."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .._errors import InputError, Problem
from .common import field_errors, in_registry, page, web_of
from .patients import typed

#: action → (entry kind, event type or None, the form fields it takes). The same mapping as
#: the ``protocol record`` subcommands (protocol/_cli/registry.py).
ACTIONS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "given": ("event", "item_given", ("item", "date", "dose", "note")),
    "omitted": ("event", "item_omitted", ("item", "date", "reason", "note")),
    "delayed": ("event", "item_delayed", ("item", "date", "to", "scope", "reason", "note")),
    "dose-modified": ("event", "dose_modified", ("item", "date", "percent", "of", "scope", "reason", "note")),
    "started": ("event", "element_started", ("element", "date", "bag_hours", "note")),
    "completed": ("event", "element_completed", ("element", "date", "note")),
    "hold": ("event", "element_held", ("element", "date", "reason", "note")),
    "resume": ("event", "element_resumed", ("element", "date", "note")),
    "interrupted": ("event", "infusion_interrupted", ("element", "date", "reason", "note")),
    "infusion-resumed": ("event", "infusion_resumed", ("element", "date", "bag_hours", "note")),
    "randomised": ("event", "randomised", ("randomisation", "arm", "date", "note")),
    "hsct": ("event", "hsct", ("date", "reason", "note")),
    "relapse": ("event", "relapse", ("date", "reason", "note")),
    "death": ("event", "death", ("date", "reason", "note")),
    "off-protocol": ("event", "off_protocol", ("date", "reason", "note")),
    "measurement": ("measurement", None, ("date", "height_cm", "weight_kg")),
    "mrd": ("mrd", None, ("timepoint", "date", "value")),
    "counts": ("count", None, ("date", "anc", "platelets")),
}


#: entry kind or event type → the action whose form records it (to correct an entry).
_ACTION_OF = {(kind if event is None else event): action for action, (kind, event, _) in ACTIONS.items()}


def correction_of(entry: Any) -> dict[str, Any]:
    """What the form needs to correct ``entry``: its action, item or element, and its values."""
    data = entry.data if isinstance(entry.data, dict) else {}
    action = _ACTION_OF.get(data.get("type") if entry.kind == "event" else entry.kind)
    if action is None or not entry.live or entry.kind == "base":
        raise InputError(Problem("record", "supersedes", f"#{entry.seq} cannot be corrected from a form"
                                 + ("" if entry.live else " (it was already corrected)")))
    values = {k: ("" if v is None else str(v)) for k, v in data.items() if k != "type"}
    return {"seq": entry.seq, "action": action, "what": entry.what, "values": values,
            "item": data.get("item"), "element": data.get("element")}


def build_entry(action: str, form: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """``(kind, data)`` for ``Registry.record`` from a submitted form: the fields the action
    takes, typed as in a patient file, empty ones left out (the library says what is missing)."""
    if action not in ACTIONS:
        raise InputError(Problem("record", "action", f"expected one of {', '.join(ACTIONS)}, got {action!r}"))
    kind, event_type, fields = ACTIONS[action]
    data: dict[str, Any] = {} if event_type is None else {"type": event_type}
    for name in fields:
        value = typed(name, form.get(name, ""))
        if value is not None:
            data[name] = value
    if "date" not in data:
        raise InputError(Problem("record", "date", "expected the date it happened (YYYY-MM-DD)"))
    return kind, data


def _context(scoped: Any, pid: str, item: str | None, element: str | None) -> dict[str, Any]:
    from .patients import patient_view

    view = patient_view(scoped, pid, 14)
    plan = view["plan"]
    found = None
    if item:
        found = next((i for i in plan.items if i.ref == item), None)
        if found is None:
            raise InputError(Problem("record", "item", f"no item {item!r} in {pid}'s plan"))
    if element and element not in {e.id for e in plan.elements}:
        raise InputError(Problem("record", "element", f"no element {element!r} in {pid}'s plan"))
    return {**view, "item": found, "element": element}


def _beside(exc: InputError, action: str, form: dict[str, str]) -> dict[str, list[str]]:
    """Problems by field; one about the whole entry that names a field left empty (``needs a
    reason``) is shown beside that field."""
    import re

    errors = field_errors(exc)
    fields = ACTIONS.get(action, ("", None, ()))[2]
    for message in list(errors.get("", [])):
        empty = [f for f in fields if not form.get(f, "").strip() and re.search(rf"\b{f}\b", message)]
        if empty:
            errors[""].remove(message)
            errors.setdefault(empty[0], []).append(message)
    if not errors.get(""):
        errors.pop("", None)
    return errors


@page("read")
async def record_form(request: Request) -> Response:
    """``GET /patients/{pid}/record``: with ``item=REF`` the item's forms (given, omitted,
    delayed with its scope explained, dose modified); with ``element=ID`` the element's
    (started, completed, hold, resume, infusion interrupted/resumed); else the results
    (measurement, counts, MRD, randomisation, HSCT, relapse, death, off protocol)."""
    pid = request.path_params["pid"]
    item = request.query_params.get("item") or None
    element = request.query_params.get("element") or None
    correct = request.query_params.get("correct", "")
    correcting = None
    if correct.isdigit():
        def find(scoped: Any) -> Any:
            entry = next((e for e in scoped.history(pid) if e.seq == int(correct)), None)
            if entry is None:
                from .._access import NotFound

                raise NotFound(Problem(pid, "", f"no entry #{correct}"))
            return correction_of(entry)

        correcting = await in_registry(request, find)
        item, element = correcting["item"], correcting["element"] if not correcting["item"] else None
    ctx = await in_registry(request, lambda scoped: _context(scoped, pid, item, element))
    if correcting is not None:
        return web_of(request).render(request, "record.html.j2", title=f"Correct #{correct} of {pid}",
                                      form=correcting["values"], action=correcting["action"], correcting=correcting, **ctx)
    # An item's forms start from its planned date when that is past (recorded late); else today.
    today = ctx["today"]
    form = {"date": (min(ctx["item"].date, today) if ctx["item"] is not None else today).isoformat()}
    if ctx["item"] is not None and ctx["item"].dose is not None and ctx["item"].dose.amount is not None:
        from .._schedule import fmt_amount

        form["dose"] = fmt_amount(ctx["item"].dose.amount)  # prefilled with the planned dose as shown
    return web_of(request).render(request, "record.html.j2", title=f"Record for {pid}", form=form, action=None,
                                  correcting=None, **ctx)


@page("record")
async def record(request: Request) -> Response:
    """``POST /patients/{pid}/record``: record one entry; on a refusal the form again, with the
    library's message beside the field and nothing stored."""
    pid = request.path_params["pid"]
    raw = await request.form()
    form = {k: str(v) for k, v in raw.items() if isinstance(v, str)}
    action = form.get("action", "")

    supersedes = int(form["supersedes"]) if form.get("supersedes", "").isdigit() else None
    why = form.get("why", "").strip() or None

    def write(scoped: Any) -> Any:
        kind, data = build_entry(action, form)
        if supersedes is not None and not why:
            raise InputError(Problem("record", "why", "a correction needs a reason (why the entry was wrong)"))
        return scoped.record(pid, kind, data, reason=why, supersedes=supersedes)

    try:
        entry = await in_registry(request, write)
    except InputError as exc:
        from .._access import NotFound

        if isinstance(exc, NotFound):
            raise
        item = form.get("item") if action in ("given", "omitted", "delayed", "dose-modified") else None
        element = form.get("element") if ACTIONS.get(action, ("", "", ()))[2][:1] == ("element",) else None
        ctx = await in_registry(request, lambda scoped: _context(scoped, pid, item or None, element or None))
        errors = _beside(exc, action, form)
        # A problem about a field the form does not show (the item itself, another entry of
        # the log) is about the whole entry: the page shows it in the summary, never drops it.
        shown = (*ACTIONS.get(action, ("", None, ()))[2], "why")  # why: a correction's reason
        for name in [k for k in errors if k and k not in shown]:
            errors.setdefault("", []).extend(errors.pop(name))
        correcting = None
        if supersedes is not None:
            correcting = {"seq": supersedes, "action": action, "what": f"entry #{supersedes}"}
            for message in [m for m in errors.get("reason", []) if "correction" in m]:
                errors["reason"].remove(message)
                errors.setdefault("why", []).append(message)
            if not errors.get("reason"):
                errors.pop("reason", None)
        return web_of(request).render(request, "record.html.j2", status=400, title=f"Record for {pid}",
                                      form=form, action=action, errors=errors, correcting=correcting, **ctx)
    return RedirectResponse(f"/patients/{pid}?recorded={entry.seq}", status_code=303)


@page("record")
async def retract(request: Request) -> Response:
    """``POST /patients/{pid}/retract``: withdraw an entry recorded in error, with a reason."""
    pid = request.path_params["pid"]
    form = await request.form()
    try:
        seq = int(str(form.get("seq", "")))
    except ValueError:
        seq = -1
    reason = str(form.get("reason", "")).strip() or None
    try:
        entry = await in_registry(request, lambda scoped: scoped.retract(pid, seq, reason=reason))
    except InputError as exc:
        from .._access import NotFound

        if isinstance(exc, NotFound):
            raise
        from .patients import _local

        def load(scoped: Any) -> Any:
            return scoped.history(pid), scoped.signoffs(pid)

        entries, signoffs = await in_registry(request, load)
        rows = [{"e": e, "local": _local(e.recorded_at), "signoff": signoffs.get(e.seq)} for e in entries]
        return web_of(request).render(request, "history.html.j2", status=400, title=f"History of {pid}", pid=pid,
                                      rows=rows, form={"as_of": ""}, errors={f"retract-{seq}": [
                                          p.message for p in exc.problems]})
    return RedirectResponse(f"/patients/{pid}/history?retracted={entry.seq}", status_code=303)


@page("sign")
async def sign(request: Request) -> Response:
    """``POST /entries/{seq}/sign``: a pharmacist or investigator (never the recorder) signs a
    dose-critical entry after entering the password again."""
    try:
        seq = int(request.path_params["seq"])
    except ValueError:
        from .common import not_found

        return not_found(request)
    form = await request.form()
    password = str(form.get("password", ""))[:1024]

    def do(scoped: Any) -> Any:
        pid = scoped.entry_patient(seq)
        try:
            scoped.sign(seq, password)
        except InputError as exc:
            from .patients import patient_view

            return pid, exc, patient_view(scoped, pid, 14)
        return pid, None, None

    pid, exc, view = await in_registry(request, do)
    if exc is not None:
        return web_of(request).render(request, "patient.html.j2", status=400, title=f"Patient {pid}",
                                      errors={f"sign-{seq}": [p.message for p in exc.problems]}, new_feed=None,
                                      **view)
    return RedirectResponse(f"/patients/{pid}?signed={seq}", status_code=303)


routes = [
    Route("/patients/{pid}/record", record_form, methods=["GET"]),
    Route("/patients/{pid}/record", record, methods=["POST"]),
    Route("/patients/{pid}/retract", retract, methods=["POST"]),
    Route("/entries/{seq}/sign", sign, methods=["POST"]),
]
