"""The report on a year of history for 100 stores (issue 11: under 5 s on SQLite).

    python -m benchmarks.report_bench [--quick] [--keep DIR]

The history (seeded, written with executemany in one transaction, straight into a loyalty database
made by the bridge's own migrations):
- 100 stores in 8 time zones (the Americas, Europe, India at +05:30, Sydney), open 08:00-21:00 local;
- 60,000 members, each with a home store and a visit rate drawn so that a few come weekly and most
  now and then (about 13 visits a member a year);
- 22 member visits per store per day on average (a detected loyalty member with the app or a tag,
  not every shopper; Saturdays busiest, December a quarter busier): about 820,000 visits a year,
  85 % of them with a visit end (time in store, lognormal, median about 20 minutes);
- 12 campaigns, 10 % holdout; an offer at one visit in 8 (about 100,000), in every delivery state
  and both channels; 12 % of the offers sent are redeemed.
`--quick`: 20 stores, the same per-store volume. The report is timed as `cloud-bridge report --json`
does it: build the report over the whole year, then encode it as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.adapters.sqlite_report import build_report
from cloud_bridge.core.report import ReportQuery, parse_bound

REPORT_TARGETS = {
    "report_s_year_100_stores": "< 5 (cloud-bridge report --json, a year, 100 stores)"
}
ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Sydney",
)
YEAR = 2025
DAYS = 365
VISITS_PER_STORE_DAY = 22
#: Monday to Sunday: quiet early in the week, busiest on Saturday (mean 1.0).
WEEKDAY_FACTORS = (0.8, 0.85, 0.9, 1.0, 1.15, 1.35, 0.95)
MEMBERS_PER_STORE = 600
CAMPAIGNS = 12
OFFER_SHARE = 1 / 8
HOLDOUT_PCT = 10.0
STATES = (("received", 0.45), ("expired", 0.2), ("sent", 0.2), ("dead", 0.05), ("pending", 0.02))


def seed_year(path: Path, stores: int, seed: int = 11) -> dict[str, int]:
    """Write the history described above into a new loyalty database at `path`; its row counts."""

    async def create() -> None:
        records = await SqliteLoyaltyRecords.open(path, "bench", create=True)
        await records.close()

    asyncio.run(create())
    rng = random.Random(seed)
    store_rows = [(f"s{i:03d}", f"Store {i}", ZONES[i % len(ZONES)]) for i in range(stores)]
    members: list[tuple[str, float, int]] = []  # id, weight, home store
    for s in range(stores):
        for k in range(MEMBERS_PER_STORE):
            members.append((f"m{s:03d}-{k:04d}", rng.paretovariate(1.5), s))
    by_store: list[list[str]] = [[] for _ in range(stores)]
    weights: list[list[float]] = [[] for _ in range(stores)]
    for member, weight, home in members:
        by_store[home].append(member)
        weights[home].append(weight)
    cumulative = [list(_accumulate(w)) for w in weights]
    visits: list[tuple[Any, ...]] = []
    ends: list[tuple[Any, ...]] = []
    offers: list[tuple[Any, ...]] = []
    redemptions: list[tuple[Any, ...]] = []
    n = 0
    for s, (store, _, zone_name) in enumerate(store_rows):
        zone = ZoneInfo(zone_name)
        for day in range(DAYS):
            local_day = datetime(YEAR, 1, 1) + timedelta(days=day)
            season = 1.25 if local_day.month == 12 else 1.0
            busy = WEEKDAY_FACTORS[local_day.weekday()] * season
            for _ in range(round(VISITS_PER_STORE_DAY * busy)):
                n += 1
                member = rng.choices(by_store[s], cum_weights=cumulative[s])[0]
                local = local_day + timedelta(seconds=rng.randrange(8 * 3600, 21 * 3600))
                ts = local.replace(tzinfo=zone).timestamp()
                visit = f"v{n}"
                device = f"d-{member}"
                visits.append((visit, member, device, store, "g1", ts, ts, ts + 0.2, -60.0))
                if rng.random() < 0.85:
                    duration = min(rng.lognormvariate(math.log(1200), 0.6), 4 * 3600)
                    ends.append(
                        (visit, f"e{n}", member, device, store, "g1", ts, ts + duration, duration)
                    )
                if rng.random() < OFFER_SHARE:
                    _offer(rng, offers, redemptions, n, visit, member, store, ts)
    campaign_rows = [
        (f"c{i:02d}", f"Campaign {i}", "Body", "bronze,silver,gold", 86400.0, i, HOLDOUT_PCT)
        for i in range(CAMPAIGNS)
    ]
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany("INSERT INTO stores (id, name, timezone) VALUES (?, ?, ?)", store_rows)
            db.executemany(
                "INSERT INTO campaigns (id, title, body, tiers, cooldown_s, priority, holdout_pct) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                campaign_rows,
            )
            db.executemany(
                "INSERT INTO visits (event_id, member_id, device_id, store_id, gateway, ts, "
                "detected_at, recorded_at, rssi_dbm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                visits,
            )
            db.executemany(
                "INSERT INTO visit_ends (visit_id, event_id, member_id, device_id, store_id, "
                "gateway, entered_at, ended_at, duration_s, reason, detected_at, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'timeout', ?8, ?8)",
                ends,
            )
            db.executemany(
                "INSERT INTO offers (event_id, visit_id, member_id, campaign_id, store_id, "
                "gateway, ts, detected_at, recorded_at, delivery, channel, sent_at, received_at, "
                "opened_at, dismissed_at) VALUES (?, ?, ?, ?, ?, 'g1', ?, ?6, ?6, ?, ?, ?, ?, ?, ?)",
                offers,
            )
            db.executemany(
                "INSERT INTO redemptions (offer_id, code, store_id, source, redeemed_at, "
                "recorded_at) VALUES (?, NULL, ?, 'pos', ?, ?3)",
                redemptions,
            )
    finally:
        db.close()
    return {
        "stores": stores,
        "members": len(members),
        "visits": len(visits),
        "visit_ends": len(ends),
        "offers": len(offers),
        "redemptions": len(redemptions),
    }


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def _offer(
    rng: random.Random,
    offers: list[tuple[Any, ...]],
    redemptions: list[tuple[Any, ...]],
    n: int,
    visit: str,
    member: str,
    store: str,
    ts: float,
) -> None:
    campaign = f"c{rng.randrange(CAMPAIGNS):02d}"
    offer = f"o{n}"
    channel = "webhook" if rng.random() < 0.5 else "mqtt"
    # The holdout is per (campaign, member), as the bridge decides it.
    if _in_holdout(campaign, member):
        offers.append((offer, visit, member, campaign, store, ts, "holdout", channel) + (None,) * 4)
        return
    if rng.random() < 0.03:
        offers.append(
            (offer, visit, member, campaign, store, ts, "suppressed", channel) + (None,) * 4
        )
        return
    r = rng.random()
    delivery = "pending"
    for state, share in STATES:
        if r < share:
            delivery = state
            break
        r -= share
    sent = None if delivery in ("pending", "dead") else ts + 1.0
    received = ts + 5.0 if delivery == "received" else None
    opened = ts + 60.0 if received is not None and rng.random() < 0.5 else None
    dismissed = (
        ts + 90.0 if received is not None and opened is None and rng.random() < 0.3 else None
    )
    offers.append(
        (
            offer,
            visit,
            member,
            campaign,
            store,
            ts,
            delivery,
            channel,
            sent,
            received,
            opened,
            dismissed,
        )
    )
    if sent is not None and rng.random() < 0.12:
        redemptions.append((offer, store, ts + 1800.0))


def _in_holdout(campaign: str, member: str) -> bool:
    """The bridge's deterministic holdout rule (the shared design; cloud_bridge/core/holdout.py)."""
    digest = hashlib.sha256(f"threshold-holdout:{campaign}:{member}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100 < HOLDOUT_PCT


def time_report(path: Path) -> float:
    """Seconds to build the whole year's report and encode it as JSON."""
    query = ReportQuery(
        parse_bound(f"{YEAR}-01-01", "from", end=False),
        parse_bound(f"{YEAR}-12-31", "to", end=True),
    )
    start = time.perf_counter()
    report = build_report(path, query, now=datetime(YEAR + 1, 2, 1).timestamp())
    json.dumps(report.to_json())
    return time.perf_counter() - start


def report_results(quick: bool = False, keep: Path | None = None) -> dict[str, Any]:
    stores = 20 if quick else 100
    with tempfile.TemporaryDirectory(prefix="threshold-report-") as tmp:
        path = (keep or Path(tmp)) / "loyalty.db"
        start = time.perf_counter()
        counts = seed_year(path, stores)
        seed_s = time.perf_counter() - start
        elapsed = time_report(path)
    key = "report_s_year_100_stores" if not quick else "report_s_year_20_stores"
    return {
        key: round(elapsed, 3),
        "report_visits_per_s": round(counts["visits"] / elapsed),
        "report_history": counts,
        "report_seed_s": round(seed_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the seeded database in this directory")
    args = parser.parse_args()
    print(json.dumps(report_results(args.quick, args.keep), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
