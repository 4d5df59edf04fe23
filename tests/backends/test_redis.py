"""What is specific to the Redis backend: concurrent claims over separate connections, exact
priority order, pub/sub wake-ups, password hygiene, key layout and reconnects."""

from __future__ import annotations

import asyncio
import random
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from omniq import BackendError, Schedule, Task, TaskStatus, WorkerPool
from omniq.models.task import PRIORITY_MAX, PRIORITY_MIN
from omniq.queue.base import BaseTaskQueue, Outcome
from omniq.queue.redis import RedisTaskQueue
from tests.conformance import tasks
from tests.conftest import REDIS_URL, QueueFactory, new_namespace, require_server
from tests.helpers import FALLBACK, PROMPT

SECRET = "S3cret-Pa55w0rd"


@pytest.fixture
def backend() -> str:
    return "redis"


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    """A plain redis client on the test server, for looking at keys."""
    require_server("redis")
    import redis.asyncio

    client = redis.asyncio.from_url(REDIS_URL)
    yield client
    await client.aclose()


def _prefix(queue: BaseTaskQueue) -> bytes:
    return f"{{{queue.namespace}}}:".encode()


async def _keys(raw: Any, pattern: str) -> set[bytes]:
    return {key async for key in raw.scan_iter(match=pattern, count=1000)}


async def test_two_connections_never_claim_the_same_task(make_queue: QueueFactory) -> None:
    first, second = await make_queue(), await make_queue()
    ids = await first.enqueue_many([Task(func=tasks.add, args=(i, i)) for i in range(600)])
    claimed: list[str] = []

    async def drain(queue: BaseTaskQueue) -> None:
        while batch := await queue.dequeue_many("default", random.randint(1, 7)):
            claimed.extend(t.id for t in batch)

    await asyncio.gather(*(drain(q) for q in (first, second) for _ in range(4)))
    assert len(claimed) == len(set(claimed)), "a task was handed out twice"
    assert sorted(claimed) == sorted(ids)


async def test_priorities_order_many_tasks_exactly(queue: BaseTaskQueue) -> None:
    rng = random.Random(7)
    edges = [PRIORITY_MIN, PRIORITY_MIN + 1, -1, 0, 1, PRIORITY_MAX - 1, PRIORITY_MAX]
    now = datetime.now(UTC)
    batch = []
    for i in range(300):
        priority = rng.choice(edges) if i % 2 else rng.randint(-5, 5)
        kind = rng.random()
        schedule = None
        if kind < 0.3:  # due in the past: ordered by that time among equals
            schedule = Schedule(run_at=now - timedelta(seconds=rng.randint(1, 50)))
        elif kind < 0.4:  # due soon: goes through the due set first
            schedule = Schedule(run_at=now + timedelta(seconds=0.3))
        batch.append(Task(func=tasks.add, args=(i, i), priority=priority, schedule=schedule,
                          id=f"p{i:03d}"))
    for start in range(0, len(batch), 50):
        await queue.enqueue_many(batch[start : start + 50])
    stored = await queue.get_tasks([t.id for t in batch])
    expected = sorted(batch, key=lambda t: (-t.priority, stored[t.id].run_at, t.id))
    await asyncio.sleep(0.35)
    order: list[str] = []
    while claimed := await queue.dequeue_many("default", 7):
        order.extend(t.id for t in claimed)
    assert order == [t.id for t in expected]


async def test_wake_up_published_during_a_claim_is_not_lost(make_queue: QueueFactory) -> None:
    waiter, producer = await make_queue(), await make_queue()
    await waiter.wait_for_work(["default"], 2.0)
    assert await waiter.dequeue() is None
    await producer.enqueue(Task(func=tasks.add, args=(1, 2)))  # after the claim, before the wait
    started = time.monotonic()
    await waiter.wait_for_work(["default"], FALLBACK)
    assert time.monotonic() - started < PROMPT


def _script_calls(queue: BaseTaskQueue) -> Counter[str]:
    """Count the requests (script calls, by script) ``queue`` makes from now on."""
    assert isinstance(queue, RedisTaskQueue)
    calls: Counter[str] = Counter()
    run = queue._run

    async def counted(script: str, args: Sequence[Any]) -> Any:
        calls[script] += 1
        return await run(script, args)

    queue._run = counted  # type: ignore[method-assign]
    return calls


