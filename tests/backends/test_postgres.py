"""PostgreSQL specifics: concurrent claims across connections and processes, SKIP LOCKED,
LISTEN/NOTIFY wake-ups, outages and reconnects, schema and namespace handling."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from omniq import Schedule, Task, TaskStatus
from omniq.exceptions import BackendError
from omniq.queue.postgres import PostgreSQLTaskQueue
from tests.backends.outage import Outage
from tests.conftest import POSTGRES_DSN, new_namespace, require_server
from tests.helpers import FALLBACK, PROMPT, eventually, woken_by
from tests.processes import ROOT
from tests.servers import free_port

REF = "tests.ledger:record"
Factory = Callable[..., Awaitable[PostgreSQLTaskQueue]]


def job(key: str, **fields: Any) -> Task:
    fields.setdefault("id", key)
    return Task(func=REF, args=("/dev/null", key), **fields)


def with_netloc(dsn: str, netloc: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(netloc=netloc))


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    """Connected PostgreSQL queues sharing one fresh namespace unless told otherwise."""
    require_server("postgres")
    namespace = new_namespace()
    made: list[PostgreSQLTaskQueue] = []

    async def factory(dsn: str = POSTGRES_DSN, **options: Any) -> PostgreSQLTaskQueue:
        options.setdefault("namespace", namespace)
        queue = PostgreSQLTaskQueue(dsn, **options)
        made.append(queue)
        await queue.connect()
        return queue

    yield factory
    for queue in made:
        await queue.close()
    conn = await admin()
    try:
        for ns in {namespace, *(q.namespace for q in made)}:
            await conn.execute(" ".join(
                f'DROP TABLE IF EXISTS "{ns}_{t}";' for t in ("tasks", "deps", "queues", "meta")))
    finally:
        await conn.close()


async def admin() -> Any:
    return await asyncpg.connect(POSTGRES_DSN)


async def terminate(application_name: str, *, count_only: bool = False) -> int:
    """Kill the server backends of ``application_name`` (or just count them); how many."""
    what = "count(*)" if count_only else "count(pg_terminate_backend(pid))"
    conn = await admin()
    try:
        return int(await conn.fetchval(
            f"SELECT {what} FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()", application_name))
    finally:
        await conn.close()


# -- claiming ---------------------------------------------------------------------------------


async def test_two_connections_claiming_concurrently_never_share_a_task(make: Factory) -> None:
    first, second = await make(), await make()
    ids = await first.enqueue_many([job(f"k{i:03d}") for i in range(300)])
    claimed: list[str] = []

    async def drain(queue: PostgreSQLTaskQueue) -> None:
        while batch := await queue.dequeue_many("default", 5):
            claimed.extend(t.id for t in batch)

    await asyncio.gather(*(drain(q) for q in (first, second) for _ in range(6)))
    assert sorted(claimed) == sorted(ids), "every task claimed exactly once"


async def test_worker_processes_claiming_concurrently_never_share_a_task(make: Factory) -> None:
    queue = await make()
    ids = await queue.enqueue_many([job(f"p{i:03d}") for i in range(400)])
    script = (
        "import asyncio, sys\n"
        "from omniq.queue.postgres import PostgreSQLTaskQueue\n"
        "async def main():\n"
        "    async with PostgreSQLTaskQueue(sys.argv[1], namespace=sys.argv[2]) as q:\n"
        "        while batch := await q.dequeue_many('default', 7):\n"
        "            print('\\n'.join(t.id for t in batch), flush=True)\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, POSTGRES_DSN, queue.namespace, cwd=ROOT,
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
    assert (await queue.stats()).running == 400


async def test_large_batches_are_split_into_statements(make: Factory, monkeypatch: Any) -> None:
    import omniq.queue.postgres as module

    monkeypatch.setattr(module, "_CHUNK_ROWS", 3)
    queue = await make()
    await queue.enqueue(job("c03"))
    batch = [job(f"c{i:02d}", depends_on=["c00"] if i else []) for i in range(10)]
    assert await queue.enqueue_many(batch) == [f"c{i:02d}" for i in range(10)]
    listed = [t.id for t in await queue.list_tasks()]
    assert listed == ["c03"] + [f"c{i:02d}" for i in range(10) if i != 3], "enqueue order kept"
    assert await queue._dependents(["c00"]) == {f"c{i:02d}" for i in range(1, 10) if i != 3}


async def test_a_batch_streams_through_copy_with_every_value_intact(
        make: Factory, monkeypatch: Any) -> None:
    import omniq.queue.postgres as module

    monkeypatch.setattr(module, "_COPY_ROWS", 3)
    sent: list[bytes] = []
    copy_data = module._copy_data

    async def recorded(tasks: list[Task], woken: set[str]) -> AsyncIterator[bytes]:
        async for chunk in copy_data(tasks, woken):
            sent.append(chunk)
            yield chunk

    monkeypatch.setattr(module, "_copy_data", recorded)
    queue = await make()
    awkward = ("tab\there", "new\nline\r", "back\\slash \\N \\x00", "\\.", "ünï €", b"\x00\t")
    later = datetime(2100, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    batch = [Task(func=REF, id=f"w.{i}:x-{i}", args=(awkward[i % 6], i),
                  kwargs={"k\t": awkward[(i + 1) % 6]}, priority=i - 4,
                  queue_name="a.b-c" if i % 2 else "default") for i in range(7)]
    batch.append(Task(func=REF, id="later", args=("x", 1), schedule=Schedule(run_at=later)))
    assert await queue.enqueue_many(batch) == [t.id for t in batch]
    assert len(sent) == 3, "8 rows sent 3 at a time"
    stored = {t.id: t for t in await queue.list_tasks()}
    assert list(stored) == [t.id for t in batch], "stored in the order given"
    for task in batch:
        got = stored[task.id]
        assert (got.args, got.kwargs, got.priority, got.queue_name) == (
            task.args, task.kwargs, task.priority, task.queue_name)
    assert stored["later"].status is TaskStatus.SCHEDULED and stored["later"].run_at == later
    claimed = await queue.dequeue_many("a.b-c", 10)
    assert [t.id for t in claimed] == ["w.5:x-5", "w.3:x-3", "w.1:x-1"], "by priority"
    claimed = await queue.dequeue_many("default", 10)
    assert [t.id for t in claimed] == ["w.6:x-6", "w.4:x-4", "w.2:x-2", "w.0:x-0"], "not later"
    monkeypatch.setattr(module, "_COPY_BYTES", 1)
    assert await queue.enqueue_many([job("big1"), job("big2")]) == ["big1", "big2"]
    assert len(sent) == 5, "a part as soon as it reaches _COPY_BYTES"


async def test_copy_escapes_the_free_text_columns(make: Factory) -> None:
    from msgspec.structs import replace

    from omniq.queue import rules

    queue = await make()
    now = datetime.now(UTC)
    odd = "host\t1 \\N back\\slash\nnext\rline"
    rows = [replace(rules.initial(job(f"e{i}"), now, func=REF), status=TaskStatus.RUNNING,
                    worker_id=odd + str(i), lease=f"lease\\{i}", started_at=now, attempts=1)
            for i in range(2)]
    assert await queue._insert(rows) == [True, True]
    got = await queue._get(["e0", "e1"])
    for i in range(2):
        assert (got[f"e{i}"].worker_id, got[f"e{i}"].lease) == (odd + str(i), f"lease\\{i}")
        assert got[f"e{i}"].started_at == now and got[f"e{i}"].attempts == 1


async def test_claim_skips_rows_locked_by_another_transaction(make: Factory) -> None:
    queue = await make()
    await queue.enqueue_many([job("top", priority=9), job("a"), job("b")])
    conn = await admin()
    try:
        async with conn.transaction():
            await conn.execute(
                f"SELECT 1 FROM \"{queue.namespace}_tasks\" WHERE id = 'top' FOR UPDATE")
            batch = await asyncio.wait_for(queue.dequeue_many("default", 5), 2)
            assert [t.id for t in batch] == ["a", "b"], "locked row skipped, nobody waits"
    finally:
        await conn.close()
    task = await queue.dequeue()
    assert task is not None and task.id == "top"


async def test_a_batch_is_claimed_in_one_statement(make: Factory, monkeypatch: Any) -> None:
    queue = await make()
    await queue.enqueue_many([job(f"b{i}") for i in range(50)])
    statements: list[str] = []
    fetch = queue._fetch

    async def counting(sql: str, *args: Any, **options: Any) -> list[Any]:
        statements.append(sql)
        return await fetch(sql, *args, **options)

    monkeypatch.setattr(queue, "_fetch", counting)
    batch = await queue.dequeue_many("default", 50)
    assert len(batch) == 50 and [t.id for t in batch] == [f"b{i}" for i in range(50)]
    claims = [s for s in statements if "SKIP LOCKED" in s]
    assert len(claims) == 1 and len(statements) == 1, "the claim checks the pause itself"


async def test_claim_walks_the_ready_index_without_sorting(make: Factory) -> None:
    queue = await make()
    await queue.enqueue_many([job(f"i{i}", priority=i % 3) for i in range(3000)])
    table = f'"{queue.namespace}_tasks"'
    conn = await admin()
    try:
        await conn.execute(f"ANALYZE {table}")
        plan = "\n".join(r[0] for r in await conn.fetch(
            f"EXPLAIN SELECT seq FROM {table} WHERE queue_name = 'default' "
            "AND ready_at IS NOT NULL AND ready_at <= $1 ORDER BY priority DESC, ready_at, seq "
            "LIMIT 10 FOR UPDATE SKIP LOCKED", time.time()))
    finally:
        await conn.close()
    assert f"{queue.namespace}_ready" in plan and "Sort" not in plan, plan


# -- LISTEN/NOTIFY ------------------------------------------------------------------------------


async def listening(queue: PostgreSQLTaskQueue) -> None:
    """Start the queue's listener (the first wait returns once it is up)."""
    await asyncio.wait_for(queue.wait_for_work(["default"], 5), 3)


