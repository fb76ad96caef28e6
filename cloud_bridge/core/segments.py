"""A member's audience, as campaigns target it (issue 11): the segments they are in, and their visits.

The bridge computes it from the member's visits at every store (a gateway sees only its own), and each
roster device carries it (`RosterDevice.segments`, `.visits`) for the gateway to match campaigns'
`segments`, `min_visits` and `max_visits` offline. With the bridge config's `[segments]`:

- **new**: their first visit was within the last `new_days` days, or they have not visited yet;
- **regular**: at least `regular_visits` visits in the last `regular_days` days;
- **lapsed**: they have visited, but not in the last `lapsed_days` days.

A member may be in several (a first visit last week and four since: new and regular), or none.
`visits` counts the visits of the last 365 days, capped at wire.MAX_COUNTED_VISITS. "The last N days"
is the N × 24 h before now. A visit is one recorded visit event: a shopper carrying both an app and a
tag is heard as two.

Segments change with each visit and with time alone (a regular lapses without doing anything), so the
bridge recomputes them when it records a visit and periodically (SqliteLoyaltyRecords.refresh_audience).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge.core import wire

DAY_S = 86400.0
YEAR_DAYS = 365
#: Bits of RosterDevice.segments (bit i is wire.SEGMENTS[i]).
NEW_BIT = 1 << wire.SEGMENTS.index("new")
REGULAR_BIT = 1 << wire.SEGMENTS.index("regular")
LAPSED_BIT = 1 << wire.SEGMENTS.index("lapsed")


@dataclass(frozen=True, slots=True)
class SegmentPolicy:
    """The bridge config's `[segments]` (days and a visit count, each >= 1)."""

    new_days: int = 30
    regular_visits: int = 4
    regular_days: int = 30
    lapsed_days: int = 60

    def regular_since(self, now_s: float) -> float:
        """Visits after this instant count towards `regular`."""
        return now_s - self.regular_days * DAY_S

    @staticmethod
    def year_since(now_s: float) -> float:
        """Visits after this instant count in `visits`."""
        return now_s - YEAR_DAYS * DAY_S


@dataclass(frozen=True, slots=True)
class VisitSummary:
    """What the segments need of a member's visits: the first and last (None: no visit), and how
    many fall after `SegmentPolicy.regular_since` and `year_since` (one query grouped by member)."""

    first_ts: float | None = None
    last_ts: float | None = None
    recent: int = 0
    in_year: int = 0


@dataclass(frozen=True, slots=True)
class Audience:
    """A member's segments (bit mask over wire.SEGMENTS) and counted visits, as a roster carries them."""

    segments: int
    visits: int

    def names(self) -> tuple[wire.Segment, ...]:
        return tuple(s for i, s in enumerate(wire.SEGMENTS) if self.segments >> i & 1)


#: A member never heard at any store: new, no visits.
NO_VISITS = Audience(NEW_BIT, 0)


def summarize(visit_ts: Iterable[float], now_s: float, policy: SegmentPolicy) -> VisitSummary:
    """The summary of a member's visit times (radio time, any store), as of `now_s`."""
    times = list(visit_ts)
    if not times:
        return VisitSummary()
    regular_since, year_since = policy.regular_since(now_s), policy.year_since(now_s)
    return VisitSummary(
        min(times),
        max(times),
        sum(1 for t in times if t > regular_since),
        sum(1 for t in times if t > year_since),
    )


def audience_of(summary: VisitSummary, now_s: float, policy: SegmentPolicy) -> Audience:
    """The member's audience as of `now_s`, from the summary of their visits."""
    if summary.first_ts is None or summary.last_ts is None:
        return NO_VISITS
    segments = 0
    if summary.first_ts > now_s - policy.new_days * DAY_S:
        segments |= NEW_BIT
    if summary.recent >= policy.regular_visits:
        segments |= REGULAR_BIT
    if summary.last_ts <= now_s - policy.lapsed_days * DAY_S:
        segments |= LAPSED_BIT
    return Audience(segments, max(0, min(summary.in_year, wire.MAX_COUNTED_VISITS)))


def audience(visit_ts: Iterable[float], now_s: float, policy: SegmentPolicy) -> Audience:
    """The member's audience as of `now_s`, from their visit times (radio time, any store)."""
    return audience_of(summarize(visit_ts, now_s, policy), now_s, policy)
