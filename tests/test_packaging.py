"""The wheel carries the templates and definitions, and an installed copy renders outside the repo."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (built,) = out.glob("protocol-*.whl")
    return built


def test_wheel_contains_templates_and_definitions(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "protocol/templates/roadmap.html.j2" in names
    assert "protocol/templates/roadmap.md.j2" in names
    assert "protocol/definitions/interfant06-blinatumomab.yaml" in names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)


def test_installed_wheel_renders_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    patient = tmp_path / "p.yaml"
    patient.write_text((ROOT / "examples/patients/hr-to-hsct.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    code = (
        "import datetime as dt, protocol, protocol._documents as d;"
        "assert protocol.__file__.startswith(%r), protocol.__file__;"
        "assert str(d.templates_dir()).startswith(%r), d.templates_dir();"
        "print(d.render_roadmap(protocol.plan('p.yaml', as_of=dt.date(2026, 11, 21)), 'html')[:15])"
    ) % (str(site), str(site))
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("<!DOCTYPE html>")
