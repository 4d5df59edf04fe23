"""Prometheus metrics, read from the real HTTP endpoint of workers that ran real tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from omniq import Schedule, Task, TaskStatus
from omniq.metrics import Metrics
from omniq.queue.sqlite import SQLiteTaskQueue
from omniq.worker import WorkerPool
from tests.conformance import tasks
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[1]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when absent; ``function`` may be given without its module."""
    if "function" in labels and ":" not in labels["function"]:
        labels["function"] = f"tests.conformance.tasks:{labels['function']}"
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def test_worker_metrics_over_http(tmp_path: Path) -> None:
    queue = SQLiteTaskQueue(str(tmp_path / "m.db"))
    async with queue:
        metrics = Metrics(depth_interval=0.1)
        pool = WorkerPool(queue, concurrency=4, handle_signals=False)
        metrics.instrument(pool)
        metrics.instrument(queue)
        long_ago = datetime.now(UTC) - timedelta(seconds=30)
        batch = [
            *(Task(func=tasks.add, args=(i, i)) for i in range(3)),
            *(Task(func=tasks.multiply, args=(i, 2)) for i in range(2)),
            Task(func=tasks.boom, max_retries=2, retry_delay=0.0),
            Task(func=tasks.add, args=(0, 0), ttl=1.0, schedule=Schedule(run_at=long_ago)),
            Task(func=tasks.add, args=(1, 1), id="once"),
        ]
        await queue.enqueue_many(batch)
        await queue.enqueue(Task(func=tasks.add, args=(1, 1), id="once"))  # exists: not counted
        async with metrics.serve(port=0, host="127.0.0.1") as port:
            runner = asyncio.create_task(pool.run())
            try:
                sleeper = await queue.enqueue(Task(func=tasks.sleep_for, args=(30.0,)))
                await eventually(lambda: _status(queue, sleeper, TaskStatus.RUNNING), 30)
                assert await queue.cancel(sleeper)

                def done(samples: Samples) -> bool:
                    return (total(samples, "omniq_tasks_completed_total") == 6
                            and total(samples, "omniq_tasks_cancelled_total") == 1
                            and total(samples, "omniq_tasks_failed_total") == 1
                            and value(samples, "omniq_queue_tasks", queue="default",
                                      status="completed") == 6)

                samples = await eventually(lambda: _scraped_if(port, done), 30, 0.1)
            finally:
                await pool.stop()
                await runner

    counted = {event: total(samples, f"omniq_tasks_{event}_total") for event in
               ("enqueued", "started", "completed", "failed", "retried", "cancelled", "expired")}
    assert counted == {"enqueued": 9, "started": 10, "completed": 6, "failed": 1, "retried": 2,
                       "cancelled": 1, "expired": 1}
    assert value(samples, "omniq_tasks_completed_total", queue="default", function="add") == 4
    assert value(samples, "omniq_tasks_completed_total", queue="default",
                 function="multiply") == 2
    assert value(samples, "omniq_tasks_retried_total", queue="default", function="boom") == 2
    assert value(samples, "omniq_tasks_expired_total", queue="default", function="add") == 1
    assert value(samples, "omniq_tasks_enqueued_total", queue="default", function="add") == 5
    # A run time per finished attempt, a wait time per start.
    assert value(samples, "omniq_task_run_seconds_count", queue="default", function="boom") == 3
    assert total(samples, "omniq_task_run_seconds_count") == 10
    assert total(samples, "omniq_task_wait_seconds_count") == 10
    slept = value(samples, "omniq_task_run_seconds_sum", queue="default", function="sleep_for")
    assert 0 < slept < 30  # cancelled long before its 30 s
    depth = {status.value: value(samples, "omniq_queue_tasks", queue="default",
                                 status=status.value) for status in TaskStatus}
    assert depth == {"pending": 0, "scheduled": 0, "waiting": 0, "running": 0, "retrying": 0,
                     "completed": 6, "failed": 1, "cancelled": 1, "expired": 1}
    assert value(samples, "omniq_queue_paused", queue="default") == 0
    assert ("process_resident_memory_bytes", frozenset()) in samples


async def _status(queue: SQLiteTaskQueue, task_id: str, status: TaskStatus) -> bool:
    task = await queue.get_task(task_id)
    return task is not None and task.status is status


async def _scraped_if(port: int, done: object) -> Samples | None:
    samples = await asyncio.to_thread(scrape, port)
    return samples if done(samples) else None  # type: ignore[operator]


def test_metrics_instances_do_not_share_state() -> None:
    first, second = Metrics(), Metrics()  # no "duplicated timeseries" between registries
    assert first.registry is not second.registry
    with pytest.raises(ValueError, match="depth_interval"):
        Metrics(depth_interval=0)
    with pytest.raises(TypeError, match="CollectorRegistry"):
        Metrics(registry=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="WorkerPool or a queue"):
        first.instrument("pool")  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    url, port = f"sqlite:///{tmp_path / 'cli.db'}", _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq", "worker", "--backend", url, "--import", "tests.cli_tasks",
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--log-level", "WARNING"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield proc, port, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()[-2000:]


async def test_omniq_worker_metrics_port(
    worker_process: tuple[subprocess.Popen[bytes], int, str], tmp_path: Path
) -> None:
    _, port, _ = worker_process
    queue = SQLiteTaskQueue(str(tmp_path / "cli.db"))
    async with queue:
        await queue.enqueue_many([Task(func="tests.cli_tasks:add", args=(i, 1)) for i in range(4)])
        await queue.enqueue(Task(func="tests.cli_tasks:boom", queue_name="default"))

        def done(samples: Samples) -> bool:
            return (total(samples, "omniq_tasks_completed_total") == 4
                    and total(samples, "omniq_tasks_failed_total") == 1)

        async def scraped() -> Samples | None:
            try:
                return await _scraped_if(port, done)
            except OSError:  # not listening yet
                return None

        samples = await eventually(scraped, 60, 0.1)
    ref = {"queue": "default", "function": "tests.cli_tasks:add"}
    assert value(samples, "omniq_tasks_started_total", **ref) == 4
    assert value(samples, "omniq_task_run_seconds_count", **ref) == 4
    # Depth is read at start and every 5 s (its values are checked in the test above).
    depth_labels = frozenset({("queue", "default"), ("status", "pending")})
    assert ("omniq_queue_tasks", depth_labels) in samples
    assert value(samples, "omniq_worker_running_tasks") == 0
