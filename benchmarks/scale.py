"""Backlog scaling and memory per queued task (OmniQ only).

    bash benchmarks/run.sh --scale [--backlog N] [--jobs M]

For PostgreSQL, Redis and SQLite: queue a backlog of 10,000 and of ``--backlog`` (1,000,000)
no-op tasks with ``enqueue_many``, then let one worker (c100) work from the front; the rate is
jobs started between the first and the M-th start over that time (with at most 100 in flight
the start rate is the completion rate within 100/M). Claiming must not slow down as the backlog
grows. Memory per queued task is measured for every backend:

- PostgreSQL: table + index + TOAST size of the namespace's tables (``pg_total_relation_size``);
- Redis: growth of the server's ``used_memory``;
- SQLite: database + WAL file size;
- File: disk usage (allocated blocks) of the namespace's directory;
- NATS: bytes in the namespace's JetStream stream;
- Memory: growth of the process's resident set size.

One measurement per process: ``python -m benchmarks.scale BACKEND --backlog N --jobs M``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import driver, report, services
from benchmarks.common import median, print_result
from benchmarks.systems import BY_NAME, load
from benchmarks.systems.base import System

SCALED = ("postgres", "redis", "sqlite")
# Backlogs for memory per task on the other backends (slower to fill, or in-process).
MEMORY_BACKLOG = {"memory": 100_000, "nats": 100_000, "file": 10_000}


async def stored_bytes(backend: str, system: Any) -> int:
    """How much the backend holds for the namespace right now."""
    ctx = system.ctx
    if backend == "postgres":
        import asyncpg

        conn = await asyncpg.connect(ctx.postgres)
        try:
            return int(await conn.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'"))
        finally:
            await conn.close()
    if backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(ctx.redis)
        try:
            return int((await client.info("memory"))["used_memory"])
        finally:
            await client.aclose()
    if backend == "nats":
        info = await system.q._js.stream_info(f"KV_OMNIQ_{ctx.ns}")
        return int(info.state.bytes)
    if backend == "memory":
        gc.collect()
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmRSS:"))) * 1024
    folder = Path(ctx.workdir)
    files = folder.glob("omniq.db*") if backend == "sqlite" else folder.rglob("*")
    return sum(p.stat().st_blocks * 512 if backend == "file" else p.stat().st_size
               for p in files if p.is_file())


async def measure(backend: str, backlog: int, jobs: int, ns: str) -> dict[str, Any]:
    """Fill the backlog, weigh it, then (server backends) time M jobs from its front."""
    entry = BY_NAME[f"omniq-{backend}"]
    ctx = await driver.provision(entry, ns)
    try:
        system: System = load(entry.name, ctx)
        await system.open()
        try:
            before = await stored_bytes(backend, system)
            started = time.perf_counter()
            for i in range(0, backlog, 5_000):  # ids not kept: they would weigh in RSS
                await system.enqueue_batch(min(5_000, backlog - i))
            out: dict[str, Any] = {"backlog": backlog,
                                   "enqueue_rate": backlog / (time.perf_counter() - started)}
            out["bytes_per_task"] = (await stored_bytes(backend, system) - before) / backlog
            if backend in SCALED:
                out.update(await _process(entry, system, ctx, jobs))
            return out
        finally:
            await system.close()
    finally:
        await driver.release(entry, ctx)


async def _process(entry: Any, system: System, ctx: Any, jobs: int) -> dict[str, Any]:
    folder = os.path.join(ctx.workdir, "marks")
    worker = driver.Worker(entry, system, ctx, 100, folder, jobs)
    deadline = time.monotonic() + 600
    await worker.start()
    try:
        first = await driver.wait_mark(folder, "start", worker, deadline)
        last = await driver.wait_mark(folder, "last", worker, deadline)
    finally:
        await worker.stop()
    done = await system.completed([])
    if done < jobs - 100:
        raise RuntimeError(f"only {done} of the first {jobs} jobs were recorded complete")
    return {"jobs": jobs, "rate": (jobs - 1) / (float(last["wall"]) - float(first["wall"])),
            "completed_when_stopped": done}


def run(plan: Any, backlog: int, only: set[str] | None = None) -> dict[str, Any]:
    """Every scale measurement (of the ``only`` backends, if given), each in its own process;
    the small and the large backlog alternate ``plan.reps`` times, so drifts of a shared
    machine hit both alike."""
    from benchmarks.run import Runner, progress

    runner = Runner()
    jobs = min(plan.jobs, 10_000)
    found: dict[str, Any] = {"jobs": jobs, "reps": plan.reps, "backlogs": [10_000, backlog],
                             "backends": {}}
    try:
        for rep in range(1, plan.reps + 1):
            progress(f"repetition {rep}/{plan.reps}")
            for backend in (*SCALED, *MEMORY_BACKLOG):
                if only and backend not in only:
                    continue
                if backend not in SCALED and rep > 1:
                    continue  # memory per task does not vary between runs
                sizes = [10_000, backlog] if backend in SCALED else [MEMORY_BACKLOG[backend]]
                for size in sizes:
                    out = runner.call("project", "benchmarks.scale",
                                      [backend, "--backlog", str(size), "--jobs", str(jobs)],
                                      1200 + size / 200)
                    out.setdefault("backlog", size)
                    found["backends"].setdefault(backend, []).append(out)
                    progress(f"  {backend:9} backlog {size:>9,}: " + (
                        out["error"] if "error" in out else
                        f"enqueue {out['enqueue_rate']:,.0f}/s, "
                        f"{out['bytes_per_task']:,.0f} B/task"
                        + (f", {out['rate']:,.0f} jobs/s" if "rate" in out else "")))
    finally:
        asyncio.run(services.sweep(runner.prefix))
    return found


def _median_of(runs: list[dict[str, Any]], backlog: int, key: str) -> float | None:
    return median([r[key] for r in runs if r["backlog"] == backlog and key in r])


def render(found: dict[str, Any], markdown: bool = False) -> str:
    """The scale table (medians over the repetitions)."""
    big = found["backlogs"][-1]
    rows = []
    for backend, runs in found["backends"].items():
        ok = [r for r in runs if "error" not in r]
        small = _median_of(ok, 10_000, "rate")
        large = _median_of(ok, big, "rate")
        weighed = max((r["backlog"] for r in ok), default=None)
        change = f"{100 * (large / small - 1):+.0f}%" if small and large else "-"
        per_task = _median_of(ok, weighed, "bytes_per_task") if weighed else None
        rows.append([report.BACKEND_NAMES[backend], report.number(small),
                     report.number(large), change,
                     report.number(_median_of(ok, weighed, "enqueue_rate") if weighed else None),
                     f"{per_task:,.0f} B ({weighed:,})" if per_task is not None else "-"])
        rows += [[report.BACKEND_NAMES[backend], f"FAILED: {r['error']}", "", "", "", ""]
                 for r in runs if "error" in r]
    header = ["backend", "c100 jobs/s, 10,000 queued", f"c100 jobs/s, {big:,} queued",
              "change", "enqueue_many /s (largest)", "memory per queued task (backlog)"]
    head = (f"first {found['jobs']:,} jobs from the front of each backlog, medians of "
            f"{found.get('reps', 1)} repetition(s); command: "
            f"{found.get('run', {}).get('command', '')}")
    return head + "\n\n" + report.grid(header, rows, markdown, left=1)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    p.add_argument("backend", choices=(*SCALED, *MEMORY_BACKLOG))
    p.add_argument("--backlog", type=int, required=True)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--ns", required=True)
    args = p.parse_args()
    print_result(measure(args.backend, args.backlog, args.jobs, args.ns))


if __name__ == "__main__":
    main()
