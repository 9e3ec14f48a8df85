"""The ``protocol`` command line: every command, its output formats and its exit codes.

Most tests go through typer's ``CliRunner`` on ``protocol._cli.app`` (in-process, fast);
a few run the real console script as a subprocess (``python -m protocol`` and the
``protocol`` script installed next to the interpreter). Exit codes: 0 success, 2 bad input
(message on stderr, no traceback), 1 internal error. Self-contained: no conftest fixtures.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from protocol._cli import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "patients"
HR = EXAMPLES / "hr-to-hsct.yaml"
ON_TIME = EXAMPLES / "mr-on-time.yaml"
PENDING = EXAMPLES / "mr-pending-mrd.yaml"
SHIPPED = ROOT / "protocol" / "definitions" / "interfant06-blinatumomab.yaml"
PROTOCOL_ID = "interfant06-blinatumomab"
AS_OF = "2026-11-21"
COMMANDS = ("list", "validate", "schema", "risk", "plan", "roadmap", "diagram")
#: Every command the app registers (help is checked for all of them, documented or not).
REGISTERED = tuple(get_command(app).commands)  # type: ignore[attr-defined]
TIMEOUT = 60


# --------------------------------------------------------------------------- helpers


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the app in-process; returns the Result (stdout and stderr kept apart)."""
    monkeypatch.delenv("PROTOCOL_DEBUG", raising=False)
    runner = CliRunner()

    def invoke(*args: Any) -> Any:
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PROTOCOL_DEBUG", None)
    env.update(extra)
    return env


