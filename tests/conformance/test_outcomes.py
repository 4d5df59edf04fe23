"""Outcomes: complete, fail and retry, results, cancel, requeue, delete, purge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from omniq import (
    InvalidTaskError,
    Schedule,
    SerializationError,
    Task,
    TaskCancelledError,
    TaskFailedError,
    TaskStatus,
)
from omniq.queue.base import BaseTaskQueue
from tests.conformance import tasks
from tests.helpers import eventually


async def claim(queue: BaseTaskQueue, queue_name: str = "default") -> Task:
    task = await queue.dequeue(queue_name)
    assert task is not None
    return task


async def test_complete_stores_result(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    task = await claim(queue)
    await queue.complete(task_id, {"sum": 5, "items": [1, 2]}, lease=task.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.COMPLETED
    assert stored.result == {"sum": 5, "items": [1, 2]}
    assert stored.finished_at is not None and stored.lease is None
    assert await queue.get_result(task_id) == {"sum": 5, "items": [1, 2]}


async def test_unserialisable_result_is_refused(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    task = await claim(queue)
    with pytest.raises(SerializationError, match="object"):
        await queue.complete(task_id, object(), lease=task.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.RUNNING


async def test_complete_requires_a_running_task(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    with pytest.raises(InvalidTaskError):
        await queue.complete(task_id, 1)


async def test_fail_retries_with_exponential_backoff_then_fails(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.boom, max_retries=2, retry_delay=0.2))
    task = await claim(queue)
    before = datetime.now(UTC)
    await queue.fail(task_id, "RuntimeError: first", lease=task.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.RETRYING
    assert stored.retries == 1 and stored.error == "RuntimeError: first"
    assert stored.run_at is not None
    delay = (stored.run_at - before).total_seconds()
    assert 0.17 <= delay <= 0.25, delay
    assert await queue.dequeue() is None, "a retry waits for its backoff"

    task = await eventually(queue.dequeue, timeout=3)
    before = datetime.now(UTC)
    await queue.fail(task_id, "RuntimeError: second", lease=task.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.retries == 2 and stored.run_at is not None
    assert 0.35 <= (stored.run_at - before).total_seconds() <= 0.45

    task = await eventually(queue.dequeue, timeout=3)
    await queue.fail(task_id, "RuntimeError: third", lease=task.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.FAILED and stored.retries == 2
    with pytest.raises(TaskFailedError) as info:
        await queue.get_result(task_id)
    assert info.value.task_id == task_id and info.value.error == "RuntimeError: third"


async def test_get_result_waits_and_times_out(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    with pytest.raises(TimeoutError):
        await queue.get_result(task_id, timeout=0.1)
    waiter = asyncio.create_task(queue.get_result(task_id, timeout=5))
    task = await claim(queue)
    await queue.complete(task_id, 5, lease=task.lease)
    assert await waiter == 5


async def test_cancel_queued_and_ended(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    assert await queue.cancel(task_id) is True
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.CANCELLED
    assert await queue.dequeue() is None
    assert await queue.cancel(task_id) is False
    with pytest.raises(TaskCancelledError):
        await queue.get_result(task_id)


async def test_cancel_running_task_fences_its_worker(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    task = await claim(queue)
    assert await queue.cancel(task_id) is True
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.CANCELLED
    with pytest.raises(Exception) as info:
        await queue.complete(task_id, 5, lease=task.lease)
    assert type(info.value).__name__ == "LeaseLostError"


async def test_requeue_a_failed_task(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.boom))
    task = await claim(queue)
    await queue.fail(task_id, "RuntimeError: boom", lease=task.lease)
    assert await queue.requeue(task_id) is True
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.PENDING
    assert stored.error is None and stored.retries == 0
    again = await claim(queue)
    assert again.id == task_id
    assert await queue.requeue(task_id) is False, "a running task is not requeued"


async def test_delete_task(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
    assert await queue.delete_task(task_id) is True
    assert await queue.get_task(task_id) is None
    assert await queue.delete_task(task_id) is False
    assert await queue.dequeue() is None


async def test_purge_defaults_to_terminal_tasks(queue: BaseTaskQueue) -> None:
    done = await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="done"))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="cancelled"))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="waiting-for-work"))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="elsewhere", queue_name="other"))
    task = await claim(queue)
    assert task.id == done
    await queue.complete(done, 2, lease=task.lease)
    await queue.cancel("cancelled")
    await queue.cancel("elsewhere")
    assert await queue.purge("default") == 2
    assert await queue.get_task("done") is None and await queue.get_task("cancelled") is None
    assert await queue.get_task("waiting-for-work") is not None
    assert await queue.get_task("elsewhere") is not None
    assert await queue.purge("default", statuses=[TaskStatus.PENDING]) == 1
    assert (await queue.stats("default")).total == 0


async def test_recurring_interval_returns_to_scheduled_without_drift(queue: BaseTaskQueue) -> None:
    start = datetime.now(UTC) - timedelta(seconds=0.05)
    task_id = await queue.enqueue(
        Task(func=tasks.add, args=(1, 1), schedule=Schedule(run_at=start, interval=0.3))
    )
    runs = []
    for n in range(3):
        task = await eventually(queue.dequeue, timeout=3)
        assert task.id == task_id
        runs.append(task.run_at)
        await queue.complete(task_id, n, lease=task.lease)
        stored = await queue.get_task(task_id)
        assert stored is not None and stored.status is TaskStatus.SCHEDULED and stored.result == n
    assert runs == [start + timedelta(seconds=0.3 * i) for i in range(3)]


async def test_recurring_missed_runs_coalesce(queue: BaseTaskQueue) -> None:
    start = datetime.now(UTC) - timedelta(seconds=10.05)
    task_id = await queue.enqueue(
        Task(func=tasks.add, args=(1, 1), schedule=Schedule(run_at=start, interval=1))
    )
    task = await claim(queue)
    await queue.complete(task_id, 1, lease=task.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.run_at is not None
    now = datetime.now(UTC)
    assert now < stored.run_at <= now + timedelta(seconds=1)
    assert (stored.run_at - start).total_seconds() == pytest.approx(11, abs=1e-6)
    assert await queue.dequeue() is None, "missed occurrences do not burst"


async def test_recurring_final_failure_reschedules_and_cancel_ends_it(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(
        Task(func=tasks.boom, schedule=Schedule(cron="* * * * *"))
    )
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.SCHEDULED
    assert stored.run_at is not None and stored.run_at.second == 0
    await queue.pause_task(task_id)
    assert await queue.cancel(task_id) is True
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.CANCELLED


async def test_recurring_failure_goes_back_to_schedule(queue: BaseTaskQueue) -> None:
    start = datetime.now(UTC) - timedelta(seconds=0.01)
    task_id = await queue.enqueue(
        Task(func=tasks.boom, schedule=Schedule(run_at=start, interval=60))
    )
    task = await claim(queue)
    await queue.fail(task_id, "RuntimeError: boom", lease=task.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.SCHEDULED
    assert stored.error == "RuntimeError: boom" and stored.run_at == start + timedelta(seconds=60)


async def test_get_result_wakes_when_this_process_ends_the_task(
    queue: BaseTaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the fallback re-read pushed out of reach, only the end itself can wake the wait.
    monkeypatch.setattr("omniq.queue.base.RESULT_POLL", (30.0, 30.0))
    done_id, failed_id = await queue.enqueue_many(
        [Task(func=tasks.add, args=(2, 2)), Task(func=tasks.boom)])
    waiting = [asyncio.create_task(queue.get_result(i, timeout=20)) for i in (done_id, failed_id)]
    await asyncio.sleep(0.2)  # let them start waiting; a late start only tests less
    assert not any(w.done() for w in waiting)
    first, second = await queue.dequeue_many("default", 2)
    await queue.complete(done_id, 4, lease=first.lease)
    await queue.fail(failed_id, "RuntimeError: no", lease=second.lease)
    assert await asyncio.wait_for(waiting[0], 5.0) == 4
    with pytest.raises(TaskFailedError, match="no"):
        await asyncio.wait_for(waiting[1], 5.0)
