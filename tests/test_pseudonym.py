"""_pseudonym: patient ids that look like names or hospital numbers are refused (issue 16 §4)."""

from __future__ import annotations

import pytest

from protocol._models import Patient
from protocol._pseudonym import ENV, check_pseudonym, pseudonym_problem

BASE = {"protocol": "interfant06-blinatumomab", "birth_date": "2025-10-20", "sex": "female",
        "diagnosis_date": "2026-05-04", "kmt2a": "rearranged", "wbc_at_diagnosis": 150}


@pytest.mark.parametrize(("value", "why"), [
    ("John.Smith", "words that look like a name"),
    ("smith_john_2", "words that look like a name"),
    ("baby-girl", "words that look like a name"),
    ("Smith", "a word that looks like a name"),
    ("Smith_J_1985-03-14", "a date"),
    ("J.S.14.03.1985", "a date"),
    ("MRN-00123456", "a hospital number"),
    ("NHS4857773456", "a hospital number"),
    ("hn_12", "a hospital number"),
    ("12345678", "a run of 8 or more digits"),
    ("P-4857773456", "a run of 8 or more digits"),
])
def test_ids_that_identify_a_child_are_refused(value: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    problem = pseudonym_problem(value)
    assert problem is not None and why in problem and "pseudonym" in problem
    with pytest.raises(ValueError, match="patient ids are pseudonyms"):
        check_pseudonym(value)


@pytest.mark.parametrize("value", ["INF-0001", "TEST-0042", "P17", "7f3a2c9e", "inf-0003", "A1", "a" * 64,
                                   "AALL-0007", "X.1234567"])
def test_pseudonyms_are_accepted(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert pseudonym_problem(value) is None and check_pseudonym(value) == value


def test_the_patient_model_refuses_a_name_as_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="expected a pseudonym"):
        Patient.model_validate({**BASE, "id": "John.Smith"})
    assert Patient.model_validate({**BASE, "id": "INF-0001"}).id == "INF-0001"


def test_a_site_sets_its_own_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, r"UKALL-[0-9]{4}")
    assert pseudonym_problem("UKALL-0001") is None
    assert "this site's pattern UKALL-[0-9]{4}" in str(pseudonym_problem("INF-0001"))
    monkeypatch.setenv(ENV, r"[0-9]{10}")  # the site's rule replaces the default one
    assert pseudonym_problem("4857773456") is None
    monkeypatch.setenv(ENV, r"([")
    assert "not a valid regular expression" in str(pseudonym_problem("INF-0001"))
