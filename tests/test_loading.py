"""_loading: shipped ids, files, the compile cache, schemas, placeholder and evidence reports."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import protocol
from protocol import _loading as loading
from protocol._loading import MANIFEST, dumps, evidence_counts, manifest_text, placeholder_rows, validation_report

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "protocol" / "definitions" / "interfant06-blinatumomab.yaml"


def test_shipped_id_and_path_give_the_same_cached_protocol() -> None:
    by_id = protocol.load_protocol("interfant06-blinatumomab")
    assert protocol.load_protocol(SHIPPED) is by_id  # validated and compiled once
    assert protocol.load_protocol("interfant06-blinatumomab@1.0.0") is by_id
    with pytest.raises(protocol.DefinitionError, match="expected version 9.9.9, got 1.0.0"):
        protocol.load_protocol("interfant06-blinatumomab@9.9.9")


def test_an_edited_file_is_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    first = protocol.load_protocol(path)
    data["version"] = "1.0.1"
    path.write_text(yaml.safe_dump(data, allow_unicode=True) + "\n", encoding="utf-8")
    assert protocol.load_protocol(path).version == "1.0.1"
    assert first.version == "1.0.0"


def test_unknown_protocol_lists_the_shipped_ones() -> None:
    with pytest.raises(protocol.DefinitionError, match=r"shipped: .*interfant06-blinatumomab"):
        protocol.load_protocol("interfant99")


def test_list_protocols() -> None:
    ids = [p.id for p in protocol.list_protocols()]
    assert len(ids) == len(set(ids)) and "interfant06-blinatumomab" in ids
    assert {"interfant06", "blinatumomab-bridge-hsct", "aall1731", "interfant21"} <= set(ids)


def test_schemas_are_json_schema_documents() -> None:
    d = protocol.definition_schema()
    assert d["$schema"].endswith("2020-12/schema")
    assert {"id", "version", "elements", "transitions", "sources"} <= set(d["properties"])
    assert d["additionalProperties"] is False
    p = protocol.patient_schema()
    assert {"birth_date", "kmt2a", "measurements", "mrd", "events"} <= set(p["properties"])


def test_validation_report_counts_and_lists_placeholders() -> None:
    report = validation_report("interfant06-blinatumomab")
    counts = report["evidence"]
    assert counts == evidence_counts(protocol.load_protocol("interfant06-blinatumomab"))
    assert counts["placeholder"] == len(report["placeholders"]) > 0
    assert counts["published"] >= 8  # blinatumomab dose and days, risk thresholds, MRD threshold...
    rows = {r["field"]: r for r in report["placeholders"]}
    assert rows["end_of_therapy.weeks"]["value"] == "104"
    assert rows["elements[0].administrations[5].dose.amount"]["value"] is None  # asparaginase: not known
    # The published blinatumomab dose is not a placeholder.
    assert "elements[1].administrations[0].dose.amount" not in rows


def test_every_placeholder_has_a_note() -> None:
    for row in placeholder_rows(protocol.load_protocol("interfant06-blinatumomab")):
        assert row["note"], f"{row['field']}: a placeholder must say why it is unverified"


def test_dumps_is_json_with_one_list_element_per_line() -> None:
    import datetime as dt

    text = dumps({"a": [{"x": 1}, {"y": dt.date(2026, 1, 2)}], "b": None, "c": []})
    assert json.loads(text) == {"a": [{"x": 1}, {"y": "2026-01-02"}], "b": None, "c": []}
    assert text.splitlines()[2] == '    {"x": 1},'


# --------------------------------------------------------------------------- a shipped id is the shipped file


def _tampered(tmp_path: Path, name: str) -> Path:
    """A copy of the shipped definition with prednisone 600 instead of 60 mg/m²/day, under ``name``."""
    text = SHIPPED.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    dose = data["elements"][0]["administrations"][0]["dose"]["amount"]
    assert dose["value"] == 60  # the prephase prednisone
    dose["value"] = 600
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_a_file_named_like_a_shipped_id_in_the_working_directory_is_never_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_patient: Any) -> None:
    # The defect of issue 16 §1: ./interfant06-blinatumomab with prednisone 600 gave a plan
    # of 222 mg/day under the header "interfant06-blinatumomab 1.0.0".
    _tampered(tmp_path, "interfant06-blinatumomab")
    _tampered(tmp_path, "interfant06-blinatumomab@1.0.0")
    monkeypatch.chdir(tmp_path)
    shipped = protocol.load_protocol(SHIPPED)
    for ref in ("interfant06-blinatumomab", "interfant06-blinatumomab@1.0.0"):
        p = protocol.load_protocol(ref)
        assert p is shipped and p.origin == "shipped" and p.provenance is None
        assert p.definition.elements[0].administrations[0].dose.amount.value == 60
    plan = protocol.plan(make_patient(), as_of=dt.date(2026, 5, 5))
    first = plan.items[0]
    assert first.slot.name.startswith("Prednisone") and "60 mg/m²/day" in first.dose.working
    assert plan.to_dict()["protocol"]["origin"] == "shipped"


def test_a_folder_named_like_a_shipped_id_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "interfant06-blinatumomab").mkdir()
    monkeypatch.chdir(tmp_path)
    assert protocol.load_protocol("interfant06-blinatumomab").origin == "shipped"


def test_a_file_is_used_only_when_given_as_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tampered(tmp_path, "mydef")
    _tampered(tmp_path, "mydef.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(protocol.DefinitionError, match=r"not a shipped protocol id .*give its path, e\.g\. ./mydef"):
        protocol.load_protocol("mydef")
    for ref in ("./mydef", "mydef.yaml", str(tmp_path / "mydef"), Path("mydef.yaml")):
        p = protocol.load_protocol(ref)
        assert p.id == "interfant06-blinatumomab" and p.origin != "shipped"
        assert p.definition.elements[0].administrations[0].dose.amount.value == 600


def test_a_plan_from_a_file_says_it_is_not_the_shipped_definition(tmp_path: Path, make_patient: Any) -> None:
    path = _tampered(tmp_path, "x.yaml")
    p = protocol.load_protocol(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert p.sha256 == digest and p.origin == str(path.resolve())
    assert p.provenance == f"from file {path.resolve()} (sha256 {digest[:12]}), not the shipped definition"
    shown = protocol.plan(make_patient(), protocol=p, as_of=dt.date(2026, 5, 5)).to_dict()["protocol"]
    assert shown["provenance"] == p.provenance and shown["sha256"] == digest


def test_the_shipped_definitions_match_the_release_manifest() -> None:
    manifest = (ROOT / "protocol" / "definitions" / MANIFEST).read_text(encoding="utf-8")
    assert manifest == manifest_text(), (
        "a shipped definition changed: review it with `protocol diff`, then bump its version and run "
        "`python -m protocol._loading --write-manifest`")
    for p in protocol.list_protocols():
        assert p.origin == "shipped" and p.provenance is None
        assert f"{p.sha256}  {Path(str(p.path)).name}" in manifest


def test_a_shipped_file_changed_after_release_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "definitions"
    folder.mkdir()
    for f in (ROOT / "protocol" / "definitions").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(loading, "_definitions_dir", lambda: folder)
    monkeypatch.setattr(loading, "_SHIPPED", None)
    assert protocol.load_protocol("interfant06-blinatumomab").origin == "shipped"  # an identical copy
    target = folder / "interfant06-blinatumomab.yaml"
    target.write_text(target.read_text(encoding="utf-8").replace("value: 60,", "value: 600,", 1)
                      if "value: 60," in target.read_text(encoding="utf-8")
                      else target.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    with pytest.raises(protocol.DefinitionError, match=r"does not match the release manifest SHA256SUMS"):
        protocol.load_protocol("interfant06-blinatumomab")
    (folder / MANIFEST).unlink()
    monkeypatch.setattr(loading, "_SHIPPED", None)
    with pytest.raises(protocol.DefinitionError, match=r"no entry"):
        protocol.load_protocol("interfant06")


def test_a_site_amendment_keeps_the_origin_of_its_base() -> None:
    amended = protocol.load_protocol("interfant06-blinatumomab", ROOT / "tests" / "data" / "site" / "amendment.yaml")
    base = protocol.load_protocol("interfant06-blinatumomab")
    assert amended is not base and amended.origin == "shipped" and amended.sha256 == base.sha256
    assert amended.site_sha256 is not None


def test_the_command_line_plans_with_the_shipped_file_whatever_lies_in_the_working_directory(
        tmp_path: Path, make_patient: Any) -> None:
    import subprocess
    import sys

    patient = make_patient()
    _tampered(tmp_path, "interfant06-blinatumomab")
    run = subprocess.run([sys.executable, "-m", "protocol", "plan", str(patient), "--as-of", "2026-05-05",
                          "--format", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["protocol"]["origin"] == "shipped" and data["protocol"]["provenance"] is None
    assert data["protocol"]["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert "60 mg/m²/day" in json.dumps(data["items"][0], ensure_ascii=False)


def _one_megabyte(shape: str) -> str:
    """A plain (alias-free) YAML definition of just under 1 MB: the shipped one plus bulk."""
    base = SHIPPED.read_text(encoding="utf-8")
    if shape == "wrong-types":  # every value of 20,000 sources of the wrong type
        bulk = "".join(f"- key: {i}\n  citation: {i}\n  doi:\n  - {i}\n" for i in range(24_000))
        text = base.replace("\nsources:\n", "\nsources:\n" + bulk, 1)
    elif shape == "copied-elements":  # the elements again under new ids: dead ends, unreachable
        elements = base[base.index("\nelements:\n") + 11:base.index("\ntransitions:")]
        copies = "".join(elements.replace("- id: ", f"- id: c{k}") for k in range(1_000_000 // len(elements) - 1))
        text = base.replace("\nelements:\n", "\nelements:\n" + copies, 1)
    elif shape == "many-sources":  # valid: 7,000 more sources (accepted)
        bulk = "".join(f"  - key: extra{i}\n    citation: \"A citation of about the usual length, {i}.\"\n"
                       "    url: \"https://example.org/a/path/to/the/source\"\n" for i in range(7_000))
        text = base.replace("\nsources:\n", "\nsources:\n" + bulk, 1)
    else:  # "flat-list": 140,000 numbers in an unknown field
        text = base + "\nextra: [" + ", ".join(str(i) for i in range(140_000)) + "]\n"
    while len(text.encode()) > 1_048_576:
        text = text[:text.rindex("\n- ", 0, len(text) - 1)] + "\n" if shape != "flat-list" else text[:-200_000] + "]\n"
    return text


@pytest.mark.parametrize("shape", ["wrong-types", "copied-elements", "flat-list", "many-sources"])
def test_a_one_megabyte_definition_is_accepted_or_refused_within_two_seconds(tmp_path: Path, shape: str) -> None:
    # Issue 16 §2: any file of at most 1 MB is accepted or refused within 2 s. These took 2-5 s
    # (3.5 s CPU for wrong-types); CPU time of this process, so a busy machine does not count.
    import gc

    path = tmp_path / f"{shape}.yaml"
    path.write_text(_one_megabyte(shape), encoding="utf-8")
    assert 700_000 < path.stat().st_size <= 1_048_576
    # CPU time still grows when other jobs share the two cores (2.3 s measured during a CI run
    # for 0.6-0.8 s alone): the best of two attempts is taken; a real regression fails both.
    gc.collect()
    best = min(_check_one_megabyte(path, shape) for _ in range(2))
    assert best < 2.0, f"{best:.2f} s CPU (best of two)"


def _check_one_megabyte(path: Path, shape: str) -> float:
    """Load the file once, check the outcome; the CPU seconds it took."""
    import time

    from protocol import _loading

    for key in [k for k in _loading._CACHE if k[0] == str(path.resolve())]:
        del _loading._CACHE[key]  # each attempt reads and validates the file again
    start = time.process_time()
    if shape == "many-sources":
        assert protocol.load_protocol(path).id == "interfant06-blinatumomab"
        return time.process_time() - start
    with pytest.raises(protocol.DefinitionError) as info:
        protocol.load_protocol(path)
    elapsed = time.process_time() - start
    assert len(info.value.problems) <= 51  # the first 50, then how many more
    if len(info.value.problems) == 51:
        assert info.value.problems[-1].message.endswith("more problems not listed")
    assert all(p.file == str(path) for p in info.value.problems)
    return elapsed
