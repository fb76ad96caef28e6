"""Which entry offer, if any, a member gets: tier, schedule, audience, preferences, frequency,
cooldowns, campaign caps and budgets, then refresh.

For a member who just walked in (issues 10 and 11; docs/mqtt.md, `campaigns`), in this order:

1. the campaigns of the member's tier (none: `Withheld.NO_CAMPAIGN`);
2. a member who asked for no offers (a frequency of 0) gets none (`FREQUENCY`);
3. of those, the ones running now by their schedule, read in the store's local time
   (edge/core/schedule.py; none: `SCHEDULE`);
4. the ones whose audience the member is in: any of the campaign's `segments` (the roster's
   `segments` mask; no segments: every member), and `min_visits` <= the member's `visits` <=
   `max_visits` (none: `AUDIENCE`);
5. the ones that suit the member's stated interests and promotion types
   (edge/core/preferences.py; none: `PREFERENCES`);
6. the member's frequency: fewer than `per_day` offers in the last 24 h and `per_week` in the last
   7 days (else `FREQUENCY`), and the store's member cooldown (else `COOLDOWN`);
7. the campaign's caps for this member: fewer than `per_member_day` offers of it in the store's
   local day and `per_member_week` in the last 7 days (none left: `CAMPAIGN_CAP`);
8. this gateway's share of the campaign's daily budget (`gateway_budgets`: its own id's share; a
   gateway not named has none; no list: no budget): fewer offers of it by this gateway in the
   store's local day than the share (none left: `BUDGET`). As for the frequency, offers stamped
   later than the entry (a clock stepped back) count too: a clock step never spends a day twice;
9. campaigns still in their own cooldown for this member are out (none left: `COOLDOWN`);
10. refresh, not repetition: a campaign the member has never received (within the history kept)
    first, then the one received least recently; ties by priority (higher first), then id. A
    returning member so never gets the same offer again while another eligible one exists.

A campaign ruled out by a step is skipped and the others go on: the reason is the step that left
none. The budget is this gateway's alone, counted from its own offers (the bridge splits the daily
budget between the store's gateways), so the store never spends more than the campaign's budget
however the gateways are cut off from each other.

Pure: the caller passes radio time and persists `OfferHistory` (the gateway keeps it in SQLite so a
power cut never resets a cooldown, a cap or a budget into spam).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from enum import StrEnum
from typing import TypeVar

from edge.core.preferences import (
    WEEK_S,
    CampaignTerms,
    campaign_terms,
    matches,
    offers_since,
    term_bits,
    wants_offers,
    within_frequency,
)
from edge.core.schedule import day_bounds, is_on, local_day, time_zone
from edge.core.wire import (
    MAX_OFFERS_PER_WEEK,
    SEGMENTS,
    CampaignSpec,
    CampaignSync,
    MemberPrefs,
)

#: How long the gateway remembers which campaigns a member got, by default (`[privacy]
#: retention_s`): the refresh memory, and the bound on every offer history it keeps.
REFRESH_MEMORY_S = 30 * 86_400.0
#: How long each campaign's offers are kept (per member, and this gateway's for its budgets): the 7
#: days a per-member-week cap counts, and a day more for a local day reaching back from it.
CAMPAIGN_MEMORY_S = 8 * 86_400.0

_K = TypeVar("_K")


class Withheld(StrEnum):
    """Why a member who walked in got no offer (the pipeline counts them for the status topic)."""

    NO_CAMPAIGN = "no_campaign"  # no campaign for the member's tier, or no campaigns at all
    PREFERENCES = "preferences"  # campaigns for the tier, none of what the member asked for
    FREQUENCY = "frequency"  # the member's per_day / per_week reached, or no offers wanted
    COOLDOWN = "cooldown"  # the member cooldown, or every matching campaign in its own
    # Issue 11:
    SCHEDULE = "schedule"  # campaigns for the tier, none running now (store's local time)
    AUDIENCE = "audience"  # none for the member's segments or visit count
    CAMPAIGN_CAP = "campaign_cap"  # the member had their per_member_day / _week of each
    BUDGET = "budget"  # this gateway's share of each one's daily budget is spent


@dataclass(slots=True)
class OfferHistory:
    """What the member got, when (radio time, Unix seconds): enough for cooldowns, caps and refresh.

    `times` holds each member's latest offers, ascending: at most MAX_OFFERS_PER_WEEK (the highest
    weekly cap, so every count a cap needs is exact), none older than 7 days after a `prune`.
    `last_by_campaign` holds the last offer of each campaign to each member, kept as long as `prune`
    is told (the refresh memory); `last_any` the member's last offer (the member cooldown).
    `campaign_times` holds each (member, campaign)'s offers and `budget_times` each campaign's
    offers by this gateway, ascending, none older than CAMPAIGN_MEMORY_S after a `prune` (issue
    11: per-member campaign caps and this gateway's budgets).
    """

    last_any: dict[str, float] = field(default_factory=dict)
    last_by_campaign: dict[tuple[str, str], float] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    campaign_times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    budget_times: dict[str, list[float]] = field(default_factory=dict)

    def record(self, member: str, campaign: str, t_s: float) -> None:
        """One offer of `campaign` to `member` at `t_s`."""
        self.last_any[member] = max(t_s, self.last_any.get(member, t_s))
        key = (member, campaign)
        self.last_by_campaign[key] = max(t_s, self.last_by_campaign.get(key, t_s))
        self.record_time(member, t_s)
        self.record_campaign_time(member, campaign, t_s)

    def record_campaign_time(self, member: str, campaign: str, t_s: float) -> None:
        """An offer of `campaign` to `member` by this gateway at `t_s`, for the campaign caps and
        budgets only (restoring saved history)."""
        insort(self.campaign_times.setdefault((member, campaign), []), t_s)
        self.record_budget_time(campaign, t_s)

    def record_budget_time(self, campaign: str, t_s: float) -> None:
        """An offer of `campaign` by this gateway at `t_s`, to a member no longer known (restoring
        saved history past the privacy retention): for its budget only."""
        insort(self.budget_times.setdefault(campaign, []), t_s)

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
        """Drop what is older than `keep_s` (offer times: older than 7 days, campaign offer times
        older than CAMPAIGN_MEMORY_S, or `keep_s` if shorter; budget times older than
        CAMPAIGN_MEMORY_S), bounding memory and storage."""
        cutoff = now_s - keep_s
        self.last_any = {m: t for m, t in self.last_any.items() if t >= cutoff}
        self.last_by_campaign = {k: t for k, t in self.last_by_campaign.items() if t >= cutoff}
        self.times = _recent(self.times, now_s - min(keep_s, WEEK_S))
        campaign_cutoff = now_s - min(keep_s, CAMPAIGN_MEMORY_S)
        self.campaign_times = _recent(self.campaign_times, campaign_cutoff)
        # A budget's times name no member, so a privacy retention shorter than a day does not
        # cut them: forgetting this morning's offers would spend the day's share again.
        self.budget_times = _recent(self.budget_times, now_s - CAMPAIGN_MEMORY_S)


def _recent(lists: dict[_K, list[float]], cutoff_s: float) -> dict[_K, list[float]]:
    """Each ascending list without its times up to `cutoff_s` (no cap counts those any more);
    emptied ones dropped."""
    kept: dict[_K, list[float]] = {}
    for key, times in lists.items():
        recent = times[bisect_right(times, cutoff_s) :]
        if recent:
            kept[key] = recent
    return kept


@dataclass(frozen=True, slots=True)
class OfferDecision:
    member: str
    campaign: CampaignSpec
    t_s: float


@dataclass(frozen=True, slots=True)
class _Entry:
    """A campaign with what its rules need, worked out once per campaign set."""

    campaign: CampaignSpec
    terms: CampaignTerms  # its interests and promotion type as bits
    segments: int  # its segments as a mask of the roster's bits; 0: every member
    share: int | None  # this gateway's share of its daily budget; None: no budget

    def reaches(self, segments: int, visits: int) -> bool:
        """Whether a member with roster `segments` and `visits` is in its audience."""
        c = self.campaign
        if self.segments and not self.segments & segments:
            return False
        if c.min_visits is not None and visits < c.min_visits:
            return False
        return c.max_visits is None or visits <= c.max_visits


def segment_mask(segments: Iterable[str]) -> int:
    """The roster mask of `segments` (bit i: wire.SEGMENTS[i])."""
    mask = 0
    for i, name in enumerate(SEGMENTS):
        if name in segments:
            mask |= 1 << i
    return mask


def budget_share(campaign: CampaignSpec, gateway: str | None) -> int | None:
    """`gateway`'s share of `campaign`'s daily budget: None without a budget; 0 for a gateway
    the list does not name (or a gateway that does not know its id). Named twice: the smaller."""
    budgets = campaign.gateway_budgets
    if budgets is None:
        return None
    shares = [n for named, n in budgets if named == gateway]
    return min(shares) if shares else 0


def _from(times: Sequence[float], start_s: float) -> int:
    """How many of `times` (ascending) are at or after `start_s`."""
    return len(times) - bisect_left(times, start_s)


class OfferEngine:
    """Chooses a member's entry offer (module docstring) and records it in `history`.

    `gateway` is this gateway's id: the name its budget shares go by (None: it has none). The
    campaign sync's `timezone` is the store's local time for schedules, local days and budgets.
    """

    def __init__(
        self,
        sync: CampaignSync | None,
        history: OfferHistory | None = None,
        *,
        gateway: str | None = None,
    ) -> None:
        self.history = history if history is not None else OfferHistory()
        self.gateway = gateway
        self._member_cooldown_s = 0.0
        self._campaigns: tuple[CampaignSpec, ...] = ()
        self._entries: tuple[_Entry, ...] = ()
        self._zone: tzinfo = UTC
        self._counts_days = False  # a campaign has a per_member_day cap or a budget
        #: Terms the campaigns name that the sync's vocabulary lacks (they match no member's bit).
        self.unknown_terms: tuple[str, ...] = ()
        self.version = 0
        if sync is not None:
            self.replace(sync)

    def replace(self, sync: CampaignSync, zone: tzinfo | None = None) -> None:
        """Adopt a new campaign set, read in `zone` (default: the sync's `timezone`); history (and
        so every cooldown, cap and budget spent) carries over.

        UnknownTimeZone (edge/core/schedule.py), changing nothing, if the sync's zone is unknown.
        """
        zone = time_zone(sync.timezone) if zone is None else zone
        campaigns = tuple(sorted(sync.campaigns, key=lambda c: (-c.priority, c.id)))
        interest_bits = term_bits(sync.interest_terms)
        promotion_bits = term_bits(sync.promotion_terms)
        self._entries = tuple(
            _Entry(
                c,
                campaign_terms(c, interest_bits, promotion_bits),
                segment_mask(c.segments),
                budget_share(c, self.gateway),
            )
            for c in campaigns
        )
        self._campaigns = campaigns
        self._zone = zone
        self._counts_days = any(
            e.share is not None or e.campaign.per_member_day is not None for e in self._entries
        )
        self.unknown_terms = tuple(sorted({u for e in self._entries for u in e.terms.unknown}))
        self._member_cooldown_s = sync.member_cooldown_s
        self.version = sync.version

    @property
    def campaigns(self) -> tuple[CampaignSpec, ...]:
        return self._campaigns

    @property
    def zone(self) -> tzinfo:
        """The store's time zone the campaigns in force are read in."""
        return self._zone

    @property
    def longest_cooldown_s(self) -> float:
        return max([self._member_cooldown_s, *(c.cooldown_s for c in self._campaigns)])

    def evaluate(
        self,
        member: str,
        tier: str,
        t_s: float,
        prefs: MemberPrefs | None = None,
        *,
        segments: int = 0,
        visits: int = 0,
    ) -> OfferDecision | Withheld:
        """The offer for a member who just walked in (their roster `prefs`, `segments` and
        `visits`), recorded in the history, or why there is none."""
        entries = [e for e in self._entries if tier in e.campaign.tiers]
        if not entries:
            return Withheld.NO_CAMPAIGN
        if not wants_offers(prefs):
            return Withheld.FREQUENCY
        zone = self._zone
        entries = [e for e in entries if is_on(e.campaign.schedule, t_s, zone)]
        if not entries:
            return Withheld.SCHEDULE
        entries = [e for e in entries if e.reaches(segments, visits)]
        if not entries:
            return Withheld.AUDIENCE
        entries = [e for e in entries if matches(prefs, e.terms)]
        if not entries:
            return Withheld.PREFERENCES
        history = self.history
        if not within_frequency(prefs, history.recent(member), t_s):
            return Withheld.FREQUENCY
        last_any = history.last_any.get(member)
        if last_any is not None and t_s - last_any < self._member_cooldown_s:
            return Withheld.COOLDOWN
        # The local day's offers, and any stamped later (a clock stepped back): never fewer than
        # were made today, so a clock step never spends a share twice.
        day_start_s = day_bounds(local_day(t_s, zone), zone)[0] if self._counts_days else t_s
        entries = [e for e in entries if self._under_caps(e.campaign, member, t_s, day_start_s)]
        if not entries:
            return Withheld.CAMPAIGN_CAP
        budget_times = history.budget_times
        entries = [
            e
            for e in entries
            if e.share is None or _from(budget_times.get(e.campaign.id, ()), day_start_s) < e.share
        ]
        if not entries:
            return Withheld.BUDGET
        chosen = _freshest((e.campaign for e in entries), member, t_s, history)
        if chosen is None:
            return Withheld.COOLDOWN
        history.record(member, chosen.id, t_s)
        return OfferDecision(member, chosen, t_s)

    def _under_caps(
        self, campaign: CampaignSpec, member: str, t_s: float, day_start_s: float
    ) -> bool:
        """Whether one more offer of `campaign` keeps `member` within its per-member caps: in the
        store's local day (from `day_start_s`) and the 7 days up to `t_s` (later ones count too:
        a clock stepped back)."""
        per_day, per_week = campaign.per_member_day, campaign.per_member_week
        if per_day is None and per_week is None:
            return True
        times = self.history.campaign_times.get((member, campaign.id), ())
        if per_day is not None and _from(times, day_start_s) >= per_day:
            return False
        return per_week is None or offers_since(times, t_s - WEEK_S) < per_week

    def decide(
        self,
        member: str,
        tier: str,
        t_s: float,
        prefs: MemberPrefs | None = None,
        *,
        segments: int = 0,
        visits: int = 0,
    ) -> OfferDecision | None:
        """The offer for a member who just walked in, recorded in the history, or None."""
        outcome = self.evaluate(member, tier, t_s, prefs, segments=segments, visits=visits)
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
