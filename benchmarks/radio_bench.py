"""Radio-path benchmarks (issue 3): parsing, parsing + resolving, and replaying a capture.

Every advert is handed over as a fresh `bytes` payload and a fresh address string, as a real radio
delivers them: the simulator reuses one object per device, whose cached hash and identity compare
would flatter the numbers.

    python -m benchmarks.radio_bench [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.core import frames, wire
from edge.core.advert import RawAdvert
from edge.core.capture import format_advert_line
from edge.core.frames import classify_advert
from edge.core.pipeline import AdvertClassifier
from edge.core.resolver import EidResolver
from edge.sim.entrance import EntranceConfig, SimDevice, StoreEntrance, make_members

T0 = 1_790_000_000.0
RADIO_TARGETS = {
    "parse_resolve_adverts_per_s": ">= 100000 (one core, 100k enrolled)",
}


def _roster(members: list[SimDevice]) -> list[wire.RosterDevice]:
    tiers = ("bronze", "silver", "gold")
    return [
        wire.RosterDevice(m.ref, m.member, tiers[i % 3], m.identity_key, m.exponent)
        for i, m in enumerate(members)
    ]


def _other_formats() -> list[bytes]:
    """Beacons the simulator does not make, so every decoder is on the measured path."""
    return [
        frames.altbeacon_advert(bytes(range(20))),
        frames.eddystone_url_advert("https://www.example.com/door"),
        frames.eddystone_tlm_advert(3000, 21.5, 123_456, 86_400.0),
        frames.eddystone_etlm_advert(bytes(12), 0x1234, 0xABCD),
        frames.app_advert(bytes.fromhex("0102030405060708")),
    ]


def door_traffic(members: list[SimDevice], minutes: float, seed: int = 5) -> list[RawAdvert]:
    """Mixed store-door traffic: the simulator's busy door, plus one advert in 20 of the formats
    it does not make (AltBeacon, Eddystone-URL/TLM/eTLM, app frame) from a few fixed beacons."""
    entrance = StoreEntrance(
        EntranceConfig(
            seed=seed,
            start_unix_s=T0,
            duration_s=minutes * 60,
            arrivals_per_min=30.0,
            passers_per_min=60.0,
            noise_devices=80,
        ),
        members,
    )
    extra = _other_formats()
    out: list[RawAdvert] = []
    for i, advert in enumerate(entrance.adverts()):
        out.append(advert)
        if i % 20 == 19:
            k = (i // 20) % len(extra)
            out.append(RawAdvert(advert.t_s, f"C0:00:00:00:00:{k:02X}", -80, extra[k]))
    return out


def _fresh(adverts: list[RawAdvert]) -> list[tuple[str, bytes]]:
    """(address, payload) pairs as new objects, as a radio hands them over."""
    return [(a.address.encode().decode(), bytes(bytearray(a.payload))) for a in adverts]


def parse_adverts_per_s(quick: bool = False) -> dict[str, Any]:
    """Classification only, every advert parsed (no cache): the cost of a first sighting."""
    adverts = door_traffic(make_members(2_000, seed=5), minutes=3 if quick else 10)
    pairs = _fresh(adverts)
    start = time.perf_counter()
    for _, payload in pairs:
        classify_advert(payload)
    elapsed = time.perf_counter() - start
    return {
        "parse_adverts_per_s": round(len(pairs) / elapsed),
        "parse_adverts": len(pairs),
    }


def parse_resolve_adverts_per_s(quick: bool = False) -> dict[str, Any]:
    """Classify and resolve with 100k enrolled devices, as the gateway's hot path does.

    The resolver slides its EID windows as radio time passes; that upkeep (a window rollover
    recomputes the EIDs of every device of one rotation exponent) is not per-advert work, so it is
    timed apart: `parse_resolve_window_upkeep_s` over `parse_resolve_radio_s` of door traffic.

    `parse_resolve_adverts_per_s` uses the pipeline's per-address cache (skip the parse when an
    address repeats its bytes); `parse_resolve_uncached_adverts_per_s` parses every advert.
    """
    enrolled = 100_000
    members = make_members(enrolled, seed=11)
    resolver = EidResolver(_roster(members), T0)
    adverts = door_traffic(members, minutes=3 if quick else 10, seed=11)
    pairs = _fresh(adverts)
    times = [a.t_s for a in adverts]

    def run(classify: Any) -> tuple[float, float, int]:
        resolver.advance(T0)
        resolved = 0
        next_advance = T0
        advance_s = 0.0
        resolve = resolver.resolve
        clock = time.perf_counter
        start = clock()
        for t, (address, payload) in zip(times, pairs, strict=True):
            if t >= next_advance:
                # Sliding the EID windows (Pipeline.housekeeping, once a second of radio time) is
                # roster upkeep, not per-advert work: it is timed apart and reported on its own.
                a0 = clock()
                resolver.advance(t)
                advance_s += clock() - a0
                next_advance = t + 1.0
            eid = classify(address, payload).eid
            if eid is not None and resolve(eid) is not None:
                resolved += 1
        return clock() - start - advance_s, advance_s, resolved

    cached_s, advance_s, resolved = run(AdvertClassifier().classify)
    uncached_s, _, _ = run(lambda _address, payload: classify_advert(payload))
    return {
        "parse_resolve_adverts_per_s": round(len(pairs) / cached_s),
        "parse_resolve_uncached_adverts_per_s": round(len(pairs) / uncached_s),
        "parse_resolve_adverts": len(pairs),
        "parse_resolve_resolved": resolved,
        "parse_resolve_enrolled": enrolled,
        "parse_resolve_window_upkeep_s": round(advance_s, 3),
        "parse_resolve_radio_s": round(times[-1] - times[0], 1),
    }


def replay_adverts_per_s(quick: bool = False) -> dict[str, Any]:
    """`edge-gateway replay --json --roster` on a capture of ~100k lines (10k enrolled devices).

    `replay_adverts_per_s` is the tool's own figure (reading, parsing and deciding; the roster's
    EIDs are precomputed before its clock starts); `replay_total_s` is the whole command.
    """
    from edge.cli import main

    members = make_members(10_000, seed=5)
    adverts = door_traffic(members, minutes=2 if quick else 8)
    lines = 0
    with tempfile.TemporaryDirectory(prefix="threshold-replay-") as tmp:
        capture = Path(tmp) / "capture.jsonl"
        roster = Path(tmp) / "roster.json"
        with capture.open("w", encoding="utf-8") as out:
            for advert in adverts[:100_000]:
                out.write(format_advert_line(advert) + "\n")
                lines += 1
        roster.write_bytes(wire.encode(wire.RosterSync("store-001", 1, tuple(_roster(members)))))
        stdout = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(stdout):
            code = main(["replay", str(capture), "--json", "--roster", str(roster)])
        total_s = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"edge-gateway replay exited {code}")
    report = json.loads(stdout.getvalue())
    return {
        "replay_adverts_per_s": round(report["adverts_per_s"]),
        "replay_adverts": report["adverts"],
        "replay_capture_lines": lines,
        "replay_resolved": report["resolved"],
        "replay_total_s": round(total_s, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (for a smoke check)")
    args = parser.parse_args()
    results: dict[str, Any] = {"targets": RADIO_TARGETS}
    results.update(parse_adverts_per_s(args.quick))
    results.update(parse_resolve_adverts_per_s(args.quick))
    results.update(replay_adverts_per_s(args.quick))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
