"""Inspection for tools such as the dashboard: queue names and paged listings, on every backend."""

from __future__ import annotations

import pytest

from omniq import Task, TaskStatus
from omniq.queue.base import BaseTaskQueue
from tests.conformance import tasks


async def test_queue_names_lists_queues_with_tasks_and_paused_ones(queue: BaseTaskQueue) -> None:
    assert await queue.queue_names() == []
    await queue.enqueue_many([
        Task(func=tasks.add, args=(1, 1), queue_name=name)
        for name in ("reports", "emails", "Emails.v2", "emails")
    ])
    await queue.pause("idle-but-paused")
    assert await queue.queue_names() == ["Emails.v2", "emails", "idle-but-paused", "reports"]

    # A queue emptied by purge is gone; one resumed with no tasks is gone too.
    await queue.cancel((await queue.list_tasks("reports"))[0].id)
    assert await queue.purge("reports") == 1
    await queue.resume("idle-but-paused")
    assert await queue.queue_names() == ["Emails.v2", "emails"]


async def test_list_tasks_pages_in_enqueue_order_and_reverse(queue: BaseTaskQueue) -> None:
    ids = await queue.enqueue_many([
        Task(func=tasks.add, args=(i, i), id=f"task-{i:02d}", queue_name="pages")
        for i in range(12)
    ])
    await queue.enqueue(Task(func=tasks.add, args=(0, 0), id="elsewhere", queue_name="other"))

    async def page(offset: int, limit: int, newest_first: bool = False) -> list[str]:
        found = await queue.list_tasks("pages", limit=limit, offset=offset,
                                       newest_first=newest_first)
        return [t.id for t in found]

    assert await page(0, 5) == ids[0:5]
    assert await page(5, 5) == ids[5:10]
    assert await page(10, 5) == ids[10:12]
    assert await page(12, 5) == []
    newest = ids[::-1]
    assert await page(0, 5, newest_first=True) == newest[0:5]
    assert await page(5, 5, newest_first=True) == newest[5:10]
    assert await page(10, 5, newest_first=True) == newest[10:12]
    # Without a queue filter the other queue's task takes its place in enqueue order.
    everything = await queue.list_tasks(limit=3, newest_first=True)
    assert [t.id for t in everything] == ["elsewhere", ids[11], ids[10]]
    assert [t.id for t in await queue.list_tasks(limit=2, offset=11)] == [ids[11], "elsewhere"]


async def test_list_tasks_pages_within_one_status(queue: BaseTaskQueue) -> None:
    ids = await queue.enqueue_many([
        Task(func=tasks.add, args=(i, i), id=f"task-{i:02d}") for i in range(8)
    ])
    for task_id in ids[::2]:  # cancel the even ones
        assert await queue.cancel(task_id)
    cancelled = ids[::2]
    listed = await queue.list_tasks(status=TaskStatus.CANCELLED, limit=2, offset=1)
    assert [t.id for t in listed] == cancelled[1:3]
    listed = await queue.list_tasks("default", "cancelled", limit=3, newest_first=True, offset=2)
    assert [t.id for t in listed] == cancelled[::-1][2:]
    assert all(t.status is TaskStatus.CANCELLED for t in listed)
    pending = await queue.list_tasks(status="pending", limit=10, newest_first=True)
    assert [t.id for t in pending] == ids[1::2][::-1]


async def test_list_tasks_refuses_bad_paging(queue: BaseTaskQueue) -> None:
    for name, value in (("offset", -1), ("limit", -1), ("offset", 1.5), ("limit", True)):
        with pytest.raises(ValueError, match=f"{name} must be a non-negative integer"):
            await queue.list_tasks(**{name: value})  # type: ignore[arg-type]


async def test_list_tasks_limit_zero_is_empty(queue: BaseTaskQueue) -> None:
    await queue.enqueue(Task(func=tasks.add, args=(1, 1)))
    assert await queue.list_tasks(limit=0) == []
