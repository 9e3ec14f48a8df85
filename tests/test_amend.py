"""Amendments for living patients (``protocol._amend``, ``protocol amend``).

A registry holds patients at several stages of interfant06-blinatumomab. The amendments in
tests/data/amendments/ carry INVENTED test values (never shipped): a placeholder dose, the
HSCT threshold, an added assessment, a removed administration. Each preview must list exactly
the patients and items that re-planning by hand (here, with ``plan``) shows changing.
"""

from __future__ import annotations

import copy
import difflib
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from protocol._amend import apply, preview, retract
from protocol._errors import InputError
from protocol._io import read_document
from protocol._loading import load_protocol
from protocol._versions import patient_version, plan_as_known, version_history
from protocol.schedule import plan

from .test_registry import Clock, open_reg

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "patients"
AMEND = ROOT / "tests" / "data" / "amendments"
DOSE = AMEND / "dose-octadad-dexamethasone.yaml"
HSCT = AMEND / "hsct-threshold.yaml"
ADD = AMEND / "add-assessment.yaml"
REMOVE = AMEND / "remove-thioguanine.yaml"
TODAY = dt.date(2026, 11, 21)
RECORDED = {"given", "omitted", "done"}


def _example(name: str) -> dict[str, Any]:
    return copy.deepcopy(read_document(EXAMPLES / name).data)


def patients() -> dict[str, dict[str, Any]]:
    """Patients at several stages: induction, MARMA (MRD pending), MRD 2e-4 before OCTADAD
    (OCTADAD under 5e-4), late OCTADAD with items recorded as given, HR to HSCT."""
    early = _example("mr-on-time.yaml")
    early.update(id="AMD-EARLY", diagnosis_date="2026-10-26")
    early["measurements"] = [{"date": "2026-10-26", "height_cm": 66, "weight_kg": 7.4}]
    early["birth_date"] = "2026-01-20"
    early.pop("mrd", None)
    early["events"] = [{"type": "element_started", "element": "induction", "date": "2026-10-26"}]
    pending = _example("mr-pending-mrd.yaml")
    pending["id"] = "AMD-PENDING"
    mrd2 = _example("mr-pending-mrd.yaml")
    mrd2["id"] = "AMD-MRD2"
    mrd2["mrd"].append({"timepoint": "pre_octadad", "date": "2026-11-02", "value": 2.0e-4})
    late = _example("mr-on-time.yaml")
    late["id"] = "AMD-LATE"
    late["events"] += [{"type": "item_given", "item": "octadad:dexamethasone@1", "date": "2026-09-23"},
                       {"type": "item_given", "item": "octadad:thioguanine@36", "date": "2026-10-28"}]
    hr = _example("hr-to-hsct.yaml")
    hr["id"] = "AMD-HR"
    return {p["id"]: p for p in (early, pending, mrd2, late, hr)}


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def reg(db_url: str, clock: Clock) -> Any:
    """The registry of :func:`patients`, on SQLite and on PostgreSQL (``db_url``)."""
    r = open_reg(db_url, clock)
    for data in patients().values():
        r.add_patient(data, by="alice")
    yield r
    r.close()


def by_hand(reg: Any, path: Path) -> dict[str, set[tuple[str, str]]]:
    """Re-plan each patient with both versions and list the changed (kind, ref) by hand."""
    old_p, new_p = load_protocol("interfant06-blinatumomab"), load_protocol(path)
    out: dict[str, set[tuple[str, str]]] = {}
    for pid in patients():
        patient = reg.patient(pid)
        try:
            a, b = plan(patient, old_p, as_of=TODAY, today=TODAY), plan(patient, new_p, as_of=TODAY, today=TODAY)
        except InputError:
            continue
        key = lambda i: i.ref if i.branch is None else f"{i.ref} ({i.branch})"  # noqa: E731
        ia = {key(i): i for i in a.items if i.status not in RECORDED and i.date >= TODAY}
        ib = {key(i): i for i in b.items if i.status not in RECORDED and i.date >= TODAY}
        got = {("removed", k) for k in ia.keys() - ib.keys()} | {("added", k) for k in ib.keys() - ia.keys()}
        got |= {("dose", k) for k in ia.keys() & ib.keys()
                if (ia[k].dose and ia[k].dose.text) != (ib[k].dose and ib[k].dose.text)}
        got |= {("decision", d.id) for d, e in zip(a.decisions, b.decisions) if d.outcome != e.outcome}
        out[pid] = got
    return out


