"""A throwaway PostgreSQL server for the tests and the load benchmark.

Debian's server binaries (``/usr/lib/postgresql/15/bin``, or ``$PROTOCOL_PG_BIN``) make a
cluster in a temporary folder with ``initdb`` and run it with ``pg_ctl`` on a free loopback
port. ``initdb`` refuses to run as root: as root, the cluster is made and run as the
unprivileged ``postgres`` user (else ``nobody``). The superuser ``postgres`` (trust
authentication, loopback only) creates two login roles: ``protocol_owner`` (owns the test
databases, runs the migrations) and ``protocol_web`` (a member of ``protocol_app`` and
``protocol_monitor``: what the web application connects as; no ``BYPASSRLS``).

>>> with PgServer.start_new() as server:                       # doctest: +SKIP
...     url = server.new_database()
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(os.environ.get("PROTOCOL_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWNER = "protocol_owner"
WEB = "protocol_web"


def available() -> str | None:
    """None when a server can be started here, else why not."""
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (BIN / name).exists()]
    if missing:
        return f"PostgreSQL server binaries not found in {BIN} ({', '.join(missing)}): apt-get install postgresql"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


def free_port() -> int:
    """A TCP port nobody listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One cluster in a temporary folder (see the module's docstring)."""

    _names = itertools.count(1)

    def __init__(self, base: Path, port: int, fsync: bool = False) -> None:
        self.base = base
        self.data = base / "data"
        self.port = port
        self.fsync = fsync
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                break

    @classmethod
    def start_new(cls, fsync: bool = False) -> PgServer:
        """initdb, start, create the roles; the server is stopped by :meth:`destroy` (or ``with``)."""
        base = Path(tempfile.mkdtemp(prefix="protocol-pg-"))
        server = cls(base, free_port(), fsync)
        if server.user is not None:
            entry = pwd.getpwnam(server.user)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chmod(base, 0o700)
        server._run(BIN / "initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                    "--locale=C", "-N")
        server.start()
        server.admin(f"CREATE ROLE {OWNER} LOGIN CREATEROLE; CREATE ROLE {WEB} LOGIN NOBYPASSRLS; "
                     "CREATE ROLE protocol_app NOLOGIN NOBYPASSRLS; CREATE ROLE protocol_monitor NOLOGIN NOBYPASSRLS; "
                     f"GRANT protocol_app, protocol_monitor TO {WEB}")
        return server

    def _run(self, *cmd: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        args = [str(c) for c in cmd]
        if self.user is not None:
            args = ["runuser", "-u", self.user, "--", *args]
        return subprocess.run(args, check=check, capture_output=True, text=True, cwd=str(self.base), timeout=120)

    def start(self) -> None:
        """pg_ctl start (waits until it accepts connections)."""
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c max_connections=200 "
                f"-c shared_buffers=64MB")
        if not self.fsync:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        out = self._run(BIN / "pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-o", opts, "-w",
                        "-t", "60", "start", check=False)
        if out.returncode != 0:
            log = (self.base / "log").read_text(errors="replace") if (self.base / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {out.stderr or out.stdout}\n{log[-2000:]}")

    def stop(self) -> None:
        """pg_ctl stop (fast)."""
        self._run(BIN / "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def pid(self) -> int:
        """The postmaster's process id."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster and every server process (a crash), then wait until they are gone."""
        pid = self.pid()
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid, *map(int, children)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def url(self, database: str = "postgres", user: str = OWNER) -> str:
        """``postgresql://user@127.0.0.1:port/database``."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, database: str = "postgres") -> list[Any]:
        """Run ``sql`` as the superuser; the rows of the last statement."""
        import psycopg

        with psycopg.connect(self.url(database, "postgres"), autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def new_database(self, prefix: str = "t") -> str:
        """A new empty database owned by ``protocol_owner``; its URL (as the owner)."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} OWNER {OWNER} TEMPLATE template0")
        self.admin(f"REVOKE ALL ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO {OWNER}", name)
        return self.url(name)
