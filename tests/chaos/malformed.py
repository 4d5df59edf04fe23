"""Hundreds of malformed tasks for the API, and corrupt bytes to write raw into each store."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec

from omniq import Schedule, Task

REF = "tests.ledger:record"
MAX_PAYLOAD = 65536

BAD_IDS: list[Any] = [
    "", "../../x", "..", "../etc/passwd", "a/b", "a\\b", "q;DROP TABLE tasks", "x'--", "x" * 129,
    "-a", ".a", "_a", "a..b", "a b", "a\tb", "a\nb", "a\x00b", "é", "a*", "a?", "%2e%2e", "$(id)",
    "`id`", "a|b", "~root", "a\n", "a\r", 5, 1.5, None, b"x", ["a"],
]
BAD_QUEUES: list[Any] = [
    "", "..", "a/b", "../q", "q;DROP TABLE x", "q.", "-q", ".q", "a..b", "x" * 65, "a b", "ü",
    "a\x00", "q\n", 7, None, b"q",
]
BAD_INTS: list[Any] = [float("nan"), float("inf"), -float("inf"), 2**64, -(2**64), 2**31,
                       -(2**31) - 1, 1.5, "1", True, None, b"1"]
BAD_SECONDS: list[Any] = [-1, float("nan"), float("inf"), "5", True, b"1", [1]]
BAD_FUNCS: list[Any] = [
    "", "nomodule", "os.system", ":f", "m:", "m:f g", "m:f;x", "../x:y", "m:f\n", 123, None, b"m:f",
]
BAD_CRONS = ["* * *", "61 * * * *", "* * * * * * *", "", "@never", "1-", "*/0 * * * *", "a b c d e"]
BAD_TZS = ["Mars/Olympus", "", "UTC+99", "../../etc/localtime", "Europe/Nowhere"]
BAD_INTERVALS: list[Any] = [0, -1, float("nan"), float("inf"), "1", timedelta(0), timedelta(-5)]
UNENCODABLE: list[Any] = [object(), complex(1, 2), threading.Lock(), type, msgspec.Raw(b"\xc1"),
                          msgspec.Raw(b"\x92\x01"), {1: object()}, [print]]


def task(**fields: Any) -> Task:
    fields.setdefault("func", REF)
    fields.setdefault("args", ("/dev/null", "k"))
    return Task(**fields)


Cases = list[tuple[str, Callable[[], list[Task]]]]


def malformed() -> Cases:
    """(what, build): ``build()`` raises, or returns a batch the queue must refuse whole."""
    return [*_fields(), *_schedules(), *_batches()]


def _fields() -> Cases:
    cases: Cases = []

    def add(what: str, **fields: Any) -> None:
        cases.append((what, lambda: [task(**fields)]))
        # The same mistake inside a batch of good tasks: nothing of the batch is written.
        cases.append((f"{what} among good ones",
                      lambda: [task(id="good-1"), task(**fields), task(id="good-2")]))

    for value in BAD_IDS:
        add(f"id {value!r}", id=value)
        add(f"dependency id {value!r}", depends_on=[value])
    for value in BAD_QUEUES:
        add(f"queue {value!r}", queue_name=value)
    for value in BAD_INTS:
        add(f"priority {value!r}", priority=value)
        add(f"max_retries {value!r}", max_retries=value)
    for value in BAD_SECONDS:
        add(f"ttl {value!r}", ttl=value)
        add(f"timeout {value!r}", timeout=value)
        add(f"retry_delay {value!r}", retry_delay=value)
    add("ttl 0", ttl=0)
    add("timeout 0", timeout=0)
    for value in BAD_FUNCS:
        add(f"func {value!r}", func=value)
    for value in (1, "x", {"a": 1}, None, {1, 2}):
        add(f"args {value!r}", args=value)
    for value in ({1: 2}, [("a", 1)], "x", None):
        add(f"kwargs {value!r}", kwargs=value)
    for value in UNENCODABLE:
        add(f"argument {type(value).__name__}", args=(value,))
        add(f"keyword argument {type(value).__name__}", kwargs={"x": value})
    add("oversize payload", args=(b"x" * (MAX_PAYLOAD + 1),))
    add("oversize keyword payload", kwargs={"blob": "y" * (MAX_PAYLOAD + 1)})
    return cases


def _schedules() -> Cases:
    def scheduled(**fields: Any) -> Callable[[], list[Task]]:
        return lambda: [task(schedule=Schedule(**fields))]

    return [
        *((f"cron {expr!r}", scheduled(cron=expr)) for expr in BAD_CRONS),
        *((f"tz {tz!r}", scheduled(cron="* * * * *", tz=tz)) for tz in BAD_TZS),
        *((f"interval {every!r}", scheduled(interval=every)) for every in BAD_INTERVALS),
        ("cron and interval", scheduled(cron="* * * * *", interval=5)),
        ("schedule not a Schedule", lambda: [task(schedule="* * * * *")]),
    ]


def _batches() -> Cases:
    cases: Cases = [
        ("depends on itself", lambda: [task(id="self", depends_on=["self"])]),
        ("unknown dependency", lambda: [task(depends_on=["nobody-has-this-id"])]),
        ("two-task cycle", lambda: [task(id="c1", depends_on=["c2"]),
                                    task(id="c2", depends_on=["c1"])]),
        ("long cycle", lambda: [task(id=f"r{i}", depends_on=[f"r{(i + 1) % 20}"])
                                for i in range(20)]),
        ("depends_on not a list", lambda: [task(depends_on="abc")]),
    ]
    for item in ({"func": REF}, b"\x93\x01\x02\x03", "task", None, 42, msgspec.Raw(b"\xc1")):
        cases.append((f"not a Task: {item!r}", lambda item=item: [item]))  # type: ignore[misc]
    return cases


def corrupt_bodies(valid: bytes) -> list[bytes]:
    """Bytes that do not decode into a Task, each for another record."""
    return [
        b"\xc1",  # an opcode msgpack never uses
        b"",
        valid[: len(valid) // 2],  # truncated
        msgspec.msgpack.encode([1, 2, 3]),  # valid msgpack, wrong shape
        msgspec.msgpack.encode({"func": 123, "args": "x"}),  # wrong types
        msgspec.msgpack.encode({"func": REF, "priority": 2**64 - 1}),  # out of range
        msgspec.msgpack.encode({"func": REF, "id": "../../x"}),  # a path for an id
        random.Random(5).randbytes(64),
    ]
