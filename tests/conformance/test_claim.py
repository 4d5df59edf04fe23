"""Claiming, ordering, leases, fencing, pause and ttl: the same on every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from omniq import LeaseLostError, Schedule, Task, TaskStatus
from omniq.queue.base import BaseTaskQueue
from tests.conformance import tasks
from tests.conftest import QueueFactory
from tests.helpers import eventually


async def test_dequeue_empty_returns_none_at_once(queue: BaseTaskQueue) -> None:
    assert await asyncio.wait_for(queue.dequeue(), 2) is None


async def test_priority_then_fifo(queue: BaseTaskQueue) -> None:
    ids = []
    for i, priority in enumerate([0, 5, 0, 10, 5, -3, 0]):
        ids.append(await queue.enqueue(
            Task(func=tasks.add, args=(i, i), priority=priority, id=f"t{i}")))
    order = []
    while (task := await queue.dequeue()) is not None:
        order.append(task.id)
    assert order == ["t3", "t1", "t4", "t0", "t2", "t6", "t5"]


async def test_dequeue_many_claims_in_order_without_duplicates(queue: BaseTaskQueue) -> None:
    await queue.enqueue_many([Task(func=tasks.add, args=(i, i), id=f"m{i:02d}") for i in range(25)])
    first = await queue.dequeue_many("default", 10)
    second = await queue.dequeue_many("default", 10)
    third = await queue.dequeue_many("default", 10)
    claimed = [t.id for t in first + second + third]
    assert claimed == [f"m{i:02d}" for i in range(25)]
    assert len({t.lease for t in first}) == 1 and first[0].lease != second[0].lease


async def test_claim_marks_running_with_a_lease(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
    task = await queue.dequeue()
    assert task is not None and task.id == task_id
    assert task.status is TaskStatus.RUNNING and task.lease and task.attempts == 1
    assert task.started_at is not None and task.lease_expires_at is not None
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.RUNNING and stored.lease == task.lease
    assert await queue.dequeue() is None, "a leased task is never handed out twice"


async def test_queues_are_separate(queue: BaseTaskQueue) -> None:
    await queue.enqueue(Task(func=tasks.add, args=(1, 2), queue_name="emails"))
    assert await queue.dequeue("default") is None
    task = await queue.dequeue("emails")
    assert task is not None and task.queue_name == "emails"


async def test_scheduled_task_waits_for_its_time(queue: BaseTaskQueue) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=0.4)
    task_id = await queue.enqueue(
        Task(func=tasks.add, args=(1, 2), schedule=Schedule(run_at=run_at)))
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.SCHEDULED
    assert stored.run_at is not None and abs((stored.run_at - run_at).total_seconds()) < 0.001
    assert await queue.dequeue() is None
    task = await eventually(queue.dequeue, timeout=3)
    assert task.id == task_id
    assert datetime.now(UTC) >= run_at


async def test_naive_run_at_means_utc(queue: BaseTaskQueue) -> None:
    naive = (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None)
    task_id = await queue.enqueue(
        Task(func=tasks.add, args=(1, 2), schedule=Schedule(run_at=naive)))
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.run_at == naive.replace(tzinfo=UTC)


async def test_expired_lease_is_reclaimed_without_consuming_a_retry(
    make_queue: QueueFactory,
) -> None:
    queue = await make_queue(lease_timeout=0.3)
    task_id = await queue.enqueue(Task(func=tasks.add, args=(1, 2), max_retries=1))
    first = await queue.dequeue()
    assert first is not None
    assert await queue.dequeue() is None
    second = await eventually(queue.dequeue, timeout=3)
    assert second.id == task_id and second.lease != first.lease
    assert second.attempts == 2 and second.retries == 0
    with pytest.raises(LeaseLostError):
        await queue.complete(task_id, 99, lease=first.lease)
    with pytest.raises(LeaseLostError):
        await queue.fail(task_id, "stale", lease=first.lease)
    with pytest.raises(LeaseLostError):
        await queue.extend_lease(task_id, lease=first.lease)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.RUNNING and stored.result is None
    await queue.complete(task_id, 3, lease=second.lease)
    assert await queue.get_result(task_id, timeout=1) == 3


async def test_extend_lease_keeps_the_claim(make_queue: QueueFactory) -> None:
    queue = await make_queue(lease_timeout=0.4)
    await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
    task = await queue.dequeue()
    assert task is not None
    for _ in range(4):
        await asyncio.sleep(0.2)
        assert await queue.extend_lease(task.id, lease=task.lease) is True
        assert await queue.dequeue() is None
    assert await queue.extend_lease(task.id, 5.0) is True
    stored = await queue.get_task(task.id)
    assert stored is not None and stored.lease_expires_at is not None
    assert stored.lease_expires_at > datetime.now(UTC) + timedelta(seconds=4)


async def test_pause_and_resume_queue(queue: BaseTaskQueue) -> None:
    await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
    await queue.pause("default")
    assert (await queue.stats("default")).paused is True
    assert await queue.dequeue() is None
    await queue.enqueue(Task(func=tasks.add, args=(3, 4), queue_name="other"))
    assert await queue.dequeue("other") is not None, "pausing one queue leaves others alone"
    await queue.resume("default")
    assert (await queue.stats("default")).paused is False
    assert await queue.dequeue() is not None


async def test_pause_and_resume_task(queue: BaseTaskQueue) -> None:
    held = await queue.enqueue(Task(func=tasks.add, args=(1, 1), priority=5))
    other = await queue.enqueue(Task(func=tasks.add, args=(2, 2)))
    assert await queue.pause_task(held) is True
    paused = await queue.get_task(held)
    assert paused is not None and paused.schedule is not None and paused.schedule.paused
    task = await queue.dequeue()
    assert task is not None and task.id == other
    assert await queue.dequeue() is None
    assert await queue.resume_task(held) is True
    task = await queue.dequeue()
    assert task is not None and task.id == held


async def test_schedule_created_paused_waits_for_resume(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.add, args=(1, 1), schedule=Schedule(paused=True)))
    assert await queue.dequeue() is None
    await queue.resume_task(task_id)
    task = await queue.dequeue()
    assert task is not None and task.id == task_id


async def test_ttl_expires_a_task_that_was_not_started(queue: BaseTaskQueue) -> None:
    stale = await queue.enqueue(Task(func=tasks.add, args=(1, 1), ttl=0.2))
    fresh = await queue.enqueue(Task(func=tasks.add, args=(2, 2), ttl=60))
    await asyncio.sleep(0.35)
    task = await queue.dequeue()
    assert task is not None and task.id == fresh
    assert await queue.dequeue() is None
    stored = await queue.get_task(stale)
    assert stored is not None and stored.status is TaskStatus.EXPIRED
    assert stored.error and "ttl" in stored.error


async def test_ttl_counts_from_when_the_task_becomes_due(queue: BaseTaskQueue) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=0.3)
    task_id = await queue.enqueue(
        Task(func=tasks.add, args=(1, 1), ttl=5, schedule=Schedule(run_at=run_at))
    )
    task = await eventually(queue.dequeue, timeout=3)
    assert task.id == task_id and task.status is TaskStatus.RUNNING