async def test_get_result_takes_a_small_ended_task_from_its_notice(
    make_queue: QueueFactory,
) -> None:
    producer, worker = await make_queue(), await make_queue()

    async def results(tasks_: list[Task], *, ended_together: bool = False) -> list[Any]:
        ids = [await producer.enqueue(t) for t in tasks_]
        waits = [asyncio.create_task(producer.get_result(i, timeout=10)) for i in ids]
        await asyncio.sleep(0)  # one step: each wait has read (or not) and sleeps now
        claimed = await worker.dequeue_many("default", len(ids))
        assert sorted(t.id for t in claimed) == sorted(ids)
        outcomes = [Outcome(t, await tasks.record.func(*t.args)) for t in claimed]
        if ended_together:
            await worker.report(outcomes)
        else:
            for outcome in outcomes:
                await worker.report([outcome])
        return await asyncio.wait_for(asyncio.gather(*waits), 10)

    # The first wait subscribes (reading the task); from then on this producer hears of ends.
    assert await results([Task(func=tasks.record, args=("first",))]) == ["first"]
    calls = _script_calls(producer)
    for i in range(3):
        label = f"small-{i}"
        assert await results([Task(func=tasks.record, args=(label,))]) == [label]
    assert calls["get"] == 0, "a small task's end notice carries it: no read needed"
    big = "x" * 10_000
    assert await results([Task(func=tasks.record, args=(big,))]) == [big]
    assert calls["get"] == 1, "a large task is read"
    many = [f"batch-{i}" for i in range(6)]
    got = await results([Task(func=tasks.record, args=(m,)) for m in many], ended_together=True)
    assert got == many
    assert calls["get"] == 1 + len(many), "a batch of ends is announced, and each wait reads"


async def test_an_idle_worker_learns_the_next_due_time_from_its_claims(
    make_queue: QueueFactory,
) -> None:
    consumer, producer = await make_queue(), await make_queue()
    calls = _script_calls(consumer)
    pool = WorkerPool(consumer, concurrency=2, handle_signals=False, idle_timeout=30,
                      imports=[tasks.__name__])
    runner = asyncio.create_task(pool.run())
    try:
        for i in range(6):
            task_id = await producer.enqueue(Task(func=tasks.add, args=(i, 1)))
            assert await producer.get_result(task_id, timeout=10) == i + 1
        # Scheduled elsewhere while the worker idles: only its wake-up and the claim after it
        # tell the worker when this is due (the idle timeout is 30 s).
        started = time.monotonic()
        due = Schedule(run_at=datetime.now(UTC) + timedelta(seconds=0.5))
        task_id = await producer.enqueue(Task(func=tasks.add, args=(2, 2), schedule=due))
        assert await producer.get_result(task_id, timeout=10) == 4
        assert 0.4 <= time.monotonic() - started < 5
    finally:
        await pool.stop()
        await asyncio.wait_for(runner, 10)
    # Each claim is followed by an idle wait. It asks only before the subscription is open,
    # or when a wake-up arrived between its claim and its wait (a timing accident).
    assert calls["claim"] >= 7
    assert calls["next"] <= calls["claim"] // 2, calls


