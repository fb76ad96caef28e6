"""Resolver benchmarks (issue 4): build time at 100k and 1M devices, memory, and the longest event-loop
stall while the pipeline's housekeeping rolls 100k devices over a rotation boundary.

    python -m benchmarks.resolver_bench [--quick]

- `resolver_build_s_*`: `EidResolver(devices, now)` on one core, the roster already in memory.
- `resolver_mem_mb_per_100k`: what the resolver adds once built (tracemalloc, MB = 10**6 bytes);
  `resolver_mem_peak_mb_per_100k`: the most it holds during a rollover (the window ahead being filled
  while the expired one is emptied).
- `resolver_max_loop_stall_ms`: an asyncio loop runs a 1 ms ticker while adverts go through
  `Pipeline.feed_many`, whose housekeeping drives `EidResolver.advance` across a boundary where every
  exponent of the 100k roster rolls at once; the longest gap between two ticks, in ms (the ticker's own
  1 ms sleep included). Radio time runs faster than real time (0.05 s a batch), which only packs the
  precomputation slices closer together.
- `resolver_rollover_unsliced_ms`: the same rollover done in one `advance` call without a budget, as
  before issue 4: what the loop would stall for without slicing.
- `gc_full_collect_ms_100k`: one full `gc.collect()` with a 100k roster and its resolver alive (the
  fastest of 3), what any oldest-generation collection costs the event loop; `..._frozen`: the same
  after `gc.freeze()`, as the gateway does after applying a full roster (edge/services/sync.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import time
import tracemalloc
from typing import Any

from edge.core import eid, frames, wire
from edge.core.advert import RawAdvert
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.sim.entrance import make_members

# Every exponent the simulator uses (8..12) starts a window here: the whole roster rolls at once.
BOUNDARY = 1_790_000_000 - 1_790_000_000 % 4096 + 4096
RESOLVER_TARGETS = {
    "resolver_build_s_100k": "<= 1.5",
    "resolver_mem_mb_per_100k": "<= 64",
    "resolver_max_loop_stall_ms": "<= 20 (100k devices, across a rotation boundary)",
    "gc_full_collect_ms_100k_frozen": "small against gc_full_collect_ms_100k",
}
_TIERS = ("bronze", "silver", "gold")


def _roster(n: int) -> list[wire.RosterDevice]:
    return [
        wire.RosterDevice(m.ref, m.member, _TIERS[i % 3], m.identity_key, m.exponent)
        for i, m in enumerate(make_members(n, seed=11))
    ]


def build_s(devices: list[wire.RosterDevice]) -> float:
    gc.collect()
    start = time.perf_counter()
    EidResolver(devices, BOUNDARY - 10)
    return time.perf_counter() - start


def memory_mb(devices: list[wire.RosterDevice]) -> dict[str, float]:
    """Memory the resolver adds once built, and its peak through a rollover, per 100k devices."""
    per = 100_000 / len(devices)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        resolver = EidResolver(devices, BOUNDARY - 10)
        built = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.reset_peak()
        while resolver.advance(BOUNDARY, max_eids=1000):
            pass
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return {
        "resolver_mem_mb_per_100k": round(built * per / 1e6, 1),
        "resolver_mem_peak_mb_per_100k": round(peak * per / 1e6, 1),
    }


def rollover_unsliced_ms(devices: list[wire.RosterDevice]) -> float:
    resolver = EidResolver(devices, BOUNDARY - 10)
    start = time.perf_counter()
    resolver.advance(BOUNDARY)
    return (time.perf_counter() - start) * 1000


def _door_batches(
    devices: list[wire.RosterDevice], start_s: float, seconds: float, batch_s: float = 0.05
) -> list[list[RawAdvert]]:
    """A few enrolled devices heard every batch, with their EID of the moment."""
    heard = devices[:: len(devices) // 8][:8]
    batches = []
    for i in range(int(seconds / batch_s)):
        t = start_s + i * batch_s
        batches.append(
            [
                RawAdvert(
                    t,
                    f"C0:FF:EE:00:00:{n:02X}",
                    -60,
                    frames.eddystone_eid_advert(
                        eid.compute_eid(d.identity_key, d.exponent, eid.counter_at(t))
                    ),
                )
                for n, d in enumerate(heard)
            ]
        )
    return batches


async def _max_stall_s(
    pipeline: Pipeline, batches: list[list[RawAdvert]]
) -> tuple[float, float | None]:
    """The longest gap between ticks, and the radio time when the rollover work was all done."""
    longest = 0.0
    done = asyncio.Event()
    finished_s: float | None = None

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    async def radio() -> None:
        nonlocal finished_s
        for batch in batches:
            pipeline.feed_many(batch, 0.0)
            t = batch[-1].t_s
            if finished_s is None and t >= BOUNDARY and not pipeline.resolver.pending_work:
                finished_s = t
            await asyncio.sleep(0.001)
        done.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(ticker(), name="ticker")
        tg.create_task(radio(), name="radio")
    return longest, finished_s


def loop_stall(devices: list[wire.RosterDevice], seconds: float = 60.0) -> dict[str, Any]:
    """The longest gap between 1 ms ticks while housekeeping rolls `devices` over a boundary."""
    start_s = BOUNDARY - 2.0
    ids = (f"e{n}" for n in itertools.count())
    resolver = EidResolver(devices, start_s)
    pipeline = Pipeline(
        resolver, PresenceTracker(PresenceConfig()), OfferEngine(None), ids.__next__
    )
    batches = _door_batches(devices, start_s, seconds)
    gc.collect()
    longest_s, finished_s = asyncio.run(_max_stall_s(pipeline, batches))
    return {
        "resolver_max_loop_stall_ms": round(longest_s * 1000, 1),
        # Radio seconds after the boundary until the window ahead was complete (null: not in the run).
        "resolver_rollover_work_s": None if finished_s is None else round(finished_s - BOUNDARY, 2),
        "resolver_late_rebuilds": resolver.late_rebuilds,
        "resolver_stall_resolved": pipeline.counters.resolved,
        "resolver_stall_unresolved": pipeline.counters.unresolved,
    }


def gc_full_collect_ms(devices: list[wire.RosterDevice], runs: int = 3) -> dict[str, float]:
    """A full collection with the roster and its resolver alive, before and after gc.freeze()."""
    roster = {d.ref: d for d in devices}
    resolver = EidResolver(devices, BOUNDARY - 10)

    def fastest_ms() -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            gc.collect()
            times.append(time.perf_counter() - start)
        return min(times) * 1000

    gc.collect()
    before = fastest_ms()
    gc.freeze()
    try:
        after = fastest_ms()
    finally:
        gc.unfreeze()
    del roster, resolver
    return {
        "gc_full_collect_ms_100k": round(before * 100_000 / len(devices), 2),
        "gc_full_collect_ms_100k_frozen": round(after * 100_000 / len(devices), 2),
    }


def resolver_results(quick: bool = False) -> dict[str, Any]:
    """Every resolver number; `quick` skips the 1M build."""
    devices = _roster(100_000)
    results: dict[str, Any] = {"resolver_build_s_100k": round(build_s(devices), 3)}
    results.update(memory_mb(devices))
    results.update(loop_stall(devices))
    results["resolver_rollover_unsliced_ms"] = round(rollover_unsliced_ms(devices), 1)
    results.update(gc_full_collect_ms(devices))
    if not quick:
        del devices
        million = _roster(1_000_000)
        results["resolver_build_s_1m"] = round(build_s(million), 2)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 1M-device build")
    args = parser.parse_args()
    results = {"targets": RESOLVER_TARGETS, **resolver_results(quick=args.quick)}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
