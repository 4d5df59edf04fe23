"""Typed task calls: mypy must accept ``correct`` and report exactly the errors marked
``# expect: <code>`` in ``wrong`` (checked by tests/unit/test_typed_tasks.py). ``correct``
also runs for real there."""

from __future__ import annotations

import omniq
from omniq.queue.base import BaseTaskQueue
from omniq.registry import TaskHandle


@omniq.task(queue_name="mail", max_retries=2)
async def send_email(to: str, subject: str = "hello") -> bool:
    return "@" in to and bool(subject)


@omniq.task
def word_count(text: str, *, minimum: int = 1) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return {word: n for word, n in counts.items() if n >= minimum}


async def correct(queue: BaseTaskQueue) -> tuple[bool, dict[str, int], bool, dict[str, int]]:
    sent: TaskHandle[bool] = await send_email.enqueue(queue, to="a@b.c")
    counted = await word_count.enqueue(queue, "a b a", minimum=2)
    direct: bool = await send_email("x@y.z", subject="hi")
    local: dict[str, int] = word_count("a a")
    await queue.enqueue_many([send_email.task("c@d.e"),
                              word_count.with_options(priority=5).task("x")])
    ok: bool = await sent.result(timeout=30)
    counts: dict[str, int] = await counted.result(timeout=30)
    return ok, counts, direct, local


async def wrong(queue: BaseTaskQueue) -> None:
    await send_email.enqueue(queue, to=42)  # expect: arg-type
    await send_email.enqueue(queue, recipient="a@b.c")  # expect: call-arg
    await word_count.enqueue(queue, "text", 3)  # expect: call-arg
    await word_count.enqueue(queue)  # expect: call-arg
    await word_count.enqueue(queue, "text", minimum="2")  # expect: arg-type
    handle = await send_email.enqueue(queue, "a@b.c")
    text: str = await handle.result()  # expect: assignment
    counted = await word_count.enqueue(queue, "a")
    total: int = await counted.result()  # expect: assignment
    await send_email(1)  # expect: arg-type
    word_count.task(b"bytes")  # expect: arg-type
    word_count.with_options(priority="high")  # expect: arg-type
    del text, total
