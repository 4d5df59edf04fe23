"""No faults, much contention: four producer processes enqueue while two workers run; every
task runs exactly once and no two executions of a task overlap."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import ledger
from tests.scenario import DURABLE, record_figures, scenario

PRODUCERS = 4
PER_PRODUCER = 2500


@pytest.mark.parametrize("backend", DURABLE)
async def test_concurrent_producers_and_workers_run_each_task_once(
    backend: str, tmp_path: Path
) -> None:
    total = PRODUCERS * PER_PRODUCER
    async with scenario(backend, tmp_path) as run:
        started = time.monotonic()
        workers = [run.worker("--concurrency", "20") for _ in range(2)]
        for n in range(PRODUCERS):
            run.producer(f"p{n}-", PER_PRODUCER, "--batch", "100")
        await run.until(lambda: len(run.book.done) >= total, 180, "all done")
        elapsed = time.monotonic() - started
        await run.stop_all()

        report = ledger.check(run.book.path)
        assert len(report.enqueued) == total
        assert not report.lost
        assert report.duplicates == 0, sorted(report.rerun)[:20]
        assert not report.overlaps
        assert {e.pid for e in run.book.events if e.event == "done"} == {w.pid for w in workers}
        stats = await run.queue.stats()
        assert stats.completed == total and stats.total == total, stats
        record_figures("concurrency", backend, tasks=total, producers=PRODUCERS, workers=2,
                       lost=len(report.lost), duplicates=report.duplicates,
                       overlaps=len(report.overlaps), seconds=round(elapsed, 1))
