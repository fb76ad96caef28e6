"""Issue 11's campaign rules at the gateway: schedule, audience, per-member caps, budget shares.

Every campaign here has no cooldown and the store no member cooldown unless a case says otherwise,
so what withholds an offer is the rule under test. Times are UTC instants of 2026 read in Paris
(summer: local = UTC + 2) unless a case says otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import wire
from edge.core.advert import RawAdvert
from edge.core.offers import OfferDecision, OfferEngine, Withheld, budget_share, segment_mask
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.core.schedule import UnknownTimeZone, local_day, time_zone
from edge.core.wire import Schedule
from tests.factories import eid_advert, make_device

DAY = 86_400.0
WEEK = 7 * DAY
NEW, REGULAR, LAPSED = 0b001, 0b010, 0b100  # wire.SEGMENTS' bits


def utc(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


FRIDAY_NOON = utc("2026-06-05 10:00")  # 12:00 in Paris


def spec(id: str, priority: int = 0, cooldown_s: float = 0.0, **limits: Any) -> wire.CampaignSpec:
    return wire.CampaignSpec(id, id, "body", ("gold",), cooldown_s, priority, **limits)


def sync(*campaigns: wire.CampaignSpec, timezone: str = "Europe/Paris") -> wire.CampaignSync:
    return wire.CampaignSync("store-001", 1, 0.0, campaigns, timezone=timezone)


def engine(*campaigns: wire.CampaignSpec, gateway: str | None = "door-1", **kw: Any) -> OfferEngine:
    return OfferEngine(sync(*campaigns, **kw), gateway=gateway)


def offer(
    e: OfferEngine, t_s: float, member: str = "m-1", segments: int = 0, visits: int = 0
) -> str | Withheld:
    """The campaign id chosen for `member` entering at `t_s`, or why none."""
    outcome = e.evaluate(member, "gold", t_s, None, segments=segments, visits=visits)
    return outcome.campaign.id if isinstance(outcome, OfferDecision) else outcome


def walk_in(device: wire.RosterDevice, t0: float) -> list[RawAdvert]:
    """A member walking up to the door from t0 (as in test_pipeline.py)."""
    rssi = [-85, -80, -75, -70, -65, -62, -60] + [-60] * 100
    return [eid_advert(device, t0 + i * 0.25, r) for i, r in enumerate(rssi)]


LUNCH = Schedule(hours=((12 * 60, 14 * 60),))  # 12:00-14:00 local
WEEKENDS = Schedule(days=(6, 7))
JUNE = Schedule(starts_at=utc("2026-06-01 00:00"), ends_at=utc("2026-07-01 00:00"))


# --- Each reason, and falling through to the next campaign -------------------------------------------

# (a high-priority campaign's limits, the member's segments and visits, the time, why it is out)
RULED_OUT: list[tuple[str, dict[str, Any], int, int, float, Withheld]] = [
    ("before-lunch", {"schedule": LUNCH}, 0, 0, FRIDAY_NOON - 60, Withheld.SCHEDULE),
    ("after-lunch", {"schedule": LUNCH}, 0, 0, FRIDAY_NOON + 2 * 3600, Withheld.SCHEDULE),
    ("weekday", {"schedule": WEEKENDS}, 0, 0, FRIDAY_NOON, Withheld.SCHEDULE),
    ("before-start", {"schedule": JUNE}, 0, 0, utc("2026-05-31 23:59"), Withheld.SCHEDULE),
    ("at-end", {"schedule": JUNE}, 0, 0, utc("2026-07-01 00:00"), Withheld.SCHEDULE),
    ("not-regular", {"segments": ("regular",)}, NEW | LAPSED, 0, FRIDAY_NOON, Withheld.AUDIENCE),
    ("no-segment", {"segments": ("new", "lapsed")}, 0, 0, FRIDAY_NOON, Withheld.AUDIENCE),
    ("too-few-visits", {"min_visits": 3}, REGULAR, 2, FRIDAY_NOON, Withheld.AUDIENCE),
    ("too-many-visits", {"max_visits": 3}, REGULAR, 4, FRIDAY_NOON, Withheld.AUDIENCE),
    ("no-budget-here", {"gateway_budgets": (("door-2", 50),)}, 0, 0, FRIDAY_NOON, Withheld.BUDGET),
    ("budget-zero", {"gateway_budgets": (("door-1", 0),)}, 0, 0, FRIDAY_NOON, Withheld.BUDGET),
    ("cap-zero-day", {"per_member_day": 0}, 0, 0, FRIDAY_NOON, Withheld.CAMPAIGN_CAP),
    ("cap-zero-week", {"per_member_week": 0}, 0, 0, FRIDAY_NOON, Withheld.CAMPAIGN_CAP),
]


@pytest.mark.parametrize(
    ("limits", "segments", "visits", "t_s", "reason"),
    [case[1:] for case in RULED_OUT],
    ids=[case[0] for case in RULED_OUT],
)
def test_a_campaign_ruled_out_is_skipped_for_the_next_and_alone_says_why(
    limits: dict[str, Any], segments: int, visits: int, t_s: float, reason: Withheld
) -> None:
    alone = engine(spec("special", 50, **limits))
    assert offer(alone, t_s, segments=segments, visits=visits) is reason
    assert alone.history.last_any == {}  # nothing recorded for a withheld entry
    with_fallback = engine(spec("special", 50, **limits), spec("everyday", 1))
    assert offer(with_fallback, t_s, segments=segments, visits=visits) == "everyday"


@pytest.mark.parametrize(
    ("limits", "segments", "visits", "t_s"),
    [
        ({"schedule": LUNCH}, 0, 0, FRIDAY_NOON),
        ({"schedule": LUNCH}, 0, 0, FRIDAY_NOON + 2 * 3600 - 1),
        ({"schedule": WEEKENDS}, 0, 0, utc("2026-06-06 10:00")),
        ({"schedule": JUNE}, 0, 0, utc("2026-06-01 00:00")),  # the start instant itself
        ({"segments": ("regular",)}, REGULAR, 0, FRIDAY_NOON),
        ({"segments": ("new", "lapsed")}, LAPSED | REGULAR, 0, FRIDAY_NOON),
        ({"min_visits": 3, "max_visits": 3}, 0, 3, FRIDAY_NOON),
        ({"gateway_budgets": (("door-2", 5), ("door-1", 1))}, 0, 0, FRIDAY_NOON),
        ({"gateway_budgets": None}, 0, 0, FRIDAY_NOON),
        ({"per_member_day": 1, "per_member_week": 1}, 0, 0, FRIDAY_NOON),
    ],
)
def test_a_campaign_within_its_limits_is_offered(
    limits: dict[str, Any], segments: int, visits: int, t_s: float
) -> None:
    e = engine(spec("special", 50, **limits), spec("everyday", 1))
    assert offer(e, t_s, segments=segments, visits=visits) == "special"


def test_the_reason_is_the_first_rule_that_leaves_nothing() -> None:
    """The documented order: tier, frequency wish, schedule, audience, preferences, frequency,
    member cooldown, campaign caps, budget, campaign cooldown."""
    off_hours = spec("a", schedule=LUNCH, segments=("regular",))
    assert offer(engine(off_hours), FRIDAY_NOON - 60) is Withheld.SCHEDULE  # audience not reached
    capped_and_broke = spec("b", per_member_day=0, gateway_budgets=())
    assert offer(engine(capped_and_broke), FRIDAY_NOON) is Withheld.CAMPAIGN_CAP
    # One campaign out by its schedule, one by the audience: the later rule leaves none.
    mixed = engine(spec("a", schedule=LUNCH), spec("b", segments=("new",)))
    assert offer(mixed, FRIDAY_NOON - 60) is Withheld.AUDIENCE
    # One out by its cap, the other by its budget.
    mixed = engine(spec("a", per_member_day=0), spec("b", gateway_budgets=()))
    assert offer(mixed, FRIDAY_NOON) is Withheld.BUDGET
    # A member who asked for nothing is told FREQUENCY before any campaign rule.
    quiet = engine(spec("a", schedule=LUNCH)).evaluate(
        "m-1", "gold", FRIDAY_NOON - 60, wire.MemberPrefs(per_day=0)
    )
    assert quiet is Withheld.FREQUENCY
    assert offer(engine(spec("a")), FRIDAY_NOON) == "a"
    assert engine(spec("a")).evaluate("m-1", "silver", FRIDAY_NOON) is Withheld.NO_CAMPAIGN


def test_refresh_order_stays_among_the_campaigns_left() -> None:
    """Rules drop campaigns; the ones left are still chosen freshest first, then by priority."""
    e = engine(
        spec("top", 90, schedule=WEEKENDS),
        spec("high", 50, cooldown_s=0.0),
        spec("low", 10),
    )
    picks = [offer(e, FRIDAY_NOON + i * 60) for i in range(4)]
    assert picks == ["high", "low", "high", "low"]


# --- Per-member campaign caps ---------------------------------------------------------------------------


def test_per_member_day_counts_the_store_s_local_day() -> None:
    """Paris in June: the local day turns at 22:00 UTC."""
    e = engine(spec("daily", per_member_day=1))
    assert offer(e, utc("2026-06-05 06:00")) == "daily"  # 08:00 Friday
    assert offer(e, utc("2026-06-05 21:59")) is Withheld.CAMPAIGN_CAP  # 23:59 Friday
    assert offer(e, utc("2026-06-05 22:00")) == "daily"  # 00:00 Saturday (still Friday in UTC)
    assert offer(e, utc("2026-06-05 22:00"), member="m-2") == "daily"  # per member
    assert offer(e, utc("2026-06-06 21:00")) is Withheld.CAMPAIGN_CAP


def test_per_member_day_on_a_25_hour_day() -> None:
    """The day Paris falls back lasts 25 hours: one day, one offer."""
    e = engine(spec("daily", per_member_day=1))
    assert offer(e, utc("2026-10-24 22:00")) == "daily"  # 00:00 CEST, Sunday 25 October
    assert offer(e, utc("2026-10-25 22:59")) is Withheld.CAMPAIGN_CAP  # 23:59 CET, Sunday
    assert offer(e, utc("2026-10-25 23:00")) == "daily"  # 00:00 CET, Monday


def test_per_member_week_is_a_rolling_seven_days() -> None:
    e = engine(spec("weekly", per_member_week=2))
    t = FRIDAY_NOON
    assert offer(e, t) == "weekly" and offer(e, t + DAY) == "weekly"
    assert offer(e, t + 2 * DAY) is Withheld.CAMPAIGN_CAP
    assert offer(e, t + WEEK - 1) is Withheld.CAMPAIGN_CAP  # both still within 7 days
    assert offer(e, t + WEEK) == "weekly"  # the first is exactly 7 days old: out


def test_caps_are_per_campaign_and_both_apply() -> None:
    e = engine(spec("a", 2, per_member_day=1, per_member_week=3), spec("b", 1, per_member_day=2))
    t = FRIDAY_NOON
    assert [offer(e, t + i) for i in range(4)] == ["a", "b", "b", Withheld.CAMPAIGN_CAP]
    assert [offer(e, t + DAY + i) for i in range(2)] == ["a", "b"]
    assert offer(e, t + 2 * DAY) == "a"
    assert offer(e, t + 3 * DAY) == "b"  # "a" had 3 in 7 days


# --- Budgets -------------------------------------------------------------------------------------------


def test_a_budget_share_is_spent_exactly_then_withheld_until_the_next_local_day() -> None:
    e = engine(spec("promo", gateway_budgets=(("door-1", 3), ("door-2", 2))))
    members = [f"m-{i}" for i in range(6)]
    day = [offer(e, utc("2026-06-05 08:00") + i, member=m) for i, m in enumerate(members)]
    assert day == ["promo"] * 3 + [Withheld.BUDGET] * 3
    assert offer(e, utc("2026-06-05 21:59"), member="m-9") is Withheld.BUDGET  # 23:59 local
    # Local midnight (22:00 UTC): a new day, a new share; the UTC date has not changed.
    assert offer(e, utc("2026-06-05 22:00"), member="m-4") == "promo"


def test_a_privacy_retention_shorter_than_a_day_never_respends_a_budget_share() -> None:
    # [privacy] retention_s = 1 hour: who got what is forgotten after an hour, but the day's
    # share stays spent (its times name nobody).
    e = engine(spec("promo", gateway_budgets=(("door-1", 2),)))
    morning = utc("2026-06-05 06:00")  # 08:00 in Paris
    assert [offer(e, morning + i, member=f"m-{i}") for i in range(2)] == ["promo"] * 2
    e.history.prune(morning + 3 * 3600, keep_s=3600)
    assert e.history.campaign_times == {}  # who got it: forgotten
    assert offer(e, morning + 3 * 3600, member="m-7") is Withheld.BUDGET
    assert offer(e, utc("2026-06-05 22:00"), member="m-7") == "promo"  # the next local day


def test_a_gateway_the_budget_does_not_name_sends_none_and_no_budget_is_no_limit() -> None:
    limited = spec("limited", 2, gateway_budgets=(("door-2", 100),))
    unlimited = spec("unlimited", 1, gateway_budgets=None)
    e = engine(limited, unlimited)
    picks = [offer(e, FRIDAY_NOON + i, member=f"m-{i}") for i in range(50)]
    assert picks == ["unlimited"] * 50
    # A gateway that was not told its id has no share of any budget.
    anonymous = engine(spec("limited", gateway_budgets=(("door-1", 5),)), gateway=None)
    assert offer(anonymous, FRIDAY_NOON) is Withheld.BUDGET


def test_budget_share_lookup() -> None:
    budgets = (("door-1", 4), ("door-2", 3))
    assert budget_share(spec("x", gateway_budgets=budgets), "door-2") == 3
    assert budget_share(spec("x", gateway_budgets=budgets), "door-3") == 0
    assert budget_share(spec("x", gateway_budgets=None), "door-3") is None
    assert budget_share(spec("x", gateway_budgets=(("door-1", 4), ("door-1", 2))), "door-1") == 2
    assert segment_mask(("lapsed", "new")) == NEW | LAPSED and segment_mask(()) == 0


def test_a_budget_in_new_york_turns_at_its_own_midnight() -> None:
    e = engine(spec("promo", gateway_budgets=(("door-1", 1),)), timezone="America/New_York")
    assert offer(e, utc("2026-06-06 03:00"), member="m-1") == "promo"  # 23:00 Friday EDT
    assert offer(e, utc("2026-06-06 03:59"), member="m-2") is Withheld.BUDGET
    assert offer(e, utc("2026-06-06 04:00"), member="m-3") == "promo"  # 00:00 Saturday EDT


def test_a_clock_stepped_back_a_day_never_spends_a_share_twice() -> None:
    """Offers stamped later than the entry (the clock went back) count against today's share and
    today's cap, as the member's frequency and cooldown count them."""
    e = engine(
        spec("promo", 2, gateway_budgets=(("door-1", 1),)),
        spec("daily", 1, per_member_day=1),
    )
    tomorrow = utc("2026-06-06 08:00")
    assert offer(e, tomorrow, member="m-1") == "promo"
    assert offer(e, tomorrow, member="m-2") == "daily"
    # The clock steps back a day: the real day's share is spent already (else m-3 gets promo).
    assert offer(e, tomorrow - DAY, member="m-3") == "daily"
    # And a member's daily cap, once their member cooldown (a later offer counts) is not in play.
    capped = engine(spec("daily", 1, per_member_day=1))
    assert offer(capped, tomorrow, member="m-1") == "daily"
    capped.history.last_any.clear()  # only the campaign's own count is left to say no
    assert offer(capped, tomorrow - DAY, member="m-1") is Withheld.CAMPAIGN_CAP


def test_history_carries_budget_and_caps_across_a_campaign_update() -> None:
    e = engine(spec("promo", gateway_budgets=(("door-1", 1),), per_member_week=1))
    assert offer(e, FRIDAY_NOON) == "promo"
    e.replace(sync(spec("promo", gateway_budgets=(("door-1", 2),), per_member_week=1)))
    assert offer(e, FRIDAY_NOON + 60) is Withheld.CAMPAIGN_CAP  # m-1 had it this week
    assert offer(e, FRIDAY_NOON + 60, member="m-2") == "promo"  # the share grew to 2
    assert offer(e, FRIDAY_NOON + 60, member="m-3") is Withheld.BUDGET


def test_the_schedule_keeps_to_the_wall_clock_across_a_dst_change() -> None:
    e = engine(spec("breakfast", schedule=Schedule(hours=((9 * 60, 10 * 60),))))
    # 09:30 in Paris the day before and the day of spring forward, then 10:30 CEST (09:30 CET).
    assert offer(e, utc("2026-03-28 08:30"), member="m-1") == "breakfast"
    assert offer(e, utc("2026-03-29 07:30"), member="m-2") == "breakfast"
    assert offer(e, utc("2026-03-29 08:30"), member="m-3") is Withheld.SCHEDULE


def test_an_unknown_time_zone_is_refused_and_changes_nothing() -> None:
    e = engine(spec("a"))
    with pytest.raises(UnknownTimeZone):
        e.replace(dataclasses.replace(sync(spec("b")), version=2, timezone="Mars/Olympus_Mons"))
    assert e.version == 1 and [c.id for c in e.campaigns] == ["a"]
    assert str(e.zone) == "Europe/Paris"


# --- The budget is never overspent ------------------------------------------------------------------------

ZONES = ("Europe/Paris", "America/New_York", "UTC", "Australia/Lord_Howe", "Asia/Kathmandu")
START = utc("2026-03-25 00:00")  # a week holding Europe's spring change


@settings(max_examples=200, deadline=None, print_blob=True)
@given(
    zone=st.sampled_from(ZONES),
    shares=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    caps=st.tuples(st.none() | st.integers(0, 3), st.none() | st.integers(0, 3)),
    entries=st.lists(
        st.tuples(st.floats(0, 8 * DAY), st.integers(0, 9), st.integers(0, 7)),
        max_size=120,
    ),
)
def test_a_gateway_never_decides_more_of_a_campaign_in_a_local_day_than_its_share(
    zone: str,
    shares: tuple[int, int],
    caps: tuple[int | None, int | None],
    entries: list[tuple[float, int, int]],
) -> None:
    """Whatever the members, the times (in order, as radio time runs) and the caps: per local day,
    at most the share of each campaign; and per member, at most the caps."""
    a = spec("a", 5, gateway_budgets=(("door-1", shares[0]), ("door-2", 9)))
    b = spec(
        "b",
        1,
        gateway_budgets=(("door-1", shares[1]),),
        per_member_day=caps[0],
        per_member_week=caps[1],
        segments=("regular",),
    )
    e = engine(a, b, timezone=zone)
    tz = time_zone(zone)
    decided: list[OfferDecision] = []
    for offset, member, segments in sorted(entries):
        outcome = e.evaluate(f"m-{member}", "gold", START + offset, segments=segments)
        if isinstance(outcome, OfferDecision):
            decided.append(outcome)
    per_day: dict[tuple[str, object], int] = {}
    for d in decided:
        key = (d.campaign.id, local_day(d.t_s, tz))
        per_day[key] = per_day.get(key, 0) + 1
    limit = {"a": shares[0], "b": shares[1]}
    assert all(n <= limit[c] for (c, _), n in per_day.items()), per_day
    for d in decided:
        if d.campaign.id != "b":
            continue
        same = [x for x in decided if x.member == d.member and x.campaign.id == "b"]
        if caps[0] is not None:
            today = local_day(d.t_s, tz)
            assert sum(local_day(x.t_s, tz) == today for x in same) <= caps[0]
        if caps[1] is not None:
            assert sum(d.t_s - WEEK < x.t_s <= d.t_s for x in same) <= caps[1]


# --- Through the pipeline: the roster's audience, and the status counters ---------------------------------


def test_the_pipeline_applies_the_roster_s_audience_and_counts_each_reason() -> None:
    regular = make_device(segments=REGULAR, visits=5)
    newcomer = make_device(segments=NEW, visits=0)
    lapsed = make_device(segments=LAPSED, visits=9)
    late = make_device(segments=REGULAR, visits=5)
    campaigns = sync(
        spec("regulars", 9, segments=("regular",), min_visits=2, schedule=LUNCH),
        spec("comeback", 5, segments=("lapsed",), gateway_budgets=()),
        spec("once", 1, segments=("regular",), per_member_week=0),
    )
    ids = (f"ev{n}" for n in itertools.count())
    pipeline = Pipeline(
        EidResolver([regular, newcomer, lapsed, late], FRIDAY_NOON),
        PresenceTracker(PresenceConfig()),
        OfferEngine(campaigns, gateway="door-1"),
        lambda: next(ids),
    )
    offers: dict[str, list[str]] = {}
    for device, t in ((regular, FRIDAY_NOON), (newcomer, FRIDAY_NOON), (lapsed, FRIDAY_NOON)):
        events = pipeline.feed_many(walk_in(device, t), 1.0)
        offers[device.ref] = [e.campaign for e in events if isinstance(e, wire.OfferTrigger)]
    # 14:00 in Paris: lunch is over, and "once" is capped at 0 a week.
    events = pipeline.feed_many(walk_in(late, FRIDAY_NOON + 2 * 3600), 2.0)
    assert not [e for e in events if isinstance(e, wire.OfferTrigger)]
    assert offers == {regular.ref: ["regulars"], newcomer.ref: [], lapsed.ref: []}
    c = pipeline.counters
    assert (c.entries, c.offers) == (4, 1)
    withheld = {k: v for k, v in c.as_dict().items() if k.startswith("offers_withheld_") and v}
    assert withheld == {
        "offers_withheld_audience": 1,  # the newcomer: in no campaign's segments
        "offers_withheld_budget": 1,  # the lapsed member: this gateway has no share
        "offers_withheld_campaign_cap": 1,  # the late regular: lunch over, "once" capped
    }


def test_the_pipeline_counts_an_entry_outside_every_schedule() -> None:
    member = make_device()
    ids = (f"ev{n}" for n in itertools.count())
    pipeline = Pipeline(
        EidResolver([member], FRIDAY_NOON),
        PresenceTracker(PresenceConfig()),
        OfferEngine(sync(spec("lunch", schedule=LUNCH)), gateway="door-1"),
        lambda: next(ids),
    )
    events = pipeline.feed_many(walk_in(member, FRIDAY_NOON - 3600), 1.0)  # 11:00 in Paris
    assert [type(e) for e in events] == [wire.Visit]
    assert pipeline.counters.offers_withheld_schedule == 1
