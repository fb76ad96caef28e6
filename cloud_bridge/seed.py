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
    # id, title, body, tiers, cooldown_s, priority, validity_s (how long an offer the app has not
    # confirmed is resent before it is recorded expired)
    (
        "gold-double-points",
        "Double points today",
        "Every purchase today earns double points.",
        "gold",
        86400.0,
        30,
        3600.0,
    ),
    (
        "silver-free-coffee",
        "A coffee on us",
        "Show this at the café for a free coffee.",
        "silver,gold",
        86400.0,
        20,
        3600.0,
    ),
    (
        "welcome-bakery",
        "10% off the bakery",
        "Fresh bread and pastries, 10% off until noon.",
        "bronze,silver,gold",
        7 * 86400.0,
        10,
        2 * 3600.0,
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
            "validity_s) VALUES (?, NULL, ?, ?, ?, ?, ?, ?)",
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
