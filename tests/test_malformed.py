"""Malformed inputs through the real console script.

Every file under tests/data/malformed/{patients,protocols}/ breaks one thing of an
otherwise valid input; tests/data/malformed/expected.yaml says, for each, which field path
and which phrase the error message must contain. Each case is run as a subprocess
(``python -m protocol ...``; a few through the ``protocol`` script installed next to the
interpreter) and must exit with code 2, print nothing on stdout, no traceback, and one
line on stderr of the form ``error: FILE[:LINE]: FIELD: ... PHRASE ...``.

``protocol roadmap PATIENT -o out.html`` is run on a sample of the malformed patient files
(every kind of failure): it must fail the same way and leave nothing behind (no out.html,
no temporary file).

The subprocesses of the selected tests are all started on a thread pool when the first
test needs one, so they run in parallel rather than one interpreter start after another.
Self-contained: no fixtures from conftest.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

DATA = Path(__file__).resolve().parent / "data" / "malformed"
EXPECTED: dict[str, Any] = yaml.safe_load((DATA / "expected.yaml").read_text(encoding="utf-8"))
KINDS = ("patients", "protocols")
TIMEOUT = 60


@dataclass(frozen=True)
class Case:
    kind: str  # "patients" | "protocols"
    name: str  # file name inside DATA/kind
    field: str | None
    phrase: str
    line: int | None
    xfail: str | None

    @property
    def rel(self) -> str:
        """The path passed on the command line (the CLI runs with cwd=DATA)."""
        return f"{self.kind}/{self.name}"

    def argv(self) -> list[str]:
        return [self.rel if a == "FILE" else str(a) for a in EXPECTED[self.kind]["command"]]


def _cases() -> list[Case]:
    out = []
    for kind in KINDS:
        for name, spec in EXPECTED[kind]["cases"].items():
            out.append(Case(kind, name, spec.get("field"), spec["phrase"], spec.get("line"), spec.get("xfail")))
    return out


CASES = _cases()
PATIENT_CASES = [c for c in CASES if c.kind == "patients"]
#: The roadmap check runs on one or more patient files of each kind of failure (unreadable
#: file, field value, dates against each other, patient against protocol, eligibility,
#: unknown protocol) rather than on all of them, to keep the module fast.
ROADMAP_SAMPLE = (
    "invalid-yaml.yaml", "trailing-comma.json", "empty.yaml", "top-level-list.yaml",
    "negative-weight.yaml", "negative-weight.json", "missing-birth-date.yaml", "two-measurements-same-date.yaml",
    "mrd-unknown-timepoint.yaml", "element-skipped.yaml", "hsct-started-mr-mrd-negative.yaml",
    "prednisone-conflict.yaml", "kmt2a-germline.yaml", "older-than-one-year.yaml", "duplicate-key.yaml",
    "unknown-protocol.yaml",
)
ROADMAP_CASES = [c for c in PATIENT_CASES if c.name in ROADMAP_SAMPLE]


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(c, id=c.rel, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else [])
        for c in cases
    ]


_PYCACHE: list[str] = []  # set by the runner fixture


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PROTOCOL_DEBUG", None)  # a traceback on purpose would defeat the checks
    if _PYCACHE:
        # Byte-code compiled once into a scratch folder (never next to the sources) instead
        # of on every interpreter start when PYTHONDONTWRITEBYTECODE is set: same program,
        # about a third less time per run.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = _PYCACHE[0]
    return env


def _script() -> Path | None:
    """The `protocol` console script installed next to the running interpreter."""
    bindir = Path(sys.executable).parent
    for name in ("protocol", "protocol.exe"):
        if (bindir / name).is_file():
            return bindir / name
    return None


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    leftovers: list[str]  # files found in the run's scratch directory afterwards


def _run(argv: list[str], cwd: Path, scratch: Path | None = None) -> Run:
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, timeout=TIMEOUT)
    leftovers = sorted(p.name for p in scratch.iterdir()) if scratch is not None else []
    return Run(argv, proc.returncode, proc.stdout.decode("utf-8", "replace"),
               proc.stderr.decode("utf-8", "replace"), leftovers)


class Runner:
    """Starts subprocesses on a pool and hands out their results by key."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(8, (os.cpu_count() or 2) * 2)))
        self.jobs: dict[tuple[str, str], Future[Run]] = {}

    def submit(self, how: str, case: Case) -> None:
        key = (how, case.rel)
        if key in self.jobs:
            return
        if how == "module":
            job = self.pool.submit(_run, [sys.executable, "-m", "protocol", *case.argv()], DATA)
        elif how == "script":
            script = _script()
            assert script is not None
            job = self.pool.submit(_run, [str(script), *case.argv()], DATA)
        elif how == "roadmap":
            # An empty scratch directory as cwd, the patient by absolute path and a relative
            # -o: afterwards the directory must still be empty (nothing half-written).
            scratch = self.tmp / ("roadmap-" + case.rel.replace("/", "-"))
            scratch.mkdir()
            argv = [sys.executable, "-m", "protocol", "roadmap", str(DATA / case.rel), "-o", "out.html",
                    "--as-of", "2026-11-21"]
            job = self.pool.submit(_run, argv, scratch, scratch)
        else:  # pragma: no cover
            raise ValueError(how)
        self.jobs[key] = job

    def get(self, how: str, case: Case) -> Run:
        self.submit(how, case)
        return self.jobs[(how, case.rel)].result(timeout=TIMEOUT * 2)


