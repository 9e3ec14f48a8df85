"""``protocol diff``: what changed between two definitions, matched by identity, as text and JSON.

Every test diffs the shipped definition against a mutated copy written to ``tmp_path`` (the
mutations go through the real loader, so each copy is a valid definition) and checks the exact
changes reported: their path, kind, category, old and new values, and that nothing else is
reported.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import protocol
from protocol import DefinitionDiff, diff_definitions, diff_protocols
from protocol._cli import app
from protocol._diff import CATEGORIES, Change

SHIPPED_ID = "interfant06-blinatumomab"
SHIPPED_FILE = Path(__file__).resolve().parent.parent / "protocol" / "definitions" / f"{SHIPPED_ID}.yaml"
SHIPPED = sorted(SHIPPED_FILE.parent.glob("*.yaml"))
HSCT_MRD = "transitions.marma->hsct.when.any[1].gte"
DEX_INDUCTION = "elements.induction.administrations.dexamethasone"

Write = Callable[..., Path]


# --------------------------------------------------------------------------- helpers


def _element(data: dict[str, Any], element_id: str) -> dict[str, Any]:
    return next(e for e in data["elements"] if e["id"] == element_id)


def _administration(data: dict[str, Any], element_id: str, drug: str) -> dict[str, Any]:
    return next(a for a in _element(data, element_id)["administrations"] if a["drug"] == drug)


def _transition(data: dict[str, Any], source: str, to: str) -> dict[str, Any]:
    return next(t for t in data["transitions"] if t["from"] == source and t["to"] == to)


@pytest.fixture
def against(shipped_definition: dict[str, Any], write_definition: Write) -> Callable[[dict[str, Any]], DefinitionDiff]:
    """``against(mutated)``: the diff from the shipped definition to the mutated copy."""

    def diff(mutated: dict[str, Any]) -> DefinitionDiff:
        return diff_protocols(SHIPPED_ID, write_definition(mutated))

    return diff


def _paths(diff: DefinitionDiff) -> list[str]:
    return [c.path for c in diff.changes]


def _only(diff: DefinitionDiff) -> Change:
    assert len(diff.changes) == 1, [c.path for c in diff.changes]
    return diff.changes[0]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Invoke the real app in-process (stdout and stderr kept apart)."""
    monkeypatch.delenv("PROTOCOL_DEBUG", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- no change


def test_identical_definitions_have_no_changes(shipped_definition: dict[str, Any], write_definition: Write) -> None:
    copy_path = write_definition(shipped_definition)
    diff = diff_protocols(SHIPPED_ID, copy_path)
    assert diff.identical and diff.changes == ()
    assert diff.counts() == {**dict.fromkeys(CATEGORIES, 0), "total": 0}
    assert diff.to_text().splitlines()[-1] == "no differences"
    assert diff.b["file"] == str(copy_path)


def test_a_definition_against_itself_and_a_loaded_protocol() -> None:
    loaded = protocol.load_protocol(SHIPPED_ID)
    assert diff_definitions(loaded.definition, loaded.definition).identical
    assert diff_protocols(loaded, f"{SHIPPED_ID}@1.0.0").identical


# --------------------------------------------------------------------------- doses and days


def test_dose_amount_change(shipped_definition: dict[str, Any], against: Any) -> None:
    _administration(shipped_definition, "induction", "Dexamethasone")["dose"]["amount"]["value"] = 8
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == (f"{DEX_INDUCTION}.dose.amount.value", "changed", "dose")
    assert (change.old, change.new) == (6, 8)
    assert (change.old_text, change.new_text) == ("6 mg/m²/day [placeholder]", "8 mg/m²/day [placeholder]")
    assert change.section == "elements.induction"
    assert change.sourced_path == f"{DEX_INDUCTION}.dose.amount"


def test_same_drug_in_two_elements_is_told_apart_by_element(shipped_definition: dict[str, Any],
                                                             against: Any) -> None:
    _administration(shipped_definition, "octadad", "Dexamethasone")["dose"]["amount"]["value"] = 12
    change = _only(against(shipped_definition))
    assert change.path == "elements.octadad.administrations.dexamethasone.dose.amount.value"


def test_days_change(shipped_definition: dict[str, Any], against: Any) -> None:
    _administration(shipped_definition, "induction", "Vincristine")["days"]["value"] = "8, 15, 22"
    change = _only(against(shipped_definition))
    assert change.path == "elements.induction.administrations.vincristine.days.value"
    assert (change.kind, change.category, change.old, change.new) == ("changed", "days", "8, 15, 22, 29", "8, 15, 22")


def test_element_length_is_a_days_change(shipped_definition: dict[str, Any], against: Any) -> None:
    _element(shipped_definition, "marma")["length_days"]["value"] = 56
    change = _only(against(shipped_definition))
    assert (change.path, change.category, change.old, change.new) == (
        "elements.marma.length_days.value", "days", 49, 56)


def test_cap_is_shown_in_the_dose_unit_alone(shipped_definition: dict[str, Any], against: Any) -> None:
    _administration(shipped_definition, "blinatumomab", "Dexamethasone (premedication)")["dose"]["cap"]["value"] = 10
    change = _only(against(shipped_definition))
    assert (change.category, change.old_text, change.new_text) == ("dose", "20 mg [placeholder: blincyto-label]",
                                                                   "10 mg [placeholder: blincyto-label]")


def test_a_value_becoming_known(shipped_definition: dict[str, Any], against: Any) -> None:
    _administration(shipped_definition, "marma", "Asparaginase")["dose"]["amount"]["value"] = 2500
    change = _only(against(shipped_definition))
    assert (change.old, change.new) == (None, 2500)
    assert (change.old_text, change.new_text) == ("not specified [placeholder]", "2500 IU/m² [placeholder]")


# --------------------------------------------------------------------------- elements


def test_element_added(shipped_definition: dict[str, Any], against: Any) -> None:
    extra = copy.deepcopy(_element(shipped_definition, "ib"))
    extra.update(id="ib_repeat", title="Protocol IB, second course")
    shipped_definition["elements"].insert(3, extra)
    _transition(shipped_definition, "ib", "marma")["to"] = "ib_repeat"
    shipped_definition["transitions"].insert(3, {"from": "ib_repeat", "to": "marma"})
    diff = against(shipped_definition)
    kinds = {(c.path, c.kind, c.category) for c in diff.changes}
    assert kinds == {
        ("elements.ib_repeat", "added", "structure"),
        ("transitions.ib->marma", "removed", "structure"),
        ("transitions.ib->ib_repeat", "added", "structure"),
        ("transitions.ib_repeat->marma", "added", "structure"),
    }
    added = next(c for c in diff.changes if c.path == "elements.ib_repeat")
    assert added.new["title"] == "Protocol IB, second course" and added.old is None
    # The new element is listed with every drug in it, for the pharmacist.
    assert "administrations.cyclophosphamide: Cyclophosphamide IV, 1000 mg/m² [placeholder: bfm95]" in added.new_text


def test_element_removed(shipped_definition: dict[str, Any], against: Any) -> None:
    shipped_definition["elements"] = [e for e in shipped_definition["elements"] if e["id"] != "blinatumomab"]
    shipped_definition["transitions"] = [t for t in shipped_definition["transitions"]
                                         if "blinatumomab" not in (t["from"], t["to"])]
    shipped_definition["transitions"].insert(0, {"from": "induction", "to": "ib"})
    shipped_definition["timepoints"] = [t for t in shipped_definition["timepoints"] if "blinatumomab" not in t["id"]]
    diff = against(shipped_definition)
    assert {(c.path, c.kind) for c in diff.changes} == {
        ("timepoints.blinatumomab_day15", "removed"),
        ("timepoints.blinatumomab_day29", "removed"),
        ("elements.blinatumomab", "removed"),
        ("transitions.induction->blinatumomab", "removed"),
        ("transitions.blinatumomab->ib", "removed"),
        ("transitions.induction->ib", "added"),
    }
    removed = next(c for c in diff.changes if c.path == "elements.blinatumomab")
    assert removed.old["id"] == "blinatumomab" and removed.new is None


def test_elements_reordered_is_one_move_and_nothing_else(shipped_definition: dict[str, Any], against: Any) -> None:
    elements = shipped_definition["elements"]
    elements[2], elements[3] = elements[3], elements[2]  # ib after marma in the file; transitions unchanged
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == ("elements", "moved", "structure")
    assert change.old == ["induction", "blinatumomab", "ib", "marma", "octadad", "maintenance", "hsct"]
    assert change.new == ["induction", "blinatumomab", "marma", "ib", "octadad", "maintenance", "hsct"]


def test_element_title_is_metadata_shown_after_the_dose(shipped_definition: dict[str, Any], against: Any) -> None:
    induction = _element(shipped_definition, "induction")
    induction["title"] = "Induction"
    _administration(shipped_definition, "induction", "Dexamethasone")["dose"]["amount"]["value"] = 8
    diff = against(shipped_definition)
    assert [(c.path, c.category) for c in diff.changes] == [  # in the definition's order
        ("elements.induction.title", "metadata"), (f"{DEX_INDUCTION}.dose.amount.value", "dose")]
    lines = diff.to_text().splitlines()
    dose = next(i for i, line in enumerate(lines) if "dexamethasone.dose.amount" in line)
    title = next(i for i, line in enumerate(lines) if line.startswith("  ~ metadata  title:"))
    assert dose < title  # clinical changes first in the section


# --------------------------------------------------------------------------- administrations and assessments


def test_administration_added_is_matched_by_identity_not_position(shipped_definition: dict[str, Any],
                                                                  against: Any) -> None:
    # Inserted first: every later administration shifts one place, keeps its order, and is unchanged.
    _element(shipped_definition, "induction")["administrations"].insert(0, {
        "drug": "Cytarabine", "route": "IV",
        "dose": {"basis": "per_m2", "unit": "mg", "amount": {"value": 75, "evidence": "placeholder"}},
        "days": {"value": "12-15", "evidence": "placeholder"}})
    diff = against(shipped_definition)
    assert [(c.path, c.kind) for c in diff.changes] == [("elements.induction.administrations.cytarabine", "added")]
    added = diff.changes[0]
    assert added.new_text == "Cytarabine IV, 75 mg/m² [placeholder], days 12-15 [placeholder]"
    assert added.new["dose"]["amount"] == {"value": 75, "evidence": "placeholder"}


def test_administration_removed(shipped_definition: dict[str, Any], against: Any) -> None:
    maintenance = _element(shipped_definition, "maintenance")
    maintenance["administrations"] = [a for a in maintenance["administrations"] if a["id"] != "methotrexate_po"]
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == (
        "elements.maintenance.administrations.methotrexate_po", "removed", "structure")
    assert change.old_text == "Methotrexate (oral) PO, 20 mg/m²/week [placeholder], days 1-end/7 [placeholder]"


def test_assessment_window_added(shipped_definition: dict[str, Any], against: Any) -> None:
    marrow = next(a for a in _element(shipped_definition, "induction")["assessments"] if a["id"] == "eoi_marrow")
    marrow["window"] = {"before": {"value": 2, "evidence": "placeholder"}, "after": {"value": 3, "evidence": "placeholder"}}
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == (
        "elements.induction.assessments.eoi_marrow.window", "added", "days")
    assert change.new == {"before": {"value": 2, "evidence": "placeholder"},
                          "after": {"value": 3, "evidence": "placeholder"}}


# --------------------------------------------------------------------------- guards and thresholds


def test_guard_threshold_change(shipped_definition: dict[str, Any], against: Any) -> None:
    _transition(shipped_definition, "marma", "hsct")["when"]["any"][1]["gte"]["value"] = 1e-4
    diff = against(shipped_definition)
    change = _only(diff)
    assert (change.path, change.kind, change.category) == (f"{HSCT_MRD}.value", "changed", "guard")
    assert (change.old, change.new) == (5e-4, 1e-4)
    assert change.section == "transitions.marma->hsct"
    assert change.guard is not None and change.guard.path == "transitions.marma->hsct.when"
    assert change.guard.old == "risk group = HR or MRD at pre_octadad ≥ 5e-4"
    assert change.guard.new == "risk group = HR or MRD at pre_octadad ≥ 1e-4"
    text = diff.to_text()
    assert "  ~ guard     when.any[1].gte: 5e-4 [published: bassett2023] → 1e-4 [published: bassett2023]\n" in text
    assert "      guard before: risk group = HR or MRD at pre_octadad ≥ 5e-4\n" in text
    assert "      guard after:  risk group = HR or MRD at pre_octadad ≥ 1e-4\n" in text


def test_a_close_threshold_is_never_shown_rounded(shipped_definition: dict[str, Any], against: Any) -> None:
    _transition(shipped_definition, "marma", "hsct")["when"]["any"][1]["gte"]["value"] = 4.9e-4
    change = _only(against(shipped_definition))
    assert change.new_text.startswith("4.9e-4 ") and change.old_text.startswith("5e-4 ")


def test_risk_group_threshold_and_order(shipped_definition: dict[str, Any], against: Any) -> None:
    hr = next(g for g in shipped_definition["risk_groups"] if g["id"] == "HR")
    hr["when"]["all"][2]["any"][0]["gte"]["value"] = 250
    diff = against(shipped_definition)
    change = _only(diff)
    assert change.path == "risk_groups.HR.when.all[2].any[0].gte.value"
    assert change.category == "guard" and change.guard is not None
    assert "WBC at diagnosis ≥ 250" in (change.guard.new or "")

    shipped_definition["risk_groups"].reverse()  # the first matching group is assigned: order is a rule
    moved = [c for c in against(shipped_definition).changes if c.kind == "moved"]
    assert [(c.path, c.category, c.old, c.new) for c in moved] == [("risk_groups", "guard", ["HR", "MR"], ["MR", "HR"])]


def test_eligibility_rule_added_is_a_guard(shipped_definition: dict[str, Any], against: Any) -> None:
    shipped_definition["eligibility"].append({
        "id": "not_cns3", "when": {"fact": "cns_status", "ne": "CNS3"}, "message": "CNS3 patients are not eligible.",
        "source": "pieters2019", "evidence": "placeholder"})
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == ("eligibility.not_cns3", "added", "guard")
    assert "when CNS status ≠ CNS3" in change.new_text


def test_clause_added_to_a_guard(shipped_definition: dict[str, Any], against: Any) -> None:
    _transition(shipped_definition, "marma", "hsct")["when"]["any"].append({"fact": "cns_status", "eq": "CNS3"})
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == ("transitions.marma->hsct.when.any[2]", "added", "guard")
    assert change.guard is not None and change.guard.new is not None
    assert change.guard.new.endswith(" or CNS status = CNS3")


def test_clause_replaced_by_another_kind_is_one_change_in_words(shipped_definition: dict[str, Any],
                                                                 against: Any) -> None:
    clauses = _transition(shipped_definition, "marma", "hsct")["when"]["any"]
    mrd = clauses[1]
    mrd["gte"]["value"] = 1e-4
    clauses[1] = {"all": [{"fact": "risk_group", "eq": "MR"}, mrd]}
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == ("transitions.marma->hsct.when.any[1]", "changed", "guard")
    assert (change.old_text, change.new_text) == ("MRD at pre_octadad ≥ 5e-4",
                                                  "risk group = MR and MRD at pre_octadad ≥ 1e-4")
    assert change.new["all"][0] == {"fact": "risk_group", "eq": "MR"}
    assert change.guard is not None
    assert change.guard.new == "risk group = HR or (risk group = MR and MRD at pre_octadad ≥ 1e-4)"


def test_whole_guard_replaced_is_shown_once(shipped_definition: dict[str, Any], against: Any) -> None:
    _transition(shipped_definition, "marma", "hsct")["when"] = {"fact": "risk_group", "eq": "HR"}
    diff = against(shipped_definition)
    change = _only(diff)
    assert (change.path, change.category) == ("transitions.marma->hsct.when", "guard")
    assert (change.old_text, change.new_text) == ("risk group = HR or MRD at pre_octadad ≥ 5e-4", "risk group = HR")
    text = diff.to_text()
    assert "  ~ guard     when: risk group = HR or MRD at pre_octadad ≥ 5e-4 → risk group = HR\n" in text
    assert "guard before" not in text


# --------------------------------------------------------------------------- evidence and sources


def test_evidence_placeholder_to_published(shipped_definition: dict[str, Any], against: Any) -> None:
    amount = _administration(shipped_definition, "induction", "Dexamethasone")["dose"]["amount"]
    amount.update(evidence="published", source="pieters2019")
    diff = against(shipped_definition)
    assert [(c.path, c.category, c.old, c.new) for c in diff.changes] == [
        (f"{DEX_INDUCTION}.dose.amount.evidence", "evidence", "placeholder", "published"),
        (f"{DEX_INDUCTION}.dose.amount.source", "source", None, "pieters2019"),
    ]
    assert diff.a["evidence"]["published"] + 1 == diff.b["evidence"]["published"]
    # One line for the value, with its evidence before and after.
    lines = [line for line in diff.to_text().splitlines() if "dexamethasone.dose.amount" in line]
    assert lines == ["  ~ evidence, source administrations.dexamethasone.dose.amount: 6 mg/m²/day [placeholder] → "
                     "6 mg/m²/day [published: pieters2019]"]


def test_source_changes(shipped_definition: dict[str, Any], against: Any) -> None:
    bfm = next(s for s in shipped_definition["sources"] if s["key"] == "bfm95")
    bfm["citation"] = "ALL-BFM 95 treatment protocol (corrected citation)."
    shipped_definition["sources"].append({"key": "interfant06-protocol", "citation": "Interfant-06 protocol v1.4."})
    note = _element(shipped_definition, "ib")["length_days"]
    note["source"], note["note"] = "interfant06-protocol", "protocol document section 5.2"
    diff = against(shipped_definition)
    assert {(c.path, c.kind, c.category) for c in diff.changes} == {
        ("sources.bfm95.citation", "changed", "source"),
        ("sources.interfant06-protocol", "added", "source"),
        ("elements.ib.length_days.source", "changed", "source"),
        ("elements.ib.length_days.note", "changed", "source"),
    }
    assert diff.by_category("source") == diff.changes
    assert diff.by_category("dose", "days", "guard") == ()


def test_version_bump_is_metadata_only(shipped_definition: dict[str, Any], against: Any) -> None:
    shipped_definition["version"] = "1.1.0"
    shipped_definition["status"] = "active"
    diff = against(shipped_definition)
    assert [(c.path, c.section, c.category, c.old, c.new) for c in diff.changes] == [
        ("version", "protocol", "metadata", "1.0.0", "1.1.0"),
        ("status", "protocol", "metadata", "draft", "active"),
    ]
    assert diff.b["version"] == "1.1.0"


def test_randomisation_added(shipped_definition: dict[str, Any], against: Any) -> None:
    shipped_definition["randomisations"] = [{
        "id": "consolidation", "label": "IB or ADE/MAE", "source": "pieters2019", "evidence": "published",
        "arms": [{"id": "ib", "label": "protocol IB"}, {"id": "aml_blocks", "label": "ADE then MAE"}]}]
    change = _only(against(shipped_definition))
    assert (change.path, change.kind, change.category) == ("randomisations.consolidation", "added", "structure")


# --------------------------------------------------------------------------- two versions, JSON, symmetry


@pytest.fixture
def amendment(shipped_definition: dict[str, Any], write_definition: Write) -> Path:
    """Version 1.1.0: a verified dose, shorter dexamethasone, a lower HSCT threshold, a new source."""
    data = copy.deepcopy(shipped_definition)
    data["version"] = "1.1.0"
    data["sources"].append({"key": "site-protocol", "citation": "Interfant-06 protocol document, version 1.4."})
    amount = _administration(data, "induction", "Dexamethasone")["dose"]["amount"]
    amount.update(value=10, evidence="published", source="site-protocol", note="section 4.1")
    _administration(data, "induction", "Dexamethasone")["days"]["value"] = "8-21"
    _transition(data, "marma", "hsct")["when"]["any"][1]["gte"]["value"] = 1e-4
    return write_definition(data, "interfant06-blinatumomab-1.1.0.yaml")


def test_two_versions_of_one_protocol(amendment: Path) -> None:
    diff = diff_protocols(f"{SHIPPED_ID}@1.0.0", amendment)
    assert (diff.a["version"], diff.b["version"]) == ("1.0.0", "1.1.0")
    assert diff.counts() == {"dose": 1, "days": 1, "guard": 1, "structure": 0, "evidence": 1, "source": 3,
                             "metadata": 1, "total": 8}
    text = diff.to_text()
    assert text.startswith("--- interfant06-blinatumomab 1.0.0 [draft]\n")  # a shipped id: no file shown
    assert f"+++ interfant06-blinatumomab 1.1.0 [draft] ({amendment})\n" in text
    assert "8 changes: 1 dose, 1 days, 1 guard, 1 evidence, 3 source, 1 metadata\n" in text
    assert ("  ~ dose, evidence, source administrations.dexamethasone.dose.amount: 6 mg/m²/day [placeholder] → "
            "10 mg/m²/day [published: site-protocol]\n") in text
    assert "  ~ days      administrations.dexamethasone.days: 8-28 [placeholder] → 8-21 [placeholder]\n" in text
    assert "  ~ source    administrations.dexamethasone.dose.amount.note: recalled; not found in a public source → " \
           "section 4.1\n" in text
    assert "  + source    site-protocol: Interfant-06 protocol document, version 1.4.\n" in text
    # Sections: the protocol first, the bibliography last.
    headers = [line for line in text.splitlines() if line and not line.startswith((" ", "---", "+++"))][2:]
    assert headers[0] == "protocol" and headers[-1] == "sources"


def test_reversed_diff_swaps_sides(amendment: Path) -> None:
    forward = diff_protocols(SHIPPED_ID, amendment)
    backward = diff_protocols(amendment, SHIPPED_ID)
    flip = {"added": "removed", "removed": "added", "changed": "changed", "moved": "moved"}
    assert sorted((c.path, flip[c.kind], c.new, c.old) for c in forward.changes) == \
        sorted((c.path, c.kind, c.old, c.new) for c in backward.changes)


def test_json_round_trip(amendment: Path) -> None:
    diff = diff_protocols(SHIPPED_ID, amendment)
    data = json.loads(diff.to_json())
    assert set(data) == {"format", "a", "b", "identical", "counts", "sections", "changes"}
    assert data["format"] == 1 and data["identical"] is False
    assert set(data["changes"][0]) == {"path", "section", "kind", "category", "old", "new", "old_text", "new_text",
                                       "sourced_path", "guard"}
    assert DefinitionDiff.from_dict(data) == diff
    guard = next(c for c in data["changes"] if c["category"] == "guard")["guard"]
    assert guard["new"] == "risk group = HR or MRD at pre_octadad ≥ 1e-4"
    assert data["sections"]["transitions.marma->hsct"] == "marma → hsct (HSCT)"
    with pytest.raises(ValueError, match="format"):
        DefinitionDiff.from_dict({**data, "format": 99})


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_definition(path: Path) -> None:
    """Against itself: nothing; against the reference protocol, both ways: mirror images that
    survive JSON (whatever fields each definition uses)."""
    assert diff_protocols(path, path).identical
    forward, backward = diff_protocols(SHIPPED_FILE, path), diff_protocols(path, SHIPPED_FILE)
    flip = {"added": "removed", "removed": "added", "changed": "changed", "moved": "moved"}
    assert sorted((c.path, flip[c.kind], json.dumps(c.new), json.dumps(c.old)) for c in forward.changes) == \
        sorted((c.path, c.kind, json.dumps(c.old), json.dumps(c.new)) for c in backward.changes)
    assert DefinitionDiff.from_dict(json.loads(forward.to_json())) == forward


# --------------------------------------------------------------------------- command line


def test_cli_text(cli: Any, amendment: Path) -> None:
    result = cli("diff", SHIPPED_ID, amendment)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  ~ metadata  version: 1.0.0 → 1.1.0" in lines
    assert "  ~ guard     when.any[1].gte: 5e-4 [published: bassett2023] → 1e-4 [published: bassett2023]" in lines
    assert "elements.induction: Induction (IA) with 7-day prednisone prephase" in lines
    assert result.stderr == ""


def test_cli_exit_code(cli: Any, amendment: Path) -> None:
    assert cli("diff", SHIPPED_ID, amendment).exit_code == 0  # like git diff: differences are not an error
    assert cli("diff", SHIPPED_ID, amendment, "--exit-code").exit_code == 1
    same = cli("diff", SHIPPED_ID, SHIPPED_FILE, "--exit-code")
    assert same.exit_code == 0 and same.stdout.endswith("no differences\n")


def test_cli_json(cli: Any, amendment: Path) -> None:
    result = cli("diff", SHIPPED_ID, amendment, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert DefinitionDiff.from_dict(data) == diff_protocols(SHIPPED_ID, amendment)
    assert data["counts"]["total"] == 8


def test_cli_missing_file_is_exit_2(cli: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli("diff", SHIPPED_ID, missing)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {missing}: no such file")


def test_cli_invalid_definitions_are_exit_2_naming_both(cli: Any, shipped_definition: dict[str, Any],
                                                        write_definition: Write) -> None:
    bad = copy.deepcopy(shipped_definition)
    _administration(bad, "induction", "Dexamethasone")["dose"]["amount"]["value"] = "lots"
    worse = copy.deepcopy(shipped_definition)
    worse["status"] = "approved"
    first, second = write_definition(bad, "bad.yaml"), write_definition(worse, "worse.yaml")
    result = cli("diff", first, second)
    assert result.exit_code == 2
    assert result.stdout == ""
    errors = result.stderr.splitlines()
    assert any(line.startswith(f"error: {first}:") and "administrations[2].dose.amount.value" in line
               for line in errors), errors
    assert any(line.startswith(f"error: {second}:") and "status" in line for line in errors), errors
    assert "Traceback" not in result.stderr


def test_public_api() -> None:
    assert {"DefinitionDiff", "diff_definitions", "diff_protocols"} <= set(protocol.__all__)
