"""Amendments on the web (issue 15): a pharmacist previews an amended definition for the
patients of their sites and applies it with their signature; coordinators and monitors may
not; bad text is refused beside its field with nothing written. Each test runs its own server
(an applied amendment would change the shared server's patients)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from protocol._registry import open_registry
from protocol._versions import version_history

from .conftest import PASSWORDS, ROOT, Live, start_server

HSCT = ROOT / "tests" / "data" / "amendments" / "hsct-threshold.yaml"


@pytest.fixture()
def own(tmp_path: Path) -> Iterator[Live]:
    running = start_server(tmp_path)
    yield running
    running.server.should_exit = True
    running.thread.join(10)


def moves(live: Live) -> int:
    with open_registry(live.db) as reg:
        return reg._conn.execute("SELECT count(*) FROM version_entries WHERE from_sha256 IS NOT NULL").fetchone()[0]


def test_a_pharmacist_previews_and_signs_an_amendment_in_the_browser(page: Page, own: Live) -> None:
    page.goto(f"{own.url}/signin")
    page.get_by_label("User name").fill("phil")
    page.get_by_label("Password").fill(PASSWORDS["phil"])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Amendments").click()
    page.get_by_label("Amended definition file").set_input_files(str(HSCT))
    page.get_by_role("button", name="Preview").click()
    # Only the patients of phil's site (INF-0001 in site-a; INF-0002 of site-b is not listed).
    expect(page.locator("main")).to_contain_text("1 patient: ")
    expect(page.locator("main")).to_contain_text("INF-0001")
    assert "INF-0002" not in page.locator("main").inner_text()
    expect(page.locator("main")).to_contain_text("transitions.marma->hsct")
    # A wrong password: refused beside the field, nothing moved.
    page.get_by_label("Reason (which amendment, approved by whom)").fill("INVENTED test amendment, trial office")
    page.get_by_label("Your password (your signature)").fill("not the password at all")
    page.get_by_role("button", name="Sign and apply").click()
    expect(page.locator("#a-password-error")).to_contain_text("the password is wrong")
    assert moves(own) == 0
    page.get_by_label("Reason (which amendment, approved by whom)").fill("INVENTED test amendment, trial office")
    page.get_by_label("Your password (your signature)").fill(PASSWORDS["phil"])
    page.get_by_role("button", name="Sign and apply").click()
    expect(page.get_by_role("status")).to_contain_text("1 patient(s) moved to interfant06-blinatumomab@1.1.0")
    with open_registry(own.db) as reg:
        last = version_history(reg, "INF-0001")[-1]
        assert last["to"] == "interfant06-blinatumomab@1.1.0" and last["recorded_by"] == "phil"
        assert last["signature"] == "amendment approved" and last["reason"].startswith("INVENTED")
        assert version_history(reg, "INF-0002")[-1]["to"] == "interfant06-blinatumomab@1.0.0"  # site-b untouched


def test_only_pharmacists_and_investigators_reach_amendments(own: Live) -> None:
    for name in ("alice", "mona", "root"):
        c = own.client(name)
        assert c.get("/amendments").status_code == 403, name
        r = c.post("/amendments/preview", data={"csrftoken": c.csrf, "definition": HSCT.read_text(encoding="utf-8")})
        assert r.status_code == 403, name
    assert own.client().get("/amendments").status_code == 303  # signed out: to the sign-in page
    assert own.client("ines").get("/amendments").status_code == 200


def test_bad_text_is_refused_beside_its_field_and_nothing_is_written(own: Live) -> None:
    c = own.client("phil")
    text = HSCT.read_text(encoding="utf-8")
    for bad, words in (("", "got nothing"), ("format: 1\nid: interfant06-blinatumomab\n", "definition"),
                       (text.replace('version: "1.1.0"', 'version: "0.9.0"'), "greater than 1.0.0"),
                       ("id: [unclosed", "line")):
        r = c.post("/amendments/preview", data={"csrftoken": c.csrf, "definition": bad})
        assert r.status_code == 400, bad[:30]
        assert 'id="a-definition-error"' in r.text and words in r.text, (bad[:30], r.text[-2000:])
        # The textarea is marked invalid, then tied to its hint and its error (as _forms.html.j2 does).
        assert re.search(r'<textarea id="a-definition"[^>]* aria-invalid="true" '
                         r'aria-describedby="a-definition-hint a-definition-error">', r.text), r.text[-2000:]
        assert "Traceback" not in r.text and "/tmp/" not in r.text
    preview = c.post("/amendments/preview", data={"csrftoken": c.csrf, "definition": text})
    sha = re.search(r'name="sha256" value="([0-9a-f]{64})"', preview.text).group(1)
    # A definition changed after the preview, a missing reason: refused, nothing moved.
    changed = text.replace("INVENTED TEST VALUE", "INVENTED TEST VALUE, edited")
    for data, field in (({"definition": changed, "sha256": sha, "reason": "x"}, "definition"),
                        ({"definition": text, "sha256": sha, "reason": " "}, "reason")):
        r = c.post("/amendments/apply", data={"csrftoken": c.csrf, "password": PASSWORDS["phil"], **data})
        assert r.status_code == 400 and f'id="a-{field}-error"' in r.text, field
    assert moves(own) == 0
    r = c.post("/amendments/apply", data={"csrftoken": c.csrf, "password": PASSWORDS["phil"], "definition": text,
                                          "sha256": sha, "reason": "INVENTED"})
    assert r.status_code == 200 and "1 patient(s) moved" in r.text and moves(own) == 1


def test_pasted_text_previews_the_same_as_the_uploaded_file(own: Live) -> None:
    c = own.client("phil")
    pasted = c.post("/amendments/preview", data={"csrftoken": c.csrf, "definition": HSCT.read_text(encoding="utf-8")})
    uploaded = c.post("/amendments/preview", data={"csrftoken": c.csrf},
                      files={"definition_file": ("hsct.yaml", HSCT.read_bytes(), "application/yaml")})
    sha = re.compile(r'name="sha256" value="([0-9a-f]{64})"')
    assert pasted.status_code == uploaded.status_code == 200
    assert sha.search(pasted.text).group(1) == sha.search(uploaded.text).group(1)
    bad = c.post("/amendments/preview", data={"csrftoken": c.csrf},
                 files={"definition_file": ("x.yaml", b"\xff\xfe\x00bad", "application/yaml")})
    assert bad.status_code == 400 and 'id="a-definition-error"' in bad.text and "UTF-8" in bad.text
