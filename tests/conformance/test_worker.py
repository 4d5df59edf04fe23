"""WorkerPool against every backend: running, retries, timeouts, allowlist, cancel, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta

from omniq import Schedule, Task, TaskStatus, WorkerPool
from omniq.queue.base import BaseTaskQueue
from tests.conformance import tasks
from tests.conftest import QueueFactory
from tests.helpers import FALLBACK, PROMPT, eventually


async def drain(queue: BaseTaskQueue, **options: object) -> WorkerPool:
    pool = WorkerPool(queue, handle_signals=False, **options)  # type: ignore[arg-type]
    await asyncio.wait_for(pool.run(burst=True), 30)
    return pool


async def test_burst_runs_async_and_sync_functions(queue: BaseTaskQueue) -> None:
    a = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    m = await queue.enqueue(Task(func=tasks.multiply, args=(4, 5)))
    t = await queue.enqueue(Task(func=tasks.thread_name))
    pool = await drain(queue)
    assert await queue.get_result(a) == 5
    assert await queue.get_result(m) == 20
    assert (await queue.get_result(t)).startswith("omniq-task")
    assert pool.counts["completed"] == 3
    stats = await queue.stats()
    assert (stats.completed, stats.pending, stats.running) == (3, 0, 0)


async def test_failures_retry_then_fail(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(
        Task(func=tasks.boom, args=("bad",), max_retries=2, retry_delay=0.05))
    pool = await drain(queue)
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.FAILED
    assert task.error == "RuntimeError: bad" and task.retries == 2 and task.attempts == 3
    assert (pool.counts["retried"], pool.counts["failed"]) == (2, 1)


async def test_timeout_is_a_failure(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.sleep_for, args=(5,), timeout=0.2))
    started = time.monotonic()
    await drain(queue)
    assert time.monotonic() - started < 3
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.startswith("TimeoutError")


async def test_only_allowed_functions_run(queue: BaseTaskQueue) -> None:
    refused = await queue.enqueue(Task(func="os:system", args=("echo hacked",)))
    unknown = await queue.enqueue(Task(func="json:dumps", args=([1],)))
    good = await queue.enqueue(Task(func=tasks.add, args=(1, 1)))
    await drain(queue)
    for task_id in (refused, unknown):
        task = await queue.get_task(task_id)
        assert task is not None and task.status is TaskStatus.FAILED
        assert task.error is not None and task.error.startswith("TaskNotAllowedError")
        assert task.retries == 0
    assert await queue.get_result(good) == 2


async def test_imports_allow_a_module(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func="tests.conformance.tasks:not_registered"))
    await drain(queue, imports=["tests.conformance.tasks"])
    assert await queue.get_result(task_id) == "ran"


async def test_unserialisable_result_fails_the_task(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.unserialisable_result, max_retries=3))
    await drain(queue)
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.FAILED
    assert task.error is not None and "SerializationError" in task.error and task.retries == 0


async def test_priorities_and_dependencies_through_the_worker(queue: BaseTaskQueue) -> None:
    tasks.calls.clear()
    first = await queue.enqueue(Task(func=tasks.record, args=("low",), priority=0))
    await queue.enqueue(Task(func=tasks.record, args=("high",), priority=10))
    await queue.enqueue(
        Task(func=tasks.record, args=("after-low",), priority=99, depends_on=[first]))
    await drain(queue, concurrency=1)
    assert tasks.calls == ["high", "low", "after-low"]


async def test_concurrency_limit_and_hooks(queue: BaseTaskQueue) -> None:
    await queue.enqueue_many([Task(func=tasks.sleep_for, args=(0.1,)) for _ in range(9)])
    pool = WorkerPool(queue, concurrency=3, handle_signals=False)
    peak = 0
    seen: list[str] = []

    def on_started(task: Task) -> None:
        nonlocal peak
        peak = max(peak, pool.active)

    async def on_completed(task: Task) -> None:
        seen.append(task.id)

    pool.on("started", on_started)
    pool.on("completed", on_completed)
    await asyncio.wait_for(pool.run(burst=True), 30)
    assert peak == 3 and len(set(seen)) == 9


async def test_idle_worker_starts_new_work_promptly(queue: BaseTaskQueue) -> None:
    # Its idle re-check pushed out of reach: only a wake-up, or the due time, starts the work.
    pool = WorkerPool(queue, handle_signals=False, idle_timeout=FALLBACK)
    runner = asyncio.create_task(pool.run())
    try:
        await asyncio.sleep(0.3)  # let it go idle
        task_id = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
        started = time.monotonic()
        assert await queue.get_result(task_id, timeout=FALLBACK) == 3
        assert time.monotonic() - started < PROMPT
        run_at = datetime.now(UTC) + timedelta(seconds=0.5)
        later = await queue.enqueue(
            Task(func=tasks.add, args=(2, 2), schedule=Schedule(run_at=run_at)))
        assert await queue.get_result(later, timeout=FALLBACK) == 4
        done = await queue.get_task(later)
        assert done is not None and done.started_at is not None
        assert timedelta(0) <= done.started_at - run_at < timedelta(seconds=PROMPT)
    finally:
        await pool.stop()
        await asyncio.wait_for(runner, 10)


async def test_cancel_running_task_within_a_second(queue: BaseTaskQueue) -> None:
    pool = WorkerPool(queue, handle_signals=False)
    cancelled: list[str] = []
    pool.on("cancelled", lambda t: cancelled.append(t.id))
    runner = asyncio.create_task(pool.run())
    try:
        task_id = await queue.enqueue(Task(func=tasks.sleep_for, args=(30,)))
        await eventually(lambda: pool.active == 1)
        asked = time.monotonic()
        assert await queue.cancel(task_id) is True
        await eventually(lambda: pool.active == 0, timeout=2)
        assert time.monotonic() - asked < 1.0
        task = await queue.get_task(task_id)
        assert task is not None and task.status is TaskStatus.CANCELLED
        await eventually(lambda: cancelled == [task_id])
    finally:
        await pool.stop()
        await asyncio.wait_for(runner, 10)


async def test_shutdown_hands_leases_back(make_queue: QueueFactory) -> None:
    queue = await make_queue(lease_timeout=30)
    task_id = await queue.enqueue(Task(func=tasks.sleep_for, args=(30,), max_retries=0))
    pool = WorkerPool(queue, grace_period=0.2, handle_signals=False)
    runner = asyncio.create_task(pool.run())
    await eventually(lambda: pool.active == 1)
    await pool.stop()
    await asyncio.wait_for(runner, 10)
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.PENDING and task.retries == 0
    again = await queue.dequeue()
    assert again is not None and again.id == task_id, "released at once, not after the lease"


async def test_long_task_keeps_its_lease(make_queue: QueueFactory) -> None:
    queue = await make_queue(lease_timeout=0.6)
    task_id = await queue.enqueue(Task(func=tasks.sleep_for, args=(1.5,)))
    pool = await drain(queue)
    assert await queue.get_result(task_id) == "slept"
    task = await queue.get_task(task_id)
    assert task is not None and task.attempts == 1, "heartbeats kept the claim"
    assert pool.counts["started"] == 1


async def test_recurring_task_runs_each_occurrence(queue: BaseTaskQueue) -> None:
    tasks.calls.clear()
    task_id = await queue.enqueue(
        Task(func=tasks.record, args=("tick",), schedule=Schedule(interval=0.2))
    )
    pool = WorkerPool(queue, handle_signals=False)
    runner = asyncio.create_task(pool.run())
    try:
        await eventually(lambda: len(tasks.calls) >= 3, timeout=5)
    finally:
        await queue.cancel(task_id)
        await pool.stop()
        await asyncio.wait_for(runner, 10)
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.CANCELLED and task.result == "tick"


async def test_second_signal_skips_the_grace_period(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.sleep_for, args=(60,)))
    pool = WorkerPool(queue, grace_period=30)  # handles SIGINT/SIGTERM itself
    runner = asyncio.create_task(pool.run())
    await eventually(lambda: pool.active == 1)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert not runner.done(), "the first signal waits for running tasks"
    asked = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(runner, 10)
    assert time.monotonic() - asked < 2
    task = await queue.get_task(task_id)
    assert task is not None and task.status is TaskStatus.PENDING, "its lease was handed back"