_HOW = {"test_malformed_input": "module", "test_malformed_input_via_script": "script",
        "test_roadmap_writes_nothing_on_bad_input": "roadmap"}


@pytest.fixture(scope="module")
def runner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("malformed")
    _PYCACHE[:] = [str(tmp / "pycache")]
    subprocess.run([sys.executable, "-m", "protocol", "--help"], env=_env(), capture_output=True, timeout=TIMEOUT)
    r = Runner(tmp)
    # Start every subprocess this session will ask for, all at once.
    for item in request.session.items:
        how = _HOW.get(getattr(item, "originalname", ""))
        callspec = getattr(item, "callspec", None)
        if how and callspec is not None and isinstance(callspec.params.get("case"), Case) \
                and Path(item.path) == Path(__file__):
            if how != "script" or _script() is not None:
                r.submit(how, callspec.params["case"])
    yield r
    r.pool.shutdown(wait=True, cancel_futures=True)
    _PYCACHE.clear()


# --------------------------------------------------------------------------- checks


def check_failure(run: Run, case: Case) -> None:
    """Exit 2, stdout empty, no traceback, one stderr line naming file, line, field and phrase."""
    shown = f"argv: {run.argv}\nexit code: {run.returncode}\nstdout: {run.stdout[:500]!r}\nstderr:\n{run.stderr}"
    assert run.returncode == 2, shown
    assert run.stdout == "", shown
    assert "Traceback" not in run.stderr, shown
    assert "internal error" not in run.stderr, shown
    lines = run.stderr.splitlines()
    assert lines and all(ln.startswith("error: ") for ln in lines), shown
    assert case.name in run.stderr, f"the file name {case.name!r} is not in the message\n{shown}"
    where = re.escape(case.rel) + (f":{case.line}" if case.line is not None else r"(?::\d+)?")
    what = f": {re.escape(case.field)}: " if case.field else ": "
    pattern = re.compile(r"^error: (?:.*/)?" + where + what + ".*" + re.escape(case.phrase))
    assert any(pattern.search(ln) for ln in lines), (
        f"no line matches {pattern.pattern!r} (file {case.rel}, line {case.line}, field {case.field!r}, "
        f"phrase {case.phrase!r})\n{shown}"
    )


# --------------------------------------------------------------------------- the data itself


def test_case_count() -> None:
    assert len(CASES) >= 30
    assert len(PATIENT_CASES) >= 20
    assert len([c for c in CASES if c.kind == "protocols"]) >= 12


def test_expected_yaml_lists_every_file() -> None:
    for kind in KINDS:
        on_disk = {p.name for p in (DATA / kind).iterdir() if p.is_file()}
        listed = set(EXPECTED[kind]["cases"])
        assert on_disk == listed, f"{kind}: not listed {sorted(on_disk - listed)}, missing {sorted(listed - on_disk)}"
    for p in (DATA / "patients").iterdir():
        assert p.suffix in (".yaml", ".json"), p
    for p in (DATA / "protocols").iterdir():
        assert p.suffix == ".yaml", p


def test_expected_yaml_is_well_formed() -> None:
    for c in CASES:
        assert c.phrase.strip(), c
        assert c.field is None or (c.field.strip() and c.field == c.field.strip()), c
        assert c.xfail is None or c.xfail.startswith("BUG: "), c
    # Every patient file is meant for the shipped protocol (unknown-protocol excepted).
    for c in PATIENT_CASES:
        raw = (DATA / c.rel).read_bytes()
        text = raw.decode("utf-16") if raw.startswith(b"\xff\xfe") else raw.decode("utf-8")
        if c.name not in ("unknown-protocol.yaml", "empty.yaml", "long-protocol.yaml"):
            assert "interfant06-blinatumomab" in text, c


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("case", _params(CASES))
def test_malformed_input(runner: Runner, case: Case) -> None:
    """`python -m protocol validate|plan FILE` fails with exit 2 and a precise message."""
    check_failure(runner.get("module", case), case)


_SCRIPT_CASES = [
    next(c for c in CASES if c.rel == "patients/negative-weight.yaml"),
    next(c for c in CASES if c.rel == "patients/hsct-started-mr-mrd-negative.yaml"),
    next(c for c in CASES if c.rel == "protocols/cycle.yaml"),
]


@pytest.mark.parametrize("case", _params(_SCRIPT_CASES))
def test_malformed_input_via_script(runner: Runner, case: Case) -> None:
    """The same through the installed `protocol` console script."""
    if _script() is None:
        pytest.skip(f"no `protocol` script next to {sys.executable}")
    check_failure(runner.get("script", case), case)


def test_roadmap_sample_is_known() -> None:
    assert len(ROADMAP_CASES) == len(ROADMAP_SAMPLE) >= 10


@pytest.mark.parametrize("case", _params(ROADMAP_CASES))
def test_roadmap_writes_nothing_on_bad_input(runner: Runner, case: Case) -> None:
    """`protocol roadmap BAD -o out.html` fails the same way and creates no file at all."""
    run = runner.get("roadmap", case)
    check_failure(run, case)
    assert run.leftovers == [], f"files left behind by a failed roadmap: {run.leftovers}"
