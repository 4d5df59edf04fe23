"""End to end in a real browser: Debian's chromium, driven by Playwright, against the dashboard
served by uvicorn over a real backend while a worker pool runs."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omniq import Task, TaskStatus, WorkerPool
from omniq.dashboard import create_app, serving
from omniq.dashboard.server import default_allowed_hosts
from omniq.queue.base import BaseTaskQueue
from tests.conftest import QueueFactory
from tests.dashboard import tasks
from tests.dashboard.browser import browser_problem, chromium
from tests.helpers import eventually

TOKEN = "e2e-token-0123456789"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Debian chromium; missing, it skips the test (fails it under CI=true)."""
    problem = browser_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    async with chromium() as launched:
        yield launched


async def _status(queue: BaseTaskQueue, task_id: str) -> TaskStatus | None:
    task = await queue.get_task(task_id)
    return None if task is None else task.status


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_see_tasks_requeue_a_failed_one_and_watch_it_complete(
    make_queue: QueueFactory, tmp_path: Path, browser: Any
) -> None:
    from playwright.async_api import expect

    queue = await make_queue()
    flaky = await queue.enqueue(Task(func=tasks.fail_once, args=(str(tmp_path / "marker"),),
                                     queue_name="emails", id="flaky-report"))
    fine = await queue.enqueue_many([
        Task(func=tasks.echo, args=(f"mail {i}",), queue_name="emails", id=f"mail-{i}")
        for i in range(3)
    ])
    pool = WorkerPool(queue, queues=["emails"], concurrency=2, handle_signals=False)
    worker = asyncio.create_task(pool.run())
    try:
        async def failed() -> bool:
            return await _status(queue, flaky) is TaskStatus.FAILED

        await eventually(failed, timeout=30)
        app = create_app(queue, token=TOKEN, allowed_hosts=default_allowed_hosts("127.0.0.1"),
                         refresh=0)
        async with serving(app) as url:
            page = await browser.new_page()
            await page.goto(url + "/")
            # Every page needs the token: the browser lands on the login form.
            await expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
            await page.fill("input[name=token]", TOKEN)
            await page.get_by_role("button", name="Log in").click()

            emails = page.locator('tr[data-queue="emails"]')
            await expect(emails.locator("a.count.st-failed")).to_have_text("1")
            await expect(emails.locator("a.count.st-completed")).to_have_text("3")
            await emails.locator("a.count.st-failed").click()

            await expect(page).to_have_url(re.compile(r"/tasks\?queue=emails&status=failed$"))
            row = page.locator(f'tr[data-task="{flaky}"]')
            await expect(row).to_contain_text("RuntimeError: first attempt fails on purpose")
            for task_id in fine:  # only the failed one is listed
                await expect(page.locator(f'tr[data-task="{task_id}"]')).to_have_count(0)
            await row.get_by_role("button", name="Requeue").click()
            await expect(page.locator("p.flash")).to_have_text(f"Task {flaky} requeued.")

            await page.goto(f"{url}/tasks/{flaky}")
            badge = page.locator("h1 .badge").first

            async def completed() -> bool:
                await page.reload()
                return await badge.inner_text() == "completed"

            await eventually(completed, timeout=30, interval=0.2)
            await expect(page.locator("pre.result")).to_have_text('"recovered"')
            await expect(page.locator("pre.error-text")).to_have_count(0)

            await page.goto(url + "/tasks?queue=emails")
            for task_id in [flaky, *fine]:
                await expect(page.locator(f'tr[data-task="{task_id}"] .badge')).to_have_text(
                    "completed")
        assert await _status(queue, flaky) is TaskStatus.COMPLETED
    finally:
        await pool.stop()
        await worker
