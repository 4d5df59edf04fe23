"""Task functions for the CLI tests: worker subprocesses load this module with ``--import``."""

from __future__ import annotations

import asyncio


def add(a: int, b: int) -> int:
    return a + b


async def greet(name: str, punctuation: str = "!") -> str:
    await asyncio.sleep(0)
    return f"hello {name}{punctuation}"


def boom(message: str = "boom") -> None:
    raise ValueError(message)


async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds
