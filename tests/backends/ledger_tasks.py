"""Tasks for multi-process tests: each appends one line per event to a ledger file."""

from __future__ import annotations

import asyncio
import os

import omniq


def _append(path: str, line: str) -> None:
    # O_APPEND writes of one short line are atomic, so concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@omniq.task
async def ledger(path: str, key: str, seconds: float = 0.0) -> str:
    """Record start and done of ``key`` in the ledger at ``path``."""
    _append(path, f"start {key} {os.getpid()}")
    if seconds:
        await asyncio.sleep(seconds)
    _append(path, f"done {key} {os.getpid()}")
    return key
