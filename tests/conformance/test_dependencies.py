"""depends_on: waiting, release, and cascading cancellation."""

from __future__ import annotations

from omniq import Task, TaskStatus
from omniq.queue.base import BaseTaskQueue
from tests.conformance import tasks


async def run_one(queue: BaseTaskQueue, *, fail: bool = False) -> str:
    task = await queue.dequeue()
    assert task is not None
    if fail:
        await queue.fail(task.id, "RuntimeError: boom", lease=task.lease)
    else:
        await queue.complete(task.id, "ok", lease=task.lease)
    return task.id


async def status(queue: BaseTaskQueue, task_id: str) -> TaskStatus:
    task = await queue.get_task(task_id)
    assert task is not None
    return task.status


async def test_dependent_waits_then_runs(queue: BaseTaskQueue) -> None:
    a = await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="a"))
    b = await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="b"))
    c = await queue.enqueue(
        Task(func=tasks.add, args=(1, 1), id="c", depends_on=[a, b], priority=9))
    assert await status(queue, c) is TaskStatus.WAITING
    assert (await queue.stats()).waiting == 1
    assert await run_one(queue) == "a"
    assert await status(queue, c) is TaskStatus.WAITING
    assert await run_one(queue) == "b"
    assert await status(queue, c) is TaskStatus.PENDING
    assert await run_one(queue) == "c"


async def test_dependency_already_completed(queue: BaseTaskQueue) -> None:
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="first"))
    await run_one(queue)
    later = await queue.enqueue(Task(func=tasks.add, args=(1, 1), depends_on=["first"]))
    assert await status(queue, later) is TaskStatus.PENDING


async def test_batch_dependencies(queue: BaseTaskQueue) -> None:
    parent = Task(func=tasks.add, args=(1, 1), id="parent")
    child = Task(func=tasks.add, args=(1, 1), id="child", depends_on=["parent"], priority=5)
    await queue.enqueue_many([child, parent])
    assert await status(queue, "child") is TaskStatus.WAITING
    assert await run_one(queue) == "parent"
    assert await run_one(queue) == "child"


async def test_failure_cancels_dependents_transitively(queue: BaseTaskQueue) -> None:
    await queue.enqueue(Task(func=tasks.boom, id="root"))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="mid", depends_on=["root"]))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="leaf", depends_on=["mid"]))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="unrelated"))
    await run_one(queue, fail=True)
    mid, leaf = await queue.get_task("mid"), await queue.get_task("leaf")
    assert mid is not None and mid.status is TaskStatus.CANCELLED and "root" in (mid.error or "")
    assert leaf is not None and leaf.status is TaskStatus.CANCELLED and "mid" in (leaf.error or "")
    assert await status(queue, "unrelated") is TaskStatus.PENDING


async def test_cancel_and_delete_cascade(queue: BaseTaskQueue) -> None:
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="x"))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="y", depends_on=["x"]))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="p"))
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="q", depends_on=["p"]))
    await queue.cancel("x")
    assert await status(queue, "y") is TaskStatus.CANCELLED
    await queue.delete_task("p")
    q = await queue.get_task("q")
    assert q is not None and q.status is TaskStatus.CANCELLED and "deleted" in (q.error or "")


async def test_dependency_on_failed_task_cancels_new_dependent(queue: BaseTaskQueue) -> None:
    await queue.enqueue(Task(func=tasks.boom, id="bad"))
    await run_one(queue, fail=True)
    late = await queue.enqueue(Task(func=tasks.add, args=(1, 1), depends_on=["bad"]))
    assert await status(queue, late) is TaskStatus.CANCELLED
