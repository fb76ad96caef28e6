"""Run every benchmark and write one JSON document (also printed).

    python -m benchmarks.run --out bench-results/latest.json [--quick]

Numbers, never assertions: the targets from the issues are reported beside each result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.core.advert import RawAdvert
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.core.wire import CampaignSpec, CampaignSync, RosterDevice
from edge.demo.stats import percentile
from edge.sim.entrance import EntranceConfig, SimDevice, StoreEntrance, make_members

T0 = 1_790_000_000.0
TARGETS = {
    "pipeline_adverts_per_s": ">= 50000",
    "resolver_build_s_100k": "<= 1.5",
    "e2e_latency_ms_p99": "<= 50 (deciding advert -> bridge record)",
    "time_in_store_error_p50": "< 0.10 (median |measured - true| / true time in store, simulator)",
}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
    }


def roster(members: list[SimDevice]) -> list[RosterDevice]:
    tiers = ("bronze", "silver", "gold")
    return [
        RosterDevice(m.ref, m.member, tiers[i % 3], m.identity_key, m.exponent)
        for i, m in enumerate(members)
    ]


def campaigns() -> CampaignSync:
    return CampaignSync(
        "store-001",
        1,
        3600.0,
        (
            CampaignSpec("gold", "g", "g", ("gold",), 86400.0, 30),
            CampaignSpec("all", "a", "a", ("bronze", "silver", "gold"), 86400.0, 10),
        ),
    )


def bench_resolver_build(n: int) -> float:
    devices = roster(make_members(n, seed=11))
    start = time.perf_counter()
    EidResolver(devices, T0)
    return time.perf_counter() - start


def bench_pipeline(enrolled: int, minutes: float) -> dict[str, Any]:
    members = make_members(enrolled, seed=5)
    entrance = StoreEntrance(
        EntranceConfig(
            seed=5,
            start_unix_s=T0,
            duration_s=minutes * 60,
            arrivals_per_min=30.0,
            passers_per_min=60.0,
            noise_devices=80,
        ),
        members,
    )
    start = time.perf_counter()
    adverts: list[RawAdvert] = list(entrance.adverts())
    sim_s = time.perf_counter() - start
    counter = iter(range(10**9))
    pipeline = Pipeline(
        EidResolver(roster(members), T0),
        PresenceTracker(PresenceConfig()),
        OfferEngine(campaigns()),
        lambda: f"e{next(counter)}",
    )
    start = time.perf_counter()
    pipeline.feed_many(adverts, 0.0)
    elapsed = time.perf_counter() - start
    return {
        "pipeline_adverts_per_s": round(len(adverts) / elapsed),
        "pipeline_adverts": len(adverts),
        "pipeline_entries": pipeline.counters.entries,
        "sim_adverts_per_s": round(len(adverts) / sim_s),
    }


async def bench_e2e(minutes: float, speed: float) -> dict[str, Any]:
    from edge.demo.runner import DemoOptions, run_demo

    with tempfile.TemporaryDirectory(prefix="threshold-bench-") as tmp:
        workdir = Path(tmp)
        summary = await run_demo(
            DemoOptions(
                minutes=minutes,
                speed=speed,
                seed=3,
                live=False,
                workdir=workdir,
                arrivals_per_min=20.0,
                tail_minutes=0.0,  # latency only: no need to wait for visits to end
            ),
            out=sys.stderr,
        )
        db = sqlite3.connect(workdir / "loyalty.sqlite")
        rows = db.execute(
            "SELECT (recorded_at - detected_at) * 1000 FROM visits "
            "UNION ALL SELECT (recorded_at - detected_at) * 1000 FROM offers"
        ).fetchall()
        db.close()
    latencies = [r[0] for r in rows]
    return {
        "e2e_latency_ms_p50": _round(percentile(latencies, 50)),
        "e2e_latency_ms_p99": _round(percentile(latencies, 99)),
        "e2e_events": len(latencies),
        "shopper_latency_ms_p50": summary["latency_ms_p50"],
        "shopper_latency_ms_p99": summary["latency_ms_p99"],
        "shopper_offers": summary["offers_delivered"],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-results/latest.json"))
    parser.add_argument("--quick", action="store_true", help="smaller runs (for a smoke check)")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "targets": TARGETS}
    results["resolver_build_s_10k"] = round(bench_resolver_build(10_000), 3)
    results["resolver_build_s_100k"] = round(bench_resolver_build(100_000), 3)
    results.update(bench_pipeline(10_000, minutes=3 if args.quick else 10))
    from benchmarks import presence_eval

    results.update(presence_eval.time_in_store_results(quick=args.quick))
    from benchmarks import bundle_bench, radio_bench

    results["targets"] = {**TARGETS, **radio_bench.RADIO_TARGETS, **bundle_bench.BUNDLE_TARGETS}
    results.update(radio_bench.parse_adverts_per_s(quick=args.quick))
    results.update(radio_bench.parse_resolve_adverts_per_s(quick=args.quick))
    results.update(radio_bench.replay_adverts_per_s(quick=args.quick))
    results.update(bundle_bench.bundle_sizes())
    results.update(bundle_bench.preference_sizes())
    from benchmarks import resolver_bench

    results["targets"].update(resolver_bench.RESOLVER_TARGETS)
    results.update(resolver_bench.resolver_results(quick=args.quick))
    from benchmarks import checkin_bench

    results["targets"].update(checkin_bench.CHECKIN_TARGETS)
    results.update(checkin_bench.checkin_results(quick=args.quick))
    results.update(asyncio.run(bench_e2e(minutes=3 if args.quick else 10, speed=60.0)))
    from benchmarks import uplink_bench

    results["targets"].update(uplink_bench.UPLINK_TARGETS)
    results.update(asyncio.run(uplink_bench.uplink_results(1000 if args.quick else 5000)))
    from benchmarks import report_bench

    results["targets"].update(report_bench.REPORT_TARGETS)
    results.update(report_bench.report_results(quick=args.quick))
    from benchmarks import webhook_bench

    results["targets"].update(webhook_bench.WEBHOOK_TARGETS)
    results.update(asyncio.run(webhook_bench.webhook_results(500 if args.quick else 2000)))
    results["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps(results, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
