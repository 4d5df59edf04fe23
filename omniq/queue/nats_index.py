"""The NATS backend's records and its in-memory mirror of the bucket.

A record is a small header of the fields claims and the index need, plus the task as encoded
at its last full write; the index keeps every record, the status sets, the dependents of each
task, the paused queues and per-queue heaps of claim candidates.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Any, NamedTuple

import msgspec
from msgspec.structs import replace

from omniq.models.task import Task, TaskStatus
from omniq.queue import rules
from omniq.serialization import decode_task, encode_task


class _Head(msgspec.Struct, array_like=True):
    """A stored record: the fields a claim rewrites, then the task as encoded at its last full
    write (read back with the fields overlaid). ``seq`` is the enqueue order: the bucket
    revision of the creating write, which that write cannot know, so it stores 0."""

    seq: int
    queue: str
    status: TaskStatus
    priority: int
    ready_at: float | None
    revision: int
    lease: str | None
    worker_id: str | None
    attempts: int
    started_at: float | None
    depends_on: list[str]
    body: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Head).decode


class _Row(NamedTuple):
    kv: int  # bucket revision of this version
    seq: int
    head: _Head


# (-priority, ready_at, seq, kv revision, id): an entry whose revision moved on is stale.
_Entry = tuple[int, float, int, int, str]


def _head(task: Task, seq: int, body: bytes | None = None) -> _Head:
    return _Head(
        seq=seq, queue=task.queue_name, status=task.status, priority=task.priority,
        ready_at=rules.ready_at(task), revision=task.revision, lease=task.lease,
        worker_id=task.worker_id, attempts=task.attempts, started_at=rules.epoch(task.started_at),
        depends_on=task.depends_on, body=encode_task(task) if body is None else body,
    )


def _task(head: _Head) -> Task:
    return replace(
        decode_task(head.body), status=head.status, revision=head.revision, lease=head.lease,
        worker_id=head.worker_id, attempts=head.attempts,
        started_at=rules.from_epoch(head.started_at),
        lease_expires_at=(
            rules.from_epoch(head.ready_at) if head.status is TaskStatus.RUNNING else None
        ),
    )


class _Index:
    """This process's mirror of the bucket: records, status sets, dependents, paused queues and
    per-queue heaps of claim candidates. ``seen`` is the last bucket revision the watcher
    delivered; everything at or below it is reflected here."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.rows: dict[str, _Row] = {}
        # Records whose head does not decode: id -> (bucket revision, raw value, reason).
        self.broken: dict[str, tuple[int, bytes, str]] = {}
        self.members: defaultdict[tuple[str, TaskStatus], set[str]] = defaultdict(set)
        self.children: defaultdict[str, set[str]] = defaultdict(set)
        self.paused: set[str] = set()
        self.due: defaultdict[str, list[_Entry]] = defaultdict(list)
        self.later: defaultdict[str, list[tuple[float, _Entry]]] = defaultdict(list)
        self.seen = 0
        self.written = 0  # the newest revision this process wrote
        self.created: Any = None  # when the mirrored bucket was created

    def put(self, task_id: str, kv: int, head: _Head) -> bool:
        if not self._forget_broken(task_id, kv):
            return False
        old = self.rows.get(task_id)
        if old is not None:
            if kv <= old.kv:
                return False
            self._unlink(task_id, old)
        row = _Row(kv, head.seq or kv, head)
        self.rows[task_id] = row
        self.members[(head.queue, head.status)].add(task_id)
        for dep in head.depends_on:
            self.children[dep].add(task_id)
        if head.ready_at is not None:
            entry = (-head.priority, head.ready_at, row.seq, kv, task_id)
            heapq.heappush(self.later[head.queue], (head.ready_at, entry))
        return True

    def remove(self, task_id: str, kv: int) -> _Row | None:
        self._forget_broken(task_id, kv)
        old = self.rows.get(task_id)
        if old is None or kv <= old.kv:
            return None
        del self.rows[task_id]
        self._unlink(task_id, old)
        return old

    def mark_broken(self, task_id: str, kv: int, raw: bytes, reason: str) -> bool:
        """Version ``kv`` of the record does not decode: it replaces any older row."""
        if self.remove(task_id, kv) is None and task_id in self.rows:
            return False  # what we hold is newer
        if task_id in self.broken:
            return False  # _forget_broken kept it: newer than kv
        self.broken[task_id] = (kv, raw, reason)
        return True

    def _forget_broken(self, task_id: str, kv: int) -> bool:
        """Drop an undecodable version older than ``kv``; False if it is newer."""
        known = self.broken.get(task_id)
        if known is not None:
            if kv <= known[0]:
                return False
            del self.broken[task_id]
        return True

    def _unlink(self, task_id: str, row: _Row) -> None:
        self.members[(row.head.queue, row.head.status)].discard(task_id)
        for dep in row.head.depends_on:
            kids = self.children.get(dep)
            if kids is not None:
                kids.discard(task_id)
                if not kids:
                    del self.children[dep]

    def fresh(self, entry: _Entry) -> bool:
        row = self.rows.get(entry[4])
        return row is not None and row.kv == entry[3]

    def promote(self, queue: str, now: float) -> None:
        later, due = self.later[queue], self.due[queue]
        while later and later[0][0] <= now:
            entry = heapq.heappop(later)[1]
            if self.fresh(entry):
                heapq.heappush(due, entry)

    def take(self, queue: str, count: int) -> list[_Entry]:
        due, taken, ids = self.due[queue], list[_Entry](), set[str]()
        while due and len(taken) < count:
            entry = heapq.heappop(due)
            if self.fresh(entry) and entry[4] not in ids:
                taken.append(entry)
                ids.add(entry[4])
        return taken

    def next_ready(self, queue: str, now: float) -> float | None:
        self.promote(queue, now)
        later = self.later[queue]
        while later and not self.fresh(later[0][1]):
            heapq.heappop(later)
        return later[0][0] if later else None
