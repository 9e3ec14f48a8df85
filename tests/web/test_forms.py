"""Bad input through the forms: every refusal shows the library's message beside the field
that caused it (or, for a pasted patient file, with the file's line and field), stores
nothing, and never shows a traceback or a 500. The patient-file cases are those of the
command line's malformed-input suite (tests/data/malformed), pasted into the import form."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import pytest
import yaml

from .conftest import Live

DATA = Path(__file__).resolve().parent.parent / "data" / "malformed"
EXPECTED = yaml.safe_load((DATA / "expected.yaml").read_text(encoding="utf-8"))
PATIENT_CASES = sorted((name, case) for name, case in EXPECTED["patients"]["cases"].items()
                       if not case.get("xfail"))
TODAY = dt.date.today()
#: A file whose only fault is its encoding: once decoded to the text a form carries, it is valid.
ENCODING_ONLY = {"utf16.yaml"}


def count(live: Live) -> tuple[int, int]:
    from protocol._registry import open_registry

    with open_registry(live.db) as reg:
        return (reg._conn.execute("SELECT count(*) FROM entries").fetchone()[0],
                reg._conn.execute("SELECT count(*) FROM patients").fetchone()[0])


def error_of(page: str, field_id: str) -> str:
    """The text of the error tied to the input ``field_id`` (its aria-describedby target)."""
    m = re.search(rf'<(?:p|ul) class="error" id="{re.escape(field_id)}-error">(.*?)</(?:p|ul)>', page, re.S)
    assert m, f"no error beside {field_id}"
    assert re.search(rf'id="{re.escape(field_id)}"[^>]*aria-invalid="true"[^>]*aria-describedby="[^"]*'
                     rf'{re.escape(field_id)}-error', page), f"{field_id} is not tied to its error"
    return html.unescape(re.sub(r"<[^>]+>", " ", m.group(1)))


def _text(path: Path) -> str | None:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


GOOD = {"id": "FORM-0001", "protocol": "interfant06-blinatumomab", "birth_date": "2026-08-01", "sex": "female",
        "diagnosis_date": "2026-11-20", "kmt2a": "rearranged", "wbc_at_diagnosis": "150", "m_date": "2026-11-20",
        "height_cm": "62", "weight_kg": "6.1", "site": "site-a"}


@pytest.mark.parametrize("changes, field, phrase", [
    ({"wbc_at_diagnosis": "lots"}, "wbc_at_diagnosis", "expected a number, got 'lots'"),
    ({"wbc_at_diagnosis": "-3"}, "wbc_at_diagnosis", "expected a number >= 0"),
    ({"birth_date": "2026-02-30"}, "birth_date", "expected a date YYYY-MM-DD, got '2026-02-30'"),
    ({"diagnosis_date": ""}, "diagnosis_date", "required"),
    ({"sex": "other"}, "sex", "expected 'female', 'male' or 'unknown', got 'other'"),
    ({"protocol": "no-such-protocol"}, "protocol", "no-such-protocol"),
    ({"id": "John Smith"}, "id", ""),
    ({"weight_kg": "0"}, "weight_kg", "expected a number > 0, got 0"),
    ({"height_cm": "tall"}, "height_cm", "expected a number, got 'tall'"),
    ({"m_date": "yesterday"}, "m_date", "expected a date YYYY-MM-DD"),
    ({"site": "site-b"}, "site", "not 'site-b'"),
    ({"id": "INF-0001"}, "id", "already in the registry"),
])
def test_registration_refusals_are_shown_beside_the_field(live: Live, changes: dict, field: str,
                                                          phrase: str) -> None:
    c = live.client("alice")
    before = count(live)
    r = c.post("/patients/new", data={"csrftoken": c.csrf, **GOOD, **changes})
    assert r.status_code == 400
    assert "Traceback" not in r.text
    if field == "site":
        assert phrase in html.unescape(r.text)
    else:
        assert phrase in error_of(r.text, field)
    assert count(live) == before


@pytest.mark.parametrize("name, case", PATIENT_CASES, ids=[n for n, _ in PATIENT_CASES])
def test_every_malformed_patient_file_is_refused_by_the_import_form(live: Live, name: str, case: dict) -> None:
    text = _text(DATA / "patients" / name)
    if text is None or not text.strip() or "\x00" in text or name in ENCODING_ONLY:
        pytest.skip("not text a form can carry (an encoding case of the file reader)")
    c = live.client("alice")
    before = count(live)
    r = c.post("/patients/import", data={"csrftoken": c.csrf, "site": "site-a", "file": text})
    assert r.status_code == 400, r.text[:2000]
    shown = error_of(r.text, "file")
    assert case["phrase"] in shown, shown
    if case.get("field"):
        assert case["field"] in shown, shown
    assert count(live) == before


FORM_PATIENT = "FORM-0100"


def _item(live: Live, pid: str = FORM_PATIENT) -> tuple[str, str]:
    """An item still to record of a patient in induction (registered on first use)."""
    from protocol._access import Actor, Scoped
    from protocol._registry import open_registry

    start = (TODAY - dt.timedelta(days=3)).isoformat()
    with open_registry(live.db) as reg:
        if pid not in {p.id for p in reg.patients()}:
            reg.add_patient({"id": pid, "protocol": "interfant06-blinatumomab",
                             "birth_date": (TODAY - dt.timedelta(days=120)).isoformat(), "sex": "male",
                             "diagnosis_date": start, "kmt2a": "rearranged", "wbc_at_diagnosis": 150,
                             "measurements": [{"date": start, "height_cm": 62, "weight_kg": 6.1}],
                             "events": [{"type": "element_started", "element": "induction", "date": start}]},
                            by="alice", site="site-a")
        p = Scoped(reg, Actor("alice", "coordinator", frozenset({"site-a"}))).plan(pid)
        running = {e.id for e in p.elements if e.status == "in_progress"}
        item = next(i for i in p.items if i.element in running and i.dose is not None and i.dose.amount
                    and i.status == "planned")
        return item.ref, item.date.isoformat()


RECORDS = [
    ("given", {"dose": "9999"}, "given-dose", "expected at most the standard dose"),
    ("given", {"dose": "-1"}, "given-dose", "expected a number > 0"),
    ("given", {"dose": "a lot"}, "given-dose", "expected a number, got 'a lot'"),
    ("given", {"date": "2026-13-01"}, "given-date", "expected a date YYYY-MM-DD"),
    ("omitted", {}, "omitted-reason", "reason"),
    ("delayed", {"to": "2026-12-20", "reason": "x"}, "delayed-scope", "scope"),
    ("delayed", {"to": "soon", "scope": "all", "reason": "x"}, "delayed-to", "expected a date YYYY-MM-DD"),
    ("dose-modified", {"percent": "0", "of": "standard", "scope": "item", "reason": "x"}, None, "0 % dose"),
    ("dose-modified", {"percent": "150", "of": "standard", "scope": "item", "reason": "x"}, "dm-percent",
     "expected a number <= 100"),
    ("mrd", {"timepoint": "pre_octadad", "value": "2"}, "mrd-value", "expected a number <= 1"),
    ("counts", {}, None, "anc and/or platelets"),
    ("measurement", {"height_cm": "0", "weight_kg": "8"}, "m-height_cm", "expected a number > 0"),
    ("off-protocol", {}, "off-protocol-reason", "reason"),
    ("hsct", {}, None, "hsct"),
]


@pytest.mark.parametrize("action, fields, field_id, phrase", RECORDS,
                         ids=[f"{a}-{i}" for i, (a, *_) in enumerate(RECORDS)])
def test_recording_refusals_are_shown_beside_the_field(live: Live, action: str, fields: dict,
                                                       field_id: str | None, phrase: str) -> None:
    c = live.client("alice")
    ref, date = _item(live)
    data = {"csrftoken": c.csrf, "action": action, "date": date, "item": ref, **fields}
    if action in ("given", "omitted", "delayed", "dose-modified"):
        data["item"] = ref
    before = count(live)
    r = c.post(f"/patients/{FORM_PATIENT}/record", data=data)
    assert r.status_code == 400, r.text[:1500]
    assert "Traceback" not in r.text and "Nothing was stored" in r.text
    if field_id is None:
        assert phrase in html.unescape(r.text)
    else:
        assert phrase in error_of(r.text, field_id)
    assert count(live) == before


def test_retracting_needs_a_reason_and_signing_a_password(live: Live) -> None:
    c = live.client("alice")
    from protocol._registry import open_registry

    with open_registry(live.db) as reg:
        seq = next(e.seq for e in reg.history("INF-0001") if e.kind == "measurement" and e.live)
    before = count(live)
    r = c.post("/patients/INF-0001/retract", data={"csrftoken": c.csrf, "seq": str(seq), "reason": ""})
    assert r.status_code == 400 and "needs a reason" in error_of(r.text, f"retract-{seq}")
    assert count(live) == before
    phil = live.client("phil")
    r = phil.post(f"/entries/{seq}/sign", data={"csrftoken": phil.csrf, "password": "not the password"})
    assert r.status_code == 400 and "password is wrong" in html.unescape(r.text)


def test_a_refusal_about_the_whole_entry_is_shown_in_the_summary(live: Live) -> None:
    """A refusal that names no field of the form (an item of an element with no recorded
    start) is shown with the library's words in the form's summary, not only "see the message
    beside the field" with no message anywhere (found trying the app in Chromium)."""
    import re

    c = live.client("alice")
    page = c.get("/patients/INF-0001?days=7").text
    ref = re.search(r"item=(maintenance%3A[^\"&]+|maintenance:[^\"&]+)", page)
    assert ref, "a maintenance item in the coming week"
    item = ref.group(1).replace("%3A", ":").replace("%40", "@")
    before = count(live)
    r = c.post("/patients/INF-0001/record", data={"csrftoken": c.csrf, "action": "given", "item": item,
                                                 "date": "2026-12-01"})
    assert r.status_code == 400
    summary = html.unescape(re.search(r'<div class="error-summary" role="alert">(.*?)</div>', r.text, re.S).group(1))
    assert "maintenance has no recorded start" in summary
    assert count(live) == before
