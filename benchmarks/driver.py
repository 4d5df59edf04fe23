"""Runs one measurement of one system and prints its figures as one JSON line.

    python -m benchmarks.driver SYSTEM enqueue|process|latency [options]

It runs inside the system's own environment (the project's .venv for OmniQ,
benchmarks/.venv-peers for the peers), provisions a fresh namespace/database/directory,
measures, and removes what it made. ``benchmarks/run.py`` calls it for every cell of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from benchmarks import marks, services
from benchmarks.common import ROOT, Context, percentile, print_result, wait_until
from benchmarks.systems import BY_NAME, Entry, load
from benchmarks.systems.base import System

_FILL_CHUNK = 1000
PROFILE_RATE = 250  # py-spy samples per second


async def provision(entry: Entry, ns: str) -> Context:
    """A fresh namespace, directory and (PostgreSQL) database for one measurement."""
    workdir = tempfile.mkdtemp(prefix=f"omniq-bench-{ns}-")
    ctx = Context(ns=ns, workdir=workdir)
    if entry.backend == "postgres":
        ctx.postgres = await services.create_database(ns)
    return ctx


async def release(entry: Entry, ctx: Context) -> None:
    """Remove everything the measurement stored, whatever state it ended in. Each step runs
    even if another fails; ``run.py`` sweeps the whole run's prefix again at the end."""
    steps: list[Any] = []
    try:
        system = load(entry.name, ctx)
        if not system.in_process:
            steps.append(system.cleanup())
        if system.redis_patterns:
            steps.append(services.delete_redis_keys(
                [p.format(ns=ctx.ns) for p in system.redis_patterns]))
    except Exception as exc:
        print(f"clean-up: {entry.name}: {exc}", file=sys.stderr)
    if entry.backend == "nats":
        steps.append(services.delete_nats_streams(ctx.ns))
    if ctx.postgres:
        steps.append(services.drop_database(ctx.ns))
    for step in steps:
        try:
            await asyncio.wait_for(step, 120)
        except Exception as exc:
            print(f"clean-up: {entry.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    shutil.rmtree(ctx.workdir, ignore_errors=True)


class Worker:
    """One worker of the system: a child process, or a task in this process for systems
    without a server (OmniQ's Memory backend)."""

    def __init__(self, entry: Entry, system: System, ctx: Context, concurrency: int,
                 marks_dir: str, expect: int, count_io: bool = False) -> None:
        self.entry, self.system, self.ctx = entry, system, ctx
        self.concurrency, self.marks_dir, self.expect = concurrency, marks_dir, expect
        self.count_io = count_io
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        os.makedirs(self.marks_dir, exist_ok=True)
        env = {"OMNIQ_BENCH_MARKS": self.marks_dir, "OMNIQ_BENCH_EXPECT": str(self.expect)}
        if self.system.in_process:
            os.environ.update(env)
            marks.reset(self.expect)
            self.task = asyncio.create_task(self.system.run_worker(self.concurrency))
            return
        env.update(self.ctx.env(), PYTHONPATH=str(ROOT))
        if self.count_io:
            env["OMNIQ_BENCH_COUNT_IO"] = "1"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.worker", self.entry.name, str(self.concurrency),
            cwd=ROOT, env={**os.environ, **env}, stdin=asyncio.subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(f"worker process exited with code {self.proc.returncode}")
        if self.task is not None and self.task.done():
            self.task.result()
            raise RuntimeError("worker stopped")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, 30)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def fill(system: System, n: int) -> list[Any]:
    """Queue ``n`` no-op jobs as fast as the system allows (not timed)."""
    handles: list[Any] = []
    while len(handles) < n:
        size = min(_FILL_CHUNK, n - len(handles))
        if system.has_batch:
            handles += await system.enqueue_batch(size)
        else:
            for i in range(0, size, 100):
                handles += await asyncio.gather(
                    *(system.enqueue() for _ in range(min(100, size - i))))
    return handles


