"""The README stays true: its two opening commands, CI, and every CLI command documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol._cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)


def test_readme_opens_with_the_two_commands() -> None:
    blocks = _shell_blocks()
    assert len(blocks) >= 2
    run, test = blocks[0], blocks[1]
    assert README.index(run) < 1500, "the two commands must come first"
    assert run.startswith("python3 -m venv .venv") and "protocol roadmap examples/patients/" in run
    assert test.startswith("python3 -m venv .venv") and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _shell_blocks()[1] in ci


def test_the_example_patients_named_in_the_readme_exist() -> None:
    for name in set(re.findall(r"examples/patients/[\w.-]+\.yaml", README)):
        assert (ROOT / name).is_file(), name


@pytest.mark.parametrize("command", [c.name or c.callback.__name__ for c in app.registered_commands])
def test_every_command_is_documented_with_an_example(command: str) -> None:
    assert f"`protocol {command}" in README
    info = next(c for c in app.registered_commands if c.name == command)
    assert info.callback.__doc__ and "Example: protocol " in info.callback.__doc__


def test_every_public_name_is_documented() -> None:
    import protocol

    for name in protocol.__all__:
        obj = getattr(protocol, name)
        assert (obj.__doc__ or "").strip(), f"protocol.{name} has no docstring"


def test_the_what_you_get_examples_are_what_the_commands_print() -> None:
    """The README's first examples are re-run: a stale example is a defect."""
    import os
    import shlex
    import subprocess
    import sys

    block = README.split("## What you get", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    examples = [chunk for chunk in block.split("$ ") if chunk.strip()]
    assert len(examples) == 2
    for chunk in examples:
        command, *expected = chunk.rstrip("\n").split("\n")
        pipeline, _, head = command.partition(" | head -")
        words = shlex.split(pipeline)
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        out = subprocess.run([sys.executable, "-m", "protocol", *words[1:]], capture_output=True, text=True,
                             encoding="utf-8", env=env, cwd=ROOT, timeout=120).stdout.splitlines()
        assert (out[:int(head)] if head else out) == expected, command
