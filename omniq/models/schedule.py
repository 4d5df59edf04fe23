"""Schedule and the pure next-occurrence rule (no I/O, no clock of its own)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from omniq.exceptions import InvalidTaskError


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes mean UTC; aware ones are converted."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Schedule(msgspec.Struct, kw_only=True, omit_defaults=True):
    """When a task runs: once at ``run_at``, or recurring by ``cron`` or ``interval``.

    ``cron`` (5 fields, evaluated in ``tz``) and ``interval`` are mutually exclusive. With either,
    ``run_at`` is the earliest first occurrence. ``paused`` holds the task in place.
    Invalid values raise ``InvalidTaskError`` (a ``ValueError``) at construction.
    """

    run_at: datetime | None = None
    cron: str | None = None
    interval: timedelta | float | None = None
    paused: bool = False
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime):
                kind = type(self.run_at).__name__
                raise InvalidTaskError(f"run_at must be a datetime, not {kind}")
            self.run_at = as_utc(self.run_at)
        if self.cron is not None and self.interval is not None:
            raise InvalidTaskError("a schedule takes cron or interval, not both")
        if self.interval is not None:
            self.interval = _interval(self.interval)
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidTaskError(f"unknown time zone {self.tz!r}") from None
        if self.cron is not None:
            _check_cron(self.cron, zone)

    @property
    def recurring(self) -> bool:
        """True for cron and interval schedules."""
        return self.cron is not None or self.interval is not None

    def first_run(self, now: datetime) -> datetime:
        """The first occurrence, seen from ``now`` (UTC)."""
        if self.cron is not None:
            start = self.run_at - timedelta(microseconds=1) if self.run_at else now
            return _cron_after(self.cron, self.tz, start)
        if self.interval is not None:
            return self.run_at if self.run_at else now + self._step()
        return self.run_at if self.run_at else now

    def next_run(self, previous: datetime, now: datetime) -> datetime | None:
        """The next occurrence after ``previous`` that lies after ``now``; None if not recurring.

        Occurrences are counted from ``previous`` so they never drift by run times, and every
        occurrence missed while no worker ran collapses into this one.
        """
        if self.cron is not None:
            return _cron_after(self.cron, self.tz, max(previous, now), previous=previous)
        if self.interval is None:
            return None
        step = self._step()
        if now < previous:
            return previous + step
        skipped = math.floor((now - previous) / step) + 1
        return previous + skipped * step

    def _step(self) -> timedelta:
        assert isinstance(self.interval, timedelta)
        return self.interval


def _interval(value: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise InvalidTaskError(f"interval must be seconds or a timedelta, not {value!r}")
    step = value if isinstance(value, timedelta) else None
    if step is None:
        assert isinstance(value, int | float)
        if not math.isfinite(value):
            raise InvalidTaskError(f"interval must be finite, not {value!r}")
        step = timedelta(seconds=value)
    if step <= timedelta(0):
        raise InvalidTaskError(f"interval must be positive, not {value!r}")
    return step


def _check_cron(expr: object, zone: ZoneInfo) -> None:
    from croniter import croniter  # imported on first use: it is slow to import

    if not isinstance(expr, str) or len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise InvalidTaskError(f"invalid cron expression {expr!r} (5 fields expected)")
    try:
        croniter(expr, datetime.now(zone)).get_next(datetime)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidTaskError(f"invalid cron expression {expr!r}: {exc}") from None


def _cron_after(expr: str, tz: str, after: datetime, previous: datetime | None = None) -> datetime:
    """The first cron time after ``after``, in ``tz``. A wall-clock time that repeats when
    clocks go back fires once; one skipped when they go forward fires at the first valid
    moment after it (croniter's rule, as classic cron does)."""
    from croniter import croniter

    zone = ZoneInfo(tz)
    times = croniter(expr, after.astimezone(zone))
    nxt: datetime = times.get_next(datetime)
    if previous is not None:
        wall = previous.astimezone(zone).replace(tzinfo=None)
        while nxt.replace(tzinfo=None) <= wall:
            nxt = times.get_next(datetime)
    return nxt.astimezone(UTC)
