"""A seeded loyalty database for the demo and tests: members, tiers, devices, a store, campaigns.

Device keys come from the same seeded generator the simulated entrance uses, so a simulated gateway with
the same seed hears exactly these members. Never use seeded keys for real shoppers: real enrollment
draws identity keys from the operating system's CSPRNG.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.core.preferences import DEFAULT_INTERESTS, DEFAULT_PROMOTION_TYPES
from edge.sim.entrance import make_members

TIERS = (("bronze", 0.6), ("silver", 0.3), ("gold", 0.1))


class DemoCampaign(NamedTuple):
    """A seeded campaign, in the campaigns table's terms."""

    id: str
    title: str
    body: str
    tiers: str  # comma-separated
    cooldown_s: float
    priority: int
    validity_s: float  # how long an offer the app has not confirmed is resent, then expired
    promotion_type: str
    interests: str  # comma-separated; '': a general offer, for any interest


_ALL_TIERS = "bronze,silver,gold"
_DAY_S = 86400.0

# Every promotion type, most open to every tier, several interests each, and a few general offers:
# a returning member who stated preferences still has several campaigns to rotate through.
DEMO_CAMPAIGNS = (
    DemoCampaign(
        "gold-double-points",
        "Double points today",
        "Every purchase today earns double points.",
        "gold",
        _DAY_S,
        30,
        3600.0,
        "points_multiplier",
        "",
    ),
    DemoCampaign(
        "silver-free-coffee",
        "A coffee on us",
        "Show this at the café for a free coffee.",
        "silver,gold",
        _DAY_S,
        20,
        3600.0,
        "free_gift",
        "grocery",
    ),
    DemoCampaign(
        "welcome-bakery",
        "10% off the bakery",
        "Fresh bread and pastries, 10% off until noon.",
        _ALL_TIERS,
        7 * _DAY_S,
        10,
        2 * 3600.0,
        "discount",
        "grocery",
    ),
    DemoCampaign(
        "new-season-style",
        "The new season is in",
        "New arrivals in fashion and shoes: first look on the ground floor.",
        _ALL_TIERS,
        3 * _DAY_S,
        9,
        3600.0,
        "new_arrivals",
        "womenswear,menswear,shoes,kids",
    ),
    DemoCampaign(
        "beauty-masterclass",
        "Beauty masterclass at 4 pm",
        "Join our make-up artists on the first floor; seats are free.",
        _ALL_TIERS,
        7 * _DAY_S,
        8,
        3600.0,
        "event",
        "beauty",
    ),
    DemoCampaign(
        "home-tech-sale",
        "20% off home and tech",
        "Kitchenware, lighting and headphones: 20% off today.",
        _ALL_TIERS,
        3 * _DAY_S,
        7,
        3600.0,
        "discount",
        "home,electronics",
    ),
    DemoCampaign(
        "active-triple-points",
        "Triple points on sport",
        "Triple points on sports and outdoor gear this week.",
        _ALL_TIERS,
        3 * _DAY_S,
        6,
        3600.0,
        "points_multiplier",
        "sports,outdoor",
    ),
    DemoCampaign(
        "late-night-opening",
        "Late opening tonight",
        "We are open until 10 pm, with music and tastings.",
        _ALL_TIERS,
        7 * _DAY_S,
        5,
        3600.0,
        "event",
        "",
    ),
    DemoCampaign(
        "gift-with-purchase",
        "A gift with your purchase",
        "Spend £30 today and choose a gift at the tills.",
        _ALL_TIERS,
        7 * _DAY_S,
        4,
        3600.0,
        "free_gift",
        "",
    ),
)


# Where the demo stores are (latitude, longitude): high streets of UK cities, a few hundred km apart,
# so a tag cloned between two of them shows up as impossible travel. More stores than these get none.
DEMO_LOCATIONS = (
    (51.5152, -0.1419),  # London, Oxford Street
    (53.4831, -2.2441),  # Manchester, Market Street
    (52.4797, -1.8983),  # Birmingham, New Street
    (55.8611, -4.2556),  # Glasgow, Buchanan Street
    (53.7974, -1.5438),  # Leeds, Briggate
)