def listed(result: Any, kinds: tuple[str, ...] = ("dose", "added", "removed", "decision")) -> dict[str, set]:
    return {p.patient: {(c.kind, c.ref) for c in p.changes if c.kind in kinds} for p in result.patients
            if not p.problems}


# --------------------------------------------------------------------------- preview


def test_a_dose_amendment_lists_exactly_the_patients_and_items_it_changes(reg: Any) -> None:
    result = preview(reg, DOSE, as_of=TODAY)
    assert listed(result) == by_hand(reg, DOSE)
    changed = {p.patient for p in result.patients if p.changed}
    # Not yet at OCTADAD days 1-21 (or maybe on that branch); AMD-LATE is past them, AMD-HR goes to HSCT.
    assert changed == {"AMD-EARLY", "AMD-PENDING", "AMD-MRD2"}
    early = next(p for p in result.patients if p.patient == "AMD-EARLY")
    assert all(c.ref.startswith("octadad:dexamethasone@") for c in early.changes if c.kind == "dose")
    c = next(c for c in early.changes if c.kind == "dose")
    assert c.old.endswith("[placeholder]") and c.new.endswith("[placeholder]") and c.old != c.new
    # The recorded dexamethasone of AMD-LATE is never changed: it is listed as kept, if at all.
    late = next(p for p in result.patients if p.patient == "AMD-LATE")
    assert not late.changes and all(k.ref.startswith("octadad:dexamethasone@1") for k in late.kept)
    assert result.summary.startswith("5 patients: 3 change, 0 with a changed decision, 2 unchanged")


def test_the_hsct_threshold_amendment_changes_one_decision(reg: Any) -> None:
    result = preview(reg, HSCT, as_of=TODAY)
    assert listed(result) == by_hand(reg, HSCT)
    decided = {p.patient: [c for c in p.changes if c.kind == "decision"] for p in result.patients}
    assert [p for p, cs in decided.items() if cs] == ["AMD-MRD2"]
    [d] = decided["AMD-MRD2"]
    assert d.old.startswith("octadad") and d.new.startswith("hsct")
    assert "1 with a changed decision" in result.summary
    assert result.to_text().splitlines()[1] == result.summary  # the summary first


def test_an_added_assessment_appears_only_where_it_is_still_ahead(reg: Any) -> None:
    result = preview(reg, ADD, as_of=TODAY)
    assert listed(result) == by_hand(reg, ADD)
    added = {p.patient: {c.ref for c in p.changes if c.kind == "added"} for p in result.patients}
    # On the OCTADAD branch of the decision still ahead of this patient.
    assert added["AMD-EARLY"] == {"octadad:octadad_day1_counts@1 (pre_octadad→octadad)"}
    assert not added["AMD-LATE"] and not added["AMD-HR"]


def test_a_removed_administration_refuses_the_patient_who_was_given_it(reg: Any) -> None:
    result = preview(reg, REMOVE, as_of=TODAY)
    assert listed(result) == {k: v for k, v in by_hand(reg, REMOVE).items() if k != "AMD-LATE"}
    late = next(p for p in result.patients if p.patient == "AMD-LATE")
    assert late.problems and any("thioguanine" in m for m in late.problems)
    early = next(p for p in result.patients if p.patient == "AMD-EARLY")
    assert {c.ref.split("@")[0] for c in early.changes} == {"octadad:thioguanine"}
    assert "1 refused" in result.summary


