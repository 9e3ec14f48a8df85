"""A coordinator's journey through Debian's Chromium (pytest-playwright) against the real
server: sign in, register a patient from the form, record a week of treatment (start, given,
omitted, a delay with scope all, a hold and its resumption, a dose modification signed off by
a pharmacist), import a patient file and record the MRD result that makes its HSCT decision,
download the PDF and read it back, and follow the calendar feed as the delay moves its events
in place."""

from __future__ import annotations

import datetime as dt
import io
import re

from playwright.sync_api import Page, expect

from .conftest import EXAMPLES, PASSWORDS, Live

TODAY = dt.date.today()
DIAGNOSIS = TODAY - dt.timedelta(days=3)


def sign_in(page: Page, name: str) -> None:
    page.goto("/signin")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients")


def record_item(page: Page, pid: str, ref: str) -> None:
    page.goto(f"/patients/{pid}?days=28")
    page.get_by_role("link", name=re.compile(re.escape(ref) + "$")).click()
    expect(page.get_by_role("heading", level=2)).to_contain_text(ref)


def recorded(page: Page) -> None:
    expect(page.get_by_role("status")).to_contain_text("Recorded entry #")


def feed_events(page: Page, url: str) -> dict[str, tuple[dt.date, int]]:
    import icalendar

    response = page.request.get(url)
    assert response.status == 200
    cal = icalendar.Calendar.from_ical(response.body())
    return {str(ev["UID"]): (ev.decoded("DTSTART") if isinstance(ev.decoded("DTSTART"), dt.date) else None,
                             int(ev.get("SEQUENCE", 0)))
            for ev in cal.walk("VEVENT")}


