"""The 3-minute budget: every solution notebook top to bottom at the quick budget, timed.

    make bench-notebooks          # or: .venv/bin/python benchmarks/notebooks.py [names...] [--merge]

Runs each solution notebook under nbval with every check strict (as `make test` does), in a fresh
cache (so every model is trained, not loaded), after building the data caches once. Prints wall and
CPU seconds (the kernel's included) against the budget, writes benchmarks/out/notebooks.md (the
table the README shows, with the machine and its load), and exits 1 if any notebook is over budget
or fails. Run it on an otherwise idle machine: it measures speed, which `make test` never asserts.
With names, the table is written only with ``--merge``: the named notebooks' rows replace (or join)
theirs in the existing table, and a line under the table says when and on what load they were measured.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "notebooks.md"
BUDGET_S = 180.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(path: Path, env: dict[str, str]) -> tuple[int, float, float, str]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "-o", "addopts=", "-q",
           str(path)]
    t0, c0 = time.perf_counter(), _cpu()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - t0, _cpu() - c0, proc.stdout[-3000:]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores; load average before the run (1 / 5 / 15 min): {load}"


def merge(table: str, rows: list[tuple[str, float, float, str]], where: str) -> str:
    """``table`` (notebooks.md) with ``rows`` replacing or joining its rows, sorted, and a note on when."""
    lines = table.rstrip("\n").splitlines()
    new = {n: f"| {n} | {w:.0f} | {c:.0f} | {v} |" for n, w, c, v in rows}
    body = {l.split("|")[1].strip(): l for l in lines if l.startswith("| ") and not l.startswith("| notebook")}
    body.update(new)
    head = [l for l in lines if not l.startswith("|") and not l.startswith("Measured separately")]
    while head and not head[-1].strip():
        head.pop()
    notes = []
    for line in (l for l in lines if l.startswith("Measured separately")):
        when, names = line.rsplit("): ", 1)
        kept = [n for n in names.rstrip(".").split(", ") if n not in new]
        if kept:
            notes.append(f"{when}): {', '.join(kept)}.")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    notes.append(f"Measured separately ({stamp}; {where}): {', '.join(new)}.")
    return "\n".join(head + ["", "| notebook | wall s | CPU s | verdict |", "|---|---|---|---|"]
                     + [body[k] for k in sorted(body)] + [""] + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="solution notebooks (default: all)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds per notebook (default 180)")
    ap.add_argument("--merge", action="store_true",
                    help="with names: put their rows into the existing table instead of not writing it")
    args = ap.parse_args(argv)
    paths = [ROOT / "solutions" / n for n in args.names] or sorted((ROOT / "solutions").glob("*.ipynb"))
    where = machine()
    cache = tempfile.mkdtemp(prefix="course-bench-cache-")
    env = {**os.environ, "COURSE_CACHE": cache, "COURSE_STRICT": "1", "COURSE_QUIET": "1",
           "COURSE_BUDGET": "quick", "PYTHONWARNINGS": "ignore"}
    env.pop("COURSE_RETRAIN", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from course_utils.datasets import few_shot_data as f; "
                    "from course_utils import omniglot as o; f('glyphs'); o.available() and f('omniglot')"],
                   cwd=ROOT, env=env, check=True)
    data_s = time.perf_counter() - t0
    print(f"{where}\ndata caches built in {data_s:.0f} s (not counted)\n")
    print(f"{'notebook':34s} {'wall s':>7s} {'CPU s':>7s}  verdict", flush=True)
    rows, bad = [], 0
    for path in paths:
        rc, wall, cpu, tail = run(path, env)
        verdict = "FAILED" if rc else ("over budget" if wall > args.budget else "ok")
        bad += verdict != "ok"
        rows.append((path.name, wall, cpu, verdict))
        print(f"{path.name:34s} {wall:7.0f} {cpu:7.0f}  {verdict}", flush=True)
        if rc:
            print(tail)
    lines = ["# Notebook times (benchmarks/notebooks.py)", "",
             f"Every solution notebook top to bottom at the quick budget under nbval, every check strict, "
             f"models trained (fresh cache), data caches built beforehand. Budget: {args.budget:.0f} s wall "
             f"per notebook. Machine: {where}. COURSE_THREADS={os.environ.get('COURSE_THREADS', '1')}.", "",
             "| notebook | wall s | CPU s | verdict |", "|---|---|---|---|"]
    lines += [f"| {n} | {w:.0f} | {c:.0f} | {v} |" for n, w, c, v in rows]
    if not args.names:
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text("\n".join(lines) + "\n")
        print(f"\nwrote {OUT.relative_to(ROOT)}")
    elif args.merge:
        OUT.write_text(merge(OUT.read_text() if OUT.exists() else "\n".join(lines[:5]) + "\n", rows, where))
        print(f"\nmerged {len(rows)} rows into {OUT.relative_to(ROOT)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
