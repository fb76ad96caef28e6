"""A seeded loyalty history whose report is known by construction (issue 11's "report's figures
checked against a seeded history whose answers are known").

Every visit is designed as (member, store, LOCAL wall time); the generator turns it into the
instant the database stores with the store's zone. The expected figures are counted here from the
design itself (local dates and hours as designed, members as designed, outcomes as designed), never
by calling cloud_bridge/core/report.py or the SQL adapter.

The campaign `c-hold` is built so that its lift is Newcombe's (1998) worked example: 70 members
offered it, 56 of whom come back within 30 days, against 80 held out, 48 of whom come back.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords

#: ny changes from EDT to EST on 2026-11-01 (02:00 -> 01:00); berlin from CEST to CET on
#: 2026-10-25 (03:00 -> 02:00); delhi is +05:30 all year.
STORES = {"ny": "America/New_York", "berlin": "Europe/Berlin", "delhi": "Asia/Kolkata"}
PERIOD_FROM = date(2026, 10, 20)
PERIOD_TO = date(2026, 11, 10)  # inclusive: the period ends at 2026-11-11T00:00 local
NOW = datetime(2027, 1, 1).timestamp()  # every 30-day window has ended
RETURN_DAYS = 30
HOSTILE_TITLE = '<script>alert(1)</script> & =HYPERLINK("http://evil") <img src=x>'
DAY = timedelta(days=1)


@dataclass(frozen=True)
class DesignedVisit:
    id: str
    member: str
    store: str
    local: datetime  # naive wall time at the store
    duration_s: float | None  # None: no visit end recorded

    @property
    def ts(self) -> float:
        return self.local.replace(tzinfo=ZoneInfo(STORES[self.store])).timestamp()

    @property
    def in_period(self) -> bool:
        return PERIOD_FROM <= self.local.date() <= PERIOD_TO

    @property
    def before_period(self) -> bool:
        return self.local.date() < PERIOD_FROM


@dataclass(frozen=True)
class DesignedOffer:
    id: str
    visit: DesignedVisit
    campaign: str
    delivery: str
    channel: str = "mqtt"
    sent: bool = False
    received: bool = False
    opened: bool = False
    dismissed: bool = False
    redeemed: bool = False


@dataclass
class History:
    visits: list[DesignedVisit] = field(default_factory=list)
    offers: list[DesignedOffer] = field(default_factory=list)
    #: Visit ends that must NOT count: an end naming another member, an end without its visit.
    stray_ends: list[tuple[Any, ...]] = field(default_factory=list)
    campaigns: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> title, pct
    _n: int = 0

    def visit(
        self, member: str, store: str, local: datetime, duration_s: float | None = 1200.0
    ) -> DesignedVisit:
        self._n += 1
        v = DesignedVisit(f"v{self._n:05d}", member, store, local, duration_s)
        self.visits.append(v)
        return v

    def offer(self, visit: DesignedVisit, campaign: str, delivery: str, **flags: Any) -> None:
        self._n += 1
        self.offers.append(DesignedOffer(f"o{self._n:05d}", visit, campaign, delivery, **flags))


# --- the design ---------------------------------------------------------------------------------


def build_history(seed: int = 20261101) -> History:
    """The whole designed history (deterministic)."""
    rng = random.Random(seed)
    h = History()
    h.campaigns = {
        "c-hold": ("Double points on your next visit", 50.0),
        "c-plain": ("Free coffee", 0.0),
        "c-hostile": (HOSTILE_TITLE, 10.0),
    }
    # DST edges: the hour after the change must use the new offset.
    h.visit("m-dst-1", "ny", datetime(2026, 10, 31, 23, 30), 600.0)  # EDT: 03:30Z Nov 1
    h.visit("m-dst-1", "ny", datetime(2026, 11, 1, 0, 30), 900.0)  # EDT
    h.visit("m-dst-1", "ny", datetime(2026, 11, 1, 23, 30), 1500.0)  # EST: 04:30Z Nov 2
    h.visit("m-dst-2", "ny", datetime(2026, 11, 1, 3, 15), 2400.0)  # EST, after the repeat
    h.visit("m-dst-2", "berlin", datetime(2026, 10, 25, 3, 30), 300.0)  # CET, just after
    h.visit("m-dst-2", "berlin", datetime(2026, 10, 24, 23, 45), 3000.0)  # CEST
    h.visit("m-dst-3", "delhi", datetime(2026, 10, 20, 0, 10), 4000.0)  # 18:40Z Oct 19
    h.visit("m-dst-3", "delhi", datetime(2026, 11, 10, 23, 50), 8000.0)  # last minutes
    h.visit("m-dst-3", "delhi", datetime(2026, 11, 11, 0, 5), 700.0)  # just after the period
    # Period edges at ny: the minute before and the day after.
    h.visit("m-edge", "ny", datetime(2026, 10, 19, 23, 59), 100.0)  # before: m-edge returns
    h.visit("m-edge", "ny", datetime(2026, 10, 20, 0, 0), 100.0)  # first minute of the period
    # Regulars and occasional members, at random hours and days (the answers are counted from
    # these same designed rows below). A quarter of them visited before the period.
    for k in range(60):
        member = f"m-reg-{k:02d}"
        home = ("ny", "berlin", "delhi")[k % 3]
        if k % 4 == 0:
            h.visit(member, home, _local(rng, date(2026, 9, 1), 40), _duration(rng))
        for _ in range(1 + k % 7):
            store = home if rng.random() < 0.8 else rng.choice(tuple(STORES))
            h.visit(member, store, _local(rng, PERIOD_FROM, 22), _duration(rng))
        if k % 5 == 0:  # after the period: only a come-back window sees these
            h.visit(member, home, _local(rng, PERIOD_TO + 2 * DAY, 20), _duration(rng))
    # c-hold: Newcombe's example. Treatment 70 (56 come back within 30 days), control 80 (48).
    states = ("sent", "received", "expired", "dead", "pending")
    for k in range(150):
        control = k >= 70
        member = f"m-hold-{k:03d}"
        store = ("ny", "berlin", "delhi")[k % 3]
        decided = h.visit(member, store, _local(rng, PERIOD_FROM, 21), _duration(rng))
        returns = k < 56 if not control else k - 70 < 48
        if returns:
            # Within (0, 30 days]: k % 4 == 0 exactly at 30 days, otherwise 1 h .. 29 days later.
            gap = timedelta(days=30) if k % 4 == 0 else timedelta(hours=1 + rng.randrange(29 * 24))
            other = ("ny", "berlin", "delhi")[(k + 1) % 3]
            back_at = _same_instant_at(decided, store, other, gap)
            h.visit(member, other, back_at, _duration(rng))
        elif k % 3 == 0:  # came back, but too late (30 days and one minute after)
            late = _same_instant_at(decided, store, store, timedelta(days=30, minutes=1))
            h.visit(member, store, late, None)
        if control:
            h.offer(decided, "c-hold", "holdout", channel=("mqtt", "webhook")[k % 2])
            if k % 10 == 0:  # a second decision for the same member: still one subject
                h.offer(decided, "c-hold", "holdout")
            continue
        delivery = states[k % len(states)]
        sent = delivery in ("sent", "received", "expired")
        received = delivery == "received"
        opened = received and k % 2 == 0
        dismissed = received and not opened and k % 3 == 0
        redeemed = sent and k % 4 == 1
        h.offer(
            decided,
            "c-hold",
            delivery,
            channel=("mqtt", "webhook")[k % 2],
            sent=sent,
            received=received,
            opened=opened,
            dismissed=dismissed,
            redeemed=redeemed,
        )
        if k % 7 == 0:  # suppressed decisions: counted in the funnel, not in the lift
            h.offer(decided, "c-hold", "suppressed")
    # c-plain: offers with no holdout at all -> "not enough data" for its lift.
    for k, v in enumerate(x for x in h.visits if x.member.startswith("m-reg-") and x.in_period):
        if k % 6 == 0:
            h.offer(v, "c-plain", "received", sent=True, received=True, opened=k % 12 == 0)
    # c-hostile: one offer, one redemption, a marketer's hostile title.
    h.offer(h.visits[0], "c-hostile", "sent", sent=True, redeemed=True, channel="webhook")
    # An end that names another member, and an end with no visit: neither is a visit's time.
    target = next(v for v in h.visits if v.duration_s is None and v.in_period)
    h.stray_ends.append(("v-ghost", "e-ghost", "m-nobody", "d-x", "ny", 999999.0))
    h.stray_ends.append((target.id, "e-wrong", "m-else", "d-x", target.store, 5.0))
    return h


def _local(rng: random.Random, start: date, days: int) -> datetime:
    """A designed local time in [start, start + days), 07:00-21:59, away from DST repeats."""
    day = start + timedelta(days=rng.randrange(days))
    return datetime(day.year, day.month, day.day, 7 + rng.randrange(15), rng.randrange(60))


def _duration(rng: random.Random) -> float | None:
    return None if rng.random() < 0.15 else float(rng.randrange(60, 3 * 3600))


def _same_instant_at(visit: DesignedVisit, store: str, other: str, gap: timedelta) -> datetime:
    """The local wall time at `other` of `gap` after `visit` (designed as an instant)."""
    instant = visit.ts + gap.total_seconds()
    return datetime.fromtimestamp(instant, ZoneInfo(STORES[other])).replace(tzinfo=None)


# --- writing it ---------------------------------------------------------------------------------


async def write_history(path: Path, h: History) -> None:
    """A loyalty database made by the bridge's migrations, holding the history (one transaction)."""
    records = await SqliteLoyaltyRecords.open(path, "acme", create=True)
    await records.close()
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany(
                "INSERT INTO stores (id, name, timezone) VALUES (?, ?, ?)",
                [(s, f"Store {s}", zone) for s, zone in STORES.items()],
            )
            db.executemany(
                "INSERT INTO campaigns (id, title, body, tiers, cooldown_s, priority, holdout_pct)"
                " VALUES (?, ?, 'body', 'gold', 3600, 1, ?)",
                [(c, title, pct) for c, (title, pct) in h.campaigns.items()],
            )
            db.executemany(
                "INSERT INTO visits (event_id, member_id, device_id, store_id, gateway, ts, "
                "detected_at, recorded_at, rssi_dbm) VALUES (?, ?, ?, ?, 'g1', ?, ?5, ?5, -60)",
                [(v.id, v.member, "d-" + v.member, v.store, v.ts) for v in h.visits],
            )
            db.executemany(
                "INSERT INTO visit_ends (visit_id, event_id, member_id, device_id, store_id, "
                "gateway, entered_at, ended_at, duration_s, reason, detected_at, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, 'g1', ?, ?6 + ?7, ?7, 'timeout', ?6, ?6)",
                [
                    (v.id, "e" + v.id, v.member, "d-" + v.member, v.store, v.ts, v.duration_s)
                    for v in h.visits
                    if v.duration_s is not None
                ]
                + [(*e[:5], 1.0e9, e[5]) for e in h.stray_ends],
            )
            db.executemany(
                "INSERT INTO offers (event_id, visit_id, member_id, campaign_id, store_id, "
                "gateway, ts, detected_at, recorded_at, delivery, channel, sent_at, "
                "received_at, opened_at, dismissed_at) "
                "VALUES (?, ?, ?, ?, ?, 'g1', ?, ?6, ?6, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        o.id,
                        o.visit.id,
                        o.visit.member,
                        o.campaign,
                        o.visit.store,
                        o.visit.ts + 2.0,
                        o.delivery,
                        o.channel,
                        o.visit.ts + 3.0 if o.sent else None,
                        o.visit.ts + 4.0 if o.received else None,
                        o.visit.ts + 5.0 if o.opened else None,
                        o.visit.ts + 6.0 if o.dismissed else None,
                    )
                    for o in h.offers
                ],
            )
            db.executemany(
                "INSERT INTO redemptions (offer_id, code, store_id, source, redeemed_at, "
                "recorded_at) VALUES (?, NULL, ?, 'pos', ?, ?3)",
                [(o.id, o.visit.store, o.visit.ts + 600) for o in h.offers if o.redeemed],
            )
    finally:
        db.close()


