"""Score entry-detector settings against the simulated entrance's ground truth.

    python -m benchmarks.presence_eval [--minutes 60] [--seeds 1 2 3]

Reports, per setting: entries of people who only walked past, members who walked in and were recognised
(recall, and per platform: Android and tags advertise, iPhones check in), and the delay from crossing
the door to the entry. Used to choose the defaults in edge/core/presence.py and, later, by door
calibration. Check-ins are fed as the verifier passes them on (edge/core/checkin.py is not timed here).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.core.wire import PLATFORMS, RosterDevice, Visit
from edge.demo.stats import percentile
from edge.sim.entrance import CheckinAttempt, EntranceConfig, StoreEntrance, make_members

T0 = 1_790_000_000.0


@dataclass(frozen=True, slots=True)
class Score:
    passers_entered: int
    passers: int
    recognised: int
    walked_in: int
    delay_s_p50: float | None
    delay_s_p95: float | None
    recall_by_platform: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "passers_entered": self.passers_entered,
            "passers": self.passers,
            "recall": round(self.recognised / self.walked_in, 3) if self.walked_in else None,
            "walked_in": self.walked_in,
            "delay_s_p50": self.delay_s_p50,
            "delay_s_p95": self.delay_s_p95,
            "recall_by_platform": self.recall_by_platform,
        }


def score(
    config: PresenceConfig, seed: int, minutes: float, passers_per_min: float = 40.0
) -> Score:
    members = make_members(4000, seed)
    entrance = StoreEntrance(
        EntranceConfig(
            seed=seed,
            start_unix_s=T0,
            duration_s=minutes * 60,
            arrivals_per_min=10.0,
            passers_per_min=passers_per_min,
        ),
        members,
    )
    roster = {
        m.ref: RosterDevice(m.ref, m.member, "gold", m.identity_key, m.exponent, m.kind)
        for m in members
    }
    ids = iter(range(10**9))
    pipeline = Pipeline(
        EidResolver(list(roster.values()), T0),
        PresenceTracker(config),
        OfferEngine(None),
        lambda: f"e{next(ids)}",
    )
    visits: list[Visit] = []
    for item in entrance.stream():
        if isinstance(item, CheckinAttempt):
            out = pipeline.check_in(roster[item.device.ref], item.t_s, item.rssi_dbm, 0.0)
        else:
            out = pipeline.feed(item, 0.0)
        visits += [e for e in out if isinstance(e, Visit)]
    truth = entrance.truth
    door = {p.device.member: p.door_time_s for p in truth.people if p.device is not None}
    passing = truth.passing_members()
    walked_in = truth.entered_members(until_s=truth.end_s - 60)
    first_entry = {}
    for v in visits:
        first_entry.setdefault(v.member, v.ts)
    delays = [first_entry[m] - door[m] for m in walked_in if m in first_entry]
    by_platform: dict[str, float | None] = {}
    for platform in PLATFORMS:
        entered = truth.entered_members(until_s=truth.end_s - 60, platform=platform)
        recalled = len(entered & first_entry.keys()) / len(entered) if entered else None
        by_platform[platform] = None if recalled is None else round(recalled, 3)
    p50, p95 = percentile(delays, 50), percentile(delays, 95)
    return Score(
        passers_entered=sum(1 for v in visits if v.member in passing),
        passers=len(passing),
        recognised=len(walked_in & first_entry.keys()),
        walked_in=len(walked_in),
        delay_s_p50=None if p50 is None else round(p50, 1),
        delay_s_p95=None if p95 is None else round(p95, 1),
        recall_by_platform=by_platform,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        results.append({"seed": seed, **score(PresenceConfig(), seed, args.minutes).as_dict()})
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
