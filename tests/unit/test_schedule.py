"""Campaign schedules on the store's wall clock, across DST changes (edge/core/schedule.py, issue 11).

Instants are written in UTC with the store's wall clock beside them, so each case says what the
shop's clock shows. 2026: Paris springs forward on 29 March at 01:00 UTC (02:00 CET -> 03:00 CEST)
and falls back on 25 October at 01:00 UTC (03:00 CEST -> 02:00 CET: 02:00-02:59 twice); New York
on 8 March at 07:00 UTC (02:00 EST -> 03:00 EDT) and 1 November at 06:00 UTC (02:00 EDT -> 01:00
EST: 01:00-01:59 twice).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from edge.core import schedule
from edge.core.schedule import UnknownTimeZone, day_bounds, is_on, local_day, time_zone
from edge.core.wire import Schedule

PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"


def utc(text: str) -> float:
    """Unix seconds of a UTC time written 'YYYY-MM-DD HH:MM'."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


def hours(*windows: tuple[str, str], days: tuple[int, ...] = ()) -> Schedule:
    """A weekly schedule from 'HH:MM' windows (end '24:00' allowed)."""

    def minute(text: str) -> int:
        h, m = text.split(":")
        return int(h) * 60 + int(m)

    return Schedule(days=days, hours=tuple((minute(a), minute(b)) for a, b in windows))


NINE_TO_TEN = hours(("09:00", "10:00"))

