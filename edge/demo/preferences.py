"""What the demo's members ask for, and how a shopper's app judges the offers it gets against it.

Each member's simulated app states preferences through the enrollment API
(`PUT /v1/members/{member}/preferences`, docs/enrollment-api.md) and then counts, from the offers it
receives and its OWN stated preferences, those that break them: the demo's proof that the gateways
honour what members asked for, judged from the shopper's side rather than the gateway's.

Seeded: the same seed and members always state the same preferences. About 70 % of members state
any; of those a few want no offers at all, most name one to three interests and up to three
promotion types (none: "everything"), and a third want at most one offer a day.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from edge.core import wire

# The chain's default vocabulary (the bridge's `[preferences]`): the demo's members choose from it.
DEMO_INTERESTS = (
    "womenswear",
    "menswear",
    "kids",
    "shoes",
    "beauty",
    "home",
    "electronics",
    "grocery",
    "sports",
    "outdoor",
)
DEMO_PROMOTION_TYPES = ("discount", "points_multiplier", "new_arrivals", "event", "free_gift")

STATED_SHARE = 0.7  # members who state preferences at all
NO_OFFERS_SHARE = 0.08  # of those: "no offers", visits still recorded
ONE_A_DAY_SHARE = 0.33  # of those who want offers: at most one a day
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


def seed_preferences(
    members: Sequence[str],
    seed: int,
    interests: Sequence[str] = DEMO_INTERESTS,
    promotion_types: Sequence[str] = DEMO_PROMOTION_TYPES,
) -> dict[str, StatedPreferences]:
    """The preferences the demo's members state, by member (members who state none are absent)."""
    rng = random.Random(f"threshold-demo-preferences-{seed}")
    stated: dict[str, StatedPreferences] = {}
    for member in sorted(members):
        if rng.random() >= STATED_SHARE:
            continue
        if rng.random() < NO_OFFERS_SHARE:
            stated[member] = StatedPreferences(member, per_day=0, per_week=0, no_offers=True)
            continue
        chosen_interests = rng.sample(
            list(interests), min(len(interests), rng.choices((0, 1, 2, 3), (25, 30, 30, 15))[0])
        )
        chosen_types = rng.sample(
            list(promotion_types),
            min(len(promotion_types), rng.choices((0, 1, 2, 3), (35, 35, 20, 10))[0]),
        )
        per_day = 1 if rng.random() < ONE_A_DAY_SHARE else rng.randint(2, 5)
        per_week = min(wire.MAX_OFFERS_PER_WEEK, per_day * rng.randint(2, 5))
        stated[member] = StatedPreferences(
            member,
            tuple(sorted(chosen_interests)),
            tuple(sorted(chosen_types)),
            per_day,
            per_week,
        )
    return stated
