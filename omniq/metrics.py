"""Prometheus metrics for workers and producers (``pip install 'omniq[metrics]'``).

    metrics = Metrics()            # a private CollectorRegistry unless one is given
    metrics.instrument(pool)       # counters and histograms from the pool's events
    metrics.instrument(queue)      # enqueues made through this queue object
    async with metrics.serve(9100):
        await pool.run()

Counters per queue and function: ``omniq_tasks_{enqueued,started,completed,failed,retried,
cancelled,expired}_total``; histograms ``omniq_task_run_seconds`` (claim to recorded
outcome) and ``omniq_task_wait_seconds`` (due to claim); gauges ``omniq_queue_tasks`` per
queue and status and ``omniq_queue_paused``, refreshed from ``queue.stats()`` every
``depth_interval`` seconds while serving (never per scrape).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

try:
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        start_http_server,
    )
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.process_collector import ProcessCollector
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "omniq.metrics needs prometheus-client: pip install 'omniq[metrics]'"
    ) from exc

from omniq.models.task import Task, TaskStatus
from omniq.observe import function_name, run_seconds, wait_seconds
from omniq.queue.base import BaseTaskQueue
from omniq.worker import WorkerPool

log = logging.getLogger("omniq.metrics")

#: Seconds; tasks run from milliseconds to an hour.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           300.0, 900.0, 3600.0)
EVENTS = ("enqueued", "started", "completed", "failed", "retried", "cancelled", "expired")
_RAN = frozenset({"completed", "failed", "retried", "cancelled"})
_LABELS = ("queue", "function")

__all__ = ["BUCKETS", "Metrics"]


class Metrics:
    """OmniQ's metrics in one Prometheus registry (``registry``: a private one by default,
    with process and GC metrics, so several instances never collide)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, depth_interval: float = 5.0
    ) -> None:
        if not depth_interval > 0:
            raise ValueError(f"depth_interval must be positive, not {depth_interval!r}")
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            GCCollector(registry=registry)
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(f"registry must be a CollectorRegistry, not {type(registry).__name__}")
        self.registry = registry
        self.depth_interval = depth_interval
        self._counters = {
            event: Counter(f"omniq_tasks_{event}", f"Tasks {event}, per queue and function",
                           _LABELS, registry=registry)
            for event in EVENTS
        }
        self._run = Histogram("omniq_task_run_seconds",
                              "Seconds from a task's claim to its recorded outcome",
                              _LABELS, buckets=BUCKETS, registry=registry)
        self._wait = Histogram("omniq_task_wait_seconds",
                               "Seconds from a task becoming due to its claim",
                               _LABELS, buckets=BUCKETS, registry=registry)
        self._depth = Gauge("omniq_queue_tasks", "Tasks per queue and status (from stats())",
                            ("queue", "status"), registry=registry)
        self._paused = Gauge("omniq_queue_paused", "1 while the queue is paused", ("queue",),
                             registry=registry)
        running = Gauge("omniq_worker_running_tasks",
                        "Tasks running now in this process's instrumented pools",
                        registry=registry)
        running.set_function(lambda: sum(pool.active for pool in self._pools))
        self._pools: list[WorkerPool] = []
        self._watched: list[tuple[BaseTaskQueue, tuple[str, ...]]] = []
        # labels() takes a lock and validates; the children are looked up once per key.
        self._children: dict[tuple[Any, str, str], Any] = {}

    # -- instrumenting ----------------------------------------------------------------------

    def instrument(self, target: WorkerPool | BaseTaskQueue) -> None:
        """Count a pool's task events (and watch its queues' depth), or a queue's enqueues."""
        if isinstance(target, BaseTaskQueue):
            target.add_enqueue_middleware(self._count_enqueued)
            return
        if not isinstance(target, WorkerPool):
            raise TypeError(f"expected a WorkerPool or a queue, not {type(target).__name__}")
        for event in EVENTS[1:]:
            target.on(event, self._hook(event))
        self._pools.append(target)
        self.watch(target.queue, target.queues)

    def watch(self, queue: BaseTaskQueue, queue_names: Sequence[str]) -> None:
        """Report the depth per status of these queues (refreshed while serving)."""
        self._watched.append((queue, tuple(queue_names)))

    def _child(self, metric: Any, queue: str, function: str) -> Any:
        key = (metric, queue, function)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(queue, function)
        return child

    def _hook(self, event: str) -> Callable[[Task], None]:
        counter = self._counters[event]

        def hook(task: Task) -> None:
            queue, function = task.queue_name, function_name(task)
            self._child(counter, queue, function).inc()
            seconds = wait_seconds(task) if event == "started" else (
                run_seconds(task) if event in _RAN else None)
            if seconds is not None:
                histogram = self._wait if event == "started" else self._run
                self._child(histogram, queue, function).observe(seconds)

        return hook

    async def _count_enqueued(
        self, tasks: list[Task], call_next: Callable[[list[Task]], Any]
    ) -> list[bool]:
        inserted: list[bool] = await call_next(tasks)
        counter = self._counters["enqueued"]
        for task, new in zip(tasks, inserted, strict=True):
            if new:
                self._child(counter, task.queue_name, function_name(task)).inc()
        return inserted

    # -- queue depth ------------------------------------------------------------------------

    async def refresh_depth(self) -> None:
        """Read ``stats()`` of every watched queue into the depth gauges, once."""
        for queue, names in self._watched:
            for name in names:
                stats = await queue.stats(name)
                for status in TaskStatus:
                    self._depth.labels(name, status.value).set(getattr(stats, status.value))
                self._paused.labels(name).set(1 if stats.paused else 0)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh_depth()
            except Exception as exc:  # the gauges keep their last values; the worker reports
                log.debug("queue depth not refreshed: %s", exc)
            await asyncio.sleep(self.depth_interval)

    # -- serving ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(self, port: int = 9100, host: str = "0.0.0.0") -> AsyncIterator[int]:
        """Serve ``/metrics`` over HTTP (a daemon thread) and refresh the depth gauges while
        inside; yields the bound port (``port=0`` picks a free one)."""
        server, thread = start_http_server(port, host, registry=self.registry)
        refresher = asyncio.create_task(self._refresh_forever(), name="omniq-metrics-depth")
        try:
            yield int(server.server_port)
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join(timeout=5)
