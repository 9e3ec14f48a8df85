"""Load test of the registry behind the web application (issue 13): 16 concurrent clients
(a bounded asyncio loop, httpx) record blood counts through ``protocol serve`` on loopback for
1,000 patients over 100 sites, for 60 s, on SQLite and on PostgreSQL, side by side.

Each client is a coordinator of its own sites (the 100 sites dealt round-robin to the 16
clients) and records for their patients in turn; every entry carries a marker (its ANC) unique
for its patient. Afterwards, read straight from the database: every acknowledged entry (a 303
naming its seq) is present exactly once with its marker, every patient replays and plans
(``Registry.check``), and the worklist served from the projection equals a fresh recomputation
(the projection dropped and rebuilt). Reported: entries/s, p50/p95/p99 of a recording.

``--fault``: the PostgreSQL server is SIGKILLed a third of the way through and restarted 3 s
later (crash recovery). Then: no acknowledged entry is lost, and while it was down the clients
got error responses (counted by status), no request hung (client timeout 15 s).

The PostgreSQL server is a throwaway cluster (tests/pgserver.py, fsync on); the web
application connects as ``protocol_web`` (row-level security applies).

Run: ``.venv/bin/python bench/bench_load.py [--seconds 60] [--only sqlite|postgresql] [--fault]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSWORD = "load test pass phrase"
DATE = "2026-11-20"


def build(url: str, patients: int, sites: int, clients: int) -> list[tuple[str, list[str]]]:
    """The registry: sites, patients (bulk, each a copy of an example), one coordinator per
    client; ``[(user, [patient, ...]), ...]`` per client."""
    from protocol._auth import add_site, add_user
    from protocol._io import read_document
    from protocol._registry import Registry

    base = read_document(ROOT / "examples/patients/mr-on-time.yaml").data
    site_ids = [f"site-{s:03d}" for s in range(sites)]
    per_client: list[tuple[str, list[str]]] = []
    with Registry(url, create=True) as reg:
        for site in site_ids:
            add_site(reg, site)
        by_site: dict[str, list[str]] = {s: [] for s in site_ids}
        for i in range(patients):
            by_site[site_ids[i % sites]].append(f"LOAD-{i:04d}")
        for site, ids in by_site.items():
            reg._bulk_insert(({**copy.deepcopy(base), "id": pid} for pid in ids), by="load", site=site)
        for c in range(clients):
            mine = site_ids[c::clients]
            add_user(reg, f"coord{c:02d}", "coordinator", mine, PASSWORD)
            per_client.append((f"coord{c:02d}", [p for s in mine for p in by_site[s]]))
        reg.worklist(None, 7)  # the projection, once
    return per_client


def serve(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``protocol serve`` in a process of its own (its log in ``log``); returns once it answers."""
    import httpx

    with open(log, "wb") as out:  # a file, never a pipe nobody reads: a full pipe would stop the server
        proc = subprocess.Popen([sys.executable, "-m", "protocol", "serve", "--db", url, "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=out, cwd=str(ROOT))
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/signin", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"protocol serve exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError("protocol serve did not answer")


class Stats:
    """What the clients saw."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, float, int]] = []  # (patient, marker, seq)
        self.latency: list[float] = []
        self.errors: Counter[str] = Counter()
        self.error_latency: list[float] = []
        self.hangs = 0


async def client(base: str, user: str, patients: list[str], deadline: float, stats: Stats) -> None:
    """Sign in, then record a count for each of the user's patients in turn until ``deadline``."""
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=15.0) as c:
        page = await c.get("/signin")
        csrf = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = await c.post("/signin", data={"csrftoken": csrf, "name": user, "password": PASSWORD})
        assert r.status_code == 303, r.status_code
        k = 0
        while time.monotonic() < deadline:
            pid = patients[k % len(patients)]
            marker = round(1 + (k // len(patients) + 1) / 1000, 3)
            k += 1
            t = time.perf_counter()
            try:
                r = await c.post(f"/patients/{pid}/record", data={"csrftoken": csrf, "action": "counts",
                                                                  "date": DATE, "anc": str(marker)})
            except httpx.TimeoutException:
                stats.hangs += 1
                continue
            except httpx.TransportError as exc:
                stats.errors[f"transport {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            took = time.perf_counter() - t
            m = re.search(r"recorded=(\d+)", r.headers.get("location", ""))
            if r.status_code == 303 and m:
                stats.acked.append((pid, marker, int(m.group(1))))
                stats.latency.append(took)
            else:
                stats.errors[f"HTTP {r.status_code}"] += 1
                stats.error_latency.append(took)
                await asyncio.sleep(0.2)


async def load(base: str, per_client: list[tuple[str, list[str]]], seconds: float, stats: Stats,
               fault: Any = None) -> float:
    """Every client at once (one task each: the loop is bounded by the number of clients)."""
    start = time.monotonic()
    deadline = start + seconds
    tasks = [asyncio.create_task(client(base, u, ps, deadline, stats)) for u, ps in per_client]
    if fault is not None:
        tasks.append(asyncio.create_task(fault(start, seconds)))
    await asyncio.gather(*tasks)
    return time.monotonic() - start


def verify(url: str, stats: Stats) -> dict[str, Any]:
    """From the database itself: acknowledged entries present once, patients replay, the
    worklist equals a fresh recomputation."""
    import json

    from protocol._registry import Registry

    with Registry(url) as reg:
        with reg._read() as conn:
            rows = conn.execute("SELECT seq, patient, data FROM entries WHERE kind = 'count'").fetchall()
        present = Counter((p, json.loads(d)["anc"]) for _, p, d in rows)
        by_seq = {s: (p, json.loads(d)["anc"]) for s, p, d in rows}
        lost = [a for a in stats.acked if by_seq.get(a[2]) != (a[0], a[1])]
        twice = [a for a in stats.acked if present[(a[0], a[1])] != 1]
        t = time.perf_counter()
        check = reg.check()
        check_s = time.perf_counter() - t
        served = reg.worklist(None, 7).rows
        with reg._write() as conn:
            conn.execute("DELETE FROM worklist_rows")
            conn.execute("DELETE FROM projection")
        fresh = reg.worklist(None, 7)
    return {"entries": len(rows), "lost": len(lost), "duplicated": len(twice), "problems": len(check["problems"]),
            "patients": check["patients"], "check_s": check_s, "worklist_same": served == fresh.rows,
            "worklist_rows": len(fresh.rows), "recomputed": fresh.refreshed}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1e3 if xs else float("nan")


def run(dialect: str, args: argparse.Namespace, tmp: Path, pg: Any) -> dict[str, Any]:
    from tests.pgserver import WEB, free_port

    if dialect == "sqlite":
        owner = web = str(tmp / "load.db")
    else:
        owner = pg.new_database("load")
        web = owner.replace("protocol_owner@", f"{WEB}@")
    per_client = build(owner, args.patients, args.sites, args.clients)
    port = free_port()
    proc = serve(web, port, tmp / f"serve-{dialect}.log")
    stats = Stats()
    down: dict[str, float] = {}

    async def fault(start: float, seconds: float) -> None:
        await asyncio.sleep(seconds / 3)
        down["at"] = time.monotonic() - start
        pg.kill()
        await asyncio.sleep(3)
        await asyncio.to_thread(pg.start)
        down["back"] = time.monotonic() - start

    try:
        elapsed = asyncio.run(load(f"http://127.0.0.1:{port}", per_client, args.seconds, stats,
                                   fault if (args.fault and dialect == "postgresql") else None))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            stats.errors["server did not stop within 15 s of SIGTERM"] += 1
            proc.kill()
            proc.wait()
    result = verify(owner, stats)
    result.update(dialect=dialect, acked=len(stats.acked), rate=len(stats.acked) / elapsed, elapsed=elapsed,
                  p50=pct(stats.latency, 0.50), p95=pct(stats.latency, 0.95), p99=pct(stats.latency, 0.99),
                  errors=dict(stats.errors), error_p99=pct(stats.error_latency, 0.99), hangs=stats.hangs, **down)
    return result


def main(argv: list[str] | None = None) -> int:
    """Print the figures; exit 1 when an acknowledged entry is lost or duplicated, a patient
    does not replay, the worklist differs from a recomputation, or a request hung."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--fault", action="store_true", help="SIGKILL the PostgreSQL server during the load")
    args = ap.parse_args(argv)

    from tests.pgserver import PgServer, available

    dialects = [args.only] if args.only else ["sqlite", "postgresql"]
    pg = None
    if "postgresql" in dialects:
        why = available()
        if why:
            print(f"PostgreSQL: {why}", file=sys.stderr)
            return 1
        pg = PgServer.start_new(fsync=True)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for d in dialects:
                results.append(run(d, args, Path(tmp), pg))
    finally:
        if pg is not None:
            pg.destroy()
    print(f"load: {args.clients} clients, {args.patients} patients over {args.sites} sites, {args.seconds:.0f} s, "
          f"protocol serve on loopback ({os.cpu_count()} cores)" + (" · PostgreSQL killed during the run"
                                                                    if args.fault else ""))
    print(f"{'database':<11} {'entries/s':>9} {'acked':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'lost':>4} {'dup':>3} {'replay':>7} {'worklist':>8} {'hangs':>5}  errors")
    bad = False
    for r in results:
        ok_wl = "same" if r["worklist_same"] else "DIFFERS"
        print(f"{r['dialect']:<11} {r['rate']:>9.1f} {r['acked']:>6} {r['p50']:>7.1f} {r['p95']:>7.1f} "
              f"{r['p99']:>7.1f} {r['lost']:>4} {r['duplicated']:>3} {r['patients'] - r['problems']:>4}/"
              f"{r['patients']:<3}{'':>0} {ok_wl:>7} {r['hangs']:>5}  {r['errors'] or '-'}")
        if "at" in r:
            print(f"  fault: killed at {r['at']:.1f} s, accepting again at {r['back']:.1f} s; error responses "
                  f"p99 {r['error_p99']:.0f} ms")
        bad |= bool(r["lost"] or r["duplicated"] or r["problems"] or not r["worklist_same"] or r["hangs"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
