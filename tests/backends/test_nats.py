"""What is specific to the NATS JetStream backend: claims over separate connections and
processes, read-after-write across connections, watcher wake-ups, key encoding, the bucket
layout and what drop removes, password hygiene, and recovery after an outage."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

import omniq
import omniq.queue.base as queue_base
from omniq import BackendError, Task, TaskStatus, WorkerPool
from omniq.queue.base import BaseTaskQueue, Claim
from omniq.queue.nats import NATSTaskQueue
from tests.backends.outage import Outage
from tests.conformance import tasks
from tests.conftest import NATS_URL, QueueFactory, new_namespace, require_server
from tests.helpers import FALLBACK, PROMPT, eventually
from tests.processes import ROOT
from tests.servers import free_port

SECRET = "S3cret-Pa55w0rd"


@pytest.fixture
def backend() -> str:
    return "nats"


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    """A plain JetStream context on the test server, for looking at streams and keys."""
    require_server("nats")
    import nats

    client = await nats.connect(NATS_URL)
    yield client.jetstream()
    await client.close()


async def stream_names(js: Any) -> set[str]:
    return {info.config.name for info in await js.streams_info()}


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
    assert (await second.stats()).running == 600


async def test_worker_processes_never_share_a_task(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    ids = await queue.enqueue_many([Task(func=tasks.add, args=(i, i)) for i in range(300)])
    script = (
        "import asyncio, sys\n"
        "from omniq.queue.nats import NATSTaskQueue\n"
        "async def main():\n"
        "    async with NATSTaskQueue([sys.argv[1]], namespace=sys.argv[2]) as q:\n"
        "        while batch := await q.dequeue_many('default', 5):\n"
        "            print('\\n'.join(t.id for t in batch), flush=True)\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, NATS_URL, queue.namespace, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    claimed = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        claimed += out.decode().split()
    assert sorted(claimed) == sorted(ids)


async def test_reads_and_claims_see_another_connections_writes_at_once(
    make_queue: QueueFactory,
) -> None:
    producer, consumer = await make_queue(), await make_queue()
    for i in range(20):
        task_id = await producer.enqueue(Task(func=tasks.add, args=(i, i), priority=i % 3))
        assert (await consumer.stats()).pending == 1
        assert [t.id for t in await consumer.list_tasks()][-1] == task_id
        claimed = await consumer.dequeue()
        assert claimed is not None and claimed.id == task_id
        await consumer.complete(task_id, i, lease=claimed.lease)
        assert await producer.get_result(task_id, timeout=2) == i
    await producer.pause("default")
    await producer.enqueue(Task(func=tasks.add, args=(1, 1)))
    assert await consumer.dequeue() is None, "a pause from another connection holds at once"
    assert (await consumer.stats("default")).paused


async def test_resume_from_another_connection_wakes_the_waiter(make_queue: QueueFactory) -> None:
    waiter, producer = await make_queue(), await make_queue()
    await producer.pause("default")
    await producer.enqueue(Task(func=tasks.add, args=(1, 2)))
    assert await waiter.dequeue() is None
    sleeper = asyncio.create_task(waiter.wait_for_work(["default"], 10.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await producer.resume("default")
    await asyncio.wait_for(sleeper, FALLBACK)
    assert time.monotonic() - started < PROMPT
    assert await waiter.dequeue() is not None


async def test_a_writer_follows_the_bucket_only_once_it_reads_the_index(
    make_queue: QueueFactory,
) -> None:
    writer, other = await make_queue(), await make_queue()
    assert isinstance(writer, NATSTaskQueue)
    ids = await writer.enqueue_many([Task(func=tasks.add, args=(i, i)) for i in range(50)])
    await other.enqueue(Task(func=tasks.add, args=(0, 0), id="other:1"))
    assert writer._sub is None and not writer._index.rows, "enqueueing needs no watcher"
    got = await writer.get_task(ids[0])
    assert got is not None and got.args == (0, 0)
    assert writer._sub is None and not writer._index.rows, "reading by id needs none either"
    assert (await writer.stats("default")).pending == 51  # an index read starts following
    assert writer._sub is not None and len(writer._index.rows) == 51
    await other.enqueue(Task(func=tasks.add, args=(1, 1), id="other:2"))
    assert (await writer.stats("default")).pending == 52


async def test_a_dead_watcher_is_rebuilt_by_the_next_barrier(make_queue: QueueFactory) -> None:
    queue, producer = await make_queue(), await make_queue()
    assert isinstance(queue, NATSTaskQueue)
    await queue.stats()  # reading the index starts the watcher
    await queue._sub.unsubscribe()  # the index stops following the bucket
    task_id = await producer.enqueue(Task(func=tasks.add, args=(1, 2)))
    started = time.monotonic()
    claimed = await queue.dequeue()
    assert claimed is not None and claimed.id == task_id
    assert time.monotonic() - started < 3
    sleeper = asyncio.create_task(queue.wait_for_work(["default"], 10.0))
    await asyncio.sleep(0.05)
    await producer.enqueue(Task(func=tasks.add, args=(1, 2)))
    await asyncio.wait_for(sleeper, PROMPT)


async def test_get_result_takes_the_end_from_the_watched_bucket(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No fallback re-read within the test: on a loaded machine the watched end can take longer
    # than the first 5 ms pause, and that re-read would be counted as a fetch.
    monkeypatch.setattr(queue_base, "RESULT_POLL", (8.0, 8.0))
    waiter, worker = await make_queue(), await make_queue()
    assert isinstance(waiter, NATSTaskQueue)
    fetched: list[str] = []
    fetch = waiter._fetch

    async def counted(keys: Sequence[str]) -> dict[str, tuple[int, bytes | None]]:
        fetched.extend(keys)
        return await fetch(keys)

    # A first wait starts the watcher (whose catch-up wakes it once); counted from then on.
    first = await waiter.enqueue(Task(func=tasks.add, args=(1, 1)))
    assert await worker.cancel(first)
    with pytest.raises(omniq.TaskCancelledError):
        await waiter.get_result(first, timeout=10)
    waiter._fetch = counted  # type: ignore[method-assign]
    for i in range(3):
        task_id = await waiter.enqueue(Task(func=tasks.add, args=(i, 10)))
        result = asyncio.create_task(waiter.get_result(task_id, timeout=10))
        await asyncio.sleep(0)  # one step: it has started its first read
        assert await worker.cancel(task_id)  # the task's only change: it ends
        with pytest.raises(omniq.TaskCancelledError):
            await asyncio.wait_for(result, 10)
    # One read each, before the end; the end itself came with the watched change.
    assert len(fetched) == 3, fetched


class _CountingNATS(NATSTaskQueue):
    claims = 0

    async def claim(self, queue_name: str, limit: int, *, worker_id: str | None = None) -> Claim:
        self.claims += 1
        return await super().claim(queue_name, limit, worker_id=worker_id)


async def test_an_idle_worker_claims_once_per_arrival() -> None:
    # A short claim that lost no compare-and-set race found nothing else due: no second ask.
    require_server("nats")
    namespace = new_namespace()
    consumer = _CountingNATS(NATS_URL, namespace=namespace)
    producer = NATSTaskQueue(NATS_URL, namespace=namespace)
    async with consumer, producer:
        try:
            pool = WorkerPool(consumer, concurrency=4, handle_signals=False, idle_timeout=30,
                              imports=[tasks.__name__])
            runner = asyncio.create_task(pool.run())
            await eventually(lambda: consumer.claims >= 1)
            before = consumer.claims
            for i in range(5):
                task_id = await producer.enqueue(Task(func=tasks.add, args=(i, 1)))
                assert await producer.get_result(task_id, timeout=10) == i + 1
            await pool.stop()
            await asyncio.wait_for(runner, 10)
            assert consumer.claims - before <= 5 + 2, consumer.claims - before
        finally:
            await producer.drop_namespace()


async def test_ids_kv_keys_cannot_hold_round_trip(queue: BaseTaskQueue) -> None:
    ids = ["a:b.c", "ends.", "x-1_2:3.4", "9", "urn:uuid:1234"]
    for i, task_id in enumerate(ids):
        await queue.enqueue(Task(func=tasks.add, args=(i, i), id=task_id))
    await queue.enqueue(Task(func=tasks.add, args=(0, 0), id="child:1", depends_on=["a:b.c"]))
    assert [t.id for t in await queue.list_tasks(status="pending")] == ids
    claimed = await queue.dequeue_many("default", 10)
    assert [t.id for t in claimed] == ids
    await queue.complete("a:b.c", 0, lease=claimed[0].lease)
    child = await queue.get_task("child:1")
    assert child is not None and child.status is TaskStatus.PENDING
    assert await queue.delete_task("ends.") and await queue.get_task("ends.") is None
    assert await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="ends.")) == "ends."
    again = await queue.get_task("ends.")
    assert again is not None and again.status is TaskStatus.PENDING and again.args == (1, 1)


async def test_records_live_in_the_namespace_bucket(queue: BaseTaskQueue, raw: Any) -> None:
    await queue.enqueue(Task(func=tasks.add, args=(1, 2), id="job:1.a"))
    kv = await raw.key_value(f"OMNIQ_{queue.namespace}")
    entry = await kv.get("t.job=1/a")
    assert entry.value and entry.revision


async def test_drop_removes_only_its_own_namespace(make_queue: QueueFactory, raw: Any) -> None:
    mine = await make_queue()
    theirs = await make_queue(namespace=f"{mine.namespace}_x")  # shares our name as a prefix
    sentinel = f"omniq_sentinel_{uuid.uuid4().hex[:10]}"
    kv = await raw.create_key_value(bucket=sentinel)
    try:
        await kv.put("keep", b"1")
        await mine.enqueue(Task(func=tasks.add, args=(1, 2), id="mine"))
        await theirs.enqueue(Task(func=tasks.add, args=(1, 2), id="theirs"))
        before = await stream_names(raw)
        assert {f"KV_OMNIQ_{mine.namespace}", f"KV_OMNIQ_{theirs.namespace}"} <= before

        await mine.drop_namespace()
        after = await stream_names(raw)
        assert after == before - {f"KV_OMNIQ_{mine.namespace}"}
        assert (await kv.get("keep")).value == b"1"
        assert await theirs.get_task("theirs") is not None
        assert (await theirs.stats()).pending == 1
        # The dropped namespace starts empty when used again.
        assert await mine.get_task("mine") is None
        assert (await mine.stats()).total == 0
    finally:
        await raw.delete_key_value(sentinel)


async def test_a_bucket_created_again_elsewhere_is_read_afresh(make_queue: QueueFactory) -> None:
    # The claim's barrier reads the bucket's creation time: a new one means the index is stale.
    watcher = await make_queue()
    other = await make_queue(namespace=watcher.namespace)
    await watcher.enqueue(Task(func=tasks.add, args=(1, 1), id="old"))
    assert (await watcher.stats()).pending == 1  # the index follows the bucket now
    await other.drop_namespace()
    await other.enqueue(Task(func=tasks.add, args=(2, 2), id="new"))
    assert [t.id for t in await watcher.dequeue_many("default", 5)] == ["new"]
    assert await watcher.get_task("old") is None


async def test_a_claim_on_a_deleted_bucket_fails_and_the_next_call_creates_it(
    make_queue: QueueFactory, raw: Any
) -> None:
    queue = await make_queue()
    await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="gone"))
    assert (await queue.stats()).pending == 1
    await raw.delete_key_value(f"OMNIQ_{queue.namespace}")
    with pytest.raises(BackendError, match="NotFoundError"):
        await queue.dequeue_many("default", 5)
    await queue.enqueue(Task(func=tasks.add, args=(2, 2), id="new"))
    assert [t.id for t in await queue.dequeue_many("default", 5)] == ["new"]


def _no_secret(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    assert SECRET not in text and SECRET not in repr(exc) and SECRET not in str(exc)


async def test_password_never_in_repr_or_errors() -> None:
    port = free_port()
    for url in (f"nats://alice:{SECRET}@127.0.0.1:{port}", f"nats://{SECRET}@127.0.0.1:{port}"):
        queue = NATSTaskQueue([url], namespace=new_namespace(), connect_timeout=0.5)
        assert SECRET not in repr(queue) and "***" in repr(queue)
        with pytest.raises(BackendError) as info:
            await queue.connect()
        _no_secret(info.value)
        with pytest.raises(BackendError) as info:
            await queue.get_task("x")
        _no_secret(info.value)
    via_url = omniq.connect(f"nats://bob:{SECRET}@127.0.0.1:{port}?namespace=n1")
    assert SECRET not in repr(via_url)


async def test_not_connected_is_a_backend_error() -> None:
    queue = NATSTaskQueue([NATS_URL], namespace=new_namespace())
    with pytest.raises(BackendError, match="not connected"):
        await queue.get_task("x")


async def test_outage_raises_backend_error_then_recovers(make_queue: QueueFactory) -> None:
    require_server("nats")
    host, _, port = NATS_URL.rpartition("/")[2].rpartition("@")[2].partition(":")
    outage = Outage(host, int(port))
    await outage.up()
    producer = await make_queue()
    queue = NATSTaskQueue([f"nats://127.0.0.1:{outage.port}"], namespace=producer.namespace,
                          timeout=0.5, connect_timeout=1)
    await queue.connect()
    try:
        task_id = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
        await outage.down()
        with pytest.raises(BackendError):
            await queue.get_task(task_id)
        with pytest.raises(BackendError):
            await queue.enqueue(Task(func=tasks.add, args=(2, 3)))
        with pytest.raises(BackendError):
            await queue.dequeue()
        # Written while this connection was away: the watcher must catch up after it.
        later = await producer.enqueue(Task(func=tasks.add, args=(3, 4), priority=5))
        await outage.up()

        async def recovered() -> Task | None:
            try:
                return await queue.get_task(task_id)
            except BackendError:
                return None

        assert (await eventually(recovered, timeout=10)).status is TaskStatus.PENDING
        claimed = await eventually(queue.dequeue, timeout=5)
        assert claimed.id == later
        sleeper = asyncio.create_task(queue.wait_for_work(["default"], 10.0))
        await asyncio.sleep(0.05)
        fresh = await producer.enqueue(Task(func=tasks.add, args=(1, 1), priority=9))
        await asyncio.wait_for(sleeper, PROMPT)
        claimed = await queue.dequeue()
        assert claimed is not None and claimed.id == fresh
    finally:
        await queue.close()
        await outage.down()
