"""Enqueue, validation and inspection: the same on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from omniq import (
    DependencyError,
    InvalidTaskError,
    Schedule,
    SerializationError,
    Task,
    TaskNotFoundError,
    TaskStatus,
)
from omniq.queue.base import BaseTaskQueue
from tests.conformance import tasks
from tests.conftest import QueueFactory


async def test_enqueue_returns_id_and_stores_pending(queue: BaseTaskQueue) -> None:
    task = Task(func=tasks.add, args=(1, 2), kwargs={}, queue_name="default", priority=3)
    task_id = await queue.enqueue(task)
    assert task_id == task.id
    stored = await queue.get_task(task_id)
    assert stored is not None
    assert stored.status is TaskStatus.PENDING
    assert stored.func == "tests.conformance.tasks:add"
    assert stored.args == (1, 2)
    assert stored.priority == 3
    assert stored.created_at is not None and stored.run_at is not None
    assert stored.attempts == 0 and stored.lease is None


async def test_arguments_round_trip_with_rich_types(queue: BaseTaskQueue) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    task_id = await queue.enqueue(
        Task(func=tasks.record, args=("x", b"\x00\x01"),
             kwargs={"when": moment, "n": [1, {"a": None}]})
    )
    stored = await queue.get_task(task_id)
    assert stored is not None
    assert stored.args == ("x", b"\x00\x01")
    assert stored.kwargs == {"when": moment, "n": [1, {"a": None}]}


async def test_enqueue_is_idempotent_on_id(queue: BaseTaskQueue) -> None:
    first = await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="job-1"))
    second = await queue.enqueue(Task(func=tasks.add, args=(9, 9), id="job-1", priority=5))
    assert first == second == "job-1"
    stored = await queue.get_task("job-1")
    assert stored is not None and stored.args == (1, 1) and stored.priority == 0
    assert (await queue.stats()).pending == 1


async def test_enqueue_many_returns_ids_in_order(queue: BaseTaskQueue) -> None:
    batch = [Task(func=tasks.add, args=(i, i)) for i in range(20)]
    ids = await queue.enqueue_many(batch)
    assert ids == [t.id for t in batch]
    assert (await queue.stats("default")).pending == 20
    listed = await queue.list_tasks("default")
    assert [t.id for t in listed] == ids


async def test_enqueue_many_keeps_an_existing_id_and_stores_the_rest(
    queue: BaseTaskQueue,
) -> None:
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="job-5"))
    batch = [Task(func=tasks.add, args=(i, i), id=f"job-{i}") for i in range(10)]
    assert await queue.enqueue_many(batch) == [f"job-{i}" for i in range(10)]
    kept = await queue.get_task("job-5")
    assert kept is not None and kept.args == (1, 1), "the stored task is left as it was"
    assert (await queue.stats("default")).pending == 10
    listed = [t.id for t in await queue.list_tasks("default")]
    assert listed == ["job-5", *(f"job-{i}" for i in range(10) if i != 5)]
    again = await queue.enqueue_many([Task(func=tasks.add, args=(i, i), id=f"job-{i}")
                                      for i in range(10, 13)])
    assert again == ["job-10", "job-11", "job-12"]
    assert (await queue.stats("default")).pending == 13


async def test_get_task_unknown_is_none(queue: BaseTaskQueue) -> None:
    assert await queue.get_task("does-not-exist") is None
    with pytest.raises(TaskNotFoundError):
        await queue.get_result("does-not-exist", timeout=0.1)


@pytest.mark.parametrize(
    "bad",
    [
        {"queue_name": ""},
        {"queue_name": "a b"},
        {"queue_name": "../x"},
        {"queue_name": "x."},
        {"queue_name": "q;DROP TABLE"},
        {"queue_name": "x" * 65},
        {"id": "../../x"},
        {"id": "q;DROP TABLE"},
        {"id": ""},
        {"id": "a" * 129},
        {"priority": 2**64},
        {"priority": 1.5},
        {"ttl": -1},
        {"ttl": float("nan")},
        {"timeout": 0},
        {"max_retries": -1},
        {"retry_delay": float("inf")},
    ],
)
async def test_invalid_fields_are_refused(queue: BaseTaskQueue, bad: dict[str, object]) -> None:
    with pytest.raises(InvalidTaskError):
        await queue.enqueue(Task(func=tasks.add, args=(1, 2), **bad))  # type: ignore[arg-type]
    assert (await queue.stats()).total == 0


async def test_bad_function_reference_is_refused(queue: BaseTaskQueue) -> None:
    with pytest.raises(InvalidTaskError):
        Task(func="not a reference")
    with pytest.raises(InvalidTaskError):
        Task(func="os.system")  # no ':' separator


async def test_unserialisable_arguments_name_the_type(queue: BaseTaskQueue) -> None:
    class Opaque:
        pass

    good = Task(func=tasks.add, args=(1, 2))
    with pytest.raises(SerializationError, match="Opaque"):
        await queue.enqueue_many([good, Task(func=tasks.record, args=(Opaque(),))])
    assert await queue.get_task(good.id) is None, "a refused batch stores nothing"


async def test_oversize_payload_is_refused(make_queue: QueueFactory) -> None:
    queue = await make_queue(max_payload=1024)
    with pytest.raises(InvalidTaskError, match="max_payload"):
        await queue.enqueue(Task(func=tasks.record, args=("x" * 2000,)))
    small = await queue.enqueue(Task(func=tasks.record, args=("x" * 100,)))
    assert (await queue.get_task(small)) is not None


async def test_local_functions_only_in_memory(queue: BaseTaskQueue) -> None:
    def local(x: int) -> int:
        return x

    if queue.keeps_callables:
        task_id = await queue.enqueue(Task(func=local, args=(1,)))
        assert await queue.get_task(task_id) is not None
    else:
        with pytest.raises(SerializationError):
            await queue.enqueue(Task(func=local, args=(1,)))
        with pytest.raises(SerializationError):
            await queue.enqueue(Task(func=lambda: None))
        assert (await queue.stats()).total == 0


async def test_task_decorator_defaults(queue: BaseTaskQueue) -> None:
    task_id = await queue.enqueue(Task(func=tasks.with_defaults))
    stored = await queue.get_task(task_id)
    assert stored is not None
    assert (stored.queue_name, stored.priority, stored.max_retries, stored.timeout) == (
        "mail", 7, 2, 30.0,
    )
    explicit = await queue.enqueue(Task(func=tasks.with_defaults, priority=1, queue_name="other"))
    stored = await queue.get_task(explicit)
    assert stored is not None and (stored.priority, stored.queue_name) == (1, "other")


async def test_unknown_dependency_is_refused(queue: BaseTaskQueue) -> None:
    with pytest.raises(DependencyError, match="missing-1"):
        await queue.enqueue(Task(func=tasks.add, args=(1, 2), depends_on=["missing-1"]))
    assert (await queue.stats()).total == 0


async def test_dependency_cycle_in_batch_is_refused(queue: BaseTaskQueue) -> None:
    a = Task(func=tasks.add, args=(1, 1), id="a1", depends_on=["c1"])
    b = Task(func=tasks.add, args=(1, 1), id="b1", depends_on=["a1"])
    c = Task(func=tasks.add, args=(1, 1), id="c1", depends_on=["b1"])
    with pytest.raises(DependencyError, match="cycle"):
        await queue.enqueue_many([a, b, c])
    assert (await queue.stats()).total == 0


async def test_schedule_validation() -> None:
    with pytest.raises(ValueError):
        Schedule(cron="61 * * * *")
    with pytest.raises(ValueError):
        Schedule(cron="not a cron")
    with pytest.raises(ValueError):
        Schedule(cron="* * * * *", interval=5)
    with pytest.raises(ValueError):
        Schedule(interval=0)
    with pytest.raises(ValueError):
        Schedule(interval=timedelta(seconds=-1))
    with pytest.raises(ValueError):
        Schedule(cron="0 9 * * *", tz="Mars/Olympus")


async def test_namespaces_are_isolated(make_queue: QueueFactory) -> None:
    one = await make_queue(namespace="nsone" + Task(func="a:b").id[:8])
    two = await make_queue(namespace="nstwo" + Task(func="a:b").id[:8])
    await one.enqueue(Task(func=tasks.add, args=(1, 2), id="shared-id"))
    assert await two.get_task("shared-id") is None
    assert await two.dequeue() is None
    await two.enqueue(Task(func=tasks.add, args=(3, 4), id="shared-id"))
    a, b = await one.get_task("shared-id"), await two.get_task("shared-id")
    assert a is not None and b is not None and a.args == (1, 2) and b.args == (3, 4)
    await one.drop_namespace()
    assert await two.get_task("shared-id") is not None


async def test_list_and_stats_filter_by_queue_and_status(queue: BaseTaskQueue) -> None:
    await queue.enqueue_many([Task(func=tasks.add, args=(i, i), queue_name="a") for i in range(3)])
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), queue_name="b"))
    await queue.enqueue(
        Task(func=tasks.add, args=(1, 1), queue_name="b",
             schedule=Schedule(run_at=datetime.now(UTC) + timedelta(hours=1)))
    )
    assert (await queue.stats("a")).pending == 3
    b = await queue.stats("b")
    assert (b.pending, b.scheduled, b.total) == (1, 1, 2)
    assert (await queue.stats()).total == 5
    assert len(await queue.list_tasks("b", status=TaskStatus.SCHEDULED)) == 1
    assert len(await queue.list_tasks(status="pending")) == 4
    assert len(await queue.list_tasks(limit=2)) == 2
