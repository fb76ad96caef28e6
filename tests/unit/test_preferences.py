"""The preference rule shared by gateway and bridge: interests, promotion types, frequency."""

from __future__ import annotations

import pytest

from edge.core.preferences import (
    DAY_S,
    WEEK_S,
    CampaignTerms,
    campaign_terms,
    matches,
    term_bits,
    wants_offers,
    within_frequency,
)
from edge.core.wire import CampaignSpec, MemberPrefs

INTERESTS = ("womenswear", "menswear", "beauty", "home")  # bits 1, 2, 4, 8
PROMOTIONS = ("discount", "points_multiplier", "event")  # bits 1, 2, 4


def terms_of(promotion_type: str | None, *interests: str) -> CampaignTerms:
    spec = CampaignSpec("c", "t", "b", ("gold",), 0.0, 0, promotion_type, interests)
    return campaign_terms(spec, term_bits(INTERESTS), term_bits(PROMOTIONS))


def prefs(
    interests: int = 0, promotions: int = 0, per_day: int = 24, per_week: int = 100
) -> MemberPrefs:
    return MemberPrefs(interests, promotions, per_day, per_week)


def test_term_bits_are_positions_and_a_repeated_term_keeps_its_first() -> None:
    assert term_bits(INTERESTS) == {"womenswear": 1, "menswear": 2, "beauty": 4, "home": 8}
    assert term_bits(("a", "b", "a")) == {"a": 1, "b": 2}


def test_campaign_terms_as_bits() -> None:
    assert terms_of("event", "beauty", "home") == CampaignTerms(12, False, 4, ())
    assert terms_of(None) == CampaignTerms(0, True, 0, ())
    assert terms_of("loyalty-day", "garden", "home") == CampaignTerms(
        8, False, 0, ("garden", "loyalty-day")
    )


MATCHES = [
    # (what, member prefs, campaign terms, matches)
    ("no prefs: anything", None, terms_of("event", "beauty"), True),
    ("no prefs: no promotion type", None, terms_of(None), True),
    ("masks 0: anything", prefs(), terms_of("discount", "home"), True),
    ("masks 0: no promotion type", prefs(), terms_of(None, "home"), True),
    ("interest shared", prefs(interests=4 | 1), terms_of(None, "beauty", "home"), True),
    ("no interest shared", prefs(interests=2), terms_of(None, "beauty", "home"), False),
    ("general campaign, any interest", prefs(interests=2), terms_of(None), True),
    ("promotion type chosen", prefs(promotions=4), terms_of("event"), True),
    ("promotion type not chosen", prefs(promotions=1 | 2), terms_of("event"), False),
    ("no promotion type, member chose some", prefs(promotions=1), terms_of(None), False),
    ("both dimensions, both match", prefs(2, 1), terms_of("discount", "menswear"), True),
    ("both dimensions, interest fails", prefs(2, 1), terms_of("discount", "beauty"), False),
    ("both dimensions, promotion fails", prefs(2, 1), terms_of("event", "menswear"), False),
    ("only unknown interests: not general", prefs(interests=15), terms_of(None, "garden"), False),
    ("only unknown interests, mask 0", prefs(promotions=0), terms_of(None, "garden"), True),
    ("unknown promotion type", prefs(promotions=7), terms_of("loyalty-day"), False),
    ("unknown promotion type, mask 0", prefs(interests=4), terms_of("loyalty-day", "beauty"), True),
]


@pytest.mark.parametrize(
    ("what", "member", "terms", "expected"), MATCHES, ids=[m[0] for m in MATCHES]
)
def test_matches(
    what: str, member: MemberPrefs | None, terms: CampaignTerms, expected: bool
) -> None:
    assert matches(member, terms) is expected


def test_a_frequency_of_zero_means_no_offers() -> None:
    assert wants_offers(None) and wants_offers(prefs(per_day=1, per_week=1))
    assert not wants_offers(prefs(per_day=0))
    assert not wants_offers(prefs(per_week=0))
    assert not within_frequency(prefs(per_day=0), [], 0.0)


T = 10 * WEEK_S

FREQUENCY = [
    # (what, per_day, per_week, earlier offers (seconds before now), within)
    ("nothing yet", 1, 1, [], True),
    ("no prefs: no cap", None, None, [1.0] * 200, True),
    ("a day's one offer", 1, 7, [DAY_S - 0.001], False),
    ("exactly a day old: no longer counts", 1, 7, [DAY_S], True),
    ("two a day, one so far", 2, 7, [60.0], True),
    ("two a day, two so far", 2, 7, [60.0, 7200.0], False),
    ("a week's three", 24, 3, [DAY_S, 3 * DAY_S, WEEK_S - 1], False),
    ("exactly a week old: no longer counts", 24, 3, [DAY_S, 3 * DAY_S, WEEK_S], True),
    ("stamped after now (clock stepped back): counts", 1, 7, [-600.0], False),
]


@pytest.mark.parametrize(
    ("what", "per_day", "per_week", "ago", "expected"), FREQUENCY, ids=[f[0] for f in FREQUENCY]
)
def test_within_frequency(
    what: str, per_day: int | None, per_week: int | None, ago: list[float], expected: bool
) -> None:
    member = None if per_day is None or per_week is None else prefs(0, 0, per_day, per_week)
    times = sorted(T - a for a in ago)
    assert within_frequency(member, times, T) is expected
