"""The document commands through the real entry point: ``protocol roadmap`` (HTML, Markdown,
PDF), ``protocol calendar`` and ``protocol fhir``; good input → files that read back, bad input
→ exit 2 with a message naming what was wrong, no traceback, nothing written.

Every document command runs on every example patient and every shipped protocol (the
``protocol`` app the console script runs, in-process for time, and each command once more as a
real process), so no output can be missing for any of them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from protocol._cli import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "patients"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))
PROTOCOLS = sorted(p.stem for p in (ROOT / "protocol" / "definitions").glob("*.yaml"))
HR = EXAMPLES / "hr-to-hsct.yaml"
PENDING = EXAMPLES / "mr-pending-mrd.yaml"
AS_OF = "2026-11-21"
EPOCH = "1790000000"


def run(*args: Any, script: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """The real console entry point: the installed ``protocol`` script, or ``python -m protocol``."""
    if script:
        exe = Path(sys.executable).parent / "protocol"
        if not exe.is_file():
            pytest.skip(f"no `protocol` script next to {sys.executable}")
        head = [str(exe)]
    else:
        head = [sys.executable, "-m", "protocol"]
    environ = {k: v for k, v in os.environ.items() if k != "PROTOCOL_DEBUG"}
    environ.update(env)
    return subprocess.run([*head, *map(str, args)], cwd=ROOT, env=environ, capture_output=True, text=True,
                          encoding="utf-8", timeout=120)


def bad(proc: Any, *needles: str) -> None:
    """Exit 2, a one-line-per-problem message naming the field, no traceback, nothing on stdout."""
    stderr = proc.stderr
    code = proc.returncode if hasattr(proc, "returncode") else proc.exit_code
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr and "internal error" not in stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)
    assert proc.stdout == ""


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("PROTOCOL_DEBUG", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- roadmap


def test_roadmap_pdf_from_the_file_name(tmp_path: Path) -> None:
    import pypdf

    out = tmp_path / "roadmap.pdf"
    proc = run("roadmap", HR, "--as-of", AS_OF, "-o", out, script=True, SOURCE_DATE_EPOCH=EPOCH)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and f"wrote {out}" in proc.stderr
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(data))
    text = "".join(p.extract_text() for p in reader.pages)
    assert "Allogeneic stem-cell transplant (HSCT)" in text and "INF-0002" in text
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_roadmap_pdf_of_26_page_patient_is_one_fast_process(tmp_path: Path) -> None:
    """The whole `protocol roadmap --format pdf` process (typst, in-process): budget 1 s on the
    dev machine; loose here (shared CI cores), bench/bench_documents.py reports the real figure."""
    import time

    out = tmp_path / "r.pdf"
    start = time.perf_counter()
    proc = run("roadmap", ROOT / "examples/patients/mr-on-time.yaml", "--as-of", AS_OF, "-o", out, script=True,
               SOURCE_DATE_EPOCH=EPOCH)
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    print(f"protocol roadmap --format pdf: {took:.2f} s (budget 1 s on the dev machine)")
    assert took < 4.0
    again = tmp_path / "r2.pdf"
    assert run("roadmap", ROOT / "examples/patients/mr-on-time.yaml", "--as-of", AS_OF, "-o", again, script=True,
               SOURCE_DATE_EPOCH=EPOCH).returncode == 0
    assert out.read_bytes() == again.read_bytes()


def test_roadmap_pdf_engine_option_and_a_broken_site_template(tmp_path: Path, cli: Any) -> None:
    bad(cli("roadmap", HR, "--as-of", AS_OF, "-o", tmp_path / "r.pdf", "--engine", "latex"), "--engine")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "roadmap.page.typ.j2").write_text("#set page(paper: \"a4\"\n", encoding="utf-8")
    bad(cli("roadmap", HR, "--as-of", AS_OF, "-o", tmp_path / "r.pdf", "--templates", tmp_path / "site"),
        "roadmap.typ.j2", "typst")
    assert not (tmp_path / "r.pdf").exists()
    # The PDF template renders sandboxed: a site template cannot reach Python objects.
    (tmp_path / "site" / "roadmap.page.typ.j2").write_text(
        "{{ cycler.__init__.__globals__.os.popen('echo PWNED').read() }}\n", encoding="utf-8")
    result = cli("roadmap", HR, "--as-of", AS_OF, "-o", tmp_path / "r.pdf", "--templates", tmp_path / "site")
    bad(result, str(tmp_path / "site"), "unsafe")
    assert "PWNED" not in result.stderr and not (tmp_path / "r.pdf").exists()
    (tmp_path / "site" / "roadmap.page.typ.j2").write_text("{% if %}\n", encoding="utf-8")
    bad(cli("roadmap", HR, "--as-of", AS_OF, "-o", tmp_path / "r.pdf", "--templates", tmp_path / "site"),
        "roadmap.page.typ.j2", "expected a template")


def test_roadmap_pdf_needs_an_output_file() -> None:
    bad(run("roadmap", HR, "--format", "pdf", "--as-of", AS_OF), "--output", "expected -o FILE.pdf")


def test_roadmap_bad_input_writes_nothing(tmp_path: Path, cli: Any) -> None:
    missing = tmp_path / "no-such-folder" / "r.pdf"
    bad(cli("roadmap", HR, "--format", "pdf", "-o", missing, "--as-of", AS_OF), "does not exist")
    assert not missing.parent.exists()
    bad(cli("roadmap", tmp_path / "missing.yaml", "-o", tmp_path / "r.html"), "missing.yaml")
    bad(cli("roadmap", HR, "--as-of", "21/11/2026", "-o", tmp_path / "r.html"), "--as-of")
    assert list(tmp_path.iterdir()) == []


def test_roadmap_html_is_reproducible_through_the_cli(tmp_path: Path) -> None:
    first, second = tmp_path / "a.html", tmp_path / "b.html"
    proc = run("roadmap", PENDING, "--as-of", AS_OF, "-o", first, SOURCE_DATE_EPOCH=EPOCH)
    assert proc.returncode == 0, proc.stderr
    proc = run("roadmap", PENDING, "--as-of", AS_OF, "-o", second, SOURCE_DATE_EPOCH=EPOCH)
    assert proc.returncode == 0, proc.stderr
    assert first.read_bytes() == second.read_bytes()
    assert b"generated 2026-09-21 14:13 UTC" in first.read_bytes()


# --------------------------------------------------------------------------- calendar


def test_calendar_to_a_file_with_reminders(tmp_path: Path) -> None:
    import icalendar

    out = tmp_path / "INF-0002.ics"
    proc = run("calendar", HR, "-o", out, "--remind-days", "2", "--as-of", AS_OF, script=True)
    assert proc.returncode == 0, proc.stderr
    cal = icalendar.Calendar.from_ical(out.read_bytes())
    events = cal.walk("VEVENT")
    assert events and len(cal.walk("VALARM")) == len(events)
    assert str(cal["X-PROTOCOL-PATIENT"]) == "INF-0002"
    # Re-export against the previous file: nothing moved, so no SEQUENCE changes.
    again = tmp_path / "again.ics"
    proc = run("calendar", HR, "-o", again, "--remind-days", "2", "--as-of", AS_OF, "--previous", out)
    assert proc.returncode == 0, proc.stderr
    old = {str(e["UID"]): int(e["SEQUENCE"]) for e in events}
    new = {str(e["UID"]): int(e["SEQUENCE"]) for e in icalendar.Calendar.from_ical(again.read_bytes()).walk("VEVENT")}
    assert new == old


def test_calendar_to_stdout(cli: Any) -> None:
    import vobject

    result = cli("calendar", PENDING, "--as-of", AS_OF)
    assert result.exit_code == 0, result.stderr
    cal = vobject.readOne(result.stdout)
    assert len(cal.vevent_list) > 50
    assert result.stdout.startswith("BEGIN:VCALENDAR")


def test_calendar_bad_input(tmp_path: Path, cli: Any) -> None:
    bad(run("calendar", HR, "--remind-days", "-1"), "--remind-days")
    bad(cli("calendar", HR, "--remind-days", "soon"), "--remind-days")
    not_ics = tmp_path / "old.ics"
    not_ics.write_text("hello\n", encoding="utf-8")
    bad(cli("calendar", HR, "--previous", not_ics, "-o", tmp_path / "new.ics"), str(not_ics), "iCalendar")
    other = tmp_path / "other.ics"
    assert cli("calendar", PENDING, "-o", other, "--as-of", AS_OF).exit_code == 0
    bad(cli("calendar", HR, "--previous", other, "-o", tmp_path / "new.ics"), "expected a calendar exported for "
        "patient INF-0002")
    bad(cli("calendar", tmp_path / "nobody.yaml"), "nobody.yaml")
    assert not (tmp_path / "new.ics").exists()


# --------------------------------------------------------------------------- fhir


def test_fhir_care_plan_bundle(tmp_path: Path) -> None:
    from fhir.resources.bundle import Bundle

    proc = run("fhir", HR, "--as-of", AS_OF, script=True)
    assert proc.returncode == 0, proc.stderr
    bundle = Bundle.model_validate_json(proc.stdout)
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds == ["Patient", "CarePlan", "RequestOrchestration", "PlanDefinition"]


def test_fhir_plan_definition_to_a_file(tmp_path: Path) -> None:
    from fhir.resources.plandefinition import PlanDefinition

    out = tmp_path / "pd.json"
    proc = run("fhir", "--protocol", "interfant06-blinatumomab", "-o", out)
    assert proc.returncode == 0, proc.stderr
    pd = PlanDefinition.model_validate_json(out.read_text(encoding="utf-8"))
    assert [a.linkId for a in pd.action][:2] == ["induction", "blinatumomab"]
    assert json.loads(out.read_text(encoding="utf-8"))["resourceType"] == "PlanDefinition"


def test_fhir_bad_input(tmp_path: Path, cli: Any) -> None:
    bad(run("fhir"), "expected a patient or --protocol ID (exactly one), got neither")
    bad(cli("fhir", HR, "--protocol", "interfant06-blinatumomab"), "got both")
    bad(cli("fhir", "--protocol", "no-such-protocol"), "no-such-protocol")
    bad(cli("fhir", HR, "--as-of", "yesterday-ish"), "--as-of")
    bad(cli("fhir", "--protocol", "interfant06-blinatumomab", "-o", tmp_path / "missing" / "pd.json"),
        "does not exist")


# --------------------------------------------------------------------------- every output for every example


def _read_back(kind: str, data: bytes, patient: str) -> None:
    """Each document parsed by an independent reader, with the patient in it."""
    text = data.decode("utf-8") if kind != "pdf" else ""
    if kind == "json":
        assert json.loads(text)["patient"] == patient
    elif kind == "csv":
        import csv

        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows and rows[0]["date"]
    elif kind == "table":
        assert patient in text
    elif kind in ("html", "md"):
        assert patient in text and "UNVERIFIED" in text.upper()
    elif kind == "pdf":
        import pypdf

        reader = pypdf.PdfReader(io.BytesIO(data))
        assert patient in "".join(p.extract_text() for p in reader.pages[:2])
    elif kind == "ics":
        import icalendar
        import vobject

        cal = icalendar.Calendar.from_ical(data)
        assert str(cal["X-PROTOCOL-PATIENT"]) == patient and cal.walk("VEVENT")
        assert len(vobject.readOne(text).vevent_list) == len(cal.walk("VEVENT"))
    elif kind == "fhir":
        from fhir.resources.bundle import Bundle

        bundle = Bundle.model_validate_json(text)
        assert [e.resource.get_resource_type() for e in bundle.entry] == [
            "Patient", "CarePlan", "RequestOrchestration", "PlanDefinition"]
    else:  # pragma: no cover
        raise AssertionError(kind)


DOCUMENTS: list[tuple[str, tuple[str, ...], str]] = [
    ("table", ("plan", "--format", "table"), ""),
    ("json", ("plan", "--format", "json"), ""),
    ("csv", ("plan", "--format", "csv"), ""),
    ("html", ("roadmap", "--format", "html"), "roadmap.html"),
    ("md", ("roadmap", "--format", "md"), "roadmap.md"),
    ("pdf", ("roadmap", "--format", "pdf"), "roadmap.pdf"),
    ("ics", ("calendar", "--remind-days", "1"), "plan.ics"),
    ("fhir", ("fhir",), "bundle.json"),
]


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_every_document_command_on_every_example(path: Path, tmp_path: Path, cli: Any) -> None:
    """Every plan format, roadmap format, the calendar and FHIR: exit 0 and a document that
    reads back, for every example patient (``protocol fhir`` exited 1 for 5 of them)."""
    import yaml

    patient = yaml.safe_load(path.read_text(encoding="utf-8"))["id"]
    for kind, (command, *options), name in DOCUMENTS:
        out = tmp_path / name if name else None
        args = [command, path, *options, "--as-of", AS_OF, *(["-o", out] if out else [])]
        result = cli(*args)
        assert result.exit_code == 0, (kind, result.stderr or result.output)
        assert "internal error" not in (result.stderr or "")
        data = out.read_bytes() if out else result.stdout.encode("utf-8")
        assert data, kind
        _read_back(kind, data, patient)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_fhir_plan_definition_of_every_shipped_protocol(name: str, tmp_path: Path, cli: Any) -> None:
    from fhir.resources.plandefinition import PlanDefinition

    out = tmp_path / "pd.json"
    result = cli("fhir", "--protocol", name, "-o", out)
    assert result.exit_code == 0, result.stderr
    pd = PlanDefinition.model_validate_json(out.read_text(encoding="utf-8"))
    assert pd.id == name and pd.action


@pytest.mark.parametrize("kind", [k for k, _, _ in DOCUMENTS if k != "pdf"])
def test_each_document_command_as_a_real_process(kind: str, tmp_path: Path) -> None:
    """Each command once more through the installed console script (the PDF has its own test
    above), on an example of another protocol than the reference one."""
    path = EXAMPLES / "aall1731-sr-average.yaml"
    _, (command, *options), name = next(d for d in DOCUMENTS if d[0] == kind)
    out = tmp_path / name if name else None
    proc = run(command, path, *options, "--as-of", AS_OF, *(["-o", out] if out else []), script=True)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes() if out else proc.stdout.encode("utf-8")
    import yaml

    _read_back(kind, data, yaml.safe_load(path.read_text(encoding="utf-8"))["id"])


# --------------------------------------------------------------------------- calendar of a registry patient


def test_registry_calendar_sequence_goes_up_without_previous(tmp_path: Path) -> None:
    """Through the real script: register, export, record a delay, export again without
    --previous: every moved event keeps its UID and has a higher SEQUENCE."""
    import icalendar

    db = tmp_path / "r.db"
    env = {"PROTOCOL_DB": str(db), "USER": "tester"}
    assert run("patients", "add", EXAMPLES / "mr-on-time.yaml", "--by", "alice", **env).returncode == 0

    def export(name: str) -> dict[str, tuple[Any, int]]:
        out = tmp_path / name
        proc = run("calendar", "INF-0001", "--as-of", "2026-10-01", "-o", out, script=True, **env)
        assert proc.returncode == 0, proc.stderr
        cal = icalendar.Calendar.from_ical(out.read_bytes())
        return {str(e["UID"]): (e.decoded("DTSTART"), int(e["SEQUENCE"])) for e in cal.walk("VEVENT")}

    before = export("before.ics")
    proc = run("record", "INF-0001", "delayed", "octadad:dexamethasone@10", "--to", "2026-10-04", "--scope", "all",
               "--reason", "neutropenic fever", "--date", "2026-10-01", **env)
    assert proc.returncode == 0, proc.stderr
    after = export("after.ics")
    moved = [u for u in before if u in after and after[u][0] != before[u][0]]
    assert len(moved) > 20
    assert all(after[u][1] > before[u][1] for u in moved)


def test_calendar_previous_never_echoes_the_file(tmp_path: Path, cli: Any) -> None:
    """``--previous /etc/shadow``: exit 2, the file named and what was expected, nothing of it shown."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$S3CRETHASH:19000:0:99999:7:::\n", encoding="utf-8")
    targets = [secret] + [Path(p) for p in ("/etc/shadow", "/etc/passwd") if Path(p).is_file()]
    for target in targets:
        result = cli("calendar", HR, "--previous", target, "-o", tmp_path / "new.ics")
        bad(result, str(target), "expected an iCalendar")
        first = target.read_bytes().split(b":")[0].decode("utf-8", "replace") if os.access(target, os.R_OK) else ""
        assert "S3CRET" not in result.stderr
        if first:
            assert first not in result.stderr.replace(str(target), ""), target
    assert not (tmp_path / "new.ics").exists()
