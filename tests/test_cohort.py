"""Cohort specification files (``protocol._cohort``): the shipped cohort, and bad files.

Every bad file goes through the real command line (``protocol simulate``) and must exit 2
with one line per problem naming the file, the line, the field, what was expected and what
was received, and no traceback. The bad files are the shipped cohort with one thing broken.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import protocol
from protocol._cli import app
from protocol._cohort import CohortError, load_cohort

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_COHORT = ROOT / "examples" / "cohorts" / "interfant06-blinatumomab.yaml"
PROTOCOL_ID = "interfant06-blinatumomab"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return yaml.load(SHIPPED_COHORT.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506


# --------------------------------------------------------------------------- the shipped cohort


def test_shipped_cohort_loads_and_every_value_has_provenance() -> None:
    cohort = load_cohort(SHIPPED_COHORT)
    assert cohort.protocol == PROTOCOL_ID and cohort.file == str(SHIPPED_COHORT)
    keys = {s.key for s in cohort.sources}
    parts = [*cohort.facts.values(), *cohort.mrd.values(), *cohort.delays.values(), cohort.census]
    parts += [r for ev in cohort.events.values() for r in (ev.relapse, ev.death, ev.off_protocol) if r is not None]
    for d in parts:
        assert d is not None
        assert d.evidence in ("published", "derived", "assumption")
        if d.evidence == "assumption":
            assert d.note and len(d.note) > 20, d
        else:
            assert d.source in keys, d


def test_shipped_cohort_encodes_the_published_figures() -> None:
    """clinical-facts.md §5.2 (bassett2023): MRD after the blinatumomab cycle 16 negative,
    12 below 5e-4, 2 at or above, of 30; enrolment 30 in 36 months."""
    cohort = load_cohort(SHIPPED_COHORT)
    bins = cohort.mrd["blinatumomab_day29"].bins
    assert bins is not None
    assert [round(b.p * 30, 9) for b in bins] == [16, 12, 2]
    assert bins[0].value == 0 and bins[1].high == 5e-4 and bins[2].low == 5e-4
    assert cohort.census is not None and cohort.census.rate_per_month * 36 == pytest.approx(30)


# --------------------------------------------------------------------------- bad files


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        for k in head:
            d = d.setdefault(k, {})
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value

    return mutate


_DELETE = object()

BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # id, mutation, field named in the message, words the message must contain
    ("categories-sum", _set("facts.prednisone_response.categories", {"good": 0.5, "poor": 0.4}),
     "facts.prednisone_response.categories", "expected probabilities that sum to 1, got 0.9"),
    ("bins-sum", _set("mrd.blinatumomab_day29.bins", [{"p": "16/30", "value": 0}, {"p": "12/30", "low": 1e-5,
                                                                                   "high": 5e-4}]),
     "mrd.blinatumomab_day29.bins", "expected probabilities that sum to 1, got 0.933333"),
    ("probability-above-1", _set("events.ib.relapse.probability", 1.5),
     "events.ib.relapse.probability", "expected a number <= 1, got 1.5"),
    ("bad-fraction", _set("events.ib.relapse.probability", "1/0"),
     "events.ib.relapse.probability", "expected a probability"),
    ("negative-delay-fixed", _set("delays.ib", {"fixed": -3, "evidence": "assumption", "note": "a test delay"}),
     "delays.ib", "the delay before ib: expected values >= 0, got a distribution from -3 to -3"),
    ("negative-delay-uniform", _set("delays.marma.uniform", {"low": -2, "high": 5}),
     "delays.marma", "expected values >= 0, got a distribution from -2 to 5"),
    ("fractional-delay", _set("delays.marma.uniform", {"low": 0, "high": 2.5}),
     "delays.marma.uniform", "expected whole numbers of days"),
    ("unknown-timepoint", _set("mrd.day99", {"fixed": 0, "evidence": "assumption", "note": "a test value"}),
     "mrd.day99", "expected a time point of interfant06-blinatumomab (day8, end_of_induction"),
    ("unknown-element-delay", _set("delays.consolidation", {"fixed": 1, "evidence": "assumption", "note": "test it"}),
     "delays.consolidation", "expected an element of interfant06-blinatumomab (induction, blinatumomab"),
    ("unknown-element-events", _set("events.adex", {"death": {"probability": 0.1, "evidence": "assumption",
                                                              "note": "a test value"}}),
     "events.adex", "expected an element of interfant06-blinatumomab"),
    ("event-on-element-without-days", _set("events.hsct", {"death": {"probability": 0.1, "evidence": "assumption",
                                                                     "note": "a test value"}}),
     "events.hsct", "hsct has no days in interfant06-blinatumomab"),
    ("unknown-outcome", _set("events.ib.progression", {"probability": 0.1, "evidence": "assumption", "note": "x y"}),
     "events.ib.progression", "unknown field"),
    ("unknown-fact", _set("facts.blood_group", {"fixed": "A", "evidence": "assumption", "note": "a test value"}),
     "facts.blood_group", "expected a patient fact"),
    ("risk-group-is-computed", _set("facts.risk_group", {"fixed": "HR", "evidence": "assumption", "note": "test"}),
     "facts.risk_group", "the risk group is computed from the protocol's rules"),
    ("unknown-category", _set("facts.kmt2a", {"categories": {"rearranged": 0.5, "mixed": 0.5}, "evidence": "assumption",
                                              "note": "a test value"}),
     "facts.kmt2a.categories.mixed", "expected one of rearranged, germline, got 'mixed'"),
    ("numbers-for-a-category", _set("facts.prednisone_response", {"uniform": {"low": 0, "high": 1},
                                                                  "evidence": "assumption", "note": "a test value"}),
     "facts.prednisone_response", "prednisone_response is categorical"),
    ("mrd-above-1", _set("mrd.pre_octadad", {"uniform": {"low": 0, "high": 2}, "evidence": "assumption",
                                             "note": "a test value"}),
     "mrd.pre_octadad", "MRD at pre_octadad: expected values from 0 to 1, got a distribution from 0 to 2"),
    ("missing-mrd-the-rules-read", _set("mrd.pre_octadad", _DELETE),
     "mrd", "the protocol reads the MRD at pre_octadad (transition marma → hsct)"),
    ("missing-fact-the-rules-read", _set("facts.wbc_at_diagnosis", _DELETE),
     "facts", "the protocol reads wbc_at_diagnosis (risk group HR)"),
    ("derived-and-input", _set("facts.day8_blasts_per_ul", {"fixed": 50, "evidence": "assumption", "note": "test x"}),
     "facts.prednisone_response", "give prednisone_response or day8_blasts_per_ul, not both"),
    ("unknown-randomisation", _set("arms.consolidation", {"categories": {"a": 1}, "evidence": "assumption",
                                                          "note": "a test value"}),
     "arms.consolidation", "expected a randomisation of interfant06-blinatumomab (none)"),
    ("assumption-without-note", _set("facts.wbc_at_diagnosis.note", _DELETE),
     "facts.wbc_at_diagnosis", "an assumption needs a `note`"),
    ("published-without-source", _set("facts.kmt2a.source", _DELETE),
     "facts.kmt2a", "a published value must name its source"),
    ("unresolved-source", _set("census.source", "nejm"),
     "census.source", "expected the key of an entry in `sources`"),
    ("two-shapes", _set("delays.ib.fixed", 3),
     "delays.ib", "expected exactly one of fixed, uniform, lognormal, poisson, categories, bins; got fixed, uniform"),
    ("bins-overlap", _set("mrd.blinatumomab_day29.bins", [{"p": 0.5, "low": 0, "high": 1e-3},
                                                          {"p": 0.5, "low": 5e-4, "high": 1e-2}]),
     "mrd.blinatumomab_day29.bins", "bins overlap"),
    ("other-protocol", _set("protocol", "interfant21"), "protocol", "this cohort is for interfant21"),
    ("negative-rate", _set("census.rate_per_month", -2), "census.rate_per_month", "expected a number > 0, got -2"),
]


def _write(tmp_path: Path, data: dict[str, Any], name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "mutate", "field", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_cohort_is_exit_2_naming_file_line_and_field(tmp_path: Path, base: dict[str, Any], name: str,
                                                         mutate: Callable[[dict[str, Any]], None], field: str,
                                                         words: str) -> None:
    data = copy.deepcopy(base)
    mutate(data)
    path = _write(tmp_path, data, name)
    result = CliRunner().invoke(app, ["simulate", PROTOCOL_ID, "--cohort", str(path), "--n", "10",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    hit = [ln for ln in lines if f": {field}: " in ln and words in ln]
    assert hit, lines
    # file:line: the field's value starts on that line (a block value: the line after its key).
    where = hit[0].removeprefix("error: ").split(": ")[0]
    file, _, line = where.rpartition(":")
    assert file == str(path) and line.isdigit()
    text = path.read_text(encoding="utf-8").splitlines()
    key = field.split(".")[-1]
    around = text[max(0, int(line) - 2): int(line)]
    assert any(ln.lstrip(" -").startswith(f"{key}:") for ln in around), (around, field)
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_cohort_through_the_console_script(tmp_path: Path, base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["facts"]["prednisone_response"]["categories"] = {"good": 0.6, "poor": 0.6}
    data["delays"]["ib"] = {"fixed": -1, "evidence": "assumption", "note": "a negative test delay"}
    path = _write(tmp_path, data, "two-problems")
    proc = subprocess.run([sys.executable, "-m", "protocol", "simulate", PROTOCOL_ID, "--cohort", str(path),
                           "--n", "100"], capture_output=True, text=True, encoding="utf-8", timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert "facts.prednisone_response.categories: expected probabilities that sum to 1, got 1.2" in proc.stderr


def test_every_problem_is_reported_at_once(tmp_path: Path, base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["delays"]["ib"] = {"fixed": -1, "evidence": "assumption", "note": "a negative test delay"}
    data["mrd"]["day99"] = {"fixed": 0, "evidence": "assumption", "note": "a test value here"}
    data["delays"]["nowhere"] = {"fixed": 0, "evidence": "assumption", "note": "a test value here"}
    with pytest.raises(CohortError) as info:
        load_cohort(_write(tmp_path, data, "three"), PROTOCOL_ID)
    fields = [p.field for p in info.value.problems]
    assert fields == ["mrd.day99", "delays.ib", "delays.nowhere"]
    assert isinstance(info.value, protocol.InputError)


def test_cohort_for_another_file_needs_a_protocol(tmp_path: Path, base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    del data["protocol"]
    path = _write(tmp_path, data, "anonymous")
    with pytest.raises(CohortError, match="name the protocol this cohort is for"):
        load_cohort(path)
    assert load_cohort(path, PROTOCOL_ID).protocol is None


def test_missing_and_malformed_cohort_files(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["simulate", PROTOCOL_ID, "--cohort", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2 and "none.yaml: no such file" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("facts: [1, 2\n", encoding="utf-8")
    r = runner.invoke(app, ["simulate", PROTOCOL_ID, "--cohort", str(broken)])
    assert r.exit_code == 2 and "invalid YAML" in r.stderr
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n", encoding="utf-8")
    r = runner.invoke(app, ["simulate", PROTOCOL_ID, "--cohort", str(listing)])
    assert r.exit_code == 2 and "expected a mapping of fields at the top level" in r.stderr


def test_fractions_are_exact(tmp_path: Path, base: dict[str, Any]) -> None:
    data = copy.deepcopy(base)
    data["facts"]["prednisone_response"]["categories"] = {"good": "1/3", "poor": "2/3"}
    cohort = load_cohort(_write(tmp_path, data, "thirds"), PROTOCOL_ID)
    cats = cohort.facts["prednisone_response"].categories
    assert cats == {"good": 1 / 3, "poor": 2 / 3}
