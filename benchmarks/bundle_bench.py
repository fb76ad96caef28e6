"""Roster bundle benchmarks (issue 4): the size of a full 100k bundle and of a 1 % delta, and the time
to build (bridge) and open (gateway) each. Numbers only; the targets are reported beside them.

    python -m benchmarks.bundle_bench [--devices N]

Sizes are the bytes published: MB = 10**6 bytes, kB = 10**3 bytes. A 1 % delta changes 1 % of the
roster: a third revoked, a third with a new identity key, a third newly enrolled.

Members' preferences (issue 10, `preference_sizes`), at 100k devices under store pseudonyms:

- `roster_bytes_per_device_format1_100k`: a full bundle's bytes per device in format 1 (no kind, no
  preferences); `..._format2_100k`: format 2 with every device's kind and 70 % of members with
  stated preferences (10 interests, 5 promotion types, frequencies 0..3 a day and 0..10 a week);
  `..._format2_all_stated_100k`: every member with preferences.
- `roster_bytes_per_device_format3_100k` (issue 11): format 3, as format 2 plus every member's
  segments (a mask 0..7) and visits in the last 365 days (0..40, most of them a few).
- `roster_mem_mb_100k_format1` / `_format2`: what the gateway holds for the opened roster
  (tracemalloc of `open_bundle(...).roster_after({})`, the bundle bytes excluded).
- `roster_prefs_delta_in_place_ms_100k`: applying a delta where 1 % of members changed their
  preferences to the resolver in force (`EidResolver.update`, on the event loop), against
  `roster_prefs_delta_rebuild_ms_100k`, building a resolver for the new roster, which every delta
  cost before (in a worker thread, but seconds of a core on a Pi).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import time
import tracemalloc
from typing import Any

from cloud_bridge.core.pseudonyms import Serials, StorePseudonyms, pseudonymize, store_key
from edge.core import bundle, wire
from edge.core.resolver import EidResolver
from edge.sim.entrance import make_members

BUNDLE_TARGETS = {
    "bundle_delta_kb_1pct": "<= 3 % of bundle_full_mb_100k",
}
_TIERS = ("bronze", "silver", "gold")


def _roster(n: int) -> dict[str, wire.RosterDevice]:
    return {
        m.ref: wire.RosterDevice(m.ref, m.member, _TIERS[i % 3], m.identity_key, m.exponent)
        for i, m in enumerate(make_members(n, seed=11))
    }


def _one_percent_changed(previous: dict[str, wire.RosterDevice]) -> dict[str, wire.RosterDevice]:
    current = dict(previous)
    refs = sorted(previous)
    changes = max(3, len(refs) // 100)
    third = changes // 3
    for ref in refs[:third]:
        del current[ref]
    for ref in refs[third : 2 * third]:
        old = current[ref]
        current[ref] = wire.RosterDevice(ref, old.member, old.tier, os.urandom(16), old.exponent)
    for i in range(changes - 2 * third):
        ref = f"d-new-{i:06d}"
        current[ref] = wire.RosterDevice(ref, f"m-new-{i:06d}", "gold", os.urandom(16), 10)
    return current


def bundle_sizes(devices: int = 100_000) -> dict[str, Any]:
    """Sizes of a full bundle of `devices` and of a 1 % delta, with build and open times."""
    signer = bundle.generate_signing_key(os.urandom)
    gateway = bundle.generate_gateway_key(os.urandom)
    address = {"chain": "acme", "store": "store-001", "gateway": "door-1"}

    def build(change: bundle.RosterChange, version: int) -> bytes:
        return bundle.build_bundle(
            change,
            **address,
            version=version,
            recipient_public_key=gateway.public_key(),
            signing_key=signer,
            random_bytes=os.urandom,
        )

    def open_(data: bytes, current_version: int) -> bundle.OpenedBundle:
        return bundle.open_bundle(
            data,
            gateway_private_key=gateway,
            trusted_signer_public_keys=[signer.public_key()],
            expected_chain=address["chain"],
            expected_store=address["store"],
            expected_gateway=address["gateway"],
            current_version=current_version,
        )

    previous = _roster(devices)
    current = _one_percent_changed(previous)
    # As the bridge sends them: every id a store pseudonym (26 characters, not the records' ids).
    serials = Serials(
        {ref: n for n, ref in enumerate(sorted(previous.keys() | current.keys()), 1)},
        {
            m: n
            for n, m in enumerate(
                sorted({d.member for d in [*previous.values(), *current.values()]}), 1
            )
        },
    )
    store = StorePseudonyms(store_key(os.urandom(32), address["chain"], address["store"]))

    start = time.perf_counter()
    planned = bundle.plan_sync(None, previous, None)
    start_pseudonyms = time.perf_counter()
    masked = pseudonymize(planned, serials, store)
    pseudonymize_s = time.perf_counter() - start_pseudonyms
    full = build(masked, 1)
    full_build_s = time.perf_counter() - start
    start = time.perf_counter()
    in_force = open_(full, 0).roster_after({})
    full_open_s = time.perf_counter() - start

    start = time.perf_counter()
    change = pseudonymize(bundle.plan_sync(previous, current, 1), serials, store)
    delta = build(change, 2)
    delta_build_s = time.perf_counter() - start
    start = time.perf_counter()
    after = open_(delta, 1).roster_after(in_force)
    delta_open_s = time.perf_counter() - start
    expected = pseudonymize(bundle.FullRoster(tuple(current.values())), serials, store)
    assert isinstance(expected, bundle.FullRoster)
    if not isinstance(change, bundle.RosterDelta) or after != {d.ref: d for d in expected.devices}:
        raise RuntimeError("the 1 % delta did not reproduce the changed roster")

    suffix = "100k" if devices == 100_000 else f"{devices}"
    return {
        f"bundle_full_mb_{suffix}": round(len(full) / 1e6, 3),
        "bundle_delta_kb_1pct": round(len(delta) / 1e3, 1),
        "bundle_delta_pct_of_full": round(100 * len(delta) / len(full), 2),
        f"bundle_full_build_s_{suffix}": round(full_build_s, 3),
        f"bundle_pseudonymize_s_{suffix}": round(pseudonymize_s, 3),
        f"bundle_full_open_s_{suffix}": round(full_open_s, 3),
        "bundle_delta_build_s_1pct": round(delta_build_s, 3),
        "bundle_delta_open_apply_s_1pct": round(delta_open_s, 3),
    }


def _stated(rng: random.Random) -> wire.MemberPrefs:
    """A member's preferences as a chain with 10 interests and 5 promotion types might see them."""
    interests = sum(1 << i for i in rng.sample(range(10), rng.randint(0, 4)))
    promotions = sum(1 << i for i in rng.sample(range(5), rng.randint(0, 3)))
    per_day = rng.choice((0, 1, 1, 2, 3))
    return wire.MemberPrefs(interests, promotions, per_day, max(per_day, rng.randint(0, 10)))


