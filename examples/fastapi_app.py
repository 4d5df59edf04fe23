"""OmniQ inside a FastAPI app: the lifespan opens the queue, one endpoint enqueues a task and
another waits for its result.

Run it from the repository root (``pip install -e '.[sqlite,examples]'`` first)::

    uvicorn examples.fastapi_app:app                                  # http://127.0.0.1:8000
    omniq worker --import examples.fastapi_app --queue invoices       # in another shell

    curl -X POST localhost:8000/invoices -H 'content-type: application/json' \\
         -d '{"customer": "ACME", "amount_cents": 12345}'
    curl 'localhost:8000/invoices/<id>/result?timeout=5'

Both read ``OMNIQ_BACKEND`` (default ``sqlite:///omniq.db``), so they share one queue.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

import omniq
from omniq import Task
from omniq.queue.base import BaseTaskQueue

DEFAULT_BACKEND = "sqlite:///omniq.db"


@omniq.task(queue_name="invoices", timeout=30, max_retries=2)
async def make_invoice(customer: str, amount_cents: int) -> dict[str, Any]:
    """The background work (a stand-in for rendering and mailing a PDF)."""
    return {"customer": customer, "total": f"{amount_cents / 100:.2f} EUR"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the queue once for the app's lifetime (read at startup, so tests can set it)."""
    async with omniq.connect(os.environ.get("OMNIQ_BACKEND", DEFAULT_BACKEND)) as queue:
        app.state.queue = queue
        yield


app = FastAPI(title="OmniQ + FastAPI example", lifespan=lifespan)


def queue_of(request: Request) -> BaseTaskQueue:
    """The queue the lifespan opened."""
    queue: BaseTaskQueue = request.app.state.queue
    return queue


class InvoiceRequest(BaseModel):
    """What a client posts."""

    customer: str = Field(min_length=1, max_length=100)
    amount_cents: int = Field(ge=0)


@app.post("/invoices", status_code=202)
async def create_invoice(body: InvoiceRequest, request: Request) -> dict[str, str]:
    """Enqueue the work and answer at once with the task id (202 Accepted)."""
    task_id = await queue_of(request).enqueue(Task(func=make_invoice, kwargs=body.model_dump()))
    return {"id": task_id, "result": str(request.url_for("invoice_result", task_id=task_id))}


@app.get("/invoices/{task_id}/result")
async def invoice_result(
    task_id: str,
    request: Request,
    timeout: Annotated[float, Query(ge=0, le=60, description="seconds to wait")] = 10.0,
) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds for the task to end.

    200 with the result; 404 for an unknown id; 409 when the task ended without a result
    (failed, cancelled, expired); 504 when it has not finished in time (ask again later).
    """
    try:
        result = await queue_of(request).get_result(task_id, timeout=timeout)
    except (omniq.TaskNotFoundError, omniq.InvalidTaskError) as exc:
        raise HTTPException(404, f"no task {task_id!r}") from exc
    except (omniq.TaskFailedError, omniq.TaskCancelledError, omniq.TaskExpiredError) as exc:
        raise HTTPException(409, {"id": task_id, "error": str(exc)}) from exc
    except TimeoutError as exc:
        raise HTTPException(504, f"task {task_id} did not finish within {timeout:g}s",
                            headers={"retry-after": "1"}) from exc
    return {"id": task_id, "status": "completed", "result": result}
