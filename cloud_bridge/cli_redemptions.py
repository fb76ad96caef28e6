"""`cloud-bridge redeem`: record a redemption from the command line, as `POST /v1/redemptions` does
(a till without the API, a correction by hand). Wiring only: the rules are
cloud_bridge/core/redemptions.py's, the write SqliteLoyaltyRecords.redeem's."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from cloud_bridge.core.redemptions import SOURCES, RedemptionError, parse_redemption_request


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    redeem = sub.add_parser(
        "redeem",
        help="record that an offer was redeemed (by its code or offer id); prints it as JSON",
    )
    redeem.add_argument("database", type=Path, help="the loyalty database")
    which = redeem.add_mutually_exclusive_group(required=True)
    which.add_argument("--code", help="the code the shopper showed")
    which.add_argument("--offer", dest="offer_id", help="the offer id")
    redeem.add_argument(
        "--member", help="the member (required with a campaign's code shared by every shopper)"
    )
    redeem.add_argument("--store", help="the store it was redeemed at")
    redeem.add_argument("--source", choices=SOURCES, default="pos", help="default %(default)s")
    redeem.add_argument("--redeemed-at", type=float, help="when, in Unix seconds (default: now)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_redeem(args))


async def _redeem(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords

    command = "cloud-bridge redeem"
    now_s = time.time()
    body: dict[str, Any] = {
        name: value
        for name, value in (
            ("code", args.code),
            ("offer_id", args.offer_id),
            ("member", args.member),
            ("store", args.store),
            ("source", args.source),
            ("redeemed_at", args.redeemed_at),
        )
        if value is not None
    }
    try:
        claim = parse_redemption_request(body, now_s)
    except RedemptionError as exc:
        print(f"{command}: {_option(exc.field)}: {exc.message}", file=sys.stderr)
        return 2
    records = await SqliteLoyaltyRecords.open(args.database, "-")
    try:
        redemption = await records.redeem(claim, now_s)
    except RedemptionError as exc:
        print(f"{command}: {_option(exc.field)}: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2
    finally:
        await records.close()
    print(json.dumps(redemption.to_json(), indent=2))
    return 0


def _option(field: str) -> str:
    """The command-line option for a request field."""
    return {"offer_id": "--offer", "redeemed_at": "--redeemed-at"}.get(field, f"--{field}")