# --- the answers, counted from the design -------------------------------------------------------


def expected_by_day(h: History, stores: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """store -> local date -> visits (only dates with visits)."""
    out: dict[str, dict[str, int]] = {}
    for v in h.visits:
        if v.in_period and (not stores or v.store in stores):
            days = out.setdefault(v.store, {})
            days[v.local.date().isoformat()] = days.get(v.local.date().isoformat(), 0) + 1
    return out


def expected_by_hour(h: History, store: str) -> list[int]:
    hours = [0] * 24
    for v in h.visits:
        if v.in_period and v.store == store:
            hours[v.local.hour] += 1
    return hours


@dataclass(frozen=True)
class ExpectedMembers:
    unique: int
    returning: int
    visits: int
    counts: tuple[int, ...]  # visits per member, sorted
    eligible: int
    came_back: int


def expected_members(
    h: History, stores: tuple[str, ...] = (), now: float = NOW, days: int = RETURN_DAYS
) -> ExpectedMembers:
    selected = [v for v in h.visits if not stores or v.store in stores]
    per_member: dict[str, list[DesignedVisit]] = {}
    for v in selected:
        per_member.setdefault(v.member, []).append(v)
    unique = returning = eligible = came_back = 0
    counts = []
    for visits in per_member.values():
        inside = [v for v in visits if v.in_period]
        if not inside:
            continue
        unique += 1
        counts.append(len(inside))
        returning += any(v.before_period for v in visits)
        first = min(v.ts for v in inside)
        if first + days * 86400 <= now:
            eligible += 1
            came_back += any(first < v.ts <= first + days * 86400 for v in visits)
    return ExpectedMembers(
        unique, returning, sum(counts), tuple(sorted(counts)), eligible, came_back
    )


def expected_durations(h: History, store: str | None = None) -> list[float]:
    return sorted(
        v.duration_s
        for v in h.visits
        if v.in_period and v.duration_s is not None and (store is None or v.store == store)
    )


def nearest_rank(values: list[float], pct: float) -> float:
    return values[max(1, math.ceil(pct / 100 * len(values))) - 1]


def expected_funnel(h: History, campaign: str) -> dict[str, Any]:
    offers = [o for o in h.offers if o.campaign == campaign and o.visit.in_period]
    states = Counter(o.delivery for o in offers)
    return {
        "decided": len(offers),
        "sent": sum(o.sent for o in offers),
        "received": sum(o.received for o in offers),
        "opened": sum(o.opened for o in offers),
        "dismissed": sum(o.dismissed for o in offers),
        "redeemed": sum(o.redeemed for o in offers),
        "states": dict(states),
        "channels": Counter(o.channel for o in offers),
    }
