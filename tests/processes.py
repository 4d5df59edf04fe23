"""Worker and producer processes for multi-process tests, with their output in log files (a
pipe nobody reads would block a chatty process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """A Python child process started from the repository root, output to ``log``."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        self.pid = self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a running worker finishes its tasks), wait; the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            tail = self.output()[-2000:]
            raise AssertionError(f"pid {self.pid} ignored SIGTERM: {tail}") from None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; the exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"pid {self.pid} still running: {self.output()[-2000:]}") from None


def worker(url: str, log: Path, *args: str) -> Process:
    """``omniq worker`` on ``url``, allowed to run the ledger tasks."""
    return Process(["-m", "omniq", "worker", "--backend", url, "--import", "tests.ledger",
                    *args], log)


def producer(url: str, book: Path, log: Path, prefix: str, count: int, *args: str) -> Process:
    """``tests/produce.py``: enqueue ``count`` ledger tasks named ``<prefix><n>``."""
    return Process(["-m", "tests.produce", url, str(book), prefix, str(count), *args], log)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until true, or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
