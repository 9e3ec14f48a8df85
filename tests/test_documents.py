"""Documents: the roadmap read back (HTML parsed, Markdown), for every shipped protocol."""

from __future__ import annotations

import datetime as dt
import time
from html.parser import HTMLParser
from pathlib import Path

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
    for item in plan.items:
        same_drug = [i.ordinal for i in plan.items if i.slot is item.slot and i.branch == item.branch]
        is_run = len(same_drug) > 8 and same_drug[-1] - same_drug[0] + 1 == len(same_drug)
        if not is_run or item.ordinal in (same_drug[0], same_drug[-1]):
            assert item.date.isoformat() in shown, (item.name, item.date)
    # Placeholders: the legend, an inline mark per unverified value, and the appendix listing all.
    assert html.count('class="unverified"') > 10
    assert "Unverified values in interfant06-blinatumomab" in text
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
    # 60 mg/m²/day × 0.37 m² (66 cm, 7.4 kg); the 60 is a placeholder, so the cell is marked.
    assert first.cells[prednisone] == ("22.2 mg/day", True)
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
            for name, (text, unverified) in zip(section.columns, row.cells, strict=True):
                slot = next(s for s in plan.protocol.elements[section.id].slots if s.name == name)
                assert unverified == (bool(text) and slot.evidence == "placeholder")
    html = render_roadmap(plan, "html")
    assert "22.2 mg/day <span class=\"unverified\">unverified</span>" in html
    assert "22.2 mg/day ⚠" in render_roadmap(plan, "md")
