"""MemoryTaskQueue: in-process, heap-ordered, event-driven (nothing polls)."""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Sequence

from msgspec.structs import replace

from omniq.models.task import Task, TaskStatus
from omniq.queue import rules
from omniq.queue.base import BaseTaskQueue

# (-priority, ready_at, seq, id, revision): a stale entry (revision moved on) is skipped.
_Entry = tuple[int, float, int, str, int]


class MemoryTaskQueue(BaseTaskQueue):
    """Tasks in this process's memory: fast, shared by the workers of this event loop, lost
    when the process ends. Accepts lambdas and nested functions."""

    keeps_callables = True

    def __init__(
        self,
        *,
        lease_timeout: float = 30.0,
        namespace: str = "omniq",
        max_payload: int = 1 << 20,
    ) -> None:
        super().__init__(lease_timeout=lease_timeout, namespace=namespace, max_payload=max_payload)
        self._reset()

    def _reset(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._seq: dict[str, int] = {}
        self._counter = itertools.count()
        self._due: dict[str, list[_Entry]] = defaultdict(list)
        self._later: dict[str, list[tuple[float, _Entry]]] = defaultdict(list)
        self._dependents_of: dict[str, set[str]] = defaultdict(set)
        self._paused: set[str] = set()

    async def _open(self) -> None:
        return None

    async def _close(self) -> None:
        return None

    def _store(self, task: Task, now: float | None = None) -> None:
        self._tasks[task.id] = task
        ready = rules.ready_at(task)
        if ready is None:
            return
        entry = (-task.priority, ready, self._seq[task.id], task.id, task.revision)
        if now is not None and ready <= now:
            heapq.heappush(self._due[task.queue_name], entry)
        else:
            heapq.heappush(self._later[task.queue_name], (ready, entry))

    def _fresh(self, entry: _Entry) -> Task | None:
        task = self._tasks.get(entry[3])
        return task if task is not None and task.revision == entry[4] else None

    async def _insert(self, tasks: list[Task]) -> list[bool]:
        inserted = []
        for task in tasks:
            if task.id in self._tasks:
                inserted.append(False)
                continue
            self._seq[task.id] = next(self._counter)
            self._store(task)
            for dep in task.depends_on:
                self._dependents_of[dep].add(task.id)
            inserted.append(True)
        return inserted

    async def _get(self, task_ids: Sequence[str]) -> dict[str, Task]:
        return {i: replace(self._tasks[i]) for i in task_ids if i in self._tasks}

    async def _replace(self, task: Task, expected_revision: int) -> bool:
        current = self._tasks.get(task.id)
        if current is None or current.revision != expected_revision:
            return False
        self._store(task)
        return True

    def _promote(self, queue_name: str, now: float) -> None:
        later = self._later[queue_name]
        due = self._due[queue_name]
        while later and later[0][0] <= now:
            heapq.heappush(due, heapq.heappop(later)[1])

    async def _claim(
        self,
        queue_name: str,
        now: float,
        limit: int,
        worker_id: str | None,
        lease: str,
        lease_expires: float,
    ) -> list[Task]:
        if queue_name in self._paused:
            return []
        self._promote(queue_name, now)
        due = self._due[queue_name]
        started = rules.from_epoch(now)
        expires = rules.from_epoch(lease_expires)
        claimed: list[Task] = []
        while due and len(claimed) < limit:
            task = self._fresh(heapq.heappop(due))
            if task is None:
                continue
            task = replace(
                task,
                status=TaskStatus.RUNNING,
                lease=lease,
                worker_id=worker_id,
                attempts=task.attempts + 1,
                started_at=started,
                lease_expires_at=expires,
                revision=task.revision + 1,
            )
            self._store(task)
            claimed.append(replace(task))
        return claimed

    async def _extend(self, task_id: str, lease: str, until: float) -> bool:
        task = self._tasks.get(task_id)
        if task is None or task.status is not TaskStatus.RUNNING or task.lease != lease:
            return False
        self._store(replace(task, lease_expires_at=rules.from_epoch(until),
                            revision=task.revision + 1))
        return True

    async def _delete(self, task_ids: Sequence[str]) -> list[str]:
        deleted = []
        for task_id in task_ids:
            task = self._tasks.pop(task_id, None)
            if task is None:
                continue
            self._seq.pop(task_id, None)
            for dep in task.depends_on:
                self._dependents_of[dep].discard(task_id)
            deleted.append(task_id)
        return deleted

    async def _dependents(self, task_ids: Sequence[str]) -> set[str]:
        return {d for i in task_ids for d in self._dependents_of.get(i, ())}

    async def _list(
        self,
        queue_name: str | None,
        statuses: Sequence[TaskStatus] | None,
        limit: int | None,
        *,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        found = [
            t for t in self._tasks.values()
            if (queue_name is None or t.queue_name == queue_name)
            and (statuses is None or t.status in statuses)
        ]
        found.sort(key=lambda t: self._seq[t.id], reverse=newest_first)
        end = None if limit is None else offset + limit
        return [replace(t) for t in found[offset:end]]

    async def _queue_names(self) -> set[str]:
        return {t.queue_name for t in self._tasks.values()}

    async def _counts(self, queue_name: str | None) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = defaultdict(int)
        for task in self._tasks.values():
            if queue_name is None or task.queue_name == queue_name:
                counts[task.status] += 1
        return counts

    async def _set_paused(self, queue_name: str, paused: bool) -> None:
        (self._paused.add if paused else self._paused.discard)(queue_name)

    async def _paused_queues(self) -> set[str]:
        return set(self._paused)

    async def _next_ready_at(self, queue_names: list[str], now: float) -> float | None:
        best: float | None = None
        for name in queue_names or list(self._later):
            self._promote(name, now)
            later = self._later[name]
            while later and self._fresh(later[0][1]) is None:
                heapq.heappop(later)
            if later and (best is None or later[0][0] < best):
                best = later[0][0]
        return best

    async def _drop(self) -> None:
        self._reset()
