"""Fixtures: a `queue` parametrized over every backend, each test in a fresh namespace, and
private servers (``private_redis``, ``private_postgres``, ``private_nats``) for tests that
restart one.

Server backends read OMNIQ_TEST_POSTGRES_DSN, OMNIQ_TEST_REDIS_URL and OMNIQ_TEST_NATS_URL.
A server that cannot be reached (or, for a private one, started) skips its tests locally, and
fails them under CI=true.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from omniq.queue.base import BaseTaskQueue
from tests import servers

POSTGRES_DSN = os.environ.get(
    "OMNIQ_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/omniq_test"
)
REDIS_URL = os.environ.get("OMNIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("OMNIQ_TEST_NATS_URL", "nats://127.0.0.1:4222")

BACKENDS = ["memory", "sqlite", "file", "file-memory", "postgres", "redis", "nats"]
SERVERS = {"postgres": POSTGRES_DSN, "redis": REDIS_URL, "nats": NATS_URL}

QueueFactory = Callable[..., Awaitable[BaseTaskQueue]]


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def unavailable(message: str) -> None:
    """Skip the test, or fail it under CI=true (where every backend must be tested)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_server(backend: str) -> None:
    """Skip (or, under CI=true, fail) when the backend's server is not listening."""
    url = SERVERS.get(backend)
    if url is None:
        return
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError:
        unavailable(f"{backend} server not reachable at {parts.hostname}:{parts.port}")


def _private(kind: str) -> Iterator[servers.PrivateServer]:
    kind_class = servers.SERVERS[kind]
    problem = kind_class.missing()
    if problem is not None:
        unavailable(f"private {kind} server: {problem}")
    server = None
    try:
        server = kind_class()
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        if server is not None:
            server.close()
        unavailable(f"private {kind} server did not start: {exc}")
    assert server is not None
    yield server
    server.close()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[servers.PrivateServer]:
    """A Redis of this test session (AOF, fsync always), free to be restarted."""
    yield from _private("redis")


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[servers.PrivateServer]:
    """A PostgreSQL cluster of this test session, free to be restarted."""
    yield from _private("postgres")


@pytest.fixture(scope="session")
def private_nats() -> Iterator[servers.PrivateServer]:
    """A NATS JetStream server of this test session, free to be restarted."""
    yield from _private("nats")


def backend_url(backend: str, tmp_path: Path, namespace: str) -> str:
    """A connect() URL for the backend, in the given namespace."""
    if backend == "memory":
        base = "memory://"
    elif backend == "sqlite":
        base = f"sqlite:///{tmp_path / 'omniq.db'}"
    elif backend == "file":
        base = f"file://{tmp_path / 'queue'}"
    elif backend == "file-memory":
        return f"file://{tmp_path / 'unused'}"  # replaced in make_queue (memory:// fsspec)
    else:
        base = SERVERS[backend]
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}namespace={namespace}"


def build_queue(backend: str, tmp_path: Path, **options: Any) -> BaseTaskQueue:
    """An unconnected queue of that backend; options go to its constructor."""
    require_server(backend)
    options.setdefault("namespace", new_namespace())
    if backend == "memory":
        from omniq.queue.memory import MemoryTaskQueue

        return MemoryTaskQueue(**options)
    if backend == "sqlite":
        from omniq.queue.sqlite import SQLiteTaskQueue

        return SQLiteTaskQueue(str(tmp_path / "omniq.db"), **options)
    if backend == "file":
        from omniq.queue.file import FileTaskQueue

        return FileTaskQueue(str(tmp_path / "queue"), **options)
    if backend == "file-memory":
        from omniq.queue.file import FileTaskQueue

        return FileTaskQueue(f"memory://omniq-tests/{uuid.uuid4().hex}", **options)
    if backend == "postgres":
        from omniq.queue.postgres import PostgreSQLTaskQueue

        return PostgreSQLTaskQueue(POSTGRES_DSN, **options)
    if backend == "redis":
        from omniq.queue.redis import RedisTaskQueue

        return RedisTaskQueue(url=REDIS_URL, **options)
    if backend == "nats":
        from omniq.queue.nats import NATSTaskQueue

        return NATSTaskQueue([NATS_URL], **options)
    raise ValueError(backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_queue(backend: str, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    """Build connected queues of the current backend; all share one fresh namespace unless
    told otherwise, and everything they stored is dropped afterwards."""
    made: list[BaseTaskQueue] = []
    namespace = new_namespace()

    async def factory(**options: Any) -> BaseTaskQueue:
        options.setdefault("namespace", namespace)
        queue = build_queue(backend, tmp_path, **options)
        await queue.connect()
        made.append(queue)
        return queue

    yield factory
    dropped: set[str] = set()
    for queue in reversed(made):
        if queue.namespace not in dropped:
            dropped.add(queue.namespace)
            await queue.drop_namespace()
        await queue.close()


@pytest.fixture
async def queue(make_queue: QueueFactory) -> BaseTaskQueue:
    """A connected queue of the current backend in a fresh namespace."""
    return await make_queue()
