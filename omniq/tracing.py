"""OpenTelemetry tracing (``pip install 'omniq[otel]'``): one trace from the code that
enqueues a task to the worker that runs it.

    tracing.instrument(queue)   # producer: an "enqueue" span, whose context goes into
                                # each task's headers (W3C traceparent, via the global
                                # propagator)
    tracing.instrument(pool)    # worker: every run is a span, the enqueue span's child

Runs of recurring tasks start their own trace, linked to the enqueue, so a cron task does not
grow one trace forever. Nothing here is imported by ``import omniq``; uninstrumented queues
and pools pay nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "omniq.tracing needs opentelemetry-api: pip install 'omniq[otel]'"
    ) from exc

from msgspec.structs import replace

from omniq.models.task import Task
from omniq.observe import function_name
from omniq.queue.base import BaseTaskQueue
from omniq.worker import WorkerPool

__all__ = ["instrument"]

_SYSTEM = {"messaging.system": "omniq"}


def instrument(
    target: WorkerPool | BaseTaskQueue, *, tracer_provider: trace.TracerProvider | None = None
) -> None:
    """Trace a queue's enqueues (and carry their context in ``Task.headers``), or a pool's
    runs. ``tracer_provider`` defaults to the global one."""
    from omniq import __version__

    tracer = trace.get_tracer("omniq", __version__, tracer_provider=tracer_provider)
    if isinstance(target, BaseTaskQueue):
        target.add_enqueue_middleware(_enqueue_middleware(tracer))
    elif isinstance(target, WorkerPool):
        target.add_run_middleware(_run_middleware(tracer))
    else:
        raise TypeError(f"expected a WorkerPool or a queue, not {type(target).__name__}")


Store = Callable[[list[Task]], Awaitable[list[bool]]]


def _enqueue_middleware(
    tracer: trace.Tracer,
) -> Callable[[list[Task], Store], Awaitable[list[bool]]]:
    async def enqueue(tasks: list[Task], call_next: Store) -> list[bool]:
        queues = sorted({t.queue_name for t in tasks})
        attributes: dict[str, Any] = {
            **_SYSTEM,
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(tasks),
            "messaging.destination.name": ",".join(queues),
        }
        if len(tasks) == 1:
            attributes["messaging.message.id"] = attributes["omniq.task.id"] = tasks[0].id
        name = f"enqueue {queues[0]}" if len(queues) == 1 else "enqueue"
        with tracer.start_as_current_span(name, kind=trace.SpanKind.PRODUCER,
                                          attributes=attributes) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            if carrier:  # empty when nothing records: tasks then stay as they were
                tasks = [replace(t, headers={**carrier, **t.headers}) for t in tasks]
            inserted = await call_next(tasks)
            span.set_attribute("omniq.inserted", sum(inserted))
            return inserted

    return enqueue


def _run_middleware(
    tracer: trace.Tracer,
) -> Callable[[Task, Callable[[], Awaitable[Any]]], Awaitable[Any]]:
    async def run(task: Task, call_next: Callable[[], Awaitable[Any]]) -> Any:
        # Without headers the run is a root span, whatever was current when the pool started.
        parent = propagate.extract(task.headers) if task.headers else Context()
        links: list[trace.Link] = []
        if task.recurring:
            enqueued = trace.get_current_span(parent).get_span_context()
            links = [trace.Link(enqueued)] if enqueued.is_valid else []
            parent = Context()
        function = function_name(task)
        attributes: dict[str, Any] = {
            **_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": task.queue_name,
            "messaging.message.id": task.id,
            "omniq.task.id": task.id,
            "omniq.queue": task.queue_name,
            "omniq.task.function": function,
            "omniq.task.attempt": task.attempts,
            "omniq.task.retries": task.retries,
        }
        with tracer.start_as_current_span(f"run {function}", context=parent, links=links,
                                          kind=trace.SpanKind.CONSUMER,
                                          attributes=attributes) as span:
            try:
                return await call_next()
            except asyncio.CancelledError:
                span.set_attribute("omniq.task.interrupted", True)
                raise

    return run
