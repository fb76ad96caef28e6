"""The bridge's campaign caps across stores and late triggers (cloud_bridge/core/campaign_caps.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cloud_bridge.core.campaign_caps import (
    CampaignCaps,
    decided_while_active,
    local_day_bounds,
    over_campaign_cap,
)

DAY = 86400.0
BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: ZoneInfo, *when: int) -> float:
    return datetime(*when, tzinfo=zone).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("when", "hours"),
    [
        ((2026, 6, 10, 15, 0), 24),
        ((2026, 3, 29, 12, 0), 23),  # clocks go forward in Berlin
        ((2026, 10, 25, 1, 30), 25),  # clocks go back
    ],
)
def test_the_local_day_runs_midnight_to_midnight(when: tuple[int, ...], hours: int) -> None:
    start, end = local_day_bounds(at(BERLIN, *when), BERLIN)
    assert start == at(BERLIN, *when[:3], 0, 0)
    assert end - start == hours * 3600


def test_a_utc_day_is_the_utc_calendar_day() -> None:
    ts = datetime(2026, 6, 10, 23, 59, tzinfo=UTC).timestamp()
    assert local_day_bounds(ts, UTC) == (ts - 86340, ts + 60)


def test_no_caps_never_refuse() -> None:
    assert not over_campaign_cap(CampaignCaps(), 0.0, (-1.0, 1.0), [0.0] * 100)


def test_per_day_counts_only_the_local_day() -> None:
    caps = CampaignCaps(per_member_day=2)
    day = (1000.0, 1000.0 + DAY)
    assert not over_campaign_cap(caps, 2000.0, day, [999.0, 1500.0])  # one before the day
    assert over_campaign_cap(caps, 2000.0, day, [1000.0, 1500.0])
    assert not over_campaign_cap(caps, 2000.0, day, [1500.0, 1000.0 + DAY])  # the next day


def test_zero_means_never() -> None:
    assert over_campaign_cap(CampaignCaps(per_member_day=0), 0.0, (0.0, DAY), [])
    assert over_campaign_cap(CampaignCaps(per_member_week=0), 0.0, (0.0, DAY), [])


def test_per_week_is_any_seven_days_either_side() -> None:
    caps = CampaignCaps(per_member_week=2)
    assert over_campaign_cap(caps, 0.0, (0.0, DAY), [-3 * DAY, 3 * DAY])  # within 7 days of each
    assert not over_campaign_cap(caps, 0.0, (0.0, DAY), [-4 * DAY, 4 * DAY])  # 8 days apart
    assert over_campaign_cap(caps, 0.0, (0.0, DAY), [5 * DAY, 6 * DAY])  # later ones count too


@pytest.mark.parametrize(
    ("active_now", "changed_at", "inactive", "ts", "honoured"),
    [
        (True, None, False, 100.0, True),
        (False, 200.0, True, 100.0, True),  # decided before the pause
        (False, 200.0, True, 200.0, False),
        (False, 200.0, True, 300.0, False),  # decided after it
        (False, None, True, 100.0, False),  # no record of when it stopped
        (False, 200.0, False, 100.0, False),  # not a paused or archived campaign
    ],
)
def test_a_late_trigger_is_honoured_only_if_decided_while_active(
    active_now: bool, changed_at: float | None, inactive: bool, ts: float, honoured: bool
) -> None:
    assert decided_while_active(active_now, changed_at, inactive, ts) is honoured
