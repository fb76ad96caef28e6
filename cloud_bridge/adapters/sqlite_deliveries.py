"""The webhook channel's queue and the shoppers' receipts, on the loyalty records' SQLite file.

The queue is the offers table itself (migration 11's columns): a webhook offer is `pending` with
`next_attempt_at` (NULL: at once) until its push service answers 2xx (`sent`) or it is given up
(`dead`, `last_error` says why). Nothing about an attempt lives only in memory: a bridge that dies
mid-attempt finds the offer still pending and tries it again, under the same idempotency key.
Every method runs alone on the records' connection (SqliteLoyaltyRecords.alone), between their
recording batches.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiosqlite

from cloud_bridge.adapters.sqlite_records import RECEIPT_UPDATE, SqliteLoyaltyRecords
from cloud_bridge.core.webhook import Next, Step
from cloud_bridge.errors import RecordsError

#: States in which an offer cannot have reached the shopper, so no receipt can be recorded (a
#: suppressed one only if it was suppressed before it was sent).
_NO_RECEIPT = ("holdout", "suppressed")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WebhookJob:
    """One webhook offer due for an attempt."""

    offer_id: str
    shopper: str
    payload: bytes  # the offer as stored (wire.ShopperOffer)
    attempts: int
    expires_at: float
    #: What is wrong with the row (a column that is not what it holds): its attempt makes it a
    #: dead letter without POSTing it. None for a sound row.
    damage: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """An offer as `cloud-bridge deliveries` lists it."""

    offer_id: str
    channel: str
    delivery: str
    campaign: str
    store: str
    recorded_at: float
    expires_at: float | None
    attempts: int
    next_attempt_at: float | None
    sent_at: float | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "channel": self.channel,
            "delivery": self.delivery,
            "campaign": self.campaign,
            "store": self.store,
            "recorded_at": self.recorded_at,
            "expires_at": self.expires_at,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "sent_at": self.sent_at,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class ReceiptState:
    """An offer's receipt timestamps after a receipt, or why none was recorded."""

    outcome: Literal["recorded", "unknown", "refused"]
    offer_id: str
    delivery: str | None = None
    received_at: float | None = None
    opened_at: float | None = None
    dismissed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "delivery": self.delivery,
            "received_at": self.received_at,
            "opened_at": self.opened_at,
            "dismissed_at": self.dismissed_at,
        }


RetryOutcome = Literal["retried", "unknown", "not_dead", "expired"]


def _job(r: sqlite3.Row | tuple[Any, ...]) -> WebhookJob:
    """A due row as a job; a count or time stored as text (or bytes) is the row's damage, not a
    ValueError out of the queue. Text sorts after every number in SQLite, so a text expires_at
    is always due and never expires: its row must be ended here, or it stops the channel."""
    attempts, expires_at = r[3], r[4]
    damage = None
    if not isinstance(expires_at, int | float):
        damage, expires_at = f"expires_at is {str(expires_at)[:40]!r}, not a time", math.inf
    if not isinstance(attempts, int):
        damage, attempts = damage or f"attempts is {str(attempts)[:40]!r}, not a count", 0
    return WebhookJob(
        r[0],
        r[1] if isinstance(r[1], str) else "",
        r[2] if isinstance(r[2], bytes) else b"",
        attempts,
        float(expires_at),
        damage,
    )


