"""Where OmniQ's worker spends its time: the processing benchmark (c100) under py-spy, with
round trips (and fsyncs) per job counted in the worker, for the SQLite, File, PostgreSQL, Redis
and NATS backends.

    bash benchmarks/run.sh --profile [--jobs N] [--only sqlite,file,redis]

py-spy attaches to the worker once the first job has started and stops at the N-th start, so
the profile covers steady-state processing only. Idle threads are not sampled: a thread's
samples divided by (rate x seconds) is the share of wall time it was busy.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import report, services
from benchmarks.common import ROOT
from benchmarks.driver import PROFILE_RATE

BACKENDS = ("sqlite", "file", "postgres", "redis", "nats")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Event-loop plumbing present in nearly every stack: left out of the inclusive list.
_PLUMBING = ("<frozen runpy>", "runpy", "asyncio/runners.py", "asyncio/base_events.py",
             "asyncio/events.py", "benchmarks/worker.py", "threading.py")
TOP = 15


def _frame(raw: str) -> str:
    found = _FRAME.match(raw)
    return f"{found['func']} ({found['file']})" if found else raw


def summarize(path: Path, seconds: float, jobs: int) -> dict[str, Any]:
    """Busy share per thread and the top functions of OmniQ's own threads (the event loop and
    the executor threads behind ``asyncio.to_thread``, named ``asyncio_N``), from py-spy's raw
    output (``thread (tid): name;frame;frame… count``)."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        count = int(count_text)
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += count
        if thread != "MainThread" and not thread.startswith("asyncio_"):
            continue
        ours += count
        calls = [_frame(f) for f in frames[1:]]
        if calls:
            own[calls[-1]] += count
        for call in set(calls):
            if not call.endswith(_PLUMBING) and not any(p in call for p in _PLUMBING):
                inclusive[call] += count
    possible = PROFILE_RATE * seconds

    def share(n: int) -> float:
        return 100 * n / possible

    return {
        "busy_pct": {t: share(n) for t, n in threads.most_common()},
        "self": [(f, share(n), 100 * n / max(ours, 1)) for f, n in own.most_common(TOP)],
        "inclusive": [(f, share(n), 100 * n / max(ours, 1))
                      for f, n in inclusive.most_common(TOP)],
        "samples": sum(threads.values()), "jobs": jobs,
    }


def run(plan: Any, only: set[str] | None) -> dict[str, Any]:
    """Profile each chosen backend once."""
    from benchmarks.run import RESULTS, Runner

    os.environ.setdefault("OMNIQ_BENCH_PYSPY",
                          str(ROOT / "benchmarks" / ".venv-peers" / "bin" / "py-spy"))
    runner = Runner()
    RESULTS.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    try:
        for backend in BACKENDS:
            if only and backend not in only and f"omniq-{backend}" not in only:
                continue
            raw = RESULTS / f"profile-{backend}.pyspy.txt"
            out = runner.call("project", "benchmarks.driver", [
                f"omniq-{backend}", "process", "--jobs", str(plan.jobs), "--concurrency", "100",
                "--profile", str(raw), "--count-io"], 600 + plan.jobs / 10)
            if "error" in out:
                found[backend] = {"error": out["error"]}
                continue
            out["profile"] = summarize(raw, out["profiled_seconds"], plan.jobs)
            out["raw_profile"] = str(raw.relative_to(ROOT))
            found[backend] = out
            print(f"  profiled omniq-{backend}: {out['rate']:,.0f} jobs/s", flush=True)
    finally:
        asyncio.run(services.sweep(runner.prefix))
    return {"backends": found, "rate_hz": PROFILE_RATE}


def render(found: dict[str, Any], markdown: bool = False) -> str:
    """One section per backend: throughput, round trips per job, busy threads, hotspots."""
    parts = []
    for backend, out in found["backends"].items():
        if "error" in out:
            parts.append(f"{backend}: FAILED: {out['error']}")
            continue
        prof = out["profile"]
        io = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in out["io_per_job"].items()
                       if v)
        busy = ", ".join(f"{t} {p:.0f}%" for t, p in prof["busy_pct"].items() if p >= 1)
        head = (f"omniq-{backend}, c100: {out['rate']:,.0f} jobs/s, worker CPU "
                f"{out['worker_cpu_us_per_job']:.0f} µs/job; per job: {io or '-'}; "
                f"threads busy: {busy}")
        tables = []
        for kind in ("self", "inclusive"):
            rows = [[f, f"{w:.1f}%", f"{m:.1f}%"] for f, w, m in prof[kind]]
            tables.append(report.grid([f"event loop + to_thread, {kind} time", "% of wall",
                                       "% of their busy"], rows, markdown, left=1))
        parts.append("\n\n".join([head, *tables]))
    note = ("(EpollSelector.select is the event loop waiting for I/O; the raw py-spy stacks are "
            "in benchmarks/results/profile-<backend>.pyspy.txt)")
    return "\n\n".join([*parts, note])
