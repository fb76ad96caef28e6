"""When a campaign runs, in the store's own local time (issue 11): schedules, local days, time zones.

A `wire.Schedule` holds instants (`starts_at`, `ends_at`: Unix seconds, [start, end)) and a weekly
pattern read on the store's wall clock, in the campaign sync's IANA `timezone`: ISO weekdays
(`days`, empty: every day) and windows of minutes of the local day (`hours`, each [start, end),
empty: all day). The gateway decides offline, so it reads its own clock in that zone
(docs/mqtt.md, `campaigns`):

- **Wall clock across a DST change.** A 09:00-10:00 window is 09:00-10:00 on the clock on both
  sides of a change: one real hour either way.
- **A skipped hour** (spring forward) has no wall-clock minutes: a window inside it does not run
  that day; one that spans the change runs for the minutes the clock shows (02:30-04:00 in Paris
  on the last Sunday of March: from 03:00).
- **A repeated hour** (fall back) counts once by the wall clock: in its second pass a window is open
  only if it was open when the clock went back and is still open when the repeat is over (so it
  never closes and reopens); one that opens or ends within the repeated hour runs in the first pass
  only (02:00-03:00 on the last Sunday of October in Paris: one real hour, not two).
- **Across midnight.** A window whose start is after its end (22:00-02:00: (1320, 120)) runs from
  its start to midnight on a listed day, and on from midnight to its end the next day. A window
  whose start equals its end is empty. The end 1440 is midnight at the end of the day.
- **The local day** (per-member-day caps, daily budgets) is the store's calendar date: it runs from
  one local midnight to the next (23, 24 or 25 hours), `day_bounds`.

A time zone this gateway's tz database does not know is an error (`UnknownTimeZone`), never UTC:
the campaign sync naming it is refused (edge/services/sync.py). Pure but for `zoneinfo` reading the
system's tz database (the stdlib's, read once per zone and cached by `zoneinfo`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.core.wire import Schedule

#: Zone names the tz database holds that do not name a place's civil time: `localtime` (the
#: gateway's own setting, not the store's), `posixrules`, and the `right/` zones (they count leap
#: seconds, which Unix time does not).
_NOT_CIVIL = ("localtime", "posixrules")


class UnknownTimeZone(ValueError):
    """A time zone name this gateway cannot use; `reason` says which and what to do."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def time_zone(name: str) -> tzinfo:
    """The IANA zone `name` from the system's tz database; UnknownTimeZone if it is not there.

    "UTC" needs no database. Never falls back to UTC or to the gateway's own zone.
    """
    if name == "UTC":
        return UTC
    if name in _NOT_CIVIL or name.startswith("right/"):
        raise UnknownTimeZone(
            name,
            f"time zone {name!r} is not a place's civil time: use an IANA name like 'Europe/Paris'",
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # ZoneInfoNotFoundError: not in the database; ValueError: not a valid key (a path);
        # OSError: a directory or an unreadable file where the key points.
        raise UnknownTimeZone(
            name,
            f"time zone {name!r} is not in this gateway's tz database ({type(exc).__name__}): "
            "check the store's time zone on the bridge (an IANA name like 'Europe/Paris'), or "
            "update the gateway's tzdata package",
        ) from None


def local_day(t_s: float, zone: tzinfo) -> date:
    """The store's calendar date at Unix time `t_s`."""
    return datetime.fromtimestamp(t_s, zone).date()


def day_bounds(day: date, zone: tzinfo) -> tuple[float, float]:
    """The local day `day` as Unix seconds [first instant, first instant of the next day)."""
    return _midnight(day, zone), _midnight(day + timedelta(days=1), zone)


def _midnight(day: date, zone: tzinfo) -> float:
    # fold=0: a midnight the clock skips (a zone that springs forward at 00:00) is read with the
    # offset before the change, which lands on the change itself: the day's first instant.
    return datetime.combine(day, time(0), tzinfo=zone).timestamp()


def is_on(schedule: Schedule | None, t_s: float, zone: tzinfo) -> bool:
    """Whether a campaign with `schedule` (None: always) runs at Unix time `t_s` in `zone`."""
    if schedule is None:
        return True
    if schedule.starts_at is not None and t_s < schedule.starts_at:
        return False
    if schedule.ends_at is not None and t_s >= schedule.ends_at:
        return False
    if not schedule.days and not schedule.hours:
        return True
    local = datetime.fromtimestamp(t_s, zone)
    if not local.fold:
        return _on_wall(schedule, local)
    # The second pass of a repeated hour: open only if the schedule spans the clock going back
    # (open at the end of the first pass and when the repeat is over).
    first_end_s, repeat_end_s = _repeat_edges(t_s, local, zone)
    return _on_wall(schedule, datetime.fromtimestamp(first_end_s, zone)) and _on_wall(
        schedule, datetime.fromtimestamp(repeat_end_s, zone)
    )


def _on_wall(schedule: Schedule, local: datetime) -> bool:
    """Whether the wall-clock time `local` (its weekday and minute of the day) is in `schedule`."""
    weekday = local.isoweekday()
    days = schedule.days
    if not schedule.hours:
        return not days or weekday in days
    minute = local.hour * 60 + local.minute
    yesterday = 7 if weekday == 1 else weekday - 1
    for start, end in schedule.hours:
        if start < end:
            if start <= minute < end and (not days or weekday in days):
                return True
        elif start > end:  # across midnight: the evening of a listed day, the next morning
            if minute >= start and (not days or weekday in days):
                return True
            if minute < end and (not days or yesterday in days):
                return True
    return False


def _repeat_edges(t_s: float, local: datetime, zone: tzinfo) -> tuple[float, float]:
    """For `t_s` in the second pass of a repeated hour (`local.fold` 1): an instant in the first
    pass's last second, and the instant the repeat is over (the clock past the hour again)."""
    new_offset = local.utcoffset()
    old_offset = local.replace(fold=0).utcoffset()
    assert new_offset is not None and old_offset is not None  # an aware datetime of `zone`
    repeat_s = (old_offset - new_offset).total_seconds()
    # The clock went back between the first pass's same wall time (t - repeat) and t: find when,
    # to the second (offsets change on whole seconds).
    before, after = t_s - repeat_s, t_s
    while after - before > 1.0:
        middle = (before + after) / 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == new_offset:
            after = middle
        else:
            before = middle
    return before, after + repeat_s
