"""Pure rules: backoff, cycles, validation, references, URLs and the public names."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid

import pytest

import omniq
from omniq import InvalidTaskError, SerializationError, Task
from omniq.dependencies import find_cycle
from omniq.queue.url import connect, redact
from omniq.retry import MAX_BACKOFF, backoff


def test_backoff_doubles_within_ten_percent() -> None:
    rand = random.Random(7)
    for n, base in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0)]:
        samples = [backoff(2.0, n, rand) for _ in range(200)]
        assert min(samples) >= base * 0.9 and max(samples) <= base * 1.1
        assert max(samples) - min(samples) > base * 0.1, "jitter spreads retries"


def test_backoff_is_capped_at_an_hour() -> None:
    assert backoff(10.0, 40) <= MAX_BACKOFF
    assert backoff(10.0, 10_000) == MAX_BACKOFF
    with pytest.raises(ValueError):
        backoff(1.0, 0)


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["outside"], "b": ["a"]}) is None
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(5000)}
    assert find_cycle(chain) is None
    chain["n5000"] = ["n0"]
    cycle = find_cycle(chain)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 5002


def test_task_validation_at_construction() -> None:
    with pytest.raises(InvalidTaskError):
        Task(func="m:f", id="a..b")
    with pytest.raises(InvalidTaskError):
        Task(func="m:f", id="x", depends_on=["x"])
    with pytest.raises(InvalidTaskError):
        Task(func="m:f", priority=True)
    assert Task(func="m:f", depends_on=["a", "a", "b"]).depends_on == ["a", "b"]
    assert Task(func="m:f", args=[1, 2]).args == (1, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 2**31), ("priority", 1.0), ("retries", -1), ("max_retries", "3"),
     ("attempts", None), ("retry_delay", -1.0), ("retry_delay", float("nan")), ("ttl", 0.0),
     ("timeout", float("inf")), ("queue_name", ["default"]), ("queue_name", "a.")],
)
def test_each_bad_field_is_named(field: str, value: object) -> None:
    Task(func="m:f", queue_name="a")  # a good name first: checks remember good names only
    with pytest.raises(InvalidTaskError, match=field.split("_")[0]):
        Task(func="m:f", **{field: value})  # type: ignore[arg-type]
    task = Task(func="m:f")
    setattr(task, field, value)  # changed after it was built: enqueue validates again
    with pytest.raises(InvalidTaskError, match=field.split("_")[0]):
        task._validate()


def test_ids_are_time_ordered_uuid7() -> None:
    first = [Task(func="m:f").id for _ in range(2000)]
    time.sleep(0.002)  # the next millisecond: ids made later sort after these
    later = Task(func="m:f").id
    parsed = [uuid.UUID(i) for i in [*first, later]]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == [*first, later]
    assert len(set(first)) == len(first)
    assert max(first) < later
    stamp = int(later.replace("-", "")[:12], 16) / 1000
    assert abs(stamp - time.time()) < 5


def test_a_forked_process_makes_other_ids() -> None:
    def random_parts(count: int) -> set[str]:
        return {Task(func="m:f").id[-17:] for _ in range(count)}  # after the time and version

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids back to the parent, then out without pytest's exit hooks
        os.write(write, ",".join(random_parts(50)).encode())
        os._exit(0)
    os.close(write)
    mine = random_parts(50)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split(","))
    assert len(theirs) == 50 and len(mine) == 50
    assert not mine & theirs


def test_lambdas_have_no_reference() -> None:
    with pytest.raises(SerializationError):
        Task(func=lambda: None).func_ref  # noqa: B018


def test_connect_maps_schemes_without_connecting() -> None:
    assert type(connect("memory://")).__name__ == "MemoryTaskQueue"
    sqlite = connect("sqlite:///rel.db?namespace=billing&lease_timeout=5")
    assert type(sqlite).__name__ == "SQLiteTaskQueue"
    assert sqlite.namespace == "billing" and sqlite.lease_timeout == 5.0
    assert sqlite.database_path == "rel.db"  # type: ignore[attr-defined]
    assert connect("sqlite:////abs/path.db").database_path == "/abs/path.db"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="supported"):
        connect("mysql://localhost/db")
    with pytest.raises(InvalidTaskError):
        connect("memory://?namespace=../evil")


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_public_names() -> None:
    assert set(omniq.__all__) == {
        "Task", "TaskStatus", "Schedule", "task", "connect", "WorkerPool",
        "MemoryTaskQueue", "FileTaskQueue", "SQLiteTaskQueue", "PostgreSQLTaskQueue",
        "RedisTaskQueue", "NATSTaskQueue",
        "OmniQError", "InvalidTaskError", "DependencyError", "SerializationError",
        "TaskNotFoundError", "TaskFailedError", "TaskCancelledError", "TaskExpiredError",
        "TaskNotAllowedError", "LeaseLostError", "BackendError",
    }
    for name in omniq.__all__:
        assert getattr(omniq, name) is not None


def test_import_omniq_loads_no_driver() -> None:
    # Neither backend drivers nor the metrics/tracing extras load until asked for.
    code = (
        "import sys, omniq, omniq.queue, omniq.worker, omniq.cli, omniq.tasklog; "
        "omniq.cli.build_parser(); omniq.connect('memory://'); "
        "bad = [m for m in ('asyncpg', 'redis', 'nats', 'fsspec', 'aiosqlite', 'omniq.dashboard', "
        "'starlette', 'jinja2', 'uvicorn', 'prometheus_client', 'opentelemetry') "
        "if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extras_name_what_to_install() -> None:
    for module, missing, extra in (("omniq.metrics", "prometheus_client", "metrics"),
                                   ("omniq.tracing", "opentelemetry", "otel")):
        code = (f"import sys; sys.modules[{missing!r}] = None\n"
                f"try:\n    import {module}\nexcept ImportError as exc:\n    print(exc)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        assert f"pip install 'omniq[{extra}]'" in out.stdout, out


def test_exception_tree() -> None:
    assert issubclass(omniq.DependencyError, omniq.InvalidTaskError)
    assert issubclass(omniq.InvalidTaskError, ValueError)
    assert issubclass(omniq.SerializationError, TypeError)
    assert issubclass(omniq.TaskNotFoundError, KeyError)
    for name in ("TaskFailedError", "TaskCancelledError", "TaskExpiredError",
                 "TaskNotAllowedError", "LeaseLostError", "BackendError"):
        assert issubclass(getattr(omniq, name), omniq.OmniQError)
    error = omniq.TaskFailedError("t1", "RuntimeError: x")
    assert (error.task_id, error.error) == ("t1", "RuntimeError: x")
