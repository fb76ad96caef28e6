"""Which entry offer, if any, a member gets: tier, preferences, frequency, cooldowns, then refresh.

For a member who just walked in (issue 10; docs/mqtt.md, `campaigns`):

1. the campaigns of the member's tier (none: `Withheld.NO_CAMPAIGN`);
2. a member who asked for no offers (a frequency of 0) gets none (`FREQUENCY`);
3. of those, the ones that suit the member's stated interests and promotion types
   (edge/core/preferences.py; none: `PREFERENCES`);
4. the member's frequency: fewer than `per_day` offers in the last 24 h and `per_week` in the last
   7 days (else `FREQUENCY`), and the store's member cooldown (else `COOLDOWN`);
5. campaigns still in their own cooldown for this member are out (none left: `COOLDOWN`);
6. refresh, not repetition: a campaign the member has never received (within the history kept)
   first, then the one received least recently; ties by priority (higher first), then id. A
   returning member so never gets the same offer again while another eligible one exists.

Pure: the caller passes radio time and persists `OfferHistory` (the gateway keeps it in SQLite so a
power cut never resets a cooldown or a weekly cap into spam).
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from edge.core.preferences import (
    WEEK_S,
    CampaignTerms,
    campaign_terms,
    matches,
    term_bits,
    wants_offers,
    within_frequency,
)
from edge.core.wire import MAX_OFFERS_PER_WEEK, CampaignSpec, CampaignSync, MemberPrefs

#: How long the gateway remembers which campaigns a member got, by default (`[privacy]
#: retention_s`): the refresh memory, and the bound on every offer history it keeps.
REFRESH_MEMORY_S = 30 * 86_400.0


class Withheld(StrEnum):
    """Why a member who walked in got no offer (the pipeline counts them for the status topic)."""

    NO_CAMPAIGN = "no_campaign"  # no campaign for the member's tier, or no campaigns at all
    PREFERENCES = "preferences"  # campaigns for the tier, none of what the member asked for
    FREQUENCY = "frequency"  # the member's per_day / per_week reached, or no offers wanted
    COOLDOWN = "cooldown"  # the member cooldown, or every matching campaign in its own


@dataclass(slots=True)
class OfferHistory:
    """What the member got, when (radio time, Unix seconds): enough for cooldowns, caps and refresh.

    `times` holds each member's latest offers, ascending: at most MAX_OFFERS_PER_WEEK (the highest
    weekly cap, so every count a cap needs is exact), none older than 7 days after a `prune`.
    `last_by_campaign` holds the last offer of each campaign to each member, kept as long as `prune`
    is told (the refresh memory); `last_any` the member's last offer (the member cooldown).
    """

    last_any: dict[str, float] = field(default_factory=dict)
    last_by_campaign: dict[tuple[str, str], float] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)

    def record(self, member: str, campaign: str, t_s: float) -> None:
        """One offer of `campaign` to `member` at `t_s`."""
        self.last_any[member] = max(t_s, self.last_any.get(member, t_s))
        key = (member, campaign)
        self.last_by_campaign[key] = max(t_s, self.last_by_campaign.get(key, t_s))
        self.record_time(member, t_s)

    def record_time(self, member: str, t_s: float) -> None:
        """An offer to `member` at `t_s`, for the frequency caps only (restoring saved history)."""
        times = self.times.setdefault(member, [])
        insort(times, t_s)
        # The highest cap counts up to MAX_OFFERS_PER_WEEK: older ones change no decision. Older
        # than a week go at the next prune (by the clock then, not by this offer's time).
        if len(times) > MAX_OFFERS_PER_WEEK:
            del times[: len(times) - MAX_OFFERS_PER_WEEK]

    def recent(self, member: str) -> Sequence[float]:
        """The member's latest offers, ascending (what the frequency caps count)."""
        return self.times.get(member, ())

    def prune(self, now_s: float, keep_s: float) -> None:
        """Drop what is older than `keep_s` (offer times: older than 7 days, or `keep_s` if shorter),
        bounding memory and storage."""
        cutoff = now_s - keep_s
        self.last_any = {m: t for m, t in self.last_any.items() if t >= cutoff}
        self.last_by_campaign = {k: t for k, t in self.last_by_campaign.items() if t >= cutoff}
        times_cutoff = now_s - min(keep_s, WEEK_S)
        kept: dict[str, list[float]] = {}
        for member, times in self.times.items():
            recent = times[bisect_right(times, times_cutoff) :]  # no cap counts those any more
            if recent:
                kept[member] = recent
        self.times = kept