# (zone, UTC instant, schedule, on?, what the store's clock shows)
CASES = [
    # A 09:00-10:00 window is 09:00-10:00 on the wall clock on both sides of each change.
    (PARIS, "2026-03-28 08:00", NINE_TO_TEN, True, "Sat 09:00 CET, the day before spring"),
    (PARIS, "2026-03-28 07:59", NINE_TO_TEN, False, "Sat 08:59 CET"),
    (PARIS, "2026-03-28 09:00", NINE_TO_TEN, False, "Sat 10:00 CET: the end is out"),
    (PARIS, "2026-03-29 07:00", NINE_TO_TEN, True, "Sun 09:00 CEST, the day of the change"),
    (PARIS, "2026-03-29 08:00", NINE_TO_TEN, False, "Sun 10:00 CEST (09:00 in winter time)"),
    (PARIS, "2026-03-30 07:00", NINE_TO_TEN, True, "Mon 09:00 CEST"),
    (PARIS, "2026-03-30 06:59", NINE_TO_TEN, False, "Mon 08:59 CEST"),
    (PARIS, "2026-10-24 07:00", NINE_TO_TEN, True, "Sat 09:00 CEST, the day before autumn"),
    (PARIS, "2026-10-25 08:00", NINE_TO_TEN, True, "Sun 09:00 CET, the day of the change"),
    (PARIS, "2026-10-25 07:30", NINE_TO_TEN, False, "Sun 08:30 CET (09:30 in summer time)"),
    (PARIS, "2026-10-25 09:00", NINE_TO_TEN, False, "Sun 10:00 CET"),
    (NEW_YORK, "2026-03-07 14:00", NINE_TO_TEN, True, "Sat 09:00 EST"),
    (NEW_YORK, "2026-03-08 13:00", NINE_TO_TEN, True, "Sun 09:00 EDT"),
    (NEW_YORK, "2026-03-08 14:00", NINE_TO_TEN, False, "Sun 10:00 EDT"),
    (NEW_YORK, "2026-10-31 13:00", NINE_TO_TEN, True, "Sat 09:00 EDT"),
    (NEW_YORK, "2026-11-01 14:00", NINE_TO_TEN, True, "Sun 09:00 EST"),
    (NEW_YORK, "2026-11-01 13:00", NINE_TO_TEN, False, "Sun 08:00 EST"),
    # A skipped hour has no wall-clock minutes.
    (PARIS, "2026-03-28 01:00", hours(("02:00", "03:00")), True, "Sat 02:00 CET, a normal night"),
    (PARIS, "2026-03-29 00:59", hours(("02:00", "03:00")), False, "Sun 01:59 CET"),
    (PARIS, "2026-03-29 01:00", hours(("02:00", "03:00")), False, "Sun 03:00 CEST: skipped"),
    (PARIS, "2026-03-29 00:59", hours(("02:30", "04:00")), False, "Sun 01:59 CET"),
    (PARIS, "2026-03-29 01:00", hours(("02:30", "04:00")), True, "Sun 03:00 CEST: opens here"),
    (PARIS, "2026-03-29 01:59", hours(("02:30", "04:00")), True, "Sun 03:59 CEST"),
    (PARIS, "2026-03-29 02:00", hours(("02:30", "04:00")), False, "Sun 04:00 CEST"),
    (PARIS, "2026-03-29 00:59", hours(("01:00", "02:30")), True, "Sun 01:59 CET"),
    (PARIS, "2026-03-29 01:00", hours(("01:00", "02:30")), False, "Sun 03:00 CEST: closed"),
    (NEW_YORK, "2026-03-08 06:59", hours(("01:00", "02:30")), True, "Sun 01:59 EST"),
    (NEW_YORK, "2026-03-08 07:00", hours(("01:00", "02:30")), False, "Sun 03:00 EDT"),
    # A repeated hour counts once: a window within it runs in the first pass only.
    (PARIS, "2026-10-25 00:00", hours(("02:00", "03:00")), True, "Sun 02:00 CEST, first pass"),
    (PARIS, "2026-10-25 00:59", hours(("02:00", "03:00")), True, "Sun 02:59 CEST, first pass"),
    (PARIS, "2026-10-25 01:00", hours(("02:00", "03:00")), False, "Sun 02:00 CET, second pass"),
    (PARIS, "2026-10-25 01:59", hours(("02:00", "03:00")), False, "Sun 02:59 CET, second pass"),
    (PARIS, "2026-10-25 00:29", hours(("01:00", "02:30")), True, "Sun 02:29 CEST, first pass"),
    (PARIS, "2026-10-25 01:29", hours(("01:00", "02:30")), False, "Sun 02:29 CET, second pass"),
    # ... one open when the clock goes back and after the repeat stays open through it.
    (PARIS, "2026-10-25 01:30", hours(("01:00", "04:00")), True, "Sun 02:30 CET, second pass"),
    (PARIS, "2026-10-25 01:00", hours(("02:30", "04:00")), True, "Sun 02:00 CET: never closed"),
    (PARIS, "2026-10-25 02:59", hours(("02:30", "04:00")), True, "Sun 03:59 CET"),
    (PARIS, "2026-10-25 03:00", hours(("02:30", "04:00")), False, "Sun 04:00 CET"),
    (NEW_YORK, "2026-11-01 05:30", hours(("01:00", "02:00")), True, "Sun 01:30 EDT, first pass"),
    (NEW_YORK, "2026-11-01 06:30", hours(("01:00", "02:00")), False, "Sun 01:30 EST, second pass"),
    (NEW_YORK, "2026-11-01 06:30", hours(("00:00", "02:00")), False, "Sun 01:30 EST, second pass"),
    (NEW_YORK, "2026-11-01 06:30", hours(("01:00", "03:00")), True, "Sun 01:30 EST: spans it"),
    (NEW_YORK, "2026-11-01 06:30", Schedule(days=(7,)), True, "Sun 01:30 EST, all Sunday"),
    # Across midnight: Friday 22:00 to Saturday 02:00.
    (PARIS, "2026-06-05 20:30", hours(("22:00", "02:00"), days=(5,)), True, "Fri 22:30 CEST"),
    (PARIS, "2026-06-05 23:30", hours(("22:00", "02:00"), days=(5,)), True, "Sat 01:30 CEST"),
    (PARIS, "2026-06-06 00:00", hours(("22:00", "02:00"), days=(5,)), False, "Sat 02:00 CEST"),
    (PARIS, "2026-06-04 23:30", hours(("22:00", "02:00"), days=(5,)), False, "Fri 01:30: Thu's"),
    (PARIS, "2026-06-06 20:30", hours(("22:00", "02:00"), days=(5,)), False, "Sat 22:30 CEST"),
    (PARIS, "2026-06-05 19:59", hours(("22:00", "02:00"), days=(5,)), False, "Fri 21:59 CEST"),
    # ... over Sunday night into Monday (ISO 7 then 1).
    (PARIS, "2026-06-07 23:30", hours(("23:00", "02:00"), days=(7,)), True, "Mon 01:30 CEST"),
    # Two windows meeting at midnight; an end of 24:00.
    (PARIS, "2026-06-05 21:59", hours(("23:00", "24:00"), ("00:00", "01:00")), True, "23:59"),
    (PARIS, "2026-06-05 22:00", hours(("23:00", "24:00"), ("00:00", "01:00")), True, "00:00"),
    (PARIS, "2026-06-05 22:59", hours(("23:00", "24:00"), ("00:00", "01:00")), True, "00:59"),
    (PARIS, "2026-06-05 23:00", hours(("23:00", "24:00"), ("00:00", "01:00")), False, "01:00"),
    (PARIS, "2026-06-05 22:00", hours(("23:00", "24:00"), days=(5,)), False, "Sat 00:00 CEST"),
    # Days are the store's: a UTC Sunday evening is already Monday in Paris.
    (PARIS, "2026-06-07 21:30", Schedule(days=(6, 7)), True, "Sun 23:30 CEST"),
    (PARIS, "2026-06-07 22:30", Schedule(days=(6, 7)), False, "Mon 00:30 CEST (UTC: Sunday)"),
    (NEW_YORK, "2026-06-07 01:00", Schedule(days=(6,)), True, "Sat 21:00 EDT (UTC: Sunday)"),
    # An empty window (start = end) never runs; no days and no hours: always.
    (PARIS, "2026-06-05 10:00", hours(("10:00", "10:00")), False, "12:00, empty window"),
    (PARIS, "2026-06-05 10:00", Schedule(), True, "no days, no hours"),
    # UTC itself.
    ("UTC", "2026-06-05 09:30", NINE_TO_TEN, True, "09:30 UTC"),
]


