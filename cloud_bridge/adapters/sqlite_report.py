"""The report's queries over the loyalty database, read-only (`file:...?mode=ro`): never creates,
migrates or writes it, so a report can run beside the bridge (WAL readers do not block its writer).

The heavy figures are aggregated in SQL (visits per store per local hour, one row per member, per
campaign/channel/delivery state, per lift subject); cloud_bridge/core/report.py turns the rows into
the report. A year of 100 stores reports in a few seconds (benchmarks/report_bench.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

from cloud_bridge.core.report import (
    DAY_S,
    CampaignInfo,
    InvalidReportQuery,
    LiftSubject,
    MemberVisits,
    OfferTally,
    Report,
    ReportQuery,
    StoreInfo,
    StoreVisits,
    TimeInStore,
    campaign_reports,
    members_figures,
    offset_spans,
    store_visits,
    time_in_store,
    usable_store,
)
from cloud_bridge.errors import RecordsError

#: The first schema with everything the report reads (stores.timezone, offers' states,
#: redemptions). The covering indices that make it fast come with the next migration (12).
MIN_SCHEMA_VERSION = 11
_LOYALTY_APPLICATION_ID = 0x54485242  # edge/adapters/sqlite_db.py LOYALTY_APPLICATION_ID
BUSY_TIMEOUT_S = 10.0

# A visit counts once its end is there for the same member, device and store (the view
# visit_times); an end alone, or one naming another member, is not a visit's time.
_DURATIONS = """
SELECT e.duration_s FROM visits v JOIN visit_ends e ON e.visit_id = v.event_id
    AND e.member_id = v.member_id AND e.device_id = v.device_id AND e.store_id = v.store_id
