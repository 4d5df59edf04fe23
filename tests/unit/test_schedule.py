"""The next-occurrence rule: intervals without drift, coalescing, cron across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from omniq import InvalidTaskError, Schedule

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_run_at_only_runs_once() -> None:
    schedule = Schedule(run_at=T0)
    assert not schedule.recurring
    assert schedule.first_run(T0 - timedelta(hours=1)) == T0
    assert schedule.next_run(T0, T0 + timedelta(seconds=1)) is None


def test_interval_first_run_is_one_step_away_without_run_at() -> None:
    assert Schedule(interval=10).first_run(T0) == T0 + timedelta(seconds=10)
    assert Schedule(interval=timedelta(minutes=1), run_at=T0).first_run(T0 - timedelta(1)) == T0


def test_interval_does_not_drift_with_run_time() -> None:
    schedule = Schedule(interval=10, run_at=T0)
    previous = T0
    for _ in range(100):
        # each run takes 3 s; the next occurrence is still on the 10 s grid
        previous_next = schedule.next_run(previous, previous + timedelta(seconds=3))
        assert previous_next is not None
        previous = previous_next
    assert previous == T0 + timedelta(seconds=1000)


def test_missed_interval_occurrences_coalesce() -> None:
    schedule = Schedule(interval=60, run_at=T0)
    now = T0 + timedelta(minutes=30, seconds=5)
    assert schedule.next_run(T0, now) == T0 + timedelta(minutes=31)


def test_cron_next_is_after_now_and_on_the_grid() -> None:
    schedule = Schedule(cron="*/15 * * * *")
    assert schedule.first_run(T0 + timedelta(minutes=1)) == T0 + timedelta(minutes=15)
    # workers were down for two hours: one run, at the next slot after now
    now = T0 + timedelta(hours=2, minutes=7)
    assert schedule.next_run(T0, now) == T0 + timedelta(hours=2, minutes=15)


def test_cron_first_run_not_before_run_at() -> None:
    schedule = Schedule(cron="0 * * * *", run_at=T0 + timedelta(hours=5))
    assert schedule.first_run(T0) == T0 + timedelta(hours=5)


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [
        (datetime(2026, 3, 27, tzinfo=UTC), 8),  # CET, UTC+1
        (datetime(2026, 3, 30, tzinfo=UTC), 7),  # CEST after the switch on 29 March
        (datetime(2026, 10, 26, tzinfo=UTC), 8),  # back to CET after 25 October
    ],
)
def test_cron_in_a_time_zone_follows_dst(day: datetime, utc_hour: int) -> None:
    schedule = Schedule(cron="0 9 * * *", tz="Europe/Berlin")
    nxt = schedule.first_run(day)
    assert nxt.tzinfo is UTC
    assert (nxt.date(), nxt.hour, nxt.minute) == (day.date(), utc_hour, 0)


def test_cron_across_spring_forward_never_repeats_or_goes_back() -> None:
    schedule = Schedule(cron="30 * * * *", tz="America/New_York")
    moment = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)  # 23:00 EST on 7 March
    seen = []
    for _ in range(6):
        moment_next = schedule.next_run(moment, moment)
        assert moment_next is not None and moment_next > moment
        seen.append(moment_next)
        moment = moment_next
    gaps = {b - a for a, b in pairwise(seen)}
    assert gaps == {timedelta(hours=1)}, "hourly in real time through the 02:00 gap"


def test_cron_across_fall_back_runs_daily_once() -> None:
    schedule = Schedule(cron="30 1 * * *", tz="America/New_York")
    first = schedule.first_run(datetime(2026, 10, 31, 12, tzinfo=UTC))
    second = schedule.next_run(first, first)
    assert second is not None
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    # 01:30 happens twice on 1 November; the next run is the next day, not an hour later
    assert second == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # 01:30 EST


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cron": "* * * *"},
        {"cron": "* * * * * *"},
        {"cron": "99 * * * *"},
        {"cron": "* * * * *", "interval": 1},
        {"interval": 0},
        {"interval": -5},
        {"interval": float("nan")},
        {"interval": True},
        {"tz": "Nowhere/Special"},
        {"run_at": "2026-01-01"},
    ],
)
def test_invalid_schedules_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidTaskError) as info:
        Schedule(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
