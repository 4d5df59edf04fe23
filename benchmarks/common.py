"""Shared pieces of the benchmark: where the servers are, the per-run context handed from the
driver to the worker process, waiting with deadlines, and small statistics. Standard library
only, so both benchmark environments import it."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

POSTGRES = os.environ.get("OMNIQ_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("OMNIQ_BENCH_REDIS", "redis://127.0.0.1:6379/0")
NATS = os.environ.get("OMNIQ_BENCH_NATS", "nats://127.0.0.1:4222")

_CONTEXT_ENV = "OMNIQ_BENCH_CONTEXT"


@dataclass
class Context:
    """Where one measurement keeps its jobs: a fresh namespace (key prefix, stream, table
    prefix), a fresh PostgreSQL database and a fresh directory, made for this run only."""

    ns: str
    workdir: str
    postgres: str = ""
    redis: str = REDIS
    nats: str = NATS

    def env(self) -> dict[str, str]:
        """Environment that hands this context to a worker process."""
        return {_CONTEXT_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls) -> Context:
        """The context the driver handed to this (worker) process."""
        return cls(**json.loads(os.environ[_CONTEXT_ENV]))


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    deadline: float,
    what: str,
    interval: float = 0.002,
) -> float:
    """Poll ``check`` until it is true; return the wall time of the check that saw it.
    TimeoutError naming ``what`` once ``deadline`` (time.monotonic) passes."""
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def median(values: Sequence[float]) -> float | None:
    """Median of the numbers present, None when there are none."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def print_result(measurement: Coroutine[Any, Any, Any]) -> None:
    """Run ``measurement`` and print its outcome as the one ``RESULT <json>`` line that
    ``run.py`` reads (``{"error": ...}`` and exit code 1 if it raised)."""
    try:
        outcome = asyncio.run(measurement)
    except Exception as exc:
        print("RESULT " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    print("RESULT " + json.dumps(outcome), flush=True)
