"""`edge-gateway replay`: run a capture through the gateway's pipeline as fast as it goes.

The pipeline runs on the capture's own clock (radio time), so EID windows and presence behave as they
did at the door. A broken line is reported (line number, field, what is expected) and skipped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from edge.core import wire
from edge.core.capture import CaptureError, parse_capture_line
from edge.core.frames import BEACON_KINDS, FrameKind
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver

#: The keys of `frames` in the JSON report, in order: the six beacon formats, then the rest.
FRAME_KEYS = (*(kind.value for kind in BEACON_KINDS), "app", "other", "malformed")


def frame_key(kind: FrameKind) -> str:
    """The report key an advert of `kind` is counted under."""
    if kind in BEACON_KINDS:
        return kind.value
    if kind is FrameKind.APP:
        return "app"
    if kind is FrameKind.MALFORMED:
        return "malformed"
    return "other"  # noise and anything else well-formed


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay counted.

    `frames["malformed"]` counts adverts that break the format they claim (one of the six beacon
    formats or the app frame) or whose AD structures themselves are broken.
    """

    adverts: int
    frames: dict[str, int]
    resolved: int  # adverts that resolved to a device of the roster
    entries: int  # members the presence detector saw walk in
    skipped_lines: int
    elapsed_s: float

    @property
    def adverts_per_s(self) -> float:
        return self.adverts / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The `--json` document; its keys are a contract (issue 3)."""
        return {
            "adverts": self.adverts,
            "frames": dict(self.frames),
            "resolved": self.resolved,
            "adverts_per_s": round(self.adverts_per_s, 1),
        }


def replay_lines(
    lines: Iterable[str],
    devices: Iterable[wire.RosterDevice],
    on_error: Callable[[CaptureError], None],
    *,
    skew_windows: int = 1,
    presence: PresenceConfig | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ReplayReport:
    """Feed every good line of a capture through a pipeline; report each broken line to `on_error`.

    The resolver is built at the first advert's time, before the clock starts: the speed measured is
    that of reading, parsing and deciding, not of precomputing the roster's EIDs.
    """
    ids = itertools.count()
    pipeline: Pipeline | None = None
    skipped = 0
    start = 0.0
    for line_no, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue  # a blank line (often the last) is not an advert
        try:
            advert = parse_capture_line(line, line_no)
        except CaptureError as exc:
            skipped += 1
            on_error(exc)
            continue
        if pipeline is None:
            pipeline = Pipeline(
                EidResolver(devices, advert.t_s, skew_windows),
                PresenceTracker(presence or PresenceConfig()),
                OfferEngine(None),
                lambda: f"replay-{next(ids)}",
            )
            start = clock()
        pipeline.feed(advert, advert.t_s)
    elapsed = clock() - start if pipeline is not None else 0.0
    frames = dict.fromkeys(FRAME_KEYS, 0)
    if pipeline is None:
        return ReplayReport(0, frames, 0, 0, skipped, 0.0)
    for kind, count in pipeline.frame_counts.items():
        frames[frame_key(kind)] += count
    c = pipeline.counters
    return ReplayReport(c.adverts, frames, c.resolved, c.entries, skipped, elapsed)


def print_report(report: ReplayReport, source: str, enrolled: int | None, out: TextIO) -> None:
    """The readable table `edge-gateway replay` prints without --json."""
    n = report.skipped_lines
    skipped = f" ({n:,} broken line{'' if n == 1 else 's'} skipped)" if n else ""
    print(f"replay of {source}: {report.adverts:,} adverts{skipped}", file=out)
    print(f"  {'frame':<16}{'adverts':>10}{'share':>8}", file=out)
    for key in FRAME_KEYS:
        count = report.frames[key]
        share = 100.0 * count / report.adverts if report.adverts else 0.0
        print(f"  {key:<16}{count:>10,}{share:>7.1f}%", file=out)
    if enrolled is None:
        print("  resolved        (no --roster: nothing can resolve)", file=out)
    else:
        print(
            f"  resolved      {report.resolved:>12,}  adverts of {enrolled:,} enrolled devices",
            file=out,
        )
        print(f"  entries       {report.entries:>12,}  members seen walking in", file=out)
    print(
        f"  speed         {report.adverts_per_s:>12,.0f}  adverts/s ({report.elapsed_s:.3f} s)",
        file=out,
    )
