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

import bisect
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.core.wire import MAX_PREFERENCE_TERMS, MemberPrefs

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S


class ServesTerms(Protocol):
    """What a campaign says it serves: `wire.CampaignSpec` and the bridge's campaign facts alike."""

    @property
    def promotion_type(self) -> str | None: ...

    @property
    def interests(self) -> Sequence[str]: ...


def term_bits(terms: Sequence[str]) -> dict[str, int]:
    """Each term's bit (term i is 1 << i); a term listed twice keeps its first bit; terms past
    MAX_PREFERENCE_TERMS have none."""
    bits: dict[str, int] = {}
    for i, term in enumerate(terms[:MAX_PREFERENCE_TERMS]):
        bits.setdefault(term, 1 << i)
    return bits


def mask_of(terms: Iterable[str], bits: Mapping[str, int]) -> int:
    """The mask of `terms` (`bits` from `term_bits`); a term without a bit sets nothing."""
    mask = 0
    for term in terms:
        mask |= bits.get(term, 0)
    return mask


@dataclass(frozen=True, slots=True)
class CampaignTerms:
    """A campaign's interests and promotion type as bits of the chain's vocabulary."""

    interests: int = 0  # the bits of the interests it names that the vocabulary knows
    general: bool = True  # it names no interest: a general offer, for any interest
    promotion: int = 0  # its promotion type's bit; 0 without one (or with one the vocabulary lacks)
    unknown: tuple[str, ...] = ()  # the terms it names that the vocabulary lacks


def campaign_terms(
    campaign: ServesTerms, interest_bits: Mapping[str, int], promotion_bits: Mapping[str, int]
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


def campaign_matches(
    campaign: ServesTerms,
    prefs: MemberPrefs | None,
    interest_bits: Mapping[str, int],
    promotion_bits: Mapping[str, int],
) -> bool:
    """`matches` for a campaign whose terms are not precomputed (the bridge's re-check)."""
    return matches(prefs, campaign_terms(campaign, interest_bits, promotion_bits))


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
        return True  # no count needed
    day = offers_since(times, now_s - DAY_S)
    return under_caps(prefs, day, offers_since(times, now_s - WEEK_S))


def under_caps(prefs: MemberPrefs | None, offers_in_day: int, offers_in_week: int) -> bool:
    """Whether one more offer keeps the member within their caps, given how many they already
    had in the 24 h and the 7 days that count (`busiest_window` at the bridge)."""
    if prefs is None:
        return True
    return offers_in_day < prefs.per_day and offers_in_week < prefs.per_week


def busiest_window(other_ts: Iterable[float], ts: float, window_s: float) -> int:
    """The most of `other_ts` that share one window of `window_s` with an offer at `ts`.

    Offers less than `window_s` apart share a window. Every window that holds `ts` counts, not
    only the one ending at `ts`: gateways upload late, so an offer may arrive after later ones,
    and "at most N a day" must hold for any 24 h (the bridge's chain-wide re-check).
    """
    near = sorted(t for t in other_ts if ts - window_s < t < ts + window_s)
    best = 0
    # A window [start, start + window_s) holding ts; the busiest starts at ts or at an offer
    # before it (moving the start up to the next offer loses nothing).
    starts = [t for t in near if t <= ts] + [ts]
    for start in starts:
        end = start + window_s
        count = bisect.bisect_left(near, end) - bisect.bisect_left(near, start)
        best = max(best, count)
    return best
