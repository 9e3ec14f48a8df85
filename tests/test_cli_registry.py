"""The registry commands through the real entry point: ``patients add|list``, ``record`` (one
subcommand per event type), ``retract``, ``history``, ``export``, ``worklist``, and ``plan``,
``risk`` and ``roadmap`` given a registry id. Bad input exits 2 with a message naming the
option and leaves the database unchanged (compared as an SQL dump).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import protocol
from protocol._cli import app

ROOT = Path(__file__).resolve().parent.parent
ON_TIME = ROOT / "examples" / "patients" / "mr-on-time.yaml"
PENDING = ROOT / "examples" / "patients" / "mr-pending-mrd.yaml"
HR = ROOT / "examples" / "patients" / "hr-to-hsct.yaml"
#: Registered in this order, so INF-0002 holds #1-#8, INF-0001 #9-#25 and INF-0003 #26-#38.
EXAMPLES = [HR, ON_TIME, PENDING]
RECORD_EVENTS = tuple(get_command(app).commands["record"].commands)  # type: ignore[attr-defined]


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PROTOCOL_DEBUG", raising=False)
    monkeypatch.setenv("PROTOCOL_DB", str(tmp_path / "env.db"))
    monkeypatch.setenv("USER", "tester")
    return tmp_path / "r.db"


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n" \
                                  f"exception: {result.exception!r}"
    return result


def bad(result: Any, *needles: str) -> Any:
    assert result.exit_code == 2, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture()
def registered(db: Path) -> Path:
    for example in EXAMPLES:
        ok(cli("patients", "add", example, "--db", db, "--by", "alice"))
    return db


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("event", RECORD_EVENTS)
def test_every_event_has_help_with_an_example(db: Path, event: str) -> None:
    result = ok(cli("record", "INF-0001", event, "--help"))
    assert "Example:" in result.stdout and f" {event}" in result.stdout.split("Example:")[1]
    assert "protocol record " in result.stdout


@pytest.mark.parametrize("args", [("record", "--help"), ("patients", "--help"), ("patients", "add", "--help"),
                                  ("patients", "list", "--help")])
def test_group_help_has_an_example(db: Path, args: tuple[str, ...]) -> None:
    result = ok(cli(*args))
    assert "Example: protocol" in result.stdout


# --------------------------------------------------------------------------- patients


def test_patients_add_and_list(registered: Path) -> None:
    assert stat.S_IMODE(registered.stat().st_mode) == 0o600
    out = ok(cli("patients", "list", "--db", registered)).stdout.splitlines()
    assert out[0].split()[:4] == ["id", "protocol", "diagnosis", "entries"]
    assert [line.split()[0] for line in out[1:]] == ["INF-0001", "INF-0002", "INF-0003"]
    data = json.loads(ok(cli("patients", "list", "--json", "--db", registered)).stdout)
    assert [p["id"] for p in data["patients"]] == ["INF-0001", "INF-0002", "INF-0003"]
    assert data["patients"][0]["entries"] == 17 and data["patients"][0]["last_recorded_by"] == "alice"


def test_patients_add_uses_the_environment_registry(db: Path) -> None:
    ok(cli("patients", "add", ON_TIME))
    assert Path(os.environ["PROTOCOL_DB"]).exists() and not db.exists()
    assert "INF-0001" in ok(cli("patients", "list")).stdout


def test_patients_add_refuses_bad_files_and_taken_ids(registered: Path, tmp_path: Path) -> None:
    before = dump(registered)
    bad(cli("patients", "add", ON_TIME, "--db", registered), "already in the registry")
    broken = ROOT / "tests" / "data" / "malformed" / "patients" / "negative-weight.yaml"
    bad(cli("patients", "add", broken, "--db", registered), "negative-weight.yaml:", "weight_kg")
    bad(cli("patients", "add", tmp_path / "none.yaml", "--db", registered), "no such file")
    assert dump(registered) == before


def test_commands_without_a_registry_say_how_to_start(db: Path) -> None:
    for args in (("patients", "list"), ("history", "INF-0001"), ("worklist",), ("export", "INF-0001"),
                 ("record", "INF-0001", "relapse", "--date", "2026-11-01"), ("retract", "INF-0001", "3", "--reason", "x")):
        bad(cli(*args, "--db", db), "no registry here", "protocol patients add")
    bad(cli("plan", "INF-0001", "--db", db), "no registry at")
    assert not db.exists()


# --------------------------------------------------------------------------- record


def test_record_writes_and_reports(registered: Path) -> None:
    out = ok(cli("record", "INF-0001", "measurement", "--date", "2026-11-20", "--height-cm", "72", "--weight-kg",
                 "8.9", "--db", registered, "--by", "bob")).stdout
    assert out.startswith("recorded #39 for INF-0001: measurement 2026-11-20: 72 cm, 8.9 kg (by bob,")
    with protocol._registry.open_registry(registered) as reg:
        assert reg.patient_data("INF-0001")["measurements"][-1] == {"date": "2026-11-20", "height_cm": 72,
                                                                     "weight_kg": 8.9}
    ok(cli("record", "INF-0003", "mrd", "pre_octadad", "--value", "3e-4", "--date", "2026-11-02", "--db", registered))
    ok(cli("record", "INF-0003", "counts", "--anc", "0.8", "--platelets", "60", "--date", "2026-11-03", "--db",
           registered))
    ok(cli("record", "INF-0003", "delayed", "marma:pre_octadad_marrow@49", "--to", "2026-11-24", "--scope", "item",
           "--reason", "theatre slot", "--date", "2026-11-04", "--db", registered))


def test_record_date_defaults_to_today(registered: Path) -> None:
    out = ok(cli("record", "INF-0001", "measurement", "--height-cm", "72", "--weight-kg", "8.9", "--db",
                 registered)).stdout
    assert f"measurement {dt.date.today().isoformat()}:" in out


EVENTS: list[tuple[list[str], str, dict[str, Any]]] = [
    (["given", "induction:dexamethasone@8", "--dose", "2.2", "--note", "late evening"], "event",
     {"type": "item_given", "item": "induction:dexamethasone@8", "dose": 2.2, "note": "late evening"}),
    (["omitted", "Induction:Vincristine@15", "--reason", "ileus"], "event",
     {"type": "item_omitted", "item": "induction:vincristine@15", "reason": "ileus"}),
    (["delayed", "ib:cyclophosphamide@36", "--to", "2026-07-10", "--scope", "element", "--reason", "neutropenia"],
     "event", {"type": "item_delayed", "item": "ib:cyclophosphamide@36", "to": "2026-07-10", "scope": "element",
               "reason": "neutropenia"}),
    (["dose-modified", "ib:mercaptopurine@36", "--percent", "50", "--of", "previous", "--scope", "item", "--reason",
      "liver"], "event", {"type": "dose_modified", "item": "ib:mercaptopurine@36", "percent": 50, "of": "previous",
                          "scope": "item", "reason": "liver"}),
    (["started", "blinatumomab", "--bag-hours", "96"], "event",
     {"type": "element_started", "element": "blinatumomab", "bag_hours": 96}),
    (["completed", "induction"], "event", {"type": "element_completed", "element": "induction"}),
    (["hold", "marma", "--reason", "infection"], "event", {"type": "element_held", "element": "marma",
                                                           "reason": "infection"}),
    (["resume", "marma"], "event", {"type": "element_resumed", "element": "marma"}),
    (["interrupted", "blinatumomab", "--reason", "CRS"], "event",
     {"type": "infusion_interrupted", "element": "blinatumomab", "reason": "CRS"}),
    (["infusion-resumed", "blinatumomab", "--bag-hours", "48"], "event",
     {"type": "infusion_resumed", "element": "blinatumomab", "bag_hours": 48}),
    (["randomised", "consolidation", "standard"], "event",
     {"type": "randomised", "randomisation": "consolidation", "arm": "standard"}),
    (["hsct"], "event", {"type": "hsct"}),
    (["relapse", "--reason", "marrow"], "event", {"type": "relapse", "reason": "marrow"}),
    (["death"], "event", {"type": "death"}),
    (["off-protocol", "--reason", "consent withdrawn"], "event", {"type": "off_protocol",
                                                                   "reason": "consent withdrawn"}),
    (["measurement", "--height-cm", "66.5", "--weight-kg", "7"], "measurement", {"height_cm": 66.5, "weight_kg": 7}),
    (["mrd", "day8", "--value", "3e-4"], "mrd", {"timepoint": "day8", "value": 3e-4}),
    (["counts", "--anc", "0.8"], "count", {"anc": 0.8}),
]


@pytest.mark.parametrize("args, kind, data", EVENTS, ids=[e[0][0] for e in EVENTS])
def test_each_event_becomes_the_right_entry(db: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], kind: str,
                                            data: dict[str, Any]) -> None:
    calls: list[tuple[Any, ...]] = []

    class Fake:
        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def record(self, patient: str, kind: str, data: dict[str, Any], **kw: Any) -> Any:
            calls.append((patient, kind, data, kw))
            return protocol._registry.Entry(7, patient, kind, data, "x", "2026-11-21T00:00:00.000000Z")

        def patient(self, patient: str) -> Any:  # `given` checks its refs against the plan
            return protocol.load_patient(ON_TIME)

    monkeypatch.setattr("protocol._registry.open_registry", lambda path=None, create=False: Fake())
    ok(cli("record", "P-1", *args, "--date", "2026-07-01", "--by", "bob"))
    assert calls == [("P-1", kind, {**data, "date": "2026-07-01"}, {"by": "bob", "reason": None, "supersedes": None})]
    # The dict keeps the patient file's order: type first for events, then what it is about, then the date.
    assert list(calls[0][2])[0] == ("type" if kind == "event" else list(calls[0][2])[0])
    assert set(RECORD_EVENTS) == {e[0][0] for e in EVENTS} | {"base"}


def _bad_cases() -> list[tuple[list[str], list[str]]]:
    return [
        (["record", "INF-0099", "completed", "induction", "--date", "2026-06-07"],
         ["no patient 'INF-0099'", "protocol patients add"]),
        (["record", "INF-0001", "relapse", "--date", "2026-01-01"],
         ["record: --date: expected a date on or after diagnosis_date 2026-05-04"]),
        (["record", "INF-0003", "completed", "marma", "--date", "2026-09-10"],
         ["record: --date: completion on 2026-09-10 is before the start"]),
        (["record", "INF-0001", "measurement", "--date", "2026-02-30", "--height-cm", "7", "--weight-kg", "7"],
         ["--date: expected a date YYYY-MM-DD"]),
        (["record", "INF-0001", "measurement", "--date", "21/11/2026", "--height-cm", "7", "--weight-kg", "7"],
         ["--date: expected a date YYYY-MM-DD", "21/11/2026"]),
        (["record", "INF-0003", "started", "consolidation", "--date", "2026-11-01"],
         ["record: ELEMENT: expected an element of interfant06-blinatumomab"]),
        (["record", "INF-0003", "given", "marma:cytarabine_hd@1", "--date", "2026-09-16", "--dose", "5000"],
         ["record: --dose: expected at most the standard dose"]),
        (["record", "INF-0001", "measurement", "--height-cm", "-7", "--weight-kg", "7"],
         ["record: --height-cm: expected a number > 0"]),
        (["record", "INF-0001", "measurement", "--height-cm", "70", "--weight-kg", "7", "--supersedes", "2"],
         ["record: --why: a correction (--supersedes) needs --why"]),
        (["record", "INF-0001", "measurement", "--height-cm", "70", "--weight-kg", "7", "--supersedes", "3",
          "--why", "x"], ["record: --supersedes: #3 belongs to patient 'INF-0002'"]),
        (["record", "INF-0001", "base", "--set", "birth_date=2024-01-01", "--why", "x"],
         ["record: --set birth_date:", "younger than 1 year"]),
        (["record", "INF-0001", "base", "--set", "nonsense", "--why", "x"], ["--set: expected FIELD=VALUE"]),
        (["retract", "INF-0001", "9", "--reason", "x"], ["the base record cannot be retracted"]),
        (["retract", "INF-0001", "1", "--reason", "x"], ["retract: SEQ: #1 belongs to patient 'INF-0002'"]),
        (["retract", "INF-0003", "34", "--reason", "x"], ["INF-0003 #35: element: completes 'blinatumomab', but "
                                                     "the current element is 'induction'"]),
        (["history", "INF-0001", "--as-of-recorded", "yesterday"], ["--as-of-recorded: expected a date"]),
        (["worklist", "--from", "2026-13-01"], ["--from: expected a date"]),
    ]


@pytest.mark.parametrize("args, needles", _bad_cases(),
                         ids=[f"{n}-{'-'.join(a[:3])}" for n, (a, _) in enumerate(_bad_cases())])
def test_bad_input_exits_2_and_changes_nothing(registered: Path, args: list[str], needles: list[str]) -> None:
    before = dump(registered)
    bad(cli(*args, "--db", registered), *needles)
    assert dump(registered) == before


def test_corrections_and_history(registered: Path) -> None:
    # 89 kg for a 13-month-old (the decimal point missed) is refused outright, with WHO's range.
    bad(cli("record", "INF-0001", "measurement", "--date", "2026-11-20", "--height-cm", "72", "--weight-kg", "89",
            "--db", registered, "--by", "bob"), "--weight-kg: 89 kg at 13 months is weight-for-age z = +",
        "expected z from -6 to +5 (WHO biologically implausible limits)")
    ok(cli("record", "INF-0001", "measurement", "--date", "2026-11-20", "--height-cm", "72", "--weight-kg", "9.8",
           "--db", registered, "--by", "bob"))
    ok(cli("record", "INF-0001", "measurement", "--date", "2026-11-20", "--height-cm", "72", "--weight-kg", "8.9",
           "--supersedes", "39", "--why", "decimal point missed", "--db", registered, "--by", "carol"))
    ok(cli("record", "INF-0001", "base", "--set", "wbc_at_diagnosis=165", "--why", "lab value mistyped", "--db",
           registered))
    out = ok(cli("retract", "INF-0001", "13", "--reason", "sample mislabelled", "--db", registered)).stdout
    assert out.startswith("recorded #42 for INF-0001: retracts #13")
    text = ok(cli("history", "INF-0001", "--db", registered)).stdout
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "SUPERSEDED by #40" in lines["39"] and "decimal point missed" in lines["40"]
    assert "RETRACTED by #42" in lines["13"] and "wbc_at_diagnosis 150 → 165" in lines["41"]
    assert text.startswith("INF-0001: 21 entries, 17 in force")
    data = json.loads(ok(cli("history", "INF-0001", "--json", "--db", registered)).stdout)
    assert [e["seq"] for e in data["entries"] if not e["live"]] == [9, 13, 39, 42]
    bad(cli("history", "INF-0001", "--as-of-recorded", "2000-01-01", "--db", registered), "not registered yet")
    assert len(json.loads(ok(cli("history", "INF-0002", "--json", "--as-of-recorded",
                                 dt.date.today().isoformat(), "--db", registered)).stdout)["entries"]) == 8


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_export_round_trip(registered: Path, tmp_path: Path, example: Path, suffix: str) -> None:
    original = protocol.load_patient(example)
    out = tmp_path / f"{original.id}{suffix}"
    ok(cli("export", original.id, "-o", out, "--db", registered))
    assert protocol.load_patient(out).model_dump() == original.model_dump()


def test_export_to_stdout_and_as_recorded(registered: Path) -> None:
    text = ok(cli("export", "INF-0002", "--db", registered)).stdout
    assert text.startswith("# INF-0002, exported from the registry") and "id: INF-0002" in text
    history = json.loads(ok(cli("history", "INF-0002", "--json", "--db", registered)).stdout)["entries"]
    added_at = history[-1]["recorded_at"]
    ok(cli("record", "INF-0002", "measurement", "--height-cm", "64", "--weight-kg", "6.9", "--db", registered))
    now = json.loads(ok(cli("export", "INF-0002", "--format", "json", "--db", registered)).stdout)
    then = json.loads(ok(cli("export", "INF-0002", "--format", "json", "--as-of-recorded", added_at, "--db",
                             registered)).stdout)
    assert len(now["measurements"]) == len(then["measurements"]) + 1 == 3
    assert then == json.loads(json.dumps(protocol._io.read_document(HR).data))


def test_plan_risk_and_roadmap_take_a_registry_id(registered: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    from_file = ok(cli("plan", PENDING, "--as-of", "2026-11-21", "--format", "json")).stdout
    from_db = ok(cli("plan", "INF-0003", "--as-of", "2026-11-21", "--format", "json", "--db", registered)).stdout
    assert json.loads(from_db) == json.loads(from_file)
    monkeypatch.setenv("PROTOCOL_DB", str(registered))
    assert "risk group: HR" in ok(cli("risk", "INF-0002")).stdout
    ok(cli("roadmap", "INF-0001", "--as-of", "2026-11-21", "-o", tmp_path / "r.html"))
    assert "INF-0001" in (tmp_path / "r.html").read_text(encoding="utf-8")
    bad(cli("plan", "INF-0099"), "no patient 'INF-0099'")


def test_worklist_table_and_json(registered: Path) -> None:
    text = ok(cli("worklist", "--from", "2026-11-21", "--as-of", "2026-11-21", "--days", "7", "--db",
                  registered)).stdout
    assert text.splitlines()[0].startswith("worklist 2026-11-21 to 2026-11-27 (7 days):")
    assert "UNRECORDED" in text and "days ago, nothing recorded" in text
    assert "WAITING" in text and "waits for mrd:pre_octadad" in text
    data = json.loads(ok(cli("worklist", "--from", "2026-11-21", "--as-of", "2026-11-21", "-n", "7", "--json", "--db",
                             registered)).stdout)
    assert data["days"] == 7 and data["counts"]["waiting"] == 1 and data["as_of"] == "2026-11-21"
    assert data["fields"][:3] == ["date", "patient", "category"]
    dates = [r[0] for r in data["rows"]]
    assert dates == sorted(dates)
    bad(cli("worklist", "--days", "0", "--db", registered))


def test_worklist_from_moves_the_window_and_as_of_stays_today(registered: Path) -> None:
    today = dt.date.today().isoformat()
    ahead = json.loads(ok(cli("worklist", "--from", "2030-01-01", "--json", "--db", registered)).stdout)
    now = json.loads(ok(cli("worklist", "--json", "--db", registered)).stdout)
    assert ahead["as_of"] == now["as_of"] == now["from"] == today and ahead["from"] == "2030-01-01"
    fields = now["fields"]
    cat = fields.index("category")
    assert [r for r in ahead["rows"] if r[cat] in ("overdue", "unrecorded")] == \
        [r for r in now["rows"] if r[cat] in ("overdue", "unrecorded")]
    text = ok(cli("worklist", "--from", "2026-11-28", "--as-of", "2026-11-21", "--db", registered)).stdout
    assert text.splitlines()[0].startswith("worklist 2026-11-28 to 2026-12-04 (7 days, as of 2026-11-21):")
    bad(cli("worklist", "--as-of", "2026-02-30", "--db", registered), "--as-of")


# --------------------------------------------------------------------------- several items at once, due


def _written(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [json.loads(d)["item"] for (d,) in conn.execute(
            "SELECT data FROM entries WHERE patient = 'INF-0003' AND data LIKE '%item_given%' ORDER BY seq")]
    finally:
        conn.close()


def test_given_several_items_at_once_is_all_or_nothing(registered: Path) -> None:
    before = dump(registered)
    result = bad(cli("record", "INF-0003", "given", "marma:cytarabine_hd@1", "marma:cytarabine_hd@3", "--date",
                     "2026-09-16", "--db", registered),
                 "'marma:cytarabine_hd@3': cytarabine_hd is not planned on day 3 of marma",
                 "nearest: marma:cytarabine_hd@1, marma:cytarabine_hd@2")
    assert "[a-z" not in result.stderr and "matching" not in result.stderr
    assert dump(registered) == before
    out = ok(cli("record", "INF-0003", "given", "MARMA:Cytarabine_HD@1", "marma:cytarabine_hd@2", "--date",
                 "2026-09-17", "--db", registered)).stdout
    assert out.count("recorded #") == 2 and "item=marma:cytarabine_hd@1" in out
    assert _written(registered) == ["marma:cytarabine_hd@1", "marma:cytarabine_hd@2"]
    # The library refuses the second (already given): the first is not written either.
    before = dump(registered)
    bad(cli("record", "INF-0003", "given", "marma:cytarabine_hd@8", "marma:cytarabine_hd@1", "--date", "2026-09-23",
            "--db", registered), "ITEM: marma:cytarabine_hd@1 is already recorded as given")
    assert dump(registered) == before


def test_given_an_element_day(registered: Path) -> None:
    out = ok(cli("record", "INF-0003", "given", "--element", "MARMA", "--day", "8", "--date", "2026-09-23", "--db",
                 registered)).stdout
    assert "item=marma:cytarabine_hd@8" in out
    assert _written(registered) == ["marma:cytarabine_hd@8"]
    bad(cli("record", "INF-0003", "given", "--element", "marma", "--day", "8", "--date", "2026-09-23", "--db",
            registered), "--day: everything of marma on day 8 is already recorded")
    bad(cli("record", "INF-0003", "given", "--element", "marma", "--day", "3", "--db", registered),
        "--day: nothing of marma to give is planned on day 3; nearest days: 1, 2")


@pytest.mark.parametrize(("args", "needle"), [
    (["marma:cytarabine_hd@1", "--element", "marma", "--day", "1"], "either ITEMs or --element with --day"),
    ([], "name the items given"),
    (["--element", "marma"], "name the items given"),
    (["marma:cytarabine_hd@1", "marma:cytarabine_hd@2", "--dose", "100"], "--dose: a dose given is recorded for one"),
    (["marma:cytarabine_hd@1", "marma:cytarabine_hd@2", "--supersedes", "30", "--why", "x"],
     "--supersedes: a correction replaces one entry"),
    (["marma:cytarabine_hd@1", "Marma:Cytarabine_hd@1"], "marma:cytarabine_hd@1 is named twice"),
    (["marma-cytarabine-1"], "expected a reference of the form ELEMENT:ITEM@DAY"),
])
def test_given_mistakes_are_exit_2(registered: Path, args: list[str], needle: str) -> None:
    before = dump(registered)
    bad(cli("record", "INF-0003", "given", *args, "--date", "2026-09-17", "--db", registered), needle)
    assert dump(registered) == before


def test_due_lists_the_refs_ready_to_paste(registered: Path, tmp_path: Path) -> None:
    import shlex

    out = ok(cli("due", "INF-0003", "--date", "2026-09-23", "--db", registered)).stdout
    assert out.splitlines()[0].startswith("INF-0003 · interfant06-blinatumomab") and "due on 2026-09-23" in out
    assert "marma:cytarabine_hd@8" in out and "UNVERIFIED" in out
    assert "2 earlier items are still unrecorded or overdue (the first on 2026-09-16)" in out
    paste = next(line.strip() for line in out.splitlines() if line.strip().startswith("protocol record "))
    assert paste == "protocol record INF-0003 given marma:cytarabine_hd@8 --date 2026-09-23"
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_DEBUG"}
    env["PROTOCOL_DB"] = str(registered)
    done = subprocess.run([str(Path(sys.executable).parent / "protocol"), *shlex.split(paste)[1:]], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = ok(cli("due", "INF-0003", "--date", "2026-09-23", "--db", registered)).stdout
    assert "nothing due on this day" in again and "also on this day" in again and "given" in again
    assert "nothing due on this day" in ok(cli("due", ON_TIME, "--date", "2026-05-12", "--as-of", "2026-11-21")).stdout
    bad(cli("due", "INF-0003", "--date", "someday", "--db", registered), "--date")


# --------------------------------------------------------------------------- the real entry point


def test_record_through_the_console_entry_point(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PROTOCOL_DEBUG", "PROTOCOL_DB")}
    env["PROTOCOL_DB"] = str(tmp_path / "sub.db")

    def run(*args: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "protocol", *map(str, args)], env=env, capture_output=True,
                              text=True, encoding="utf-8", timeout=60, cwd=tmp_path)

    old = os.umask(0)
    try:
        added = run("patients", "add", ON_TIME, "--by", "alice")
    finally:
        os.umask(old)
    assert added.returncode == 0, added.stderr
    assert stat.S_IMODE((tmp_path / "sub.db").stat().st_mode) == 0o600
    recorded = run("record", "INF-0001", "measurement", "--date", "2026-11-20", "--height-cm", "72", "--weight-kg",
                   "8.9", "--by", "bob")
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.startswith("recorded #18 for INF-0001: measurement 2026-11-20")
    before = dump(tmp_path / "sub.db")
    refused = run("record", "INF-0001", "relapse", "--date", "2026-13-01")
    assert refused.returncode == 2 and refused.stderr.startswith("error: --date:") and "Traceback" not in refused.stderr
    assert dump(tmp_path / "sub.db") == before


def test_the_readme_registry_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Registry\n", 1)[1].split("\n## ", 1)[0]
    commands = [line[len("$ protocol "):] for line in section.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
                if line.startswith("$ protocol ")]
    assert len(commands) >= 6
    monkeypatch.delenv("PROTOCOL_DEBUG", raising=False)
    monkeypatch.setenv("PROTOCOL_DB", str(tmp_path / "readme.db"))
    monkeypatch.chdir(ROOT)
    import shlex

    for command in commands:
        args = shlex.split(command)
        if "-o" in args:
            args[args.index("-o") + 1] = str(tmp_path / args[args.index("-o") + 1])
        ok(cli(*args))
    assert "SUPERSEDED by #16" in ok(cli("history", "INF-0003")).stdout


# --------------------------------------------------------------------------- what a user typed (issue 16 §3)

MARKUP = "held [/b] per consultant [bold]RED[/bold]"
CONTROL = ["held \x1b[31mRED", "bell\x07", "bidi \u202eevil", "nul\x00", "csi \x9b31m"]


def _every_output(pid: str, db: Path, monkeypatch: pytest.MonkeyPatch, as_of: str) -> dict[str, str]:
    """Every text a coordinator reads about a patient: plan (narrow and wide, CSV, JSON),
    history (table, JSON), worklist (table, JSON), export, roadmap (HTML, Markdown)."""
    outs: dict[str, str] = {}
    for columns in ("80", "220"):
        monkeypatch.setenv("COLUMNS", columns)
        outs[f"plan@{columns}"] = ok(cli("plan", pid, "--as-of", as_of, "--db", db)).stdout
    monkeypatch.delenv("COLUMNS")
    outs["plan --wide"] = ok(cli("plan", pid, "--as-of", as_of, "--wide", "--db", db)).stdout
    for fmt in ("csv", "json"):
        outs[f"plan {fmt}"] = ok(cli("plan", pid, "--as-of", as_of, "--format", fmt, "--db", db)).stdout
    outs["history"] = ok(cli("history", pid, "--db", db)).stdout
    outs["history json"] = ok(cli("history", pid, "--json", "--db", db)).stdout
    outs["worklist"] = ok(cli("worklist", "--as-of", "2026-09-16", "--db", db)).stdout
    outs["worklist json"] = ok(cli("worklist", "--as-of", "2026-09-16", "--json", "--db", db)).stdout
    outs["export"] = ok(cli("export", pid, "--db", db)).stdout
    for fmt in ("html", "md"):
        outs[f"roadmap {fmt}"] = ok(cli("roadmap", pid, "--as-of", as_of, "--format", fmt, "--db", db)).stdout
    return outs


def test_markup_in_a_reason_is_shown_as_typed_everywhere(registered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok(cli("record", "INF-0003", "omitted", "marma:cytarabine_hd@9", "--reason", MARKUP, "--note", "[bold]RED",
           "--date", "2026-09-24", "--db", registered))
    ok(cli("record", "INF-0003", "delayed", "marma:cytarabine_hd@2", "--to", "2026-09-19", "--scope", "item",
           "--reason", MARKUP, "--date", "2026-09-16", "--db", registered))
    outs = _every_output("INF-0003", registered, monkeypatch, "2026-12-02")
    for name in ("plan --wide", "plan csv", "history", "worklist", "export"):
        assert MARKUP in outs[name], name
    assert "[bold]RED" in outs["history"]
    assert json.dumps(MARKUP)[1:-1] in outs["plan json"] and json.dumps(MARKUP)[1:-1] in outs["worklist json"]
    # Narrow, the note column is hidden, but what is shown is never altered.
    assert "RED" not in outs["plan@80"].replace("UNVERIFIED", "")


def test_control_characters_typed_are_refused(registered: Path) -> None:
    before = dump(registered)
    for text in CONTROL:
        for args in (["omitted", "marma:cytarabine_hd@9", "--reason", text],
                     ["omitted", "marma:cytarabine_hd@9", "--reason", "ok", "--note", text],
                     ["hold", "marma", "--reason", text], ["relapse", "--reason", text],
                     ["given", "marma:cytarabine_hd@9", "--note", text],
                     ["given", "marma:cytarabine_hd@1", "marma:cytarabine_hd@2", "--note", text]):
            option = "--note" if "--note" in args else "--reason"
            result = bad(cli("record", "INF-0003", *args, "--date", "2026-09-24", "--db", registered),
                         f"record: {option}: expected plain text, got a control character")
            assert not any(c in result.stderr for c in "\x1b\x07\u202e\x00\x9b"), repr(result.stderr)
        bad(cli("retract", "INF-0003", "30", "--reason", text, "--db", registered), "--reason: expected plain text")
        bad(cli("record", "INF-0003", "measurement", "--height-cm", "70", "--weight-kg", "8", "--supersedes", "21",
                "--why", text, "--db", registered), "--why: expected plain text")
    assert dump(registered) == before


def test_control_characters_from_a_file_are_shown_escaped(db: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    text = PENDING.read_text(encoding="utf-8").replace("id: INF-0003", "id: CTL-0003")
    text += ('  - {type: item_omitted, item: "marma:cytarabine_hd@9", date: 2026-09-24, '
             'reason: "held \\e[31mRED\\a [/b]", note: "\\u202eevil"}\n')
    (tmp_path / "ctl.yaml").write_text(text, encoding="utf-8")
    ok(cli("patients", "add", tmp_path / "ctl.yaml", "--db", db))
    outs = _every_output("CTL-0003", db, monkeypatch, "2026-12-02")
    for name, out in outs.items():
        if name.startswith("roadmap") or "json" in name or name == "export":
            continue  # documents and data (JSON, the patient file) keep the text exactly; checked below
        assert not any(c in out for c in "\x1b\x07\u202e"), name
    entry = json.loads(outs["history json"])["entries"][-1]
    assert entry["data"]["reason"] == "held \x1b[31mRED\x07 [/b]" and entry["data"]["note"] == "\u202eevil"
    import yaml

    exported = yaml.safe_load(outs["export"])["events"][-1]
    assert exported["reason"] == "held \x1b[31mRED\x07 [/b]"  # nothing recorded is lost or changed
    for name in ("plan --wide", "plan csv", "history"):
        assert "held \\x1b[31mRED\\x07 [/b]" in outs[name], name
    assert "\\u202eevil" in outs["history"]


def test_db_check_reports_a_sound_registry(registered: Path) -> None:
    out = ok(cli("db", "check", "--db", registered)).stdout
    assert out.splitlines()[0] == "integrity: ok"
    assert out.splitlines()[1].startswith("patients replayed: ") and out.splitlines()[1].endswith(", 0 with problems")


def test_a_damaged_registry_is_refused_by_every_command(tmp_path: Path) -> None:
    """Issue 16 §5: a damaged file is an exit 2 naming the file and what to do, for every
    command, before anything is read or written."""
    import sqlite3

    db = tmp_path / "damaged.db"
    ok(cli("patients", "add", EXAMPLES[0], "--db", db))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    for page in range(1, len(data) // 4096):  # break every b-tree page header after the first
        data[page * 4096 + 3: page * 4096 + 8] = b"\xff" * 5
    db.write_bytes(bytes(data))
    for args in (["patients", "list"], ["db", "check"], ["worklist"], ["history", "INF-0001"]):
        # Damage SQLite finds on opening, or the quick check finds: either way exit 2, the file, what to do.
        result = bad(cli(*args, "--db", db), f"{db}: ", "damaged", "restore the last backup")
        assert "\n" not in result.stderr.strip()


def test_patients_add_puts_the_patient_in_a_site(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "sites.db"
    bad(cli("patients", "add", ON_TIME, "--site", "leeds", "--db", db), "site: no site 'leeds'",
        "protocol sites add leeds")
    ok(cli("sites", "add", "leeds", "--db", db))
    ok(cli("patients", "add", ON_TIME, "--site", "leeds", "--db", db))
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT site FROM patient_sites WHERE patient = 'INF-0001'").fetchone() == ("leeds",)
    conn.close()


def test_a_dose_critical_entry_from_the_command_line_waits_for_sign_off(registered: Path, tmp_path: Path) -> None:
    """Issue 10: a dose modification recorded with ``protocol record`` (offline, ``--by``)
    waits for a pharmacist's sign-off exactly as one entered on the web does, and the roadmap
    says so; an entry that is not dose-critical does not wait."""
    from protocol._signoff import signoffs, unsigned

    out = ok(cli("record", "INF-0001", "dose-modified", "ib:mercaptopurine@36", "--percent", "50", "--of",
                 "standard", "--scope", "item", "--reason", "liver", "--date", "2026-11-20", "--db", registered,
                 "--by", "bob")).stdout
    seq = int(out.split("#")[1].split()[0])
    ok(cli("record", "INF-0001", "counts", "--anc", "0.8", "--date", "2026-11-20", "--db", registered, "--by", "bob"))
    with protocol._registry.open_registry(registered) as reg:
        assert {s: o.state for s, o in signoffs(reg, "INF-0001").items()} == {seq: "unsigned"}
        assert [(p, s) for p, s, *_ in unsigned(reg, {"INF-0001"})] == [("INF-0001", seq)]
    html = tmp_path / "r.html"
    ok(cli("roadmap", "INF-0001", "--db", registered, "--as-of", "2026-11-21", "-o", html))
    assert "awaiting verification (recorded by bob on" in html.read_text(encoding="utf-8")


def test_a_registered_file_s_dose_modification_waits_for_sign_off(db: Path, tmp_path: Path) -> None:
    """A patient file registered with a dose modification in its events: the entry waits for
    sign-off like one recorded later (registration is a path that records too)."""
    import yaml

    from protocol._signoff import signoffs

    data = yaml.safe_load(ON_TIME.read_text(encoding="utf-8"))
    data["events"] = [*data.get("events", []), {"type": "dose_modified", "item": "ib:mercaptopurine@36",
                                                 "date": "2026-11-20", "percent": 50, "of": "standard",
                                                 "scope": "item", "reason": "liver"}]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    ok(cli("patients", "add", path, "--db", db, "--by", "alice"))
    with protocol._registry.open_registry(db) as reg:
        states = [o.state for o in signoffs(reg, data["id"]).values()]
    assert states == ["unsigned"]
