"""Shared pieces of the dashboard tests: an HTTP client on the app and form tokens."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from omniq.dashboard import create_app
from omniq.queue.base import BaseTaskQueue

BASE = "http://127.0.0.1:8080"


@asynccontextmanager
async def client(queue: BaseTaskQueue, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the dashboard app in-process (no lifespan: no sampler)."""
    options.setdefault("allowed_hosts", ["127.0.0.1"])
    app = create_app(queue, **options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def flash_of(html: str) -> str | None:
    """The flash message a page shows, if any."""
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', html, re.S)
    return found.group(1) if found else None


def row_of(html: str, task_id: str) -> str:
    """The HTML of a task's row in a task table."""
    found = re.search(rf'<tr data-task="{re.escape(task_id)}">(.*?)</tr>', html, re.S)
    assert found, f"no row for task {task_id}"
    return found.group(1)


async def post_form(http: httpx.AsyncClient, page: str, action: str, next: str | None = None,
                    **fields: str | list[str]) -> httpx.Response:
    """Load ``page`` (for its CSRF token), then post ``fields`` to ``action`` like its form
    (``next``, the page to return to, defaults to ``page``)."""
    loaded = await http.get(page)
    assert loaded.status_code == 200, loaded.text
    data: dict[str, Any] = {"csrf": csrf_of(loaded.text), "next": next or page, **fields}
    return await http.post(action, data=data)
