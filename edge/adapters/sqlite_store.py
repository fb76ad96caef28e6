"""The gateway's durable state in SQLite (WAL): the event outbox, offer history and last good sync.

An event leaves the outbox only when the bridge acknowledges it. Writes use synchronous=FULL: in WAL
mode NORMAL may roll back the last commits on power loss, and a lost visit is a lost offer. The
pipeline's events arrive in batches, so one fsync covers many rows.

The roster is stored sealed (edge/services/sync.py seals it; this module stores bytes). secure_delete
is on, so a replaced or deleted row leaves zeros, not its old bytes, in the file's free pages.

Offer history is three tables: `offer_history`, the last time each member got each campaign
(cooldowns and refresh), `offer_times`, each member's latest offers (at most
MAX_OFFERS_PER_WEEK, for the per_day / per_week caps, issue 10), and `campaign_offers`, every offer
of each campaign to each member by this gateway in the last CAMPAIGN_MEMORY_S (8 days: the
per-member campaign caps and, counted by campaign and local day, this gateway's share of each
campaign's daily budget, issue 11). All are purged by age; a campaign's offers past a privacy
retention shorter than CAMPAIGN_MEMORY_S keep their time but lose their member (a random
`ANONYMOUS` one): who got what is forgotten, the day's budget share stays spent.

Forgetting also needs the WAL cut: it keeps the old images of changed pages after they are written
back, and only overwrites them as it wraps round, which on a quiet gateway can take days. So the
periodic purge of offer history (`purge_history`, after `[privacy] retention_s`) ends with a
TRUNCATE checkpoint whenever rows were deleted since the last one (purged history or acknowledged
events): whatever was deleted is gone from every file by the next purge.

A corrupt database found at start is moved aside, not repaired: what it held is either lost
(unacknowledged events) or comes back from the bridge (roster, campaigns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiosqlite

from edge.adapters.sqlite_db import GATEWAY_APPLICATION_ID, open_database
from edge.core import wire
from edge.core.offers import OfferHistory
from edge.core.visits import COLUMNS, OpenVisit, OpenVisitError, open_visit_from_row
from edge.core.wire import MAX_OFFERS_PER_WEEK
from edge.errors import CorruptDatabase, StorageError

_LOGGER = logging.getLogger(__name__)
#: Most open visits read back at start-up (the latest heard first): a door has hundreds at most;
#: a file holding more was tampered with, and the rest are dropped.
MAX_OPEN_VISITS = 100_000
#: Undecodable open visits named one by one in the log at start-up; the rest are only counted.
_LOGGED_BAD_VISITS = 5
_LATEST_FIRST = "ORDER BY last_heard DESC, rowid"
_INSERT_OPEN_VISIT = (
    f"INSERT OR REPLACE INTO open_visits ({', '.join(COLUMNS)}) VALUES (?,?,?,?,?,?,?)"
)

_MIGRATIONS: tuple[str, ...] = (
    # 1: first schema
    """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE offer_history (
        member TEXT NOT NULL,
        campaign TEXT NOT NULL,
        last_ts REAL NOT NULL,
        PRIMARY KEY (member, campaign)
    );
    CREATE TABLE sync_state (
        kind TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    """,
    # 2: the roster is kept sealed (issue 4). Version 1 stored it as clear JSON: erase it, with
    # secure_delete so its pages are zeroed; the gateway starts without a roster until the bridge's
    # next bundle (the WAL is truncated right after opening, in SqliteGatewayStore.open).
    """
    PRAGMA secure_delete = ON;
    DELETE FROM sync_state WHERE kind = 'roster';
    """,
    # 3: open visits (issue 10), so that a visit spanning a restart is carried on, or ended at its
    # last sighting: written with the visit's event, refreshed in batches, deleted with its end.
    """
    CREATE TABLE open_visits (
        visit_id TEXT PRIMARY KEY,
        member TEXT NOT NULL,
        device TEXT NOT NULL,
        platform TEXT,
        entered_at REAL NOT NULL,
        last_near REAL NOT NULL,
        last_heard REAL NOT NULL
    );
    """,
    # 4: each member's offer times, for their per_day / per_week caps (issue 10). Seeded with the
    # last offer of each campaign, all that versions 2 and 3 kept: the caps count at least those.
    """
    CREATE TABLE offer_times (
        member TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (member, ts)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO offer_times (member, ts) SELECT member, last_ts FROM offer_history;
    """,
    # 5: every offer of each campaign to each member (issue 11), for per-member campaign caps and
    # this gateway's share of each daily budget, so a restart or power cut resets neither. Seeded
    # with the last offer of each campaign, all that version 4 kept: caps and budgets count at
    # least those (the first purge drops what is older than CAMPAIGN_MEMORY_S).
    """
    CREATE TABLE campaign_offers (
        member TEXT NOT NULL,
        campaign TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (member, campaign, ts)
    ) WITHOUT ROWID;
    CREATE INDEX campaign_offers_ts ON campaign_offers (ts);
    INSERT OR IGNORE INTO campaign_offers (member, campaign, ts)
        SELECT member, campaign, last_ts FROM offer_history;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)
#: The start of the random member a campaign offer gets past the privacy retention (no member id
#: starts so: wire.Id is a-z, 0-9, '-', '_').
ANONYMOUS = "~"


def move_aside(path: Path, now_unix_s: float) -> Path:
    """Rename `path` (with its -wal and -shm) to `<name>.corrupt-<UTC timestamp>`; return the new path.

    Kept, not deleted: whoever investigates may still recover events from it.
    """
    stamp = datetime.fromtimestamp(now_unix_s, UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):  # the journal first: never pair it with a new database
        journal = path.with_name(path.name + suffix)
        if journal.exists():
            journal.rename(aside.with_name(aside.name + suffix))
    path.rename(aside)
    return aside


def _count_outbox(path: Path) -> int | None:
    """How many events a corrupt database still shows in its outbox, if SQLite can tell."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        ) as conn:
            row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    event_id: str
    kind: wire.EventKind
    payload: bytes


class SqliteGatewayStore:
    """One writer connection through aiosqlite's worker thread, one operation at a time.

    The uplink, the pipeline, sync and housekeeping call in concurrently. Each method holds
    `_lock` for its whole transaction, and each read fetches its rows in one hop to the worker thread
    (`execute_fetchall`), so no statement is ever left open across an await. That is what makes the
    TRUNCATE checkpoint safe: SQLite refuses a checkpoint while a statement on the same connection
    is still stepping ("database table is locked"), and a checkpoint inside another coroutine's
    transaction would run between its insert and its commit.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._deleted = False  # rows deleted since the WAL was last cut
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, *, wall_clock: Callable[[], float] = time.time
    ) -> SqliteGatewayStore:
        """Open (creating and migrating) the database at `path`.

        A missing file is a first boot: it is created. A corrupt one is moved aside (see
        `move_aside`) and a fresh one created: the gateway then holds no roster (version 0), and the
        bridge answers its status with a full one. A newer or read-only one is an error.
        """
        try:
            db = await open_database(
                path, _MIGRATIONS, "gateway database", application_id=GATEWAY_APPLICATION_ID
            )
        except CorruptDatabase as exc:
            unsent = _count_outbox(path)
            aside = move_aside(path, wall_clock())
            _LOGGER.error(
                "%s; moved it aside to %s and starting on a new one: %s unacknowledged events in "
                "it are lost, and the roster and campaigns will be resynced from the bridge",
                exc,
                aside,
                "an unknown number of" if unsent is None else unsent,
            )
            db = await open_database(
                path, _MIGRATIONS, "gateway database", application_id=GATEWAY_APPLICATION_ID
            )
        try:
            await db.execute("PRAGMA secure_delete = ON")
            # Old page images (e.g. migration 2's erased roster) can sit in the WAL: fold it into
            # the database, where secure_delete zeroed them, and cut the WAL file to nothing.
            await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            await db.close()
            raise StorageError(f"cannot prepare gateway database {path}: {exc}") from exc
        return cls(db, path)

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    async def append_events(
        self,
        events: Sequence[wire.Event],
        now_s: float,
        opened: Sequence[OpenVisit] = (),
        refreshed: Sequence[OpenVisit] = (),
    ) -> None:
        """Store events in the outbox, their offers in the history (and each campaign's offers),
        the visits `opened` (and the times of those `refreshed`), and forget the open visits the
        events end: one transaction."""
        rows = [(e.event_id, e.KIND, wire.encode(e), now_s) for e in events]
        history = [(e.member, e.campaign, e.ts) for e in events if isinstance(e, wire.OfferTrigger)]
        ended = [(e.visit_id,) for e in events if isinstance(e, wire.VisitEnd)]
        members = sorted({member for member, _, _ in history})
        async with self._lock:
            await self._db.executemany(
                "INSERT OR IGNORE INTO outbox (event_id, kind, payload, created_at) "
                "VALUES (?,?,?,?)",
                rows,
            )
            if history:
                await self._db.executemany(
                    "INSERT INTO offer_history (member, campaign, last_ts) VALUES (?,?,?) "
                    "ON CONFLICT (member, campaign) DO UPDATE SET last_ts = "
                    "max(last_ts, excluded.last_ts)",
                    history,
                )
                await self._db.executemany(
                    "INSERT OR IGNORE INTO offer_times (member, ts) VALUES (?,?)",
                    [(member, ts) for member, _, ts in history],
                )
                await self._db.executemany(
                    "INSERT OR IGNORE INTO campaign_offers (member, campaign, ts) VALUES (?,?,?)",
                    history,
                )
                # No cap counts further back than MAX_OFFERS_PER_WEEK offers: keep no more.
                await self._db.executemany(
                    "DELETE FROM offer_times WHERE member = ?1 AND ts <= (SELECT ts FROM "
                    "offer_times WHERE member = ?1 ORDER BY ts DESC LIMIT 1 OFFSET ?2)",
                    [(member, MAX_OFFERS_PER_WEEK) for member in members],
                )
            await self._write_open_visits(opened, refreshed)
            if ended:
                await self._db.executemany("DELETE FROM open_visits WHERE visit_id = ?", ended)
                self._deleted = True
            await self._db.commit()

    async def save_open_visits(
        self, opened: Sequence[OpenVisit], refreshed: Sequence[OpenVisit]
    ) -> None:
        """Write new open visits, and the last times of those already written (one that has
        ended since, and so is gone, stays gone)."""
        async with self._lock:
            await self._write_open_visits(opened, refreshed)
            await self._db.commit()

    async def _write_open_visits(
        self, opened: Sequence[OpenVisit], refreshed: Sequence[OpenVisit]
    ) -> None:
        if opened:
            await self._db.executemany(_INSERT_OPEN_VISIT, [v.row() for v in opened])
        if refreshed:
            # UPDATE, never INSERT: a visit whose end was stored meanwhile is not brought back.
            await self._db.executemany(
                "UPDATE open_visits SET last_near = ?, last_heard = ?, entered_at = ? "
                "WHERE visit_id = ?",
                [(v.last_near_s, v.last_heard_s, v.entered_at_s, v.visit_id) for v in refreshed],
            )

    async def load_open_visits(self) -> tuple[list[OpenVisit], int]:
        """The open visits the last run left, and how many rows were dropped: those that do not
        decode (each named in the log, the first few), and beyond MAX_OPEN_VISITS. Dropped rows
        are deleted: they are not read again at the next start."""
        async with self._lock:
            rows = list(
                await self._db.execute_fetchall(
                    f"SELECT rowid, {', '.join(COLUMNS)} FROM open_visits {_LATEST_FIRST} LIMIT ?",
                    (MAX_OPEN_VISITS + 1,),
                )
            )
            visits: list[OpenVisit] = []
            bad: list[tuple[int]] = []
            for rowid, *values in rows[:MAX_OPEN_VISITS]:
                try:
                    visits.append(open_visit_from_row(values))
                except OpenVisitError as exc:
                    bad.append((rowid,))
                    if len(bad) <= _LOGGED_BAD_VISITS:
                        _LOGGER.warning(
                            "gateway database %s: open visit (row %d) dropped, its end will not "
                            "be reported: %s",
                            self.path,
                            rowid,
                            exc.reason,
                        )
            dropped = len(bad)
            if len(rows) > MAX_OPEN_VISITS:
                cursor = await self._db.execute(
                    "DELETE FROM open_visits WHERE rowid NOT IN "
                    f"(SELECT rowid FROM open_visits {_LATEST_FIRST} LIMIT ?)",
                    (MAX_OPEN_VISITS,),
                )
                dropped += max(0, cursor.rowcount)
            if bad:  # after the rows beyond the cap: those were chosen with these still there
                await self._db.executemany("DELETE FROM open_visits WHERE rowid = ?", bad)
            if dropped:
                await self._db.commit()
                self._deleted = True
                _LOGGER.warning(
                    "gateway database %s: %d open visit(s) dropped at start-up (undecodable, or "
                    "more than %d): counted in the status as open_visits_dropped",
                    self.path,
                    dropped,
                    MAX_OPEN_VISITS,
                )
        return visits, dropped

    async def pending(self, limit: int, skip: Iterable[str] = ()) -> list[OutboxEntry]:
        """The oldest unacknowledged events, skipping ids in `skip` (already in flight)."""
        skip_set = set(skip)
        # In-flight entries are few (bounded by the uplink's window): over-fetch by that many.
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT event_id, kind, payload FROM outbox ORDER BY seq LIMIT ?",
                (limit + len(skip_set),),
            )
        out = [
            OutboxEntry(event_id, "visit" if kind == "visit" else "offer", payload)
            for event_id, kind, payload in rows
            if event_id not in skip_set
        ]
        return out[:limit]

    async def remove(self, event_ids: Sequence[str]) -> int:
        """Forget acknowledged events; return how many were still here."""
        if not event_ids:
            return 0
        async with self._lock:
            cursor = await self._db.executemany(
                "DELETE FROM outbox WHERE event_id = ?", [(i,) for i in event_ids]
            )
            await self._db.commit()
            self._deleted = True
            return cursor.rowcount

    async def count(self) -> int:
        async with self._lock:
            rows = list(await self._db.execute_fetchall("SELECT count(*) FROM outbox"))
        return int(rows[0][0]) if rows else 0

    async def load_history(self) -> OfferHistory:
        """The offer history as saved: what cooldowns, caps, budgets and refresh need after a
        restart."""
        history = OfferHistory()
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT member, campaign, last_ts FROM offer_history"
            )
            times = await self._db.execute_fetchall("SELECT member, ts FROM offer_times")
            # In time order: each list is appended to, not sorted into.
            campaign_offers = await self._db.execute_fetchall(
                "SELECT member, campaign, ts FROM campaign_offers ORDER BY ts"
            )
        for member, campaign, last_ts in rows:
            key = (member, campaign)
            history.last_by_campaign[key] = max(last_ts, history.last_by_campaign.get(key, last_ts))
            history.last_any[member] = max(last_ts, history.last_any.get(member, last_ts))
        for member, ts in times:
            history.record_time(member, ts)
        for member, campaign, ts in campaign_offers:
            if member.startswith(ANONYMOUS):  # past the retention: counts for the budget only
                history.record_budget_time(campaign, ts)
            else:
                history.record_campaign_time(member, campaign, ts)
        return history

    async def purge_history(
        self,
        before_ts: float,
        times_before_ts: float | None = None,
        campaign_before_ts: float | None = None,
        budget_before_ts: float | None = None,
    ) -> int:
        """Forget offers older than `before_ts` (offer times: `times_before_ts`; each campaign's
        offers: `campaign_before_ts`; by default the same) and cut the WAL if anything was deleted
        since the last purge; return how many (member, campaign) offers were forgotten.

        A campaign's offers from `budget_before_ts` (earlier than `campaign_before_ts`: a privacy
        retention shorter than the budgets' memory) to `campaign_before_ts` lose their member, not
        their time: the day's budget share stays spent across a restart."""
        times_before = before_ts if times_before_ts is None else times_before_ts
        campaign_before = before_ts if campaign_before_ts is None else campaign_before_ts
        budget_before = min(
            campaign_before, campaign_before if budget_before_ts is None else budget_before_ts
        )
        async with self._lock:
            cursor = await self._db.execute(
                "UPDATE campaign_offers SET member = ? || lower(hex(randomblob(8))) "
                "WHERE ts >= ? AND ts < ? AND substr(member, 1, 1) != ?",
                (ANONYMOUS, budget_before, campaign_before, ANONYMOUS),
            )
            self._deleted = self._deleted or cursor.rowcount > 0
            cursor = await self._db.execute(
                "DELETE FROM offer_history WHERE last_ts < ?", (before_ts,)
            )
            purged = cursor.rowcount
            cursor = await self._db.execute("DELETE FROM offer_times WHERE ts < ?", (times_before,))
            times_purged = cursor.rowcount
            cursor = await self._db.execute(
                "DELETE FROM campaign_offers WHERE ts < ?", (budget_before,)
            )
            campaign_purged = cursor.rowcount
            await self._db.commit()
            if purged or times_purged or campaign_purged or self._deleted:
                await self._cut_wal()
        return purged

    async def cut_wal(self) -> bool:
        """Write the WAL back into the database (where secure_delete zeroed deleted rows) and truncate
        it to nothing; False if a reader kept it from finishing (the next purge tries again)."""
        async with self._lock:
            return await self._cut_wal()

    async def _cut_wal(self) -> bool:
        # Under the lock, so between transactions and with no statement of ours open.
        assert not self._db.in_transaction, "a checkpoint inside a transaction"
        rows = list(await self._db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)"))
        busy = bool(rows and rows[0][0])
        self._deleted = busy
        return not busy

    async def save_sync(self, kind: str, version: int, payload: bytes) -> None:
        """Replace what is saved for `kind` (the roster: sealed bytes, never clear keys)."""
        async with self._lock:
            await self._db.execute(
                "INSERT INTO sync_state (kind, version, payload) VALUES (?,?,?) "
                "ON CONFLICT (kind) DO UPDATE SET version = excluded.version, "
                "payload = excluded.payload",
                (kind, version, payload),
            )
            await self._db.commit()
            self._deleted = True  # the replaced payload's pages leave the WAL at the next purge

    async def load_sync(self, kind: str) -> bytes | None:
        """The payload last saved for `kind`, or None."""
        async with self._lock:
            rows = list(
                await self._db.execute_fetchall(
                    "SELECT payload FROM sync_state WHERE kind = ?", (kind,)
                )
            )
        return bytes(rows[0][0]) if rows else None
