"""FileTaskQueue on local disk: several processes, SIGKILLed writers, paths, leftovers."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import signal
import sys
import time
import zlib
from contextlib import suppress
from pathlib import Path

import pytest

import omniq.queue.file as file_backend
from omniq import BackendError, InvalidTaskError, SerializationError, Task, TaskStatus, connect
from omniq.queue import rules
from omniq.queue.file import FileTaskQueue, read_record
from omniq.serialization import encode
from tests.helpers import PROMPT, woken_by
from tests.processes import ROOT

NS = "filetest"

# Forks a producer per line read ("<tag>"); each enqueues forever (single tasks, batches,
# dependencies) until it is killed, after printing its pid. Forking skips interpreter start-up.
FORK_PRODUCERS = """
import asyncio, os, signal, sys
from omniq import Task
from omniq.queue.file import FileTaskQueue

async def produce(base, tag):
    async with FileTaskQueue(base, namespace="filetest") as queue:
        os.write(1, f"{os.getpid()}\\n".encode())  # one write: producers share the pipe
        n = 0
        while True:
            first = await queue.enqueue(Task(func="m:f", args=(n,), id=f"{tag}-{n}:A"))
            await queue.enqueue_many([
                Task(func="m:f", args=(n, i), priority=i, id=f"{tag}-{n}.{i}",
                     depends_on=[first] if i == 0 else [])
                for i in range(3)
            ])
            n += 1

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
for line in sys.stdin:
    if os.fork() == 0:
        asyncio.run(produce(sys.argv[1], line.strip()))
"""

# Claims until the queue is empty, completing each task; prints the ids it claimed.
CLAIMER = """
import asyncio, json, random, sys
from omniq.queue.file import FileTaskQueue

async def main(base):
    claimed = []
    async with FileTaskQueue(base, namespace="filetest", lease_timeout=120, fsync=False) as queue:
        while tasks := await queue.dequeue_many("default", random.randint(1, 8)):
            for task in tasks:
                claimed.append(task.id)
                await queue.complete(task.id, task.args[0], lease=task.lease)
    print(json.dumps(claimed))

asyncio.run(main(sys.argv[1]))
"""

# Dies by SIGKILL in the middle of applying a journalled write.
DIES_MID_WRITE = """
import asyncio, os, signal, sys
from omniq import Task
from omniq.queue.file import FileTaskQueue