def test_json_and_csv(reg: Any) -> None:
    result = preview(reg, DOSE, as_of=TODAY)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["summary"] == result.summary and len(data["patients"]) == 5
    rows = result.to_csv().splitlines()
    assert rows[0].startswith("patient,from,to,status,kind")
    assert any(r.startswith("AMD-HR,") and ",no change," in r for r in rows)


# --------------------------------------------------------------------------- apply / as of / retract


def test_apply_moves_and_earlier_plans_stay_byte_identical(reg: Any, clock: Clock) -> None:
    before = {pid: plan_as_known(reg, pid, TODAY).to_json() for pid in patients()}
    clock.t = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
    done = apply(reg, HSCT, reason="INVENTED test amendment 1", by="bob")
    assert {m[0] for m in done.moved} == set(patients()) and not done.refused
    v = patient_version(reg, "AMD-MRD2")
    assert v.ref == "interfant06-blinatumomab@1.1.0" and v.recorded_by == "bob" and v.reason.startswith("INVENTED")
    log = version_history(reg, "AMD-MRD2")
    assert [(r["from"], r["to"]) for r in log] == [(None, "interfant06-blinatumomab@1.0.0"),
                                                 ("interfant06-blinatumomab@1.0.0", "interfant06-blinatumomab@1.1.0")]
    # The registry now plans with the new version: AMD-MRD2 goes to HSCT.
    now = reg._plan(reg.patient("AMD-MRD2"))
    assert now.protocol.version == "1.1.0"
    assert next(d for d in now.decisions if d.id == "pre_octadad").outcome == "hsct"
    # Its calendar follows the new version too (HSCT instead of OCTADAD).
    from protocol._calendar import calendar_for

    ics = calendar_for(reg, "AMD-MRD2", as_of=TODAY).decode()
    unfolded = ics.replace("\r\n ", "")
    assert "1.1.0" in unfolded and "(OCTADAD)" not in unfolded  # before the move, OCTADAD items were there
    # As known on the earlier day: the old version, byte for byte.
    assert {pid: plan_as_known(reg, pid, TODAY).to_json() for pid in patients()} == before
    # The worklist projection follows the new version too, and stays fresh (not re-planned on every call).
    reg.worklist(TODAY, 7)
    version = reg._conn.execute("SELECT definition FROM projection WHERE patient = 'AMD-MRD2'").fetchone()[0]
    assert "@1.1.0|" in version
    assert reg.worklist(TODAY, 7).refreshed == 0
    # Later writes are validated against the new version: OCTADAD is no longer this patient's branch.
    octadad = [("event", {"type": "element_completed", "element": "marma", "date": "2026-11-04"}),
               ("event", {"type": "element_started", "element": "octadad", "date": "2026-11-05"})]
    with pytest.raises(InputError, match="contradicts the protocol's rule for the pre_octadad decision"):
        reg.record_many("AMD-MRD2", octadad, by="bob")
    reg.record_many("AMD-PENDING", [octadad[0]], by="bob")  # still pending: nothing contradicts
    reg.record("AMD-MRD2", "measurement", {"date": "2026-11-20", "height_cm": 70, "weight_kg": 8.2}, by="bob")


def test_apply_refuses_an_invalid_history_and_keeps_that_patient(reg: Any) -> None:
    done = apply(reg, REMOVE, reason="INVENTED test amendment 2", by="bob")
    assert [p for p, _ in done.refused] == ["AMD-LATE"]
    assert any("thioguanine" in m for m in done.refused[0][1])
    assert patient_version(reg, "AMD-LATE").version == "1.0.0"
    assert patient_version(reg, "AMD-EARLY").version == "2.0.0"


