"""OpenTelemetry: the trace context at enqueue travels through the store with the task, and
the run is the enqueue span's child (SDK in-memory exporter, every backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from omniq import Schedule, Task
from omniq.queue.sqlite import SQLiteTaskQueue
from omniq.serialization import decode_task, encode_task
from omniq.tracing import instrument
from omniq.worker import WorkerPool
from tests import ops_tasks
from tests.conftest import QueueFactory

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_request_enqueue_run_is_one_trace(
    backend: str, make_queue: QueueFactory, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    producer = await make_queue()
    # A second connection for the worker: the context must come through the store (the
    # in-memory stores are private to their queue object).
    consumer = producer if backend in ("memory", "file-memory") else await make_queue()
    instrument(producer, tracer_provider=provider)
    pool = WorkerPool(consumer, handle_signals=False)
    instrument(pool, tracer_provider=provider)
    ops_tasks.seen.clear()

    with provider.get_tracer("app").start_as_current_span("request") as request:
        loop_id = await producer.enqueue(Task(func=ops_tasks.traced, args=("loop",)))
        thread_id, failing_id = await producer.enqueue_many([
            Task(func=ops_tasks.traced_in_thread, args=("thread",)),
            Task(func=ops_tasks.traced_failure, args=("bad",)),
        ])
    trace_id = request.get_span_context().trace_id
    stored = await consumer.get_task(loop_id)
    assert stored is not None and stored.headers["traceparent"].startswith(f"00-{trace_id:032x}-")

    await pool.run(burst=True)

    finished = exporter.get_finished_spans()
    assert {s.context.trace_id for s in finished} == {trace_id}, "one trace for everything"
    single, batch = named(finished, "enqueue default")
    assert single.parent is not None and single.parent.span_id == request.get_span_context().span_id
    assert batch.parent is not None and batch.parent.span_id == request.get_span_context().span_id
    assert single.kind is SpanKind.PRODUCER and single.attributes is not None
    assert single.attributes["omniq.task.id"] == loop_id
    assert batch.attributes is not None and batch.attributes["messaging.batch.message_count"] == 2

    runs = {s.attributes["omniq.task.id"]: s for s in finished  # type: ignore[index]
            if s.name.startswith("run ")}
    assert set(runs) == {loop_id, thread_id, failing_id}
    assert runs[loop_id].parent.span_id == single.context.span_id  # type: ignore[union-attr]
    for task_id in (thread_id, failing_id):
        assert runs[task_id].parent.span_id == batch.context.span_id  # type: ignore[union-attr]
    run = runs[loop_id]
    assert run.name == "run tests.ops_tasks:traced" and run.kind is SpanKind.CONSUMER
    assert run.attributes is not None
    assert (run.attributes["omniq.queue"], run.attributes["omniq.task.attempt"]) == ("default", 1)
    assert runs[failing_id].status.status_code is StatusCode.ERROR
    assert runs[failing_id].events[0].name == "exception"

    # Inside the function (on the loop and in a worker thread) the run span is current.
    inside = {label: (t, s, thread) for label, t, s, thread in ops_tasks.seen}
    for label, task_id in (("loop", loop_id), ("thread", thread_id), ("bad", failing_id)):
        assert inside[label][:2] == (trace_id, runs[task_id].context.span_id)
    assert inside["thread"][2].startswith("omniq-task")


async def test_untraced_tasks_run_as_roots_and_recurring_runs_link(
    spans: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    provider, exporter = spans
    queue = SQLiteTaskQueue(str(tmp_path / "t.db"))
    async with queue:
        plain = await queue.enqueue(Task(func=ops_tasks.traced, args=("plain",)))
        instrument(queue, tracer_provider=provider)
        with provider.get_tracer("app").start_as_current_span("request"):
            # Due now: one run, then the next occurrence an hour later.
            every_hour = Schedule(run_at=datetime.now(UTC), interval=3600)
            recurring = await queue.enqueue(Task(func=ops_tasks.traced, args=("cron",),
                                                 schedule=every_hour))
        pool = WorkerPool(queue, handle_signals=False)
        instrument(pool, tracer_provider=provider)
        with provider.get_tracer("app").start_as_current_span("unrelated"):
            await pool.run(burst=True)
    finished = exporter.get_finished_spans()
    runs = {s.attributes["omniq.task.id"]: s for s in finished  # type: ignore[index]
            if s.name.startswith("run ")}
    assert runs[plain].parent is None  # no headers: a root, not a child of "unrelated"
    enqueue = named(finished, "enqueue default")[0]
    cron = runs[recurring]
    assert cron.parent is None and cron.context.trace_id != enqueue.context.trace_id
    assert [link.context.span_id for link in cron.links] == [enqueue.context.span_id]


def test_headers_are_optional_in_stored_records() -> None:
    task = Task(func="tests.ops_tasks:traced", args=("x",))
    record = msgspec.msgpack.decode(encode_task(task))
    assert "headers" not in record  # empty headers are not stored
    # A record written before headers existed still decodes.
    assert decode_task(msgspec.msgpack.encode(record)).headers == {}
    carried = Task(func="tests.ops_tasks:traced", headers={"traceparent": "00-ab-cd-01"})
    assert decode_task(encode_task(carried)).headers == {"traceparent": "00-ab-cd-01"}
    with pytest.raises(ValueError, match="headers must be a dict of strings"):
        Task(func="tests.ops_tasks:traced", headers={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="WorkerPool or a queue"):
        instrument("pool")  # type: ignore[arg-type]


async def test_omniq_worker_tracing_flag(
    spans: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    provider, exporter = spans
    out = tmp_path / "spans.jsonl"
    queue = SQLiteTaskQueue(str(tmp_path / "w.db"))
    async with queue:
        instrument(queue, tracer_provider=provider)
        with provider.get_tracer("app").start_as_current_span("request"):
            task_id = await queue.enqueue(Task(func=ops_tasks.traced, args=("cli",)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMNIQ_TEST_SPANS": str(out)}
    worker = subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "--burst", "--tracing",
         "--backend", f"sqlite:///{tmp_path / 'w.db'}",
         "--import", "tests.otel_setup", "--import", "tests.ops_tasks"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    enqueue = named(exporter.get_finished_spans(), "enqueue default")[0]
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(s["name"], s["task_id"]) for s in exported] == [("run tests.ops_tasks:traced",
                                                               task_id)]
    assert exported[0]["trace_id"] == enqueue.context.trace_id
    assert exported[0]["parent_span_id"] == enqueue.context.span_id
