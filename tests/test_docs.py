"""The README stays true: its two opening commands, CI, and every CLI command documented."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
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


def _text_examples() -> list[tuple[str, str, list[str]]]:
    """Every `$ protocol ...` of the README's ```text blocks: (section, command, lines it shows)."""
    examples = []
    for section in re.split(r"\n(?=## )", README):
        title = section.split("\n", 1)[0]
        for block in re.findall(r"```text\n(.*?)```", section, flags=re.S):
            for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
                command, *shown = chunk.rstrip("\n").split("\n")
                examples.append((title, command, shown))
    return examples


# The invented amendment of "Reviewing an amendment", made from the shipped file as the README
# describes it (invented values: for the example only, never clinical values).
_INVENTED_AMENDMENT = [
    ('version: "1.0.0"', 'version: "1.1.0"'),
    ('amount: {value: 6, evidence: placeholder, note: "recalled; not found in a public source"}',
     'amount: {value: 10, evidence: published, source: example-only, note: "invented for the example"}'),
    ('days: {value: "8-28", evidence: placeholder, note: "recalled (then taper); not found in a public source"}',
     'days: {value: "8-21", evidence: placeholder, note: "recalled (then taper); not found in a public source"}'),
    ("{mrd: pre_octadad, gte: {value: 5.0e-4,", "{mrd: pre_octadad, gte: {value: 1.0e-4,"),
    ("sources:\n", 'sources:\n  - key: example-only\n    citation: "Invented for this README: not a clinical source."\n'),
]
_STATELESS = {"risk", "plan", "due", "paths", "diff", "validate", "list"}


def _stateless(command: str) -> bool:
    """A command that reads only shipped protocols and example files (no registry, no other file)."""
    words = shlex.split(command.partition(" | ")[0])
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words.pop(0)
    if words[:1] != ["protocol"] or words[1:2] == [] or words[1] not in _STATELESS or "--db" in words:
        return False
    files = [w for w in words[2:] if w.endswith((".yaml", ".json"))]
    ids = [w for w in words[2:] if re.fullmatch(r"INF-\d+", w)]
    return not ids and all(f.startswith("examples/") or f == "amendment-1.1.0.yaml" for f in files)


_STATELESS_EXAMPLES = [(c, shown) for _, c, shown in _text_examples() if _stateless(c)]


def test_the_stateless_examples_are_found() -> None:
    """The parser still sees the examples below (a README reshuffle must not silently drop them)."""
    commands = " ".join(c for c, _ in _STATELESS_EXAMPLES)
    for sub in ("protocol risk", "protocol plan", "protocol due", "protocol paths", "protocol diff"):
        assert sub in commands, sub
    assert len(_STATELESS_EXAMPLES) >= 5


def _matches(out: list[str], shown: list[str]) -> bool:
    """`out` is what `shown` shows, where a line "..." stands for any lines (none included)."""
    if "..." not in shown:
        return out == shown
    cut = shown.index("...")
    head, tail = shown[:cut], shown[cut + 1:]
    return out[:cut] == head and any(_matches(out[start:], tail) for start in range(cut, len(out) + 1))


@pytest.mark.parametrize("command, shown", _STATELESS_EXAMPLES, ids=[c for c, _ in _STATELESS_EXAMPLES])
def test_the_readme_examples_are_what_the_commands_print(command: str, shown: list[str], tmp_path: Path) -> None:
    """Every stateless example of the README is re-run: a stale example is a defect.

    Example: `$ protocol paths interfant06-blinatumomab` followed by its output in a ```text block.
    """
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    if "amendment-1.1.0.yaml" in command:
        text = (ROOT / "protocol" / "definitions" / "interfant06-blinatumomab.yaml").read_text(encoding="utf-8")
        for old, new in _INVENTED_AMENDMENT:
            assert text.count(old) == 1, f"the README's invented amendment no longer applies: {old!r}"
            text = text.replace(old, new)
        (tmp_path / "amendment-1.1.0.yaml").write_text(text, encoding="utf-8")
    pipeline, _, head = command.partition(" | head -")
    words = shlex.split(pipeline)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "PROTOCOL_SITE", "PROTOCOL_DB")}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    run = subprocess.run([sys.executable, "-m", "protocol", *words[1:]], capture_output=True, text=True,
                         encoding="utf-8", env=env, cwd=tmp_path, timeout=120)
    out = (run.stdout + run.stderr).splitlines()
    assert _matches(out[:int(head)] if head else out, shown), "\n".join(out[:60])


def test_the_shipped_protocols_table_is_what_protocol_list_counts() -> None:
    """The README's table of shipped protocols holds what `protocol list` prints, row for row."""
    from protocol._loading import evidence_counts, list_protocols

    table = README.split("### Shipped protocols", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `([\w-]+)` \| ([\d.]+) \| (\w+) \| (\d+) \| (\d+) \| (\d+) \|$", table, flags=re.M)
    listed = []
    for p in list_protocols():
        c = evidence_counts(p)
        listed.append((p.id, p.version, p.definition.status,
                       str(c["published"]), str(c["derived"]), str(c["placeholder"])))
    assert sorted(rows) == sorted(listed)


def test_the_python_api_example_gives_what_its_comments_say() -> None:
    """The README's Python example is run; each `expression  # value` line must give that value
    (its repr; `...` in the comment stands for the rest)."""
    block = README.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env: dict[str, object] = {}
    checked = 0
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for line in block.splitlines():
            code, _, comment = line.partition("  # ")
            if not code.strip() or code.startswith("print("):
                continue
            if code.startswith(("import ", "interfant =", "patient =", "plan =")):
                exec(code, env)
                continue
            got, want = repr(eval(code.strip(), env)), comment.strip()
            prefix, dots, _ = want.partition("...")
            assert got.startswith(prefix) if dots else got == want, f"{code.strip()}: README {want}, got {got}"
            checked += 1
    finally:
        os.chdir(cwd)
    assert checked >= 3


def _document_commands() -> list[str]:
    """The command lines of the ```sh blocks of "Documents, calendars and FHIR" (comments dropped)."""
    section = README.split("## Documents, calendars and FHIR", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)
    return [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("command", _document_commands())
def test_the_document_commands_write_their_files(command: str, tmp_path: Path) -> None:
    """Each roadmap, calendar and FHIR command of the README runs on the example patients and
    writes its file (a `--previous OLD.ics` is the same command's earlier export).

    Example: `protocol roadmap examples/patients/mr-on-time.yaml -o roadmap.md`
    """
    words = shlex.split(command)
    if "weasyprint" in words:
        pytest.importorskip("weasyprint")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    if "--previous" in words:
        old = words[words.index("--previous") + 1]
        made = subprocess.run([sys.executable, "-m", "protocol", "calendar", words[2], "-o", old],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert made.returncode == 0, made.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PROTOCOL_SITE", "PROTOCOL_DB")}
    run = subprocess.run([sys.executable, "-m", "protocol", *words[1:]], capture_output=True, text=True,
                         encoding="utf-8", env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    written = tmp_path / words[words.index("-o") + 1]
    assert (run.stdout + run.stderr).strip() == f"wrote {written.name}" and written.stat().st_size > 1000
