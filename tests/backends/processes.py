"""Running `omniq worker` processes and reading their ledgers, for multi-process tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(backend: str, *args: str) -> subprocess.Popen[bytes]:
    """Start `python -m omniq worker` against ``backend``, allowed to run the ledger tasks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "omniq", "worker", "--backend", backend,
         "--import", "tests.backends.ledger_tasks", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def ledger(path: Path) -> list[tuple[str, str, int]]:
    """(event, key, pid) per line."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        event, key, pid = line.split()
        rows.append((event, key, int(pid)))
    return rows


def done_counts(path: Path) -> Counter[str]:
    """How many times each key finished."""
    return Counter(key for event, key, _ in ledger(path) if event == "done")


def wait_for(predicate: object, timeout: float) -> None:
    """Poll ``predicate()`` until true or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)