def _no_secret(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    assert SECRET not in text and SECRET not in repr(exc)


async def test_password_never_in_repr_or_errors() -> None:
    require_server("redis")
    refused = RedisTaskQueue(url=f"redis://alice:{SECRET}@127.0.0.1:1/0", namespace=new_namespace())
    assert SECRET not in repr(refused) and "***" in repr(refused)
    with pytest.raises(BackendError) as info:
        await refused.connect()
    _no_secret(info.value)

    by_keyword = RedisTaskQueue("127.0.0.1", 1, password=SECRET, namespace=new_namespace())
    assert SECRET not in repr(by_keyword)
    with pytest.raises(BackendError) as info:
        await by_keyword.connect()
    _no_secret(info.value)

    parts = urlsplit(REDIS_URL)
    wrong = parts._replace(netloc=f"omniq-nobody:{SECRET}@{parts.hostname}:{parts.port}").geturl()
    rejected = RedisTaskQueue(url=wrong, namespace=new_namespace())
    with pytest.raises(BackendError) as info:
        await rejected.connect()
    _no_secret(info.value)


async def test_keys_live_under_the_namespace_and_drop_removes_exactly_them(
    make_queue: QueueFactory, raw: Any
) -> None:
    ours = await make_queue()
    other = await make_queue(namespace=new_namespace())
    marker = uuid.uuid4().hex[:10]
    sentinel = f"omniq-test-sentinel-{marker}"
    await raw.set(sentinel, "keep")
    try:
        await other.enqueue(Task(func=tasks.add, args=(1, 2), id="other-task"))
        await _exercise(ours, marker)
        prefix = _prefix(ours)
        mine = await _keys(raw, f"*{marker}*") | await _keys(raw, f"*{ours.namespace}*")
        assert mine and all(k.startswith(prefix) for k in mine - {sentinel.encode()}), mine
        theirs = await _keys(raw, f"{{{other.namespace}}}:*")
        assert theirs

        await ours.drop_namespace()
        assert await _keys(raw, f"*{ours.namespace}*") == set()
        assert await _keys(raw, f"{{{other.namespace}}}:*") == theirs
        assert await raw.get(sentinel) == b"keep"
        assert (await other.get_task("other-task")) is not None
    finally:
        await raw.delete(sentinel)


async def _exercise(queue: BaseTaskQueue, marker: str) -> None:
    """Touch every kind of key: tasks, dependencies, schedules, retries, leases, pauses."""
    name = f"q-{marker}"
    soon = Schedule(run_at=datetime.now(UTC) + timedelta(hours=1))
    await queue.enqueue_many([
        Task(func=tasks.add, args=(1, 2), id=f"a-{marker}", queue_name=name, max_retries=2),
        Task(func=tasks.add, args=(1, 2), id=f"b-{marker}", queue_name=name,
             depends_on=[f"a-{marker}"]),
        Task(func=tasks.add, args=(1, 2), id=f"c-{marker}", queue_name=name, schedule=soon),
        Task(func=tasks.add, args=(1, 2), id=f"d-{marker}", queue_name=name),
    ])
    first = await queue.dequeue(name)
    assert first is not None
    await queue.fail(first.id, "boom", lease=first.lease)
    second = await queue.dequeue(name)
    assert second is not None and await queue.extend_lease(second.id, 5, lease=second.lease)
    await queue.pause(name)
    await queue.stats(name)
    await queue.list_tasks(name)
    await queue.next_ready_at([name])
    await queue.cancel(f"c-{marker}")
    assert (await queue.get_task(f"c-{marker}")).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


async def _kill_clients(raw: Any, queue: BaseTaskQueue) -> int:
    killed = 0
    for client in await raw.client_list():
        if client.get("name") == f"omniq:{queue.namespace}":
            killed += await raw.client_kill_filter(_id=client["id"])
    return killed


async def test_recovers_after_its_connections_are_killed(
    make_queue: QueueFactory, raw: Any
) -> None:
    queue, producer = await make_queue(), await make_queue()
    await queue.wait_for_work(["default"], 2.0)  # subscribed: a pub/sub connection exists too
    task_id = await producer.enqueue(Task(func=tasks.add, args=(1, 2)))
    assert await _kill_clients(raw, queue) >= 2
    await asyncio.sleep(0.1)

    async def get() -> Task | None:
        for _ in range(3):
            try:
                return await queue.get_task(task_id)
            except BackendError:
                continue
        raise AssertionError("the queue did not recover")

    assert (await get()) is not None
    await queue.wait_for_work(["default"], 2.0)  # the lost subscription is renewed
    assert await queue.dequeue() is not None
    sleeper = asyncio.create_task(queue.wait_for_work(["default"], 10.0))
    await asyncio.sleep(0.1)
    await producer.enqueue(Task(func=tasks.add, args=(1, 2)))
    await asyncio.wait_for(sleeper, PROMPT)


async def test_calls_succeed_after_the_server_forgot_its_scripts(
    make_queue: QueueFactory, raw: Any
) -> None:
    # As after a restart without persistence: the scripts are loaded again, nothing is lost.
    queue = await make_queue()
    first = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
    await raw.script_flush()
    second = await queue.enqueue(Task(func=tasks.add, args=(3, 4)))
    assert {t.id for t in await queue.list_tasks()} == {first, second}
    await raw.script_flush()
    claimed = await queue.dequeue_many("default", 5)
    assert sorted(t.id for t in claimed) == sorted([first, second])
    # A batch of several pipelined insert calls, each refused and then run again, in order.
    await raw.script_flush()
    batch = await queue.enqueue_many([Task(func=tasks.add, args=(i, i)) for i in range(250)])
    claimed = await queue.dequeue_many("default", 300)
    assert [t.id for t in claimed] == batch


async def test_a_batch_whose_later_calls_cannot_be_built_leaves_no_reply_behind(
    make_queue: QueueFactory,
) -> None:
    # Calls are sent as they are built: if building one fails, the replies to those already
    # sent must not be read as the answers to the next call.
    queue = await make_queue()
    known = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
    assert isinstance(queue, RedisTaskQueue)

    def calls() -> Any:
        yield ["no-such-task"]
        raise RuntimeError("cannot build the next call")

    with pytest.raises(RuntimeError, match="cannot build"):
        await queue._run_each("get", calls())
    found = await queue.get_task(known)
    assert found is not None and found.id == known and found.args == (1, 2)
    assert await queue.get_task("no-such-task") is None


async def test_a_call_cancelled_while_awaiting_its_reply_leaves_no_reply_behind(
    make_queue: QueueFactory,
) -> None:
    # A reply left on the connection would be read as the answer to the next call.
    queue = await make_queue()
    known = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
    for _ in range(5):
        call = asyncio.create_task(queue.enqueue(Task(func=tasks.add, args=(5, 6))))
        await asyncio.sleep(0)  # sent; now waiting for the reply
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        found = await queue.get_task(known)
        assert found is not None and found.id == known and found.args == (1, 2)
        assert await queue.get_task("no-such-task") is None
    assert len(await queue.list_tasks()) <= 6


async def test_the_first_calls_after_the_server_closed_its_connections_succeed(
    make_queue: QueueFactory, raw: Any
) -> None:
    # A connection the server closed is found before it is used (as after a restart), not
    # by failing a caller's command.
    queue = await make_queue()
    first = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
    for _ in range(3):
        assert await _kill_clients(raw, queue) >= 1
        await asyncio.sleep(0.1)  # the closes reach the client (nothing to wait on here)
        assert (await queue.get_task(first)) is not None
        second = await queue.enqueue(Task(func=tasks.add, args=(3, 4)))
        assert {t.id for t in await queue.list_tasks()} >= {first, second}
