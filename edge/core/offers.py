"""Which entry offer, if any, a member gets: campaigns by tier, per-campaign and per-member cooldowns.

Pure: the caller passes radio time and persists `OfferHistory` (the gateway keeps it in SQLite so a
power cut never resets a cooldown into spam).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.core.wire import CampaignSpec, CampaignSync


@dataclass(slots=True)
class OfferHistory:
    """When each member last got an offer, overall and per campaign (radio time, Unix seconds)."""

    last_any: dict[str, float] = field(default_factory=dict)
    last_by_campaign: dict[tuple[str, str], float] = field(default_factory=dict)

    def record(self, member: str, campaign: str, t_s: float) -> None:
        self.last_any[member] = max(t_s, self.last_any.get(member, t_s))
        key = (member, campaign)
        self.last_by_campaign[key] = max(t_s, self.last_by_campaign.get(key, t_s))

    def prune(self, now_s: float, keep_s: float) -> None:
        """Drop entries older than keep_s (longer than any cooldown), bounding memory and storage."""
        cutoff = now_s - keep_s
        self.last_any = {m: t for m, t in self.last_any.items() if t >= cutoff}
        self.last_by_campaign = {k: t for k, t in self.last_by_campaign.items() if t >= cutoff}


@dataclass(frozen=True, slots=True)
class OfferDecision:
    member: str
    campaign: CampaignSpec
    t_s: float


class OfferEngine:
    """Picks the highest-priority campaign the member's tier qualifies for and no cooldown blocks."""

    def __init__(self, sync: CampaignSync | None, history: OfferHistory | None = None) -> None:
        self.history = history if history is not None else OfferHistory()
        self._member_cooldown_s = 0.0
        self._campaigns: tuple[CampaignSpec, ...] = ()
        self.version = 0
        if sync is not None:
            self.replace(sync)

    def replace(self, sync: CampaignSync) -> None:
        """Adopt a new campaign set; history (and so every cooldown) carries over."""
        self._campaigns = tuple(sorted(sync.campaigns, key=lambda c: (-c.priority, c.id)))
        self._member_cooldown_s = sync.member_cooldown_s
        self.version = sync.version

    @property
    def campaigns(self) -> tuple[CampaignSpec, ...]:
        return self._campaigns

    @property
    def longest_cooldown_s(self) -> float:
        return max([self._member_cooldown_s, *(c.cooldown_s for c in self._campaigns)])

    def decide(self, member: str, tier: str, t_s: float) -> OfferDecision | None:
        """The offer for a member who just walked in, or None; records it in the history."""
        last_any = self.history.last_any.get(member)
        if last_any is not None and t_s - last_any < self._member_cooldown_s:
            return None
        for campaign in self._eligible(tier):
            last = self.history.last_by_campaign.get((member, campaign.id))
            if last is not None and t_s - last < campaign.cooldown_s:
                continue
            self.history.record(member, campaign.id, t_s)
            return OfferDecision(member, campaign, t_s)
        return None

    def _eligible(self, tier: str) -> Iterable[CampaignSpec]:
        return (c for c in self._campaigns if tier in c.tiers)
