"""Task transition logs, captured from real `omniq worker` runs: one line per transition with
id, queue, attempt and duration; JSON on request; never a password or task arguments."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omniq import Task
from omniq.queue.sqlite import SQLiteTaskQueue
from omniq.tasklog import JsonFormatter, log_transitions
from omniq.worker import WorkerPool
from tests.conformance import tasks
from tests.conftest import POSTGRES_DSN, build_queue, new_namespace

ROOT = Path(__file__).resolve().parents[1]
SECRET_ARG = "arg-secret-7f3c"


def run_worker(url: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "omniq", "worker", "--burst", "--backend", url,
         "--import", "tests.cli_tasks", *flags],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


async def test_json_lines_for_every_transition_without_secrets(tmp_path: Path) -> None:
    password = "s3cret-pw-91"
    namespace = new_namespace()
    # PostgreSQL trusts loopback, so the password in the URL is not needed, only carried.
    url = POSTGRES_DSN.replace("postgres@", f"postgres:{password}@") + f"?namespace={namespace}"
    queue = build_queue("postgres", tmp_path, namespace=namespace)
    async with queue:
        try:
            greet, = await queue.enqueue_many([
                Task(func="tests.cli_tasks:greet", kwargs={"name": SECRET_ARG})])
            flaky = await queue.enqueue(Task(func="tests.cli_tasks:boom", max_retries=1,
                                             retry_delay=0.0))
            result = run_worker(url, "--log-format", "json", "--log-level", "DEBUG",
                                cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert await queue.get_result(greet) == f"hello {SECRET_ARG}!"
        finally:
            await queue.drop_namespace()

    assert password not in result.stderr and SECRET_ARG not in result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert {r["level"] for r in records} <= {"DEBUG", "INFO", "WARNING"}
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    backend_line = next(r["message"] for r in records if r["message"].startswith("backend "))
    assert "***" in backend_line
    assert any(r["message"].startswith("drained in") for r in records)

    tasks = [r for r in records if r["logger"] == "omniq.tasks"]
    events = {(r["task_id"], r["event"], r["attempt"]) for r in tasks}
    assert events == {(greet, "started", 1), (greet, "completed", 1),
                      (flaky, "started", 1), (flaky, "retried", 1),
                      (flaky, "started", 2), (flaky, "failed", 2)}
    assert len(tasks) == 6
    for record in tasks:
        assert record["queue"] == "default" and record["worker"]
        assert record["function"] in ("tests.cli_tasks:greet", "tests.cli_tasks:boom")
        timing = record["wait"] if record["event"] == "started" else record["duration"]
        assert isinstance(timing, float) and 0 <= timing < 30
        assert "args" not in record and "kwargs" not in record and "result" not in record
    assert {r["level"] for r in tasks} == {"DEBUG"}  # a burst run summarises instead
    failed = next(r for r in tasks if r["event"] == "failed")
    assert failed["error"] == "ValueError: boom"
    assert next(r for r in tasks if r["event"] == "retried")["retry"] == "1/1"


async def test_default_levels_of_a_pool(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue = SQLiteTaskQueue(str(tmp_path / "levels.db"))
    async with queue:
        pool = WorkerPool(queue, handle_signals=False)
        log_transitions(pool)
        ok = await queue.enqueue(Task(func=tasks.add, args=(1, 2)))
        bad = await queue.enqueue(Task(func=tasks.boom, max_retries=1, retry_delay=0.0))
        with caplog.at_level(logging.DEBUG, logger="omniq.tasks"):
            await pool.run(burst=True)
    lines: dict[str, list[tuple[str, str]]] = {ok: [], bad: []}
    for record in caplog.records:
        if record.name == "omniq.tasks":
            lines[record.omniq["task_id"]].append((record.levelname, record.omniq["event"]))
    assert lines == {  # the two tasks run concurrently; each one's lines are in order
        ok: [("DEBUG", "started"), ("DEBUG", "completed")],
        bad: [("DEBUG", "started"), ("INFO", "retried"), ("DEBUG", "started"),
              ("WARNING", "failed")],
    }


async def test_text_lines_and_levels(tmp_path: Path) -> None:
    queue = SQLiteTaskQueue(str(tmp_path / "q.db"))
    async with queue:
        added = await queue.enqueue(Task(func="tests.cli_tasks:add", args=(2, 3)))
        failed = await queue.enqueue(Task(func="tests.cli_tasks:boom", kwargs={
            "message": "kaput"}))
    url = f"sqlite:///{tmp_path / 'q.db'}"
    debug = run_worker(url, "--log-level", "DEBUG", cwd=tmp_path)
    assert debug.returncode == 0, debug.stderr
    line = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) omniq\.tasks: task (?P<id>\S+) (?P<event>\w+) "
                      r"queue=default function=tests\.cli_tasks:(?P<function>\w+) attempt=1 "
                      r"(?:wait|duration)=\d+\.\d{3}s(?: error=(?P<error>.*))?$")
    seen = [m.groupdict() for m in map(line.match, debug.stderr.splitlines()) if m]
    assert [(s["id"], s["event"]) for s in seen if s["id"] == added] == [
        (added, "started"), (added, "completed")]
    assert [(s["event"], s["error"]) for s in seen if s["id"] == failed] == [
        ("started", None), ("failed", "ValueError: kaput")]

    # At the default level a burst worker prints its summary, not a line per task.
    async with queue:
        await queue.enqueue(Task(func="tests.cli_tasks:add", args=(1, 1)))
    quiet = run_worker(url, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "omniq.tasks" not in quiet.stderr and "drained in" in quiet.stderr


def test_json_formatter_keeps_tracebacks() -> None:
    try:
        raise RuntimeError("inner")
    except RuntimeError:
        record = logging.getLogger("omniq.test").makeRecord(
            "omniq.test", logging.ERROR, __file__, 1, "went %s", ("wrong",), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "went wrong" and entry["level"] == "ERROR"
    assert "RuntimeError: inner" in entry["exc"] and entry["time"].endswith("+00:00")