class SqliteDeliveries:
    """The webhook queue, dead letters and receipts of one SqliteLoyaltyRecords."""

    def __init__(self, records: SqliteLoyaltyRecords) -> None:
        self.records = records

    async def due_webhooks(
        self, now_s: float, limit: int, skip: Collection[str]
    ) -> list[WebhookJob]:
        """Pending webhook offers whose next attempt is due and that are still valid, oldest due
        first; none of `skip` (attempts in flight)."""

        async def work(db: aiosqlite.Connection) -> list[WebhookJob]:
            async with db.execute(
                "SELECT event_id, shopper_token, delivery_payload, attempts, expires_at "
                "FROM offers WHERE channel = 'webhook' AND delivery = 'pending' "
                "AND coalesce(next_attempt_at, 0) <= ? AND expires_at > ? "
                "ORDER BY coalesce(next_attempt_at, 0), recorded_at LIMIT ?",
                (now_s, now_s, limit + len(skip)),
            ) as cursor:
                rows = await cursor.fetchall()
            # A row damaged on disk or edited by hand (no payload, text instead of bytes, no
            # shopper) is still a job: its attempt finds it damaged and makes it a dead letter.
            return [_job(r) for r in rows if r[0] not in skip][:limit]

        return await self._alone(work)

    async def finish_attempt(self, offer_id: str, step: Step, now_s: float) -> bool:
        """Record an attempt's result; False if the offer was no longer pending (a receipt, or IT,
        got there first)."""
        if step.next is Next.SENT:
            sql = (
                "UPDATE offers SET delivery = 'sent', sent_at = ?, attempts = ?, "
                "next_attempt_at = NULL WHERE event_id = ? AND delivery = 'pending'"
            )
            params: tuple[Any, ...] = (now_s, step.attempts, offer_id)
        elif step.next is Next.RETRY:
            sql = (
                "UPDATE offers SET attempts = ?, next_attempt_at = ?, last_error = ? "
                "WHERE event_id = ? AND delivery = 'pending'"
            )
            params = (step.attempts, step.at, step.error, offer_id)
        else:
            sql = (
                "UPDATE offers SET delivery = 'dead', attempts = ?, next_attempt_at = NULL, "
                "last_error = ? WHERE event_id = ? AND delivery = 'pending'"
            )
            params = (step.attempts, step.error, offer_id)

        async def work(db: aiosqlite.Connection) -> bool:
            cursor = await db.execute(sql, params)
            await db.commit()
            return cursor.rowcount > 0

        return await self._alone(work)

    async def expire_webhooks(self, now_s: float) -> int:
        """Record dead every pending webhook offer whose validity ran out; how many. The reason
        is validity_ran_out's, built in SQL: one statement does them all."""

        async def work(db: aiosqlite.Connection) -> int:
            cursor = await db.execute(
                "UPDATE offers SET delivery = 'dead', next_attempt_at = NULL, "
                "last_error = 'validity ran out after ' || attempts || ' attempt' "
                "|| CASE attempts WHEN 1 THEN '' ELSE 's' END || ': last error: ' "
                "|| coalesce(last_error, 'none') "
                "WHERE channel = 'webhook' AND delivery = 'pending' AND expires_at <= ?",
                (now_s,),
            )
            await db.commit()
            return cursor.rowcount

        return await self._alone(work)

    async def dead_count(self) -> int:
        """Offers their channel gave up on (IT's to look at)."""

        async def work(db: aiosqlite.Connection) -> int:
            async with db.execute("SELECT count(*) FROM offers WHERE delivery = 'dead'") as cur:
                row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._alone(work)

    async def deliveries(self, dead_only: bool = False, limit: int = 1000) -> list[DeliveryRow]:
        """Offers not yet delivered (pending) and dead letters, newest first."""
        states = ("dead",) if dead_only else ("pending", "dead")

        async def work(db: aiosqlite.Connection) -> list[DeliveryRow]:
            async with db.execute(
                "SELECT event_id, channel, delivery, campaign_id, store_id, recorded_at, "
                "expires_at, attempts, next_attempt_at, sent_at, last_error FROM offers "
                f"WHERE delivery IN ({','.join('?' * len(states))}) "
                "ORDER BY recorded_at DESC, event_id LIMIT ?",
                (*states, limit),
            ) as cursor:
                return [DeliveryRow(*r) async for r in cursor]

        return await self._alone(work)

    async def retry_dead(self, offer_id: str, now_s: float) -> RetryOutcome:
        """Put a dead offer that is still valid back in the queue, due now."""

        async def work(db: aiosqlite.Connection) -> RetryOutcome:
            async with db.execute(
                "SELECT delivery, expires_at FROM offers WHERE event_id = ?", (offer_id,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return "unknown"
            if row[0] != "dead":
                return "not_dead"
            if row[1] is None or float(row[1]) <= now_s:
                return "expired"
            await db.execute(
                "UPDATE offers SET delivery = 'pending', next_attempt_at = ? "
                "WHERE event_id = ? AND delivery = 'dead'",
                (now_s, offer_id),
            )
            await db.commit()
            return "retried"

        return await self._alone(work)

    async def record_receipt(self, offer_id: str, status: str, now_s: float) -> ReceiptState:
        """Record what the app did with an offer (received, opened, dismissed; the latter two
        imply received), relayed by the retailer's backend. Repeating one changes nothing. An
        offer suppressed after it was sent is in the app: its receipt is recorded, and it stays
        suppressed (RECEIPT_UPDATE)."""

        async def work(db: aiosqlite.Connection) -> ReceiptState:
            async with db.execute(
                "SELECT delivery, sent_at FROM offers WHERE event_id = ?", (offer_id,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return ReceiptState("unknown", offer_id)
            if row[0] in _NO_RECEIPT and (row[0] == "holdout" or row[1] is None):
                return ReceiptState("refused", offer_id, delivery=str(row[0]))
            await db.execute(RECEIPT_UPDATE, {"now": now_s, "status": status, "id": offer_id})
            await db.commit()
            async with db.execute(
                "SELECT delivery, received_at, opened_at, dismissed_at FROM offers "
                "WHERE event_id = ?",
                (offer_id,),
            ) as cursor:
                after = await cursor.fetchone()
            assert after is not None
            return ReceiptState("recorded", offer_id, *after)

        return await self._alone(work)

    async def _alone(self, work: Callable[[aiosqlite.Connection], Awaitable[_T]]) -> _T:
        try:
            return await self.records.alone(work)
        except sqlite3.Error as exc:
            raise RecordsError(f"{self.records.path}: the webhook queue: {exc}") from exc