async def test_notify_wakes_an_idle_waiter_in_another_connection(make: Factory) -> None:
    waiter, producer = await make(), await make()
    await listening(waiter)
    assert await woken_by(waiter, lambda: producer.enqueue(job("x"))) < PROMPT
    assert await waiter.dequeue() is not None


async def test_transitions_that_make_work_ready_notify(make: Factory) -> None:
    waiter, producer = await make(), await make()
    await producer.pause("default")
    await producer.enqueue(job("held", max_retries=1, retry_delay=30))
    await listening(waiter)  # after the enqueue, whose own NOTIFY would wake it
    assert await woken_by(waiter, lambda: producer.resume("default")) < PROMPT
    task = await producer.dequeue()
    assert task is not None
    # A retry is due later, but a sleeping worker must learn its new wake-up time.
    assert await woken_by(waiter, lambda: producer.fail("held", "E", lease=task.lease)) < PROMPT
    stored = await waiter.get_task("held")
    assert stored is not None and stored.status is TaskStatus.RETRYING


async def test_namespaces_do_not_wake_each_other(make: Factory) -> None:
    waiter = await make()
    other = await make(namespace=new_namespace())
    await listening(waiter)
    waiting = asyncio.create_task(waiter.wait_for_work(["default"], 0.6))
    await asyncio.sleep(0.1)
    await other.enqueue(job("elsewhere"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await waiting


async def test_waiters_wake_only_for_their_queues(make: Factory) -> None:
    waiter, producer = await make(), await make()
    await listening(waiter)
    waiting = asyncio.create_task(waiter.wait_for_work(["default"], 0.6))
    await asyncio.sleep(0.1)
    await producer.enqueue(job("mail", queue_name="emails"))
    await asyncio.sleep(0.2)
    assert not waiting.done(), "work in another queue does not wake this worker"
    await waiting
    assert await woken_by(waiter, lambda: producer.enqueue(job("mail2", queue_name="emails")),
                          queue_name="emails") < PROMPT


async def test_a_notify_that_arrives_between_claim_and_wait_is_not_lost(make: Factory) -> None:
    waiter, producer = await make(), await make()
    await listening(waiter)
    assert await waiter.dequeue() is None  # the worker looked: nothing to do
    await producer.enqueue(job("racy"))  # ... and work arrives before it starts waiting
    await asyncio.sleep(0.1)
    start = time.monotonic()
    await waiter.wait_for_work(["default"], FALLBACK)
    assert time.monotonic() - start < PROMPT
    assert await waiter.dequeue() is not None


async def test_waiting_for_results_shares_one_listener(make: Factory) -> None:
    queue = await make()
    first, second = await queue.enqueue_many([job("r1"), job("r2")])
    with pytest.raises(TimeoutError):
        await queue.get_result(first, timeout=0.2)
    listener = queue._listener
    assert listener is not None and not listener.is_closed()
    with pytest.raises(TimeoutError):
        await queue.get_result(second, timeout=0.2)
    assert queue._listener is listener, "each wait opened a connection of its own"


async def test_idle_worker_pool_starts_work_from_another_process_promptly(make: Factory) -> None:
    from omniq import WorkerPool
    from tests.conformance import tasks

    worker_side, producer = await make(), await make()
    pool = WorkerPool(worker_side, concurrency=2, handle_signals=False, idle_timeout=FALLBACK)
    running = asyncio.create_task(pool.run())
    try:
        await asyncio.sleep(0.5)  # idle, listening; its own fallback wake-up is 10 s away
        delays = []
        for i in range(3):
            task_id = await producer.enqueue(Task(func=tasks.add, args=(i, i)))
            assert await producer.get_result(task_id, timeout=5) == 2 * i
            done = await producer.get_task(task_id)
            assert done is not None and done.started_at and done.created_at
            delays.append((done.started_at - done.created_at).total_seconds())
            await asyncio.sleep(0.3)
        assert max(delays) < PROMPT, delays
    finally:
        await pool.stop()
        await running


async def test_listener_reconnects_after_its_connection_is_killed(make: Factory) -> None:
    name = f"omniq-{new_namespace()}"
    waiter = await make(application_name=name)
    producer = await make()
    await listening(waiter)
    waiting = asyncio.create_task(waiter.wait_for_work(["default"], 10))
    await asyncio.sleep(0.1)
    assert await terminate(name) >= 1
    await asyncio.wait_for(waiting, 3)  # a lost listener wakes the worker so it looks again
    await listening(waiter)
    assert await woken_by(waiter, lambda: producer.enqueue(job("after"))) < PROMPT


# -- errors and recovery ------------------------------------------------------------------------


def assert_no_secret(exc: BaseException, secret: str) -> None:
    text = "".join(traceback.format_exception(exc))
    assert secret not in text, text


async def test_password_never_shows_in_repr_or_errors(make: Factory) -> None:
    secret = "s3cr%40t-pw"
    dead = with_netloc(POSTGRES_DSN, f"postgres:{secret}@127.0.0.1:{free_port()}")
    queue = PostgreSQLTaskQueue(dead + "?password=hunter2", connect_timeout=2)
    for text in (repr(queue), queue.dsn):
        assert "s3cr" not in text and "hunter2" not in text and "***" in text
    with pytest.raises(BackendError) as info:
        await queue.connect()
    assert_no_secret(info.value, "s3cr")
    assert_no_secret(info.value, "hunter2")
    assert "***" in str(info.value)
    with pytest.raises(ValueError) as bad:
        PostgreSQLTaskQueue(with_netloc(POSTGRES_DSN, f"postgres:{secret}@127.0.0.1:port"))
    assert_no_secret(bad.value, "s3cr")
    # trust auth ignores the password: a working connection must not reveal it either
    live = await make(with_netloc(POSTGRES_DSN, f"postgres:{secret}@" + urlsplit(POSTGRES_DSN)
                                  .netloc.rpartition("@")[2]))
    assert "s3cr" not in repr(live)


async def test_killed_pool_connections_are_replaced(make: Factory) -> None:
    name = f"omniq-{new_namespace()}"
    queue = await make(application_name=name, min_pool_size=4, max_pool_size=4)
    task_id = await queue.enqueue(job("survivor"))
    await asyncio.gather(*(queue.get_task(task_id) for _ in range(8)))  # open all four
    assert await terminate(name) == 4
    # A read that meets a dead connection renews the whole pool and tries again.
    task = await queue.get_task(task_id)
    assert task is not None and task.id == task_id
    await queue.enqueue(job("after-read"))
    # The pool refills to its floor in the background; kill it again once it has.
    async def refilled() -> bool:
        return await terminate(name, count_only=True) == 4

    await eventually(refilled, timeout=10)
    assert await terminate(name) == 4
    # A write is not repeated blindly: at worst this one fails, as a BackendError ...
    try:
        await queue.enqueue(job("maybe"))
    except BackendError as exc:
        assert "lost connection" in str(exc)
    # ... and the next ones run on fresh connections.
    for i in range(4):
        await queue.enqueue(job(f"fresh{i}"))
    assert (await queue.stats()).pending >= 6


async def test_server_outage_raises_backend_error_then_recovers(make: Factory) -> None:
    target = urlsplit(POSTGRES_DSN)
    outage = Outage(target.hostname or "127.0.0.1", target.port or 5432)
    await outage.up()
    user = target.netloc.rpartition("@")[0]
    dsn = with_netloc(POSTGRES_DSN, f"{user}@127.0.0.1:{outage.port}")
    queue = await make(dsn, connect_timeout=2)
    task_id = await queue.enqueue(job("before"))
    await listening(queue)
    await outage.down()
    await asyncio.sleep(0.05)
    with pytest.raises(BackendError):
        await queue.get_task(task_id)
    with pytest.raises(BackendError):
        await queue.enqueue(job("during"))
    with pytest.raises(BackendError):
        await asyncio.wait_for(queue.wait_for_work(["default"], 5), 3)
    await outage.up()
    try:
        task = await queue.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PENDING
        await listening(queue)
        claimed = await queue.dequeue()
        assert claimed is not None and claimed.id == task_id
    finally:
        await queue.close()
        await outage.down()


async def test_not_connected_is_a_backend_error() -> None:
    queue = PostgreSQLTaskQueue(POSTGRES_DSN, namespace=new_namespace())
    with pytest.raises(BackendError, match="not connected"):
        await queue.get_task("x")


# -- schema and namespaces ----------------------------------------------------------------------


async def test_schema_is_idempotent_and_versioned(make: Factory) -> None:
    queue = await make()
    await queue.enqueue(job("same"))
    await queue.close()
    await queue.connect()
    again = await make()
    assert await again.enqueue(job("same")) == "same"
    assert (await again.stats()).total == 1
    conn = await admin()
    try:
        meta = f'"{queue.namespace}_meta"'
        assert await conn.fetchval(
            f"SELECT value FROM {meta} WHERE key = 'schema_version'") == "2"
        await conn.execute(f"UPDATE {meta} SET value = '99' WHERE key = 'schema_version'")
    finally:
        await conn.close()
    newer = PostgreSQLTaskQueue(POSTGRES_DSN, namespace=queue.namespace)
    with pytest.raises(BackendError, match="schema version 99"):
        await newer.connect()
    assert newer._pool is None, "a failed connect leaves nothing open"


async def _indexes(conn: Any, namespace: str) -> set[str]:
    rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1",
                            f"{namespace}_tasks")
    return {r[0].removeprefix(f"{namespace}_") for r in rows}


async def test_a_version_1_namespace_is_upgraded_in_place(make: Factory) -> None:
    queue = await make()
    later = time.time() + 3600
    await queue.enqueue(job("pending"))
    await queue.enqueue(job("scheduled", schedule=Schedule(
        run_at=datetime.fromtimestamp(later, UTC))))
    await queue.close()
    conn = await admin()
    ns, tasks = queue.namespace, f'"{queue.namespace}_tasks"'
    try:
        # What version 1 left: the next-due index over every task with a ready time.
        await conn.execute(
            f'DROP INDEX "{ns}_later"; CREATE INDEX "{ns}_due" ON {tasks} (queue_name, ready_at)'
            f" WHERE ready_at IS NOT NULL; UPDATE \"{ns}_meta\" SET value = '1'"
            " WHERE key = 'schema_version'")
        upgraded = await make()
        assert {"due", "later"} & await _indexes(conn, ns) == {"later"}
        assert await conn.fetchval(
            f"SELECT value FROM \"{ns}_meta\" WHERE key = 'schema_version'") == "2"
    finally:
        await conn.close()
    assert abs((await upgraded.next_ready_at(["default"]) or 0) - later) < 0.01
    claimed = await upgraded.dequeue()
    assert claimed is not None and claimed.id == "pending"
    assert (await upgraded.stats()).total == 2


async def test_concurrent_first_connects_create_the_schema_once(make: Factory) -> None:
    namespace = new_namespace()
    queues = await asyncio.gather(*(make(namespace=namespace) for _ in range(6)))
    assert await queues[0].enqueue(job("one")) and (await queues[5].stats()).pending == 1


async def test_drop_removes_only_its_own_namespace(make: Factory) -> None:
    mine = await make(namespace=f"Mixed-Case_{new_namespace()}")
    theirs = await make(namespace=mine.namespace.lower())
    await mine.enqueue(job("m"))
    await theirs.enqueue(job("t"))
    assert (await mine.stats()).total == 1 and (await theirs.stats()).total == 1
    await mine.drop_namespace()
    conn = await admin()
    try:
        left = {r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE $1 OR tablename LIKE $2",
            f"{mine.namespace}%", f"{theirs.namespace}%")}
    finally:
        await conn.close()
    assert left == {f"{theirs.namespace}_{t}" for t in ("tasks", "deps", "queues", "meta")}
    assert (await theirs.stats()).total == 1
