"""_io and _errors: reading files, line numbers, readable problems, atomic writes, CLI dates."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol._errors import InputError, PatientError, Problem
from protocol._io import (
    MAX_DEPTH,
    MAX_INPUT_BYTES,
    MAX_NODES,
    OUTPUT_MODE_ENV,
    format_loc,
    parse_date,
    parse_mode,
    parse_text,
    problems_from_validation,
    read_document,
    read_input,
    set_output_mode,
    write_atomic,
)
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


def test_write_atomic_creates_outputs_owner_only_whatever_the_umask(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 16 §4: outputs followed the umask (0644, or 0666 under umask 000).
    monkeypatch.delenv(OUTPUT_MODE_ENV, raising=False)
    target = tmp_path / "out.txt"
    old = os.umask(0)
    try:
        write_atomic(target, lambda fh: fh.write("hello"))
        assert target.read_text() == "hello"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        write_atomic(target, lambda fh: fh.write("again"), mode=0o640)
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        monkeypatch.setenv(OUTPUT_MODE_ENV, "644")
        write_atomic(target, lambda fh: fh.write("env"))
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        set_output_mode(0o600)
        try:
            write_atomic(target, lambda fh: fh.write("cli"))
            assert stat.S_IMODE(target.stat().st_mode) == 0o600
        finally:
            set_output_mode(None)
        monkeypatch.setenv(OUTPUT_MODE_ENV, "rw-r--r--")
        with pytest.raises(InputError, match=r"\$PROTOCOL_OUTPUT_MODE: expected a file mode in octal"):
            write_atomic(target, lambda fh: fh.write("x"))
    finally:
        os.umask(old)
    assert target.read_text() == "cli"


@pytest.mark.parametrize(("text", "mode"), [("600", 0o600), ("0640", 0o640), ("0o644", 0o644)])
def test_parse_mode(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["", "999", "u=rw", "12", "06444"])
def test_parse_mode_refuses_anything_else(text: str) -> None:
    with pytest.raises(InputError, match="--mode: expected a file mode in octal"):
        parse_mode(text)


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


# --------------------------------------------------------------------------- hostile input (issue 16 §2)


def test_devices_pipes_and_huge_files_are_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^/dev/zero: expected a regular file, got a character device$"):
        read_document("/dev/zero")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="expected a regular file, got a pipe"):  # and does not hang
        read_document(fifo)
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:  # sparse: 2 GB on paper, nothing on disk
        fh.truncate(2 * 1024 ** 3)
    with pytest.raises(InputError, match=r"expected a file of at most 10 MB, got 2,147,483,648 bytes"):
        read_document(big)
    just = tmp_path / "just.yaml"
    just.write_bytes(b"a: 1\n" + b"#" * (MAX_INPUT_BYTES - 6) + b"\n")
    assert read_input(just) and read_document(just).data == {"a": 1}
    with pytest.raises(InputError, match="File name too long"):
        read_document("x" * 100_000 + ".yaml")


def test_read_document_hashes_what_it_parsed(tmp_path: Path) -> None:
    import hashlib

    f = tmp_path / "a.yaml"
    f.write_bytes("\ufeffa: 1\r\nb: 2\r\n".encode())  # a byte-order mark and CRLF are fine
    doc = read_document(f)
    assert doc.data == {"a": 1, "b": 2} and doc.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()


def test_utf16_is_named() -> None:
    with pytest.raises(InputError, match="expected UTF-8 text, got UTF-16"):
        from protocol._io import decode_text

        decode_text("a: 1".encode("utf-16"), "u.yaml")


@pytest.mark.parametrize("json_only", [False, True])
def test_numbers_of_more_than_4300_digits_are_refused(json_only: bool) -> None:
    text = ('{"a": ' if json_only else "a: ") + "9" * 5000 + ("}" if json_only else "\n")
    with pytest.raises(InputError, match="4,300 digits"):
        parse_text(text, "n.json" if json_only else "n.yaml", json_only=json_only)


@pytest.mark.parametrize("json_only", [False, True])
def test_deep_nesting_is_refused(json_only: bool) -> None:
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(InputError, match=r"nested more than 50 levels deep|maximum nesting depth"):
            parse_text("[" * depth + "]" * depth, "d.json", json_only=json_only)
    assert parse_text("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1), "d.json", json_only=json_only).data


def test_json_duplicate_keys_are_refused_like_yaml() -> None:
    with pytest.raises(InputError, match=r"d.json: invalid JSON: duplicate key 'id'"):
        parse_text('{"id": "A-1", "x": {"k": 1}, "id": "B-2"}', "d.json", json_only=True)
    with pytest.raises(InputError, match=r"duplicate key 'k'"):
        parse_text('{"x": {"k": 1, "k": 2}}', "d.json", json_only=True)


def test_alias_bombs_and_recursive_aliases_are_refused_at_once() -> None:
    import time

    bomb = "a0: &a0 [x, x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 40))
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"b.yaml:\d+: more than 200,000 values once aliases are expanded"):
        parse_text(bomb, "b.yaml")
    assert time.perf_counter() - start < 2
    with pytest.raises(InputError, match="a recursive alias"):
        parse_text("a: &x [1, *x]\n", "r.yaml")
    # Aliases within the budget are fine (a definition may share a condition).
    assert parse_text("c: &c {fact: kmt2a}\nd: [*c, *c]\n", "ok.yaml").data["d"][1] == {"fact": "kmt2a"}
    wide = "a: [" + ", ".join(["1"] * MAX_NODES) + "]\n"
    with pytest.raises(InputError, match="more than 200,000 values"):
        parse_text(wide, "w.yaml")


def test_at_most_50_problems_are_listed() -> None:
    doc = parse_text("[" + ", ".join(["{}"] * 80) + "]", "m.json", json_only=True)
    from pydantic import TypeAdapter

    with pytest.raises(ValidationError) as info:
        TypeAdapter(list[Measurement]).validate_python(doc.data)
    problems = problems_from_validation(info.value, doc)
    assert len(problems) == 51 and problems[-1].message == "... and 190 more problems not listed"


def test_long_values_are_cut_in_messages() -> None:
    doc = parse_text('{"date": "2026-01-01", "height_cm": "' + "x" * 10_000 + '", "weight_kg": 1}', "l.json",
                     json_only=True)
    with pytest.raises(ValidationError) as info:
        Measurement.model_validate(doc.data)
    (problem,) = problems_from_validation(info.value, doc)
    assert problem.message.endswith("... (10,000 characters)") and len(problem.message) < 200


def test_dates_after_2199_are_refused_on_the_command_line() -> None:
    with pytest.raises(InputError, match="--as-of: expected a date from 1900-01-01 to 2199-12-31, got 9999-12-31"):
        parse_date("9999-12-31", "--as-of")


@pytest.mark.parametrize("text", ["a: !!float abc", "a: !!bool abc", "a: !!int abc", "a: !!timestamp x",
                                  "a: !!set [1]", "a: !!binary aGk=", "a: !!omap [{b: 1}]", "a: !!pairs [[b, 1]]",
                                  "a: !!str [1]", "a: !!map [1]", "a: !!seq {b: 1}", "a: =", "? [1]\n: 2"])
@pytest.mark.parametrize("merge", ["", "m: &m {k: 1}\nn: {<<: *m}\n"])
def test_explicit_tags_are_input_errors_not_crashes(text: str, merge: str) -> None:
    # !!float abc was a ValueError, !!bool abc a KeyError, !!timestamp x an AttributeError and
    # !!set [1] a TypeError out of PyYAML: exit 1 "internal error" from the command line.
    with pytest.raises(InputError, match=r"^t.yaml:\d+: invalid YAML: "):
        parse_text(merge + text + "\n", "t.yaml")


def test_explicit_core_tags_and_plain_scalars_build_what_pyyaml_builds() -> None:
    import yaml

    text = ("a: !!str 12\nb: !!int '7'\nc: !!float '1.5'\nd: !!bool yes\ne: !!null x\nf: 012\ng: 0x1f\nh: 1_000\n"
            "i: -3\nj: +4\nk: .inf\nl: 1e3\nm: ~\nn: ''\no: [On, off, NO]\np: {1: x, '1': y}\nq: 2026-01-01\n"
            "r: 1:30\ns: 0\nt: 00\n")
    expected = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - the safe loader
    expected["q"] = "2026-01-01"  # dates stay text (pydantic judges them)
    assert parse_text(text, "t.yaml").data == expected


def test_a_key_given_twice_is_refused_wherever_it_is() -> None:
    with pytest.raises(InputError, match=r"t.yaml:4: invalid YAML: duplicate key 'k' \(first given on line 3\)"):
        parse_text("a:\n  - x: 1\n    k: 1\n    k: 2\n", "t.yaml")
    # Two spellings of one key would also keep only the last value.
    with pytest.raises(InputError, match=r"t.yaml:2: invalid YAML: duplicate key 1 \(first given on line 1\)"):
        parse_text("1: a\n0x1: b\n", "t.yaml")


def test_a_one_megabyte_file_is_parsed_in_well_under_two_seconds() -> None:
    # Issue 16 §2: a 1 MB plain YAML file took 2-5 s to parse, most of it the cyclic garbage
    # collector walking the growing node tree, PyYAML's generator per container, and
    # composing the file a second time to name the lines of the problems. CPU time of this
    # process, so that other processes on a busy machine do not count.
    import time

    text = "sources:\n" + "".join(f"- key: {i}\n  citation: {i}\n  doi: [{i}]\n" for i in range(23_000))
    assert 900_000 < len(text) < 1_048_576
    start = time.process_time()
    doc = parse_text(text, "big.yaml")
    assert doc.line_of(("sources", 22_999, "doi")) == 3 * 22_999 + 4
    assert time.process_time() - start < 1.0
    assert len(doc.data["sources"]) == 23_000