@pytest.mark.parametrize(
    ("zone", "at", "plan", "expected", "clock"), CASES, ids=[f"{c[0]} {c[4]}" for c in CASES]
)
def test_a_schedule_is_read_on_the_store_s_wall_clock(
    zone: str, at: str, plan: Schedule, expected: bool, clock: str
) -> None:
    assert is_on(plan, utc(at), time_zone(zone)) is expected, clock


def minutes_on(plan: Schedule, zone: str, day_start_utc: str, span_h: int = 30) -> int:
    """How many real minutes, from `day_start_utc` for `span_h` hours, `plan` is on."""
    start = utc(day_start_utc)
    tz = time_zone(zone)
    return sum(is_on(plan, start + 60 * m, tz) for m in range(span_h * 60))


@pytest.mark.parametrize(
    ("zone", "day_start_utc", "plan", "minutes", "why"),
    [
        (PARIS, "2026-10-24 22:00", hours(("02:00", "03:00")), 60, "the repeated hour counts once"),
        (PARIS, "2026-10-24 22:00", hours(("01:00", "04:00")), 240, "open through the repeat"),
        (PARIS, "2026-10-24 22:00", NINE_TO_TEN, 60, "a normal hour on a 25-hour day"),
        (PARIS, "2026-03-28 23:00", hours(("02:00", "03:00")), 0, "the skipped hour: none"),
        (PARIS, "2026-03-28 23:00", hours(("01:00", "04:00")), 120, "01:00-02:00, 03:00-04:00"),
        (PARIS, "2026-03-28 23:00", NINE_TO_TEN, 60, "a normal hour on a 23-hour day"),
        (NEW_YORK, "2026-11-01 04:00", hours(("01:00", "02:00")), 60, "counts once"),
        (NEW_YORK, "2026-03-08 05:00", hours(("02:00", "03:00")), 0, "skipped"),
    ],
)
def test_how_long_a_window_runs_on_the_day_of_a_change(
    zone: str, day_start_utc: str, plan: Schedule, minutes: int, why: str
) -> None:
    assert minutes_on(plan, zone, day_start_utc, span_h=24) == minutes, why


