"""Shopper preferences as pure rules: the shared matching and frequency rule (edge/core/preferences.py),
the bridge's vocabulary, requests and masks (cloud_bridge/core/preferences.py), and the admission
re-check that uses them (cloud_bridge/core/admission.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_bridge.core.admission import (
    CampaignFacts,
    MemberFacts,
    OfferFacts,
    OfferRefusal,
    ServedTerms,
    check_offer,
    check_undelivered,
    within_caps,
)
from cloud_bridge.core.enrollment import InvalidRequest
from cloud_bridge.core.preferences import (
    DEFAULT_INTERESTS,
    DEFAULT_PROMOTION_TYPES,
    MemberPreferences,
    PreferencesRequest,
    Term,
    Vocabulary,
    VocabularyError,
    check_request_terms,
    parse_preferences_request,
    plan_vocabulary,
)
from edge.core import wire
from edge.core.preferences import (
    DAY_S,
    WEEK_S,
    busiest_window,
    campaign_matches,
    mask_of,
    term_bits,
    under_caps,
)

INTERESTS = term_bits(DEFAULT_INTERESTS)  # womenswear 0, menswear 1, kids 2, shoes 3, beauty 4, ...
PROMOTIONS = term_bits(DEFAULT_PROMOTION_TYPES)  # discount 0, points_multiplier 1, ..., free_gift 4
NOW = 1_795_000_000.0


def prefs(
    interests: tuple[str, ...] = (),
    promotions: tuple[str, ...] = (),
    per_day: int = wire.MAX_OFFERS_PER_DAY,
    per_week: int = wire.MAX_OFFERS_PER_WEEK,
) -> wire.MemberPrefs:
    return wire.MemberPrefs(
        mask_of(interests, INTERESTS), mask_of(promotions, PROMOTIONS), per_day, per_week
    )


def campaign(promotion_type: str | None = "discount", *interests: str) -> wire.CampaignSpec:
    return wire.CampaignSpec(
        "c", "t", "b", ("bronze",), 60.0, 0, promotion_type=promotion_type, interests=interests
    )


# --- the matching rule (edge/core/preferences.py) -------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "member", "expected"),
    [
        # No preferences stated: every campaign of the member's tier.
        (campaign("discount", "home"), None, True),
        (campaign(None), None, True),
        # Masks of 0 mean no preference on that axis.
        (campaign("discount", "home"), prefs(), True),
        (campaign(None, "home"), prefs(), True),
        # Interests: one shared interest is enough; a general offer serves every interest.
        (campaign("discount", "home", "beauty"), prefs(("beauty",)), True),
        (campaign("discount", "home"), prefs(("beauty", "kids")), False),
        (campaign("discount"), prefs(("beauty",)), True),
        # Promotion type: the campaign's must be one the member chose.
        (campaign("event"), prefs((), ("event", "discount")), True),
        (campaign("event"), prefs((), ("discount",)), False),
        # A campaign without a promotion type only for members who chose none.
        (campaign(None), prefs((), ("discount",)), False),
        (campaign(None), prefs(("home",)), True),
        # Both must hold.
        (campaign("event", "beauty"), prefs(("beauty",), ("event",)), True),
        (campaign("event", "beauty"), prefs(("beauty",), ("discount",)), False),
        (campaign("event", "beauty"), prefs(("home",), ("event",)), False),
        # A term the vocabulary does not know has no bit: it matches no member's choice.
        (campaign("discount", "garden"), prefs(("home",)), False),
        (campaign("flash_sale"), prefs((), ("discount",)), False),
        (campaign("flash_sale", "garden"), prefs(), True),
    ],
)
def test_a_campaign_matches_only_what_the_member_chose(
    spec: wire.CampaignSpec, member: wire.MemberPrefs | None, expected: bool
) -> None:
    assert campaign_matches(spec, member, INTERESTS, PROMOTIONS) is expected


def test_the_caps_allow_fewer_offers_than_stated_and_zero_means_none() -> None:
    assert under_caps(None, 100, 1000)
    assert under_caps(prefs(per_day=2, per_week=5), 1, 4)
    assert not under_caps(prefs(per_day=2, per_week=5), 2, 2)
    assert not under_caps(prefs(per_day=2, per_week=5), 0, 5)
    assert not under_caps(prefs(per_day=0, per_week=0), 0, 0)


@pytest.mark.parametrize(
    ("others", "expected"),
    [
        ((), 0),
        ((NOW - 3600,), 1),
        ((NOW - DAY_S,), 0),  # exactly a day before: another day
        ((NOW - DAY_S + 1,), 1),
        ((NOW + 3600,), 1),  # a later offer, uploaded before this one
        ((NOW + DAY_S,), 0),
        ((NOW,), 1),  # the same second
        # Spread over more than a day: no single day holds all three.
        ((NOW - 20 * 3600, NOW + 20 * 3600), 1),
        ((NOW - 20 * 3600, NOW - 10 * 3600, NOW + 3 * 3600, NOW + 20 * 3600), 3),
    ],
)
def test_the_busiest_day_holding_an_offer_counts_offers_on_either_side(
    others: tuple[float, ...], expected: int
) -> None:
    assert busiest_window(others, NOW, DAY_S) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=-3 * DAY_S, max_value=3 * DAY_S), max_size=12),
    st.floats(min_value=-3 * DAY_S, max_value=3 * DAY_S),
)
def test_the_busiest_window_is_the_most_offers_any_window_holding_the_offer_sees(
    others: list[float], at: float
) -> None:
    """Against brute force over window starts on a fine grid and at every offer."""
    found = busiest_window(others, at, DAY_S)
    starts = [at - DAY_S + 1e-6, at, *(t for t in others if at - DAY_S < t <= at)]
    brute = max(sum(1 for t in others if s <= t < s + DAY_S) for s in starts if s <= at < s + DAY_S)
    assert found == brute


# --- the vocabulary (cloud_bridge/core/preferences.py) --------------------------------------------


def stored(kind: str, *names: str, retired: tuple[str, ...] = ()) -> list[Term]:
    return [
        Term(kind, n, bit, n not in retired)  # type: ignore[arg-type]
        for bit, n in enumerate(names)
    ]


def test_new_terms_get_the_next_free_bits_in_config_order() -> None:
    plan = plan_vocabulary([], "interest", ("home", "beauty"))
    assert plan.add == (Term("interest", "home", 0), Term("interest", "beauty", 1))
    grown = plan_vocabulary([*plan.add], "interest", ("beauty", "kids", "home"))
    assert grown.add == (Term("interest", "kids", 2),) and not grown.retire


def test_a_dropped_term_is_retired_keeps_its_bit_and_gets_it_back_when_it_returns() -> None:
    terms = stored("interest", "home", "beauty", "kids")
    dropped = plan_vocabulary(terms, "interest", ("home", "kids", "shoes"))
    assert dropped.retire == ("beauty",)
    assert dropped.add == (Term("interest", "shoes", 3),)  # never bit 1 again
    back = plan_vocabulary(
        stored("interest", "home", "beauty", retired=("beauty",)), "interest", ("beauty", "home")
    )
    assert back.revive == ("beauty",) and back.add == () and back.retire == ()
    assert not plan_vocabulary(terms, "interest", ("kids", "home", "beauty")).changed


def test_each_kind_has_its_own_bits() -> None:
    terms = stored("interest", "home", "beauty")
    plan = plan_vocabulary(terms, "promotion", ("discount",))
    assert plan.add == (Term("promotion", "discount", 0),) and plan.retire == ()


def test_no_more_than_63_terms_can_ever_be_named_even_counting_retired_ones() -> None:
    names = [f"t{n}" for n in range(63)]
    assert len(plan_vocabulary([], "interest", names).add) == 63
    with pytest.raises(VocabularyError, match="at most 63"):
        plan_vocabulary([], "interest", [*names, "t63"])
    full = stored("interest", *names)
    # Retiring one frees no bit.
    with pytest.raises(VocabularyError, match="retired ones keep their bits"):
        plan_vocabulary(full, "interest", [*names[1:], "new"])


@pytest.mark.parametrize(
    ("configured", "problem"),
    [(("home", "home"), "twice"), (("Home",), "not a valid id"), (("",), "not a valid id")],
)
def test_a_bad_configured_vocabulary_is_refused(configured: tuple[str, ...], problem: str) -> None:
    with pytest.raises(VocabularyError, match=problem) as info:
        plan_vocabulary([], "promotion", configured)
    assert info.value.field == "preferences.promotion_types"


def test_the_sync_lists_terms_in_bit_order_retired_ones_in_their_place() -> None:
    vocabulary = Vocabulary(
        (
            *stored("interest", "home", "beauty", "kids", retired=("beauty",)),
            *stored("promotion", "event", "discount"),
        )
    )
    assert vocabulary.in_bit_order("interest") == ("home", "beauty", "kids")
    assert vocabulary.accepted("interest") == ("home", "kids")
    assert vocabulary.in_bit_order("promotion") == ("event", "discount")
    # A gap (a database edited by hand) ends the list: no term moves onto another's bit.
    gap = Vocabulary((Term("interest", "home", 0), Term("interest", "kids", 2)))
    assert gap.in_bit_order("interest") == ("home",)


def test_a_members_terms_become_masks_over_the_bits_including_retired_ones() -> None:
    vocabulary = Vocabulary(
        (
            *stored("interest", "home", "beauty", "kids", retired=("beauty",)),
            *stored("promotion", "event", "discount"),
        )
    )
    stated = MemberPreferences("m-1", ("kids", "beauty"), ("discount",), 1, 3, NOW)
    assert stated.roster_prefs(vocabulary) == wire.MemberPrefs(0b110, 0b10, 1, 3)
    none = MemberPreferences("m-2", (), (), 0, 0, NOW)
    assert none.roster_prefs(vocabulary) == wire.MemberPrefs(0, 0, 0, 0)
    assert none.to_json()["no_offers"] is True


# --- requests -------------------------------------------------------------------------------------

VALID = {
    "interests": ["beauty", "home"],
    "promotion_types": ["discount", "event"],
    "max_offers_per_day": 1,
    "max_offers_per_week": 3,
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (VALID, PreferencesRequest("m-1", ("beauty", "home"), ("discount", "event"), 1, 3)),
        (
            {"interests": [], "promotion_types": [], "no_offers": True},
            PreferencesRequest("m-1", (), (), 0, 0),
        ),
        (
            {**VALID, "no_offers": False, "max_offers_per_day": 24, "max_offers_per_week": 100},
            PreferencesRequest("m-1", ("beauty", "home"), ("discount", "event"), 24, 100),
        ),
        (
            {**VALID, "max_offers_per_day": 0, "max_offers_per_week": 0},
            PreferencesRequest("m-1", ("beauty", "home"), ("discount", "event"), 0, 0),
        ),
    ],
)
def test_valid_preferences_requests(body: dict[str, Any], expected: PreferencesRequest) -> None:
    assert parse_preferences_request("m-1", body) == expected


def without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k not in names}


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (without("interests"), "interests", "missing"),
        (without("promotion_types"), "promotion_types", "missing"),
        (without("max_offers_per_day"), "max_offers_per_day", "missing"),
        (without("max_offers_per_week"), "max_offers_per_week", "missing"),
        ({**VALID, "interests": "beauty"}, "interests", "must be a list"),
        ({**VALID, "interests": None}, "interests", "must be a list"),
        ({**VALID, "interests": ["beauty", 7]}, "interests[1]", "must be a term"),
        ({**VALID, "interests": ["home", "beauty", "home"]}, "interests[2]", "repeats 'home'"),
        ({**VALID, "promotion_types": [["event"]]}, "promotion_types[0]", "must be a term"),
        ({**VALID, "interests": ["x"] * 64}, "interests", "at most 63"),
        ({**VALID, "max_offers_per_day": 25}, "max_offers_per_day", "0..24"),
        ({**VALID, "max_offers_per_day": -1}, "max_offers_per_day", "0..24"),
        ({**VALID, "max_offers_per_week": 10**30}, "max_offers_per_week", "0..100"),
        ({**VALID, "max_offers_per_day": 1.0}, "max_offers_per_day", "must be an integer"),
        ({**VALID, "max_offers_per_day": True}, "max_offers_per_day", "must be an integer"),
        ({**VALID, "max_offers_per_week": "3"}, "max_offers_per_week", "must be an integer"),
        ({**VALID, "no_offers": "yes"}, "no_offers", "true or false"),
        ({**VALID, "no_offers": True}, "max_offers_per_day", "cannot be sent with"),
        ({**without("max_offers_per_day"), "no_offers": True}, "max_offers_per_week", "cannot"),
        ({**without("max_offers_per_day"), "no_offers": False}, "max_offers_per_day", "missing"),
        ({**VALID, "frequency": 3}, "frequency", "not a known field"),
    ],
)
def test_invalid_preferences_requests_name_the_field(
    body: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_preferences_request("m-1", body)
    assert info.value.field == field
    assert problem in info.value.problem


def test_an_invalid_member_id_is_named() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_preferences_request("M 1", VALID)
    assert info.value.field == "member"


def test_terms_are_checked_against_what_the_chain_accepts_now() -> None:
    vocabulary = Vocabulary(
        (
            *stored("interest", "home", "beauty", "kids", retired=("kids",)),
            *stored("promotion", "discount", "event"),
        )
    )
    ok = PreferencesRequest("m-1", ("beauty",), ("event",), 1, 1)
    assert check_request_terms(ok, vocabulary) == ok
    for request, field, problem in (
        (dataclasses.replace(ok, interests=("home", "garden")), "interests[1]", "'garden'"),
        (dataclasses.replace(ok, interests=("kids",)), "interests[0]", "(home, beauty)"),
        (dataclasses.replace(ok, promotion_types=("bogof",)), "promotion_types[0]", "promotion"),
    ):
        with pytest.raises(InvalidRequest) as info:
            check_request_terms(request, vocabulary)
        assert info.value.field == field
        assert problem in info.value.problem


# --- the admission re-check (cloud_bridge/core/admission.py) --------------------------------------

HOME_DISCOUNT = CampaignFacts(
    "home-sale", None, True, ("silver",), 0.0, promotion_type="discount", interests=("home",)
)
GOOD = OfferFacts(
    store="store-001",
    ts=NOW,
    campaign=HOME_DISCOUNT,
    member=MemberFacts("silver", consent=True),
    member_cooldown_s=0.0,
    same_campaign_gap_s=None,
    any_offer_gap_s=None,
    prefs=None,
    interest_bits=INTERESTS,
    promotion_bits=PROMOTIONS,
)


def with_(**changes: object) -> OfferFacts:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (GOOD, None),
        (with_(prefs=prefs(("home",), ("discount",), 1, 1)), None),
        (with_(prefs=prefs(("beauty",))), OfferRefusal.PREFERENCES),
        (with_(prefs=prefs((), ("event",))), OfferRefusal.PREFERENCES),
        (with_(prefs=prefs(per_day=0, per_week=0)), OfferRefusal.FREQUENCY),
        (with_(prefs=prefs(per_day=1), other_offer_ts=(NOW - 3600,)), OfferRefusal.FREQUENCY),
        # A later offer uploaded first counts as much as an earlier one.
        (with_(prefs=prefs(per_day=1), other_offer_ts=(NOW + 3600,)), OfferRefusal.FREQUENCY),
        (with_(prefs=prefs(per_day=1), other_offer_ts=(NOW - DAY_S,)), None),
        (
            with_(
                prefs=prefs(per_day=5, per_week=2), other_offer_ts=(NOW - 3 * DAY_S, NOW + DAY_S)
            ),
            OfferRefusal.FREQUENCY,
        ),
        (with_(prefs=prefs(per_week=2), other_offer_ts=(NOW - WEEK_S, NOW + DAY_S)), None),
        # A day apart by radio time, but the bridge delivered the other one an hour ago.
        (
            with_(
                prefs=prefs(per_day=1),
                other_offer_ts=(NOW - DAY_S,),
                issued_at=NOW + 5.0,
                other_issued_at=(NOW + 5.0 - 3600,),
            ),
            OfferRefusal.FREQUENCY,
        ),
        (
            with_(
                prefs=prefs(per_day=1),
                other_offer_ts=(NOW - DAY_S,),
                issued_at=NOW + 5.0,
                other_issued_at=(NOW + 5.0 - DAY_S,),
            ),
            None,
        ),
        # Without preferences, no cap but the cooldowns.
        (with_(other_offer_ts=tuple(NOW - n for n in range(50))), None),
        # The tier comes before preferences, preferences before the frequency.
        (
            with_(member=MemberFacts("bronze", True), prefs=prefs(("beauty",), (), 0, 0)),
            OfferRefusal.TIER_NOT_SERVED,
        ),
        (with_(prefs=prefs(("beauty",), (), 0, 0)), OfferRefusal.PREFERENCES),
    ],
    ids=lambda v: "" if isinstance(v, OfferFacts) else str(v),
)
def test_the_bridge_rechecks_preferences_and_caps_before_delivering(
    facts: OfferFacts, expected: OfferRefusal | None
) -> None:
    assert check_offer(facts) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (None, None),
        (prefs(("home",), ("discount",), 1, 1), None),
        (prefs(("beauty",)), OfferRefusal.PREFERENCES),
        (prefs((), ("event",)), OfferRefusal.PREFERENCES),
        (prefs(("home",), (), 0, 0), OfferRefusal.FREQUENCY),
        (prefs(("beauty",), (), 0, 0), OfferRefusal.PREFERENCES),
    ],
    ids=str,
)
def test_an_offer_not_yet_delivered_is_held_to_what_the_member_states_now(
    now: wire.MemberPrefs | None, expected: OfferRefusal | None
) -> None:
    served = ServedTerms("discount", ("home",))
    assert check_undelivered(now, served, INTERESTS, PROMOTIONS) == expected


def test_the_caps_hold_in_any_day_not_only_the_last_one() -> None:
    two_a_day = prefs(per_day=2)
    # Offers 20 h before and 20 h after: no day holds both, so a third in the middle may go...
    assert within_caps(two_a_day, NOW, (NOW - 20 * 3600, NOW + 20 * 3600))
    # ...but not with a second one within the same day as it, on either side.
    assert not within_caps(two_a_day, NOW, (NOW - 20 * 3600, NOW - 19 * 3600))
    assert not within_caps(two_a_day, NOW, (NOW + 1, NOW + 2))
