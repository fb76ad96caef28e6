"""Does a campaign suit what a member asked for? The one matching rule, for gateway and bridge (issue 10).

A member states interests, promotion types and a frequency (`wire.MemberPrefs`); a campaign declares
the interests it serves and its promotion type (`wire.CampaignSpec`). The campaign sync's
`interest_terms` / `promotion_terms` name the bits of the members' masks: term i is bit i.

The rule (docs/mqtt.md, `campaigns`):

- a member with no stated preferences (`prefs` None) gets any campaign of their tier, capped only by
  the cooldowns;
- interests: the member's mask is 0 (no preference), or the campaign serves any interest (it names
  none), or it names at least one the member chose;
- promotion type: the member's mask is 0, or the campaign's type is one the member chose. A campaign
  without a promotion type matches only members with no promotion preference;
- frequency: fewer than `per_day` offers to the member in the last 24 hours and fewer than
  `per_week` in the last 7 days; 0 means no offers at all.

"The last 24 hours" at time t is the half-open interval (t - 24 h, t]: an offer exactly a day old no
longer counts, so no span of 24 hours [a, a + 24 h) ever holds more than `per_day` offers. Offers
stamped later than t (a clock stepped back) count too.

A term the vocabulary does not name (a campaign out of step with its sync) sets no bit: such a
campaign reaches only members without a preference on that dimension.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge.core.wire import CampaignSpec, MemberPrefs

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S


def term_bits(terms: Sequence[str]) -> dict[str, int]:
    """Each term's bit (term i is 1 << i); a term listed twice keeps its first bit."""
    bits: dict[str, int] = {}
    for i, term in enumerate(terms):
        bits.setdefault(term, 1 << i)
    return bits


@dataclass(frozen=True, slots=True)
class CampaignTerms:
    """A campaign's interests and promotion type as bits of the chain's vocabulary."""

    interests: int = 0  # the bits of the interests it names that the vocabulary knows
    general: bool = True  # it names no interest: a general offer, for any interest
    promotion: int = 0  # its promotion type's bit; 0 without one (or with one the vocabulary lacks)
    unknown: tuple[str, ...] = ()  # the terms it names that the vocabulary lacks


def campaign_terms(
    campaign: CampaignSpec, interest_bits: Mapping[str, int], promotion_bits: Mapping[str, int]
) -> CampaignTerms:
    """`campaign`'s terms as bits (`interest_bits` / `promotion_bits` from `term_bits`)."""
    mask = 0
    unknown: list[str] = []
    for interest in campaign.interests:
        bit = interest_bits.get(interest)
        if bit is None:
            unknown.append(interest)
        else:
            mask |= bit
    promotion = 0
    if campaign.promotion_type is not None:
        promotion = promotion_bits.get(campaign.promotion_type, 0)
        if not promotion:
            unknown.append(campaign.promotion_type)
    return CampaignTerms(mask, not campaign.interests, promotion, tuple(unknown))


def matches(prefs: MemberPrefs | None, terms: CampaignTerms) -> bool:
    """Whether a campaign with `terms` suits a member's stated interests and promotion types.

    Frequency is not judged here (`within_frequency`).
    """
    if prefs is None:
        return True
    if prefs.interests and not terms.general and not terms.interests & prefs.interests:
        return False
    return not prefs.promotions or bool(terms.promotion & prefs.promotions)


def wants_offers(prefs: MemberPrefs | None) -> bool:
    """False for a member who asked for no offers at all (a frequency of 0)."""
    return prefs is None or (prefs.per_day > 0 and prefs.per_week > 0)


def offers_since(times: Sequence[float], since_s: float) -> int:
    """How many of `times` (ascending) are later than `since_s`."""
    return len(times) - bisect_right(times, since_s)


def within_frequency(prefs: MemberPrefs | None, times: Sequence[float], now_s: float) -> bool:
    """Whether one more offer at `now_s` keeps the member within their frequency.

    `times` are the member's offers (ascending, at least those of the last 7 days).
    """
    if prefs is None:
        return True
    if not wants_offers(prefs):
        return False
    return (
        offers_since(times, now_s - DAY_S) < prefs.per_day
        and offers_since(times, now_s - WEEK_S) < prefs.per_week
    )
