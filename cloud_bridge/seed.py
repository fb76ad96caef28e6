"""A seeded loyalty database for the demo and tests: members, tiers, devices, a store, campaigns.

Device keys come from the same seeded generator the simulated entrance uses, so a simulated gateway with
the same seed hears exactly these members. Never use seeded keys for real shoppers: real enrollment
draws identity keys from the operating system's CSPRNG.
"""

from __future__ import annotations

import random
import sqlite3

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from edge.sim.entrance import make_members

TIERS = (("bronze", 0.6), ("silver", 0.3), ("gold", 0.1))

DEMO_CAMPAIGNS = (
    # id, title, body, tiers, cooldown_s, priority
    (
        "gold-double-points",
        "Double points today",
        "Every purchase today earns double points.",
        "gold",
        86400.0,
        30,
    ),
    (
        "silver-free-coffee",
        "A coffee on us",
        "Show this at the café for a free coffee.",
        "silver,gold",
        86400.0,
        20,
    ),
    (
        "welcome-bakery",
        "10% off the bakery",
        "Fresh bread and pastries, 10% off until noon.",
        "bronze,silver,gold",
        7 * 86400.0,
        10,
    ),
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
                "INSERT INTO devices (id, member_id, kind, identity_key, exponent, enrolled_at) "
                "VALUES (?,?,?,?,?,?)",
                (
                    device.ref,
                    device.member,
                    device.kind,
                    device.identity_key,
                    device.exponent,
                    joined_at,
                ),
            )
        await db.executemany(
            "INSERT INTO campaigns (id, store_id, title, body, tiers, cooldown_s, priority) "
            "VALUES (?, NULL, ?, ?, ?, ?, ?)",
            DEMO_CAMPAIGNS,
        )
        await db.execute(
            "INSERT INTO settings (key, value) VALUES ('member_cooldown_s', ?)", (str(4 * 3600.0),)
        )
        # Stores last, so their roster and campaign versions start at 1.
        await db.executemany(
            "INSERT INTO stores (id, name) VALUES (?, ?)",
            [(s, f"Store {s}") for s in stores],
        )
        await db.commit()
    except sqlite3.Error:
        await db.rollback()
        raise
    return members
