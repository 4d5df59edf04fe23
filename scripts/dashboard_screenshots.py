"""Take the dashboard screenshots in docs/images/ from a real run.

    .venv/bin/python scripts/dashboard_screenshots.py

Enqueues the example tasks (examples/tasks.py) into a temporary SQLite file, runs a worker
pool on them, serves the dashboard (with a token) and photographs its pages in Debian's
headless chromium (the one the browser test uses). Nothing in the pictures is staged: the
counts, errors and throughput are what that run produced.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples import tasks  # noqa: E402
from omniq import Schedule, Task, TaskStatus, WorkerPool  # noqa: E402
from omniq.dashboard import create_app, serving  # noqa: E402
from omniq.dashboard.server import default_allowed_hosts  # noqa: E402
from omniq.queue.sqlite import SQLiteTaskQueue  # noqa: E402
from tests.dashboard.browser import browser_problem, chromium  # noqa: E402

OUT = ROOT / "docs" / "images"
TOKEN = "screenshot-token"
WIDTH = 1440


def first_batch() -> list[Task]:
    thumbs = [Task(func=tasks.make_thumbnail, args=(f"photo{i:03d}.jpg", 256), queue_name="images")
              for i in range(40)]
    report = Task(func=tasks.build_report, args=(len(thumbs),), depends_on=[t.id for t in thumbs],
                  id="weekly-report")
    emails = [Task(func=tasks.send_email, kwargs={"to": f"user{i}@example.com",
                                                  "subject": "Welcome"},
                   queue_name="emails", priority=5) for i in range(12)]
    orders = [Task(func=tasks.charge_card, args=(f"order-{1000 + i}", cents))
              for i, cents in enumerate([4_999, 12_50, 250_000, 8_00, 99_00, 180_000, 15_00])]
    later = [Task(func=tasks.send_email, kwargs={"to": f"later{i}@example.com",
                                                 "subject": "Reminder"},
                  queue_name="emails",
                  schedule=Schedule(run_at=datetime.now(UTC) + timedelta(hours=2)))
             for i in range(3)]
    heartbeat = Task(func=tasks.heartbeat, schedule=Schedule(interval=30.0), id="heartbeat")
    newsletter = [Task(func=tasks.send_email, kwargs={"to": f"reader{i}@example.com",
                                                      "subject": "News"},
                       queue_name="newsletters") for i in range(6)]
    return [*thumbs, report, *emails, *orders, *later, heartbeat, *newsletter]


async def main() -> None:
    problem = browser_problem()
    if problem is not None:
        raise SystemExit(f"cannot take screenshots: {problem}")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        async with SQLiteTaskQueue(f"{folder}/omniq.db") as queue:
            await queue.pause("newsletters")
            await queue.enqueue_many(first_batch())
            app = create_app(queue, token=TOKEN, sample_interval=1.0, refresh=0,
                             allowed_hosts=default_allowed_hosts("127.0.0.1"))
            pool = WorkerPool(queue, queues=["emails", "payments", "images", "default"],
                              concurrency=4, handle_signals=False)
            worker = asyncio.create_task(pool.run())
            async with serving(app) as url, chromium() as browser:
                # More work arrives for a few seconds, so throughput has something to show.
                for wave in range(6):
                    await queue.enqueue_many([
                        Task(func=tasks.make_thumbnail, args=(f"late{wave}-{i}.jpg", 128),
                             queue_name="images") for i in range(15)
                    ])
                    await asyncio.sleep(1.5)
                await wait_for_failures(queue)
                page = await browser.new_page(viewport={"width": WIDTH, "height": 800})
                await page.goto(url + "/")
                await shoot(page, "login")
                await page.fill("input[name=token]", TOKEN)
                await page.get_by_role("button", name="Log in").click()
                await page.wait_for_selector('tr[data-queue="images"]')
                await shoot(page, "queues")
                await page.goto(url + "/tasks?queue=payments")
                await shoot(page, "tasks")
                failed = await queue.list_tasks("payments", TaskStatus.FAILED, 1)
                await page.goto(f"{url}/tasks/{failed[0].id}")
                await shoot(page, "task")
                await page.goto(f"{url}/tasks/weekly-report")
                await shoot(page, "dependencies")
            await pool.stop()
            await worker


async def wait_for_failures(queue: SQLiteTaskQueue) -> None:
    for _ in range(300):
        if (await queue.stats("payments")).failed == 2:
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the declined payments did not fail within 30 s")


async def shoot(page: object, name: str) -> None:
    path = OUT / f"dashboard-{name}.png"
    await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
