"""A password in a backend URL never shows: not in reprs, not in exception messages or
tracebacks, not in any log line at DEBUG (ours or the drivers'), not in what the CLI prints,
also while the server restarts and the clients reconnect."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from omniq import BackendError, Task, connect
from tests import ledger
from tests.conftest import new_namespace
from tests.processes import ROOT
from tests.scenario import record_figures, scenario
from tests.servers import SECRET, SECRET_USER, PrivateServer, free_port

WRONG = "Wr0ng-Pa55w0rd-x"  # a rejected password must not show either
SECRETS = (SECRET, WRONG)


def url(backend: str, port: int, password: str = SECRET) -> str:
    """A URL carrying ``password`` (PostgreSQL and NATS here accept any; Redis checks it)."""
    if backend == "redis":
        return f"redis://{SECRET_USER}:{password}@127.0.0.1:{port}/0"
    if backend == "postgres":
        return f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    return f"nats://omniq:{password}@127.0.0.1:{port}"


async def refused(target: str) -> list[str]:
    """repr and the full traceback of a queue that cannot connect to ``target``."""
    queue = connect(f"{target}?namespace={new_namespace()}")
    with pytest.raises(BackendError) as info:
        await queue.connect()
    return [repr(queue), "".join(traceback.format_exception(info.value))]


@pytest.mark.parametrize("backend", ["redis", "postgres", "nats"])
async def test_a_password_never_shows(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours and the drivers'
    server: PrivateServer = request.getfixturevalue(f"private_{backend}")
    seen: list[str] = []
    async with scenario(backend, tmp_path, base_url=url(backend, server.port)) as run:
        seen.append(repr(run.queue))
        worker = run.worker("--log-level", "DEBUG", "--concurrency", "2")
        book = str(run.book.path)
        await run.queue.enqueue(Task(func=ledger.record, id="before", args=(book, "before")))
        await run.until(lambda: "before" in run.book.done, 30, "first task done")

        await asyncio.to_thread(server.stop)  # clients meet a dead server, then reconnect
        try:
            with pytest.raises(BackendError) as info:
                for _ in range(50):  # a pooled connection may not know yet
                    await run.queue.get_task("before")
                    await asyncio.sleep(0.05)
            seen.append("".join(traceback.format_exception(info.value)))
            await asyncio.sleep(1.0)
        finally:
            await asyncio.to_thread(server.start)

        await run.settled(["before"])
        await run.queue.enqueue(Task(func=ledger.record, id="after", args=(book, "after")))
        await run.until(lambda: "after" in run.book.done, 30, "work after the restart")
        await run.stop_all()
        logged = worker.output()
        seen.append(logged)
        assert " DEBUG " in logged
        assert "backend unavailable" in logged or "lost the NATS" in logged

    seen += await refused(url(backend, free_port()))
    if backend == "redis":
        seen += await refused(url(backend, server.port, WRONG))
    cli = subprocess.run(
        [sys.executable, "-m", "omniq", "--log-level", "DEBUG", "--debug", "stats", "--backend",
         url(backend, free_port())], cwd=ROOT, capture_output=True, timeout=60)
    assert cli.returncode == 1
    seen += [cli.stdout.decode(), cli.stderr.decode(), caplog.text]
    seen += [str(r.args) for r in caplog.records]
    leaks = [text for text in seen for secret in SECRETS if secret in text]
    assert not leaks, leaks[0][-3000:]
    assert "omniq: error" in cli.stderr.decode()
    record_figures("secrets", backend, texts=len(seen), log_records=len(caplog.records),
                   leaks=len(leaks))
