"""Access control through the real server: no session, another site's patient (404 on every
URL), admin routes (403), a monitor posting (403), CSRF (403), the recorder signing (refused),
a disabled user's session, a revoked feed, throttled sign-in, the security headers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PASSWORDS, Live, start_server

PATIENT_GETS = ["/patients/{pid}", "/patients/{pid}/history", "/patients/{pid}/record",
                "/patients/{pid}/record?item=induction:prednisone@1", "/patients/{pid}/record?element=induction",
                "/patients/{pid}/roadmap", "/patients/{pid}/roadmap.pdf", "/patients/{pid}/plan.csv",
                "/patients/{pid}/fhir.json", "/patients/{pid}/calendar.ics"]
PATIENT_POSTS = [("/patients/{pid}/record", {"action": "measurement", "date": "2026-11-20", "height_cm": "70",
                                              "weight_kg": "8"}),
                 ("/patients/{pid}/retract", {"seq": "20", "reason": "x"}),
                 ("/patients/{pid}/feeds", {}), ("/patients/{pid}/feeds/revoke", {"key": "x"})]
OTHER_GETS = ["/patients", "/patients/new", "/worklist", "/sessions", "/admin"]
ADMIN = [("GET", "/admin", None), ("POST", "/admin/users", {"name": "x"}), ("POST", "/admin/sites", {"site": "x"}),
         ("POST", "/admin/users/disable", {"name": "x"})]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The shared server on SQLite, then one on PostgreSQL served as the application's role
    (row-level security behind the access layer)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("live")
        return
    from tests.pgserver import WEB

    owner = request.getfixturevalue("pg_server").new_database("web")
    running = start_server(tmp_path_factory.mktemp("web-pg"), owner, owner.replace("protocol_owner@", f"{WEB}@"))
    yield running
    running.server.should_exit = True
    running.thread.join(10)


def test_without_a_session_every_page_sends_to_sign_in(live: Live) -> None:
    c = live.client()
    for url in [u.format(pid="INF-0001") for u in PATIENT_GETS] + OTHER_GETS:
        r = c.get(url)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), url
    for url, data in PATIENT_POSTS:
        r = c.post(url.format(pid="INF-0001"), data={"csrftoken": c.csrf, **data})
        assert r.status_code == 401, url
    assert c.post("/entries/1/sign", data={"csrftoken": c.csrf, "password": "x"}).status_code == 401
    assert c.get("/signin").status_code == 200


def test_another_sites_patient_is_404_on_every_url(live: Live) -> None:
    c = live.client("alice")
    for url in PATIENT_GETS:
        assert c.get(url.format(pid="INF-0001")).status_code == 200, url
        other = c.get(url.format(pid="INF-0002"))
        missing = c.get(url.format(pid="NO-SUCH"))
        assert other.status_code == missing.status_code == 404, url
        assert "INF-0002" not in other.text
    for url, data in PATIENT_POSTS:
        assert c.post(url.format(pid="INF-0002"), data={"csrftoken": c.csrf, **data}).status_code == 404, url
    # an entry of the other site's patient
    first_b = live_entry(live, "INF-0002")
    assert c.post(f"/entries/{first_b}/sign", data={"csrftoken": c.csrf, "password": "x"}).status_code == 403
    listed = c.get("/patients").text
    assert "INF-0001" in listed and "INF-0002" not in listed
    assert "INF-0002" not in c.get("/worklist?days=28").text
    phil = live.client("phil")
    assert phil.post(f"/entries/{first_b}/sign", data={"csrftoken": phil.csrf, "password": "x"}).status_code == 404


def live_entry(live: Live, pid: str) -> int:
    from protocol._registry import open_registry

    with open_registry(live.db) as reg:
        return reg.history(pid)[-1].seq


def test_admin_routes_are_403_for_everyone_else_and_admin_sees_no_patients(live: Live) -> None:
    for name in ("alice", "phil", "ines", "mona"):
        c = live.client(name)
        for method, url, data in ADMIN:
            r = c.get(url) if method == "GET" else c.post(url, data={"csrftoken": c.csrf, **data})
            assert r.status_code == 403, (name, url)
    root = live.client("root")
    assert root.get("/admin").status_code == 200
    for url in ["/patients", "/worklist", "/patients/INF-0001", "/patients/INF-0001/roadmap.pdf"]:
        assert root.get(url).status_code == 403, url


def test_a_monitor_reads_every_site_and_posts_nothing(live: Live) -> None:
    c = live.client("mona")
    assert c.get("/patients/INF-0001").status_code == 200 and c.get("/patients/INF-0002").status_code == 200
    for url, data in PATIENT_POSTS:
        assert c.post(url.format(pid="INF-0001"), data={"csrftoken": c.csrf, **data}).status_code == 403, url
    assert c.post("/patients/new", data={"csrftoken": c.csrf, "id": "X"}).status_code == 403


def test_a_post_without_or_with_a_wrong_csrf_token_is_403_and_stores_nothing(live: Live) -> None:
    c = live.client("alice")
    before = live_entry(live, "INF-0001")
    data = {"action": "measurement", "date": "2026-11-20", "height_cm": "70", "weight_kg": "8.4"}
    assert c.post("/patients/INF-0001/record", data=data).status_code == 403
    assert c.post("/patients/INF-0001/record", data={**data, "csrftoken": "forged"}).status_code == 403
    # asgi-csrf skips its check for a request carrying a Bearer token; the app takes none and
    # drops the header first, so a session cookie with one is still checked.
    assert c.post("/patients/INF-0001/record", data=data, headers={"authorization": "Bearer x"}).status_code == 403
    assert c.post("/api/patients/INF-0001/entries", json={"action": "counts", "date": "2026-11-20", "anc": "1"},
                  headers={"authorization": "Bearer x"}).status_code == 403
    cross = c.post("/patients/INF-0001/record", data={**data, "csrftoken": c.csrf},
                   headers={"sec-fetch-site": "cross-site"})
    assert cross.status_code == 403
    assert c.post("/patients/INF-0001/record", files={"file": ("x.yaml", b"id: X")},
                  data={"csrftoken": c.csrf}).status_code == 415
    c.cookies.delete("protocol-csrf")
    assert c.post("/patients/INF-0001/record", data={**data, "csrftoken": c.csrf}).status_code == 403
    assert live_entry(live, "INF-0001") == before


def test_security_headers_and_cookies(live: Live) -> None:
    c = live.client()
    r = c.get("/signin")
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert "'unsafe-inline'" not in csp and "object-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    signin = c.post("/signin", data={"csrftoken": c.csrf, "name": "alice", "password": PASSWORDS["alice"]})
    cookie = signin.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # loopback: development (see README, Web application)
    assert "<script" not in c.get("/patients/INF-0001").text


def test_non_loopback_cookies_are_host_prefixed_and_secure(tmp_path: Path) -> None:
    from protocol.web.common import Web

    web = Web(tmp_path / "x.db", host="0.0.0.0")
    assert web.secure and web.session_cookie.startswith("__Host-") and web.csrf_cookie.startswith("__Host-")
    assert not Web(tmp_path / "x.db", host="127.0.0.1").secure


def test_signing_out_and_disabling_end_the_session(live: Live) -> None:
    from protocol._auth import add_user, disable_user
    from protocol._registry import open_registry

    c = live.client("alice")
    assert c.post("/signout", data={"csrftoken": c.csrf}).status_code == 303
    assert c.get("/patients").status_code == 303
    with open_registry(live.db) as reg:
        add_user(reg, "leaver", "coordinator", ["site-a"], "departing pass phrase")
    c = live.client("leaver", "departing pass phrase")
    assert c.get("/patients").status_code == 200
    with open_registry(live.db) as reg:
        disable_user(reg, "leaver")
    assert c.get("/patients").status_code == 303
    again = live.client()
    r = again.post("/signin", data={"csrftoken": again.csrf, "name": "leaver", "password": "departing pass phrase"})
    assert r.status_code == 401 and "disabled" in r.text


def test_a_user_sees_and_ends_their_sessions(live: Live) -> None:
    first, second = live.client("ines"), live.client("ines")
    page = second.get("/sessions").text
    keys = re.findall(r'name="key" value="([0-9a-f]+)"', page)
    assert keys
    for key in keys:
        second.post("/sessions/end", data={"csrftoken": second.csrf, "key": key})
    assert first.get("/patients").status_code == 303
    assert second.get("/patients").status_code == 200


def test_a_revoked_feed_is_404(live: Live) -> None:
    c = live.client("alice")
    r = c.post("/patients/INF-0001/feeds", data={"csrftoken": c.csrf})
    token = re.search(r"feed=([^#&]+)", r.headers["location"]).group(1)
    anonymous = live.client()
    feed = anonymous.get(f"/feeds/{token}.ics")
    assert feed.status_code == 200 and feed.text.startswith("BEGIN:VCALENDAR")
    key = re.findall(r'name="key" value="([0-9a-f]+)"', c.get("/patients/INF-0001").text)[-1]
    assert c.post("/patients/INF-0001/feeds/revoke", data={"csrftoken": c.csrf, "key": key}).status_code == 303
    assert anonymous.get(f"/feeds/{token}.ics").status_code == 404
    assert anonymous.get("/feeds/guessed.ics").status_code == 404


def test_sign_in_is_throttled(tmp_path: Path) -> None:
    own = start_server(tmp_path)  # its own server: throttling is per address, and all tests are 127.0.0.1
    try:
        c = own.client()
        codes = [c.post("/signin", data={"csrftoken": c.csrf, "name": "alice", "password": "wrong one here!"}
                        ).status_code for _ in range(7)]
        assert codes[:5] == [401] * 5 and 429 in codes[5:]
        r = c.post("/signin", data={"csrftoken": c.csrf, "name": "alice", "password": PASSWORDS["alice"]})
        assert r.status_code == 429 and "try again in" in r.text
        from protocol._registry import open_registry

        with open_registry(own.db) as reg:
            outcomes = [o for (o,) in reg._conn.execute("SELECT outcome FROM signins WHERE user = 'alice'")]
        assert outcomes.count("wrong password") == 5 and "throttled" in outcomes
    finally:
        own.server.should_exit = True
        own.thread.join(10)


def test_the_sign_in_form_is_csrf_protected_and_redirects_only_locally(live: Live) -> None:
    c = live.client()
    r = c.post("/signin", data={"name": "alice", "password": PASSWORDS["alice"]})
    assert r.status_code == 403
    r = c.post("/signin", data={"csrftoken": c.csrf, "name": "alice", "password": PASSWORDS["alice"],
                                "next": "//evil.example/"})
    assert r.headers["location"] == "/patients"


@pytest.mark.parametrize("name", ["alice", "mona"])
def test_no_page_has_a_server_error(live: Live, name: str) -> None:
    c = live.client(name)
    for url in ["/patients?q=%3Cscript%3E", "/patients?protocol=x", "/worklist?days=abc", "/worklist?days=-4", "/worklist?page=999", "/worklist?page=x",
                "/patients/INF-0001?days=zz", "/patients/INF-0001/history?as_of=garbage",
                "/patients/INF-0001/record?item=nonsense", "/patients/%3Cb%3E", "/nowhere"]:
        r = c.get(url)
        assert r.status_code < 500, url
        assert "<script>" not in r.text and "Traceback" not in r.text


def test_the_patient_list_searches_and_filters(live: Live) -> None:
    c = live.client("mona")
    assert "INF-0002" not in c.get("/patients?q=0001").text
    hr = c.get("/patients?risk=HR").text
    assert "INF-0002" in hr and 'href="/patients/INF-0001"' not in hr
    assert 'href="/patients/INF-0002"' not in c.get("/patients?site=site-a").text
    assert "No patients found" in c.get("/patients?status=death&element=nowhere").text


def test_hsts_is_sent_over_https_only(live: Live) -> None:
    import asyncio

    import httpx

    from protocol.web import create_app

    app = create_app(live.db, host="0.0.0.0")

    async def fetch() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as c:
            return await c.get("/signin")

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a browser test may leave a loop running in this thread
        r = pool.submit(asyncio.run, fetch()).result()
    assert r.headers["strict-transport-security"].startswith("max-age=31536000")
    assert "__Host-protocol-csrf=" in r.headers["set-cookie"] and "Secure" in r.headers["set-cookie"]
    assert "strict-transport-security" not in live.client().get("/signin").headers


def test_the_worklist_pages_through_its_rows(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    import protocol.web.worklist as module

    monkeypatch.setattr(module, "PAGE", 2)  # the server runs in this process
    c = live.client("alice")
    first = c.get("/worklist?days=28").text
    assert "Rows 1–2 of" in first and "Next page" in first and "Previous page" not in first
    second = c.get("/worklist?days=28&page=2").text
    assert "Rows 3–4 of" in second and "Previous page" in second
