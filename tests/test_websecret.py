"""The web application's secret file (:mod:`protocol._websecret`), through the real entry points:
``protocol serve`` makes it 0600 beside the registry and two servers of one registry accept
each other's forms; ``create_app`` reuses it; ``protocol rotate-secret`` replaces it (old forms
refused, sessions kept); a file that others may read, or an empty one, is refused with exit 2."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from protocol._cli import app as cli_app
from protocol._websecret import ENV_VAR, load_secret, rotate_secret, secret_path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "patients" / "mr-on-time.yaml"
PASSWORD = "a long pass phrase for the test"


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An SQLite registry with one patient and the coordinator ``alice``."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("PROTOCOL_DEBUG", raising=False)
    db = tmp_path / "trial.db"
    ok(cli("sites", "add", "site-a", "--db", db))
    ok(cli("patients", "add", EXAMPLE, "--db", db, "--by", "alice", "--site", "site-a"))
    ok(CliRunner().invoke(cli_app, ["users", "add", "alice", "--role", "coordinator", "--site", "site-a",
                                    "--password-stdin", "--db", str(db)], input=PASSWORD + "\n"))
    return db


def cli(*args: Any) -> Any:
    return CliRunner().invoke(cli_app, [str(a) for a in args])


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(db: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    server = subprocess.Popen([sys.executable, "-m", "protocol", "serve", "--db", str(db), "--port", str(port),
                               *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return server, f"http://127.0.0.1:{port}"


def _wait(server: subprocess.Popen[str], url: str) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise AssertionError(f"the server exited {server.returncode}: {server.communicate()[1]}")
        try:
            httpx.get(f"{url}/signin", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the server did not start")


def _stop(server: subprocess.Popen[str]) -> str:
    server.terminate()
    return server.communicate(timeout=20)[1]


def _form(html: str) -> str:
    m = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def test_two_servers_of_one_registry_share_the_secret_file_made_0600(registry: Path) -> None:
    """Both ``protocol serve`` start at once: one file, 0600, and a form opened on the first
    server is accepted by the second (before, each made its own key and refused the other's)."""
    secret = registry.with_name("trial.db.web-secret")
    assert not secret.exists()
    first, url1 = _serve(registry)
    second, url2 = _serve(registry)
    try:
        _wait(first, url1)
        _wait(second, url2)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_text().strip()) >= 43
        with httpx.Client(base_url=url1) as c:
            token = _form(c.get("/signin").text)
            r = c.post(f"{url2}/signin", data={"csrftoken": token, "name": "alice", "password": PASSWORD})
            assert r.status_code == 303 and r.headers["location"] == "/patients", r.text
            assert "INF-0001" in c.get(f"{url2}/patients").text
            assert "INF-0001" in c.get(f"{url1}/patients").text
    finally:
        err = _stop(first) + _stop(second)
    assert f"form tokens signed with the key in {secret}" in err
    assert "Traceback" not in err
    assert list(registry.parent.glob(".*.tmp")) == []  # no temporary file left behind


def _asgi(app: Any, calls: Any) -> Any:
    async def run() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            return await calls(c)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a browser test may leave a loop running in this thread
        return pool.submit(asyncio.run, run()).result()