def test_retract_restores_the_earlier_version(reg: Any, clock: Clock) -> None:
    old = reg._plan(reg.patient("AMD-MRD2")).to_json()
    done = apply(reg, HSCT, reason="INVENTED test amendment 1", patients=["AMD-MRD2"], by="bob")
    [(pid, seq, _, _)] = done.moved
    assert reg._plan(reg.patient(pid)).to_json() != old
    with pytest.raises(InputError, match="reason"):
        retract(reg, pid, seq, reason=" ", by="bob")
    r = retract(reg, pid, seq, reason="applied too early", by="carol")
    assert patient_version(reg, pid).version == "1.0.0"
    assert reg._plan(reg.patient(pid)).to_json() == old
    log = version_history(reg, pid)
    assert log[-1]["retracts"] == seq and log[-1]["seq"] == r and log[-2]["retracted_by"] == r
    with pytest.raises(InputError, match="retraction|not .* current"):
        retract(reg, pid, seq, reason="again", by="carol")
    with pytest.raises(InputError, match="registered with"):
        retract(reg, pid, log[0]["seq"], reason="no", by="carol")


def test_bad_amendments_write_nothing(reg: Any, tmp_path: Path) -> None:
    count = lambda: reg._conn.execute("SELECT count(*) FROM version_entries").fetchone()[0]  # noqa: E731
    before = count()
    other = ROOT / "protocol" / "definitions" / "interfant21-blinatumomab.yaml"
    if not other.exists():
        other = next(p for p in (ROOT / "protocol" / "definitions").glob("*.yaml")
                     if "interfant06-blinatumomab" not in p.name)
    with pytest.raises(InputError, match="no registered patient is on"):
        apply(reg, other, reason="x", by="bob")
    same = tmp_path / "same.yaml"
    same.write_text(DOSE.read_text(encoding="utf-8").replace('version: "1.0.1"', 'version: "1.0.0"'),
                    encoding="utf-8")
    with pytest.raises(InputError, match="greater than 1.0.0"):
        apply(reg, same, reason="x", by="bob")
    with pytest.raises(InputError, match="greater than 1.0.0"):
        preview(reg, same, as_of=TODAY)
    broken = tmp_path / "broken.yaml"
    broken.write_text("format: 1\nid: interfant06-blinatumomab\nversion: '9.0.0'\n", encoding="utf-8")
    with pytest.raises(InputError):
        apply(reg, broken, reason="x", by="bob")
    with pytest.raises(InputError, match="reason"):
        apply(reg, HSCT, reason="", by="bob")
    assert count() == before


# --------------------------------------------------------------------------- the command line