def tier_for(rng: random.Random) -> str:
    x = rng.random()
    for tier, share in TIERS:
        if x < share:
            return tier
        x -= share
    return TIERS[-1][0]


async def seed_records(
    records: SqliteLoyaltyRecords,
    *,
    members: int,
    seed: int,
    stores: tuple[str, ...],
    joined_at: float,
) -> int:
    """Fill empty loyalty records; return the number of members added (0 if already seeded)."""
    db = records.connection
    async with db.execute("SELECT count(*) FROM members") as cursor:
        row = await cursor.fetchone()
    if row and row[0]:
        return 0
    rng = random.Random(f"loyalty-{seed}")
    # The chain's default vocabulary, which the campaigns name (the bridge syncs its config's
    # at start; for the demo they are the same).
    await records.sync_preference_terms(DEFAULT_INTERESTS, DEFAULT_PROMOTION_TYPES)
    try:
        for device in make_members(members, seed):
            await db.execute(
                "INSERT INTO members (id, name, tier, shopper_token, consent, joined_at) "
                "VALUES (?,?,?,?,1,?)",
                (
                    device.member,
                    f"Member {device.member[2:]}",
                    tier_for(rng),
                    rng.randbytes(12).hex(),
                    joined_at,
                ),
            )
            await db.execute(
                "INSERT INTO devices (id, member_id, kind, identity_key, sealed_key, exponent, "
                "enrolled_at) VALUES (?,?,?,zeroblob(16),?,?,?)",
                (
                    device.ref,
                    device.member,
                    device.kind,
                    records.seal_identity_key(device.ref, device.identity_key),
                    device.exponent,
                    joined_at,
                ),
            )
        await db.executemany(
            "INSERT INTO campaigns (id, store_id, title, body, tiers, cooldown_s, priority, "
            "validity_s, promotion_type, interests) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
            DEMO_CAMPAIGNS,
        )
        await db.execute(
            "INSERT INTO settings (key, value) VALUES ('member_cooldown_s', ?)", (str(4 * 3600.0),)
        )
        # Stores last, so their roster and campaign versions start at 1.
        located = [*DEMO_LOCATIONS, *[(None, None)] * max(0, len(stores) - len(DEMO_LOCATIONS))]
        await db.executemany(
            "INSERT INTO stores (id, name, latitude, longitude) VALUES (?, ?, ?, ?)",
            [(s, f"Store {s}", *where) for s, where in zip(stores, located, strict=False)],
        )
        await db.commit()
    except sqlite3.Error:
        await db.rollback()
        raise
    return members


def seed_preferences(member_ids: Iterable[str], seed: int) -> dict[str, dict[str, Any]]:
    """What the demo's shopper apps state (`PUT /v1/members/{member}/preferences` bodies), by
    member: about 70 % of members state preferences, some of them "no offers", several at most
    one offer a day. Deterministic in `seed` and each member's id (not in the order given).

    The seed does not store them: the simulated apps send them through the API, as real ones do.
    """
    stated: dict[str, dict[str, Any]] = {}
    for member in member_ids:
        rng = random.Random(f"prefs-{seed}-{member}")
        if rng.random() >= 0.7:
            continue  # states nothing: every campaign of their tier
        interests = rng.sample(DEFAULT_INTERESTS, rng.choice((0, 1, 2, 2, 3, 3, 4)))
        promotion_types = rng.sample(DEFAULT_PROMOTION_TYPES, rng.choice((0, 1, 2, 2, 3)))
        body: dict[str, Any] = {"interests": interests, "promotion_types": promotion_types}
        kind = rng.random()
        if kind < 0.1:
            body["no_offers"] = True  # still recognised and counted, never offered anything
        elif kind < 0.4:
            body["max_offers_per_day"] = 1
            body["max_offers_per_week"] = rng.choice((1, 2, 3, 5))
        else:
            body["max_offers_per_day"] = rng.choice((2, 3, 5))
            body["max_offers_per_week"] = rng.choice((5, 7, 10, 20))
        stated[member] = body
    return stated
