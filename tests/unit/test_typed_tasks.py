"""@omniq.task keeps the function's signature: mypy checks enqueue arguments and results,
and the decorated object still behaves as the function everywhere it did before."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path

import pytest
from mypy import api as mypy_api

import omniq
from omniq.queue.memory import MemoryTaskQueue
from omniq.registry import Allowlist, TaskFunction, TaskHandle, reference
from omniq.worker import WorkerPool
from tests.conformance import tasks
from tests.typed import example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "typed" / "example.py"
MARK = re.compile(r"  # expect: ([a-z-]+)$")
ERROR = re.compile(r"^[^:]+:(?P<line>\d+): error: (?P<message>.*)  \[(?P<code>[a-z-]+)\]$")


def test_mypy_reports_exactly_the_marked_errors() -> None:
    stdout, stderr, status = mypy_api.run([
        "--strict", "--no-error-summary", "--hide-error-context",
        "--config-file", str(ROOT / "pyproject.toml"),
        "--cache-dir", str(ROOT / ".mypy_cache"),
        str(EXAMPLE),
    ])
    assert status == 1, (stdout, stderr)
    errors = {}
    for line in stdout.splitlines():
        match = ERROR.match(line)
        if match:
            errors[int(match["line"])] = (match["code"], match["message"])
    source = EXAMPLE.read_text().splitlines()
    expected = {number: match[1] for number, text in enumerate(source, start=1)
                if (match := MARK.search(text))}
    assert len(expected) == 10
    assert {n: code for n, (code, _) in errors.items()} == expected, stdout

    def message(snippet: str) -> str:
        return next(errors[n][1] for n in expected if snippet in source[n - 1])

    assert 'Argument "to" to "enqueue"' in message("to=42") and 'expected "str"' in message("to=42")
    assert 'Unexpected keyword argument "recipient"' in message("recipient=")
    assert 'Missing positional argument "text"' in message("enqueue(queue)  #")
    # result() is the function's return type, awaited for the async one.
    assert '(expression has type "bool", variable has type "str")' in message("text: str")
    assert 'expression has type "dict[str, int]", variable has type "int"' in message("total: int")
    assert 'expected "int"' in message('priority="high"')


async def test_the_typed_example_runs_for_real() -> None:
    queue = MemoryTaskQueue()
    async with queue:
        pool = WorkerPool(queue, queues=("mail", "default"), handle_signals=False)
        runner = asyncio.create_task(pool.run())
        try:
            ok, counts, direct, local = await asyncio.wait_for(example.correct(queue), 30)
        finally:
            await pool.stop()
            await runner
    assert (ok, counts, direct, local) == (True, {"a": 2}, True, {"a": 2})
    assert pool.counts["completed"] == 4


def test_decorated_object_keeps_the_function() -> None:
    assert isinstance(tasks.add, TaskFunction) and isinstance(tasks.multiply, TaskFunction)
    assert tasks.multiply(3, 4) == 12  # calling it calls the function
    assert asyncio.run(tasks.add(2, 3)) == 5
    assert tasks.add.__name__ == "add" and tasks.add.__module__ == "tests.conformance.tasks"
    assert inspect.signature(tasks.add) == inspect.signature(tasks.add.func)
    assert reference(tasks.add) == "tests.conformance.tasks:add"
    assert repr(tasks.add) == "<omniq task tests.conformance.tasks:add>"


def test_task_of_a_decorated_function_stores_the_original_reference() -> None:
    task = omniq.Task(func=tasks.with_defaults)
    assert task.func is tasks.with_defaults.func
    assert task.func_ref == "tests.conformance.tasks:with_defaults"
    # The decorator's options still apply, explicit values still win.
    assert (task.queue_name, task.priority, task.max_retries, task.timeout) == ("mail", 7, 2, 30.0)
    assert omniq.Task(func=tasks.with_defaults, priority=1).priority == 1


@omniq.task
def bare(x: int) -> int:
    return x


@omniq.task(name="shout_alias", ttl=60.0, retry_delay=0.5)
async def configured(x: str) -> str:
    return x.upper()


def decorated_later(x: int) -> int:
    return x


def test_a_function_decorated_after_its_first_task_gets_the_decorator_options() -> None:
    assert omniq.Task(func=decorated_later).queue_name == "default"  # allowed, no options yet
    omniq.task(queue_name="late", priority=3)(decorated_later)
    later = omniq.Task(func=decorated_later)
    assert (later.queue_name, later.priority) == ("late", 3)


def test_bare_and_configured_decorators_and_the_alias() -> None:
    assert bare(2) == 2 and asyncio.run(configured("a")) == "A"
    assert isinstance(bare, TaskFunction) and isinstance(configured, TaskFunction)
    built = configured.task("a")
    assert (built.ttl, built.retry_delay, built.args) == (60.0, 0.5, ("a",))
    allow = Allowlist()
    alias = allow.resolve(f"{__name__}:shout_alias")
    assert alias is configured.func and inspect.iscoroutinefunction(alias)


def test_allowlist_resolves_to_the_plain_function_so_async_is_detected() -> None:
    allow = Allowlist(imports=["tests.conformance.tasks"])
    for ref, is_async in [("tests.conformance.tasks:add", True),
                          ("tests.conformance.tasks:multiply", False)]:
        fn = allow.resolve(ref)
        assert not isinstance(fn, TaskFunction)
        assert inspect.iscoroutinefunction(fn) is is_async
    assert allow.resolve(tasks.add) is tasks.add.func  # a callable from Task(func=...)


def test_with_options_wins_over_decorator_defaults_even_at_task_defaults() -> None:
    built = tasks.with_defaults.with_options(priority=0, queue_name="default", id="fixed-1").task()
    assert (built.priority, built.queue_name, built.id) == (0, "default", "fixed-1")
    assert built.max_retries == 2  # untouched options keep the decorator's value
    assert tasks.with_defaults.with_options(timeout=None).task().timeout is None
    with pytest.raises(omniq.InvalidTaskError, match="priority"):
        tasks.with_defaults.with_options(priority=2**40).task()


async def test_enqueue_returns_a_handle_and_results_come_back(tmp_path: Path) -> None:
    from omniq.queue.sqlite import SQLiteTaskQueue

    queue = SQLiteTaskQueue(str(tmp_path / "typed.db"))
    async with queue:
        handle = await tasks.multiply.enqueue(queue, 6, 7)
        failing = await tasks.boom.enqueue(queue, "typed boom")
        assert isinstance(handle, TaskHandle) and repr(handle) == f"TaskHandle({handle.id!r})"
        stored = await handle.get_task()
        assert stored is not None and stored.func == "tests.conformance.tasks:multiply"
        pool = WorkerPool(queue, handle_signals=False)
        await pool.run(burst=True)
        assert await handle.result(timeout=5) == 42
        with pytest.raises(omniq.TaskFailedError, match="typed boom"):
            await failing.result(timeout=5)
        later = await tasks.add.with_options(schedule=omniq.Schedule(interval=3600)).enqueue(
            queue, 1, 1)
        assert await later.cancel() is True
        cancelled = await later.get_task()
        assert cancelled is not None and cancelled.status is omniq.TaskStatus.CANCELLED
        with pytest.raises(omniq.TaskCancelledError):
            await later.result(timeout=5)
