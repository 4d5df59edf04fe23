"""Workers SIGKILLed mid-run, again and again: nothing is lost, only the tasks in flight at a
kill run twice, never two at once, and an orphan runs again about one lease after the kill."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import NamedTuple

import pytest

from omniq import TaskStatus
from tests import ledger
from tests.scenario import DURABLE, record_run, scenario

LEASE = 2.0
KILLS = 3
KILL_EVERY = 2.0  # seconds between kills
# Production is paced to last about as long as the kills (~8 s), so orphans compete with a
# short backlog, not with all the work at once.
TASKS = 2000
BATCH = 50  # tasks per producer batch


class Kill(NamedTuple):
    """One SIGKILL: when, the tasks RUNNING under the victim right after, and of those the
    ones whose body had not finished. A finished task's outcome may still have been on its
    way to the store (the File backend's journal completes such a write at the next write),
    so only the unfinished ones must run again."""

    at: float
    held: set[str]
    unfinished: set[str]


@pytest.mark.parametrize("backend", DURABLE)
async def test_sigkilled_workers_lose_nothing(backend: str, tmp_path: Path) -> None:
    async with scenario(backend, tmp_path, lease_timeout=LEASE) as run:
        run.producer("k", TASKS, "--batch", str(BATCH), "--pause", "0.2", "--seconds", "0.05")
        workers = [run.worker("--concurrency", "10") for _ in range(2)]
        kills: list[Kill] = []
        for n in range(KILLS):
            await asyncio.sleep(KILL_EVERY)
            victim = workers[n % 2]
            # Several tasks under way, so some are still unfinished when the kill lands.
            busy = functools.partial(lambda pid: len(run.book.running[pid]) >= 3, victim.pid)
            await run.until(busy, 30, "victim busy", 0.005)
            killed_at = run.kill(victim)
            running = await run.queue.list_tasks(status=TaskStatus.RUNNING, limit=10_000)
            held = {t.id for t in running if f":{victim.pid}:" in (t.worker_id or "")}
            unfinished = held & run.book.refresh().running[victim.pid]
            kills.append(Kill(killed_at, held, unfinished))
            workers[n % 2] = run.worker("--concurrency", "10")
        await run.until(lambda: run.book.counts["enqueued"] >= TASKS, 60, "all enqueued")
        await run.until(lambda: len(run.book.done) >= TASKS, 60, "all done")
        await run.stop_all()

        report = ledger.check(run.book.path)
        orphans = set().union(*(k.held for k in kills))
        in_flight = sum(len(k.held) for k in kills)  # a task may be orphaned twice
        must_rerun = set().union(*(k.unfinished for k in kills))
        assert len(report.enqueued) == TASKS
        assert not report.lost, f"lost: {sorted(report.lost)[:20]}"
        assert not report.overlaps, f"ran twice at once: {report.overlaps[:10]}"
        assert report.rerun <= orphans, f"re-run without a kill: {report.rerun - orphans}"
        assert report.duplicates <= in_flight
        stats = await run.queue.stats()
        assert stats.completed == TASKS and stats.total == TASKS, stats
        reclaimed = await run.queue.get_tasks(sorted(must_rerun))
        assert len(reclaimed) == len(must_rerun)
        assert all(t.attempts >= 2 for t in reclaimed.values())
        assert all(t.retries == 0 for t in reclaimed.values()), "a lost lease costs no retry"

        assert must_rerun, "no victim held an unfinished task: kill sooner or make tasks longer"
        recovery = []
        for kill in (k for k in kills if k.unfinished):
            again = {e.key: e.at for e in reversed(run.book.sorted())
                     if e.event == "started" and e.key in kill.unfinished and e.at > kill.at}
            assert again.keys() == kill.unfinished, (
                f"never ran again: {kill.unfinished - again.keys()}")
            recovery.append(max(again.values()) - kill.at)
        record_run("worker_kill", backend, report, recovery, tasks=TASKS, kills=KILLS,
                   lease=LEASE, in_flight=in_flight)
