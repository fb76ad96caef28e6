"""Score entry-detector settings against the simulated entrance's ground truth.

    python -m benchmarks.presence_eval [--minutes 60] [--seeds 1 2 3]

Reports, per setting: entries of people who only walked past, members who walked in and were recognised
(recall, and per platform: Android and tags advertise, iPhones check in), the delay from crossing
the door to the entry, and the time in store the visits' ends measure against the simulator's truth
(exit_time_s - door_time_s): `time_in_store_error_p50` is the median of |measured - true| / true over
the members who walked in and out (target: under 0.10). Used to choose the defaults in
edge/core/presence.py and, later, by door calibration. Check-ins are fed as the verifier passes them on
(edge/core/checkin.py is not timed here).
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
from edge.core.wire import PLATFORMS, RosterDevice, Visit, VisitEnd
from edge.demo.stats import percentile
from edge.sim.entrance import (
    CheckinAttempt,
    EntranceConfig,
    GroundTruth,
    StoreEntrance,
    make_members,
)

T0 = 1_790_000_000.0
#: Visits whose shopper left this close to the run's end are not scored: the radio stops at the end,
#: and the rule may still have been hearing them near the door.
END_MARGIN_S = 60.0


@dataclass(frozen=True, slots=True)
class Score:
    passers_entered: int
    passers: int
    recognised: int
    walked_in: int
    delay_s_p50: float | None
    delay_s_p95: float | None
    stay: TimeInStore
    recall_by_platform: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "passers_entered": self.passers_entered,
            "passers": self.passers,
            "recall": round(self.recognised / self.walked_in, 3) if self.walked_in else None,
            "walked_in": self.walked_in,
            "delay_s_p50": self.delay_s_p50,
            "delay_s_p95": self.delay_s_p95,
            **self.stay.as_dict(),
            "recall_by_platform": self.recall_by_platform,
        }


@dataclass(frozen=True, slots=True)
class TimeInStore:
    """Visits' measured time in store against the truth, over the members who walked in and out."""

    scored: int  # members who walked in and out, with an ended visit
    missed: int  # members who walked in and out, with no ended visit (not recognised)
    split: int  # members whose stay was reported as more than one visit
    errors: tuple[float, ...]  # (measured - true) / true, per scored member
    measured_s: tuple[float, ...]
    true_s: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        abs_errors = [abs(e) for e in self.errors]
        measured, true = percentile(self.measured_s, 50), percentile(self.true_s, 50)
        return {
            "visits_scored": self.scored,
            "visits_missed": self.missed,
            "visits_split": self.split,
            "time_in_store_error_p50": _round(percentile(abs_errors, 50), 3),
            "time_in_store_error_p95": _round(percentile(abs_errors, 95), 3),
            "time_in_store_bias_p50": _round(percentile(self.errors, 50), 3),
            "time_in_store_s_p50": _round(measured, 1),
            "true_time_in_store_s_p50": _round(true, 1),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def time_in_store(ends: list[VisitEnd], truth: GroundTruth) -> TimeInStore:
    """Score visit ends (members as the simulator names them) against the truth. A member whose
    stay was split into several visits counts from the first entered_at to the last end."""
    spans: dict[str, tuple[float, float, int]] = {}
    for end in ends:
        first, last, n = spans.get(end.member, (end.entered_at, end.ts, 0))
        spans[end.member] = (min(first, end.entered_at), max(last, end.ts), n + 1)
    true = truth.time_in_store_s(truth.end_s - END_MARGIN_S)
    errors, measured_s, true_s = [], [], []
    split = 0
    for member, true_stay_s in sorted(true.items()):
        span = spans.get(member)
        if span is None or true_stay_s <= 0:
            continue
        first, last, n = span
        split += n > 1
        errors.append((last - first - true_stay_s) / true_stay_s)
        measured_s.append(last - first)
        true_s.append(true_stay_s)
    return TimeInStore(
        len(errors),
        len(true) - len(errors),
        split,
        tuple(errors),
        tuple(measured_s),
        tuple(true_s),
    )


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
    events = []
    for item in entrance.stream():
        if isinstance(item, CheckinAttempt):
            out = pipeline.check_in(roster[item.device.ref], item.t_s, item.rssi_dbm, 0.0)
        else:
            out = pipeline.feed(item, 0.0)
        events += out
    # The radio stops at the run's end: every visit still open times out after it.
    end_s = T0 + minutes * 60 + config.visit_timeout_s + 1
    events += pipeline.housekeeping(end_s, end_s)
    visits = [e for e in events if isinstance(e, Visit)]
    ends = [e for e in events if isinstance(e, VisitEnd)]
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
        stay=time_in_store(ends, truth),
        recall_by_platform=by_platform,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    stays: list[TimeInStore] = []
    for seed in args.seeds:
        scored = score(PresenceConfig(), seed, args.minutes)
        stays.append(scored.stay)
        results.append({"seed": seed, **scored.as_dict()})
    results.append({"seeds": args.seeds, **pooled(stays).as_dict()})
    print(json.dumps(results, indent=2))
    return 0


def pooled(stays: list[TimeInStore]) -> TimeInStore:
    """Several runs' time-in-store scores as one."""
    return TimeInStore(
        sum(s.scored for s in stays),
        sum(s.missed for s in stays),
        sum(s.split for s in stays),
        tuple(e for s in stays for e in s.errors),
        tuple(m for s in stays for m in s.measured_s),
        tuple(t for s in stays for t in s.true_s),
    )


def time_in_store_results(quick: bool = False) -> dict[str, Any]:
    """`make bench`'s time-in-store accuracy: the default config, three seeds pooled."""
    minutes = 20.0 if quick else 60.0
    stay = pooled([score(PresenceConfig(), seed, minutes).stay for seed in (1, 2, 3)])
    return stay.as_dict()


if __name__ == "__main__":
    raise SystemExit(main())
