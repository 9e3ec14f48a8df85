"""Documents: the roadmap read back (HTML parsed, Markdown), for every shipped protocol."""

from __future__ import annotations

import datetime as dt
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

import protocol
from protocol._documents import plan_table, render_roadmap, roadmap_context, templates_dir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "patients").glob("*.yaml"))
AS_OF = dt.date(2026, 11, 21)
DEFINITIONS = sorted((ROOT / "protocol" / "definitions").glob("*.yaml"))
VOID = {"meta", "br", "hr", "img", "link", "input", "col", "area", "base", "source", "wbr"}


class _Reader(HTMLParser):
    """Collects text and checks that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []
        self.sections: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.sections.append(dict(attrs).get("id") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _read(html: str) -> _Reader:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader


def _patients_for(definition: Path) -> list[Path]:
    pid = yaml.safe_load(definition.read_text())["id"]
    return [p for p in EXAMPLES if yaml.safe_load(p.read_text())["protocol"].split("@")[0] == pid]


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda p: p.stem)
def test_every_shipped_protocol_validates_plans_and_renders(definition: Path) -> None:
    proto = protocol.load_protocol(definition)
    patients = _patients_for(definition)
    assert patients, f"{definition.name}: ship at least one example patient in examples/patients/"
    for path in patients:
        plan = protocol.plan(path, proto, as_of=AS_OF)
        html = render_roadmap(plan, "html")
        reader = _read(html)
        assert not reader.errors, reader.errors[:3]
        assert not reader.stack, f"unclosed tags: {reader.stack}"
        text = " ".join(reader.text)
        for span in plan.elements:
            assert span.title in text
        assert "check against the official protocol document" in text
        md = render_roadmap(plan, "md")
        assert md.startswith("# Treatment roadmap")
        for span in plan.elements:
            assert span.title in md


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_roadmap_shows_every_dated_item_and_marks_placeholders(path: Path) -> None:
    plan = protocol.plan(path, as_of=AS_OF)
    html = render_roadmap(plan, "html")
    reader = _read(html)
    text = " ".join(reader.text)
    # One section per element occurrence (plus the unverified appendix).
    assert len(reader.sections) == len(plan.elements) + 1
    # Every date with an item in a grid appears (long daily runs show their first and last day).
    ctx = roadmap_context(plan)
    shown = {row.date for s in ctx["sections"] for row in s.grid}
    for row in (r for s in ctx["sections"] for r in s.grid if r.until):  # a folded weekly row
        day = dt.date.fromisoformat(row.date)
        while day.isoformat() <= row.until:
            shown.add(day.isoformat())
            day += dt.timedelta(days=7)
    for item in plan.items:
        same_drug = [i.ordinal for i in plan.items if i.slot is item.slot and i.branch == item.branch]
        is_run = len(same_drug) > 8 and same_drug[-1] - same_drug[0] + 1 == len(same_drug)
        if not is_run or item.ordinal in (same_drug[0], same_drug[-1]):
            assert item.date.isoformat() in shown, (item.name, item.date)
    # Placeholders: the legend, an inline mark per unverified value, and the appendix listing all.
    assert html.count('class="unverified"') > 10
    assert f"Unverified values in {plan.protocol.id}" in text
    for row in ctx["placeholders"]:
        assert row["label"] in text
    assert len(ctx["placeholders"]) == protocol._loading.evidence_counts(plan.protocol)["placeholder"]


def test_pending_decision_is_shown_with_both_branches() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-pending-mrd.yaml", as_of=AS_OF)
    html = render_roadmap(plan, "html")
    assert "waits for mrd:pre_octadad" in html
    assert "pre_octadad→hsct" in html and "pre_octadad→octadad" in html
    assert html.count("Pending decision.") == 3  # hsct, octadad, maintenance on the branches


def test_roadmap_is_reproducible_with_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF)
    first = render_roadmap(plan, "html")
    second = render_roadmap(protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF), "html")
    assert first == second
    assert "generated 2026-09-21 14:13 UTC" in first  # 1,790,000,000 s after the Unix epoch


def test_templates_can_be_overridden(tmp_path: Path) -> None:
    (tmp_path / "roadmap.md.j2").write_text("SITE {{ patient.id }} {{ protocol.version }}\n", encoding="utf-8")
    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF)
    assert render_roadmap(plan, "md", templates=tmp_path) == "SITE INF-0002 1.0.0\n"
    # Files the folder does not override still come from the built-in templates.
    assert "Treatment roadmap" in render_roadmap(plan, "html", templates=tmp_path)
    with pytest.raises(protocol.InputError, match="expected a folder of templates"):
        render_roadmap(plan, "md", templates=tmp_path / "missing")
    with pytest.raises(protocol.InputError, match="expected one of html, md"):
        render_roadmap(plan, "pdf")


def test_html_escapes_text_from_definitions(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "protocol/definitions/interfant06-blinatumomab.yaml").read_text())
    data["elements"][0]["notes"] = ["<script>alert(1)</script> & dose"]
    path = tmp_path / "escaped.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", protocol.load_protocol(path), as_of=AS_OF)
    html = render_roadmap(plan, "html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; dose" in html


def test_day_grid_prints_calculated_dose_and_blank_for_given() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    ctx = roadmap_context(plan)
    induction = next(s for s in ctx["sections"] if s.id == "induction")
    first = induction.grid[0]
    assert first.date == "2026-05-04" and first.element_day == 1 and first.study_day == 1
    prednisone = induction.columns.index("Prednisone (prephase)")
    # 60 mg/m²/day × 0.368330 m² (66 cm, 7.4 kg) = 22.0998; the 60 is a placeholder, so the cell is marked.
    assert first.cells[prednisone][:2] == ("22.1 mg/day", True)
    assert induction.next_row == "Day 36 (2026-06-08): begin next element"
    maintenance = next(s for s in ctx["sections"] if s.id == "maintenance")
    mp = maintenance.columns.index("Mercaptopurine (6-MP)")
    assert maintenance.grid[0].cells[mp][0].endswith("start, daily to 2028-04-30")
    assert "given: ______" in render_roadmap(plan, "html")


def test_roadmap_render_time_is_within_budget() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    render_roadmap(plan, "html")  # compiles the template once
    times = []
    for _ in range(5):
        start = time.perf_counter()
        render_roadmap(plan, "html")
        times.append(time.perf_counter() - start)
    median = sorted(times)[2]
    print(f"HTML roadmap render: {median * 1000:.1f} ms (budget 30 ms on the dev machine)")
    assert median < 0.25  # loose: CI machines are noisy; bench/bench.py checks the real budget


def test_plan_table_lists_items_and_flags_unverified() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-pending-mrd.yaml", as_of=AS_OF)
    text = plan_table(plan, width=200)
    assert "PENDING decision pre_octadad" in text
    assert "→ octadad otherwise" in text
    assert "UNVERIFIED" in text
    assert text.count("\n") > len(plan.items)


def test_builtin_templates_are_found() -> None:
    assert (templates_dir() / "roadmap.html.j2").is_file()
    assert (templates_dir() / "roadmap.md.j2").is_file()


def test_every_printed_dose_from_a_placeholder_is_marked() -> None:
    """A coordinator reading only the day grid must still see that a dose is unverified."""
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    ctx = roadmap_context(plan)
    blinatumomab = next(s for s in ctx["sections"] if s.id == "blinatumomab")
    column = blinatumomab.columns.index("Blinatumomab")
    # Blinatumomab 15 µg/m²/day on days 1-28 is published: its cells are not marked.
    assert {cell[1] for row in blinatumomab.grid for cell in [row.cells[column]] if cell[0]} == {False}
    for section in ctx["sections"]:
        for row in section.grid:
            for name, (text, unverified, *_) in zip(section.columns, row.cells, strict=True):
                slot = next(s for s in plan.protocol.elements[section.id].slots if s.name == name)
                if text and slot.evidence == "placeholder":  # a date after a placeholder length marks more
                    assert unverified, (section.id, name, text)
    html = render_roadmap(plan, "html")
    assert "22.1 mg/day <span class=\"unverified\">⚠ unverified</span>" in html
    assert "22.1 mg/day ⚠" in render_roadmap(plan, "md")


# --------------------------------------------------------------------------- pictures, PDF, validators

import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
import zlib  # noqa: E402

from protocol._documents import pathway_svg, render_pdf, timeline_svg  # noqa: E402

IN_CI = bool(os.environ.get("CI"))
EPOCH = "1790000000"  # 2026-09-21 14:13 UTC
STAMP = "2026-09-21 14:13 UTC"
VNU = ROOT / ".ci" / "node" / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
SVG = "{http://www.w3.org/2000/svg}"


def _tool_missing(what: str) -> None:
    """Skip on a developer machine without the tool; in CI (CI=true) a missing tool fails."""
    if IN_CI:
        pytest.fail(f"{what} is missing: .ci/run must install it")
    pytest.skip(f"{what} is not installed (.ci/run installs it)")


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # an independent XML parser: the picture is well-formed SVG


def test_pathway_shows_the_branch_taken_and_the_branch_not_taken() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    root = _svg(pathway_svg(plan))
    nodes = {g.findtext(f"{SVG}title"): (g.get("class") or "").split()[-1] for g in root.iter(f"{SVG}g")}
    by_id = {plan.protocol.elements[e].title: e for e in plan.protocol.elements}
    states = {by_id[title]: state for title, state in nodes.items() if title in by_id}
    assert set(states) == set(plan.protocol.elements), "every element of the protocol is drawn"
    assert states["induction"] == "completed" and states["octadad"] == "in_progress"
    assert states["maintenance"] == "planned" and states["hsct"] == "not_taken"
    edges = [t.text for t in root.iter(f"{SVG}title") if t.text and "→" in t.text]
    assert "marma → octadad: taken" in edges and "marma → hsct: not taken" in edges
    assert len(list(root.iter(f"{SVG}polygon"))) == 1  # one decision point: pre_octadad


def test_pathway_of_a_pending_decision_marks_both_branches_pending() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-pending-mrd.yaml", as_of=AS_OF)
    root = _svg(pathway_svg(plan))
    texts = [t.text for t in root.iter(f"{SVG}title") if t.text]
    assert "marma → hsct: pending" in texts and "marma → octadad: pending" in texts
    assert any(t.startswith("decision pre_octadad: pending") for t in texts)


def test_timeline_draws_planned_and_actual_bars() -> None:
    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF)
    root = _svg(timeline_svg(plan))
    groups = [g for g in root.iter(f"{SVG}g")]
    assert len(groups) == len(plan.elements)
    blina = next(g for g in groups if g.findtext(f"{SVG}title", "").startswith("Blinatumomab"))
    planned, actual = [r for r in blina.iter(f"{SVG}rect")]
    # Blinatumomab started 3 days late: the actual bar starts to the right of the planned one.
    assert float(actual.get("x")) > float(planned.get("x"))
    assert "actual 2026-08-27" in blina.findtext(f"{SVG}title")
    assert any(t.text == f"as of {AS_OF.isoformat()}" for t in root.iter(f"{SVG}text"))


def test_cover_and_sections_follow_the_therapy_delivery_map() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-pending-mrd.yaml", as_of=AS_OF)
    html = render_roadmap(plan, "html")
    cover = html[html.index('<header class="cover">'):html.index("</header>")]
    for text in ("INF-0003", "2025-12-01", "2026-06-15", "interfant06-blinatumomab 1.0.0", "Risk group: MR",
                 "measured 2026-09-14", '<svg xmlns="http://www.w3.org/2000/svg" class="pathway"',
                 'class="timeline"'):
        assert text in cover, text
    for head in ("Drug", "Route", "Dosage", "Calculated dose", "Days", "Important notes", "Observations",
                 "Date due", "Date given", "Study day", "Studies due", "Comments"):
        assert f"<th>{head}" in html, head
    # MARMA's grid ends with the decision, then "begin next element".
    marma = html[html.index('id="marma"'):html.index("</section>", html.index('id="marma"'))]
    assert "Decision pre_octadad (PENDING: waits for mrd:pre_octadad)" in marma
    assert marma.index("Decision pre_octadad (PENDING") < marma.index("begin next element")
    assert "a. Bone marrow MRD before OCTADAD" in marma  # observation letter cited in "Studies due"


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[protocol.Plan, bytes]]:
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        out = {}
        for name in ("mr-pending-mrd",):  # every element, both branches of a pending decision
            plan = protocol.plan(ROOT / f"examples/patients/{name}.yaml", as_of=AS_OF)
            out[name] = (plan, render_pdf(plan))
        return out
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH")
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def _pages(data: bytes) -> list[str]:
    import io

    import pypdf

    return [page.extract_text() or "" for page in pypdf.PdfReader(io.BytesIO(data)).pages]


@pytest.mark.parametrize("name", ["mr-pending-mrd"])
def test_pdf_reads_back_with_every_element_and_dated_item(pdfs: dict[str, tuple[protocol.Plan, bytes]],
                                                          name: str) -> None:
    plan, data = pdfs[name]
    assert data.startswith(b"%PDF-")
    pages = _pages(data)
    text = "\n".join(pages)
    flat = re.sub(r"\s+", " ", text)
    for span in plan.elements:
        assert span.title in flat, span.title
    # Every dated item of the day grids (long daily runs: first and last day) is printed.
    ctx = roadmap_context(plan)
    for section in ctx["sections"]:
        for row in section.grid:
            assert row.date in flat, (section.id, row.date)
    # Each element starts on a new page: its title is the first thing on a page.
    for section in ctx["sections"]:
        title = section.title + (f" (if {section.branch})" if section.branch else "")
        assert any(re.sub(r"\s+", " ", p).split("born ")[-1].lstrip("0123456789- ").startswith(title[:30])
                   or re.sub(r"\s+", " ", p).find(title[:30]) < 120 and title[:30] in p for p in pages), title
    # Page count: the cover, at least one page per element, the unverified list; every footer
    # says which page of how many, and agrees with the file.
    assert len(pages) >= len(plan.elements) + 2
    for n, page in enumerate(pages, start=1):
        assert f"page {n} of {len(pages)}" in page, n
        assert "Check against the official protocol document" in page
        assert f"interfant06-blinatumomab {plan.protocol.version}" in page and STAMP in page
        assert f"Patient {plan.patient.id}" in page
    # Placeholders are marked where they are printed, with the legend and the list at the end.
    assert flat.count("⚠ unverified") > 20
    assert "unverified = placeholder value" in flat
    assert f"Unverified values in interfant06-blinatumomab {plan.protocol.version}" in flat


def test_pdf_has_a_bookmark_per_element_in_page_order(pdfs: dict[str, tuple[protocol.Plan, bytes]]) -> None:
    import io

    import pypdf

    plan, data = pdfs["mr-pending-mrd"]
    reader = pypdf.PdfReader(io.BytesIO(data))

    def flatten(items: list) -> list:
        out = []
        for it in items:
            out.extend(flatten(it) if isinstance(it, list) else [it])
        return out

    marks = {m.title: reader.get_destination_page_number(m) for m in flatten(reader.outline)}
    expected = [s.title + (f" (if {s.branch})" if s.branch else "") for s in plan.elements]
    assert all(t in marks for t in expected), sorted(marks)
    pages = [marks[t] for t in expected]
    assert pages == sorted(pages) and len(set(pages)) == len(pages)  # each on its own page, in order
    assert marks[f"Unverified values in interfant06-blinatumomab {plan.protocol.version}"] > pages[-1]


def test_pdf_is_byte_identical_with_source_date_epoch_and_takes_a_site_page_template(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import pypdf

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    page = (templates_dir() / "roadmap.page.typ.j2").read_text(encoding="utf-8")
    (tmp_path / "roadmap.page.typ.j2").write_text(page.replace("h(1fr)\n    if current", "h(1fr)\n    [SITE BRANDING]\n"
                                                               "    if current", 1), encoding="utf-8")
    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF)
    first = render_pdf(plan, templates=tmp_path)
    second = render_pdf(protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF), templates=tmp_path)
    assert first == second
    meta = pypdf.PdfReader(io.BytesIO(first)).metadata
    assert meta["/CreationDate"] == meta["/ModDate"] == "D:20260921141320Z"  # from SOURCE_DATE_EPOCH
    assert meta["/Title"].startswith("Roadmap INF-0002")
    pages = _pages(first)
    assert all("SITE BRANDING" in p for p in pages)  # the folder's page template replaced the built-in one
    assert "Allogeneic stem-cell transplant (HSCT)" in "".join(pages)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(EPOCH) + 60))
    assert render_pdf(plan, templates=tmp_path) != first  # the stamp is in the bytes: they are not fixed by accident


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_pdf_shows_the_same_items_doses_and_marks_as_the_html(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    plan = protocol.plan(_recorded_patient(tmp_path), as_of=AS_OF)
    html_text = _squash(" ".join(_read(render_roadmap(plan, "html")).text))
    pdf_text = _squash("\n".join(_pages(render_pdf(plan))))
    ctx = roadmap_context(plan)
    for section in ctx["sections"]:
        for row in section.grid:
            for text in (row.date, row.moved_from, row.date_given, row.repeat, row.comment, row.studies,
                         *(c.text for c in row.cells), *(f for c in row.cells for f in (c.given_date, c.given_dose, c.reason))):
                assert _squash(text) in html_text and _squash(text) in pdf_text, (section.id, text)
        for d in section.drugs:
            for text in (d.drug, d.dosage, d.calculated, d.days):
                assert _squash(text) in html_text and _squash(text) in pdf_text, (section.id, text)
        count = _squash(f"{section.unverified_values} of the {section.values} values on this element's page(s)")
        assert count in html_text and count in pdf_text
        for m in section.measures:
            assert _squash(f"BSA {m.bsa} m²") in pdf_text and _squash(f"measured on {m.date}") in pdf_text
        for r in (*section.records, *section.deviations):
            assert _squash(r.text) in pdf_text
    # The same number of marks, item for item, and the same recorded words.
    for mark in ("⚠unverified", "⚠", "givenonnotrecorded", "given:notrecorded", "omitted:", "delayed,wasdue"):
        assert html_text.count(mark) == pdf_text.count(mark), mark
    assert pdf_text.count("⚠unverified") > 100
    assert "given2026-05-04:22mg" in pdf_text


def test_typst_escapes_every_text_from_definitions_and_patients(tmp_path: Path) -> None:
    """Typst's markup and code characters in a definition's text print as typed."""
    import typst

    from protocol._documents import render_typst

    hostile = 'x #strike[y] *b* _i_ $m$ @ref <l> // c \\ "q" `r` \u0007 = h'
    data = yaml.safe_load((ROOT / "protocol/definitions/interfant06-blinatumomab.yaml").read_text())
    data["elements"][0]["notes"] = [hostile, '#eval("1+1")', "- 1. + not a list"]
    data["title"] = '#panic("no")'
    path = tmp_path / "escaped.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", protocol.load_protocol(path), as_of=AS_OF)
    source = render_typst(plan)
    assert "#strike[y]" not in source.replace('#strike[y] *b*', "")  # only inside a string literal
    text = re.sub(r"[\x00-\x1f]", "", _squash("".join(_pages(typst.compile(source.encode("utf-8"))))))
    for s in (hostile.replace("\u0007", ""), '#eval("1+1")', "- 1. + not a list", '#panic("no")'):
        assert _squash(s) in text, s


def test_pdf_engine_weasyprint_is_still_available() -> None:
    try:
        import weasyprint  # noqa: F401
    except ImportError:
        pytest.skip("weasyprint is optional (pip install weasyprint)")
    except OSError:  # pragma: no cover - the Pango library is missing
        pytest.skip("the Pango library is missing")
    plan = protocol.plan(ROOT / "examples/patients/interfant06-lr-germline.yaml", as_of=AS_OF)
    data = render_pdf(plan, engine="weasyprint")
    assert data.startswith(b"%PDF-") and "Unverified values" in "".join(_pages(data))
    with pytest.raises(protocol.InputError, match="expected one of typst, weasyprint"):
        render_pdf(plan, engine="latex")


def test_html_passes_the_nu_html_checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = shutil.which("java")
    if java is None:
        _tool_missing("java")
    if not VNU.is_file():
        _tool_missing(f"the Nu HTML Checker ({VNU.relative_to(ROOT)})")
    files = []
    for path in EXAMPLES:
        plan = protocol.plan(path, as_of=AS_OF)
        out = tmp_path / f"{path.stem}.html"
        out.write_text(render_roadmap(plan, "html"), encoding="utf-8")
        files.append(str(out))
    done = subprocess.run([java, "-jar", str(VNU), "--errors-only", "--format", "json", *files],
                          capture_output=True, text=True, timeout=180)
    import json

    messages = json.loads(done.stderr or done.stdout or '{"messages": []}')["messages"]
    errors = [f"{m.get('url', '').rsplit('/', 1)[-1]}:{m.get('lastLine')}: {m.get('message')}"
              for m in messages if m.get("type") == "error" or m.get("subType") == "fatal"]
    assert not errors, errors[:5]
    assert done.returncode == 0


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG with zlib alone: (width, height, unfiltered rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line[k] for k in range(stride) if k % bpp < 3))
        prev = line
    return width, height, rows


def test_html_renders_in_headless_chromium_to_a_non_blank_png(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _tool_missing("chromium")
    plan = protocol.plan(ROOT / "examples/patients/mr-pending-mrd.yaml", as_of=AS_OF)
    page = tmp_path / "roadmap.html"
    page.write_text(render_roadmap(plan, "html"), encoding="utf-8")
    png = tmp_path / "roadmap.png"
    profile = tmp_path / "profile"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={profile}", "--window-size=1100,900", f"--screenshot={png}",
                    page.as_uri()], capture_output=True, timeout=120, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    width, height, rows = _png_pixels(png.read_bytes())
    assert (width, height) == (1100, 900)
    pixels = [row[i:i + 3] for row in rows[::3] for i in range(0, len(row), 9)]
    dark = sum(1 for p in pixels if sum(p) < 200)  # text and lines
    coloured = {p for p in pixels if max(p) - min(p) > 40}  # the pathway's state colours
    assert dark / len(pixels) > 0.01, "the page is blank"
    assert len(set(pixels)) > 20 and coloured, "no pictures or colours rendered"


def test_plan_table_shows_whole_refs_notes_and_deviations() -> None:
    # The table is where a coordinator finds the ref to record an event: it must be whole.
    from protocol._documents import plan_table

    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF)
    text = plan_table(plan, width=120)
    assert "deviation 2026-09-24 overdue: Bone marrow MRD (after 4 weeks of blinatumomab)" in text
    for item in plan.items:
        assert item.ref in text


def _recorded_patient(tmp_path: Path) -> Path:
    """mr-on-time with facts recorded: a dose given, one omitted, one delayed, a hold and a
    re-weighing in OCTADAD that changes the doses mid-element."""
    data = yaml.safe_load((ROOT / "examples/patients/mr-on-time.yaml").read_text(encoding="utf-8"))
    data["measurements"].append({"date": "2026-10-12", "height_cm": 70, "weight_kg": 9.5})
    data["events"] += [
        {"type": "item_given", "item": "induction:prednisone@1", "date": "2026-05-04", "dose": 22},
        {"type": "item_omitted", "item": "induction:daunorubicin@9", "date": "2026-05-12",
         "reason": "echo <pending> & EF 48 %"},
        {"type": "item_delayed", "item": "induction:vincristine@15", "date": "2026-05-18", "to": "2026-05-20",
         "scope": "item", "reason": "constipation"},
        {"type": "element_held", "element": "octadad", "date": "2026-10-01", "reason": "febrile neutropenia"},
        {"type": "element_resumed", "element": "octadad", "date": "2026-10-05"},
    ]
    path = tmp_path / "recorded.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_roadmap_is_the_record_of_what_was_given_omitted_delayed_and_held(tmp_path: Path) -> None:
    plan = protocol.plan(_recorded_patient(tmp_path), as_of=AS_OF)
    ctx = roadmap_context(plan)
    induction = next(s for s in ctx["sections"] if s.id == "induction")
    col = induction.columns.index
    day1 = next(r for r in induction.grid if r.element_day == 1)
    given = day1.cells[col("Prednisone (prephase)")]
    assert (given.state, given.given_date, given.given_dose) == ("given", "2026-05-04", "22 mg")
    assert day1.date_given == "2026-05-04" and "given on" not in day1.comment
    day9 = next(r for r in induction.grid if r.element_day == 9)
    omitted = day9.cells[col("Daunorubicin")]
    assert (omitted.state, omitted.reason) == ("omitted", "echo <pending> & EF 48 %")
    # Never recorded, in a completed element: "not recorded", never "done".
    day2 = next(r for r in induction.grid if r.element_day == 2)
    assert day2.cells[col("Prednisone (prephase)")].state == "not_recorded"
    # The delayed item is its own row, with its day number and the date it was due.
    delayed = [r for r in induction.grid if r.element_day == 15]
    moved = next(r for r in delayed if r.cells[col("Vincristine")].text)
    assert (moved.date, moved.moved_from) == ("2026-05-20", "2026-05-18")
    assert all(r.element_day != 15 for r in induction.grid if r.date == "2026-05-20" and r is not moved)
    # Holds with their dates and reasons; the re-weighing mid-element changes the doses.
    octadad = next(s for s in ctx["sections"] if s.id == "octadad")
    assert ("2026-10-01", "on hold", "febrile neutropenia") in octadad.records
    assert [m.date for m in octadad.measures] == ["2026-09-21", "2026-10-12"]
    assert octadad.measures[1].weight_kg == "9.5"
    assert 0 < octadad.unverified_values <= octadad.values
    # Deviations on the element page and on the cover.
    assert [d.kind for d in octadad.deviations] == ["weight change"]
    assert [d.date for d in ctx["deviations"]] == ["2026-10-12"] and "(octadad)" in ctx["deviations"][0].text
    html = render_roadmap(plan, "html")
    dauno = next(i for i in plan.items if i.ref == "induction:daunorubicin@9").dose.short_text
    assert f"<s>{dauno}</s>" in html and "echo &lt;pending&gt; &amp; EF 48 %" in html
    assert "given 2026-05-04: 22 mg" in html and "not recorded" in html
    assert "febrile neutropenia" in html and "Re-weighed: doses from" in html
    assert f"{induction.unverified_values} of the {induction.values} values on this element" in html
    assert "last recorded measurement" not in html
    cover = html[:html.index('<section class="element"')]
    assert "<h3>Deviations</h3>" in cover and "+14% from the 8.3 kg" in cover
    md = render_roadmap(plan, "md")
    assert f"~~{dauno}~~" in md and "OMITTED: echo <pending> & EF 48 %" in md
    assert "given 2026-05-04: 22 mg" in md and "(delayed, was due 2026-05-18)" in md


def test_identical_weekly_rows_fold_into_one_row_with_its_repeat() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    maintenance = next(s for s in roadmap_context(plan)["sections"] if s.id == "maintenance")
    folded = [r for r in maintenance.grid if r.repeat]
    assert folded and folded[0].repeat.startswith("weekly × ")
    weekly = [i for i in plan.items if i.slot.element == "maintenance" and i.slot.name == "Methotrexate (oral)"]
    assert folded[0].date == weekly[1].date.isoformat() and folded[0].until == weekly[-1].date.isoformat()
    assert len(maintenance.grid) < 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_pathway_wraps_element_names_and_cuts_none(path: Path) -> None:
    plan = protocol.plan(path, as_of=AS_OF)
    names = [t.text or "" for t in _svg(pathway_svg(plan)).iter(f"{SVG}text") if t.get("font-weight") == "bold"]
    assert names and not [n for n in names if n.endswith("…")], names


def test_the_cover_gives_the_cumulative_anthracycline_marked_unverified() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    ctx = roadmap_context(plan)
    assert ctx["anthracycline"][0] == {"text": "Daunorubicin: planned 180 mg/m², given 0 mg/m² (factor not known)",
                                       "unverified": True}
    html = render_roadmap(plan, "html")
    assert ("Daunorubicin: planned 180 mg/m², given 0 mg/m² (factor not known) <span class=\"unverified\">⚠ "
            "unverified</span>") in html
    assert "Doxorubicin equivalent: not computable" in render_roadmap(plan, "md")
    aall = protocol.plan(ROOT / "examples/patients/aall1731-sr-average.yaml", as_of=AS_OF)
    assert roadmap_context(aall)["anthracycline"] == []


def test_markdown_roadmap_keeps_the_administration_notes() -> None:
    """Issue 11: the Markdown roadmap dropped the notes ("Do not flush the line ...")."""
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    md = render_roadmap(plan, "md")
    assert "Do not flush the line when changing bags" in md
    for section in roadmap_context(plan)["sections"]:
        for note in section.notes:
            assert note in md


# --------------------------------------------------------------------------- PDF layout, read back

_ROW_DATE = re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+\d{4}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def layouts() -> dict[str, list[str]]:
    """The page texts of the roadmaps of three patients at different stages (issue 12)."""
    return {name: _pages(render_pdf(protocol.plan(ROOT / f"examples/patients/{name}.yaml", as_of=AS_OF)))
            for name in ("mr-on-time", "hr-to-hsct", "mr-pending-mrd")}


@pytest.mark.parametrize("name", ["mr-on-time", "hr-to-hsct", "mr-pending-mrd"])
def test_the_cover_is_one_page_with_the_timeline_and_the_pathway(layouts: dict[str, list[str]], name: str) -> None:
    cover = layouts[name][0]
    assert "Treatment roadmap" in cover and "Risk group:" in cover
    assert "Timeline: planned dates" in cover and "Pathway: the protocol's elements" in cover
    # The decisions and elements tables follow whole (a heading never ends a page without its table).
    for page in layouts[name]:
        for heading, body in (("Decisions", "Decision At the end of"), ("Elements", "Element Planned start")):
            lines = [line.strip() for line in page.splitlines()]
            if heading in lines:
                assert body in " ".join(lines[lines.index(heading):lines.index(heading) + 3]), (name, heading)


@pytest.mark.parametrize("name", ["mr-on-time", "hr-to-hsct", "mr-pending-mrd"])
def test_no_page_holds_a_lone_row_or_a_lone_decision(layouts: dict[str, list[str]], name: str) -> None:
    grid_pages = 0
    for n, page in enumerate(layouts[name]):
        if "Date due" not in page:
            continue
        grid_pages += 1
        rows = len(_ROW_DATE.findall(page))
        ends = "begin next element" in page or "end of therapy" in page or "at the end of this element" in page
        if ends:
            # The end of an element's grid keeps its last rows (up to 3) and its decision with it.
            assert rows >= 2 or page.count("Date due") == 1 and "calculated" in page and rows >= 1, (name, n + 1, rows)
        if "at the end of this element (" in page:
            assert rows >= 1 and "begin next element" in page or "end of therapy" in page, (name, n + 1)
    assert grid_pages >= 3


@pytest.mark.parametrize("name", ["mr-on-time", "hr-to-hsct"])
def test_the_unverified_mark_is_never_split_across_lines(layouts: dict[str, list[str]], name: str) -> None:
    text = "\n".join(layouts[name])
    assert text.count("⚠ unverified") > 50
    assert not re.search(r"⚠\s*\n\s*unverified", text)
    assert not re.search(r"unveri\s*\n", text)


def test_timeline_names_are_wrapped_never_cut() -> None:
    plan = protocol.plan(ROOT / "examples/patients/hr-to-hsct.yaml", as_of=AS_OF)
    for width in (1000, 600):
        svg = timeline_svg(plan, width)
        assert "…" not in svg
        words = " ".join(re.findall(r"<tspan[^>]*>([^<]*)</tspan>", svg))
        assert "Allogeneic stem-cell transplant" in words


# --------------------------------------------------------------------------- sign-off on the roadmap


@pytest.fixture()
def signed_registry(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A registry with INF-0001 (mr-on-time) and three dose-critical entries recorded by alice:
    a dose modification waiting for sign-off, a given dose that differs from the plan signed
    by phil, and a dose modification corrected (retracted) before sign-off."""
    from protocol._access import Actor, Scoped
    from protocol._auth import add_site, add_user
    from protocol._registry import open_registry

    db = tmp_path / "r.db"
    alice = Actor("alice", "coordinator", frozenset({"site-a"}))
    phil = Actor("phil", "pharmacist", frozenset({"site-a"}))
    with open_registry(db, create=True) as reg:
        add_site(reg, "site-a")
        add_user(reg, "alice", "coordinator", ["site-a"], "coordinator pass phrase")
        add_user(reg, "phil", "pharmacist", ["site-a"], "pharmacist pass phrase")
        reg.add_patient(ROOT / "examples/patients/mr-on-time.yaml", by="alice", site="site-a")
        scoped = Scoped(reg, alice)
        plan = scoped.plan("INF-0001")
        running = {e.id for e in plan.elements if e.actual_start is not None}
        doses = [i for i in plan.items if i.dose is not None and i.dose.amount and i.status == "planned"]
        modified, retracted = doses[-1], doses[-2]
        given = next(i for i in plan.items if i.element in running and i.dose is not None and i.dose.amount
                     and i.status not in ("given", "omitted") and i.date <= reg.today())

        def modify(item: Any) -> Any:
            return scoped.record("INF-0001", "event", {"type": "dose_modified", "item": item.ref,
                                                       "date": reg.today().isoformat(), "percent": 50, "of": "standard",
                                                       "scope": "item", "reason": "liver toxicity"})

        waiting = modify(modified)
        gone = modify(retracted)
        scoped.retract("INF-0001", gone.seq, reason="wrong item")
        other = scoped.record("INF-0001", "event", {"type": "item_given", "item": given.ref,
                                                    "date": given.date.isoformat(),
                                                    "dose": round(given.dose.amount * 0.8, 3)})
        signature = Scoped(reg, phil).sign(other.seq, "pharmacist pass phrase")
    return db, {"waiting": waiting, "modified": modified, "given": given, "other": other, "signature": signature,
                "retracted": retracted, "gone": gone}


