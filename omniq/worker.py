"""WorkerPool: claims tasks from its queues and runs them, with leases, timeouts and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from omniq.exceptions import (
    BackendError,
    LeaseLostError,
    SerializationError,
    TaskNotAllowedError,
    TaskNotFoundError,
)
from omniq.models.task import Task, TaskStatus, check_queue_name
from omniq.queue.base import BaseTaskQueue
from omniq.registry import Allowlist
from omniq.serialization import encode_checked

log = logging.getLogger("omniq.worker")

Hook = Callable[[Task], Awaitable[None] | None]
EVENTS = ("started", "completed", "failed", "retried", "cancelled", "expired")
# Longest pause between attempts while the backend is down: work resumes at most this long
# (plus a reconnect) after the backend returns.
_MAX_BACKOFF = 2.0


class WorkerPool:
    """Runs tasks from ``queues`` (served in the order given) with at most ``concurrency`` at
    once. Async functions run on the loop, sync ones in a thread pool of the same size.

    ``await pool.run()`` until ``await pool.stop()``, SIGINT or SIGTERM; ``run(burst=True)``
    returns once the queues hold nothing pending, retrying or waiting. On shutdown running
    tasks get ``grace_period`` seconds, then are cancelled and their leases handed back.
    """

    def __init__(
        self,
        queue: BaseTaskQueue,
        queues: Sequence[str] = ("default",),
        concurrency: int = 10,
        *,
        imports: Iterable[str] = (),
        worker_id: str | None = None,
        grace_period: float = 10.0,
        idle_timeout: float = 1.0,
        handle_signals: bool = True,
    ) -> None:
        if isinstance(queues, str):
            queues = (queues,)
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.queue = queue
        self.queues = tuple(check_queue_name(q) for q in queues)
        self.concurrency = concurrency
        self.imports = tuple(imports)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.grace_period = grace_period
        self.idle_timeout = idle_timeout
        self.handle_signals = handle_signals
        self.counts: Counter[str] = Counter()
        self._hooks: dict[str, list[Hook]] = {event: [] for event in EVENTS}
        self._running: dict[str, tuple[asyncio.Task[None], Task]] = {}
        self._extended: dict[str, float] = {}
        self._ended_elsewhere: set[str] = set()
        # Tasks whose function returned: only their outcome is left to write, and a lost lease
        # makes that write fail with LeaseLostError (logged) rather than being cancelled.
        self._reporting: set[str] = set()
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: skip what is left of the grace period
        self._changed = asyncio.Event()
        self._releasing = False
        self._failure: BaseException | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._allowlist: Allowlist | None = None

    # -- public -----------------------------------------------------------------------------

    def on(self, event: str, hook: Hook) -> None:
        """Call ``hook(task)`` (sync or async) on an event: started, completed, failed,
        retried, cancelled or expired. A failing hook is logged, never fatal."""
        if event not in self._hooks:
            raise ValueError(f"unknown event {event!r}; events: {', '.join(EVENTS)}")
        self._hooks[event].append(hook)

    @property
    def active(self) -> int:
        """Tasks running right now."""
        return len(self._running)

    async def stop(self) -> None:
        """Stop claiming; running tasks finish within the grace period."""
        self._stopping.set()

    async def run(self, burst: bool = False) -> None:
        """Claim and run tasks until stopped (or, with ``burst``, until the queues drain)."""
        self._stopping.clear()
        self._hurry.clear()
        self._failure = None
        self._releasing = False
        self._allowlist = Allowlist(self.imports)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="omniq-task")
        await self.queue.connect()
        restore = self._install_signals()
        monitor = asyncio.create_task(self._monitor(), name="omniq-monitor")
        log.info("worker %s serving %s (concurrency %d)", self.worker_id,
                 ", ".join(self.queues), self.concurrency)
        try:
            await self._claim_loop(burst)
        finally:
            await self._shutdown()
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            restore()
            self._executor.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped", self.worker_id)
        if self._failure is not None:
            raise self._failure

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self, burst: bool) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                # Read before claiming: work made ready during the claim must wake us.
                since = self.queue.generation
                claimed = await self._claim_some()
                backoff = 0.1  # the backend answered: the next outage starts afresh
                if claimed or self.active >= self.concurrency:
                    if self.active >= self.concurrency:
                        await self._wait(self._changed.wait())
                    continue
                if burst and not self._running and await self._drained():
                    return
                await self._idle(since)
            except BackendError as exc:
                log.warning("backend unavailable (%s); retrying in %.1fs", exc, backoff)
                await self._wait(asyncio.sleep(backoff))
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _claim_some(self) -> int:
        claimed = 0
        for name in self.queues:
            free = self.concurrency - self.active
            if free <= 0:
                break
            claim = await self.queue.claim(name, free, worker_id=self.worker_id)
            for task in claim.expired:
                self.counts["expired"] += 1
                await self._emit("expired", task)
            for task in claim.runnable:
                self._start(task)
            claimed += len(claim.runnable) + len(claim.expired)
        return claimed

    async def _drained(self) -> bool:
        for name in self.queues:
            stats = await self.queue.stats(name)
            if not stats.paused and stats.pending + stats.retrying + stats.waiting:
                return False
        return True

    async def _idle(self, since: int) -> None:
        timeout = self.idle_timeout
        due = await self.queue.next_ready_at(self.queues)
        if due is not None:
            timeout = min(timeout, max(due - time.time(), 0.0))
        self._changed.clear()
        await self._wait(
            self.queue.wait_for_work(self.queues, timeout, since=since), self._changed.wait()
        )

    async def _wait(self, *aws: Awaitable[Any]) -> None:
        """Await the first of ``aws`` or a stop request."""
        waiters = [asyncio.ensure_future(a) for a in (*aws, self._stopping.wait())]
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        for w in done:
            if not w.cancelled() and w.exception() is not None:
                raise w.exception()  # type: ignore[misc]

    # -- running ----------------------------------------------------------------------------

    def _start(self, task: Task) -> None:
        runner = asyncio.create_task(self._execute(task), name=f"omniq-task-{task.id}")
        self._running[task.id] = (runner, task)
        self._extended[task.id] = time.monotonic()
        runner.add_done_callback(lambda _: self._finished(task.id))

    def _finished(self, task_id: str) -> None:
        self._reporting.discard(task_id)
        self._running.pop(task_id, None)
        self._extended.pop(task_id, None)
        self._changed.set()

    async def _execute(self, task: Task) -> None:
        self.counts["started"] += 1
        await self._emit("started", task)
        assert self._allowlist is not None
        try:
            func = self._allowlist.resolve(task.func)
        except TaskNotAllowedError as exc:
            await self._report(task, error=f"TaskNotAllowedError: {exc}", retry=False)
            return
        try:
            result = await self._call(func, task)
            encode_checked(result, what=f"result of task {task.id}")
        except asyncio.CancelledError:
            await self._interrupted(task)
            return
        except SerializationError as exc:
            await self._report(task, error=f"SerializationError: {exc}", retry=False)
        except Exception as exc:
            await self._report(task, error=f"{type(exc).__name__}: {exc}")
        else:
            await self._report(task, result=result)

    async def _call(self, func: Callable[..., Any], task: Task) -> Any:
        async with asyncio.timeout(task.timeout) as deadline:
            try:
                if inspect.iscoroutinefunction(func):
                    result = await func(*task.args, **task.kwargs)
                else:
                    loop = asyncio.get_running_loop()
                    call = functools.partial(func, *task.args, **task.kwargs)
                    result = await loop.run_in_executor(self._executor, call)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except asyncio.CancelledError:
                if deadline.expired():
                    raise TimeoutError(f"task exceeded its timeout of {task.timeout}s") from None
                raise

    async def _interrupted(self, task: Task) -> None:
        if task.id in self._ended_elsewhere:
            self._ended_elsewhere.discard(task.id)
            current = await self.queue.get_task(task.id)
            if current is not None and current.status is TaskStatus.CANCELLED:
                self.counts["cancelled"] += 1
                await self._emit("cancelled", current)
            return
        if self._releasing:
            with contextlib.suppress(LeaseLostError, TaskNotFoundError, BackendError):
                assert task.lease is not None
                await self.queue.release(task.id, lease=task.lease)
            return
        raise asyncio.CancelledError

    async def _report(
        self, task: Task, *, result: Any = None, error: str | None = None, retry: bool = True
    ) -> None:
        """Persist the outcome; keep trying while the backend is down and the lease holds."""
        self._reporting.add(task.id)
        delay = 0.1
        deadline = time.monotonic() + self.queue.lease_timeout
        while True:
            try:
                if error is None:
                    await self.queue.complete(task.id, result, lease=task.lease)
                    self.counts["completed"] += 1
                    await self._emit("completed", task)
                else:
                    after = await self.queue.fail(task.id, error, lease=task.lease, retry=retry)
                    event = "retried" if after.status is TaskStatus.RETRYING else "failed"
                    self.counts[event] += 1
                    await self._emit(event, after)
                return
            except (LeaseLostError, TaskNotFoundError) as exc:
                log.warning("task %s: outcome not recorded (%s): %s", task.id,
                            type(exc).__name__, exc)
                return
            except BackendError as exc:
                if time.monotonic() > deadline:
                    log.error("task %s: outcome lost, backend unavailable: %s", task.id, exc)
                    return
                if delay == 0.1:  # the first failure: once per task, not once per try
                    log.warning("task %s: backend unavailable (%s); retrying its outcome",
                                task.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    # -- leases and cancellation ------------------------------------------------------------

    async def _monitor(self) -> None:
        """Extend leases of running tasks and stop those cancelled or claimed elsewhere."""
        tick = min(0.5, self.queue.lease_timeout / 3)
        try:
            while True:
                await asyncio.sleep(tick)
                if self._running:
                    with contextlib.suppress(BackendError):
                        await self._check_running()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("worker monitor failed; stopping the worker")
            self._failure = exc
            self._stopping.set()

    async def _check_running(self) -> None:
        running = dict(self._running)
        current = await self.queue.get_tasks(list(running))
        due = time.monotonic() - self.queue.lease_timeout / 3
        for task_id, (runner, claimed) in running.items():
            now = current.get(task_id)
            lost = now is None or now.status is not TaskStatus.RUNNING or now.lease != claimed.lease
            if not lost and self._extended.get(task_id, 0.0) < due:
                try:
                    await self.queue.extend_lease(task_id, lease=claimed.lease)
                    self._extended[task_id] = time.monotonic()
                except (LeaseLostError, TaskNotFoundError):
                    lost = True
            if lost and task_id not in self._reporting:
                self._ended_elsewhere.add(task_id)
                runner.cancel()

    # -- shutdown ---------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if not self._running:
            return
        runners = [runner for runner, _ in self._running.values()]
        # asyncio.wait never cancels what it waits on, so dropping these leaves runners alone.
        finished = asyncio.ensure_future(asyncio.wait(runners))
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait([finished, hurry], timeout=self.grace_period,
                           return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        hurry.cancel()
        pending = {r for r in runners if not r.done()}
        if pending:
            log.warning("cancelling %d task(s) still running after the grace period", len(pending))
            self._releasing = True
            for runner in pending:
                runner.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _install_signals(self) -> Callable[[], None]:
        if not self.handle_signals:
            return lambda: None
        loop = asyncio.get_running_loop()
        installed = []

        def on_signal() -> None:
            if self._stopping.is_set():
                self._hurry.set()
            self._stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signal support here

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore

    async def _emit(self, event: str, task: Task) -> None:
        for hook in self._hooks[event]:
            try:
                outcome = hook(task)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("%s hook failed for task %s", event, task.id)
