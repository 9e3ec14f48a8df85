"""What a request body must be before the CSRF check and the routes see it.

:class:`BodyRules` sits in front of asgi-csrf (and :class:`RestoreHeaders` behind it):

- a state change the browser says came from another site (``Sec-Fetch-Site: cross-site``)
  is refused (403), a second wall behind the CSRF token;
- a body above :data:`MAX_BODY` (4 MB) is refused (413), by its ``Content-Length`` or, for a
  chunked body, as soon as it grows past the limit;
- each POST address takes one kind of body: the patient-file upload (:data:`UPLOADS`) takes
  ``multipart/form-data`` (and the pasted form), the JSON API (``/api/``) takes
  ``application/json``, every other form ``application/x-www-form-urlencoded``; anything else
  is refused (415);
- asgi-csrf does not read multipart bodies, so for an upload the form's ``csrftoken`` field is
  read here and handed to asgi-csrf as the ``x-csrftoken`` header: the upload form works
  without JavaScript and is checked exactly as every other form (the token must match the
  signed cookie).

>>> from protocol.web.guards import content_type
>>> content_type({"headers": [(b"content-type", b"multipart/form-data; boundary=x")]})
'multipart/form-data'
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_BODY", "UPLOADS", "BodyRules", "NoBearer", "RestoreHeaders", "content_type", "multipart_token"]

#: The largest request body accepted (a patient file of two years of daily entries is ~2 MB).
MAX_BODY = 4 * 1024 * 1024
#: The addresses that take a file upload (``multipart/form-data``).
UPLOADS = frozenset({"/patients/import", "/amendments/preview"})
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"
#: Where :class:`BodyRules` keeps an upload's own headers for :class:`RestoreHeaders`.
SCOPE_KEY = "protocol.upload_headers"


def content_type(scope: Any) -> str:
    """The request's media type, lower case, without its parameters (``""`` when absent)."""
    for key, value in scope.get("headers") or ():
        if key == b"content-type":
            return value.split(b";")[0].strip().lower().decode("latin-1")
    return ""


def _accepted(path: str) -> tuple[str, ...]:
    if path in UPLOADS:
        return (MULTIPART, FORM)
    if path.startswith("/api/"):
        return (JSON,)
    return (FORM,)


async def _plain(send: Any, status: int, text: str, path: str = "") -> None:
    if path.startswith("/api/"):  # the JSON API's refusals are JSON too
        import json

        kind, body = b"application/json", json.dumps({"error": text, "field": None, "problems": []}).encode("utf-8")
    else:
        kind, body = b"text/plain; charset=utf-8", text.encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


async def _read_body(receive: Any) -> tuple[bytes, list[Any]]:
    """The whole body (at most :data:`MAX_BODY`) and the messages that carried it."""
    chunks: list[bytes] = []
    messages: list[Any] = []
    size = 0
    more = True
    while more:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body = message.get("body", b"")
        size += len(body)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(body)
        more = message.get("more_body", False)
    return b"".join(chunks), messages


def _replay(messages: list[Any], receive: Any) -> Any:
    async def replay() -> Any:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


def multipart_token(body: bytes, boundary: bytes) -> str | None:
    """The value of the ``csrftoken`` field of a multipart body (wherever it is), or None.

    >>> multipart_token(b'--b\\r\\nContent-Disposition: form-data; name="csrftoken"\\r\\n\\r\\nabc\\r\\n--b--\\r\\n', b"b")
    'abc'
    """
    from python_multipart.multipart import MultipartParser

    found: dict[str, Any] = {"name": None, "value": [], "token": None}
    header: dict[str, list[bytes]] = {"field": [], "value": []}

    def on_part_begin() -> None:
        found["name"], found["value"] = None, []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"].append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"].append(data[start:end])

    def on_header_end() -> None:
        name = b"".join(header["field"]).lower()
        value = b"".join(header["value"])
        header["field"], header["value"] = [], []
        if name == b"content-disposition":
            from python_multipart.multipart import parse_options_header

            _, options = parse_options_header(value)
            if b"filename" not in options:
                found["name"] = options.get(b"name")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if found["name"] == b"csrftoken":
            found["value"].append(data[start:end])

    def on_part_end() -> None:
        if found["name"] == b"csrftoken" and found["token"] is None:
            found["token"] = b"".join(found["value"]).decode("utf-8", "replace")

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except Exception:  # a malformed body: no token (the CSRF check then refuses it)
        return found["token"]
    return found["token"]


def _boundary(scope: Any) -> bytes | None:
    from python_multipart.multipart import parse_options_header

    for key, value in scope.get("headers") or ():
        if key == b"content-type":
            _, options = parse_options_header(value)
            return options.get(b"boundary")
    return None


class BodyRules:
    """The body rules above, in front of the CSRF middleware (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = scope["path"]
        if headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
            await _plain(send, 403, "a request from another site is not accepted", path)
            return
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await _plain(send, 413, f"the request is larger than {MAX_BODY // (1024 * 1024)} MB: not accepted", path)
            return
        kind = content_type(scope)
        accepted = _accepted(scope["path"])
        if kind not in accepted:
            await _plain(send, 415, f"{path} takes {' or '.join(accepted)}, not {kind or 'no content type'}", path)
            return
        try:
            body, messages = await _read_body(receive)
        except _TooLarge:
            await _plain(send, 413, f"the request is larger than {MAX_BODY // (1024 * 1024)} MB: not accepted", path)
            return
        if kind == MULTIPART:
            boundary = _boundary(scope)
            token = (multipart_token(body, boundary) if boundary else None) or ""
            original = list(scope.get("headers") or ())
            # asgi-csrf sees the form's token as its header, and a content type it does not
            # parse: a wrong or missing token is its "unknown content type" refusal (403),
            # never its own multipart reader. RestoreHeaders gives the route the real ones.
            kept = [(k, v) for k, v in original if k not in (b"x-csrftoken", b"content-type")]
            scope = {**scope, SCOPE_KEY: original,
                     "headers": [*kept, (b"content-type", b"application/x-checked-upload"),
                                 (b"x-csrftoken", token.encode("latin-1", "replace"))]}
        await self.app(scope, _replay(messages, receive), send)


class RestoreHeaders:
    """Behind asgi-csrf: the request headers as the client sent them (see :class:`BodyRules`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if SCOPE_KEY in scope:
            scope = {**scope, "headers": scope[SCOPE_KEY]}
        await self.app(scope, receive, send)


class NoBearer:
    """Drops any ``Authorization`` header before the CSRF middleware sees the request.

    The application authenticates by its session cookie only; asgi-csrf skips its check for a
    request that carries ``Authorization: Bearer ...`` (an API token, in its model), so a
    request with a session cookie and such a header would otherwise pass unchecked.

    >>> import asyncio
    >>> seen = []
    >>> async def app(scope, receive, send): seen.append(scope["headers"])
    >>> asyncio.run(NoBearer(app)({"type": "http", "headers": [(b"authorization", b"Bearer x"), (b"host", b"h")]},
    ...                          None, None))
    >>> seen
    [[(b'host', b'h')]]
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and any(k == b"authorization" for k, _ in scope.get("headers") or ()):
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"authorization"]}
        await self.app(scope, receive, send)