def test_the_roadmap_shows_each_dose_critical_entrys_sign_off_beside_the_value_and_on_the_cover(
        signed_registry: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``protocol roadmap ID --db`` (HTML and PDF) prints "awaiting verification (recorded by
    alice on ...)" in the day-grid cell of the modified dose and "dose verified by phil on ..."
    in the cell of the signed given dose, and lists both on the cover; the entry corrected
    before sign-off is not listed."""
    from typer.testing import CliRunner

    from protocol._cli import app
    from protocol._registry import open_registry
    from protocol._signoff import marks

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    db, made = signed_registry
    with open_registry(db) as reg:
        found = marks(reg, "INF-0001")
    assert [m.entry for m in found] == [made["waiting"].seq, made["other"].seq]  # the retracted one is gone
    stamp = made["waiting"].recorded_at
    waits = f"awaiting verification (recorded by alice on {stamp[:10]} {stamp[11:16]} UTC)"
    signed_at = made["signature"].signed_at
    verified = f"dose verified by phil on {signed_at[:10]} {signed_at[11:16]} UTC"
    assert [m.text for m in found] == [waits, verified]

    runner = CliRunner()
    for out in ("r.html", "r.pdf", "r.md"):
        result = runner.invoke(app, ["roadmap", "INF-0001", "--db", str(db), "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert not _read(html).errors
    # In the day grid, inside the cell of the value each entry changed.
    cells = re.findall(r"<td>(.*?)</td>", html, flags=re.S)
    modified = made["modified"]
    holding = [c for c in cells if waits in c]
    assert len(holding) == 1 and f'<span class="signoff awaiting">Sign-off: {waits}</span>' in holding[0]
    assert modified.ref.split(":")[0] in html
    given_cell = [c for c in cells if verified in c]
    assert len(given_cell) == 1 and "given " + made["given"].date.isoformat() in given_cell[0]
    assert f'<span class="signoff">Sign-off: {verified}</span>' in given_cell[0]
    # On the cover's list, with the count still waiting.
    cover = html[:html.index('<section class="element"')]
    assert "<h3>Sign-off of dose-critical entries</h3>" in cover
    assert "1 of 2 awaiting a second person's sign-off" in cover
    assert f"#{made['waiting'].seq} {made['waiting'].data['date']} a dose modification ({modified.ref}): " \
           f'<span class="signoff awaiting">{waits}</span>' in cover
    assert f"({made['given'].ref}): <span class=\"signoff\">{verified}</span>" in cover
    assert f"({made['retracted'].ref})" not in cover
    # The PDF reads back with the same words, in the grid and on page 1.
    pages = _pages((tmp_path / "r.pdf").read_bytes())
    flat = _squash("".join(pages))
    assert flat.count(_squash(f"Sign-off: {waits}")) == 1 and flat.count(_squash(f"Sign-off: {verified}")) == 1
    first = _squash(pages[0])
    assert _squash("Sign-off of dose-critical entries") in first and _squash("1 of 2 awaiting") in first
    assert _squash(f"a dose modification ({modified.ref}): {waits}") in first
    assert _squash(f"({made['given'].ref}): {verified}") in first
    given_page = next(p for p in pages if _squash(f"Sign-off: {verified}") in _squash(p))
    assert _squash(f"given {made['given'].date.isoformat()}") in _squash(given_page)
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert f"sign-off: **{waits}**" in md and f"sign-off: {verified}" in md


def test_a_patient_file_roadmap_has_no_sign_off_section() -> None:
    plan = protocol.plan(ROOT / "examples/patients/mr-on-time.yaml", as_of=AS_OF)
    html = render_roadmap(plan, "html")
    assert "Sign-off" not in html and roadmap_context(plan)["signoffs"] == []


def test_the_web_roadmap_shows_the_same_sign_off(signed_registry: tuple[Path, dict[str, Any]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``/patients/{id}/roadmap`` and ``roadmap.pdf`` pass the same sign-off state as the command line."""
    import asyncio

    import httpx

    from protocol.web import create_app

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    db, made = signed_registry
    app = create_app(db)

    async def fetch() -> tuple[str, bytes]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            token = re.search(r'name="csrftoken" value="([^"]+)"', (await c.get("/signin")).text).group(1)
            r = await c.post("/signin", data={"csrftoken": token, "name": "alice",
                                              "password": "coordinator pass phrase"})
            assert r.status_code == 303, r.text
            html = await c.get("/patients/INF-0001/roadmap")
            pdf = await c.get("/patients/INF-0001/roadmap.pdf")
            assert html.status_code == pdf.status_code == 200
            return html.text, pdf.content

    # In a thread of its own: a browser test earlier in the session (Playwright's sync API)
    # leaves an event loop running in this one.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        html, pdf = pool.submit(asyncio.run, fetch()).result()
    stamp = made["waiting"].recorded_at
    waits = f"awaiting verification (recorded by alice on {stamp[:10]} {stamp[11:16]} UTC)"
    verified = f"dose verified by phil on {made['signature'].signed_at[:10]}"
    assert f'<span class="signoff awaiting">Sign-off: {waits}</span>' in html and verified in html
    flat = _squash("".join(_pages(pdf)))
    assert _squash(f"Sign-off: {waits}") in flat and _squash(verified) in flat
