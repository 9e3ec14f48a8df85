"""The JSON API (protocol/web/api.py) through the real server: its OpenAPI document validates and
lists exactly the app's /api/ routes; every route's happy path, each answer checked against its
declared schema; 401 without a session, 404 for another site's patient on every patient route,
403 for a monitor posting and for a POST without its CSRF token; bad input is a JSON 400 naming
the field with nothing stored; an entry recorded through the API is on the pages and in the
API's history with the signed-in user as its author."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import EXAMPLES, PASSWORDS, Live, start_server

TODAY = dt.date.today()
PATIENT_GETS = ["/api/patients/{pid}", "/api/patients/{pid}/history"]
ENTRY = {"action": "measurement", "date": TODAY.isoformat(), "height_cm": 71, "weight_kg": 8.5}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server of this module's own (its entries do not change the shared server's patients):
    on SQLite, then on PostgreSQL served as the application's role (row-level security)."""
    if request.param == "sqlite":
        running = start_server(tmp_path_factory.mktemp("api"))
    else:
        from tests.pgserver import WEB

        owner = request.getfixturevalue("pg_server").new_database("api")
        running = start_server(tmp_path_factory.mktemp("api-pg"), owner, owner.replace("protocol_owner@", f"{WEB}@"))
    yield running
    running.server.should_exit = True
    running.thread.join(10)


@pytest.fixture(scope="module")
def doc(live: Live) -> dict[str, Any]:
    r = live.client("alice").get("/api/openapi.json")
    assert r.status_code == 200
    return r.json()


def post(c: httpx.Client, url: str, body: Any, token: bool = True) -> httpx.Response:
    return c.post(url, json=body, headers={"x-csrftoken": c.csrf} if token else {})  # type: ignore[attr-defined]


def count(live: Live) -> tuple[int, int]:
    from protocol._registry import open_registry

    with open_registry(live.db) as reg, reg._read() as conn:
        return (conn.execute("SELECT count(*) FROM entries").fetchone()[0],
                conn.execute("SELECT count(*) FROM patients").fetchone()[0])


def first_entry(live: Live, pid: str) -> int:
    from protocol._registry import open_registry

    with open_registry(live.db) as reg:
        return reg.history(pid)[0].seq


def register_infant(c: httpx.Client, pid: str) -> None:
    """Register, through the API, an infant three days into induction."""
    start = (TODAY - dt.timedelta(days=3)).isoformat()
    infant = {"id": pid, "protocol": "interfant06-blinatumomab", "sex": "male", "kmt2a": "rearranged",
              "birth_date": (TODAY - dt.timedelta(days=120)).isoformat(), "diagnosis_date": start,
              "wbc_at_diagnosis": 150, "measurements": [{"date": start, "height_cm": 62, "weight_kg": 6.1}],
              "events": [{"type": "element_started", "element": "induction", "date": start}]}
    r = post(c, "/api/patients", infant)
    assert r.status_code == 201, r.text


def patient_file(pid: str) -> dict[str, Any]:
    """An example patient file as the JSON a client sends (dates as text), renamed ``pid``."""
    data = json.loads(json.dumps(yaml.safe_load((EXAMPLES / "mr-on-time.yaml").read_text()), default=str))
    return {**data, "id": pid}


def conforms(doc: dict[str, Any], method: str, path: str, r: httpx.Response) -> Any:
    """The response's JSON, after checking it against the schema the document declares for it."""
    from jsonschema import Draft202012Validator

    assert r.headers["content-type"].startswith("application/json"), r.text[:300]
    declared = doc["paths"][path][method]["responses"][str(r.status_code)]
    schema = {**declared["content"]["application/json"]["schema"], "components": doc["components"]}
    body = r.json()
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, (path, r.status_code, [e.message for e in errors[:3]])
    return body


# --------------------------------------------------------------------------- the document


