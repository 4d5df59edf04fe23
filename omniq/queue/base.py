"""BaseTaskQueue: validation, transitions, dependency, retry and lease rules, written once.

Backends implement a handful of atomic storage primitives (the ``_`` abstract methods below);
every rule about what a task's next state is lives here and in ``rules``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self

import msgspec

from omniq.dependencies import find_cycle
from omniq.exceptions import (
    BackendError,
    DependencyError,
    InvalidTaskError,
    LeaseLostError,
    OmniQError,
    SerializationError,
    TaskCancelledError,
    TaskExpiredError,
    TaskFailedError,
    TaskNotFoundError,
)
from omniq.models.task import Task, TaskStatus, check_id, check_queue_name
from omniq.queue import rules
from omniq.queue.unreadable import Unreadable, failed_record
from omniq.serialization import encode_checked

#: Wraps storing new tasks: ``await middleware(tasks, store)`` calls ``await store(tasks)``
#: (``tasks`` possibly replaced by copies with more ``headers``, same ids, same order) and
#: returns what it returned: per task, whether it was inserted.
EnqueueMiddleware = Callable[
    [list[Task], Callable[[list[Task]], Awaitable[list[bool]]]], Awaitable[list[bool]]
]

_NAMESPACE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,47}$")
TERMINAL = frozenset(s for s in TaskStatus if s.terminal)
_CAS_ATTEMPTS = 100
#: get_result re-reads a task at least this often (first, most), in case a wake-up was lost.
RESULT_POLL = (0.005, 0.1)
log = logging.getLogger("omniq.queue")


class QueueStats(msgspec.Struct, kw_only=True):
    """Task counts per status for one queue (or all) and whether it is paused."""

    pending: int = 0
    scheduled: int = 0
    waiting: int = 0
    running: int = 0
    retrying: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    paused: bool = False

    @property
    def total(self) -> int:
        """All tasks counted."""
        return sum(getattr(self, s.value) for s in TaskStatus)


class Outcome(NamedTuple):
    """What running one claimed task produced, for ``BaseTaskQueue.report``."""

    task: Task  #: the task as claimed (its lease and revision fence the write)
    result: Any = None
    error: str | None = None  #: None for success
    retry: bool = True  #: False: a failure that no retry can fix (e.g. not allowed)


class Claim(msgspec.Struct):
    """What one claim produced: tasks to run, and tasks found past their ttl (now EXPIRED)."""

    runnable: list[Task]
    expired: list[Task]


async def until_changed(read: Callable[[], Awaitable[object]], ceiling: float) -> None:
    """Poll ``read()`` until its value changes: every millisecond for the first ten (work
    often follows work), then backing off to every ``ceiling`` seconds while nothing happens."""
    loop = asyncio.get_running_loop()
    start = await read()
    pause = min(0.001, ceiling)
    fast_until = loop.time() + 0.01
    while True:
        await asyncio.sleep(pause)
        if await read() != start:
            return
        if loop.time() >= fast_until:
            pause = min(pause * 2, ceiling)


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


class BaseTaskQueue(ABC):
    """A named-queue task store. Use ``async with queue:`` or ``connect()``/``close()``."""

    #: True only where tasks never leave the process, so lambdas can be queued.
    keeps_callables: ClassVar[bool] = False
    @property
    def short_claim_drains(self) -> bool:
        """True when this queue's last claim, if it returned fewer tasks than asked for, found
        no other due task then, so a worker may sleep (until woken) instead of asking again."""
        return True

    def __init__(
        self,
        *,
        lease_timeout: float = 30.0,
        namespace: str = "omniq",
        max_payload: int = 1 << 20,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise InvalidTaskError(
                f"invalid namespace {namespace!r}: 1-48 of [A-Za-z0-9_-], starting with a letter"
            )
        if not lease_timeout > 0:
            raise InvalidTaskError(f"lease_timeout must be positive, not {lease_timeout!r}")
        self.lease_timeout = float(lease_timeout)
        self.namespace = namespace
        self.max_payload = max_payload
        self._connected = False
        self._generation = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._end_waiters: set[asyncio.Future[None]] = set()
        # Ids this process's get_result calls wait for (how many calls each).
        self._awaited: dict[str, int] = {}
        self._enqueue_middleware: list[EnqueueMiddleware] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()}, namespace={self.namespace!r})"

    def _describe(self) -> str:
        """Where the queue lives, for repr (never a password)."""
        return ""

    # -- life cycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open connections and create schema, idempotently."""
        if not self._connected:
            await self._open()
            self._connected = True

    async def close(self) -> None:
        """Close connections; the queue can be connected again."""
        if self._connected:
            self._connected = False
            await self._close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- enqueue ----------------------------------------------------------------------------

    async def enqueue(self, task: Task) -> str:
        """Validate and store a task; return its id. An existing id is returned unchanged."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Iterable[Task]) -> list[str]:
        """Enqueue several tasks at once; dependencies may point inside the batch."""
        now = utcnow()
        batch: dict[str, Task] = {}
        for task in tasks:
            if not isinstance(task, Task):
                raise InvalidTaskError(f"expected a Task, not {type(task).__name__}")
            func = self._stored_func(task)  # a repeated id is checked too, then left out
            if task.id not in batch:
                batch[task.id] = rules.initial(task, now, func=func)
        if not batch:
            return []
        if any(t.depends_on for t in batch.values()):
            await self._check_dependencies(batch)
        records = list(batch.values())
        if self._enqueue_middleware:
            inserted = await self._insert_through_middleware(records)
        else:
            inserted = await self._insert(records)
        self._notify()
        # Write, then re-check: a dependency that finished before this insert was visible
        # could not see its dependent, so the dependent looks at its dependencies itself.
        waiting = [r.id for r, new in zip(records, inserted, strict=True)
                   if new and r.status is TaskStatus.WAITING]
        if waiting:
            await self._settle_waiting(waiting)
        return list(batch)

    async def _check_dependencies(self, batch: dict[str, Task]) -> None:
        cycle = find_cycle({t.id: t.depends_on for t in batch.values()})
        if cycle:
            raise DependencyError(f"dependency cycle: {' -> '.join(cycle)}")
        outside = {d for t in batch.values() for d in t.depends_on if d not in batch}
        known = await self._get(sorted(outside)) if outside else {}
        missing = sorted(outside - known.keys())
        if missing:
            raise DependencyError(f"unknown dependencies: {', '.join(missing)}")

    def add_enqueue_middleware(self, middleware: EnqueueMiddleware) -> None:
        """Wrap the storing of newly enqueued tasks (``omniq.tracing`` stamps the trace context
        into ``headers`` there, ``omniq.metrics`` counts). The first added is the outermost."""
        self._enqueue_middleware.append(middleware)

    async def _insert_through_middleware(self, records: list[Task], index: int = 0) -> list[bool]:
        if index == len(self._enqueue_middleware):
            return await self._insert(records)
        call_next = functools.partial(self._insert_through_middleware, index=index + 1)
        return await self._enqueue_middleware[index](records, call_next)

    def _stored_func(self, task: Task) -> Callable[..., Any] | str:
        """Check a task to be enqueued; its function as it is to be stored."""
        task._validate()  # again: the caller may have changed it since it was built
        func = task.func
        if callable(func):
            try:
                func = task.func_ref
            except SerializationError:
                if not self.keeps_callables:
                    raise  # lambdas and nested functions cannot leave the process
        if task.args or task.kwargs:  # no arguments encode to three bytes: nothing to check
            payload = encode_checked((task.args, task.kwargs),
                                     what=f"arguments of task {task.id}")
            if len(payload) > self.max_payload:
                raise InvalidTaskError(
                    f"task {task.id} payload is {len(payload)} bytes, over max_payload "
                    f"({self.max_payload} bytes)"
                )
        return func

    # -- claiming ---------------------------------------------------------------------------

    async def dequeue(self, queue_name: str = "default") -> Task | None:
        """Claim the highest-priority due task of ``queue_name``, or None at once."""
        tasks = await self.dequeue_many(queue_name, 1)
        return tasks[0] if tasks else None

    async def dequeue_many(
        self, queue_name: str = "default", limit: int = 1, *, worker_id: str | None = None
    ) -> list[Task]:
        """Claim up to ``limit`` due tasks in priority order, each with its own lease."""
        return (await self.claim(queue_name, limit, worker_id=worker_id)).runnable

    async def claim(self, queue_name: str, limit: int, *, worker_id: str | None = None) -> Claim:
        """Claim up to ``limit`` tasks; those whose ttl passed are expired instead of run."""
        check_queue_name(queue_name)
        if limit < 1:
            return Claim([], [])
        result = Claim([], [])
        # Expired tasks take claim slots without running: claim again until the batch has
        # runnable tasks or the queue has nothing due.
        while len(result.runnable) < limit:
            now = time.time()
            lease = uuid.uuid4().hex
            wanted = limit - len(result.runnable)
            claimed = await self._claim(
                queue_name, now, wanted, worker_id, lease, now + self.lease_timeout
            )
            moment = rules.from_epoch(now)
            assert moment is not None
            expire = functools.partial(rules.expired, now=moment)
            for task in claimed:
                if isinstance(task, Unreadable):
                    await self._fail_unreadable(task)
                elif rules.ttl_passed(task, moment):
                    result.expired.append(await self._apply(task.id, expire, known=task))
                else:
                    result.runnable.append(task)
            if len(claimed) < wanted:
                break
        return result

    async def _fail_unreadable(self, record: Unreadable) -> None:
        """Store a record a claim could not decode as FAILED, with the reason, so no worker
        meets it again; its waiting dependents are cancelled as for any failure."""
        try:
            task = failed_record(record, utcnow())
        except InvalidTaskError as exc:  # not even its id or queue name is valid
            log.error("unreadable record %r left in place: %s (%s)", record.id, record.reason, exc)
            return
        if await self._replace_unreadable(record, task):
            log.warning("task %s: stored record unreadable, marked FAILED: %s",
                        task.id, record.reason)
            await self._settle_dependents([task.id])

    async def _replace_unreadable(self, record: Unreadable, task: Task) -> bool:
        """Write ``task`` over the unreadable record if it is still that version. This
        default compares the revision (backends that keep it outside the record body);
        others override it, using ``record.token``."""
        return await self._replace(task, record.revision)

    # -- outcomes ---------------------------------------------------------------------------

    async def complete(self, task_id: str, result: Any = None, *, lease: str | None = None) -> None:
        """Mark a running task COMPLETED with ``result`` (recurring: back to SCHEDULED)."""
        encode_checked(result, what=f"result of task {task_id}")
        await self.finish(task_id, lambda t, now: rules.completed(t, result, now), lease=lease)

    async def fail(
        self, task_id: str, error: str, *, lease: str | None = None, retry: bool = True
    ) -> Task:
        """Record a failed attempt: RETRYING while retries remain (unless ``retry=False``),
        else FAILED. Returns the task's new state."""
        return await self.finish(
            task_id, lambda t, now: rules.failed(t, str(error), now, retry=retry), lease=lease
        )

    async def release(self, task_id: str, *, lease: str) -> None:
        """Hand a claim back unfinished (worker shutdown): PENDING again, no retry consumed."""
        await self.finish(task_id, lambda t, now: rules.released(t, now), lease=lease)

    async def report(self, outcomes: Sequence[Outcome]) -> list[Task | OmniQError]:
        """Record the outcomes of claimed tasks together (a worker's group commit).

        Each write is fenced by the claimed task's lease and revision, so one batched
        compare-and-set records every task nobody touched since its claim; a task that
        changed meanwhile (cancelled, paused, claimed again) is decided again from its
        current state, exactly as ``complete``/``fail`` would. Returns, per outcome, the
        task's new state or the ``LeaseLostError``/``TaskNotFoundError``/``InvalidTaskError``
        that stopped it. Results must be serialisable (the worker checks them first).
        """
        now = utcnow()
        planned = [
            (rules.outcome(o.task, now, o.result, o.error, o.retry), o.task.revision)
            for o in outcomes
        ]
        for new, revision in planned:
            new.revision = revision + 1
        written = await self._replace_many(planned) if planned else []
        states: list[Task | OmniQError] = []
        ended: list[str] = []
        for o, (new, _), ok in zip(outcomes, planned, written, strict=True):
            if not ok:
                states.append(await self._report_again(o))
                continue
            states.append(new)
            if rules.makes_ready(new):
                self._notify()
            if new.status.terminal:
                ended.append(new.id)
        if ended:
            self._task_ended()
        await self._settle_dependents(ended)
        return states

    async def _report_again(self, o: Outcome) -> Task | OmniQError:
        def change(task: Task, now: datetime) -> Task:
            return rules.outcome(task, now, o.result, o.error, o.retry)

        try:
            return await self.finish(o.task.id, change, lease=o.task.lease)
        except (LeaseLostError, TaskNotFoundError, InvalidTaskError) as exc:
            return exc

    async def finish(
        self,
        task_id: str,
        change: Callable[[Task, datetime], Task],
        *,
        lease: str | None = None,
        known: Task | None = None,
    ) -> Task:
        """Apply an outcome rule to a running task, fenced by ``lease`` when given."""

        def outcome(task: Task) -> Task:
            if lease is not None and (task.lease != lease or task.status is not TaskStatus.RUNNING):
                raise LeaseLostError(f"task {task_id} is no longer held by lease {lease}")
            if lease is None and task.status is not TaskStatus.RUNNING:
                raise InvalidTaskError(f"task {task_id} is {task.status.value}, not running")
            return change(task, utcnow())

        return await self._apply(task_id, outcome, known=known)

    async def extend_lease(
        self, task_id: str, seconds: float | None = None, *, lease: str | None = None
    ) -> bool:
        """Push a running task's lease expiry to now + ``seconds`` (default lease_timeout).

        False if the task is not running; LeaseLostError if ``lease`` is not current.
        """
        until = time.time() + (self.lease_timeout if seconds is None else float(seconds))
        token = lease
        if token is None:
            task = await self._require(task_id)
            if task.status is not TaskStatus.RUNNING or task.lease is None:
                return False
            token = task.lease
        if await self._extend(task_id, token, until):
            return True
        if lease is not None:
            await self._require(task_id)
            raise LeaseLostError(f"task {task_id} is no longer held by lease {lease}")
        return False

    # -- inspection -------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """A snapshot of the task, or None."""
        check_id(task_id)
        return (await self._get([task_id])).get(task_id)

    async def get_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        """Snapshots of several tasks by id (unknown ids are absent)."""
        return await self._get([check_id(i) for i in task_ids]) if task_ids else {}

    async def get_result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for the task to end; its result, or the error its end state stands for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = RESULT_POLL[0]  # a fallback: ends normally wake the wait at once
        self._awaited[task_id] = self._awaited.get(task_id, 0) + 1
        try:
            read: Task | None = None
            while True:
                # Armed before the read, so a task ending while it is read is not slept through.
                async with self._watching_ends() as ended:
                    read = task = self._known(task_id, read) or await self._require(task_id)
                    if task.status is TaskStatus.COMPLETED:
                        return task.result
                    if task.status is TaskStatus.FAILED:
                        raise TaskFailedError(task_id, task.error)
                    if task.status is TaskStatus.CANCELLED:
                        raise TaskCancelledError(task_id, task.error)
                    if task.status is TaskStatus.EXPIRED:
                        raise TaskExpiredError(task_id, task.error)
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"task {task_id} did not finish within {timeout}s")
                    await ended(pause if left is None else min(pause, left))
                pause = min(pause * 2, RESULT_POLL[1])
        finally:
            if self._awaited[task_id] == 1:
                del self._awaited[task_id]
            else:
                self._awaited[task_id] -= 1

    async def list_tasks(
        self,
        queue_name: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int | None = 100,
        *,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        """Tasks in enqueue order (``newest_first``: the reverse), optionally of one queue and
        one status; the first ``offset`` of them skipped, at most ``limit`` returned (``None``:
        all of them)."""
        if queue_name is not None:
            check_queue_name(queue_name)
        for name, value in (("limit", limit), ("offset", offset)):
            if value is None and name == "limit":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        statuses = None if status is None else [TaskStatus(status)]
        if limit == 0:
            return []
        return await self._list(queue_name, statuses, limit, offset=offset,
                                newest_first=newest_first)

    async def queue_names(self) -> list[str]:
        """Sorted names of the queues that hold at least one task or are paused."""
        return sorted(await self._queue_names() | await self._paused_queues())

    async def stats(self, queue_name: str | None = None) -> QueueStats:
        """Counts per status; ``paused`` tells whether the queue (any queue, for all) is paused."""
        if queue_name is not None:
            check_queue_name(queue_name)
        counts = await self._counts(queue_name)
        paused = await self._paused_queues()
        return QueueStats(
            **{s.value: counts.get(s, 0) for s in TaskStatus},
            paused=(queue_name in paused) if queue_name is not None else bool(paused),
        )

    # -- control ----------------------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not ended; a running one is stopped by its worker. False if
        it had ended already."""
        now = utcnow()

        def change(task: Task) -> Task | None:
            if task.status.terminal:
                return None
            return rules.cancelled(task, "cancelled by request", now)

        before = await self._require(task_id)
        if before.status.terminal:
            return False
        after = await self._apply(task_id, change, known=before)
        return after.status is TaskStatus.CANCELLED and after.revision > before.revision

    async def delete_task(self, task_id: str) -> bool:
        """Remove a task (cancelling it first); its waiting dependents are cancelled."""
        task = await self.get_task(task_id)
        if task is None:
            return False
        if task.status is TaskStatus.RUNNING:
            await self.cancel(task_id)  # so its worker stops it
        deleted = await self._delete([task_id])
        await self._settle_dependents(deleted)
        return bool(deleted)

    async def requeue(self, task_id: str) -> bool:
        """Put an ended task back to PENDING (WAITING if its dependencies are unmet)."""
        task = await self._require(task_id)
        if not task.status.terminal:
            return False
        now = utcnow()
        # With dependencies it waits, and the one rule for waiting tasks decides what next.
        waiting = bool(task.depends_on)

        def change(t: Task) -> Task | None:
            return rules.requeued(t, now, waiting=waiting) if t.status.terminal else None

        after = await self._apply(task_id, change, known=task)
        if after.status is TaskStatus.WAITING:
            await self._settle_waiting([task_id])
        return after.revision != task.revision

    async def pause_task(self, task_id: str) -> bool:
        """Hold a task in place: it is not run until ``resume_task``."""
        return await self._set_task_pause(task_id, True)

    async def resume_task(self, task_id: str) -> bool:
        """Release a task held by ``pause_task`` (or created with ``Schedule(paused=True)``)."""
        return await self._set_task_pause(task_id, False)

    async def _set_task_pause(self, task_id: str, paused: bool) -> bool:
        def change(task: Task) -> Task | None:
            if task.status.terminal or task.paused == paused:
                return None
            return rules.with_pause(task, paused)

        before = await self._require(task_id)
        after = await self._apply(task_id, change, known=before)
        return after.revision != before.revision

    async def pause(self, queue_name: str) -> None:
        """Stop handing out tasks of ``queue_name``; running tasks finish."""
        await self._set_paused(check_queue_name(queue_name), True)

    async def resume(self, queue_name: str) -> None:
        """Hand out tasks of ``queue_name`` again."""
        await self._set_paused(check_queue_name(queue_name), False)
        self._notify()

    async def purge(
        self, queue_name: str, statuses: Iterable[TaskStatus | str] | None = None
    ) -> int:
        """Delete the queue's tasks in ``statuses`` (default: the terminal ones); the count."""
        check_queue_name(queue_name)
        wanted = sorted(TERMINAL if statuses is None else {TaskStatus(s) for s in statuses})
        doomed = await self._list(queue_name, wanted, None)
        running = [t.id for t in doomed if not t.status.terminal]
        for task_id in running:
            await self.cancel(task_id)
        deleted = await self._delete([t.id for t in doomed])
        await self._settle_dependents(deleted)
        return len(deleted)

    async def drop_namespace(self) -> None:
        """Remove everything this queue's namespace stored (tables, keys, streams, files)."""
        await self._drop()

    # -- waiting for work -------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumps whenever this process makes work ready; pass it to ``wait_for_work``."""
        return self._generation

    async def next_ready_at(self, queue_names: Sequence[str]) -> float | None:
        """Epoch seconds at which the earliest not-yet-due task of these queues becomes due."""
        return await self._next_ready_at(list(queue_names), time.time())

    async def wait_for_work(
        self,
        queue_names: Sequence[str],
        timeout: float,
        since: int | None = None,
        *,
        interrupt: asyncio.Future[None] | None = None,
    ) -> None:
        """Sleep up to ``timeout`` s, waking early when work may have become ready (or when
        ``interrupt`` is done: a worker's own reasons to wake, such as a stop)."""
        if since is not None and since != self._generation:
            return
        loop = asyncio.get_running_loop()
        local: asyncio.Future[None] = loop.create_future()
        self._waiters.add(local)
        remote = self._remote_watch(queue_names)
        waiting = {local, remote} if interrupt is None else {local, remote, interrupt}
        try:
            await asyncio.wait(waiting, timeout=max(timeout, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiters.discard(local)
            remote.cancel()
            if remote.done() and not remote.cancelled() and remote.exception():
                raise BackendError(f"waiting for work failed: {remote.exception()}")

    def _mark_ready(self) -> None:
        """Record that work may have become ready (here or, for backends that watch the store,
        elsewhere): a worker that read ``generation`` before this does not sleep on it."""
        self._generation += 1

    def _notify(self) -> None:
        self._mark_ready()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _task_ended(self) -> None:
        """A task reached a terminal state here: wake this process's ``get_result`` calls."""
        for waiter in self._end_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._end_waiters.clear()

    def _known(self, task_id: str, read: Task | None) -> Task | None:
        """The task's current state if this process knows it without a read, for
        ``get_result`` (``read``: its previous answer, None at first): a backend may answer
        from its own enqueue if no end could have gone unnoticed since, or from an end notice
        that carried the task (only ids in ``_awaited`` need keeping). None: read it."""
        return None

    async def _remote_change(self, queue_names: list[str]) -> None:
        """Return when another process may have made work ready in ``queue_names``, or, with
        no names, may have ended a task; backends with notifications override this. The
        default never returns (workers wake at the next due time, results are polled)."""
        await asyncio.Event().wait()

    def _remote_watch(self, queue_names: Sequence[str]) -> asyncio.Future[None]:
        """``_remote_change`` running; for a backend without one a plain future that never
        ends (a task would cost every wait its start and its cancellation)."""
        if type(self)._remote_change is BaseTaskQueue._remote_change:
            return asyncio.get_running_loop().create_future()
        return asyncio.ensure_future(self._remote_change(list(queue_names)))

    @contextlib.asynccontextmanager
    async def _watching_ends(self) -> AsyncIterator[Callable[[float], Awaitable[None]]]:
        """Listen for tasks ending (here or elsewhere) from now on; yields ``wait(timeout)``,
        which returns once one may have ended since, or after ``timeout``."""
        local: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._end_waiters.add(local)
        remote = self._remote_watch([])

        async def wait(timeout: float) -> None:
            await asyncio.wait({local, remote}, timeout=max(timeout, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)
            if remote.done() and not remote.cancelled() and remote.exception():
                raise BackendError(f"waiting for results failed: {remote.exception()}")

        try:
            yield wait
        finally:
            self._end_waiters.discard(local)
            remote.cancel()
            if remote.done() and not remote.cancelled():
                remote.exception()  # seen (or irrelevant: the caller had its answer)

    # -- shared machinery -------------------------------------------------------------------

    async def _require(self, task_id: str) -> Task:
        task = await self.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(f"no task with id {task_id!r}")
        return task

    async def _apply(
        self,
        task_id: str,
        change: Callable[[Task], Task | None],
        *,
        known: Task | None = None,
    ) -> Task:
        """Compare-and-set ``change`` onto the task, re-reading on conflict; the final state.

        ``change`` returning None means "nothing to do". Terminal transitions settle the
        task's dependents; transitions that make work ready wake local workers.
        """
        current = known
        for _ in range(_CAS_ATTEMPTS):
            if current is None:
                current = await self._require(task_id)
            new = change(current)
            if new is None:
                return current
            new = msgspec.structs.replace(new, revision=current.revision + 1)
            if await self._replace(new, current.revision):
                await self._after(current, new)
                return new
            current = None
        raise BackendError(f"task {task_id} changed {_CAS_ATTEMPTS} times while being updated")

    async def _after(self, old: Task, new: Task) -> None:
        if rules.makes_ready(new):
            self._notify()
        if new.status.terminal and not old.status.terminal:
            self._task_ended()
            await self._settle_dependents([new.id])

    async def _settle_dependents(self, task_ids: Sequence[str]) -> None:
        """After tasks ended or were deleted, release or cancel their waiting dependents."""
        if not task_ids:
            return
        dependents = await self._dependents(list(task_ids))
        if dependents:
            await self._settle_waiting(sorted(dependents))

    async def _settle_waiting(self, task_ids: Sequence[str]) -> None:
        """For WAITING tasks: PENDING once every dependency completed; CANCELLED (cascading
        through ``_apply``) once any failed, was cancelled, expired or deleted. Two reads for
        the whole batch; a write only for tasks whose state changes."""
        if not task_ids:
            return
        waiting = [t for t in (await self._get(list(task_ids))).values()
                   if t.status is TaskStatus.WAITING]
        deps = await self._get(sorted({d for t in waiting for d in t.depends_on}))
        now = utcnow()
        for task in waiting:
            if rules.settled(task, deps, now) is not None:
                await self._apply(task.id, functools.partial(rules.settled, deps=deps, now=now),
                                  known=task)

    # -- storage primitives: each one atomic in its backend ---------------------------------

    @abstractmethod
    async def _open(self) -> None:
        """Connect and create the schema/streams/directories idempotently."""

    @abstractmethod
    async def _close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def _insert(self, tasks: list[Task]) -> list[bool]:
        """Store new tasks (and their dependency links) in one step where possible; an id
        that exists is left untouched. Returns, per task, whether it was inserted."""

    @abstractmethod
    async def _get(self, task_ids: Sequence[str]) -> dict[str, Task]:
        """The stored tasks with these ids (missing ids absent)."""

    @abstractmethod
    async def _replace(self, task: Task, expected_revision: int) -> bool:
        """Write ``task`` whole if the stored revision is still ``expected_revision``."""

    async def _replace_many(self, changes: Sequence[tuple[Task, int]]) -> list[bool]:
        """``_replace`` for each (task, expected revision); backends that can write them in
        one round trip override this."""
        return [await self._replace(task, revision) for task, revision in changes]

    @abstractmethod
    async def _claim(
        self,
        queue_name: str,
        now: float,
        limit: int,
        worker_id: str | None,
        lease: str,
        lease_expires: float,
    ) -> Sequence[Task | Unreadable]:
        """Atomically take up to ``limit`` tasks of the queue whose ready time (``rules.ready_at``)
        is <= now, highest priority first, then earliest ready time, then enqueue order, and
        store them RUNNING: lease, worker_id, attempts + 1, started_at = now,
        lease_expires_at = lease_expires, revision + 1. Returns them in that order.
        Takes nothing while the queue is paused, checked in the same atomic step, so a claim
        costs one round trip. A record that does not decode comes back as ``Unreadable``
        (in its place in the order); the queue then marks it FAILED."""

    @abstractmethod
    async def _extend(self, task_id: str, lease: str, until: float) -> bool:
        """If the task is RUNNING under ``lease``, set lease_expires_at = until, revision + 1."""

    @abstractmethod
    async def _delete(self, task_ids: Sequence[str]) -> list[str]:
        """Delete tasks and their dependency links; the ids that existed."""

    @abstractmethod
    async def _dependents(self, task_ids: Sequence[str]) -> set[str]:
        """Ids of tasks whose ``depends_on`` names any of ``task_ids``."""

    @abstractmethod
    async def _list(
        self,
        queue_name: str | None,
        statuses: Sequence[TaskStatus] | None,
        limit: int | None,
        *,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        """Tasks in enqueue order (or its reverse), filtered, the first ``offset`` skipped;
        ``limit`` None means all."""

    @abstractmethod
    async def _queue_names(self) -> set[str]:
        """Names of the queues holding at least one task."""

    @abstractmethod
    async def _counts(self, queue_name: str | None) -> dict[TaskStatus, int]:
        """Number of tasks per status."""

    @abstractmethod
    async def _set_paused(self, queue_name: str, paused: bool) -> None:
        """Record whether the queue is paused."""

    @abstractmethod
    async def _paused_queues(self) -> set[str]:
        """Names of paused queues."""

    @abstractmethod
    async def _next_ready_at(self, queue_names: list[str], now: float) -> float | None:
        """The smallest ready time after ``now`` among tasks of these queues (all if empty)."""

    @abstractmethod
    async def _drop(self) -> None:
        """Delete all of the namespace's storage."""