def test_start_and_end_instants_are_a_half_open_interval() -> None:
    plan = Schedule(starts_at=utc("2026-06-01 08:00"), ends_at=utc("2026-06-08 08:00"))
    tz = time_zone(PARIS)
    assert not is_on(plan, utc("2026-06-01 08:00") - 1, tz)
    assert is_on(plan, utc("2026-06-01 08:00"), tz)
    assert is_on(plan, utc("2026-06-08 08:00") - 1, tz)
    assert not is_on(plan, utc("2026-06-08 08:00"), tz)
    assert is_on(None, 0.0, tz)
    # Instants and the weekly pattern both apply.
    weekly = Schedule(starts_at=plan.starts_at, ends_at=plan.ends_at, days=(1,))
    assert is_on(weekly, utc("2026-06-01 12:00"), tz)  # Monday, inside
    assert not is_on(weekly, utc("2026-06-02 12:00"), tz)  # Tuesday
    assert not is_on(weekly, utc("2026-06-08 12:00"), tz)  # Monday, after the end


@pytest.mark.parametrize(
    ("zone", "day", "first_utc", "hours_long"),
    [
        (PARIS, date(2026, 6, 5), "2026-06-04 22:00", 24),
        (PARIS, date(2026, 3, 29), "2026-03-28 23:00", 23),
        (PARIS, date(2026, 10, 25), "2026-10-24 22:00", 25),
        (NEW_YORK, date(2026, 3, 8), "2026-03-08 05:00", 23),
        (NEW_YORK, date(2026, 11, 1), "2026-11-01 04:00", 25),
        # Santiago changes at midnight: a spring day starts at 01:00, an autumn one repeats 23:00.
        ("America/Santiago", date(2026, 9, 6), "2026-09-06 04:00", 23),
        ("America/Santiago", date(2026, 4, 4), "2026-04-04 03:00", 25),
        ("UTC", date(2026, 6, 5), "2026-06-05 00:00", 24),
    ],
)
def test_a_local_day_runs_from_midnight_to_midnight(
    zone: str, day: date, first_utc: str, hours_long: int
) -> None:
    tz = time_zone(zone)
    start, end = day_bounds(day, tz)
    assert start == utc(first_utc)
    assert end - start == hours_long * 3600
    assert local_day(start, tz) == day
    assert local_day(end - 1, tz) == day
    assert local_day(end, tz) == day + timedelta(days=1)
    assert local_day(start - 1, tz) == day - timedelta(days=1)


def test_the_local_day_is_the_store_s_date_not_utc_s() -> None:
    assert local_day(utc("2026-06-05 22:30"), time_zone(PARIS)) == date(2026, 6, 6)
    assert local_day(utc("2026-06-06 02:30"), time_zone(NEW_YORK)) == date(2026, 6, 5)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("Mars/Olympus_Mons", "not in this gateway's tz database"),
        ("Europe", "not in this gateway's tz database"),  # a directory of the database
        ("Europe/Paris/", "not in this gateway's tz database"),
        ("localtime", "not a place's civil time"),  # the gateway's own zone, not the store's
        ("posixrules", "not a place's civil time"),
        ("right/Europe/Paris", "not a place's civil time"),  # counts leap seconds
    ],
)
def test_an_unknown_time_zone_is_an_error_never_utc(name: str, says: str) -> None:
    with pytest.raises(UnknownTimeZone) as info:
        time_zone(name)
    assert info.value.name == name
    assert says in info.value.reason and repr(name) in info.value.reason


def test_utc_needs_no_database_and_known_zones_load() -> None:
    assert time_zone("UTC") is UTC
    for name in (PARIS, NEW_YORK, "Asia/Kolkata", "Etc/GMT+5"):
        assert str(time_zone(name)) == name
    assert schedule.time_zone(PARIS) is time_zone(PARIS)  # zoneinfo's cache: one object
