"""Whether an offer suits what a member asked for (issue 10): the rule the gateway and the bridge share.

A member's preferences reach a gateway as `wire.MemberPrefs`: two bit masks over the chain's
vocabulary (bit i is term i of the campaign sync's `interest_terms` / `promotion_terms`) and two caps.
The rule, the same wherever an offer is decided or re-checked:

- A member without preferences (None) gets any campaign of their tier.
- **Interests**: the member's mask is 0 (no preference), or the campaign names no interest (a
  general offer), or they share at least one interest.
- **Promotion type**: the member's mask is 0, or the campaign's promotion type is one the member
  chose. A campaign without a promotion type matches only members who chose none.
- **Frequency**: fewer than `per_day` offers to the member in any 24 h and fewer than `per_week` in
  any 7 days, this one included (0: no offers at all; visits are still recorded).

A campaign term that is not in the vocabulary has no bit: it matches no member's choice.

Pure: no clock, no I/O; times are radio time (Unix seconds) passed in.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from edge.core.wire import MAX_PREFERENCE_TERMS, MemberPrefs

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


class ServesTerms(Protocol):
    """What a campaign says it serves: `wire.CampaignSpec` and the bridge's campaign facts alike."""

    @property
    def promotion_type(self) -> str | None: ...

    @property
    def interests(self) -> Sequence[str]: ...


def term_bits(terms: Sequence[str]) -> dict[str, int]:
    """term → its bit number: its place in `terms` (the campaign sync's `interest_terms` or
    `promotion_terms`, in bit order). Terms past MAX_PREFERENCE_TERMS have no bit."""
    return {term: bit for bit, term in enumerate(terms[:MAX_PREFERENCE_TERMS])}


def mask_of(terms: Iterable[str], bits: Mapping[str, int]) -> int:
    """The mask with the bit of each of `terms` set; a term without a bit sets nothing."""
    mask = 0
    for term in terms:
        bit = bits.get(term)
        if bit is not None:
            mask |= 1 << bit
    return mask


def matches(
    campaign: ServesTerms,
    prefs: MemberPrefs | None,
    interest_bits: Mapping[str, int],
    promotion_bits: Mapping[str, int],
) -> bool:
    """Whether `campaign` serves what the member chose (interests and promotion type; not the
    frequency: see `under_caps`). `*_bits` map each term to its bit (`term_bits`)."""
    if prefs is None:
        return True
    interests = mask_of(campaign.interests, interest_bits)
    if prefs.interests and campaign.interests and not interests & prefs.interests:
        return False
    if prefs.promotions:
        kind = campaign.promotion_type
        if kind is None or not mask_of((kind,), promotion_bits) & prefs.promotions:
            return False
    return True


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
    and "at most N a day" must hold for any 24 h.
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
