"""`cloud-bridge deliveries`: the offers not delivered yet and the dead letters, for IT.

    cloud-bridge deliveries DATABASE [--dead] [--json] [--limit N]
    cloud-bridge deliveries retry DATABASE OFFER_ID

A dead offer is one its channel gave up on (a webhook endpoint that refused it for good, or whose
validity ran out while it was down); `retry` puts one that is still valid back in the queue, due
at once (a running bridge picks it up within a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from cloud_bridge.adapters.sqlite_deliveries import DeliveryRow, SqliteDeliveries
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.errors import RecordsError
from edge.core.wire import WireError, check_id

_RETRY_MESSAGES = {
    "unknown": "no such offer",
    "not_dead": "is not dead (only dead offers are retried)",
    "expired": "its validity has ended: it can no longer be delivered",
}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "deliveries",
        help="offers not delivered yet and dead letters; `deliveries retry DATABASE OFFER_ID`",
        description="List offers waiting for their channel (pending) and those it gave up on "
        "(dead, with the last error), newest first. `cloud-bridge deliveries retry DATABASE "
        "OFFER_ID` puts a dead offer that is still valid back in the queue.",
    )
    parser.add_argument(
        "words", nargs="+", metavar="DATABASE | retry DATABASE OFFER_ID", help="what to do"
    )
    parser.add_argument("--dead", action="store_true", help="only the dead letters")
    parser.add_argument("--json", action="store_true", help="print them as JSON")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")


def _usage(problem: str) -> int:
    print(f"cloud-bridge deliveries: {problem}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if words[0] == "retry":
        if len(words) != 3:
            return _usage("retry: give DATABASE and OFFER_ID")
        try:
            check_id(words[2], "OFFER_ID")
        except WireError as exc:
            return _usage(f"OFFER_ID: {exc.reason}")
        return asyncio.run(_retry(_check(Path(words[1])), words[2]))
    if len(words) != 1:
        return _usage("give one DATABASE (or: retry DATABASE OFFER_ID)")
    if args.limit < 1:
        return _usage(f"--limit: must be >= 1, got {args.limit}")
    return asyncio.run(_list(_check(Path(words[0])), args.dead, args.json, args.limit))


def _check(database: Path) -> Path:
    if not database.is_file():
        raise RecordsError(f"{database}: no loyalty database there; check the path")
    return database


async def _open(database: Path) -> SqliteLoyaltyRecords:
    return await SqliteLoyaltyRecords.open(database, "-")


async def _retry(database: Path, offer_id: str) -> int:
    records = await _open(database)
    try:
        outcome = await SqliteDeliveries(records).retry_dead(offer_id, time.time())
    finally:
        await records.close()
    if outcome != "retried":
        return _usage(f"OFFER_ID: {offer_id}: {_RETRY_MESSAGES[outcome]}")
    print(f"{offer_id}: pending again, due now (the running bridge sends it)")
    return 0


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _line(row: DeliveryRow) -> str:
    text = (
        f"{row.offer_id} {row.channel} {row.delivery} campaign {row.campaign} store {row.store}, "
        f"recorded {_when(row.recorded_at)}, valid until {_when(row.expires_at)}, "
        f"{row.attempts} attempt(s)"
    )
    if row.delivery == "pending" and row.next_attempt_at is not None:
        text += f", next {_when(row.next_attempt_at)}"
    if row.last_error:
        text += f"\n    last error: {row.last_error}"
    return text


async def _list(database: Path, dead_only: bool, as_json: bool, limit: int) -> int:
    records = await _open(database)
    try:
        deliveries = SqliteDeliveries(records)
        rows = await deliveries.deliveries(dead_only, limit)
        dead = await deliveries.dead_count()
    finally:
        await records.close()
    if as_json:
        print(json.dumps({"dead": dead, "offers": [r.to_json() for r in rows]}, indent=2))
        return 0
    print(
        f"{dead} dead offer(s)"
        + ("" if dead_only else ", and the offers waiting for their channel")
        + (f"; newest {len(rows)}:" if rows else "")
    )
    for row in rows:
        print(_line(row))
    if dead:
        print(
            "retry a dead one that is still valid: cloud-bridge deliveries retry DATABASE OFFER_ID"
        )
    return 0