async def main(base):
    queue = FileTaskQueue(base, namespace="filetest")
    await queue.connect()
    store = queue._store
    touch, count = store.touch, [0]
    def dying_touch(rel):
        touch(rel)
        count[0] += 1
        if count[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    store.touch = dying_touch
    await queue.enqueue_many([Task(func="m:f", args=(i,), id=f"j{i}") for i in range(5)])

asyncio.run(main(sys.argv[1]))
"""

# Enqueues five tasks, then dies by SIGKILL halfway through rewriting a record in place as it
# claims them.
DIES_MID_REWRITE = """
import asyncio, os, signal, sys
from omniq import Task
from omniq.queue.file import FileTaskQueue

async def main(base):
    queue = FileTaskQueue(base, namespace="filetest")
    await queue.connect()
    await queue.enqueue_many([Task(func="m:f", args=("x" * 5000,), id=f"j{i}") for i in range(5)])
    store = queue._store
    def dying_rewrite(rel, data):
        store.overwrite(rel, 0, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    store.rewrite = dying_rewrite
    await queue.dequeue_many("default", 5)

asyncio.run(main(sys.argv[1]))
"""

# Claims and completes every task, one at a time, printing "done" at the end.
REWRITER = """
import asyncio, sys
from omniq.queue.file import FileTaskQueue

async def main(base):
    async with FileTaskQueue(base, namespace="filetest", fsync=False) as queue:
        while task := await queue.dequeue("default"):
            await queue.complete(task.id, task.args[0][::-1], lease=task.lease)
    print("done")

asyncio.run(main(sys.argv[1]))
"""

# Takes the lock and holds it until killed.
HOLDS_LOCK = """
import sys, time
from omniq.queue.file import FileTaskQueue

queue = FileTaskQueue(sys.argv[1], namespace="filetest")
with queue._store.lock():
    print("locked", flush=True)
    time.sleep(60)
"""


async def python(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def pending_write(root: Path) -> int:
    """The length of the journalled write left pending in ``root`` (0: none)."""
    return int.from_bytes((root / "journal").read_bytes()[8:16], "big")


def leave_pending(root: Path, data: bytes, *, size: int | None = None, crc: int | None = None
                  ) -> None:
    """Leave ``data`` in ``root``'s journal as a write pending, as a killed writer would (a
    ``size`` or ``crc`` that does not match ``data``: one killed while writing the journal)."""
    size = len(data) if size is None else size
    crc = zlib.crc32(data) if crc is None else crc
    with open(root / "journal", "r+b") as f:
        f.seek(8)
        f.write(size.to_bytes(8, "big") + crc.to_bytes(4, "big") + data)


def records(base: Path) -> list[Path]:
    return [p for p in (base / NS / "tasks").iterdir() if not p.name.startswith(".")]


async def check_consistent(queue: FileTaskQueue) -> list[Task]:
    """Every record decodes, and the indexes agree with the records exactly."""
    root = Path(queue._store.root)  # type: ignore[attr-defined]
    stored = [read_record(str(p)) for p in records(root.parent)]
    listed = await queue.list_tasks(limit=1_000_000)
    assert sorted(t.id for t in listed) == sorted(t.id for t in stored)
    stats = await queue.stats()
    assert stats.total == len(stored)
    for status in TaskStatus:
        assert getattr(stats, status.value) == sum(t.status is status for t in stored)
    ready = {p.name for q in (root / "ready").glob("*") for p in q.iterdir()}
    assert len(ready) == sum(rules.ready_at(t) is not None for t in stored)
    assert pending_write(root) == 0
    return listed


async def test_sigkilled_producers_leave_no_unreadable_task(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(7)
    forker = await python(FORK_PRODUCERS, str(tmp_path))
    assert forker.stdin is not None and forker.stdout is not None
    try:
        for round_ in range(25):
            # Four producers at once, so kills also land while others wait for the lock.
            forker.stdin.write("".join(f"p{round_}x{i}\n" for i in range(4)).encode())
            pids = [int(await asyncio.wait_for(forker.stdout.readline(), 30)) for _ in range(4)]
            for pid in pids:
                await asyncio.sleep(rng.uniform(0.0, 0.03))
                os.kill(pid, signal.SIGKILL)
    finally:
        forker.kill()
        await forker.communicate()
    assert time.monotonic() - started < 60
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        listed = await check_consistent(queue)
        assert len(listed) > 100, "the producers got work done between kills"
        pending = sum(t.status is TaskStatus.PENDING for t in listed)
        claimed = await queue.dequeue_many("default", len(listed) + 1)
        assert len(claimed) == pending
        assert all(t.status is not TaskStatus.PENDING for t in await queue.list_tasks(limit=10**6))


async def test_two_processes_claim_each_of_1000_tasks_once(tmp_path: Path) -> None:
    async with FileTaskQueue(str(tmp_path), namespace=NS, fsync=False) as queue:
        ids = await queue.enqueue_many(
            [Task(func="m:f", args=(i,), id=f"t{i}", priority=i % 3) for i in range(1000)]
        )
    procs = [await python(CLAIMER, str(tmp_path)) for _ in range(2)]
    outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    claimed = [json.loads(out) for out, _ in outputs]
    assert all(claimed), "both processes took part"
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == sorted(ids)
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        await check_consistent(queue)
        tasks = await queue.get_tasks(ids)
        assert {t.status for t in tasks.values()} == {TaskStatus.COMPLETED}
        assert {t.attempts for t in tasks.values()} == {1}


async def test_a_journalled_write_cut_by_sigkill_is_finished_on_open(tmp_path: Path) -> None:
    proc = await python(DIES_MID_WRITE, str(tmp_path))
    await proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert pending_write(tmp_path / NS) > 0
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        listed = await check_consistent(queue)
        assert [t.id for t in listed] == [f"j{i}" for i in range(5)]
        assert [t.id for t in await queue.dequeue_many("default", 10)] == [t.id for t in listed]


async def test_a_record_rewrite_cut_by_sigkill_is_redone_on_open(tmp_path: Path) -> None:
    proc = await python(DIES_MID_REWRITE, str(tmp_path))
    _, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert pending_write(tmp_path / NS) > 0
    torn = []
    for path in records(tmp_path):
        try:
            read_record(str(path))
        except SerializationError:
            torn.append(path.name)
    assert len(torn) == 1, "the claim died rewriting its first record"
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        listed = await check_consistent(queue)
        assert {t.status for t in listed} == {TaskStatus.RUNNING}, "the claim was finished"
        assert all(t.args == ("x" * 5000,) and t.attempts == 1 for t in listed)


async def test_readers_without_the_lock_never_see_a_record_half_rewritten(
    tmp_path: Path,
) -> None:
    # Records of several pages, rewritten in place by another process while this one reads.
    args = {f"t{i}": "".join(random.choices("abcdef", k=12_000)) for i in range(200)}
    async with FileTaskQueue(str(tmp_path), namespace=NS, fsync=False) as queue:
        await queue.enqueue_many([Task(func="m:f", args=(a,), id=i) for i, a in args.items()])
        rewriter = await python(REWRITER, str(tmp_path))
        reads = 0
        while rewriter.returncode is None:
            tasks = await queue.get_tasks(list(args))
            assert len(tasks) == len(args)
            for task in tasks.values():
                assert task.args == (args[task.id],)
                if task.status is TaskStatus.COMPLETED:
                    assert task.result == args[task.id][::-1]
            reads += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(rewriter.wait()), 0.001)
        out, err = await rewriter.communicate()
        assert out == b"done\n", err.decode()[-2000:]
        assert reads > 3, "the reads overlapped the rewrites"
        listed = await check_consistent(queue)
        assert {t.status for t in listed} == {TaskStatus.COMPLETED}


async def test_a_torn_record_is_read_again_under_the_lock_after_recovery(tmp_path: Path) -> None:
    root = tmp_path / NS
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        await queue.enqueue(Task(func="m:f", id="t1"))
        good = (root / "tasks" / "t1.msgpack").read_bytes()
        # As a writer killed mid-rewrite leaves it: its journal pending, the record torn.
        [claimed] = await queue.dequeue_many("default", 1)
        whole = (root / "tasks" / "t1.msgpack").read_bytes()
        ops: list[file_backend.Op] = [("write", "tasks/t1.msgpack", whole)]
        leave_pending(root, encode([1, ops]))
        (root / "tasks" / "t1.msgpack").write_bytes(whole[:20] + good[20:])
        task = await queue.get_task("t1")
        assert task is not None and task.status is TaskStatus.RUNNING
        assert task.lease == claimed.lease
        assert pending_write(root) == 0
        # A torn record with no journal to redo it: an error that names it.
        (root / "tasks" / "t1.msgpack").write_bytes(whole[:-3])
        with pytest.raises(SerializationError, match=r"tasks/t1\.msgpack is torn"):
            await queue.get_task("t1")


async def test_the_lock_of_a_sigkilled_holder_is_released(tmp_path: Path) -> None:
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        holder = await python(HOLDS_LOCK, str(tmp_path))
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"locked\n"
        enqueue = asyncio.ensure_future(queue.enqueue(Task(func="m:f")))
        await asyncio.sleep(0.3)
        assert not enqueue.done(), "writers wait while another process holds the lock"
        holder.send_signal(signal.SIGKILL)
        await holder.communicate()
        task_id = await asyncio.wait_for(enqueue, 5)
        assert await queue.get_task(task_id) is not None


async def test_leftovers_of_a_killed_writer_are_cleaned_on_open(tmp_path: Path) -> None:
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        task_id = await queue.enqueue(Task(func="m:f"))
    root = tmp_path / NS
    old = [root / ".tmp-old", root / "tasks" / ".tmp-old"]
    fresh = root / "tasks" / ".tmp-fresh"
    for path in [*old, fresh]:
        path.write_bytes(b"half a task")
    hour_ago = time.time() - 3600
    for path in old:
        os.utime(path, (hour_ago, hour_ago))
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        assert not any(p.exists() for p in old)
        assert fresh.exists(), "a live writer's temp file is left alone"
        assert [t.id for t in await check_consistent(queue)] == [task_id]


def sequence_of(root: Path, task_id: str) -> int:
    return int.from_bytes((root / "tasks" / f"{task_id}.msgpack").read_bytes()[:8], "big")


async def test_a_torn_journal_is_dropped_and_the_sequence_kept(tmp_path: Path) -> None:
    root = tmp_path / NS
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        await queue.enqueue_many([Task(func="m:f", id="t1"), Task(func="m:f", id="t2")])
    # A writer killed while writing its journal: a length and checksum, and half a write.
    leave_pending(root, b"\x93half a wri", size=60, crc=12345)
    assert pending_write(root) == 60
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        await queue.enqueue(Task(func="m:f", id="t3"))
        assert [t.id for t in await check_consistent(queue)] == ["t1", "t2", "t3"]
    assert [sequence_of(root, i) for i in ("t1", "t2", "t3")] == [1, 2, 3]


async def test_a_whole_but_unreadable_journal_is_an_error_not_skipped(tmp_path: Path) -> None:
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        await queue.enqueue(Task(func="m:f", id="t1"))
    bad = encode([7, [["move", "tasks/t1.msgpack", None]]])
    leave_pending(tmp_path / NS, bad)
    with pytest.raises(BackendError, match=r"unreadable journal .*unknown operation"):
        async with FileTaskQueue(str(tmp_path), namespace=NS):
            pass
    assert pending_write(tmp_path / NS) == len(bad), "left for a human to look at"


async def test_a_layout_1_directory_is_upgraded_with_its_pending_write(tmp_path: Path) -> None:
    root = tmp_path / NS
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        await queue.enqueue_many([Task(func="m:f", id="t1"), Task(func="m:f", id="t2")])
    async with FileTaskQueue(str(tmp_path), namespace="scratch") as scratch:
        stored = await scratch.get_task(await scratch.enqueue(Task(func="m:f", id="t3")))
        assert stored is not None
        # What layout 1 left when its writer died mid-enqueue: `seq` and a bare journal.
        ops: list[file_backend.Op] = []
        scratch._change(ops, 3, None, stored)
        ops.append(("put", "seq", b"3"))
    (root / "format").write_text("omniq-file 1\n")
    (root / "seq").write_text("2")
    (root / "journal").write_bytes(encode(ops))
    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        assert (root / "format").read_text() == f"omniq-file {file_backend.FORMAT}\n"
        assert not (root / "seq").exists()
        await queue.enqueue(Task(func="m:f", id="t4"))
        assert [t.id for t in await check_consistent(queue)] == ["t1", "t2", "t3", "t4"]
    assert [sequence_of(root, f"t{i}") for i in range(1, 5)] == [1, 2, 3, 4]


async def test_a_newer_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / NS).mkdir()
    (tmp_path / NS / "format").write_text(f"omniq-file {file_backend.FORMAT + 1}\n")
    with pytest.raises(BackendError, match=r"layout 3; this OmniQ knows 2 \(upgrade OmniQ\)"):
        async with FileTaskQueue(str(tmp_path), namespace=NS):
            pass


async def test_index_entries_are_hard_links_to_one_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / NS
    link = os.link

    def entries() -> list[Path]:
        return [p for folder in ("ready", "state") for p in (root / folder).rglob("*")
                if p.is_file()]

    async with FileTaskQueue(str(tmp_path), namespace=NS) as queue:
        await queue.enqueue_many([Task(func="m:f", id=f"t{i}") for i in range(3)])
        first = (root / "empty").stat().st_ino
        assert len(entries()) == 6
        assert {p.stat().st_ino for p in entries()} == {first}

        def full(src: str, dst: str) -> None:  # the filesystem's link limit, reached once
            monkeypatch.setattr(os, "link", link)
            raise OSError(errno.EMLINK, "Too many links")

        monkeypatch.setattr(os, "link", full)
        await queue.enqueue(Task(func="m:f", id="t3"))
        second = (root / "empty").stat().st_ino
        assert second != first
        assert {p.stat().st_ino for p in entries() if p.name.endswith("-t3")} == {second}

        def unsupported(src: str, dst: str) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", unsupported)
        await queue.enqueue(Task(func="m:f", id="t4"))
        made = [p for p in entries() if p.name.endswith("-t4")]
        assert len(made) == 2 and second not in {p.stat().st_ino for p in made}
        monkeypatch.setattr(os, "link", link)
        claimed = await queue.dequeue_many("default", 5)
        assert [t.id for t in claimed] == [f"t{i}" for i in range(5)]
        for task in claimed:
            await queue.complete(task.id, None, lease=task.lease)
        listed = await check_consistent(queue)
        assert {t.status for t in listed} == {TaskStatus.COMPLETED}
        assert all(p.stat().st_ino in {first, second} for p in entries())


async def test_ids_and_queue_names_map_to_safe_names_inside_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "base"
    ids = ["job:1", "Job:1", "a.b-c_d", "x" * 128, ":" * 0 + "Z" + ":" * 127]
    async with FileTaskQueue(str(base), namespace=NS) as queue:
        for i, task_id in enumerate(ids):
            await queue.enqueue(Task(func="m:f", id=task_id, queue_name="Mail.out-1",
                                     depends_on=ids[:i]))
        assert set(await queue.get_tasks(ids)) == set(ids), "case and ':' kept apart"
        dependents = await queue._dependents([ids[0]])
        assert dependents == set(ids[1:])
        for bad in ["../x", "a/b", "a..b", ".hidden", "a\\b", ""]:
            with pytest.raises(InvalidTaskError):
                await queue.get_task(bad)
            with pytest.raises(InvalidTaskError):
                Task(func="m:f", id=bad)
        for bad in ["../x", "a/b", "q.", ".q"]:
            with pytest.raises(InvalidTaskError):
                await queue.dequeue(bad)
        for rel in ["../x", "tasks/../../x", "/etc/passwd", "tasks/.tmp-x", "a//b"]:
            with pytest.raises(InvalidTaskError):
                queue._store.read(rel)
        claimed = await queue.dequeue("Mail.out-1")
        assert claimed is not None and claimed.id == "job:1"
    assert [p.name for p in tmp_path.iterdir()] == ["base"]
    names = {p.name for p in (base / NS).rglob("*")}
    assert all(n.isascii() and ":" not in n and n == n.lower() for n in names), names
    assert "job%3a1.msgpack" in names and "%4aob%3a1.msgpack" in names
    assert "%4dail.out-1" in names


async def test_claim_decodes_only_what_it_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FileTaskQueue(str(tmp_path), namespace=NS, fsync=False) as queue:
        await queue.enqueue_many([Task(func="m:f", args=(i,), priority=i % 5) for i in range(1000)])
        decoded = []
        real = file_backend.decode_task

        def counting(data: bytes) -> Task:
            decoded.append(1)
            return real(data)

        monkeypatch.setattr(file_backend, "decode_task", counting)
        for _ in range(3):
            task = await queue.dequeue()
            assert task is not None and task.priority == 4
        assert len(decoded) == 3


async def test_another_process_write_wakes_a_waiting_worker(tmp_path: Path) -> None:
    async with FileTaskQueue(str(tmp_path), namespace=NS) as waiter, \
            FileTaskQueue(str(tmp_path), namespace=NS) as producer:
        since = waiter.generation
        assert await woken_by(waiter, lambda: producer.enqueue(Task(func="m:f")),
                              since=since) < PROMPT
        assert waiter.generation == since, "woken by the file, not by an in-process notify"


async def test_connect_file_url_and_namespaces_share_a_directory(tmp_path: Path) -> None:
    one = connect(f"file://{tmp_path}?namespace=one")
    two = connect(f"file://{tmp_path}?namespace=two")
    assert isinstance(one, FileTaskQueue) and str(tmp_path) in repr(one)
    async with one, two:
        await one.enqueue(Task(func="m:f", id="same"))
        assert await two.get_task("same") is None
        await two.drop_namespace()
        assert await one.get_task("same") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]


async def test_memory_url_keeps_namespaces_apart() -> None:
    base = f"memory://omniq-file-tests/{os.getpid()}"
    async with FileTaskQueue(base, namespace="a") as a, FileTaskQueue(base, namespace="b") as b:
        await a.enqueue(Task(func="m:f", id="t1"))
        assert await b.get_task("t1") is None and await b.dequeue() is None
        claimed = await a.dequeue()
        assert claimed is not None and claimed.id == "t1"
        await a.drop_namespace()
        await b.drop_namespace()