def _protocol(*args: Any, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROTOCOL_DB": str(db), "USER": "dana"}
    return subprocess.run([sys.executable, "-m", "protocol", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_command_line_previews_applies_and_retracts(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    with open_reg(db) as reg:
        for data in patients().values():
            reg.add_patient(data, by="alice")
    shown = _protocol("amend", "preview", HSCT, "--as-of", TODAY.isoformat(), db=db)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1] == "5 patients: 1 change, 1 with a changed decision, 4 unchanged"
    as_json = json.loads(_protocol("amend", "preview", HSCT, "--as-of", TODAY.isoformat(), "--format", "json",
                                   db=db).stdout)
    assert [p["patient"] for p in as_json["patients"] if p["decision_changed"]] == ["AMD-MRD2"]
    plan_before = _protocol("plan", "AMD-MRD2", "--format", "json", db=db)
    assert json.loads(plan_before.stdout)["protocol"]["version"] == "1.0.0"
    moved = _protocol("amend", "apply", HSCT, "--reason", "INVENTED test amendment", "--patients", "AMD-MRD2", db=db)
    assert moved.returncode == 0, moved.stderr
    assert "moved AMD-MRD2: interfant06-blinatumomab@1.0.0 → interfant06-blinatumomab@1.1.0" in moved.stdout
    after = json.loads(_protocol("plan", "AMD-MRD2", "--format", "json", db=db).stdout)
    assert after["protocol"]["version"] == "1.1.0" and after["protocol"]["origin"] == "registry"
    seq = moved.stdout.rsplit("#", 1)[1].strip(")\n ")
    history = _protocol("amend", "history", "AMD-MRD2", db=db).stdout
    assert "1.0.0 → interfant06-blinatumomab@1.1.0: INVENTED test amendment" in history and "dana" in history
    back = _protocol("amend", "retract", "AMD-MRD2", seq, "--reason", "wrong patient", db=db)
    assert back.returncode == 0, back.stderr
    assert json.loads(_protocol("plan", "AMD-MRD2", "--format", "json", db=db).stdout)["protocol"]["version"] == "1.0.0"
    refused = _protocol("amend", "apply", REMOVE, "--reason", "INVENTED", db=db)
    assert refused.returncode == 2 and "refused AMD-LATE" in refused.stderr and "Traceback" not in refused.stderr
    bad = _protocol("amend", "preview", tmp_path / "missing.yaml", db=db)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_a_changed_site_amendment_is_previewed_the_same_way(reg: Any) -> None:
    site = AMEND / "site-dexamethasone.yaml"
    result = preview(reg, "interfant06-blinatumomab", site=site, from_site="", as_of=TODAY)
    # The site's (INVENTED) verified value is the dose amendment's value: the same patients and items change.
    assert listed(result) == listed(preview(reg, DOSE, as_of=TODAY))
    assert any(".dexamethasone.dose.amount.value" in c for c in result.definition_changes)
    assert result.sites == (None, str(site)) and "site amendment none →" in result.to_text().splitlines()[0]
    # The same site on both sides, same version: nothing to preview.
    same = preview(reg, "interfant06-blinatumomab", site=site, from_site=site, as_of=TODAY)
    assert all(p.already for p in same.patients)


def _dexamethasone(result: Any) -> set[str]:
    return {i.dose.text for i in result.items if i.ref.startswith("octadad:dexamethasone@") and i.dose}


def test_a_site_amendment_is_applied_kept_and_retracted_like_a_version(reg: Any, clock: Clock, tmp_path: Path) -> None:
    site = AMEND / "site-dexamethasone.yaml"
    before = {pid: plan_as_known(reg, pid, TODAY).to_json() for pid in patients()}
    placeholder = _dexamethasone(reg._plan(reg.patient("AMD-MRD2")))
    clock.t = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
    done = apply(reg, "interfant06-blinatumomab", site=site, reason="INVENTED site values verified", by="bob")
    assert {m[0] for m in done.moved} == set(patients()) and not done.refused
    assert done.moved[0][3] == "interfant06-blinatumomab@1.0.0 + site-dexamethasone.yaml"
    v = patient_version(reg, "AMD-MRD2")
    assert v.version == "1.0.0" and v.site is not None and v.site[0] == "Invented Test Site"
    assert v.site[2] == __import__("hashlib").sha256(site.read_bytes()).hexdigest()
    # The registry plans with the verified value from now on.
    now = reg._plan(reg.patient("AMD-MRD2"))
    assert _dexamethasone(now) != placeholder
    assert now.protocol.site[0] == "Invented Test Site"
    # ...even after the file is gone: its bytes are kept in the registry.
    copy_ = tmp_path / "site.yaml"
    copy_.write_bytes(site.read_bytes())
    from protocol import _versions

    _versions._COMPILED.clear()
    assert _dexamethasone(reg._plan(reg.patient("AMD-MRD2"))) == _dexamethasone(now)
    # Plans as known before the move are byte-identical (the placeholder); the projection's key names the site.
    assert {pid: plan_as_known(reg, pid, TODAY).to_json() for pid in patients()} == before
    reg.worklist(TODAY, 7)
    key = reg._conn.execute("SELECT definition FROM projection WHERE patient = 'AMD-MRD2'").fetchone()[0]
    assert "+" + v.site[2][:16] in key and reg.worklist(TODAY, 7).refreshed == 0
    # Nothing to preview again: the site is the recorded one (the default compares with what is recorded).
    assert all(p.already for p in preview(reg, "interfant06-blinatumomab", site=site, as_of=TODAY).patients)
    assert all(p.already for p in preview(reg, "interfant06-blinatumomab", as_of=TODAY).patients)
    # A new version carries the recorded site amendment over, unless told otherwise; this site file names
    # version 1.0.0, so carrying it to 1.1.0 is refused per patient with the reason.
    carried = preview(reg, HSCT, as_of=TODAY)
    assert all(p.problems and "site amendment does not apply" in p.problems[0] for p in carried.patients)
    dropped = preview(reg, HSCT, site="", as_of=TODAY)
    assert not any(p.problems for p in dropped.patients if p.patient != "AMD-LATE")
    assert any(c.kind == "dose" and c.ref.startswith("octadad:dexamethasone@")
               for p in dropped.patients for c in p.changes)
    # Retracting the move returns the patient to the placeholder.
    seq = next(m[1] for m in done.moved if m[0] == "AMD-MRD2")
    retract(reg, "AMD-MRD2", seq, reason="INVENTED: verified against the wrong section", by="carol")
    assert patient_version(reg, "AMD-MRD2").site is None
    assert _dexamethasone(reg._plan(reg.patient("AMD-MRD2"))) == placeholder
    log = version_history(reg, "AMD-MRD2")
    assert log[1]["site"]["site"] == "Invented Test Site" and log[0]["site"] is None


def test_a_site_file_that_does_not_apply_writes_nothing(reg: Any, tmp_path: Path) -> None:
    count = lambda: reg._conn.execute("SELECT count(*) FROM version_entries").fetchone()[0]  # noqa: E731
    before = count()
    bad = tmp_path / "site.yaml"
    bad.write_text((AMEND / "site-dexamethasone.yaml").read_text(encoding="utf-8").replace(
        "elements[4].administrations[0].dose.amount", "elements[0].nothing"), encoding="utf-8")
    with pytest.raises(InputError, match="site.yaml"):
        apply(reg, "interfant06-blinatumomab", site=bad, reason="x", by="bob")
    assert count() == before


def test_the_command_line_records_verified_values_and_refuses_another_site_file(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    site = AMEND / "site-dexamethasone.yaml"
    with open_reg(db) as r:
        r.add_patient(patients()["AMD-MRD2"], by="alice")
    shown = _protocol("amend", "preview", "interfant06-blinatumomab", "--site", site, "--as-of", TODAY.isoformat(), db=db)
    assert shown.returncode == 0, shown.stderr
    assert "1 patient: 1 change" in shown.stdout and "+ site-dexamethasone.yaml" in shown.stdout
    placeholder = json.loads(_protocol("plan", "AMD-MRD2", "--format", "json", db=db).stdout)
    moved = _protocol("amend", "apply", "interfant06-blinatumomab", "--site", site, "--reason", "INVENTED values",
                      db=db)
    assert moved.returncode == 0, moved.stderr
    assert "→ interfant06-blinatumomab@1.0.0 + site-dexamethasone.yaml" in moved.stdout
    # Every plan follows the recorded site, without --site; the same file may be named, another is refused.
    planned = _protocol("plan", "AMD-MRD2", "--format", "json", db=db)
    assert planned.returncode == 0 and json.loads(planned.stdout) != placeholder
    assert _protocol("plan", "AMD-MRD2", "--site", site, "--format", "json", db=db).stdout == planned.stdout
    other = tmp_path / "other.yaml"
    other.write_text(site.read_text(encoding="utf-8").replace("value: 8", "value: 7"), encoding="utf-8")
    refused = _protocol("plan", "AMD-MRD2", "--site", other, db=db)
    assert refused.returncode == 2 and "recorded in the registry" in refused.stderr and "Traceback" not in refused.stderr
    # Dropping it is an amendment too, previewed and applied with --site none.
    back = _protocol("amend", "apply", "interfant06-blinatumomab", "--site", "none", "--reason", "INVENTED undo",
                     db=db)
    assert back.returncode == 0, back.stderr
    assert json.loads(_protocol("plan", "AMD-MRD2", "--format", "json", db=db).stdout) == placeholder


def test_a_decision_taken_before_the_amendment_is_kept_as_it_was_taken(reg: Any, clock: Clock) -> None:
    # In OCTADAD with MRD 2e-4 before it: under the INVENTED 1e-4 threshold the rule would say HSCT,
    # but the decision was taken under 1.0.0, which judged it; it stays as it was taken.
    taken = patients()["AMD-LATE"]
    taken["id"] = "AMD-TAKEN"
    taken["mrd"] = [m for m in taken["mrd"] if m["timepoint"] != "pre_octadad"]
    taken["mrd"].append({"timepoint": "pre_octadad", "date": "2026-09-22", "value": 2.0e-4})
    reg.add_patient(taken, by="alice")
    shown = {p.patient: p for p in preview(reg, HSCT, as_of=TODAY).patients}
    assert not shown["AMD-TAKEN"].problems and not shown["AMD-TAKEN"].decision_changed
    assert shown["AMD-MRD2"].decision_changed  # not taken yet: the new rule applies
    clock.t = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
    done = apply(reg, HSCT, reason="INVENTED test amendment 1", patients=["AMD-TAKEN", "AMD-MRD2"], by="bob")
    assert {m[0] for m in done.moved} == {"AMD-TAKEN", "AMD-MRD2"} and not done.refused
    now = reg._plan(reg.patient("AMD-TAKEN"))
    decision = next(d for d in now.decisions if d.id == "pre_octadad")
    assert now.protocol.version == "1.1.0" and decision.outcome == "octadad" and decision.status == "recorded"
    assert any("taken under an earlier version" in w for w in now.warnings)
    assert patient_version(reg, "AMD-TAKEN").version == "1.1.0"
    # Recording goes on under the new version; a retraction returns to 1.0.0 without the note.
    reg.record("AMD-TAKEN", "measurement", {"date": "2026-11-20", "height_cm": 72, "weight_kg": 8.6}, by="bob")
    seq = next(m[1] for m in done.moved if m[0] == "AMD-TAKEN")
    retract(reg, "AMD-TAKEN", seq, reason="INVENTED: undo", by="carol")
    back = reg._plan(reg.patient("AMD-TAKEN"))
    assert back.protocol.version == "1.0.0" and not any("earlier version" in w for w in back.warnings)


@pytest.mark.parametrize("name, removed", [("add-assessment", 0), ("dose-octadad-dexamethasone", 1),
                                           ("hsct-threshold", 1), ("remove-thioguanine", 9)])
def test_each_test_amendment_changes_only_what_it_says(name: str, removed: int) -> None:
    """The invented amendments are the shipped definition with their one change (and the
    version line): none may drop a value of the shipped file by being older than it (they once
    lacked the OCTADAD vincristine cap, so every preview also removed a cap)."""
    shipped = (ROOT / "protocol" / "definitions" / "interfant06-blinatumomab.yaml").read_text(encoding="utf-8")
    amended = (ROOT / "tests" / "data" / "amendments" / f"{name}.yaml").read_text(encoding="utf-8")
    old = [line for line in shipped.splitlines() if not line.startswith(("version:", "#"))]
    new = [line for line in amended.splitlines() if not line.startswith(("version:", "#"))]
    gone = [line for line in difflib.ndiff(old, new) if line.startswith("- ")]
    assert len(gone) == removed, gone
