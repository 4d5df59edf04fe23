"""Task functions the dashboard tests run."""

from __future__ import annotations

from pathlib import Path

import omniq


@omniq.task
async def fail_once(marker: str) -> str:
    """Fails while ``marker`` does not exist (creating it), succeeds afterwards: a requeued
    failure then completes."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails on purpose")
    return "recovered"


@omniq.task
async def echo(value: object) -> object:
    return value
