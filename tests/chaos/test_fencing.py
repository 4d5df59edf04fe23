"""A worker frozen (SIGSTOP) past its lease, then resumed: the task went to another worker,
the stale worker's completion is refused with LeaseLostError, the outcome stays the second
worker's, and the stale worker goes on working."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from omniq import Task, TaskStatus
from tests import ledger
from tests.helpers import eventually
from tests.scenario import DURABLE, record_figures, scenario

LEASE = 1.0


@pytest.mark.parametrize("backend", DURABLE)
async def test_a_frozen_worker_is_fenced(backend: str, tmp_path: Path) -> None:
    async with scenario(backend, tmp_path, lease_timeout=LEASE) as run:
        book = str(run.book.path)
        # Blocking: the frozen worker's event loop cannot heartbeat, and once resumed it goes
        # straight from the task's end to reporting the outcome.
        await run.queue.enqueue(Task(func=ledger.record, id="slow", args=(book, "slow", 0.5, True)))
        stale = run.worker("--concurrency", "1")
        await run.until(lambda: run.book.running[stale.pid], 30, "stale worker started", 0.005)
        stale.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            fresh = run.worker("--concurrency", "1")
            await run.until(lambda: "slow" in run.book.done, 30, "second worker done")
            taken_over = time.monotonic() - frozen_at

            async def completed() -> Task | None:
                task = await run.queue.get_task("slow")
                return task if task is not None and task.status is TaskStatus.COMPLETED else None

            settled = await eventually(completed, timeout=30)
            assert settled.result == fresh.pid and settled.attempts == 2
        finally:
            stale.signal(signal.SIGCONT)
        await run.until(lambda: "LeaseLostError" in stale.output(), 30,
                        "stale completion refused")
        after = await run.queue.get_task("slow")
        assert after is not None and after.revision == settled.revision, "stale write landed"
        assert after.result == fresh.pid and after.status is TaskStatus.COMPLETED

        # Still a working worker: with the other one gone, it runs the next task.
        assert fresh.stop() == 0
        await run.queue.enqueue(Task(func=ledger.record, id="next", args=(book, "next")))
        await run.until(lambda: "next" in run.book.done, 30, "stale worker works on")
        assert stale.alive
        await run.stop_all()
        runs = [e.pid for e in run.book.sorted() if e.event == "done" and e.key == "slow"]
        assert runs == [fresh.pid, stale.pid], "both ran it; only the second one's outcome holds"
        record_figures("fencing", backend, lease=LEASE, taken_over=round(taken_over, 2),
                       fenced=True)
