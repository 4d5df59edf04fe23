"""The dashboard's pages and actions over HTTP (httpx against the ASGI app)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from omniq import MemoryTaskQueue, Schedule, Task, TaskStatus, WorkerPool
from omniq.queue.base import BaseTaskQueue
from tests.dashboard import tasks
from tests.dashboard.helpers import client, flash_of, post_form, row_of


def counts_row(page: str, queue_name: str) -> dict[str, str]:
    """A queue's counts on the overview, status -> number shown."""
    found = re.search(rf'<tr data-queue="{re.escape(queue_name)}">(.*?)</tr>', page, re.S)
    assert found, f"no row for queue {queue_name}"
    cells = re.findall(r'<td class="num">(.*?)</td>', found.group(1), re.S)
    numbers = [re.sub(r"<[^>]+>", "", c).strip() for c in cells]
    return dict(zip([s.value for s in TaskStatus], numbers, strict=True))


async def drain(queue: BaseTaskQueue, *queues: str) -> None:
    await WorkerPool(queue, queues=queues, handle_signals=False).run(burst=True)


async def test_every_backend_shows_queues_tasks_and_a_task(
    queue: BaseTaskQueue, tmp_path: Path
) -> None:
    ok = await queue.enqueue(Task(func=tasks.echo, args=({"n": 1},), queue_name="emails"))
    bad = await queue.enqueue(Task(func=tasks.fail_once, args=(str(tmp_path / "m"),),
                                   queue_name="emails"))
    later = await queue.enqueue(Task(func=tasks.echo, args=(2,), queue_name="reports",
                                     schedule=Schedule(interval=3600)))
    await drain(queue, "emails")
    async with client(queue) as http:
        overview = (await http.get("/")).text
        assert counts_row(overview, "emails") == {
            **dict.fromkeys([s.value for s in TaskStatus], "0"), "completed": "1", "failed": "1"}
        assert counts_row(overview, "reports")["scheduled"] == "1"

        failed = (await http.get("/tasks", params={"status": "failed"})).text
        assert bad in failed and ok not in failed and later not in failed
        assert "RuntimeError: first attempt fails on purpose" in row_of(failed, bad)

        page = (await http.get(f"/tasks/{ok}")).text
        assert 'st-completed">completed' in page
        assert '<pre class="json result">{\n  &#34;n&#34;: 1\n}</pre>' in page
        scheduled = (await http.get(f"/tasks/{later}")).text
        assert "every 3600s" in scheduled


async def test_overview_counts_link_to_filtered_lists_and_shows_pause_state() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        assert "No queues yet" in (await http.get("/")).text
        await queue.enqueue_many([Task(func=tasks.echo, args=(i,), queue_name="emails")
                                  for i in range(3)])
        await queue.pause("idle")
        page = (await http.get("/")).text
        assert counts_row(page, "emails")["pending"] == "3"
        assert 'href="/tasks?queue=emails&amp;status=pending"' in page
        idle = re.search(r'<tr data-queue="idle">(.*?)</tr>', page, re.S)
        assert idle and "paused" in idle.group(1) and "/queues/idle/resume" in idle.group(1)
        assert "measuring" in page  # no throughput before two samples


async def test_task_list_filters_and_pages_newest_first() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        ids = await queue.enqueue_many([
            Task(func=tasks.echo, args=(i,), id=f"job-{i:02d}", queue_name="a" if i % 2 else "b")
            for i in range(10)
        ])
        await queue.cancel("job-03")

        def listed(page: str) -> list[str]:
            return re.findall(r'<tr data-task="([^"]+)">', page)

        first = (await http.get("/tasks", params={"per_page": 3})).text
        assert listed(first) == ids[::-1][:3]
        assert "1–3 of 10 · page 1 of 4" in first and 'rel="next"' in first  # noqa: RUF001
        assert 'rel="prev"' not in first
        last = (await http.get("/tasks", params={"per_page": 3, "page": 4})).text
        assert listed(last) == [ids[0]] and 'rel="next"' not in last and 'rel="prev"' in last

        in_a = (await http.get("/tasks", params={"queue": "a", "status": "pending"})).text
        assert listed(in_a) == ["job-09", "job-07", "job-05", "job-01"]
        cancelled = (await http.get("/tasks", params={"status": "cancelled"})).text
        assert listed(cancelled) == ["job-03"]
        # Ended tasks offer Requeue, the others Cancel.
        assert "/tasks/job-03/requeue" in row_of(cancelled, "job-03")
        assert "/tasks/job-05/cancel" in row_of(in_a, "job-05")


async def test_bad_parameters_are_400_and_unknown_tasks_404() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        for params, message in (
            ({"status": "bogus"}, "is not a valid TaskStatus"),
            ({"queue": "../etc"}, "invalid queue name"),
            ({"page": "0"}, "page must be an integer from 1"),
            ({"per_page": "100000"}, "per_page must be an integer from 1 to 500"),
        ):
            response = await http.get("/tasks", params=params)
            assert response.status_code == 400, params
            assert message in html.unescape(response.text)
        missing = await http.get("/tasks/no-such-task")
        assert missing.status_code == 404 and "no task with id" in html.unescape(missing.text)
        assert (await http.get("/tasks/bad..id")).status_code == 400
        assert (await http.get("/nowhere")).status_code == 404


