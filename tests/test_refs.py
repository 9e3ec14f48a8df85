"""Item references (``protocol._refs``): reading them as typed, checking them against a plan,
the near matches a mistyped one gets, and choosing items (a day, filters, what is due)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from protocol import InputError, plan
from protocol._refs import (STATUSES, Ref, canonical, due_on, items_of_day, only, open_before, parse, resolve,
                            resolve_all, select)

ROOT = Path(__file__).resolve().parent.parent
ON_TIME = ROOT / "examples" / "patients" / "mr-on-time.yaml"


@pytest.fixture(scope="module")
def early() -> object:
    """mr-on-time as it stood on 2026-05-10 (induction day 7): day 8 still to come."""
    return plan(ON_TIME, as_of=dt.date(2026, 5, 10))


def message(exc: pytest.ExceptionInfo[InputError]) -> str:
    return "\n".join(str(p) for p in exc.value.problems)


@pytest.mark.parametrize("text", ["induction:dexamethasone@8", "Induction:Dexamethasone@8", " INDUCTION:dexamethasone@8 ",
                                  "induction : dexamethasone @ 8"])
def test_case_and_spaces_do_not_matter(text: str) -> None:
    assert parse(text) == Ref("induction", "dexamethasone", 8)
    assert canonical(text) == "induction:dexamethasone@8"


@pytest.mark.parametrize(("text", "words"), [
    ("induction-dexamethasone-8", "expected a reference of the form ELEMENT:ITEM@DAY"),
    ("induction:dexamethasone", "expected a reference of the form"),
    ("8induction:dexamethasone@8", "the element (before ':')"),
    ("induction:dexa-methasone@8", "the item (between ':' and '@')"),
    ("induction:dexamethasone@eight", "the day (after '@') should be a whole number"),
    ("induction:dexamethasone@12345", "at most 4 digits"),
])
def test_a_malformed_ref_is_explained_in_words(text: str, words: str) -> None:
    with pytest.raises(InputError) as exc:
        parse(text)
    text_of = message(exc)
    assert words in text_of and repr(text) in text_of
    assert "[a-z" not in text_of and "^" not in text_of  # never a regular expression


def test_resolve_finds_the_item_whatever_the_case(early: object) -> None:
    assert resolve("INDUCTION:Vincristine@8", early) == "induction:vincristine@8"


@pytest.mark.parametrize(("text", "needles"), [
    ("induction:vincristin@8", ["induction has no item 'vincristin'", "did you mean vincristine?"]),
    ("inductoin:vincristine@8", ["no element 'inductoin'", "did you mean induction?"]),
    ("induction:vincristine@9", ["vincristine is not planned on day 9 of induction",
                                 "nearest: induction:vincristine@8, induction:vincristine@15"]),
])
def test_a_ref_that_names_nothing_lists_near_matches(early: object, text: str, needles: list[str]) -> None:
    with pytest.raises(InputError) as exc:
        resolve(text, early)
    assert all(n in message(exc) for n in needles), message(exc)


def test_resolve_all_reports_every_bad_ref_and_duplicates(early: object) -> None:
    assert resolve_all(["induction:vincristine@8", "Induction:Daunorubicin@8"], early) == [
        "induction:vincristine@8", "induction:daunorubicin@8"]
    with pytest.raises(InputError) as exc:
        resolve_all(["induction:vincristin@8", "induction:vincristine@8", "INDUCTION:VINCRISTINE@8", "x"], early)
    assert len(exc.value.problems) == 3
    assert "named twice" in message(exc)


def test_items_of_a_day_are_what_is_given_and_still_open(early: object) -> None:
    refs = [i.ref for i in items_of_day(early, "Induction", 8)]
    assert refs == ["induction:dexamethasone@8", "induction:vincristine@8", "induction:daunorubicin@8"]
    with pytest.raises(InputError) as exc:
        items_of_day(early, "induction", 99)
    assert "nothing of induction to give is planned on day 99" in message(exc) and "nearest days" in message(exc)
    with pytest.raises(InputError) as exc:
        items_of_day(early, "inductio", 8)
    assert "did you mean induction?" in message(exc)


def test_items_of_a_day_already_recorded_say_so() -> None:
    later = plan(ON_TIME, as_of=dt.date(2026, 11, 21))
    with pytest.raises(InputError) as exc:
        items_of_day(later, "induction", 8)
    assert "already recorded or held" in message(exc)
    assert items_of_day(later, "induction", 8, open_only=False)


def test_due_on_a_day_and_what_is_left_before_it(early: object) -> None:
    due, other = due_on(early, dt.date(2026, 5, 11))
    assert [i.ref for i in due] == ["induction:dexamethasone@8", "induction:vincristine@8",
                                    "induction:daunorubicin@8", "induction:day8_blasts@8"]
    assert other == []
    late = open_before(early, dt.date(2026, 5, 11))
    assert late and all(i.status in {"overdue", "unrecorded"} and i.date < dt.date(2026, 5, 11) for i in late)


def test_select_filters_and_refuses_what_cannot_be(early: object) -> None:
    chosen = select(early, elements=["INDUCTION"], start=dt.date(2026, 5, 8), end=dt.date(2026, 5, 9),
                    statuses=["planned,unrecorded"])
    assert chosen and all(i.slot.element == "induction" and dt.date(2026, 5, 8) <= i.date <= dt.date(2026, 5, 9)
                          for i in chosen)
    assert select(early) == early.items
    with pytest.raises(InputError) as exc:
        select(early, elements=["marmaa"], statuses=["late"], start=dt.date(2026, 6, 1), end=dt.date(2026, 5, 1))
    assert {p.field for p in exc.value.problems} == {"--element", "--status", "--to"}
    assert set(STATUSES) >= {i.status for i in early.items}


def test_only_keeps_the_rest_of_the_plan(early: object) -> None:
    chosen = select(early, elements=["induction"], end=dt.date(2026, 5, 4))
    part = only(early, chosen)
    assert [i.ref for i in part.items] == [i.ref for i in chosen]
    assert part.to_dict()["risk"] == early.to_dict()["risk"]
    assert len(part.to_csv().splitlines()) == len(chosen) + 1
    assert len(early.items) > len(chosen)  # the original is untouched
