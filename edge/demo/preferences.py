"""What a demo member asked for, and how their shopper's app judges the offers it gets against it.

Each member's simulated app states preferences through the enrollment API
(`PUT /v1/members/{member}/preferences`, docs/enrollment-api.md; the bodies are seeded by
`cloud_bridge.seed.seed_preferences`) and then counts, from the offers it receives and its OWN stated
preferences, those that break them: the demo's proof that the gateways honour what members asked
for, judged from the shopper's side rather than the gateway's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge.core import wire

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


@dataclass(frozen=True, slots=True)
class StatedPreferences:
    """What one member told the retailer's app (empty tuples: no preference, everything)."""

    member: str
    interests: tuple[str, ...] = ()
    promotion_types: tuple[str, ...] = ()
    per_day: int = wire.MAX_OFFERS_PER_DAY
    per_week: int = wire.MAX_OFFERS_PER_WEEK
    no_offers: bool = False

    @classmethod
    def from_json(cls, member: str, body: Mapping[str, Any]) -> StatedPreferences:
        """From a `PUT /v1/members/{member}/preferences` body (trusted: the demo's own seed)."""
        no_offers = bool(body.get("no_offers", False))
        return cls(
            member,
            tuple(body["interests"]),
            tuple(body["promotion_types"]),
            0 if no_offers else int(body["max_offers_per_day"]),
            0 if no_offers else int(body["max_offers_per_week"]),
            no_offers,
        )

    def to_json(self) -> dict[str, Any]:
        """The body of `PUT /v1/members/{member}/preferences`."""
        body: dict[str, Any] = {
            "interests": list(self.interests),
            "promotion_types": list(self.promotion_types),
        }
        if self.no_offers:
            body["no_offers"] = True
        else:
            body["max_offers_per_day"] = self.per_day
            body["max_offers_per_week"] = self.per_week
        return body

    def rules_out(self, offer: wire.ShopperOffer) -> bool:
        """Whether the member's own preferences rule this offer out (the matching rule of
        docs/mqtt.md, seen from the app): "no offers", none of their interests, or a promotion type
        they did not choose (an offer of no declared type suits only "any type")."""
        if self.no_offers:
            return True
        if self.interests and offer.interests and not set(offer.interests) & set(self.interests):
            return True
        return bool(self.promotion_types) and offer.promotion_type not in self.promotion_types

    def over_cap(self, offers: Iterable[wire.ShopperOffer]) -> int:
        """How many of `offers` came beyond the member's stated frequency: more than `per_day` in
        any 24 hours or `per_week` in any 7 days, by when the gateway decided each (`detected_at`).
        An offer ruled out by "no offers" counts as against preferences, not here."""
        if self.no_offers:
            return 0
        times = sorted(o.detected_at for o in offers)
        over = 0
        for i, t in enumerate(times):
            day = sum(1 for u in times[: i + 1] if u > t - DAY_S)
            week = sum(1 for u in times[: i + 1] if u > t - WEEK_S)
            if day > self.per_day or week > self.per_week:
                over += 1
        return over