@dataclass(frozen=True, slots=True)
class OfferDecision:
    member: str
    campaign: CampaignSpec
    t_s: float


class OfferEngine:
    """Chooses a member's entry offer (module docstring) and records it in `history`."""

    def __init__(self, sync: CampaignSync | None, history: OfferHistory | None = None) -> None:
        self.history = history if history is not None else OfferHistory()
        self._member_cooldown_s = 0.0
        self._campaigns: tuple[CampaignSpec, ...] = ()
        self._entries: tuple[tuple[CampaignSpec, CampaignTerms], ...] = ()  # the bits, once
        #: Terms the campaigns name that the sync's vocabulary lacks (they match no member's bit).
        self.unknown_terms: tuple[str, ...] = ()
        self.version = 0
        if sync is not None:
            self.replace(sync)

    def replace(self, sync: CampaignSync) -> None:
        """Adopt a new campaign set; history (and so every cooldown and cap) carries over."""
        campaigns = tuple(sorted(sync.campaigns, key=lambda c: (-c.priority, c.id)))
        interest_bits = term_bits(sync.interest_terms)
        promotion_bits = term_bits(sync.promotion_terms)
        self._entries = tuple(
            (c, campaign_terms(c, interest_bits, promotion_bits)) for c in campaigns
        )
        self._campaigns = campaigns
        self.unknown_terms = tuple(sorted({u for _, t in self._entries for u in t.unknown}))
        self._member_cooldown_s = sync.member_cooldown_s
        self.version = sync.version

    @property
    def campaigns(self) -> tuple[CampaignSpec, ...]:
        return self._campaigns

    @property
    def longest_cooldown_s(self) -> float:
        return max([self._member_cooldown_s, *(c.cooldown_s for c in self._campaigns)])

    def evaluate(
        self, member: str, tier: str, t_s: float, prefs: MemberPrefs | None = None
    ) -> OfferDecision | Withheld:
        """The offer for a member who just walked in, recorded in the history, or why there is none."""
        tiered = [(c, terms) for c, terms in self._entries if tier in c.tiers]
        if not tiered:
            return Withheld.NO_CAMPAIGN
        if not wants_offers(prefs):
            return Withheld.FREQUENCY
        suited = [c for c, terms in tiered if matches(prefs, terms)]
        if not suited:
            return Withheld.PREFERENCES
        history = self.history
        if not within_frequency(prefs, history.recent(member), t_s):
            return Withheld.FREQUENCY
        last_any = history.last_any.get(member)
        if last_any is not None and t_s - last_any < self._member_cooldown_s:
            return Withheld.COOLDOWN
        chosen = _freshest(suited, member, t_s, history)
        if chosen is None:
            return Withheld.COOLDOWN
        history.record(member, chosen.id, t_s)
        return OfferDecision(member, chosen, t_s)

    def decide(
        self, member: str, tier: str, t_s: float, prefs: MemberPrefs | None = None
    ) -> OfferDecision | None:
        """The offer for a member who just walked in, recorded in the history, or None."""
        outcome = self.evaluate(member, tier, t_s, prefs)
        return outcome if isinstance(outcome, OfferDecision) else None


def _freshest(
    campaigns: Iterable[CampaignSpec], member: str, t_s: float, history: OfferHistory
) -> CampaignSpec | None:
    """Of `campaigns` (by priority, then id), the one out of its cooldown the member got longest ago
    (never: first); the first such in that order on a tie."""
    best: CampaignSpec | None = None
    best_last = math.inf
    last_by_campaign = history.last_by_campaign
    for campaign in campaigns:
        last = last_by_campaign.get((member, campaign.id))
        if last is None:
            return campaign  # never received: nothing is fresher, and it is first by priority
        if t_s - last < campaign.cooldown_s:
            continue
        if last < best_last:
            best, best_last = campaign, last
    return best
