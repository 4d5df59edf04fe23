"""examples/fastapi_app.py served by uvicorn (its lifespan really runs) with a worker pool
draining its tasks, driven over HTTP with httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from omniq import WorkerPool
from omniq.dashboard import serving
from omniq.queue.sqlite import SQLiteTaskQueue


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, SQLiteTaskQueue]]:
    """The example app on a free port, a worker on the same SQLite file, and a client."""
    database = tmp_path / "app.db"
    monkeypatch.setenv("OMNIQ_BACKEND", f"sqlite:///{database}")
    from examples.fastapi_app import app

    async with SQLiteTaskQueue(str(database)) as queue, serving(app) as url:
        pool = WorkerPool(queue, queues=["invoices"], handle_signals=False)
        worker = asyncio.create_task(pool.run())
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                yield client, queue
        finally:
            await pool.stop()
            await worker


async def test_enqueue_then_await_the_result(
        api: tuple[httpx.AsyncClient, SQLiteTaskQueue]) -> None:
    client, _ = api
    created = await client.post("/invoices", json={"customer": "ACME", "amount_cents": 12345})
    assert created.status_code == 202
    body = created.json()
    assert body["result"].endswith(f"/invoices/{body['id']}/result")
    done = await client.get(body["result"], params={"timeout": 20})
    assert done.status_code == 200
    assert done.json() == {"id": body["id"], "status": "completed",
                           "result": {"customer": "ACME", "total": "123.45 EUR"}}


async def test_timeouts_unknown_ids_and_unfinished_tasks_are_http_errors(
        api: tuple[httpx.AsyncClient, SQLiteTaskQueue]) -> None:
    client, queue = api
    await queue.pause("invoices")  # nothing runs: waiting for a result times out
    created = (await client.post("/invoices", json={"customer": "B", "amount_cents": 1})).json()
    late = await client.get(created["result"], params={"timeout": 0.3})
    assert late.status_code == 504 and late.headers["retry-after"] == "1"
    assert "did not finish within 0.3s" in late.json()["detail"]

    assert await queue.cancel(created["id"])
    ended = await client.get(created["result"], params={"timeout": 1})
    assert ended.status_code == 409 and "was cancelled" in ended.json()["detail"]["error"]

    assert (await client.get("/invoices/no-such-task/result")).status_code == 404
    assert (await client.get("/invoices/bad..id/result")).status_code == 404
    assert (await client.get(created["result"], params={"timeout": 600})).status_code == 422
    refused = await client.post("/invoices", json={"customer": "", "amount_cents": -5})
    assert refused.status_code == 422

    await queue.resume("invoices")
    later = (await client.post("/invoices", json={"customer": "C", "amount_cents": 250})).json()
    result = await client.get(later["result"], params={"timeout": 20})
    assert result.status_code == 200 and result.json()["result"]["total"] == "2.50 EUR"
