"""_loading: shipped ids, files, the compile cache, schemas, placeholder and evidence reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import protocol
from protocol._loading import dumps, evidence_counts, placeholder_rows, validation_report

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
