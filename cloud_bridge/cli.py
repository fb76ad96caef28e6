"""The `cloud-bridge` command: run the bridge, seed a demo loyalty database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cloud_bridge.errors import BridgeError
from edge.errors import EdgeError

_LOGGER = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-bridge", description="Threshold cloud bridge.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bridge with a config file")
    run.add_argument("--config", type=Path, default=Path("/etc/threshold/bridge.toml"))
    seed = sub.add_parser("seed", help="create a seeded demo loyalty database")
    seed.add_argument("database", type=Path)
    seed.add_argument("--members", type=int, default=300)
    seed.add_argument("--seed", type=int, default=7)
    seed.add_argument("--chain", default="demo-chain")
    seed.add_argument("--store", action="append", default=None, help="store id (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "seed":
            return asyncio.run(_seed(args))
        return asyncio.run(_run(args.config))
    except (BridgeError, EdgeError) as exc:
        print(f"cloud-bridge: {exc}", file=sys.stderr)
        return 2


async def _seed(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
    from cloud_bridge.seed import seed_records

    records = await SqliteLoyaltyRecords.open(args.database, args.chain)
    try:
        added = await seed_records(
            records,
            members=args.members,
            seed=args.seed,
            stores=tuple(args.store or ["store-001"]),
            joined_at=time.time(),
        )
    finally:
        await records.close()
    print(
        f"{args.database}: {added} members added" if added else f"{args.database}: already seeded"
    )
    return 0


async def _run(config_path: Path) -> int:
    from cloud_bridge.app import Bridge
    from cloud_bridge.config import load_bridge_config

    bridge = await Bridge.open(load_bridge_config(config_path))
    task = asyncio.create_task(bridge.run(), name="bridge")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await bridge.close()
    return 0
