"""Corrections through the forms: an entry is superseded from its history row (with a reason
for the correction), stays in the history marked as replaced, and a signature on it is void."""

from __future__ import annotations

import re

from .conftest import PASSWORDS, Live
from .test_forms import FORM_PATIENT, _item, count


def test_a_signed_dose_modification_corrected_from_the_history_voids_its_signature(live: Live) -> None:
    ref, date = _item(live)
    c = live.client("alice")
    r = c.post(f"/patients/{FORM_PATIENT}/record", data={
        "csrftoken": c.csrf, "action": "dose-modified", "item": ref, "date": date, "percent": "50",
        "of": "standard", "scope": "item", "reason": "mucositis"})
    assert r.status_code == 303
    seq = int(re.search(r"recorded=(\d+)", r.headers["location"]).group(1))
    phil = live.client("phil")
    assert phil.post(f"/entries/{seq}/sign", data={"csrftoken": phil.csrf,
                                                   "password": PASSWORDS["phil"]}).status_code == 303
    history = c.get(f"/patients/{FORM_PATIENT}/history").text
    assert "dose verified: phil" in history
    form = c.get(f"/patients/{FORM_PATIENT}/record?correct={seq}")
    assert form.status_code == 200
    assert f'name="supersedes" value="{seq}"' in form.text and 'value="50"' in form.text
    before = count(live)
    data = {"csrftoken": c.csrf, "action": "dose-modified", "item": ref, "date": date, "percent": "75",
            "of": "standard", "scope": "item", "reason": "mucositis", "supersedes": str(seq)}
    refused = c.post(f"/patients/{FORM_PATIENT}/record", data=data)  # no reason for the correction
    assert refused.status_code == 400 and "correction needs a reason" in refused.text
    assert 'id="dose-modified-why-error"' in refused.text
    assert count(live) == before
    r = c.post(f"/patients/{FORM_PATIENT}/record", data={**data, "why": "75 % was prescribed"})
    assert r.status_code == 303
    new = int(re.search(r"recorded=(\d+)", r.headers["location"]).group(1))
    history = c.get(f"/patients/{FORM_PATIENT}/history").text
    assert f"replaced by #{new}" in history
    assert "VOID (signed by phil, then corrected)" in history
    assert "75 % was prescribed" in history
    page = c.get(f"/patients/{FORM_PATIENT}").text
    assert "UNSIGNED" in page  # the correcting entry waits for its own sign-off
