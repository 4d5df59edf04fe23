"""What the benchmark's no-op task does: note the first start and the N-th start.

The worker process runs the no-op task; on its first call and on its ``OMNIQ_BENCH_EXPECT``-th
call it writes a small JSON file into ``OMNIQ_BENCH_MARKS`` with the wall clock, the process
CPU time and (when profiling) the I/O counters. The driver's clock starts at the first mark, so
worker start-up (imports, connecting) is never part of a throughput figure. Standard library
only: every benchmark environment imports it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

#: I/O counters filled by ``iocount`` when profiling; copied into each mark.
COUNTERS: dict[str, int] = {}

_started = 0
_expect: int | None = None


def job_started() -> None:
    """Called once per run of the no-op task."""
    global _started, _expect
    _started += 1
    if _expect is None:
        _expect = int(os.environ.get("OMNIQ_BENCH_EXPECT", "0"))
    if _started == 1:
        _write("start")
    if _started == _expect:
        _write("last")


def reset(expect: int) -> None:
    """Start counting again (for workers that run inside the driver's process)."""
    global _started, _expect
    _started = 0
    _expect = expect


def _write(name: str) -> None:
    folder = os.environ.get("OMNIQ_BENCH_MARKS")
    if not folder:
        return
    mark = {"wall": time.time(), "cpu": time.process_time(), "io": dict(COUNTERS)}
    tmp = Path(folder) / f".{name}.tmp"
    tmp.write_text(json.dumps(mark))
    tmp.rename(Path(folder) / f"{name}.json")  # the driver never sees half a file


def read(folder: str | Path, name: str) -> dict[str, object] | None:
    """The mark ``name`` ("start" or "last") if it has been written."""
    path = Path(folder) / f"{name}.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
