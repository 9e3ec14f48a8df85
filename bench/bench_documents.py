"""Benchmark of the documents for one patient: HTML roadmap, PDF roadmap (typst in-process, per
page, and the whole `protocol roadmap --format pdf` process), ICS calendar (and, for
information, the FHIR bundle and the WeasyPrint engine when it is installed), each printed as
a median against its budget.

Run from the repository root with the package installed (no network needed)::

    .venv/bin/python bench/bench_documents.py             # 7 repeats (PDF: 5), about 20 s
    .venv/bin/python bench/bench_documents.py --quick     # 3 repeats
    .venv/bin/python bench/bench_documents.py --patient examples/patients/hr-to-hsct.yaml

Each figure is the median wall time of the repeats, after one warm-up call (the Jinja
template compiled, typst's fonts found). The whole-process PDF figure runs the installed
`protocol` script (start-up, imports, plan, PDF, write) as a subprocess. The garbage collector stays on. The plan is
built once beforehand: only the document is timed. The script reports and always exits 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import protocol
from protocol._calendar import to_ics
from protocol._documents import render_pdf, render_roadmap
from protocol._fhir import fhir_json, to_fhir_care_plan

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.date(2026, 11, 21)
BUDGETS_MS = {"html": 30.0, "ics": 30.0, "ics_reminders": 30.0, "pdf": None, "pdf_page": 20.0,
              "pdf_process": 1000.0, "pdf_weasyprint": None, "fhir": None}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """(median wall ms, spread %, median CPU ms of this process and the subprocesses it ran)."""
    fn()  # warm-up
    samples, cpu = [], []
    for _ in range(repeats):
        start, start_cpu, start_children = time.perf_counter(), time.process_time(), _children_cpu()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu + _children_cpu() - start_children) * 1000)
    median = statistics.median(samples)
    spread = (max(samples) - min(samples)) / 2 / median * 100 if median else 0.0
    return median, spread, statistics.median(cpu)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _page_count(data: bytes) -> int:
    import io

    import pypdf

    return len(pypdf.PdfReader(io.BytesIO(data)).pages)


def _weasyprint_works() -> bool:
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patient", type=Path, default=ROOT / "examples" / "patients" / "mr-on-time.yaml")
    parser.add_argument("--quick", action="store_true", help="3 repeats (PDF 2)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    pdf_repeats = max(2, min(repeats, 5)) if not args.quick else 2
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1790000000")
    print(f"Python {platform.python_version()} on {platform.platform()} · {os.cpu_count()} CPUs")
    print("  " + " · ".join(f"{n} {_version(n)}" for n in ("jinja2", "typst", "weasyprint", "icalendar",
                                                            "fhir.resources")))
    plan = protocol.plan(args.patient, as_of=AS_OF)
    print(f"patient {plan.patient.id} ({args.patient.name}), as of {AS_OF}: {len(plan.items)} items, "
          f"{len(plan.elements)} elements; repeats {repeats} (PDF {pdf_repeats})\n")
    pages = _page_count(render_pdf(plan))
    script = Path(sys.executable).parent / "protocol"
    tmp = Path(tempfile.mkdtemp())
    command = [str(script), "roadmap", str(args.patient), "--as-of", AS_OF.isoformat(), "--format", "pdf",
               "-o", str(tmp / "roadmap.pdf")]
    rows = [
        ("html", "HTML roadmap (render_roadmap)", lambda: render_roadmap(plan, "html"), repeats),
        ("pdf", f"PDF roadmap (render_pdf, typst, {pages} pages)", lambda: render_pdf(plan), pdf_repeats),
        ("pdf_process", "PDF: whole `protocol roadmap --format pdf` process",
         lambda: subprocess.run(command, check=True, capture_output=True), pdf_repeats),
        ("ics", "ICS calendar (to_ics)", lambda: to_ics(plan), repeats),
        ("ics_reminders", "ICS calendar with reminders (--remind-days 1)", lambda: to_ics(plan, remind_days=1),
         repeats),
        ("fhir", "FHIR CarePlan bundle (to_fhir_care_plan + JSON)", lambda: fhir_json(to_fhir_care_plan(plan)),
         max(2, repeats // 2)),
    ]
    if _weasyprint_works():
        rows.append(("pdf_weasyprint", "PDF roadmap, --engine weasyprint (for comparison)",
                     lambda: render_pdf(plan, engine="weasyprint"), 2))
    print(f"{'document':50} {'median':>11} {'spread':>8} {'CPU':>11} {'budget':>10}  verdict")
    for key, label, fn, n in rows:
        median, spread, cpu = _median_ms(fn, n)
        budget = BUDGETS_MS[key]
        verdict = "" if budget is None else ("PASS" if median <= budget else "OVER")
        shown = "" if budget is None else f"≤ {budget:g} ms"
        print(f"{label:50} {median:8.1f} ms {spread:6.0f} % {cpu:8.1f} ms {shown:>10}  {verdict}")
        if key == "pdf":
            per_page = median / pages
            budget = BUDGETS_MS["pdf_page"]
            print(f"{'  PDF per page (in-process median / pages)':50} {per_page:8.1f} ms {'':>8} "
                  f"{cpu / pages:8.1f} ms {f'≤ {budget:g} ms':>10}  {'PASS' if per_page <= budget else 'OVER'}")
    print("\nmedian = wall time (the budget applies to it); CPU = this process's CPU time: when CPU is well "
          "below\nthe wall time, other processes were competing for the cores and the wall figure is inflated\n"
          "(the whole-process row: the CPU time of the `protocol` subprocess).")
    sizes = {"html": len(render_roadmap(plan, "html").encode()), "pdf": len(render_pdf(plan)),
             "ics": len(to_ics(plan))}
    print("\nsizes: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