def test_create_app_reuses_the_file_and_rotate_secret_replaces_it(registry: Path) -> None:
    """A token (and a session) from one application works in a second one made later; after
    ``protocol rotate-secret`` the file differs, a new application refuses the old form (403,
    "Form expired") but keeps the signed-in session."""
    from protocol.web import create_app

    first = create_app(registry)
    secret = registry.with_name("trial.db.web-secret")
    before = secret.read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    async def sign_in(c: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
        token = _form((await c.get("/signin")).text)
        r = await c.post("/signin", data={"csrftoken": token, "name": "alice", "password": PASSWORD})
        assert r.status_code == 303, r.text
        page = (await c.get("/patients")).text
        return _form(page) if "csrftoken" in page else token, dict(c.cookies)

    token, cookies = _asgi(first, sign_in)
    second = create_app(registry)
    assert secret.read_text() == before

    async def post_with(c: httpx.AsyncClient) -> httpx.Response:
        c.cookies.update(cookies)
        return await c.post("/signout", data={"csrftoken": token})

    async def still_signed_in(c: httpx.AsyncClient) -> httpx.Response:
        c.cookies.update(cookies)
        return await c.get("/patients")

    # The second application accepts the first one's form token (the sign-out form here
    # would end the session, so it is tried last).
    assert _asgi(second, still_signed_in).status_code == 200

    result = ok(cli("rotate-secret", "--db", registry))
    assert f"wrote a new web secret to {secret}" in result.stdout
    assert "open forms must then be reloaded" in result.stdout and "sessions survive" in result.stdout
    after = secret.read_text()
    assert after != before and len(after.strip()) >= 43
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    rotated = create_app(registry)
    refused = _asgi(rotated, post_with)
    assert refused.status_code == 403 and "Form expired" in refused.text
    kept = _asgi(rotated, still_signed_in)
    assert kept.status_code == 200 and "INF-0001" in kept.text  # the session survived the rotation
    accepted = _asgi(second, post_with)  # the old key still signs for the app made before the rotation
    assert accepted.status_code == 303


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_file_others_may_read_is_refused_with_exit_2(registry: Path, mode: int) -> None:
    secret = registry.with_name("trial.db.web-secret")
    load_secret(secret)
    os.chmod(secret, mode)
    server, _ = _serve(registry)
    try:
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    err = server.communicate()[1]
    assert server.returncode == 2, err
    assert str(secret) in err and f"got mode {mode:o}" in err and "chmod 600" in err
    assert "Traceback" not in err
    # rotate-secret writes a new one, owner-only again, and the server takes it
    ok(cli("rotate-secret", "--db", registry))
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert load_secret(secret)


@pytest.mark.parametrize(("text", "says"), [("", "got an empty file"), ("  \n", "got an empty file"),
                                            ("short", "at least 32 characters, got 5")])
def test_an_empty_or_short_secret_file_is_refused(registry: Path, tmp_path: Path, text: str, says: str) -> None:
    secret = tmp_path / "given.secret"
    secret.write_text(text)
    secret.chmod(0o600)
    server, _ = _serve(registry, "--secret-file", str(secret))
    server.wait(timeout=60)
    err = server.communicate()[1]
    assert server.returncode == 2 and str(secret) in err and says in err and "Traceback" not in err


def test_rotate_secret_refuses_a_registry_that_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    result = cli("rotate-secret", "--db", tmp_path / "typo.db")
    assert result.exit_code == 2 and "no registry here" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_where_the_secret_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert secret_path(tmp_path / "a.db") == tmp_path / "a.db.web-secret"
    assert secret_path(f"sqlite://{tmp_path}/b.db") == tmp_path / "b.db.web-secret"
    pg = secret_path("postgresql://app:hunter2@db.example:5433/trial")
    assert pg == tmp_path / "config" / "protocol" / "app@db.example_5433_trial.web-secret"
    assert "hunter2" not in str(pg)
    assert secret_path("postgresql://app@db.example/trial").name == "app@db.example_5432_trial.web-secret"
    assert secret_path(tmp_path / "a.db", tmp_path / "given") == tmp_path / "given"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert secret_path("postgresql://app@db.example/trial") == tmp_path / "from-env"
    assert secret_path(tmp_path / "a.db", tmp_path / "given") == tmp_path / "given"  # the option wins
    # the configuration folder is made owner-only when the secret is first made there
    monkeypatch.delenv(ENV_VAR)
    made = load_secret(pg)
    assert made and stat.S_IMODE(pg.parent.stat().st_mode) == 0o700
    assert load_secret(pg) == made
    # ... and by a rotation too, when it is the first thing done there
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other"))
    fresh = secret_path("postgresql://app@db.example/trial")
    assert rotate_secret(fresh) == fresh and stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and load_secret(fresh) != made


def test_rotation_is_atomic_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation that fails before the rename leaves the old key in place and no temporary file."""
    import protocol._websecret as module

    secret = tmp_path / "s.web-secret"
    old = load_secret(secret)

    def broken(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module.os, "replace", broken)
    with pytest.raises(module.RegistryError, match="No space left on device"):
        rotate_secret(secret)
    assert load_secret(secret) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.web-secret"]
