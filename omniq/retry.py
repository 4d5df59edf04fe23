"""Retry backoff: a pure rule, given a random source so tests can pin it."""

from __future__ import annotations

import random

MAX_BACKOFF = 3600.0
JITTER = 0.10


def backoff(retry_delay: float, retry: int, rand: random.Random | None = None) -> float:
    """Seconds to wait before retry ``retry`` (1-based): ``retry_delay * 2**(retry-1)`` ±10%,
    capped at one hour."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    # Cap the exponent first so huge retry counts cannot overflow a float.
    base = retry_delay * 2.0 ** min(retry - 1, 64)
    jitter = (rand or random).uniform(1 - JITTER, 1 + JITTER)
    return min(base * jitter, MAX_BACKOFF)