def run(*args: Any, cwd: Path = ROOT, script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real console script: ``python -m protocol ARGS`` (or the installed script)."""
    head = [str(_script())] if script else [sys.executable, "-m", "protocol"]
    return subprocess.run([*head, *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          encoding="utf-8", timeout=TIMEOUT)


def _script() -> Path:
    bindir = Path(sys.executable).parent
    for name in ("protocol", "protocol.exe"):
        if (bindir / name).is_file():
            return bindir / name
    pytest.skip(f"no `protocol` script next to {sys.executable}")


def ok(result: Any) -> Any:
    """Assert a CliRunner result succeeded, showing its streams if not."""
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n" \
                                  f"exception: {result.exception!r}"
    assert "Traceback" not in result.output
    return result


def plan_json(cli: Any, patient: Path = ON_TIME) -> dict[str, Any]:
    return json.loads(ok(cli("plan", patient, "--format", "json", "--as-of", AS_OF)).stdout)


# --------------------------------------------------------------------------- help


def test_the_documented_commands_exist() -> None:
    assert set(COMMANDS) <= set(REGISTERED)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_app_help(cli: Any, flag: str) -> None:
    result = ok(cli(flag))
    assert "Example:" in result.stdout
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", REGISTERED)
def test_command_help_has_an_example(cli: Any, command: str) -> None:
    result = ok(cli(command, "--help"))
    assert "Example:" in result.stdout
    assert f"protocol {command}" in result.stdout  # the example uses the command
    assert result.stderr == ""


def test_help_subprocess() -> None:
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example:" in proc.stdout and "Commands" in proc.stdout
    assert proc.stderr == ""


def test_command_help_via_installed_script() -> None:
    proc = run("plan", "--help", script=True)
    assert proc.returncode == 0, proc.stderr
    assert "Example:" in proc.stdout and "--as-of" in proc.stdout


def test_help_is_fast(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m protocol --help`` starts quickly (0.4 s budget on the dev machine; this
    bound is loose for noisy CI machines). The best of three runs is measured."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "protocol", "--help"], cwd=ROOT, env=_env(),
                              capture_output=True, timeout=TIMEOUT)
        times.append(time.perf_counter() - start)
        assert proc.returncode == 0
    best = min(times)
    with capsys.disabled():  # shown in every run, not only on failure
        print(f"\n`python -m protocol --help` took {best:.3f} s (best of runs: {', '.join(f'{t:.3f}' for t in times)})")
    assert best < 1.5, f"`protocol --help` took {best:.2f} s"


# --------------------------------------------------------------------------- list / validate / schema


def test_list(cli: Any) -> None:
    result = ok(cli("list"))
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith(PROTOCOL_ID + "\t")]
    assert len(lines) == 1, result.stdout
    fields = lines[0].split("\t")
    assert fields[1] == "1.0.0"
    m = re.fullmatch(r"published (\d+), derived (\d+), placeholder (\d+)", fields[-1])
    assert m, fields[-1]
    report = json.loads(ok(cli("validate", PROTOCOL_ID, "--json")).stdout)
    assert [int(x) for x in m.groups()] == [report["evidence"][k] for k in ("published", "derived", "placeholder")]


@pytest.mark.parametrize("target", [PROTOCOL_ID, str(SHIPPED)], ids=["by-id", "by-path"])
def test_validate(cli: Any, target: str) -> None:
    out = ok(cli("validate", target)).stdout
    assert out.startswith(f"ok: {PROTOCOL_ID} 1.0.0 (draft): ")
    m = re.search(r"placeholders \((\d+)\)", out)
    assert m and int(m.group(1)) > 0, out
    rows = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert len(rows) == int(m.group(1))
    assert any("elements[0].length_days" in r for r in rows)
    assert "not specified" in out  # placeholders with value: null


def test_validate_json(cli: Any) -> None:
    report = json.loads(ok(cli("validate", PROTOCOL_ID, "--json")).stdout)
    assert report["id"] == PROTOCOL_ID and report["version"] == "1.0.0"
    assert report["elements"] == 7 and report["transitions"] == 6
    assert len(report["placeholders"]) == report["evidence"]["placeholder"] > 0
    assert {"field", "label", "value", "source", "note"} <= set(report["placeholders"][0])


def test_schema(cli: Any) -> None:
    schema = json.loads(ok(cli("schema")).stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "elements" in schema["properties"] and "transitions" in schema["properties"]
    assert "elements" in schema["required"]


def test_schema_patient(cli: Any) -> None:
    schema = json.loads(ok(cli("schema", "--patient")).stdout)
    assert "$schema" in schema
    assert {"birth_date", "measurements", "mrd", "events", "kmt2a"} <= set(schema["properties"])
    assert "elements" not in schema["properties"]


# --------------------------------------------------------------------------- risk


def test_risk_text(cli: Any) -> None:
    out = ok(cli("risk", HR, "--as-of", AS_OF)).stdout
    # HR from a WBC of 420 (published ≥ 300): the placeholder prednisone cut-off does not matter.
    assert out.splitlines()[0] == "risk group: HR (high risk)"
    ticks = [ln for ln in out.splitlines() if ln.strip().startswith("✓")]
    assert len(ticks) >= 3, out
    assert "✓ prednisone response = poor" in out


def test_risk_json(cli: Any) -> None:
    data = json.loads(ok(cli("risk", HR, "--json", "--as-of", AS_OF)).stdout)
    assert data["group"] == "HR" and data["status"] == "assigned"
    assert any("✓" in r for r in data["reasons"])


def test_risk_medium(cli: Any) -> None:
    data = json.loads(ok(cli("risk", ON_TIME, "--json", "--as-of", AS_OF)).stdout)
    assert data["group"] == "MR"


# --------------------------------------------------------------------------- plan


def test_plan_json(cli: Any) -> None:
    data = plan_json(cli)
    assert {"patient", "protocol", "risk", "elements", "items", "decisions"} <= set(data)
    assert data["patient"] == "INF-0001"
    assert data["protocol"]["id"] == PROTOCOL_ID and data["protocol"]["version"] == "1.0.0"
    assert data["risk"]["group"] == "MR" and data["risk"]["reasons"]
    assert data["as_of"] == AS_OF
    assert [e["id"] for e in data["elements"]] == ["induction", "blinatumomab", "ib", "marma", "octadad",
                                                   "maintenance"]
    dates = [i["date"] for i in data["items"]]
    assert dates == sorted(dates) and dates[0] == "2026-05-04"
    assert [d["outcome"] for d in data["decisions"] if d["id"] == "pre_octadad"] == ["octadad"]


def test_plan_json_pending_decision(cli: Any) -> None:
    data = plan_json(cli, PENDING)
    pending = [d for d in data["decisions"] if d["status"] == "pending"]
    assert [d["id"] for d in pending] == ["pre_octadad"]
    assert pending[0]["waiting_for"] == ["mrd:pre_octadad"]
    assert {"hsct", "octadad"} <= {e["id"] for e in data["elements"] if e["status"] == "pending_decision"}


def test_plan_csv(cli: Any) -> None:
    text = ok(cli("plan", ON_TIME, "--format", "csv", "--as-of", AS_OF)).stdout
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[:4] == ["date", "element", "element_day", "study_day"]
    body = [dict(zip(header, r, strict=True)) for r in rows[1:]]
    assert len(body) == len(plan_json(cli)["items"])
    assert body[0]["date"] == "2026-05-04" and body[0]["element"] == "induction"
    assert all(r["element_day"].lstrip("-").isdigit() and r["study_day"].lstrip("-").isdigit() for r in body)


def test_plan_table(cli: Any) -> None:
    out = ok(cli("plan", PENDING, "--as-of", AS_OF)).stdout
    assert "UNVERIFIED" in out
    assert "PENDING decision pre_octadad" in out
    assert "INF-0003" in out


SR_AVERAGE = EXAMPLES / "aall1731-sr-average.yaml"


def _pieces(token: str) -> set[str]:
    """A token and every run of it that a table may show on one line: the wrap breaks only
    after '_' or '/' inside a token (``blinatumomab_`` + ``1``), never elsewhere."""
    parts: list[str] = []
    piece = ""
    for ch in token:
        piece += ch
        if ch in "_/" and len(piece) > 1:
            parts.append(piece)
            piece = ""
    if piece:
        parts.append(piece)
    return {"".join(parts[a:b]) for a in range(len(parts)) for b in range(a + 1, len(parts) + 1)}


@pytest.mark.parametrize("patient", [ON_TIME, SR_AVERAGE, PENDING])
@pytest.mark.parametrize("columns", [80, 100, 140])
def test_plan_table_fits_the_terminal_without_folding_words(cli: Any, monkeypatch: pytest.MonkeyPatch,
                                                            patient: Path, columns: int) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    out = ok(cli("plan", patient, "--as-of", AS_OF)).stdout
    wide = ok(cli("plan", patient, "--as-of", AS_OF, "--wide")).stdout
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    allowed = set().union(*(_pieces(t) for t in wide.split()))
    top = next(k for k, line in enumerate(lines) if line.startswith("date "))
    bottom = next(k for k, line in enumerate(lines) if line.startswith(("(hidden at this width", "UNVERIFIED =")))
    body = "\n".join(lines[top:bottom])
    folded = [t for t in body.split() if t not in allowed]
    assert not folded, folded[:10]
    assert "inductio" not in out.replace("induction", "")
    # Every item is a row (its date starts a line), and every unverified value keeps its mark.
    items = plan_json(cli, patient)["items"]
    rows = [line for line in lines if re.match(r"^\d{4}-\d{2}-\d{2} +\S", line)]
    assert len(rows) == len(items)
    assert sum("UNVERIFIED" in r for r in rows) == sum(i["unverified"] for i in items)
    assert "UNVERIFIED = placeholder value" in out


def test_plan_table_hides_what_a_narrow_terminal_cannot_hold(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = ok(cli("plan", ON_TIME, "--as-of", AS_OF)).stdout
    head = next(line for line in out.splitlines() if line.startswith("date "))
    assert head.split()[:2] == ["date", "element"] and "ref" not in head.split() and "UNVERIFIED" in out
    assert "induction:prednisone@1" not in out
    assert "hidden at this width: ref" in out and "--wide" in out
    monkeypatch.setenv("COLUMNS", "220")
    assert "ref" in next(line for line in ok(cli("plan", ON_TIME, "--as-of", AS_OF)).stdout.splitlines()
                         if line.startswith("date ")).split()


def test_plan_table_wide_shows_whole_refs_and_the_library_dose_text(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = ok(cli("plan", ON_TIME, "--as-of", AS_OF, "--wide")).stdout
    rows = [line for line in out.splitlines() if re.match(r"^\d{4}-\d{2}-\d{2}  ", line)]
    items = plan_json(cli)["items"]
    assert len(rows) == len(items)
    for row, item in zip(rows, items, strict=True):
        assert f"  {item['ref']}" in row
        if item["dose"] is not None:
            assert f"  {item['dose']['text']}  " in row


def test_plan_table_to_a_pipe_is_not_narrowed(tmp_path: Path) -> None:
    env = _env()
    env.pop("COLUMNS", None)
    done = subprocess.run([str(_script()), "plan", str(ON_TIME), "--as-of", AS_OF], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    assert "induction:prednisone@1" in done.stdout and "hidden at this width" not in done.stdout


def test_plan_filters(cli: Any) -> None:
    out = ok(cli("plan", ON_TIME, "--as-of", AS_OF, "--wide", "--element", "MARMA", "--from", "2026-09-01",
                 "--to", "2026-09-30", "--status", "done,unrecorded")).stdout
    rows = [line.split() for line in out.splitlines() if re.match(r"^\d{4}-\d{2}-\d{2}  ", line)]
    assert rows and all(r[1] == "marma" and "2026-09-01" <= r[0] <= "2026-09-30" for r in rows)
    assert re.search(rf"^{len(rows)} of \d+ items shown \(filtered\)$", out, re.M)
    csv_rows = list(csv.DictReader(io.StringIO(ok(cli("plan", ON_TIME, "--as-of", AS_OF, "--format", "csv",
                                                      "-e", "maintenance", "-s", "planned")).stdout)))
    assert csv_rows and {r["element"] for r in csv_rows} == {"maintenance"} and {r["status"] for r in csv_rows} == {"planned"}
    data = json.loads(ok(cli("plan", ON_TIME, "--as-of", AS_OF, "--format", "json", "--to", "2026-05-05")).stdout)
    assert [i["date"] for i in data["items"]] == ["2026-05-04", "2026-05-04", "2026-05-05"]


@pytest.mark.parametrize(("args", "needles"), [
    (["--element", "marmaa"], ["--element", "no element 'marmaa'", "did you mean marma"]),
    (["--status", "late"], ["--status", "expected one of planned, overdue"]),
    (["--from", "2026-10-01", "--to", "2026-09-01"], ["--to", "on or after --from"]),
    (["--from", "soon"], ["--from"]),
])
def test_plan_filter_mistakes_are_exit_2(cli: Any, args: list[str], needles: list[str]) -> None:
    result = cli("plan", ON_TIME, "--as-of", AS_OF, *args)
    assert result.exit_code == 2, result.output
    assert all(n in result.stderr for n in needles), result.stderr
    assert "Traceback" not in result.output and "^" not in result.stderr


def test_version(cli: Any) -> None:
    from protocol import __version__

    assert ok(cli("--version")).stdout.strip().startswith(f"protocol {__version__}")
    done = run("--version", script=True)
    assert done.returncode == 0 and done.stdout.startswith(f"protocol {__version__} ")


def test_plan_output_file(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    result = ok(cli("plan", ON_TIME, "-o", target, "-f", "json", "--as-of", AS_OF))
    assert result.stdout == ""
    assert str(target) in result.stderr  # "wrote FILE"
    assert json.loads(target.read_text(encoding="utf-8")) == plan_json(cli)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]  # no temporary file left


def test_plan_json_subprocess(tmp_path: Path) -> None:
    proc = run("plan", ON_TIME, "--format", "json", "--as-of", AS_OF, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["protocol"]["id"] == PROTOCOL_ID and data["risk"]["group"] == "MR"
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- roadmap / diagram


def test_roadmap_html(tmp_path: Path) -> None:
    """Through the real script: -o x.html writes a complete HTML document."""
    target = tmp_path / "x.html"
    proc = run("roadmap", PENDING, "-o", target, "--as-of", AS_OF, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    text = target.read_text(encoding="utf-8")
    assert "<html" in text.lower() and "</html>" in text.lower()
    assert "unverified" in text
    assert "INF-0003" in text
    data = json.loads(run("plan", PENDING, "-f", "json", "--as-of", AS_OF).stdout)
    titles = {e["title"] for e in data["elements"]}
    assert len(titles) == 7
    for title in titles:
        assert html.escape(title) in text, title
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.html"]


def test_roadmap_markdown_from_suffix(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "x.md"
    result = ok(cli("roadmap", ON_TIME, "-o", target, "--as-of", AS_OF))
    assert result.stdout == ""
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Treatment roadmap")
    assert "<html" not in text.lower()
    assert "| Patient (pseudonym) | INF-0001 |" in text
    assert "UNVERIFIED" in text


def test_roadmap_markdown_to_stdout(cli: Any) -> None:
    out = ok(cli("roadmap", HR, "--format", "md", "--as-of", AS_OF)).stdout
    assert out.startswith("# Treatment roadmap")
    assert "INF-0002" in out and "<html" not in out.lower()


def test_roadmap_html_to_stdout_by_default(cli: Any) -> None:
    out = ok(cli("roadmap", HR, "--as-of", AS_OF)).stdout
    assert "<html" in out.lower() and "INF-0002" in out


def test_diagram(cli: Any) -> None:
    out = ok(cli("diagram", PROTOCOL_ID)).stdout
    assert "stateDiagram-v2" in out
    assert "marma --> hsct" in out
    assert "marma --> octadad" in out
    assert "[*] --> induction" in out


def test_diagram_subprocess() -> None:
    proc = run("diagram", SHIPPED)
    assert proc.returncode == 0, proc.stderr
    assert "stateDiagram-v2" in proc.stdout and "marma --> hsct" in proc.stdout


# --------------------------------------------------------------------------- --as-of


def test_as_of_today(cli: Any) -> None:
    data = json.loads(ok(cli("plan", ON_TIME, "-f", "json", "--as-of", "today")).stdout)
    assert data["as_of"] in {dt.date.today().isoformat(), (dt.date.today() - dt.timedelta(days=1)).isoformat()}
    ok(cli("risk", HR, "--as-of", "today"))


def test_as_of_invalid(cli: Any) -> None:
    result = cli("plan", ON_TIME, "--as-of", "2026-13-01")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--as-of" in result.stderr and "'2026-13-01'" in result.stderr
    assert "Traceback" not in result.output


def test_as_of_invalid_subprocess(tmp_path: Path) -> None:
    proc = run("roadmap", ON_TIME, "-o", tmp_path / "x.html", "--as-of", "2026-13-01", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "--as-of" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["21/11/2026", "2026-02-30", "2026-11-21T10:00", "yesterday"])
def test_as_of_other_invalid_dates(cli: Any, text: str) -> None:
    result = cli("risk", HR, "--as-of", text)
    assert result.exit_code == 2, result.stdout
    assert "--as-of" in result.stderr


@pytest.mark.parametrize("text", ["2026-11", "2026-W47", "2026-325"])
def test_as_of_partial_or_week_dates_are_rejected(cli: Any, text: str) -> None:
    result = cli("risk", HR, "--as-of", text)
    assert result.exit_code == 2
    assert "--as-of" in result.stderr


# --------------------------------------------------------------------------- exit codes


def test_unknown_command(cli: Any) -> None:
    result = cli("frobnicate")
    assert result.exit_code == 2
    assert "frobnicate" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_command_subprocess() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert proc.stdout == "" and "No such command" in proc.stderr


def test_missing_patient_file(cli: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nobody.yaml"
    result = cli("plan", missing)
    assert result.exit_code == 2
    assert f"{missing}: no such file" in result.stderr
    assert result.stdout == ""


def test_internal_error_exit_1_without_traceback(cli: Any, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    import protocol.schedule

    assert "PROTOCOL_DEBUG" not in os.environ

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(protocol.schedule, "plan", broken)
    for args in (["plan", ON_TIME], ["roadmap", ON_TIME, "-o", tmp_path / "x.html"]):
        result = cli(*args, "--as-of", AS_OF)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)
        assert result.stdout == ""
        assert "internal error: RuntimeError: simulated failure" in result.stderr
        assert "PROTOCOL_DEBUG=1" in result.stderr
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_internal_error_with_debug_raises(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import protocol.schedule

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(protocol.schedule, "plan", broken)
    monkeypatch.setenv("PROTOCOL_DEBUG", "1")
    result = cli("plan", ON_TIME, "--as-of", AS_OF)
    assert isinstance(result.exception, RuntimeError)
    assert result.exit_code == 1


@pytest.mark.parametrize("where", ["missing-folder", "folder"])
def test_bad_output_path_is_bad_input(cli: Any, tmp_path: Path, where: str) -> None:
    target = tmp_path / "no" / "such" / "x.json" if where == "missing-folder" else tmp_path
    result = cli("plan", ON_TIME, "-f", "json", "-o", target, "--as-of", AS_OF)
    assert result.exit_code == 2, result.stderr
    assert str(target) in result.stderr
    assert "internal error" not in result.stderr


def _readme_blocks(section: str) -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    text = readme.split(f"\n{section}\n", 1)[1]
    text = re.split(r"\n#{2,3} ", text, maxsplit=1)[0]
    return [block.split("```", 1)[0].splitlines() for block in text.split("```text\n")[1:]]


def test_the_readme_due_example_is_true(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.chdir(ROOT)
    block = next(b for b in _readme_blocks("### Recording what actually happened") if b[0].startswith("$ protocol due"))
    out = ok(cli(*shlex.split(block[0])[2:])).stdout.splitlines()
    assert out[:len(block) - 1] == block[1:]


def test_the_readme_bad_ref_example_is_true(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    import shlex

    block = next(b for b in _readme_blocks("## Command line") if "vincristin@8" in b[0])
    monkeypatch.setenv("PROTOCOL_DB", str(tmp_path / "r.db"))
    ok(cli("patients", "add", ON_TIME))
    result = cli(*shlex.split(block[0])[2:])
    assert result.exit_code == 2 and result.stderr.splitlines() == block[1:]


def test_command_annotations_are_objects_not_strings() -> None:
    """typer resolves the annotation of every parameter of every command at each start; a
    string annotation (``from __future__ import annotations``) costs it an ``eval`` each, about
    25 ms of every command. The command modules keep their annotations as objects."""
    import inspect

    import typer.main

    from protocol._cli import app

    group = typer.main.get_command(app)
    callbacks = []

    def walk(cmd: Any) -> None:
        if getattr(cmd, "callback", None) is not None:
            callbacks.append(cmd.callback)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(group)
    ours = [f for f in callbacks if getattr(inspect.unwrap(f), "__module__", "").startswith("protocol._cli")]
    assert len(ours) > 40
    strings = [(f.__qualname__, name) for f in ours for name, a in inspect.unwrap(f).__annotations__.items()
               if isinstance(a, str)]
    assert strings == []
