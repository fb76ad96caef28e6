"""Issue 11's campaign fields (cloud_bridge/core/campaigns.py): every bad input is refused naming
its field; local schedules become instants per store time zone, DST-correct; a daily budget is
split so that the gateways' shares add up to it exactly."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.core.campaigns import (
    Campaign,
    CampaignChange,
    CampaignDefinition,
    CampaignSchedule,
    InvalidCampaign,
    changed,
    check_campaign,
    parse_days,
    parse_hours,
    split_budget,
    targeted_stores,
    time_zone,
    wire_schedule,
)
from edge.core import wire
from edge.core.schedule import UnknownTimeZone
from edge.core.schedule import time_zone as edge_time_zone

INTERESTS = ("beauty", "home")
PROMOTIONS = ("discount", "event")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
PARIS = ZoneInfo("Europe/Paris")
GOOD = CampaignDefinition(
    id="winter",
    title="Winter sale",
    body="30% off coats",
    tiers=("gold",),
    cooldown_s=86400.0,
    priority=1,
    validity_s=3600.0,
    store_tags=("region-north",),
    image_url="https://cdn.example/winter.png",
    deep_link="acme://offers/winter",
    code="WINTER-30",
    segments=("new", "lapsed"),
    min_visits=1,
    max_visits=10,
    schedule=CampaignSchedule(
        "2026-12-10", "2027-01-10T18:30", (1, 2, 6), (("09:00", "12:00"), ("17:00", "24:00"))
    ),
    per_member_day=1,
    per_member_week=3,
    daily_budget=500,
    holdout_pct=12.5,
)


def schedule(**changes: Any) -> CampaignSchedule:
    assert GOOD.schedule is not None
    return dataclasses.replace(GOOD.schedule, **changes)


def test_a_good_definition_with_every_field_passes() -> None:
    assert check_campaign(GOOD, INTERESTS, PROMOTIONS, NOW) is GOOD
    loopback = dataclasses.replace(GOOD, image_url="http://127.0.0.1:8000/a.png")
    assert check_campaign(loopback, INTERESTS, PROMOTIONS, NOW) is loopback
    local = dataclasses.replace(GOOD, image_url="http://localhost/a.png", holdout_pct=100)
    assert check_campaign(local, INTERESTS, PROMOTIONS, NOW) is local


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        (
            {"schedule": schedule(hours=(("09:00", "12:00"), ("11:00", "13:00")))},
            "schedule.hours[1]",
            "overlaps 09:00-12:00",
        ),
        (
            {"schedule": schedule(hours=(("17:00", "24:00"), ("08:00", "17:30")))},
            "schedule.hours[1]",
            "overlaps 17:00-24:00",
        ),
        ({"schedule": schedule(hours=(("12:00", "09:00"),))}, "schedule.hours[0]", "ends before"),
        ({"schedule": schedule(hours=(("12:00", "12:00"),))}, "schedule.hours[0]", "ends before"),
        ({"schedule": schedule(hours=(("9:00", "12:00"),))}, "schedule.hours[0]", "HH:MM"),
        ({"schedule": schedule(hours=(("09:60", "12:00"),))}, "schedule.hours[0]", "time of day"),
        ({"schedule": schedule(hours=(("09:00", "24:01"),))}, "schedule.hours[0]", "time of day"),
        ({"schedule": schedule(end="2026-12-10")}, "schedule.end", "not after the start"),
        ({"schedule": schedule(end="2026-12-01")}, "schedule.end", "not after the start"),
        ({"schedule": schedule(start=None, end="2026-12-05")}, "schedule.end", "already past"),
        ({"schedule": schedule(start="2026-02-30")}, "schedule.start", "not a date"),
        ({"schedule": schedule(start="10/12/2026")}, "schedule.start", "YYYY-MM-DD"),
        ({"schedule": schedule(start="2026-12-10T9:00")}, "schedule.start", "YYYY-MM-DD"),
        ({"schedule": schedule(start="0001-01-01")}, "schedule.start", "year"),
        ({"schedule": schedule(days=(1, 8))}, "schedule.days[1]", "ISO weekday"),
        ({"schedule": schedule(days=(0,))}, "schedule.days[0]", "ISO weekday"),
        ({"schedule": schedule(days=(1, 2, 1))}, "schedule.days[2]", "mon is named twice"),
        ({"schedule": schedule(days=(True,))}, "schedule.days[0]", "ISO weekday"),
        # Impossible: no listed day in the range, or no window open in it (2027-01-05 is a Tuesday).
        (
            {"schedule": CampaignSchedule("2027-01-05", "2027-01-07", (6, 7))},
            "schedule.days",
            "never runs: no sat, sun from 2027-01-05 to 2027-01-07",
        ),
        (
            {
                "schedule": CampaignSchedule(
                    "2027-01-05T13:00", "2027-01-05T14:00", (), (("09:00", "12:00"),)
                )
            },
            "schedule.hours",
            "never runs",
        ),
        (
            {
                "schedule": CampaignSchedule(
                    "2027-01-05T12:00", "2027-01-06T09:00", (2, 3), (("09:00", "12:00"),)
                )
            },
            "schedule.hours",
            "never runs",
        ),
        # Digits of another script: int() reads them, nothing else does.
        (
            {"schedule": schedule(hours=(("\u0660\u0669:00", "12:00"),))},
            "schedule.hours[0]",
            "HH:MM",
        ),
        (
            {"schedule": schedule(start="\u0662\u0660\u0662\u0667-01-01")},
            "schedule.start",
            "YYYY-MM-DD",
        ),
        ({"per_member_day": -1}, "per_member_day", "0.."),
        ({"per_member_week": -3}, "per_member_week", "0.."),
        ({"daily_budget": -1}, "daily_budget", "0.."),
        ({"daily_budget": 1.5}, "daily_budget", "whole number"),
        ({"daily_budget": True}, "daily_budget", "whole number"),
        ({"holdout_pct": -0.1}, "holdout_pct", "0..100"),
        ({"holdout_pct": 100.01}, "holdout_pct", "0..100"),
        ({"holdout_pct": math.nan}, "holdout_pct", "0..100"),
        ({"holdout_pct": math.inf}, "holdout_pct", "0..100"),
        ({"holdout_pct": True}, "holdout_pct", "0..100"),
        ({"min_visits": 5, "max_visits": 4}, "min_visits", "more than max_visits"),
        ({"min_visits": -1}, "min_visits", "0.."),
        ({"min_visits": wire.MAX_COUNTED_VISITS + 1, "max_visits": None}, "min_visits", "0.."),
        ({"image_url": "http://cdn.example/a.png"}, "image_url", "https"),
        ({"image_url": "ftp://cdn.example/a.png"}, "image_url", "https"),
        ({"image_url": "https:///a.png"}, "image_url", "no host"),
        ({"image_url": "https://cdn.example/a b.png"}, "image_url", "space"),
        ({"image_url": "https://x/" + "a" * 2000}, "image_url", "characters"),
        ({"deep_link": "offers/winter"}, "deep_link", "scheme"),
        ({"deep_link": "acme:"}, "deep_link", "scheme"),
        ({"deep_link": "1acme://x"}, "deep_link", "scheme"),
        ({"code": "WINTER 30"}, "code", "redemption code"),
        ({"code": "-W"}, "code", "redemption code"),
        ({"code": "W" * 65}, "code", "redemption code"),
        ({"segments": ("new", "vip")}, "segments[1]", "not a segment"),
        ({"segments": ("new", "new")}, "segments[1]", "named twice"),
        ({"store_tags": ("region-north", "Region North")}, "store_tags[1]", ""),
        ({"store_tags": ("north", "north")}, "store_tags[1]", "named twice"),
        # A JSON "\\ud800" escape (or an undecodable argv byte) is a lone surrogate: SQLite
        # cannot store it.
        ({"title": "Winter \ud800"}, "title", "lone surrogate"),
        ({"body": "\udc00"}, "body", "lone surrogate"),
        ({"image_url": "https://cdn.example/\ud800.png"}, "image_url", "lone surrogate"),
        ({"deep_link": "acme://\udfff"}, "deep_link", "lone surrogate"),
        # ESC sequences would rewrite the terminal of whoever runs `campaign show` or the report.
        ({"title": "Sale\x1b[2J\x1b[1;1H"}, "title", "control character U+001B at character 4"),
        ({"body": "a\x00b"}, "body", "U+0000"),
        ({"body": "a\x9bb"}, "body", "U+009B"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    changes: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(InvalidCampaign) as caught:
        check_campaign(dataclasses.replace(GOOD, **changes), INTERESTS, PROMOTIONS, NOW)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_line_breaks_and_tabs_are_text() -> None:
    multiline = dataclasses.replace(GOOD, title="Winter\tsale", body="30% off\r\ncoats\n")
    assert check_campaign(multiline, INTERESTS, PROMOTIONS, NOW) is multiline


def test_a_schedule_that_opens_for_a_minute_is_possible() -> None:
    # 2027-01-05 is a Tuesday; each runs for at least one minute.
    for possible in (
        CampaignSchedule("2027-01-05", "2027-01-06", (2,)),
        CampaignSchedule("2027-01-05T11:59", "2027-01-05T14:00", (), (("09:00", "12:00"),)),
        CampaignSchedule("2027-01-05T13:00", "2027-01-06T09:01", (3,), (("09:00", "12:00"),)),
        CampaignSchedule("2027-01-05", "2027-01-13", (7,), (("23:59", "24:00"),)),
        CampaignSchedule("2027-01-05", "3000-01-01", (1,), (("00:00", "00:01"),)),
    ):
        definition = dataclasses.replace(GOOD, schedule=possible)
        assert check_campaign(definition, INTERESTS, PROMOTIONS, NOW) is definition


def test_an_end_that_is_past_only_where_the_day_is_already_over_is_kept() -> None:
    # 2026-12-06T13:00 local is still ahead in UTC-12 at 12:00 UTC: not past everywhere.
    late = dataclasses.replace(GOOD, schedule=CampaignSchedule(None, "2026-12-06T13:00"))
    assert check_campaign(late, INTERESTS, PROMOTIONS, NOW) is late
    # Without `now` (a change that keeps its schedule) an ended schedule is not refused.
    ended = dataclasses.replace(GOOD, schedule=CampaignSchedule(None, "2020-01-01"))
    assert check_campaign(ended, INTERESTS, PROMOTIONS) is ended


def test_days_and_hours_options_parse_names_and_numbers() -> None:
    assert parse_days("mon,TUE, 7") == (1, 2, 7)
    assert parse_hours("09:00-12:00, 17:00-24:00") == (("09:00", "12:00"), ("17:00", "24:00"))
    with pytest.raises(InvalidCampaign) as caught:
        parse_days("mon,funday")
    assert caught.value.field == "schedule.days[1]"
    with pytest.raises(InvalidCampaign) as caught:
        parse_hours("09:00-12:00,17:00")
    assert caught.value.field == "schedule.hours[1]"


def test_a_schedule_becomes_instants_in_the_store_time_zone() -> None:
    sched = wire_schedule(schedule(), PARIS)
    # Paris is UTC+1 in winter: local midnight of 10 December is 23:00 UTC the day before.
    assert sched.starts_at == datetime(2026, 12, 9, 23, 0, tzinfo=UTC).timestamp()
    assert sched.ends_at == datetime(2027, 1, 10, 17, 30, tzinfo=UTC).timestamp()
    assert sched.days == (1, 2, 6)
    assert sched.hours == ((540, 720), (1020, 1440))
    utc = wire_schedule(schedule(), ZoneInfo("UTC"))
    assert utc.starts_at == datetime(2026, 12, 10, tzinfo=UTC).timestamp()
    assert wire_schedule(CampaignSchedule(), PARIS) == wire.Schedule()


def test_a_start_in_the_spring_gap_moves_later_by_the_gap() -> None:
    # Paris skips 02:00-03:00 on 2027-03-28: 02:30 does not exist; it starts at 03:30 CEST.
    sched = wire_schedule(CampaignSchedule("2027-03-28T02:30", None), PARIS)
    assert sched.starts_at == datetime(2027, 3, 28, 1, 30, tzinfo=UTC).timestamp()
    before = wire_schedule(CampaignSchedule("2027-03-28T01:59", None), PARIS)
    assert before.starts_at == datetime(2027, 3, 28, 0, 59, tzinfo=UTC).timestamp()
    after = wire_schedule(CampaignSchedule("2027-03-28T03:00", None), PARIS)
    assert after.starts_at == datetime(2027, 3, 28, 1, 0, tzinfo=UTC).timestamp()


def test_an_end_in_the_autumn_repeat_is_its_first_occurrence() -> None:
    # Paris goes through 02:00-03:00 twice on 2026-10-25; 02:30 first happens at 00:30 UTC.
    sched = wire_schedule(CampaignSchedule(None, "2026-10-25T02:30"), PARIS)
    assert sched.ends_at == datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()


def test_time_zones_are_iana_names() -> None:
    assert time_zone("America/New_York").key == "America/New_York"
    # localtime, posixrules and right/... are in the tz database, but every gateway refuses them.
    for bad in (
        "Mars/Olympus",
        "../etc/passwd",
        "",
        "Europe/Paris ",
        "localtime",
        "posixrules",
        "right/Europe/Paris",
    ):
        with pytest.raises(InvalidCampaign) as caught:
            time_zone(bad)
        assert caught.value.field == "timezone"


def test_the_bridge_accepts_no_time_zone_a_gateway_refuses() -> None:
    # A gateway refuses a whole campaign sync whose zone it refuses (edge/core/schedule.py).
    for name in ("localtime", "posixrules", "right/UTC", "Europe/Paris", "UTC", "Etc/GMT+12"):
        try:
            edge_time_zone(name)
        except UnknownTimeZone:
            with pytest.raises(InvalidCampaign):
                time_zone(name)
        else:
            assert time_zone(name).key == name


def test_a_budget_is_split_evenly_the_first_gateways_taking_the_remainder() -> None:
    gateways = [("s2", "gw-a"), ("s1", "gw-b"), ("s1", "gw-a")]
    assert split_budget(10, gateways) == {("s1", "gw-a"): 4, ("s1", "gw-b"): 3, ("s2", "gw-a"): 3}
    assert split_budget(2, gateways) == {("s1", "gw-a"): 1, ("s1", "gw-b"): 1, ("s2", "gw-a"): 0}
    assert split_budget(5, []) == {}


@given(
    budget=st.integers(min_value=0, max_value=10**9),
    gateways=st.sets(
        st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(["a", "b", "c", "d"])),
        min_size=1,
    ),
)
def test_budget_shares_add_up_to_the_budget_and_differ_by_at_most_one(
    budget: int, gateways: set[tuple[str, str]]
) -> None:
    shares = split_budget(budget, gateways)
    assert sum(shares.values()) == budget and set(shares) == gateways
    assert max(shares.values()) - min(shares.values()) <= 1


def test_a_campaign_targets_named_stores_and_tagged_ones_or_else_every_store() -> None:
    tags = {"s1": ("region-north",), "s2": ("region-south", "mall"), "s3": ()}
    base = dataclasses.replace(GOOD, stores=(), store_tags=())
    assert targeted_stores(base, tags) == ("s1", "s2", "s3")
    assert targeted_stores(dataclasses.replace(base, store_tags=("mall",)), tags) == ("s2",)
    assert targeted_stores(
        dataclasses.replace(base, stores=("s3",), store_tags=("region-north",)), tags
    ) == ("s1", "s3")
    assert targeted_stores(dataclasses.replace(base, store_tags=("nowhere",)), tags) == ()


def test_a_change_clears_what_it_names_and_keeps_the_rest() -> None:
    current = Campaign(GOOD, "active", 1.0, 1.0)
    after = changed(
        current,
        CampaignChange(
            clear=frozenset({"schedule", "daily_budget", "holdout_pct", "code"}),
            image_url="",
            segments=(),
        ),
    )
    assert after.schedule is None and after.daily_budget is None and after.code is None
    assert after.holdout_pct == 0.0 and after.image_url is None and after.segments == ()
    assert after.per_member_week == 3 and after.store_tags == ("region-north",)
    with pytest.raises(InvalidCampaign) as caught:
        changed(current, CampaignChange(clear=frozenset({"title"})))
    assert caught.value.field == "title"
    with pytest.raises(InvalidCampaign) as caught:
        changed(current, CampaignChange(daily_budget=3, clear=frozenset({"daily_budget"})))
    assert caught.value.field == "daily_budget"


def test_campaign_json_carries_every_field() -> None:
    shown = Campaign(GOOD, "active", 2.0, 1.0).to_json()
    assert shown["schedule"] == {
        "start": "2026-12-10",
        "end": "2027-01-10T18:30",
        "days": [1, 2, 6],
        "hours": [["09:00", "12:00"], ["17:00", "24:00"]],
    }
    assert CampaignSchedule.from_json(shown["schedule"]) == GOOD.schedule
    assert (shown["created_at"], shown["updated_at"], shown["holdout_pct"]) == (1.0, 2.0, 12.5)
    assert shown["segments"] == ["new", "lapsed"] and shown["code"] == "WINTER-30"
