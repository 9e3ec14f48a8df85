"""Every page passes the Nu HTML Checker and axe-core's WCAG 2.1 A/AA rules (in Chromium),
including the forms showing their errors. Missing tools skip locally and fail in CI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import PASSWORDS, ROOT, Live
from .test_forms import FORM_PATIENT, GOOD, _item

VNU = ROOT / ".ci" / "node" / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
AXE = ROOT / ".ci" / "node" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
AMENDMENT = ROOT / "tests" / "data" / "amendments" / "hsct-threshold.yaml"


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing: .ci/run must install it")
    pytest.skip(f"{what} is not installed (.ci/run installs it)")


def _pages(live: Live) -> list[tuple[str, str, str, dict | None]]:
    """``(user, method, url, form)`` of every kind of page, with an entry waiting for sign-off."""
    ref, date = _item(live)
    c = live.client("alice")
    c.post(f"/patients/{FORM_PATIENT}/record", data={
        "csrftoken": c.csrf, "action": "dose-modified", "item": ref, "date": date, "percent": "80",
        "of": "standard", "scope": "item", "reason": "accessibility test"})
    pid = FORM_PATIENT
    return [
        ("", "GET", "/signin", None),
        ("alice", "GET", "/patients", None), ("alice", "GET", "/patients?risk=MR", None),
        ("alice", "GET", "/patients/new", None),
        ("alice", "POST", "/patients/new", {**GOOD, "wbc_at_diagnosis": "lots", "sex": ""}),
        ("alice", "GET", f"/patients/{pid}", None), ("alice", "GET", f"/patients/{pid}/record", None),
        ("alice", "GET", f"/patients/{pid}/record?item={ref}", None),
        ("alice", "POST", f"/patients/{pid}/record", {"action": "delayed", "item": ref, "date": date}),
        ("alice", "GET", f"/patients/{pid}/record?element=induction", None),
        ("alice", "GET", f"/patients/{pid}/history", None), ("alice", "GET", "/worklist", None),
        ("alice", "GET", "/sessions", None), ("alice", "GET", "/patients/NO-SUCH", None),
        ("phil", "GET", f"/patients/{pid}", None), ("root", "GET", "/admin", None),
        ("phil", "GET", "/amendments", None),
        ("phil", "POST", "/amendments/preview", {"_from": "/amendments", "definition": AMENDMENT.read_text("utf-8")}),
        ("phil", "POST", "/amendments/preview", {"_from": "/amendments", "definition": "id: [unclosed"}),
    ]


def test_every_page_passes_the_nu_html_checker(live: Live, tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        _missing("java")
    if not VNU.is_file():
        _missing(f"the Nu HTML Checker ({VNU.relative_to(ROOT)})")
    files = []
    clients: dict[str, object] = {}
    for i, (user, method, url, form) in enumerate(_pages(live)):
        c = clients.setdefault(user, live.client(user or None))
        r = c.get(url) if method == "GET" else c.post(url, data={"csrftoken": c.csrf, **(form or {})})
        assert r.status_code < 500 and "<!DOCTYPE html>" in r.text, url
        out = tmp_path / f"page{i:02d}.html"
        out.write_text(r.text, encoding="utf-8")
        files.append(str(out))
    done = subprocess.run([java, "-jar", str(VNU), "--errors-only", "--format", "json", *files],
                          capture_output=True, text=True, timeout=300)
    messages = json.loads(done.stderr or done.stdout or '{"messages": []}')["messages"]
    errors = [f"{m.get('url', '').rsplit('/', 1)[-1]}:{m.get('lastLine')}: {m.get('message')}"
              for m in messages if m.get("type") == "error" or m.get("subType") == "fatal"]
    assert not errors, errors[:8]


def test_every_page_passes_axe_core(live: Live, browser) -> None:  # noqa: ANN001 - pytest-playwright's Browser
    if not AXE.is_file():
        _missing(f"axe-core ({AXE.relative_to(ROOT)})")
    pages = _pages(live)
    found = []
    for user in dict.fromkeys(u for u, *_ in pages):
        # bypass_csp: only to inject axe itself; the pages carry no script.
        context = browser.new_context(base_url=live.url, bypass_csp=True)
        page = context.new_page()
        if user:
            page.goto("/signin")
            page.get_by_label("User name").fill(user)
            page.get_by_label("Password").fill(PASSWORDS[user])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/*")
        for who, method, url, form in pages:
            if who != user:
                continue
            if method == "GET":
                page.goto(url)
            else:  # submit the real form with the bad values
                page.goto(form.get("_from") or (url if "record" not in url else f"{url}?item={form['item']}"))
                target = page.locator(f"form[action='{url}']").filter(
                    has=page.locator(f"input[name=action][value='{form['action']}']")) if "action" in form \
                    else page.locator(f"form[action='{url}']")
                for name, value in form.items():
                    if name in ("action", "item", "_from"):
                        continue
                    field = target.locator(f"[name='{name}']")
                    if field.count() and field.first.get_attribute("type") != "hidden":
                        tag = field.first.evaluate("e => e.tagName")
                        if tag == "SELECT":
                            field.first.select_option(value)
                        else:
                            field.first.fill(value)
                target.locator("button[type=submit]").click()
            page.add_script_tag(path=str(AXE))
            result = page.evaluate("() => axe.run({runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']})")
            found += [f"{who} {url}: {v['id']}: {v['help']} ({len(v['nodes'])}: "
                      f"{v['nodes'][0]['target']})" for v in result["violations"]]
        context.close()
    assert not found, found