def _with_prefs(n: int, stated_share: float) -> dict[str, wire.RosterDevice]:
    rng = random.Random(12)
    by_member: dict[str, wire.MemberPrefs | None] = {}
    roster: dict[str, wire.RosterDevice] = {}
    for i, m in enumerate(make_members(n, seed=11)):
        if m.member not in by_member:
            by_member[m.member] = _stated(rng) if rng.random() < stated_share else None
        roster[m.ref] = wire.RosterDevice(
            m.ref, m.member, _TIERS[i % 3], m.identity_key, m.exponent, m.kind, by_member[m.member]
        )
    return roster


def _with_audience(roster: dict[str, wire.RosterDevice]) -> dict[str, wire.RosterDevice]:
    """`roster` with each member's segments and visit count (one per member, as the bridge
    computes them)."""
    rng = random.Random(14)
    by_member: dict[str, tuple[int, int]] = {}
    out: dict[str, wire.RosterDevice] = {}
    for ref, device in roster.items():
        if device.member not in by_member:
            by_member[device.member] = (rng.randrange(8), min(40, int(rng.expovariate(0.25))))
        segments, visits = by_member[device.member]
        out[ref] = dataclasses.replace(device, segments=segments, visits=visits)
    return out


def _open_memory_mb(open_: Any, data: bytes) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        roster = open_(data, 0).roster_after({})
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del roster
    return round(held / 1e6, 1)