def test_the_openapi_document_validates(doc: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(doc)
    assert doc["openapi"] == "3.1.0"
    body = doc["paths"]["/api/patients"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "wbc_at_diagnosis" in doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
    record = doc["paths"]["/api/patients/{pid}/entries"]["post"]
    assert record["security"] == [{"session": [], "csrf": []}]
    variants = json.dumps(doc["components"]["schemas"]["RecordBody"])
    assert all(f'"#/components/schemas/Record{a}"' in variants for a in ("Given", "Omitted", "DoseModified", "Mrd"))
    omitted = doc["components"]["schemas"]["RecordOmitted"]
    assert {"action", "item", "date", "reason"} <= set(omitted["required"])  # as the library requires


def _app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route under /api/ of the application behind its middleware."""
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route

    while not isinstance(app, Starlette):
        app = getattr(app, "app", None) or app.__wrapped__
    found: set[tuple[str, str]] = set()

    def walk(routes: Any, prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route) and (prefix + route.path).startswith("/api"):
                found.update((m.lower(), prefix + route.path) for m in route.methods or () if m != "HEAD")

    walk(app.routes, "")
    return found


def test_every_api_route_is_in_the_document_and_nothing_else(live: Live, doc: dict[str, Any]) -> None:
    from protocol.web import create_app

    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    served = _app_routes(create_app(live.db))
    assert served == documented
    assert len(served) >= 8
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["description"] and op["responses"], (method, path)
            assert {p["name"] for p in op["parameters"] if p["in"] == "path"} == \
                {part[1:-1] for part in path.split("/") if part.startswith("{")}


# --------------------------------------------------------------------------- happy paths


def test_session_gives_the_csrf_token(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    body = conforms(doc, "get", "/api/session", c.get("/api/session"))
    assert body["user"] == "alice" and body["sites"] == ["site-a"]
    assert body["csrf_token"] == c.csrf == c.cookies["protocol-csrf"]  # type: ignore[attr-defined]


def test_patients_are_the_users_sites_with_the_pages_filters(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    body = conforms(doc, "get", "/api/patients", c.get("/api/patients"))
    ids = [p["id"] for p in body["patients"]]
    assert "INF-0001" in ids and "INF-0002" not in ids and {p["site"] for p in body["patients"]} == {"site-a"}
    mr = conforms(doc, "get", "/api/patients", c.get("/api/patients", params={"risk": "MR"}))["patients"]
    assert "INF-0001" in [p["id"] for p in mr] and {p["risk"] for p in mr} == {"MR"}
    hr = c.get("/api/patients", params={"risk": "HR"}).json()["patients"]
    assert "INF-0001" not in [p["id"] for p in hr] and {p["site"] for p in hr} <= {"site-a"}
    assert c.get("/api/patients", params={"q": "INF-0002"}).json()["patients"] == []
    assert [p["id"] for p in c.get("/api/patients", params={"q": "inf-0001"}).json()["patients"]] == ["INF-0001"]
    every = live.client("mona").get("/api/patients", params={"risk": "HR"}).json()["patients"]
    assert "INF-0002" in [p["id"] for p in every]  # the monitor reads every site, the same filter
    assert "INF-0001" not in [p["id"] for p in every] and {p["risk"] for p in every} == {"HR"}
    page = html.unescape(c.get("/patients?risk=MR").text)
    assert all(f'href="/patients/{p["id"]}"' in page for p in mr)  # the page lists the same


def test_a_patient_has_its_header_decisions_and_doses(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    body = conforms(doc, "get", "/api/patients/{pid}", c.get("/api/patients/INF-0001", params={"days": 28}))
    assert body["protocol"]["id"] == "interfant06-blinatumomab" and body["protocol"]["version"]
    assert body["risk"]["group"] == "MR" and body["risk"]["reasons"]
    assert body["current"]["id"] and body["days"] == 28
    assert isinstance(body["pending"], list)
    dosed = [i for i in body["items"] if i["dose"]]
    assert dosed, body["items"][:3]
    first = dosed[0]
    assert first["dose"]["working"] and first["dose_line"] == first["dose"]["text"]
    assert first["unverified"] and first["unverified_reasons"]  # placeholders stay marked
    page = html.unescape(c.get("/patients/INF-0001?days=28").text)
    assert first["ref"] in page and first["dose"]["working"] in page  # the page's items, the same working
    hr = conforms(doc, "get", "/api/patients/{pid}", live.client("mona").get("/api/patients/INF-0002"))
    assert hr["risk"]["group"] == "HR"


def test_history_and_worklist(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    body = conforms(doc, "get", "/api/patients/{pid}/history", c.get("/api/patients/INF-0001/history"))
    assert body["entries"][0]["kind"] == "base" and body["entries"][0]["recorded_by"] == "alice"
    then = body["entries"][0]["recorded_at"]
    old = c.get("/api/patients/INF-0001/history", params={"as_of": then}).json()
    assert [e["seq"] for e in old["entries"]] == [e["seq"] for e in body["entries"] if e["recorded_at"] <= then]
    wl = conforms(doc, "get", "/api/worklist", c.get("/api/worklist", params={"days": 28}))
    mine = {p["id"] for p in c.get("/api/patients").json()["patients"]}
    assert wl["days"] == 28 and wl["rows"] and "INF-0001" in {r["patient"] for r in wl["rows"]}
    assert {r["patient"] for r in wl["rows"]} <= mine
    assert sum(wl["counts"].values()) == wl["total"] >= len(wl["rows"])
    paged = [conforms(doc, "get", "/api/worklist", c.get("/api/worklist", params={"days": 28, "per_page": 2,
                                                                                  "page": n})) for n in (1, 2)]
    assert [r for p in paged for r in p["rows"]] == wl["rows"][:4] and paged[0]["pages"] == -(-wl["total"] // 2)
    page = html.unescape(c.get("/worklist?days=28").text)
    assert all(r["item"] in page for r in wl["rows"] if r["item"])  # the page's rows


def test_an_entry_recorded_through_the_api_is_on_the_pages_with_its_author(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    r = post(c, "/api/patients/INF-0001/entries", {**ENTRY, "weight_kg": 8.6})
    body = conforms(doc, "post", "/api/patients/{pid}/entries", r)
    assert r.status_code == 201 and r.headers["location"] == "/api/patients/INF-0001/history"
    seq = body["seq"]
    assert body["entry"]["recorded_by"] == "alice" and body["entry"]["data"]["weight_kg"] == 8.6
    entries = {e["seq"]: e for e in c.get("/api/patients/INF-0001/history").json()["entries"]}
    assert entries[seq]["recorded_by"] == "alice" and entries[seq]["kind"] == "measurement"
    page = html.unescape(c.get("/patients/INF-0001/history").text)
    assert f"#{seq}" in page and "8.6 kg" in page
    # the author cannot be written by the client
    r = post(c, "/api/patients/INF-0001/entries", {**ENTRY, "by": "mallory"})
    assert r.status_code == 400 and r.json()["field"] == "by"
    # a correction, as the form makes it: supersedes with why
    fixed = post(c, "/api/patients/INF-0001/entries", {**ENTRY, "weight_kg": 8.7, "supersedes": seq,
                                                       "why": "misread the scale"})
    assert fixed.status_code == 201, fixed.text
    entries = {e["seq"]: e for e in c.get("/api/patients/INF-0001/history").json()["entries"]}
    assert entries[seq]["superseded_by"] == fixed.json()["seq"] and entries[fixed.json()["seq"]]["reason"]


def test_an_item_given_through_the_api_replans(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    register_infant(c, "API-0100")
    shown = c.get("/api/patients/API-0100").json()
    item = next(i for i in shown["items"] if i["dose"] and i["status"] in ("unrecorded", "overdue", "planned")
                and i["date"] <= TODAY.isoformat())
    r = post(c, "/api/patients/API-0100/entries", {"action": "given", "item": item["ref"], "date": item["date"],
                                                   "dose": item["dose"]["amount"]})
    assert r.status_code == 201, r.text
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(c.get("/patients/API-0100/plan.csv").text)))
    assert [r["status"] for r in rows if (r["ref"], r["date"]) == (item["ref"], item["date"])] == ["given"]


def test_register_from_a_patient_file(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    r = post(c, "/api/patients?site=site-a", patient_file("API-0001"))
    body = conforms(doc, "post", "/api/patients", r)
    assert r.status_code == 201 and body["id"] == "API-0001" and body["site"] == "site-a"
    assert r.headers["location"] == "/api/patients/API-0001"
    assert c.get("/api/patients/API-0001").status_code == 200
    assert post(c, "/api/patients", patient_file("API-0003")).status_code == 201  # one site: no site needed
    assert live.client("bea").get("/api/patients/API-0001").status_code == 404


def test_a_dose_modification_is_signed_then_voided_by_its_retraction(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    register_infant(c, "API-0200")
    future = next(i for i in c.get("/api/patients/API-0200").json()["items"]
                  if i["dose"] and i["date"] > TODAY.isoformat())
    r = post(c, "/api/patients/API-0200/entries", {"action": "dose-modified", "item": future["ref"],
                                                   "date": TODAY.isoformat(), "percent": 50, "of": "standard",
                                                   "scope": "item", "reason": "toxicity, per the investigator"})
    assert r.status_code == 201, r.text
    seq = r.json()["seq"]
    assert r.json()["entry"]["signoff"]["state"] == "unsigned"
    waiting = c.get("/api/patients/API-0200").json()["waiting_signoff"]
    assert [w["seq"] for w in waiting] == [seq]
    assert seq in [u["seq"] for u in c.get("/api/worklist").json()["unsigned"]]
    phil = live.client("phil")
    wrong = post(phil, f"/api/entries/{seq}/sign", {"password": "not the password"})
    assert wrong.status_code == 400 and wrong.json()["field"] == "password"
    conforms(doc, "post", "/api/entries/{seq}/sign", wrong)
    assert post(c, f"/api/entries/{seq}/sign", {"password": "x"}).status_code == 403  # a coordinator (the recorder)
    signed = post(phil, f"/api/entries/{seq}/sign", {"password": PASSWORDS["phil"]})
    body = conforms(doc, "post", "/api/entries/{seq}/sign", signed)
    assert body["state"] == "signed" and body["signer"] == "phil" and body["meaning"] == "dose verified"
    again = post(phil, f"/api/entries/{seq}/sign", {"password": PASSWORDS["phil"]})
    assert again.status_code == 400 and "already signed" in again.json()["error"]
    assert "#%d" % seq in html.unescape(c.get("/patients/API-0200/history").text)
    no_reason = post(c, "/api/patients/API-0200/retract", {"seq": seq})
    assert no_reason.status_code == 400 and no_reason.json()["field"] == "reason"
    gone = post(c, "/api/patients/API-0200/retract", {"seq": seq, "reason": "recorded on the wrong item"})
    assert conforms(doc, "post", "/api/patients/{pid}/retract", gone)["entry"]["retracts"] == seq
    entries = {e["seq"]: e for e in c.get("/api/patients/API-0200/history").json()["entries"]}
    assert entries[seq]["signoff"]["state"] == "void" and entries[seq]["retracted_by"] == gone.json()["seq"]
    assert entries[gone.json()["seq"]]["recorded_by"] == "alice"


# --------------------------------------------------------------------------- access control


ROUTES = [("get", "/api/session", None), ("get", "/api/patients", None), ("get", "/api/worklist", None),
          ("get", "/api/openapi.json", None), ("get", "/api/patients/INF-0001", None),
          ("get", "/api/patients/INF-0001/history", None), ("post", "/api/patients/INF-0001/entries", ENTRY),
          ("post", "/api/patients", {"id": "X"}), ("post", "/api/patients/INF-0001/retract", {"seq": 2, "reason": "x"}),
          ("post", "/api/entries/2/sign", {"password": "x"})]


def test_without_a_session_every_route_is_401_json(live: Live, doc: dict[str, Any]) -> None:
    bare = httpx.Client(base_url=live.url)  # no cookie at all (cleared before each request)
    anonymous = live.client()  # the CSRF cookie and token, no session
    before = count(live)
    for method, url, body in ROUTES:
        for c in (bare, anonymous):
            if c is bare:
                c.cookies.clear()
            headers = {"x-csrftoken": getattr(c, "csrf", "")} if method == "post" else {}
            r = c.request(method, url, json=body, headers=headers)
            assert r.status_code == 401, (url, r.status_code)
            assert r.json()["error"].startswith("sign in first"), url
            assert "location" not in r.headers
    assert count(live) == before


def test_another_sites_patient_is_404_json_on_every_patient_route(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("alice")
    for url in PATIENT_GETS:
        for pid in ("INF-0002", "NO-SUCH"):
            r = c.get(url.format(pid=pid))
            body = conforms(doc, "get", url.replace("/api/patients/{pid}", "/api/patients/{pid}"), r)
            assert r.status_code == 404 and "INF-0002" not in json.dumps(body).replace(pid, ""), url
    before = count(live)
    for pid in ("INF-0002", "NO-SUCH"):
        r = post(c, f"/api/patients/{pid}/entries", ENTRY)
        assert r.status_code == 404, r.text
        conforms(doc, "post", "/api/patients/{pid}/entries", r)
        r = post(c, f"/api/patients/{pid}/retract", {"seq": first_entry(live, "INF-0002"), "reason": "x"})
        assert r.status_code == 404, r.text
    phil = live.client("phil")
    for seq in (first_entry(live, "INF-0002"), 10**6):
        r = post(phil, f"/api/entries/{seq}/sign", {"password": PASSWORDS["phil"]})
        assert r.status_code == 404 and conforms(doc, "post", "/api/entries/{seq}/sign", r)["error"], r.text
    assert count(live) == before
    other = c.get("/api/patients/INF-0002").json()
    missing = c.get("/api/patients/NO-SUCH").json()
    assert other["error"].replace("INF-0002", "?") == missing["error"].replace("NO-SUCH", "?")
    assert "INF-0002" not in c.get("/api/worklist", params={"days": 28}).text


def test_a_monitor_reads_and_writes_nothing(live: Live, doc: dict[str, Any]) -> None:
    c = live.client("mona")
    assert c.get("/api/patients/INF-0002").status_code == 200
    before = count(live)
    for url, body in [("/api/patients/INF-0001/entries", ENTRY), ("/api/patients?site=site-a", patient_file("MON-1")),
                      ("/api/patients/INF-0001/retract", {"seq": first_entry(live, "INF-0001"), "reason": "x"}),
                      ("/api/entries/1/sign", {"password": PASSWORDS["mona"]})]:
        r = post(c, url, body)
        assert r.status_code == 403, url
        conforms(doc, "post", url.split("?")[0].replace("INF-0001", "{pid}").replace("/1/", "/{seq}/"), r)
    assert count(live) == before
    root = live.client("root")
    assert root.get("/api/patients").status_code == 403 and root.get("/api/worklist").status_code == 403
    assert post(live.client("phil"), "/api/patients/INF-0001/entries", ENTRY).status_code == 403


def test_a_post_without_or_with_a_wrong_csrf_token_is_403_json(live: Live) -> None:
    c = live.client("alice")
    before = count(live)
    for headers in ({}, {"x-csrftoken": "forged"}):
        r = c.post("/api/patients/INF-0001/entries", json=ENTRY, headers=headers)
        assert r.status_code == 403 and "CSRF" in r.json()["error"], r.text
        r = c.post("/api/patients?site=site-a", json=patient_file("CSRF-1"), headers=headers)
        assert r.status_code == 403
    cross = c.post("/api/patients/INF-0001/entries", json=ENTRY,
                   headers={"x-csrftoken": c.csrf, "sec-fetch-site": "cross-site"})  # type: ignore[attr-defined]
    assert cross.status_code == 403 and cross.json()["error"]
    form = c.post("/api/patients/INF-0001/entries", data={k: str(v) for k, v in ENTRY.items()},
                  headers={"x-csrftoken": c.csrf})  # type: ignore[attr-defined]
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    assert count(live) == before


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("body, field, phrase", [
    ({"action": "measurement", "height_cm": 70, "weight_kg": 8}, "date", "expected the date"),
    ({"action": "teleported", "date": "2026-11-20"}, "action", "expected one of given"),
    ({"date": "2026-11-20"}, "action", "expected one of"),
    ({**ENTRY, "weight_kg": 8000}, "weight_kg", "expected a weight in kilograms below 300"),
    ({**ENTRY, "height_cm": "tall"}, "height_cm", "expected a number, got 'tall'"),
    ({**ENTRY, "height_cm": True}, "height_cm", "expected a text or a number"),
    ({**ENTRY, "height_cm": [70]}, "height_cm", "expected a text or a number"),
    ({**ENTRY, "dose": 3}, "dose", "measurement takes date, height_cm, weight_kg"),
    ({**ENTRY, "supersedes": "#3"}, "supersedes", "expected an entry's seq"),
    ({**ENTRY, "supersedes": 1, "why": "x"}, "supersedes", ""),
    ({"action": "omitted", "date": "2026-11-20", "item": "induction:prednisone@1"}, "reason", "needs a reason"),
    ({"action": "given", "date": "2026-11-20", "item": "not a ref"}, "item", ""),
    ({"action": "counts", "date": "2026-11-20"}, None, "expected anc and/or platelets"),
    ({"action": "mrd", "date": "2026-11-20", "timepoint": "nowhere", "value": 0.001}, None, "nowhere"),
    ({"action": "delayed", "date": "2026-11-20", "item": "induction:prednisone@1", "to": "2026-11-25",
      "scope": "everywhere", "reason": "x"}, "scope", ""),
])
def test_a_refused_entry_is_400_naming_the_field_and_stores_nothing(live: Live, doc: dict[str, Any], body: dict,
                                                                    field: str | None, phrase: str) -> None:
    c = live.client("alice")
    before = count(live)
    r = post(c, "/api/patients/INF-0001/entries", body)
    assert r.status_code == 400, r.text
    got = conforms(doc, "post", "/api/patients/{pid}/entries", r)
    if field is not None:
        assert got["field"] == field, got
    assert phrase in got["error"], got
    assert "Traceback" not in r.text
    assert count(live) == before


@pytest.mark.parametrize("raw, phrase", [(b"{not json", "not JSON"), (b"[1, 2]", "got list"), (b"", "not JSON"),
                                         ("\"\u00e9\"".encode("latin-1"), "not JSON")])
def test_a_body_that_is_not_a_json_object_is_400(live: Live, raw: bytes, phrase: str) -> None:
    c = live.client("alice")
    before = count(live)
    for url in ("/api/patients/INF-0001/entries", "/api/patients"):
        headers = {"x-csrftoken": c.csrf, "content-type": "application/json"}  # type: ignore[attr-defined]
        r = c.post(url, content=raw, headers=headers)
        assert r.status_code == 400 and phrase in r.json()["error"], (url, r.text)
    assert count(live) == before


@pytest.mark.parametrize("changes, field, phrase", [
    ({"wbc_at_diagnosis": "lots"}, "wbc_at_diagnosis", "expected a number, got 'lots'"),
    ({"birth_date": "2026-02-30"}, "birth_date", "expected a date YYYY-MM-DD, got '2026-02-30'"),
    ({"sex": "other"}, "sex", "expected 'female', 'male' or 'unknown', got 'other'"),
    ({"id": "INF-0001"}, "id", "already in the registry"),
    ({"hospital_number": "123"}, "hospital_number", ""),
])
def test_a_refused_registration_is_400_naming_the_field(live: Live, doc: dict[str, Any], changes: dict, field: str,
                                                        phrase: str) -> None:
    c = live.client("alice")
    before = count(live)
    r = post(c, "/api/patients?site=site-a", {**patient_file("BAD-0001"), **changes})
    assert r.status_code == 400, r.text
    got = conforms(doc, "post", "/api/patients", r)
    assert got["field"] == field and phrase in got["error"], got
    assert count(live) == before
    r = post(c, "/api/patients?site=site-b", patient_file("BAD-0002"))
    assert r.status_code == 400 and r.json()["field"] == "site"


@pytest.mark.parametrize("url, field", [("/api/worklist?days=abc", "days"), ("/api/worklist?days=0", "days"),
                                        ("/api/worklist?page=0", "page"), ("/api/worklist?per_page=-1", "per_page"),
                                        ("/api/patients/INF-0001?days=9999", "days"),
                                        ("/api/patients/INF-0001/history?as_of=yesterday-ish", "as_of")])
def test_bad_query_parameters_are_400_naming_them(live: Live, url: str, field: str) -> None:
    r = live.client("alice").get(url)
    assert r.status_code == 400 and r.json()["field"] == field, r.text


def test_unknown_addresses_and_methods_are_json(live: Live) -> None:
    c = live.client("alice")
    for url in ("/api/nowhere", "/api"):  # /api is redirected to /api/, an unknown API address too
        r = c.get(url, follow_redirects=True)
        assert r.status_code == 404 and r.json()["error"], url
    r = c.put("/api/patients/INF-0001", json={}, headers={"x-csrftoken": c.csrf})  # type: ignore[attr-defined]
    assert r.status_code == 405 and r.json()["error"]
    assert c.get("/patients/INF-0001").headers["content-type"].startswith("text/html")  # the pages are pages


def test_an_unexpected_failure_is_a_json_500_without_a_traceback(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    import protocol.web.patients as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(module, "patient_view", broken)  # the server runs in this process
    r = live.client("alice").get("/api/patients/INF-0001")
    assert r.status_code == 500 and r.json()["error"].startswith("internal error")
    assert "secret internals" not in r.text and "Traceback" not in r.text


def test_the_pages_do_not_depend_on_the_api() -> None:
    import ast

    web = Path(__file__).resolve().parents[2] / "protocol" / "web"
    for path in web.glob("*.py"):
        if path.name in ("api.py", "app.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "api" not in imported, path.name
    for template in (web.parents[1] / "templates" / "web").glob("*.j2"):
        assert "/api/" not in template.read_text(encoding="utf-8"), template.name
