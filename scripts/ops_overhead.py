"""Per-task cost of OmniQ's logging, metrics and tracing hooks.

    .venv/bin/python scripts/ops_overhead.py [--tasks N]

Calls what a worker calls for one task (the started hooks, the run of an async no-op
through the run middleware, the completed hooks) N times on a claimed-looking task, with each
instrument alone, and prints microseconds per task (the best of several rounds, so other load
on the machine counts as little as possible) and what each adds to the uninstrumented run. No
queue is involved: this is the instruments' own cost, which they add to any backend's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from omniq.models.task import Task, TaskStatus
from omniq.queue.memory import MemoryTaskQueue
from omniq.worker import WorkerPool


async def _noop() -> None:
    return None


def _pool(setup: Callable[[WorkerPool], Any]) -> WorkerPool:
    pool = WorkerPool(MemoryTaskQueue(), handle_signals=False)
    setup(pool)
    return pool


async def per_task(pool: WorkerPool, task: Task, n: int) -> float:
    """Microseconds per task: started hooks, the run of an async no-op (through the run
    middleware when there is one, as the worker does) and completed hooks."""
    run = pool._call_through_middleware if pool._run_middleware else pool._call
    start = time.perf_counter()
    for _ in range(n):
        await pool._emit("started", task)
        await run(_noop, task)
        await pool._emit("completed", task)
    return (time.perf_counter() - start) / n * 1e6


def _logging(pool: WorkerPool) -> None:
    from omniq.tasklog import log_transitions

    log_transitions(pool)


def _logging_info(pool: WorkerPool) -> None:
    from omniq.tasklog import log_transitions

    logging.getLogger("omniq.tasks").addHandler(logging.NullHandler())
    logging.getLogger("omniq.tasks").propagate = False
    log_transitions(pool, levels={"started": logging.INFO, "completed": logging.INFO})


def _metrics(pool: WorkerPool) -> None:
    from omniq.metrics import Metrics

    Metrics().instrument(pool)


def _tracing_noop(pool: WorkerPool) -> None:
    from opentelemetry.trace import NoOpTracerProvider

    from omniq import tracing

    tracing.instrument(pool, tracer_provider=NoOpTracerProvider())


def _tracing_sdk(pool: WorkerPool) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from omniq import tracing

    tracing.instrument(pool, tracer_provider=TracerProvider())  # records, exports nowhere


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=5, help="the best round is shown")
    options = parser.parse_args()
    n = options.tasks
    now = datetime.now(UTC)
    task = Task(func="app.tasks:noop", id="bench", status=TaskStatus.RUNNING, attempts=1,
                started_at=now, run_at=now, lease="x")
    logging.getLogger("omniq").setLevel(logging.INFO)
    cases: list[tuple[str, Callable[[WorkerPool], Any]]] = [
        ("nothing instrumented", lambda pool: None),
        ("log_transitions (default levels, INFO logger)", _logging),
        ("log_transitions, both lines at INFO (NullHandler)", _logging_info),
        ("Metrics", _metrics),
        ("tracing, no-op tracer provider", _tracing_noop),
        ("tracing, SDK tracer provider (no exporter)", _tracing_sdk),
    ]
    print(f"{'instrument':<52}{'us/task':>8}{'added':>8}")
    baseline = None
    for name, setup in cases:
        pool = _pool(setup)
        await per_task(pool, task, min(n, 2000))  # warm up caches
        best = min([await per_task(pool, task, n) for _ in range(options.rounds)])
        baseline = best if baseline is None else baseline
        print(f"{name:<52}{best:>8.2f}{best - baseline:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
