"""Site amendments (``_site``): verified values layered over a shipped definition."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import protocol
from protocol._cli import app

ROOT = Path(__file__).resolve().parent.parent
AMENDMENT = ROOT / "tests" / "data" / "site" / "amendment.yaml"
ON_TIME = ROOT / "examples" / "patients" / "mr-on-time.yaml"
AS_OF = dt.date(2026, 11, 21)


def _amendment(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load(AMENDMENT.read_text(encoding="utf-8"))
    values = changes.pop("values", None)
    data.update(changes)
    if values is not None:
        data["values"] = values
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _entry(field: str, value: Any) -> dict[str, Any]:
    return {"field": field, "value": value, "verified_by": "X", "verified_on": "2026-11-01", "section": "§1"}


def test_amended_values_are_site_evidence_with_their_verification() -> None:
    base = protocol.load_protocol("interfant06-blinatumomab")
    amended = protocol.load_protocol("interfant06-blinatumomab", site=AMENDMENT)
    assert amended is not base and amended.site == ("Test Children's Hospital", str(AMENDMENT))
    prednisone = amended.source.elements[0].administrations[0].dose.amount
    assert (prednisone.value, prednisone.evidence) == (60, "site")
    assert prednisone.verified is not None
    assert (prednisone.verified.by, prednisone.verified.on, prednisone.verified.section) == (
        "A. Pharmacist", dt.date(2026, 11, 1), "Interfant-06 protocol v1.3, section 6.2.1 (test fixture)")
    # Addressed by label ("induction › length_days") as well as by path.
    assert amended.source.elements[0].length_days.evidence == "site"
    # The shipped definition is untouched.
    assert base.source.elements[0].administrations[0].dose.amount.evidence == "placeholder"
    # Cached: the same object for the same files.
    assert protocol.load_protocol("interfant06-blinatumomab", site=AMENDMENT) is amended


def test_counts_and_report_show_what_remains_placeholder() -> None:
    from protocol._loading import evidence_counts, validation_report

    base = evidence_counts(protocol.load_protocol("interfant06-blinatumomab"))
    amended = evidence_counts(protocol.load_protocol("interfant06-blinatumomab", site=AMENDMENT))
    assert amended["site"] == 2 and base["site"] == 0
    assert amended["placeholder"] == base["placeholder"] - 2
    report = validation_report("interfant06-blinatumomab", AMENDMENT)
    assert [v["field"] for v in report["site"]["values"]] == ["elements[0].length_days",
                                                               "elements[0].administrations[0].dose.amount"]
    assert "elements[0].administrations[0].dose.amount" not in {r["field"] for r in report["placeholders"]}


def test_plan_items_carry_site_evidence() -> None:
    amended = protocol.load_protocol("interfant06-blinatumomab", site=AMENDMENT)
    p = protocol.plan(ON_TIME, amended, as_of=AS_OF)
    prednisone = [i for i in p.items if i.slot.key == "prednisone"]
    assert prednisone and {i.evidence for i in prednisone} == {"site"}
    assert prednisone[0].dose is not None and prednisone[0].dose.amount == 22.1  # 60 × 0.368330 = 22.0998


@pytest.mark.parametrize(("changes", "field", "phrase"), [
    ({"values": [_entry("elements[0].nope", 1)]}, "values[0].field", "expected a value of interfant06-blinatumomab"),
    ({"values": [_entry("elements[1].administrations[0].dose.amount", 10)]}, "values[0].field",
     "a site amendment replaces placeholders only"),
    ({"values": [_entry("elements[0].length_days", 35), _entry("induction › length_days", 35)]}, "values[1].field",
     "already set by values[0]"),
    ({"values": [_entry("elements[0].length_days", "many")]}, "values[0].value", "elements[0].length_days.value"),
    ({"values": [_entry("elements[0].length_days", 3)]}, "values[0].value", "after the element's last day"),
    ({"protocol": "interfant06-blinatumomab@9.9.9"}, "protocol", "expected interfant06-blinatumomab@1.0.0"),
    ({"protocol": "aall1731"}, "protocol", "expected interfant06-blinatumomab@1.0.0"),
    ({"values": []}, "values", "at least 1"),
])
def test_bad_amendments_name_the_entry(tmp_path: Path, changes: dict[str, Any], field: str, phrase: str) -> None:
    path = _amendment(tmp_path, **changes)
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol("interfant06-blinatumomab", site=path)
    problems = info.value.problems
    assert any(p.file == str(path) and p.field == field and phrase in p.message for p in problems), problems


def test_cli_validate_with_site_lists_verified_values_and_remaining_placeholders() -> None:
    result = CliRunner().invoke(app, ["validate", "interfant06-blinatumomab", "--site", str(AMENDMENT)])
    assert result.exit_code == 0, result.output
    assert "2 site-verified" in result.stdout
    assert "verified by A. Pharmacist on 2026-11-01" in result.stdout
    assert "placeholders (" in result.stdout
    data = json.loads(CliRunner().invoke(app, ["validate", "interfant06-blinatumomab", "--site", str(AMENDMENT),
                                               "--json"]).stdout)
    assert data["evidence"]["site"] == 2 and len(data["site"]["values"]) == 2


def test_cli_plan_with_site_from_option_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["plan", str(ON_TIME), "--as-of", "2026-11-21", "--format", "json"]
    plain = json.loads(CliRunner().invoke(app, args).stdout)
    with_site = json.loads(CliRunner().invoke(app, [*args, "--site", str(AMENDMENT)]).stdout)
    monkeypatch.setenv("PROTOCOL_SITE", str(AMENDMENT))
    from_env = json.loads(CliRunner().invoke(app, args).stdout)

    def evidence(plan: dict[str, Any]) -> set[str]:
        return {i["evidence"] for i in plan["items"] if i["name"] == "Prednisone (prephase)"}

    assert evidence(plain) == {"placeholder"}
    assert evidence(with_site) == evidence(from_env) == {"site"}


def test_cli_bad_site_file_exits_2(tmp_path: Path) -> None:
    path = _amendment(tmp_path, values=[_entry("elements[0].nope", 1)])
    result = CliRunner().invoke(app, ["validate", "interfant06-blinatumomab", "--site", str(path)])
    assert result.exit_code == 2
    assert "values[0].field" in result.stderr and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["validate", "interfant06-blinatumomab", "--site", str(tmp_path / "no.yaml")])
    assert missing.exit_code == 2 and "cannot read the site amendment" in missing.stderr


def test_roadmap_shows_which_values_came_from_the_site(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["roadmap", str(ON_TIME), "--as-of", "2026-11-21", "--site", str(AMENDMENT),
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert "Values verified by Test Children&#39;s Hospital" in html or "Values verified by Test Children's" in html
    assert "A. Pharmacist" in html and "Interfant-06 protocol v1.3, section 6.2.1 (test fixture)" in html
    assert "60 mg/m²/day ✓ site-verified" in html  # the prednisone dosage in the induction drug table
    plain = tmp_path / "plain.html"
    CliRunner().invoke(app, ["roadmap", str(ON_TIME), "--as-of", "2026-11-21", "-o", str(plain)])
    assert "site-verified" not in plain.read_text(encoding="utf-8")
    md = CliRunner().invoke(app, ["roadmap", str(ON_TIME), "--as-of", "2026-11-21", "--site", str(AMENDMENT),
                                  "--format", "md"]).stdout
    assert "| induction › prednisone › amount | 60 ✓ | A. Pharmacist | 2026-11-01 |" in md
