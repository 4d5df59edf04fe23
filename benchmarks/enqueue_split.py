"""Where a batch enqueue's time goes, per OmniQ backend (OmniQ only).

    .venv/bin/python -m benchmarks.enqueue_split [--batches N] [--reps N] [--only NAMES]

Times ``enqueue_many`` with batches of 1,000 no-op tasks, as the main benchmark does, and splits
each task's share into: building the ``Task`` objects (the caller's side), the shared layer
(validation, encoding checks, the stored form of each task) and the backend's write (its
``_insert``: encoding the rows and the round trips to the server). Medians over the
repetitions; each backend gets a fresh namespace and is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import driver, report
from benchmarks.common import median
from benchmarks.systems import BY_NAME, load
from benchmarks.systems.omniq_sys import noop
from omniq import Task

BACKENDS = ("memory", "sqlite", "file", "postgres", "redis", "nats")
BATCH = 1_000


async def split(backend: str, batches: int, reps: int, ns: str) -> dict[str, float]:
    """Medians, in µs per task, of the three parts and of the whole."""
    entry = BY_NAME[f"omniq-{backend}"]
    ctx = await driver.provision(entry, ns)
    try:
        system = load(entry.name, ctx)
        await system.open()
        queue = system.q
        spent = {"write": 0.0}
        insert: Callable[[list[Task]], Awaitable[list[bool]]] = queue._insert

        async def timed_insert(tasks: list[Task]) -> list[bool]:
            started = time.perf_counter()
            try:
                return await insert(tasks)
            finally:
                spent["write"] += time.perf_counter() - started

        queue._insert = timed_insert  # type: ignore[method-assign]
        parts: dict[str, list[float]] = {"build": [], "shared": [], "write": [], "total": []}
        try:
            await queue.enqueue_many([Task(func=noop) for _ in range(BATCH)])  # warm up
            for _ in range(reps):
                spent["write"] = build = call = 0.0
                for _ in range(batches):
                    started = time.perf_counter()
                    tasks = [Task(func=noop) for _ in range(BATCH)]
                    built = time.perf_counter()
                    await queue.enqueue_many(tasks)
                    build += built - started
                    call += time.perf_counter() - built
                n = batches * BATCH / 1e6  # seconds per task -> µs per task
                parts["build"].append(build / n)
                parts["shared"].append((call - spent["write"]) / n)
                parts["write"].append(spent["write"] / n)
                parts["total"].append((build + call) / n)
        finally:
            await system.close()
            if system.in_process:
                await system.cleanup()
    finally:
        await driver.release(entry, ctx)
    return {k: float(median(v) or 0.0) for k, v in parts.items()}


def render(found: dict[str, dict[str, float]], markdown: bool) -> str:
    rows: list[list[Any]] = []
    for backend, f in found.items():
        rows.append([report.BACKEND_NAMES[backend], report.number(1e6 / f["total"]),
                     f"{f['build']:.1f}", f"{f['shared']:.1f}", f"{f['write']:.1f}",
                     f"{f['total']:.1f}"])
    header = ["backend", "batch enqueue /s", "build Task µs", "shared layer µs",
              "backend write µs", "total µs per task"]
    return report.grid(header, rows, markdown, left=1)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.enqueue_split")
    p.add_argument("--batches", type=int, default=20, help="batches of 1,000 per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", help="comma-separated backends")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    chosen = args.only.split(",") if args.only else BACKENDS
    prefix = "s" + secrets.token_hex(3)
    found = {}
    for i, backend in enumerate(b for b in BACKENDS if b in chosen):
        batches = max(1, args.batches // 10) if backend == "file" else args.batches
        found[backend] = asyncio.run(split(backend, batches, args.reps, f"{prefix}{i:02d}"))
    print(render(found, args.markdown))


if __name__ == "__main__":
    main()
