"""Every durable backend across processes: `omniq worker` processes with live producers, and a
SIGKILLed worker's task recovered by another."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from omniq import Task, TaskStatus
from omniq.queue.base import BaseTaskQueue
from tests.backends import ledger_tasks
from tests.backends.processes import done_counts, ledger, start_worker, wait_for
from tests.conftest import backend_url, build_queue, new_namespace

DURABLE = ["file", "sqlite", "postgres", "redis", "nats"]


async def producer(queue: BaseTaskQueue, book: Path, prefix: str, count: int) -> list[str]:
    ids = []
    for start in range(0, count, 50):
        batch = [Task(func=ledger_tasks.ledger, args=(str(book), f"{prefix}{i}"))
                 for i in range(start, min(start + 50, count))]
        ids += await queue.enqueue_many(batch)
        await asyncio.sleep(0.01)
    return ids


@pytest.mark.parametrize("backend", DURABLE)
async def test_workers_and_producers_run_each_task_once(backend: str, tmp_path: Path) -> None:
    namespace, book = new_namespace(), tmp_path / "ledger.txt"
    queue = build_queue(backend, tmp_path, namespace=namespace)
    url = backend_url(backend, tmp_path, namespace)
    async with queue:
        try:
            workers = [start_worker(url, "--concurrency", "20") for _ in range(2)]
            try:
                ids = [i for part in await asyncio.gather(
                    producer(queue, book, "a", 500), producer(queue, book, "b", 500)) for i in part]
                await asyncio.to_thread(wait_for, lambda: len(done_counts(book)) >= 1000, 90)
            finally:
                for worker in workers:
                    worker.send_signal(signal.SIGTERM)
                for worker in workers:
                    _, err = worker.communicate(timeout=30)
                    assert worker.returncode == 0, err.decode()[-2000:]
            counts = done_counts(book)
            assert len(ids) == 1000 and len(counts) == 1000
            assert set(counts.values()) == {1}, "no task ran twice"
            stats = await queue.stats()
            assert stats.completed == 1000 and stats.total == 1000
        finally:
            await queue.drop_namespace()


@pytest.mark.parametrize("backend", DURABLE)
async def test_killed_worker_task_is_recovered(backend: str, tmp_path: Path) -> None:
    namespace, book = new_namespace(), tmp_path / "ledger.txt"
    queue = build_queue(backend, tmp_path, namespace=namespace, lease_timeout=1)
    url = backend_url(backend, tmp_path, namespace) + "&lease_timeout=1"
    async with queue:
        try:
            task_id = await queue.enqueue(
                Task(func=ledger_tasks.ledger, args=(str(book), "slow", 1.0)))
            first = start_worker(url)
            try:
                await asyncio.to_thread(
                    wait_for, lambda: any(e == "start" for e, _, _ in ledger(book)), 30)
            finally:
                first.send_signal(signal.SIGKILL)
                first.communicate(timeout=10)
            second = start_worker(url)
            try:
                await asyncio.to_thread(
                    wait_for, lambda: any(e == "done" for e, _, _ in ledger(book)), 30)
            finally:
                second.send_signal(signal.SIGTERM)
                second.communicate(timeout=30)
            rows = ledger(book)
            assert [e for e, _, _ in rows] == ["start", "start", "done"]
            assert rows[0][2] == first.pid and rows[2][2] == second.pid
            task = await queue.get_task(task_id)
            assert task is not None and task.status is TaskStatus.COMPLETED
            assert task.attempts == 2 and task.retries == 0
        finally:
            await queue.drop_namespace()
