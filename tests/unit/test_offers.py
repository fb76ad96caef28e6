"""Campaign rules: tiers, priority, cooldowns, members' preferences and frequency, refresh."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import wire
from edge.core.offers import OfferDecision, OfferEngine, OfferHistory, Withheld
from edge.core.wire import MAX_OFFERS_PER_WEEK
from tests.factories import make_campaigns


def test_highest_priority_campaign_for_the_tier_wins() -> None:
    engine = OfferEngine(make_campaigns())
    gold = engine.decide("m-1", "gold", 0.0)
    bronze = engine.decide("m-2", "bronze", 0.0)
    assert gold is not None and gold.campaign.id == "gold-points"
    assert bronze is not None and bronze.campaign.id == "bakery"
    assert engine.decide("m-3", "platinum", 0.0) is None


def test_member_cooldown_blocks_any_second_offer() -> None:
    engine = OfferEngine(make_campaigns(member_cooldown_s=3600.0))
    assert engine.decide("m-1", "gold", 0.0) is not None
    assert engine.decide("m-1", "gold", 3599.0) is None
    # After the member cooldown the next campaign not in its own cooldown is offered.
    second = engine.decide("m-1", "gold", 3600.0)
    assert second is not None and second.campaign.id == "bakery"


def test_campaign_cooldown_skips_to_the_next_campaign_then_none() -> None:
    engine = OfferEngine(make_campaigns(member_cooldown_s=0.0))
    picks = [engine.decide("m-1", "gold", t) for t in (0.0, 10.0, 20.0)]
    assert [p.campaign.id if p else None for p in picks] == ["gold-points", "bakery", None]
    again = engine.decide("m-1", "gold", 86400.0)
    assert again is not None and again.campaign.id == "gold-points"


def test_history_survives_a_campaign_update() -> None:
    history = OfferHistory()
    engine = OfferEngine(make_campaigns(), history)
    engine.decide("m-1", "gold", 0.0)
    engine.replace(make_campaigns(version=2))
    assert engine.version == 2
    assert engine.decide("m-1", "gold", 60.0) is None


def test_no_campaigns_no_offer() -> None:
    assert OfferEngine(None).decide("m-1", "gold", 0.0) is None
    empty = wire.CampaignSync("store-001", 1, 0.0, ())
    assert OfferEngine(empty).decide("m-1", "gold", 0.0) is None


def test_prune_forgets_only_expired_history() -> None:
    history = OfferHistory()
    history.record("m-1", "a", 0.0)
    history.record("m-2", "a", 1000.0)
    history.prune(now_s=1500.0, keep_s=600.0)
    assert set(history.last_any) == {"m-2"}


# --- Preferences, frequency and refresh (issue 10) -------------------------------------------------

INTERESTS = ("womenswear", "menswear", "beauty", "home")  # bits 1, 2, 4, 8
PROMOTIONS = ("discount", "points_multiplier", "event")  # bits 1, 2, 4
DAY = 86_400.0
WEEK = 7 * DAY


def campaign(
    id: str,
    priority: int = 0,
    promotion_type: str | None = None,
    interests: tuple[str, ...] = (),
    cooldown_s: float = 0.0,
    tiers: tuple[str, ...] = ("gold",),
) -> wire.CampaignSpec:
    return wire.CampaignSpec(id, id, "body", tiers, cooldown_s, priority, promotion_type, interests)


def sync(*campaigns: wire.CampaignSpec, member_cooldown_s: float = 0.0) -> wire.CampaignSync:
    return wire.CampaignSync("store-001", 1, member_cooldown_s, campaigns, INTERESTS, PROMOTIONS)


def prefs(
    interests: int = 0, promotions: int = 0, per_day: int = 24, per_week: int = 100
) -> wire.MemberPrefs:
    return wire.MemberPrefs(interests, promotions, per_day, per_week)


CATALOGUE = sync(
    campaign("points", 30, "points_multiplier"),
    campaign("beauty-event", 20, "event", ("beauty",)),
    campaign("home-discount", 10, "discount", ("home", "womenswear")),
    campaign("general-discount", 5, "discount"),
    campaign("silver-only", 99, "discount", tiers=("silver",)),
)

CHOICES = [
    # (what, member prefs, chosen campaign or why none)
    ("no prefs: highest priority of the tier", None, "points"),
    ("masks 0: highest priority of the tier", prefs(), "points"),
    ("an interest: its campaign, or a general one", prefs(interests=4), "points"),
    ("beauty events only", prefs(interests=4, promotions=4), "beauty-event"),
    ("discounts on home", prefs(interests=8, promotions=1), "home-discount"),
    (
        "discounts on menswear: the general one",
        prefs(interests=2, promotions=1),
        "general-discount",
    ),
    ("events on menswear: none", prefs(interests=2, promotions=4), Withheld.PREFERENCES),
    ("no offers (per_day 0)", prefs(per_day=0, per_week=5), Withheld.FREQUENCY),
    ("no offers (per_week 0)", prefs(per_day=3, per_week=0), Withheld.FREQUENCY),
]


@pytest.mark.parametrize(("what", "member", "expected"), CHOICES, ids=[c[0] for c in CHOICES])
def test_the_campaign_a_member_gets_follows_their_preferences(
    what: str, member: wire.MemberPrefs | None, expected: str | Withheld
) -> None:
    outcome = OfferEngine(CATALOGUE).evaluate("m-1", "gold", 0.0, member)
    if isinstance(expected, Withheld):
        assert outcome is expected
    else:
        assert isinstance(outcome, OfferDecision) and outcome.campaign.id == expected


def test_no_campaign_for_the_tier_is_told_apart_from_preferences() -> None:
    engine = OfferEngine(CATALOGUE)
    assert engine.evaluate("m-1", "platinum", 0.0, prefs(per_day=0)) is Withheld.NO_CAMPAIGN
    assert OfferEngine(None).evaluate("m-1", "gold", 0.0) is Withheld.NO_CAMPAIGN
    # decide() is evaluate() with the reason dropped.
    assert engine.decide("m-1", "gold", 0.0, prefs(interests=2, promotions=4)) is None


def test_a_campaign_without_promotion_type_reaches_only_members_without_that_preference() -> None:
    engine = OfferEngine(sync(campaign("plain", 10)))
    assert engine.decide("m-1", "gold", 0.0, prefs(interests=4)) is not None
    assert engine.evaluate("m-2", "gold", 0.0, prefs(promotions=7)) is Withheld.PREFERENCES


def test_terms_the_vocabulary_lacks_are_reported_and_match_no_bit() -> None:
    engine = OfferEngine(sync(campaign("odd", 1, "loyalty-day", ("garden",))))
    assert engine.unknown_terms == ("garden", "loyalty-day")
    assert engine.evaluate("m-1", "gold", 0.0, prefs(interests=15)) is Withheld.PREFERENCES
    assert engine.decide("m-2", "gold", 0.0, prefs()) is not None


def offers_at(engine: OfferEngine, times: list[float], member_prefs: wire.MemberPrefs) -> list[str]:
    out = []
    for t in times:
        outcome = engine.evaluate("m-1", "gold", t, member_prefs)
        out.append(outcome.campaign.id if isinstance(outcome, OfferDecision) else outcome.value)
    return out


def test_per_day_counts_any_24_hours_not_the_calendar_day() -> None:
    engine = OfferEngine(sync(campaign("a", 2), campaign("b", 1)))
    got = offers_at(engine, [0.0, 3600.0, DAY - 0.5, DAY, DAY + 1.0], prefs(per_day=1))
    assert got == ["a", "frequency", "frequency", "b", "frequency"]


def test_per_week_counts_any_7_days() -> None:
    engine = OfferEngine(sync(campaign("a", 2), campaign("b", 1)))
    times = [0.0, DAY, 2 * DAY, WEEK - 1.0, WEEK, WEEK + DAY - 1.0, WEEK + DAY]
    got = offers_at(engine, times, prefs(per_day=1, per_week=2))
    assert got == ["a", "b", "frequency", "frequency", "a", "frequency", "b"]


def test_the_member_cooldown_still_spaces_offers_within_the_caps() -> None:
    engine = OfferEngine(sync(campaign("a", 2), campaign("b", 1), member_cooldown_s=3600.0))
    got = offers_at(engine, [0.0, 1800.0, 3600.0], prefs(per_day=5))
    assert got == ["a", "cooldown", "b"]


def test_a_returning_member_gets_what_they_have_not_had_then_the_least_recent() -> None:
    engine = OfferEngine(
        sync(campaign("low", 1), campaign("high", 30), campaign("mid", 20), campaign("mid2", 20))
    )
    got = offers_at(engine, [DAY * i for i in range(9)], prefs())
    # Never had first, by priority then id; then round and round, least recently had first.
    assert got == ["high", "mid", "mid2", "low", "high", "mid", "mid2", "low", "high"]


def test_a_new_campaign_comes_first_and_a_cooldown_is_skipped_not_waited_for() -> None:
    engine = OfferEngine(sync(campaign("a", 10, cooldown_s=3 * DAY), campaign("b", 5)))
    assert offers_at(engine, [0.0, DAY, 2 * DAY], prefs()) == ["a", "b", "b"]
    engine.replace(sync(campaign("a", 10, cooldown_s=3 * DAY), campaign("b", 5), campaign("c", 1)))
    assert offers_at(engine, [3 * DAY, 4 * DAY, 5 * DAY], prefs()) == ["c", "a", "b"]


def test_refresh_ties_go_to_priority_then_id() -> None:
    engine = OfferEngine(sync(campaign("zeta", 5), campaign("alpha", 5), campaign("top", 9)))
    for t, member_campaign in ((0.0, "alpha"), (0.0, "zeta"), (0.0, "top")):
        engine.history.record("m-1", member_campaign, t)  # all last had at the same time
    assert offers_at(engine, [DAY, 2 * DAY, 3 * DAY], prefs()) == ["top", "alpha", "zeta"]


def test_every_campaign_in_its_cooldown_is_a_cooldown() -> None:
    engine = OfferEngine(sync(campaign("a", 1, cooldown_s=DAY)))
    assert offers_at(engine, [0.0, 60.0], prefs()) == ["a", "cooldown"]


def test_history_keeps_the_latest_offers_per_member_bounded_and_prune_drops_a_week_old() -> None:
    history = OfferHistory()
    for i in range(MAX_OFFERS_PER_WEEK + 20):
        history.record("m-1", f"c{i % 3}", float(i))
    assert list(history.recent("m-1")) == [float(i) for i in range(20, MAX_OFFERS_PER_WEEK + 20)]
    history.record("m-2", "c0", 0.0)
    history.prune(now_s=WEEK + 50.0, keep_s=30 * DAY)
    assert list(history.recent("m-1")) == [float(i) for i in range(51, MAX_OFFERS_PER_WEEK + 20)]
    assert history.recent("m-2") == ()
    # The refresh memory is kept as long as told: m-2's last campaign is still known.
    assert history.last_by_campaign[("m-2", "c0")] == 0.0
    history.prune(now_s=WEEK + 50.0, keep_s=3600.0)
    assert ("m-2", "c0") not in history.last_by_campaign
    assert list(history.recent("m-1")) == []


# --- Property: caps and preferences hold over any sequence of entries ------------------------------

PROPERTY = settings(max_examples=300, derandomize=True, print_blob=True, deadline=None)
masks = st.integers(0, 15)
member_prefs = st.one_of(
    st.none(),
    st.builds(wire.MemberPrefs, masks, st.integers(0, 7), st.integers(0, 4), st.integers(0, 10)),
)
catalogue = st.lists(
    st.builds(
        campaign,
        st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        st.integers(0, 3),
        st.sampled_from([None, *PROMOTIONS, "unknown"]),
        st.lists(st.sampled_from([*INTERESTS, "garden"]), max_size=3, unique=True).map(tuple),
        st.sampled_from([0.0, 600.0, DAY]),
        st.sampled_from([("gold",), ("gold", "silver"), ("silver",)]),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda c: c.id,
)
gaps = st.one_of(
    st.sampled_from([0.0, 1.0, 600.0, DAY - 1.0, DAY, DAY + 1.0, WEEK - 1.0, WEEK]),
    st.floats(0.0, 3 * DAY),
    st.floats(-3600.0, 0.0),  # the clock stepped back a little
)
entries = st.lists(
    st.tuples(st.integers(0, 2), gaps, st.sampled_from(["gold", "silver"]), st.booleans()),
    min_size=1,
    max_size=80,
)


def chosen(mask: int, terms: tuple[str, ...]) -> set[str]:
    return {term for i, term in enumerate(terms) if mask >> i & 1}


def suits(member: wire.MemberPrefs | None, offer: wire.CampaignSpec) -> bool:
    """The rule of docs/mqtt.md, in names rather than bits: the oracle for the engine."""
    if member is None:
        return True
    interests, promotions = (
        chosen(member.interests, INTERESTS),
        chosen(member.promotions, PROMOTIONS),
    )
    interest_ok = not interests or not offer.interests or bool(interests & set(offer.interests))
    return interest_ok and (not promotions or offer.promotion_type in promotions)


@PROPERTY
@given(catalogue, st.lists(member_prefs, min_size=3, max_size=3), entries, st.floats(0.0, DAY))
def test_no_member_ever_gets_more_than_their_caps_or_a_campaign_they_did_not_ask_for(
    campaigns: list[wire.CampaignSpec],
    stated: list[wire.MemberPrefs | None],
    visits: list[tuple[int, float, str, bool]],
    member_cooldown_s: float,
) -> None:
    engine = OfferEngine(sync(*campaigns, member_cooldown_s=member_cooldown_s))
    given_at: dict[int, list[float]] = {0: [], 1: [], 2: []}
    t = 1_790_000_000.0
    for member, gap, tier, change in visits:
        t += gap
        if change:  # the member restates their preferences (the next roster delta)
            stated[member] = stated[(member + 1) % 3]
        member_prefs = stated[member]
        decision = engine.decide(f"m-{member}", tier, t, member_prefs)
        if decision is None:
            continue
        assert tier in decision.campaign.tiers
        assert suits(member_prefs, decision.campaign)
        given_at[member].append(t)
        if member_prefs is not None:
            times = given_at[member]
            # Every earlier offer in the 24 h / 7 days before this one, this one included.
            assert sum(1 for s in times if s > t - DAY) <= member_prefs.per_day
            assert sum(1 for s in times if s > t - WEEK) <= member_prefs.per_week
