"""Redis, PostgreSQL and NATS restarted (killed, down a second, started on the same port and
data) several times under live producers and two worker processes: every acknowledged task is
done, no worker exits, and each worker starts work again within 5 s of the server's return.

The servers are private instances (tests/servers.py), never the shared services.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from omniq import Task, TaskStatus
from tests import ledger
from tests.scenario import record_run, scenario
from tests.servers import PrivateServer

RESTARTS = 3
DOWN = 1.0  # seconds each server stays down
# Enqueued right before each kill: 60 one-second tasks keep one worker alone busy for 6 s, so
# both find work waiting on the server's return even if one comes back much later.
BACKLOG, BACKLOG_SECONDS = 60, 1.0
RESUME_LIMIT = 5.0
LEASE = 10.0  # longer than an outage: outcomes held back by it are still accepted after it


@pytest.mark.parametrize("backend", ["redis", "postgres", "nats"])
async def test_server_restarts_lose_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server: PrivateServer = request.getfixturevalue(f"private_{backend}")
    async with scenario(backend, tmp_path, base_url=server.url, lease_timeout=LEASE) as run:
        run.producer("p", 1200, "--batch", "20", "--pause", "0.1", "--seconds", "0.02")
        workers = [run.worker("--concurrency", "10") for _ in range(2)]
        await run.until(lambda: len(run.book.done) >= 50, 30, "workers running")
        resume: list[float] = []
        for n in range(RESTARTS):
            backlog = [
                Task(func=ledger.record, id=f"b{n}-{i}",
                     args=(str(run.book.path), f"b{n}-{i}", BACKLOG_SECONDS))
                for i in range(BACKLOG)
            ]
            await run.queue.enqueue_many(backlog)
            for task in backlog:
                ledger.append(run.book.path, "enqueued", task.id)
            _, up = await asyncio.to_thread(server.restart, DOWN)
            resumed = functools.partial(ledger.starts_after, run.book.path, up)
            await run.until(lambda: len(resumed()) == 2, 10,  # noqa: B023 - awaited here
                            f"both workers working after restart {n + 1}")
            resume.append(max(resumed().values()) - up)
            assert all(w.alive for w in workers), run.logs()
            await asyncio.sleep(1.0)
        await run.until(lambda: run.book.counts["enqueued"] >= 1200 + RESTARTS * BACKLOG, 60,
                        "all enqueued")
        await run.until(lambda: run.book.done >= run.book.enqueued, 90,
                        "every acknowledged task done")
        assert all(w.alive for w in workers), "a worker exited"
        await run.stop_all()

        report = ledger.check(run.book.path)
        assert not report.lost
        assert not report.overlaps, report.overlaps[:10]
        for w in workers:
            assert "backend unavailable" in w.output(), f"worker {w.pid} logged no outage"
        stored = await run.settled(sorted(report.enqueued))
        assert {t.status for t in stored.values()} == {TaskStatus.COMPLETED}
        assert len(stored) == len(report.enqueued)
        assert max(resume) < RESUME_LIMIT, f"resumed after {resume}"
        record_run("server_restart", backend, report, resume, tasks=len(report.enqueued),
                   restarts=RESTARTS, down=DOWN)
