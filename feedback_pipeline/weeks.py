"""What a week is, said once: the Monday 00:00 UTC that starts it, in Python, Polars and SQL.

Every stage names weeks by that Monday (the partition key); nothing here reads the
local clock's zone. Calendar logic only: no warehouse, no Dagster.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import polars as pl

WEEK = timedelta(days=7)


def monday_of(day: date | datetime) -> date:
    """The Monday of the week holding `day` (a datetime is taken in UTC)."""
    if isinstance(day, datetime):
        day = (day.astimezone(timezone.utc) if day.tzinfo else day).date()
    return day - timedelta(days=day.weekday())


def current_week(now: datetime | None = None) -> date:
    """The Monday of the week running now, in UTC (the first week that is not closed)."""
    return monday_of(now or datetime.now(timezone.utc))


def week_start(week: date | str) -> datetime:
    """00:00 UTC of the week's Monday."""
    week = date.fromisoformat(week) if isinstance(week, str) else week
    return datetime.combine(week, time(0), timezone.utc)


def week_end(week: date | str) -> datetime:
    """00:00 UTC of the Monday after: the week's exclusive end."""
    return week_start(week) + WEEK


def weeks_between(first: date, last: date) -> list[str]:
    """Partition keys of every week from `first`'s through `last`'s, in order."""
    out, week = [], monday_of(first)
    while week <= last:
        out.append(week.isoformat())
        week += WEEK
    return out


def week_expr(timestamp: pl.Expr) -> pl.Expr:
    """Polars: the Monday (Date) of a UTC Datetime or Date column."""
    return timestamp.dt.date().dt.truncate("1w")


def week_sql(timestamptz: str) -> str:
    """SQL: the Monday (UTC) of a TIMESTAMPTZ. date_trunc on a TIMESTAMPTZ goes through
    ICU calendars (~1.3 s per million rows, more than the rest of typing); on the UTC
    wall-clock TIMESTAMP it is plain arithmetic, and independent of the session zone."""
    return f"date_trunc('week', timezone('UTC', {timestamptz}))::DATE"
