"""_io and _errors: reading files, line numbers, readable problems, atomic writes, CLI dates."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol._errors import InputError, PatientError, Problem
from protocol._io import format_loc, parse_date, parse_text, problems_from_validation, read_document, write_atomic
from protocol._models import Measurement


def test_problem_text_names_file_line_field_and_message() -> None:
    assert str(Problem("p.yaml", "measurements[0].weight_kg", "expected a number > 0, got -4", 9)) == \
        "p.yaml:9: measurements[0].weight_kg: expected a number > 0, got -4"
    assert str(Problem("p.yaml", "", "no such file")) == "p.yaml: no such file"
    assert str(Problem("", "--as-of", "expected a date")) == "--as-of: expected a date"


def test_input_error_keeps_every_problem() -> None:
    err = PatientError([Problem("a", "x", "one"), Problem("a", "y", "two")])
    assert [p.field for p in err.problems] == ["x", "y"]
    assert str(err) == "a: x: one\na: y: two"
    assert isinstance(err, InputError)


def test_format_loc() -> None:
    assert format_loc(("measurements", 0, "weight_kg")) == "measurements[0].weight_kg"
    assert format_loc(("events", 3)) == "events[3]"
    assert format_loc(()) == ""


def test_yaml_keeps_dates_as_text_and_points_at_lines() -> None:
    doc = parse_text("a: 1\nitems:\n  - {date: 2026-02-30, x: 2}\n  - {date: 2026-03-01}\n", "f.yaml")
    assert doc.data["items"][0]["date"] == "2026-02-30"  # not a YAML timestamp: pydantic judges it
    assert doc.line_of(("items", 1, "date")) == 4
    assert doc.line_of(("items", 0, "missing")) == 3  # nearest parent
    assert doc.line_of(("a",)) == 1


def test_duplicate_keys_are_rejected_with_both_lines() -> None:
    with pytest.raises(InputError, match=r"f.yaml:3: invalid YAML: duplicate key 'b' \(first given on line 2\)"):
        parse_text("a: 1\nb: 2\nb: 3\n", "f.yaml")


def test_yaml_merge_keys_still_work() -> None:
    assert parse_text("x: &a {k: 1}\ny: {<<: *a, z: 2}\n", "m.yaml").data["y"] == {"k": 1, "z": 2}


def test_invalid_yaml_and_json_name_the_line() -> None:
    with pytest.raises(InputError, match=r"bad.yaml:2: invalid YAML"):
        parse_text("a: [1, 2\nb: 3\n", "bad.yaml")
    with pytest.raises(InputError, match=r"bad.json:1: invalid JSON"):
        parse_text('{"a": 1,}', "bad.json", json_only=True)


def test_read_document_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_document(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="expected a file, got a directory"):
        read_document(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(InputError, match="expected UTF-8 text"):
        read_document(binary)


def test_pydantic_errors_become_expected_got_problems() -> None:
    doc = parse_text("date: 2026-01-01\nheight_cm: 0\nweight_kg: heavy\nextra: 1\n", "m.yaml")
    with pytest.raises(ValidationError) as info:
        Measurement.model_validate(doc.data)
    problems = {p.field: str(p) for p in problems_from_validation(info.value, doc)}
    assert problems["height_cm"] == "m.yaml:2: height_cm: expected a number > 0, got 0"
    assert problems["weight_kg"] == "m.yaml:3: weight_kg: expected a number, got 'heavy'"
    assert problems["extra"].startswith("m.yaml:4: extra: unknown field")


@pytest.mark.parametrize("text", ["2026-02-30", "21/11/2026", "2026-11", "2026-W47", "2026-325",
                                  "2026-11-21T10:00", "", "tomorrow"])
def test_parse_date_rejects_anything_but_iso_dates(text: str) -> None:
    with pytest.raises(InputError, match="--as-of: expected a date YYYY-MM-DD or 'today'"):
        parse_date(text, "--as-of")


def test_parse_date_accepts_iso_and_today() -> None:
    assert parse_date("2026-11-21", "--as-of") == dt.date(2026, 11, 21)
    assert isinstance(parse_date("today", "--as-of"), dt.date)


def test_write_atomic_writes_whole_file_with_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_atomic(target, lambda fh: fh.write("hello"))
    assert target.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_write_atomic_leaves_nothing_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("previous")

    def explode(fh: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, explode)
    assert target.read_text() == "previous"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary file left


def test_write_atomic_bad_paths_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "out.txt", lambda fh: fh.write("x"))
    with pytest.raises(InputError, match="got a folder"):
        write_atomic(tmp_path, lambda fh: fh.write("x"))
