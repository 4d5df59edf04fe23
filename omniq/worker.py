"""WorkerPool: claims tasks from its queues and runs them, with leases, timeouts and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
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

from msgspec.structs import replace

from omniq.exceptions import (
    BackendError,
    LeaseLostError,
    OmniQError,
    SerializationError,
    TaskNotAllowedError,
    TaskNotFoundError,
)
from omniq.models.task import Task, TaskStatus, check_queue_name
from omniq.outcomes import MAX_BACKOFF as _MAX_BACKOFF
from omniq.outcomes import OutcomeWriter, cancelling
from omniq.queue.base import BaseTaskQueue, Outcome
from omniq.registry import Allowlist
from omniq.serialization import encode_checked

log = logging.getLogger("omniq.worker")


class _Run:
    """A running task: its runner, the task as last seen in the store, its last heartbeat."""

    __slots__ = ("extended", "runner", "task")

    def __init__(self, runner: asyncio.Task[None], task: Task, extended: float) -> None:
        self.runner = runner
        self.task = task
        self.extended = extended

Hook = Callable[[Task], Awaitable[None] | None]
#: Wraps one run of a task's function: ``await middleware(task, call_next)`` awaits
#: ``call_next()`` (the run, timeout included) and returns its result or lets its exception
#: through. ``omniq.tracing`` runs the function inside a span this way.
RunMiddleware = Callable[[Task, Callable[[], Awaitable[Any]]], Awaitable[Any]]
EVENTS = ("started", "completed", "failed", "retried", "cancelled", "expired")
# Longest pause between attempts while the backend is down: work resumes at most this long
# (plus a reconnect) after the backend returns.


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
        # Tasks whose function is running (they hold the concurrency slots), and every runner
        # including those waiting for their outcome to be written.
        self._running: dict[str, _Run] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._is_async: dict[Callable[..., Any], bool] = {}
        self._outcomes = OutcomeWriter(queue)
        self._run_middleware: list[RunMiddleware] = []
        self._ended_elsewhere: set[str] = set()
        self._stopping = False  # stop() or a signal: claim no more
        self._hurry = asyncio.Event()  # a second signal: skip what is left of the grace period
        # Done when a slot frees or a stop is asked for: what the claim loop sleeps on. A
        # plain future, not Events, so that a sleep starts no helper tasks.
        self._poked: asyncio.Future[None] | None = None
        self._nudged = True
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

    def add_run_middleware(self, middleware: RunMiddleware) -> None:
        """Wrap every run of a task function; the first added is the outermost."""
        self._run_middleware.append(middleware)

    @property
    def active(self) -> int:
        """Tasks running right now."""
        return len(self._running)

    async def stop(self) -> None:
        """Stop claiming; running tasks finish within the grace period."""
        self._stop_claiming()

    async def run(self, burst: bool = False) -> None:
        """Claim and run tasks until stopped (or, with ``burst``, until the queues drain).
        A ``stop()`` that came before ``run()`` makes it return without claiming."""
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
            await self._outcomes.flush()
            await asyncio.gather(*self._runners, return_exceptions=True)  # hooks after writes
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            restore()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._stopping = False  # the pool can run again
            self._hurry.clear()
            log.info("worker %s stopped", self.worker_id)
        if self._failure is not None:
            raise self._failure

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self, burst: bool) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                # Read before claiming: work made ready during the claim must wake us.
                since = self.queue.generation
                free = self.concurrency - self.active
                claimed = await self._claim_some()
                backoff = 0.1  # the backend answered: the next outage starts afresh
                if claimed or self.active >= self.concurrency:
                    if self.active >= self.concurrency:
                        # Until a slot frees. The bare future wakes this loop before the
                        # outcome writer starts, so the claim for the freed slots goes out
                        # first and its tasks run while the outcomes are written.
                        await self._arm()
                    elif claimed < free and self.queue.short_claim_drains:
                        # Nothing else was due: asking again would be a wasted round trip.
                        # Work that arrived since the claim began wakes the wait at once.
                        await self._idle(since, burst)
                    continue
                if burst and not self._runners and not self._outcomes.busy \
                        and await self._drained():
                    return
                await self._idle(since, burst)
            except BackendError as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc  # a driver reworded our cancellation
                log.warning("backend unavailable (%s); retrying in %.1fs", exc, backoff)
                await self._sleep(backoff)
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

    async def _idle(self, since: int, burst: bool) -> None:
        timeout = self.idle_timeout
        due = await self.queue.next_ready_at(self.queues)
        if due is not None:
            timeout = min(timeout, max(due - time.time(), 0.0))
        # Waiting for work, which the queue signals: a slot freeing or an outcome being
        # recorded makes nothing claimable (waking for them cost an idle worker two round
        # trips per task), except to a burst run waiting for its last tasks to finish.
        await self.queue.wait_for_work(self.queues, timeout, since=since,
                                       interrupt=self._arm(nudged=burst))

    def _arm(self, *, nudged: bool = True) -> asyncio.Future[None]:
        """A new future for the claim loop to sleep on: ``_poke`` ends it (at once if a stop
        was asked for already), and if ``nudged``, so does ``_nudge``."""
        self._poked = asyncio.get_running_loop().create_future()
        self._nudged = nudged
        if self._stopping:
            self._poked.set_result(None)
        return self._poked

    def _poke(self) -> None:
        if self._poked is not None and not self._poked.done():
            self._poked.set_result(None)

    def _nudge(self) -> None:
        """A slot freed or an outcome was recorded."""
        if self._nudged:
            self._poke()

    def _stop_claiming(self) -> None:
        self._stopping = True
        self._poke()

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until a stop is asked for."""
        end = time.monotonic() + delay
        while not self._stopping and (left := end - time.monotonic()) > 0:
            await asyncio.wait({self._arm(nudged=False)}, timeout=left)

    # -- running ----------------------------------------------------------------------------

    def _start(self, task: Task) -> None:
        runner = asyncio.create_task(self._execute(task), name=f"omniq-task-{task.id}")
        self._running[task.id] = _Run(runner, task, time.monotonic())
        self._runners.add(runner)
        runner.add_done_callback(functools.partial(self._finished, task.id))

    def _finished(self, task_id: str, runner: asyncio.Task[None]) -> None:
        self._running.pop(task_id, None)
        self._runners.discard(runner)
        self._nudge()

    async def _execute(self, task: Task) -> None:
        self.counts["started"] += 1
        if self._hooks["started"]:
            await self._emit("started", task)
        assert self._allowlist is not None
        try:
            func = self._allowlist.resolve(task.func)
        except TaskNotAllowedError as exc:
            self._report(task.id, error=f"TaskNotAllowedError: {exc}", retry=False)
            return
        try:
            call = self._call_through_middleware if self._run_middleware else self._call
            result = await call(func, task)
            encode_checked(result, what=f"result of task {task.id}")
        except asyncio.CancelledError:
            await self._interrupted(task)
            return
        except SerializationError as exc:
            self._report(task.id, error=f"SerializationError: {exc}", retry=False)
        except Exception as exc:
            self._report(task.id, error=f"{type(exc).__name__}: {exc}")
        else:
            self._report(task.id, result=result)

    async def _call_through_middleware(self, func: Callable[..., Any], task: Task) -> Any:
        call: Callable[[], Awaitable[Any]] = functools.partial(self._call, func, task)
        for middleware in reversed(self._run_middleware):
            call = functools.partial(middleware, task, call)
        return await call()

    async def _call(self, func: Callable[..., Any], task: Task) -> Any:
        if task.timeout is None:
            return await self._invoke(func, task)
        async with asyncio.timeout(task.timeout) as deadline:
            try:
                return await self._invoke(func, task)
            except asyncio.CancelledError:
                if deadline.expired():
                    raise TimeoutError(f"task exceeded its timeout of {task.timeout}s") from None
                raise

    async def _invoke(self, func: Callable[..., Any], task: Task) -> Any:
        is_async = self._is_async.get(func)
        if is_async is None:
            is_async = self._is_async[func] = inspect.iscoroutinefunction(func)
        if is_async:
            result = await func(*task.args, **task.kwargs)
        else:
            loop = asyncio.get_running_loop()
            # In the thread, the loop's context variables (trace context) still hold.
            call = functools.partial(
                contextvars.copy_context().run, func, *task.args, **task.kwargs
            )
            result = await loop.run_in_executor(self._executor, call)
        if inspect.isawaitable(result):
            result = await result
        return result

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

    def _report(
        self, task_id: str, *, result: Any = None, error: str | None = None, retry: bool = True
    ) -> None:
        """Hand the outcome to the group commit. The slot frees now, so the next claim
        overlaps the write; the monitor no longer heartbeats the task (its lease covers the
        write's retries). Counts and hooks follow once it is stored."""
        claimed = self._running.pop(task_id).task  # as of the claim or the latest heartbeat
        self._nudge()
        done = functools.partial(self._recorded, claimed, error is None)
        self._outcomes.submit(Outcome(claimed, result, error, retry), done)

    def _recorded(self, claimed: Task, success: bool, state: Task | OmniQError) -> None:
        self._nudge()  # a burst worker may be waiting for its last outcomes
        if isinstance(state, BackendError):
            log.error("task %s: outcome lost, backend unavailable: %s", claimed.id, state)
            return
        if isinstance(state, OmniQError):
            log.warning("task %s: outcome not recorded (%s): %s", claimed.id,
                        type(state).__name__, state)
            return
        if success:
            event = "completed"
        else:
            event = "retried" if state.status is TaskStatus.RETRYING else "failed"
        self.counts[event] += 1
        if self._hooks[event]:
            self._track(asyncio.create_task(self._emit(event, claimed if success else state)))

    def _track(self, runner: asyncio.Task[None]) -> None:
        # Kept referenced (so not garbage-collected) and awaited by burst runs and shutdown.
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

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
            self._stop_claiming()

    async def _check_running(self) -> None:
        running = dict(self._running)
        current = await self.queue.get_tasks(list(running))
        due = time.monotonic() - self.queue.lease_timeout / 3
        for task_id, run in running.items():
            if task_id not in self._running:
                continue  # it finished meanwhile: its outcome is being written
            now = current.get(task_id)
            if now is None or now.status is not TaskStatus.RUNNING or now.lease != run.task.lease:
                self._ended_elsewhere.add(task_id)
                run.runner.cancel()
                continue
            run.task = now  # the outcome's write is fenced by the latest revision
            if run.extended < due:
                try:
                    await self.queue.extend_lease(task_id, lease=now.lease)
                except (LeaseLostError, TaskNotFoundError):
                    self._ended_elsewhere.add(task_id)
                    run.runner.cancel()
                else:
                    run.extended = time.monotonic()
                    run.task = replace(now, revision=now.revision + 1)

    # -- shutdown ---------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if not self._runners:
            return
        runners = list(self._runners)
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
            if self._stopping:
                self._hurry.set()
            self._stop_claiming()

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