async def test_task_page_shows_arguments_timings_dependencies_and_error(tmp_path: Path) -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        parent = await queue.enqueue(Task(func=tasks.fail_once, args=(str(tmp_path / "m"),),
                                          id="parent"))
        child = await queue.enqueue(Task(func=tasks.echo, kwargs={"value": [1, "two"]},
                                         depends_on=[parent], id="child", priority=4,
                                         max_retries=2, timeout=9.5))
        waiting = (await http.get(f"/tasks/{child}")).text
        assert 'st-waiting">waiting' in waiting
        assert re.search(r'href="/tasks/parent">parent</a> <span class="badge st-pending">',
                         waiting)
        assert "&#34;value&#34;: [" in waiting  # kwargs as indented JSON, escaped
        assert "<dt>priority</dt><dd>4</dd>" in waiting
        assert "<dt>retries</dt><dd>0 of 2</dd>" in waiting
        assert "<dt>timeout</dt><dd>9.5 s</dd>" in waiting

        await drain(queue, "default")
        failed = (await http.get(f"/tasks/{parent}")).text
        assert "RuntimeError: first attempt fails on purpose" in failed
        assert re.search(r"<dt>ran \(start to finish\)</dt><dd>\d+\.\d{3} s</dd>", failed)
        assert "/tasks/parent/requeue" in failed
        cancelled = (await http.get(f"/tasks/{child}")).text
        assert "dependency parent ended failed" in cancelled


async def test_user_data_is_escaped_everywhere() -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    async with MemoryTaskQueue() as queue, client(queue) as http:
        task_id = await queue.enqueue(Task(func=tasks.echo, args=(evil,), kwargs={"k": evil}))
        claimed = await queue.dequeue()
        assert claimed is not None
        await queue.fail(task_id, evil)
        for path in ("/", "/tasks", f"/tasks/{task_id}", "/tasks?status=failed"):
            page = (await http.get(path)).text
            assert "<script>" not in page and "<img src=x" not in page, path
        page = (await http.get(f"/tasks/{task_id}")).text
        assert "&lt;script&gt;alert(" in page and "&lt;img src=x onerror=alert(1)&gt;" in page


async def test_actions_cancel_requeue_pause_and_resume_tasks() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        held = await queue.enqueue(Task(func=tasks.echo, args=(1,), id="held",
                                        schedule=Schedule(run_at=datetime.now(UTC)
                                                          + timedelta(hours=1))))
        response = await post_form(http, f"/tasks/{held}", f"/tasks/{held}/pause")
        assert response.status_code == 303 and response.headers["location"] == f"/tasks/{held}"
        stored = await queue.get_task(held)
        assert stored is not None and stored.paused
        page = (await http.get(response.headers["location"])).text
        assert flash_of(page) == "Task held paused."
        assert flash_of((await http.get(f"/tasks/{held}")).text) is None  # shown once

        await post_form(http, f"/tasks/{held}", f"/tasks/{held}/resume")
        stored = await queue.get_task(held)
        assert stored is not None and not stored.paused

        response = await post_form(http, "/tasks", f"/tasks/{held}/cancel")
        assert response.headers["location"] == "/tasks"  # back where the button was
        assert (await queue.get_task(held)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
        again = await post_form(http, "/tasks", f"/tasks/{held}/cancel")
        assert "had already ended" in (flash_of((await http.get(again.headers["location"])).text)
                                       or "")

        await post_form(http, "/tasks?status=cancelled", f"/tasks/{held}/requeue")
        assert (await queue.get_task(held)).status is TaskStatus.PENDING  # type: ignore[union-attr]
        refused = await post_form(http, "/tasks", f"/tasks/{held}/requeue")
        message = flash_of((await http.get(refused.headers["location"])).text)
        assert message == "Task held has not ended: only ended tasks can be requeued."


async def test_actions_pause_resume_and_purge_queues() -> None:
    async with MemoryTaskQueue() as queue, client(queue) as http:
        ids = await queue.enqueue_many([Task(func=tasks.echo, args=(i,), queue_name="emails")
                                        for i in range(4)])
        await queue.cancel(ids[0])
        await queue.cancel(ids[1])
        await post_form(http, "/", "/queues/emails/pause")
        assert (await queue.stats("emails")).paused
        assert "Queue emails paused" in (flash_of((await http.get("/")).text) or "")
        await post_form(http, "/", "/queues/emails/resume")
        assert not (await queue.stats("emails")).paused

        form = (await http.get("/queues/emails/purge")).text
        assert re.search(r'value="cancelled" checked> <span class="badge st-cancelled">cancelled'
                         r'</span> <span class="muted">2</span>', form)
        assert re.search(r'value="pending"> ', form)  # not ticked by default
        nothing = await post_form(http, "/queues/emails/purge", "/queues/emails/purge")
        assert nothing.headers["location"] == "/queues/emails/purge"  # no status chosen
        done = await post_form(http, "/queues/emails/purge", "/queues/emails/purge",
                               status=["cancelled"])
        assert done.headers["location"] == "/"
        assert flash_of((await http.get("/")).text) == "Purged 2 task(s) from queue emails."
        assert (await queue.stats("emails")).total == 2


async def test_mounted_under_a_prefix_links_and_redirects_keep_it() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from omniq.dashboard import create_app

    async with MemoryTaskQueue() as queue:
        task_id = await queue.enqueue(Task(func=tasks.echo, args=(1,), queue_name="emails"))
        outer = Starlette(routes=[Mount("/ops/omniq", app=create_app(queue))])
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            page = (await http.get("/ops/omniq/")).text
            assert 'href="/ops/omniq/tasks?queue=emails"' in page
            assert 'href="/ops/omniq/static/dashboard.css"' in page
            response = await post_form(http, "/ops/omniq/tasks",
                                       f"/ops/omniq/tasks/{task_id}/cancel", next="/tasks")
            assert response.status_code == 303
            assert response.headers["location"] == "/ops/omniq/tasks"
        assert (await queue.get_task(task_id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