def test_the_coordinator_journey(page: Page, live: Live) -> None:
    sign_in(page, "alice")

    # Register a patient from the form (a bad value first: shown beside its field, nothing stored).
    page.get_by_role("link", name="Register a patient").click()
    form = page.get_by_role("form", name="Patient details")
    form.get_by_label("Pseudonym (id)").fill("WEB-0001")
    form.get_by_label("Protocol", exact=True).select_option("interfant06-blinatumomab")
    form.get_by_label("Date of birth").fill((TODAY - dt.timedelta(days=120)).isoformat())
    form.get_by_label("Sex").select_option("female")
    form.get_by_label("Diagnosis date", exact=True).fill(DIAGNOSIS.isoformat())
    form.get_by_label("KMT2A status").select_option("rearranged")
    form.get_by_label("WBC at diagnosis").fill("lots")
    form.get_by_label("Measured on").fill(DIAGNOSIS.isoformat())
    form.get_by_label("Height (cm)").fill("62")
    form.get_by_label("Weight (kg)").fill("6.1")
    form.get_by_role("button", name="Register").click()
    wbc = page.get_by_label("WBC at diagnosis")
    expect(wbc).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#wbc_at_diagnosis-error")).to_contain_text("expected a number")
    wbc.fill("150")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Patient WEB-0001")
    expect(page.get_by_role("status")).to_contain_text("Registered WEB-0001")
    expect(page.get_by_text("[UNVERIFIED]").first).to_be_visible()

    # Start induction on the diagnosis date, from the element's row.
    page.get_by_role("link", name="Record for element induction").click()
    started = page.get_by_role("form", name="Started")
    started.get_by_label("Date", exact=True).fill(DIAGNOSIS.isoformat())
    started.get_by_role("button", name="Record started").click()
    recorded(page)

    # Day 1 given (prefilled with the planned dose), day 2 omitted with a reason.
    record_item(page, "WEB-0001", "induction:prednisone@1")
    given = page.get_by_role("form", name="Given")
    given.get_by_label("Date given").fill(DIAGNOSIS.isoformat())
    planned = given.get_by_label(re.compile("Dose actually given")).input_value()
    assert float(planned) > 0
    given.get_by_role("button", name="Record given").click()
    recorded(page)
    record_item(page, "WEB-0001", "induction:prednisone@2")
    omitted = page.get_by_role("form", name="Omitted")
    omitted.get_by_label("Date", exact=True).fill((DIAGNOSIS + dt.timedelta(days=1)).isoformat())
    omitted.get_by_role("button", name="Record omitted").click()  # no reason: refused by the library
    expect(page.locator("#omitted-reason-error")).to_contain_text("reason")
    omitted = page.get_by_role("form", name="Omitted")
    omitted.get_by_label("Reason (required)").fill("vomiting")
    omitted.get_by_role("button", name="Record omitted").click()
    recorded(page)

    # A calendar subscription, before the delay.
    page.get_by_role("button", name="New subscription address").click()
    url = page.locator("#feed-url").inner_text()
    before = feed_events(page, url)

    # Delay today's dose by two days, moving every later date.
    record_item(page, "WEB-0001", "induction:prednisone@4")
    delayed = page.get_by_role("form", name="Delayed")
    expect(delayed.get_by_text("All later dates: everything after it")).to_be_visible()
    delayed.get_by_label("New date").fill((TODAY + dt.timedelta(days=2)).isoformat())
    delayed.get_by_label(re.compile("^All later dates")).check()
    delayed.get_by_label("Reason (required)").fill("family request")
    delayed.get_by_role("button", name="Record delay").click()
    recorded(page)
    after = feed_events(page, url)
    assert set(before) <= set(after)  # every event kept its UID: updated in place, not duplicated
    moved = [uid for uid in before if after[uid][0] and before[uid][0] and after[uid][0] > before[uid][0]]
    assert moved
    assert all(after[uid][0] - before[uid][0] == dt.timedelta(days=2) for uid in moved)
    assert all(after[uid][1] > before[uid][1] for uid in moved)

    # Hold induction and resume it.
    page.get_by_role("link", name="Record for element induction").click()
    hold = page.get_by_role("form", name="Hold")
    hold.get_by_label("Reason (required)").fill("febrile neutropenia")
    hold.get_by_role("button", name="Record hold").click()
    recorded(page)
    page.get_by_role("link", name="Record for element induction").click()
    page.get_by_role("form", name="Resumed after a hold").get_by_role("button", name="Record resumed after a hold").click()
    recorded(page)

    # A dose modification waits for a pharmacist.
    page.goto("/patients/WEB-0001?days=28")
    link = page.get_by_role("link", name=re.compile(r"induction:dexamethasone@\d+$")).first
    ref = re.search(r"induction:dexamethasone@\d+", link.get_attribute("aria-label") or "").group(0)
    link.click()
    modified = page.get_by_role("form", name="Dose modified")
    modified.get_by_label(re.compile("New dose")).fill("50")
    modified.get_by_label("Percent of").select_option("standard")
    modified.get_by_label("Applies to").select_option("item")
    modified.get_by_label("Reason (required)").fill("hyperglycaemia")
    modified.get_by_role("button", name="Record dose modification").click()
    recorded(page)
    expect(page.get_by_role("heading", name="Waiting for sign-off")).to_be_visible()
    expect(page.get_by_text(re.compile("UNSIGNED"))).to_be_visible()
    page.goto("/worklist")
    expect(page.get_by_text(re.compile(r"WEB-0001 #\d+: a dose modification"))).to_be_visible()

    # The roadmap PDF, read back.
    page.goto("/patients/WEB-0001")
    with page.expect_download() as download:
        page.get_by_role("link", name="Roadmap (PDF)").click()
    from pypdf import PdfReader

    pdf = PdfReader(io.BytesIO(open(download.value.path(), "rb").read()))
    text = "".join(p.extract_text() or "" for p in pdf.pages)
    assert "WEB-0001" in text
    # The unsigned dose modification is marked as such on the roadmap too.
    assert "awaitingverification(recordedbyaliceon" in re.sub(r"\s+", "", text)

    # Import a patient file waiting for its pre-OCTADAD MRD, and record the result that decides HSCT.
    page.goto("/patients/new")
    page.get_by_label(re.compile("Patient file")).fill((EXAMPLES / "mr-pending-mrd.yaml").read_text(encoding="utf-8"))
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Patient INF-0003")
    expect(page.get_by_role("region", name="Pending decisions")).to_contain_text("pre_octadad")
    page.get_by_role("link", name="Record a result or event").click()
    mrd = page.get_by_role("form", name="MRD result")
    mrd.get_by_label("Time point").select_option("pre_octadad")
    mrd.get_by_label("Date", exact=True).fill("2026-11-04")
    mrd.get_by_label(re.compile("MRD as a fraction")).fill("1e-3")
    mrd.get_by_role("button", name="Record MRD").click()
    recorded(page)
    expect(page.get_by_role("region", name="Pending decisions")).to_contain_text("None.")
    expect(page.get_by_role("region", name="Planned and actual")).to_contain_text("hsct")

    # Signed off by a pharmacist, with the password again.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "phil")
    page.goto("/patients/WEB-0001")
    page.get_by_label(re.compile("Your password, to sign")).fill(PASSWORDS["phil"])
    page.get_by_role("button", name="Sign: dose verified").click()
    expect(page.get_by_role("status")).to_contain_text("Signed entry #")
    page.goto("/patients/WEB-0001/history")
    expect(page.get_by_text(re.compile("dose verified: phil"))).to_be_visible()
    page.goto("/patients/WEB-0001/roadmap")
    expect(page.get_by_text(re.compile("Sign-off: dose verified by phil on")).first).to_be_visible()
    expect(page.get_by_text(re.compile("awaiting verification"))).to_have_count(0)
    assert ref
