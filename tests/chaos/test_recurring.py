"""Three workers on one recurring task (every second, for ten seconds): each occurrence runs
exactly once. The five backends run side by side, so the check costs ten seconds, not fifty."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from pathlib import Path

from omniq import Schedule, Task, TaskStatus
from tests.ledger import record
from tests.scenario import DURABLE, record_figures, scenario

INTERVAL = 1.0
OCCURRENCES = 10


async def one_backend(backend: str, tmp_path: Path) -> Counter[int]:
    """Per occurrence (0 = the first), how many times it started."""
    async with scenario(backend, tmp_path) as run:
        workers = [run.worker("--concurrency", "4") for _ in range(3)]
        await run.until(lambda: all("serving" in w.output() for w in workers), 60,
                        "workers up")
        task = Task(func=record, id="tick", args=(str(run.book.path), "tick", 0.1),
                    schedule=Schedule(interval=INTERVAL))
        await run.queue.enqueue(task)
        stored = await run.queue.get_task("tick")
        assert stored is not None and stored.run_at is not None
        # Ledger times are monotonic; this maps the first due time onto that clock.
        first = stored.run_at.timestamp() - time.time() + time.monotonic()
        await asyncio.sleep(max(0.0, first + (OCCURRENCES - 0.5) * INTERVAL - time.monotonic()))
        assert await run.queue.cancel("tick")
        await asyncio.sleep(0.5)  # a run started just before the cancel finishes
        assert all(w.alive for w in workers), run.logs()
        await run.stop_all()
        ended = await run.queue.get_task("tick")
        assert ended is not None and ended.status is TaskStatus.CANCELLED
        starts = [e.at for e in run.book.refresh().sorted() if e.event == "started"]
        return Counter(math.floor((at - first) / INTERVAL) for at in starts)


async def test_each_occurrence_of_a_recurring_task_runs_once(tmp_path: Path) -> None:
    results = await asyncio.gather(
        *(one_backend(b, tmp_path / b) for b in DURABLE), return_exceptions=True)
    problems = []
    for backend, runs in zip(DURABLE, results, strict=True):
        if isinstance(runs, BaseException):
            problems.append(f"{backend}: {runs!r}")
            continue
        twice = sorted(k for k, n in runs.items() if n > 1)
        early = sorted(k for k in runs if k < 0)
        missed = sorted(set(range(OCCURRENCES)) - set(runs))
        record_figures("recurring", backend, occurrences=OCCURRENCES, runs=sum(runs.values()),
                       duplicates=sum(n - 1 for n in runs.values()), missed=len(missed))
        if twice or early or len(missed) > 1:  # the last one may still be on its way
            problems.append(f"{backend}: twice {twice}, early {early}, missed {missed}")
    assert not problems, "\n".join(problems)
