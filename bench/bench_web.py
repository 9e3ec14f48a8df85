"""The web application on loopback: p50/p95 latency of the patient page, the worklist with
1,000 registered patients and recording an entry, beside a floor from the same run (the static
stylesheet, served by the same server and middleware: what any request costs).

Budgets (issue 10): patient page p95 ≤ 50 ms, worklist p95 ≤ 100 ms, record p95 ≤ 100 ms.
Run: ``.venv/bin/python bench/bench_web.py [--quick]``; exit 1 when a budget is missed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGETS_MS = {"patient page": 50.0, "worklist (1,002 patients)": 100.0, "record an entry": 100.0}


def _percentiles(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return xs[len(xs) // 2] * 1e3, xs[min(len(xs) - 1, int(len(xs) * 0.95))] * 1e3


def _timed(fn: Any, n: int) -> list[float]:
    for _ in range(3):  # warm-up: the first requests fill the server's caches
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = fn()
        out.append(time.perf_counter() - t)
        assert r.status_code < 400, r.status_code
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when a budget is missed (the figures are still printed)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 requests per figure instead of 60")
    n = 20 if ap.parse_args(argv).quick else 60

    from protocol._io import read_document
    from protocol._registry import open_registry
    from tests.web.conftest import start_server

    with tempfile.TemporaryDirectory() as tmp:
        live = start_server(Path(tmp))
        base = read_document(ROOT / "examples/patients/mr-on-time.yaml").data
        with open_registry(live.db) as reg:
            patients = []
            for i in range(1000):
                d = copy.deepcopy(base)
                d["id"] = f"BEN-{i:04d}"
                patients.append(d)
            reg._bulk_insert(patients, by="bench", site="site-a")
            reg.worklist(None, 7)  # the projection, once: the page measures serving it
        c = live.client("alice")
        k = [0]

        def record() -> Any:
            k[0] += 1
            return c.post("/patients/INF-0001/record", data={"csrftoken": c.csrf, "action": "counts",
                                                             "date": "2026-11-20", "anc": str(1 + k[0] / 1000)})

        rows = [("floor: static stylesheet", _percentiles(_timed(lambda: c.get("/static/web.css"), n)), None),
                ("patient page", _percentiles(_timed(lambda: c.get("/patients/INF-0001"), n)), None),
                ("worklist (1,002 patients)", _percentiles(_timed(lambda: c.get("/worklist"), max(10, n // 2))), None),
                ("record an entry", _percentiles(_timed(record, n)), None)]
        live.server.should_exit = True
    print(f"web application on loopback · {n} requests per figure · p50 / p95 in ms")
    missed = False
    floor = rows[0][1][0]
    for name, (p50, p95), _ in rows:
        budget = BUDGETS_MS.get(name)
        verdict = "" if budget is None else ("  ok" if p95 <= budget else "  OVER")
        missed |= verdict == "  OVER"
        extra = "" if budget is None else f"  budget p95 ≤ {budget:g}"
        print(f"{name:<28} {p50:8.1f} {p95:8.1f}   {p50 / floor:6.1f}× floor{extra}{verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
