"""The `edge-gateway` command: run a gateway, run the demo, check a config file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.errors import EdgeError

_LOGGER = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway", description="Threshold in-store BLE entry gateway."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway with a config file")
    run.add_argument("--config", type=Path, default=Path("/etc/threshold/gateway.toml"))

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)

    demo = sub.add_parser("demo", help="a simulated store entrance, end to end")
    demo.add_argument("--minutes", type=float, default=8.0, help="simulated minutes (default 8)")
    demo.add_argument("--speed", type=float, default=30.0, help="simulated s per wall s")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--members", type=int, default=300, help="members in the loyalty database")
    demo.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    demo.add_argument("--quiet", action="store_true", help="no live view, summary only")
    demo.add_argument("--workdir", type=Path, help="keep broker, databases and logs here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "check-config":
            from edge.config import load_config

            config = load_config(args.config)
            print(f"{args.config}: OK (gateway {config.address.prefix})")
            return 0
        if args.command == "run":
            logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
            return asyncio.run(_run_gateway(args.config))
        return _demo(args)
    except EdgeError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from edge.demo.runner import (
        DemoOptions,
        failures,
        print_summary,
        run_demo,
        write_summary_json,
    )

    options = DemoOptions(
        minutes=args.minutes,
        speed=args.speed,
        seed=args.seed,
        members=args.members,
        live=not args.quiet,
        workdir=args.workdir,
    )
    summary = asyncio.run(run_demo(options))
    print_summary(summary, sys.stdout)
    if args.summary_json:
        write_summary_json(summary, args.summary_json)
    problems = failures(summary)
    for problem in problems:
        print(f"demo check failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


async def _run_gateway(config_path: Path) -> int:
    from edge.adapters.simulated_radio import SimulatedAdvertSource
    from edge.app import Gateway
    from edge.config import load_config
    from edge.sim.entrance import EntranceConfig, StoreEntrance, make_members

    config = load_config(config_path)
    sim = config.radio.simulated
    # Only the simulated radio exists in this release; config validation rejects the others.
    import time

    entrance = StoreEntrance(
        EntranceConfig(
            seed=sim.seed,
            start_unix_s=time.time(),
            duration_s=sim.duration_s,
            arrivals_per_min=sim.arrivals_per_min,
            passers_per_min=sim.passers_per_min,
        ),
        make_members(sim.members, sim.seed),
    )
    source = SimulatedAdvertSource(entrance.adverts(), sim.speed)
    gateway = await Gateway.open(config, source)
    task = asyncio.create_task(gateway.run(), name="gateway")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _LOGGER.info("gateway %s running", config.address.prefix)
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # a loop failed: raise it, systemd restarts the service
        else:
            await gateway.say_goodbye()
    finally:
        for pending in (task, stopper):
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await gateway.close()
    return 0
