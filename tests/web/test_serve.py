"""`protocol serve` and the README's third block: the commands run as written, the server
starts on a free port, and the demo user signs in."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import Live

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_readme_demo_block_starts_the_server_and_the_demo_user_signs_in(tmp_path: Path) -> None:
    block = re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)[2]
    assert block.endswith(".venv/bin/protocol serve --db demo.db")
    password = re.search(r"printf '%s\\n' '([^']+)'", block).group(1)
    assert f"with the password `{password}`" in README
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    # Run the block as written from a folder where .venv/bin is this environment's.
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(bin_dir)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PROTOCOL_DB": ""}
    server = subprocess.Popen(["bash", "-c", f"{block} --port {port}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                page = httpx.get(f"{url}/signin", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert page.status_code == 200
        with httpx.Client(base_url=url) as c:
            token = re.search(r'name="csrftoken" value="([^"]+)"', c.get("/signin").text).group(1)
            r = c.post("/signin", data={"csrftoken": token, "name": "demo", "password": password})
            assert r.status_code == 303 and r.headers["location"] == "/patients"
            assert "INF-0001" in c.get("/patients").text
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=20)
    assert "added INF-0001" in out and "added user demo" in out and "Traceback" not in out
    assert (tmp_path / "demo.db").stat().st_mode & 0o077 == 0


def test_serve_on_a_registry_without_users_says_how_to_make_the_first_admin(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "empty.db"
    server = subprocess.Popen([sys.executable, "-m", "protocol", "serve", "--db", str(db), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/signin", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=20)
    assert f"protocol users add admin --role admin --db {db}" in err


def test_the_patient_page_shows_the_plans_warnings_and_marks(live: Live) -> None:
    """What the plan warns about (a per-m² infant dose without an infant rule) is on the page a
    coordinator reads, and an element whose dates follow a placeholder length is marked."""
    html = live.client("alice").get("/patients/INF-0001").text
    warnings = html.split('<h2 id="warnings-heading">Warnings</h2>', 1)[1].split("</section>", 1)[0]
    assert "per-m² doses planned before the first birthday with no infant rule" in warnings
    assert "Maintenance (maintenance) <span class=\"mark\">[UNVERIFIED]</span>" in html
