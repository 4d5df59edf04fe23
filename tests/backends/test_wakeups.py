"""Wake-ups across connections, on every backend where two queue objects share storage: an idle
waiter sleeps until another connection makes work ready, then wakes promptly."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import pytest

from omniq import Task
from tests.conformance import tasks
from tests.conftest import build_queue, new_namespace
from tests.helpers import PROMPT, woken_by

SHARED = ["file", "sqlite", "postgres", "redis", "nats"]
# Backends whose wake-ups name the queue; the polling ones may wake for any write.
PER_QUEUE = {"postgres", "redis", "nats"}


@pytest.mark.parametrize("backend", SHARED)
async def test_waiter_wakes_on_another_connections_enqueue(backend: str, tmp_path: Path) -> None:
    namespace = new_namespace()
    waiter = build_queue(backend, tmp_path, namespace=namespace)
    producer = build_queue(backend, tmp_path, namespace=namespace)
    async with waiter, producer:
        try:
            await waiter.wait_for_work(["default"], 0.3)  # sets up any listener
            assert await waiter.dequeue() is None

            started = time.monotonic()
            await waiter.wait_for_work(["default"], 0.4)
            assert time.monotonic() - started >= 0.35, "an idle waiter returned without a change"

            if backend in PER_QUEUE:
                sleeper = asyncio.create_task(waiter.wait_for_work(["default"], 0.6))
                await asyncio.sleep(0.1)
                await producer.enqueue(Task(func=tasks.add, args=(1, 2), queue_name="other"))
                await asyncio.sleep(0.2)
                assert not sleeper.done(), "work on another queue woke the waiter"
                await sleeper

            for size in (1, 3, 1):  # single enqueues and a batch (stored by another path)
                batch = [Task(func=tasks.add, args=(1, i)) for i in range(size)]
                ids = [t.id for t in batch]
                enqueue = (partial(producer.enqueue, batch[0]) if size == 1
                           else partial(producer.enqueue_many, batch))
                assert await woken_by(waiter, enqueue) < PROMPT
                claimed = await waiter.dequeue_many("default", 10)
                assert [t.id for t in claimed] == ids
        finally:
            await producer.drop_namespace()


@pytest.mark.parametrize("backend", SHARED)
async def test_get_result_wakes_when_another_connection_ends_the_task(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the fallback re-read pushed out of reach, only a wake-up can end the wait in time.
    monkeypatch.setattr("omniq.queue.base.RESULT_POLL", (30.0, 30.0))
    namespace = new_namespace()
    waiter = build_queue(backend, tmp_path, namespace=namespace)
    worker = build_queue(backend, tmp_path, namespace=namespace)
    async with waiter, worker:
        try:
            ids = await worker.enqueue_many([Task(func=tasks.add, args=(i, 1)) for i in range(3)])
            for task_id, expected in zip(ids, (1, 2, 3), strict=True):
                result = asyncio.create_task(waiter.get_result(task_id, timeout=20))
                await asyncio.sleep(0.2)  # let it start waiting; a late start only tests less
                assert not result.done()
                claimed = await worker.dequeue()
                assert claimed is not None and claimed.id == task_id
                started = time.monotonic()
                await worker.complete(task_id, expected, lease=claimed.lease)
                assert await asyncio.wait_for(result, 5.0) == expected
                assert time.monotonic() - started < PROMPT
        finally:
            await worker.drop_namespace()