async def measure_enqueue(system: System, args: argparse.Namespace) -> dict[str, Any]:
    """Sequential single enqueues, then the batch API (where there is one), into an idle
    queue with no worker."""
    started = time.perf_counter()
    for _ in range(args.single):
        await system.enqueue()
    single = args.single / (time.perf_counter() - started)
    out: dict[str, Any] = {"enqueue_single": single, "enqueue_batch": None}
    if system.has_batch:
        started = time.perf_counter()
        for _ in range(args.batch // args.batch_size):
            await system.enqueue_batch(args.batch_size)
        out["enqueue_batch"] = args.batch / (time.perf_counter() - started)
    return out


async def wait_mark(folder: str, name: str, worker: Worker, deadline: float) -> dict[str, Any]:
    def seen() -> bool:
        worker.check_alive()
        return marks.read(folder, name) is not None

    await wait_until(seen, deadline, f"the {name} mark", interval=0.005)
    found = marks.read(folder, name)
    assert found is not None
    return found


async def measure_process(system: System, entry: Entry, ctx: Context,
                          args: argparse.Namespace) -> dict[str, Any]:
    """``jobs`` queued first; one worker at ``concurrency``; the clock runs from the first
    job's start until the driver has verified every job complete in the backend."""
    n = args.jobs
    handles = await fill(system, n)
    folder = os.path.join(ctx.workdir, "marks")
    worker = Worker(entry, system, ctx, args.concurrency, folder, n, count_io=args.count_io)
    deadline = time.monotonic() + args.timeout
    profiler = None
    await worker.start()
    try:
        first = await wait_mark(folder, "start", worker, deadline)
        if args.profile:
            profiler = await _start_profiler(args.profile, worker.pid)
            profile_from = time.time()
        last = await wait_mark(folder, "last", worker, deadline)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiled = time.time() - profile_from

        async def all_done() -> bool:
            return (await system.outstanding(handles) == 0
                    and await system.completed(handles) == n)

        end = await wait_until(all_done, deadline, f"{n} jobs verified complete")
    finally:
        await worker.stop()
        if profiler is not None and profiler.returncode is None:
            await asyncio.wait_for(profiler.wait(), 60)
    seconds = end - float(first["wall"])
    out = {"jobs": n, "concurrency": args.concurrency, "seconds": seconds,
           "rate": n / seconds, "tail_seconds": end - float(last["wall"]),
           "worker_cpu_us_per_job": (float(last["cpu"]) - float(first["cpu"])) / (n - 1) * 1e6}
    if profiler is not None:
        out["profiled_seconds"] = profiled
    if args.count_io:
        start_io: dict[str, int] = dict(first["io"])
        last_io: dict[str, int] = dict(last["io"])
        out["io_per_job"] = {k: (last_io[k] - start_io.get(k, 0)) / (n - 1) for k in last_io}
    return out


async def _start_profiler(output: str, pid: int) -> asyncio.subprocess.Process:
    """py-spy sampling the worker from its first job on (its imports are not profiled); idle
    threads are not sampled, so a thread's samples over rate x seconds is its busy share."""
    pyspy = os.environ.get("OMNIQ_BENCH_PYSPY", "py-spy")
    return await asyncio.create_subprocess_exec(
        pyspy, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE), "--threads",
        "--nonblocking", "--format", "raw", "--output", output,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def measure_latency(system: System, entry: Entry, ctx: Context,
                          args: argparse.Namespace) -> dict[str, Any]:
    """One job at a time into an idle, running worker: from before the enqueue call until
    the producer has observed completion through the system's own API."""
    folder = os.path.join(ctx.workdir, "marks")
    worker = Worker(entry, system, ctx, 10, folder, 0)
    await worker.start()
    samples: list[float] = []
    try:
        for i in range(args.warmup):  # the first also waits out the worker's start-up
            await _one_job(system, args.timeout, f"warm-up job {i + 1}")
        for i in range(args.samples):
            await asyncio.sleep(0.005)  # the worker is idle again before each job
            started = time.perf_counter()
            await _one_job(system, 60, f"job {i + 1}")
            samples.append(time.perf_counter() - started)
    finally:
        await worker.stop()
    ms = [s * 1000 for s in samples]
    return {"samples": len(ms), "p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99),
            "mean_ms": sum(ms) / len(ms), "max_ms": max(ms)}


async def _one_job(system: System, timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(system.wait(await system.enqueue()), timeout)
    except TimeoutError:
        raise TimeoutError(f"{what}: completion not observed within {timeout:.0f}s") from None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    entry = BY_NAME[args.system]
    ctx = await provision(entry, args.ns)
    try:
        system = load(entry.name, ctx)
        await system.open()
        try:
            if args.measure == "enqueue":
                return await measure_enqueue(system, args)
            if args.measure == "process":
                return await measure_process(system, entry, ctx, args)
            return await measure_latency(system, entry, ctx, args)
        finally:
            with contextlib.suppress(Exception):
                await system.close()
            if system.in_process:
                await system.cleanup()
    finally:
        await release(entry, ctx)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.driver")
    p.add_argument("system", choices=sorted(BY_NAME))
    p.add_argument("measure", choices=("enqueue", "process", "latency"))
    p.add_argument("--ns", default=f"b{os.getpid():x}{int(time.time()) % 100000:x}")
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--single", type=int, default=2_000)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=1_000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--profile", help="write a py-spy raw profile of the worker here")
    p.add_argument("--count-io", action="store_true", help="count round trips per job")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.ERROR)
    print_result(run(parse(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
