"""Bad input, at the API and raw in the store: the API refuses malformed tasks with OmniQ
errors and writes nothing; a worker meeting a corrupt record marks it FAILED with the reason
and goes on; the good tasks around it complete; no file appears outside the queue's
directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omniq import OmniQError, Task, TaskStatus
from omniq.serialization import encode_task
from tests import ledger
from tests.chaos import malformed, raw
from tests.helpers import eventually
from tests.processes import ROOT
from tests.scenario import DURABLE, Scenario, record_figures, scenario


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def created_outside(run: Scenario, before: set[Path], top: set[str]) -> set[Path]:
    """Files that appeared anywhere but in the run's own places (ledger, logs, queue)."""
    own = (run.book.path, run.tmp / "queue" / run.namespace)
    new = files(run.tmp.parent) - before
    logs = {p for p in new if p.parent == run.tmp
            and (p.suffix == ".log" or p.name.startswith("omniq.db"))}
    strays = {p for p in new - logs if not any(p.is_relative_to(d) for d in own)}
    return strays | {ROOT / name for name in set(os.listdir(ROOT)) - top}


@pytest.mark.parametrize("backend", DURABLE)
async def test_malformed_tasks_are_refused_and_nothing_is_written(
    backend: str, tmp_path: Path
) -> None:
    before, top = files(tmp_path.parent), set(os.listdir(ROOT))
    cases = malformed.malformed()
    assert len(cases) >= 300
    async with scenario(backend, tmp_path, max_payload=malformed.MAX_PAYLOAD) as run:
        accepted = []
        for what, build in cases:
            try:
                await run.queue.enqueue_many(build())
            except OmniQError:
                continue
            accepted.append(what)
        assert not accepted, f"accepted: {accepted}"
        assert (await run.queue.stats()).total == 0
        assert await run.queue.list_tasks(limit=None) == []  # type: ignore[arg-type]
        assert not created_outside(run, before, top)
        queue_dir = tmp_path / "queue" / run.namespace / "tasks"
        assert not queue_dir.exists() or not any(queue_dir.iterdir())
        record_figures("bad_input_api", backend, refused=len(cases), written=0)


@pytest.mark.parametrize("backend", DURABLE)
async def test_corrupt_records_fail_and_the_worker_goes_on(backend: str, tmp_path: Path) -> None:
    before, top = files(tmp_path.parent), set(os.listdir(ROOT))
    async with scenario(backend, tmp_path) as run:
        book = str(run.book.path)
        good = [f"g{i}" for i in range(100)]
        bad = [f"bad-{i}" for i in range(len(malformed.corrupt_bodies(b"")))]
        marker = tmp_path / "pwned"

        def job(key: str, **fields: object) -> Task:
            return Task(func=ledger.record, id=key, args=(book, key), **fields)  # type: ignore[arg-type]

        await run.queue.enqueue_many([job(k) for k in good[:50]] + [job(k) for k in bad])
        await run.queue.enqueue_many([
            job("child", depends_on=["bad-0"]),
            Task(func="os:system", id="evil", args=(f"touch {marker}",)),
            *(job(k) for k in good[50:]),
        ])
        valid = encode_task(await run.queue.get_task("bad-0"))  # type: ignore[arg-type]
        for i, (task_id, data) in enumerate(zip(bad, malformed.corrupt_bodies(valid), strict=True)):
            await raw.overwrite(backend, tmp_path, run.namespace, task_id, data, whole=i % 2 == 0)

        worker = run.worker("--concurrency", "4")
        await run.until(lambda: run.book.done >= set(good), 60, "good tasks done")

        async def all_failed() -> dict[str, Task] | None:
            found = {t.id: t for t in await run.queue.list_tasks(status=TaskStatus.FAILED)}
            return found if len(found) > len(bad) else None

        ended = await eventually(all_failed, timeout=30)
        assert set(ended) == {*bad, "evil"}, run.logs()
        for task_id in bad:
            assert ended[task_id].error is not None
            assert ended[task_id].error.startswith("SerializationError: stored task could not")
            assert isinstance(ended[task_id].result, bytes)  # the undecodable bytes, kept
        assert ended["evil"].error is not None and "TaskNotAllowedError" in ended["evil"].error
        assert worker.alive
        await run.stop_all()  # outcomes of tasks logged done are written by then
        child = await run.queue.get_task("child")
        assert child is not None and child.status is TaskStatus.CANCELLED
        assert "bad-0" in (child.error or "")
        stats = await run.queue.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (len(good), len(bad) + 1, 1)
        report = ledger.check(run.book.path)
        assert report.done == set(good) and report.duplicates == 0
        logged = {t for t in bad if f"task {t}: stored record unreadable" in worker.output()}
        assert logged == set(bad)
        assert not marker.exists()
        assert not created_outside(run, before, top)
        record_figures("bad_input_raw", backend, corrupt=len(bad), failed=len(bad),
                       good_done=len(report.done))

