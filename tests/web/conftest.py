"""Fixtures of the web application tests: a real server (uvicorn, 127.0.0.1, a free port) on a
registry with two sites and a user of every role, signed-in HTTP clients, and Debian's
Chromium for pytest-playwright (never a downloaded browser).

Users (password ``PASSWORDS[name]``): ``alice`` coordinator of site-a, ``bea`` coordinator of
site-b, ``phil`` pharmacist of site-a, ``ines`` investigator of site-a, ``mona`` monitor,
``root`` admin. Patients: INF-0001 in site-a, INF-0002 in site-b.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples" / "patients"
PASSWORDS = {"alice": "coordinator phrase one", "bea": "coordinator phrase two", "phil": "pharmacy phrase three",
             "ines": "research phrase four", "mona": "monitoring phrase five", "root": "admin phrase number six"}
ROLES = {"alice": ("coordinator", ["site-a"]), "bea": ("coordinator", ["site-b"]),
         "phil": ("pharmacist", ["site-a"]), "ines": ("investigator", ["site-a"]), "mona": ("monitor", []),
         "root": ("admin", [])}
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live:
    """A running server: ``url``, ``db``, and :meth:`client` for a signed-in HTTP client."""

    def __init__(self, url: str, db: Path, server: Any, thread: threading.Thread) -> None:
        self.url, self.db, self.server, self.thread = url, db, server, thread

    def client(self, name: str | None = None, password: str | None = None) -> httpx.Client:
        """An HTTP client with the CSRF cookie, signed in as ``name`` (anonymous without)."""
        c = httpx.Client(base_url=self.url, follow_redirects=False, timeout=60)
        page = c.get("/signin")
        c.csrf = csrf_of(page.text)  # type: ignore[attr-defined]
        if name is not None:
            r = c.post("/signin", data={"csrftoken": c.csrf, "name": name,  # type: ignore[attr-defined]
                                        "password": password or PASSWORDS[name], "next": "/patients"})
            assert r.status_code == 303, r.text
        return c


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    m = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def start_server(folder: Path, db: Any = None, serve_as: str | None = None) -> Live:
    """Make the registry and start the server in a thread (used by the session fixture and by
    tests that need a server of their own, e.g. throttling). ``db``: where (default an SQLite
    file in ``folder``; a PostgreSQL URL as its owner), ``serve_as``: the URL the server uses
    (PostgreSQL: the application's role)."""
    import uvicorn

    from protocol._auth import add_site, add_user
    from protocol._registry import open_registry
    from protocol.web import create_app

    db = folder / "web.db" if db is None else db
    with open_registry(db, create=True) as reg:
        add_site(reg, "site-a")
        add_site(reg, "site-b")
        for name, (role, sites) in ROLES.items():
            add_user(reg, name, role, sites, PASSWORDS[name])
        reg.add_patient(EXAMPLES / "mr-on-time.yaml", by="alice", site="site-a")
        reg.add_patient(EXAMPLES / "hr-to-hsct.yaml", by="bea", site="site-b")
    port = _free_port()
    # An SQLite registry keeps its web secret beside it; a PostgreSQL one here, not in ~/.config.
    secret = folder / "web.web-secret" if serve_as or not isinstance(db, Path) else None
    config = uvicorn.Config(create_app(serve_as or db, secret_file=secret), host="127.0.0.1", port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the server did not start"
    return Live(f"http://127.0.0.1:{port}", db, server, thread)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The shared server of the web tests."""
    running = start_server(tmp_path_factory.mktemp("web"))
    yield running
    running.server.should_exit = True
    running.thread.join(10)


@pytest.fixture(scope="session")
def base_url(live: Live) -> str:
    """pytest-playwright's base URL: the live server."""
    return live.url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium with the flags of shared/reference/web-app.md §5 (no browser download)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs the chromium package)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-sync"]}