WHERE v.store_id = ? AND v.ts >= ? AND v.ts < ?
"""
_SENT = (
    "(o.sent_at IS NOT NULL OR o.received_at IS NOT NULL OR o.opened_at IS NOT NULL "
    "OR o.dismissed_at IS NOT NULL OR o.delivery = 'received')"
)
_RECEIVED = (
    "(o.received_at IS NOT NULL OR o.opened_at IS NOT NULL OR o.dismissed_at IS NOT NULL "
    "OR o.delivery = 'received')"
)


@contextmanager
def open_read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """The loyalty database at `path`, read-only; RecordsError (one line) if it is not there, not a
    loyalty database, or older than MIN_SCHEMA_VERSION. Never creates a file."""
    if not path.is_file():
        raise RecordsError(f"{path}: no loyalty database there; check the path")
    try:
        db = sqlite3.connect(
            f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S
        )
    except sqlite3.Error as exc:
        raise RecordsError(f"{path}: cannot open the loyalty database read-only: {exc}") from exc
    with closing(db):
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise RecordsError(f"{path}: not a loyalty database ({exc}); check the path") from exc
        if app_id not in (0, _LOYALTY_APPLICATION_ID) or version == 0:
            raise RecordsError(f"{path}: not a loyalty database; check the path")
        if version < MIN_SCHEMA_VERSION:
            raise RecordsError(
                f"{path}: the loyalty database has schema version {version}; the report needs "
                f"{MIN_SCHEMA_VERSION} or newer: start the bridge once to migrate it"
            )
        yield db


def build_report(path: Path, query: ReportQuery, now: float) -> Report:
    """The report of `query` over the loyalty database at `path`, as of `now` (Unix seconds).

    Raises InvalidReportQuery (an unknown store or campaign, naming it) or RecordsError."""
    with open_read_only(path) as db:
        try:
            return _build(db, query, now)
        except sqlite3.Error as exc:
            raise RecordsError(f"{path}: cannot read the loyalty database: {exc}") from exc


def _build(db: sqlite3.Connection, query: ReportQuery, now: float) -> Report:
    stores = _stores(db, query.stores)
    campaigns = _campaigns(db, query.campaigns)
    bounds: dict[str, tuple[float, float]] = {}
    visits: list[StoreVisits] = []
    durations: list[TimeInStore] = []
    every_duration: list[float] = []
    by_hour = [0] * 24
    for store in stores:
        zone = ZoneInfo(store.timezone)
        first_row = db.execute("SELECT MIN(ts) FROM visits WHERE store_id = ?", (store.id,))
        first = first_row.fetchone()[0]
        start, end = query.bounds(zone, now, now if first is None else float(first))
        bounds[store.id] = (start, end)
        hours = _hour_counts(db, store.id, zone, start, end, first)
        report = store_visits(store, start, end, hours)
        visits.append(report)
        by_hour = [a + b for a, b in zip(by_hour, report.by_hour, strict=True)]
        values = [row[0] for row in db.execute(_DURATIONS, (store.id, start, end))]
        every_duration.extend(values)
        durations.append(time_in_store(store.id, values))
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS report_bounds "
        "(store_id TEXT PRIMARY KEY, t0 REAL NOT NULL, t1 REAL NOT NULL)"
    )
    db.execute("DELETE FROM temp.report_bounds")
    db.executemany(
        "INSERT INTO temp.report_bounds VALUES (?, ?, ?)",
        [(store, t0, t1) for store, (t0, t1) in bounds.items()],
    )
    every_store = not query.stores
    members = members_figures(_members(db, every_store), now, query.return_days)
    tallies = _tallies(db, query.campaigns)
    subjects = _subjects(db, query.campaigns, query.return_days)
    return Report(
        query,
        now,
        tuple(visits),
        members,
        (time_in_store("", every_duration), *durations),
        campaign_reports(campaigns, tallies, subjects, now, query.return_days),
        tuple(by_hour),
    )


def _stores(db: sqlite3.Connection, wanted: Sequence[str]) -> list[StoreInfo]:
    rows = db.execute("SELECT id, name, timezone FROM stores ORDER BY id").fetchall()
    stores = [StoreInfo(str(i), str(n), str(tz)) for i, n, tz in rows]
    known = {s.id for s in stores}
    for store in wanted:
        if store not in known:
            raise InvalidReportQuery(
                "store", f"no store {store[:64]!r} in the loyalty database; check the store id"
            )
    return [usable_store(s) for s in stores if not wanted or s.id in wanted]


def _campaigns(db: sqlite3.Connection, wanted: Sequence[str]) -> list[CampaignInfo]:
    rows = db.execute("SELECT id, title, holdout_pct, status FROM campaigns ORDER BY id").fetchall()
    campaigns = [CampaignInfo(str(i), str(t), float(h), str(s)) for i, t, h, s in rows]
    known = {c.id for c in campaigns}
    for campaign in wanted:
        if campaign not in known:
            raise InvalidReportQuery(
                "campaign",
                f"no campaign {campaign[:64]!r} in the loyalty database; "
                "`cloud-bridge campaign list` shows them",
            )
    return [c for c in campaigns if not wanted or c.id in wanted]


def _hour_counts(
    db: sqlite3.Connection,
    store: str,
    zone: ZoneInfo,
    start: float,
    end: float,
    first: float | None,
) -> list[tuple[int, int]]:
    """Visits per local hour (hours since 1970-01-01T00:00 local), one range scan of the index
    visits_store per span of constant UTC offset."""
    if first is None:
        return []
    counts: list[tuple[int, int]] = []
    for t0, t1, offset in offset_spans(zone, max(start, float(first)), end):
        rows = db.execute(
            "SELECT (CAST(ts + ? AS INTEGER)) / 3600 AS h, COUNT(*) FROM visits "
            "WHERE store_id = ? AND ts >= ? AND ts < ? GROUP BY h",
            (offset, store, t0, t1),
        )
        counts.extend(rows)
    return counts


def _members(db: sqlite3.Connection, every_store: bool) -> list[MemberVisits]:
    """One row per member with a visit in the period at a selected store: visits in it, the first,
    whether they visited a selected store before it, and their next visit after the first."""
    where_next = (
        "" if every_store else "AND n.store_id IN (SELECT store_id FROM temp.report_bounds)"
    )
    rows = db.execute(
        f"""
        WITH m AS (
            SELECT v.member_id AS member_id,
                SUM(v.ts >= b.t0) AS visits,
                MIN(CASE WHEN v.ts >= b.t0 THEN v.ts END) AS first_ts,
                SUM(v.ts < b.t0) > 0 AS before
            FROM visits v JOIN temp.report_bounds b ON b.store_id = v.store_id
            WHERE v.ts < b.t1
            GROUP BY v.member_id
        )
        SELECT member_id, visits, first_ts, before,
            (SELECT n.ts FROM visits n WHERE n.member_id = m.member_id AND n.ts > m.first_ts
                {where_next} ORDER BY n.ts LIMIT 1)
        FROM m WHERE visits > 0
        """
    )
    return [
        MemberVisits(str(member), int(n), float(first), bool(before), None if nxt is None else nxt)
        for member, n, first, before, nxt in rows
    ]


def _campaign_filter(campaigns: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    if not campaigns:
        return "", ()
    marks = ", ".join("?" * len(campaigns))
    return f"AND o.campaign_id IN ({marks})", tuple(campaigns)


def _tallies(db: sqlite3.Connection, campaigns: Sequence[str]) -> list[OfferTally]:
    """Offers decided in the period at a selected store, by campaign, channel and delivery state."""
    where, params = _campaign_filter(campaigns)
    rows = db.execute(
        f"""
        SELECT o.campaign_id, o.channel, o.delivery, COUNT(*), SUM({_SENT}), SUM({_RECEIVED}),
            SUM(o.opened_at IS NOT NULL), SUM(o.dismissed_at IS NOT NULL),
            SUM(r.offer_id IS NOT NULL)
        FROM offers o JOIN temp.report_bounds b ON b.store_id = o.store_id
            LEFT JOIN redemptions r ON r.offer_id = o.event_id
        WHERE o.ts >= b.t0 AND o.ts < b.t1 {where}
        GROUP BY o.campaign_id, o.channel, o.delivery
        """,
        params,
    )
    return [
        OfferTally(str(c), str(ch), str(d), int(n), int(s), int(r), int(o), int(x), int(red))
        for c, ch, d, n, s, r, o, x, red in rows
    ]


def _subjects(
    db: sqlite3.Connection, campaigns: Sequence[str], return_days: int
) -> list[LiftSubject]:
    """Each member's first offer (not suppressed) of each campaign in the period, its group, its
    visit's time, whether the member came back (a visit at ANY store in (visit, visit + N days]),
    and whether they redeemed an offer of the campaign decided in the period."""
    where, params = _campaign_filter(campaigns)
    rows = db.execute(
        f"""
        WITH f AS (
            SELECT o.campaign_id AS campaign_id, o.member_id AS member_id,
                o.delivery AS delivery, o.visit_id AS visit_id, MIN(o.ts) AS ts,
                SUM(r.offer_id IS NOT NULL) > 0 AS redeemed
            FROM offers o JOIN temp.report_bounds b ON b.store_id = o.store_id
                LEFT JOIN redemptions r ON r.offer_id = o.event_id
            WHERE o.ts >= b.t0 AND o.ts < b.t1 AND o.delivery != 'suppressed' {where}
            GROUP BY o.campaign_id, o.member_id
        ), s AS (
            SELECT f.*, COALESCE(v.ts, f.ts) AS t FROM f LEFT JOIN visits v
                ON v.event_id = f.visit_id AND v.member_id = f.member_id
        )
        SELECT campaign_id, member_id, delivery = 'holdout', t,
            EXISTS (SELECT 1 FROM visits n WHERE n.member_id = s.member_id AND n.ts > s.t
                AND n.ts <= s.t + ?),
            redeemed
        FROM s
        """,
        (*params, return_days * DAY_S),
    )
    return [
        LiftSubject(str(c), str(m), bool(control), float(t), bool(returned), bool(redeemed))
        for c, m, control, t, returned, redeemed in rows
    ]
