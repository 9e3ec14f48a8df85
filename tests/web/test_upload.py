"""Importing a patient file by upload on /patients (protocol/web/patients.py, protocol/web/guards.py).

The upload is a plain multipart form that works without JavaScript: the form's ``csrftoken``
field is checked against the signed cookie exactly as every other form's; the library's own
patient-file validation is the only check (every case of the command line's malformed-input
suite, uploaded as the bytes of the file, is refused with its message beside the field and
nothing stored); a body above 4 MB is 413; a POST of a content type its address does not take
is 415."""

from __future__ import annotations

import html
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import EXAMPLES, PASSWORDS, Live
from .test_forms import DATA, PATIENT_CASES, count, error_of

#: Files that are valid once uploaded as bytes too (the command line accepts them as well).
VALID_AS_BYTES = {"utf16.yaml"}


def _renamed(pid: str) -> bytes:
    return (EXAMPLES / "mr-on-time.yaml").read_bytes().replace(b"INF-0001", pid.encode())


def _upload(c: httpx.Client, name: str, content: bytes, **data: str) -> httpx.Response:
    return c.post("/patients/import", files={"file": (name, content, "application/octet-stream")},
                  data={"csrftoken": c.csrf, "site": "site-a", **data})  # type: ignore[attr-defined]


def test_a_patient_file_uploaded_in_the_browser_is_registered_and_a_bad_one_is_refused_beside_the_field(
        page: Page, live: Live, tmp_path: Path) -> None:
    good = tmp_path / "UP-0100.yaml"
    good.write_bytes(_renamed("UP-0100"))
    bad = tmp_path / "broken.yaml"
    bad.write_bytes(_renamed("UP-0101").replace(b"birth_date: ", b"birth_date: 2026-02-30 #"))
    page.goto("/signin")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients")
    before = count(live)

    upload = page.get_by_role("form", name="Import a patient file")
    upload.get_by_label("Patient file").set_input_files(str(bad))
    upload.get_by_role("button", name="Import").click()
    field = page.get_by_role("form", name="Import a patient file").get_by_label("Patient file")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#file-error")).to_contain_text("broken.yaml:")
    expect(page.locator("#file-error")).to_contain_text("birth_date")
    assert count(live) == before

    page.get_by_role("form", name="Import a patient file").get_by_label("Patient file").set_input_files(str(good))
    page.get_by_role("form", name="Import a patient file").get_by_role("button", name="Import").click()
    expect(page.get_by_role("status")).to_contain_text("Registered UP-0100.")
    assert page.url.endswith("/patients/UP-0100?registered=1")
    page.goto("/patients/UP-0100/history")
    expect(page.locator("body")).to_contain_text("alice")


@pytest.mark.parametrize("name, case", PATIENT_CASES, ids=[n for n, _ in PATIENT_CASES])
def test_every_malformed_patient_file_uploaded_is_refused_beside_the_field(live: Live, name: str,
                                                                           case: dict) -> None:
    if name in VALID_AS_BYTES:
        pytest.skip("valid as bytes (the command line registers it too)")
    content = (DATA / "patients" / name).read_bytes()
    if len(content) > 4 * 1024 * 1024:
        pytest.skip("larger than an upload may be (413, tested below)")
    c = live.client("alice")
    before = count(live)
    r = _upload(c, name, content)
    assert r.status_code == 400, r.text[:2000]
    shown = error_of(r.text, "file")
    assert case["phrase"] in shown, shown
    assert shown.lstrip().startswith(name), shown  # the uploaded file's own name, not a temporary path
    if case.get("field"):
        assert case["field"] in shown, shown
    assert "Traceback" not in r.text
    assert count(live) == before


def test_the_csrf_token_of_an_upload_is_checked_wherever_the_field_is(live: Live) -> None:
    c = live.client("alice")
    before = count(live)
    files = {"file": ("UP-0200.yaml", _renamed("UP-0200"))}
    assert c.post("/patients/import", files=files, data={"site": "site-a"}).status_code == 403
    assert c.post("/patients/import", files=files, data={"csrftoken": "forged", "site": "site-a"}).status_code == 403
    # A token valid for another browser (its own cookie) is not valid with this one's.
    other = live.client("alice")
    assert c.post("/patients/import", files=files, data={"csrftoken": other.csrf, "site": "site-a"}).status_code == 403
    # A header alone does not stand in for a wrong form field.
    assert c.post("/patients/import", files=files, data={"csrftoken": "forged"},
                  headers={"x-csrftoken": "forged"}).status_code == 403
    assert count(live) == before
    # The token after the file (as some clients order the fields) is read as well.
    boundary = "xyzzy"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="UP-0200.yaml"\r\n'
            f"Content-Type: application/x-yaml\r\n\r\n").encode() + _renamed("UP-0200") + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="site"\r\n\r\nsite-a'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="csrftoken"\r\n\r\n{c.csrf}'
            f"\r\n--{boundary}--\r\n").encode()
    r = c.post("/patients/import", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 303 and r.headers["location"] == "/patients/UP-0200?registered=1"


def test_only_a_coordinator_of_the_site_imports(live: Live) -> None:
    before = count(live)
    for name in ("mona", "phil", "root"):
        c = live.client(name)
        assert _upload(c, "UP-0300.yaml", _renamed("UP-0300")).status_code == 403, name
    r = _upload(live.client("bea"), "UP-0300.yaml", _renamed("UP-0300"))
    assert r.status_code == 400 and "not 'site-a'" in html.unescape(r.text)
    anonymous = live.client()
    assert _upload(anonymous, "UP-0300.yaml", _renamed("UP-0300")).status_code == 401
    alice = live.client("alice")
    no_file = alice.post("/patients/import", files={"other": ("x", b"")}, data={"csrftoken": alice.csrf})
    assert no_file.status_code == 400 and "choose a patient file" in error_of(no_file.text, "file")
    assert count(live) == before


def test_a_body_above_4_mb_is_413_and_other_content_types_are_415(live: Live) -> None:
    c = live.client("alice")
    before = count(live)
    big = b"notes: '" + b"x" * (4 * 1024 * 1024) + b"'\n"
    assert _upload(c, "big.yaml", big).status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"x" * (1024 * 1024)

    r = c.post("/patients/import", content=chunks(),
               headers={"content-type": "multipart/form-data; boundary=b", "x-csrftoken": c.csrf})
    assert r.status_code == 413
    assert c.post("/patients/new", data={"csrftoken": c.csrf, "notes": "x" * (4 * 1024 * 1024)}).status_code == 413
    for url in ("/patients/new", "/patients/INF-0001/record", "/signout"):
        assert c.post(url, files={"file": ("x.yaml", b"id: X")}, data={"csrftoken": c.csrf}).status_code == 415, url
        assert c.post(url, content=b"csrftoken=" + c.csrf.encode(),
                      headers={"content-type": "text/plain"}).status_code == 415, url
        assert c.post(url, json={"csrftoken": c.csrf}, headers={"x-csrftoken": c.csrf}).status_code == 415, url
    assert c.post("/patients/import", content=b"id: X", headers={"content-type": "application/x-yaml",
                                                                 "x-csrftoken": c.csrf}).status_code == 415
    assert count(live) == before