def preference_sizes(devices: int = 100_000) -> dict[str, Any]:
    """Bytes per device of a full bundle with and without members' preferences, the gateway's
    memory for the opened roster, and the cost of a delta of changed preferences."""
    signer = bundle.generate_signing_key(os.urandom)
    gateway = bundle.generate_gateway_key(os.urandom)
    address = {"chain": "acme", "store": "store-001", "gateway": "door-1"}
    plain = _roster(devices)
    stated = _with_prefs(devices, 0.7)
    everyone = _with_prefs(devices, 1.0)
    refs = sorted(stated)
    serials = Serials(
        {ref: n for n, ref in enumerate(refs, 1)},
        {m: n for n, m in enumerate(sorted({d.member for d in stated.values()}), 1)},
    )
    store = StorePseudonyms(store_key(os.urandom(32), address["chain"], address["store"]))

    def build(roster: dict[str, wire.RosterDevice], bundle_format: int) -> bytes:
        change = pseudonymize(bundle.plan_sync(None, roster, None), serials, store)
        return bundle.build_bundle(
            change,
            **address,
            version=1,
            recipient_public_key=gateway.public_key(),
            signing_key=signer,
            random_bytes=os.urandom,
            bundle_format=bundle_format,
        )

    def open_(data: bytes, current_version: int) -> bundle.OpenedBundle:
        return bundle.open_bundle(
            data,
            gateway_private_key=gateway,
            trusted_signer_public_keys=[signer.public_key()],
            expected_chain=address["chain"],
            expected_store=address["store"],
            expected_gateway=address["gateway"],
            current_version=current_version,
        )

    format1 = build(plain, 1)
    format2 = build(stated, 2)
    format2_all = build(everyone, 2)
    format3 = build(_with_audience(stated), 3)

    # A delta of 1 % of members restating their preferences, applied as the gateway does.
    rng = random.Random(13)
    in_force = open_(format2, 0).roster_after({})
    changed = rng.sample(sorted(in_force), devices // 100)
    rotate = [dataclasses.replace(in_force[ref], prefs=_stated(rng)) for ref in changed]
    now = time.time()
    resolver = EidResolver(tuple(in_force.values()), now)
    after = bundle.apply_delta(in_force, bundle.RosterDelta(1, rotate=tuple(rotate)))
    start = time.perf_counter()
    resolver.update(rotate)
    in_place_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    EidResolver(tuple(after.values()), now)
    rebuild_ms = (time.perf_counter() - start) * 1000

    suffix = "100k" if devices == 100_000 else f"{devices}"
    return {
        f"roster_bytes_per_device_format1_{suffix}": round(len(format1) / devices, 1),
        f"roster_bytes_per_device_format2_{suffix}": round(len(format2) / devices, 1),
        f"roster_bytes_per_device_format2_all_stated_{suffix}": round(
            len(format2_all) / devices, 1
        ),
        f"roster_bytes_per_device_format3_{suffix}": round(len(format3) / devices, 1),
        f"roster_mem_mb_{suffix}_format1": _open_memory_mb(open_, format1),
        f"roster_mem_mb_{suffix}_format2": _open_memory_mb(open_, format2),
        f"roster_prefs_delta_in_place_ms_{suffix}": round(in_place_ms, 2),
        f"roster_prefs_delta_rebuild_ms_{suffix}": round(rebuild_ms, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps({**bundle_sizes(args.devices), **preference_sizes(args.devices)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
