"""The report (issue 11): visits, members, time in store, campaign funnels and holdout lift, without I/O.

Inputs are plain rows (the SQLite adapter aggregates the heavy ones in SQL: visits per store per
local hour, one row per member, one per campaign/channel/delivery state, one per lift subject);
outputs are frozen dataclasses with `to_json()`. Every figure is defined in docs/reports.md; the
definitions are restated here where they are computed.

Time zones: a period given as local dates or local times means each store's own local time, so a
store in Sydney and one in New York each report their own 1 November. Local days and hours come
from each store's IANA zone (zoneinfo), DST included.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from statistics import NormalDist
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_bridge.errors import BridgeError

DAY_S = 86400.0
DEFAULT_RETURN_DAYS = 30
MAX_RETURN_DAYS = 366
#: Two-sided 95 %: the standard normal's 0.975 quantile (1.959963984540054).
Z_95 = NormalDist().inv_cdf(0.975)
#: Time-in-store histogram: 5-minute bins up to 2 hours, then one bin for longer visits.
DURATION_BIN_S = 300.0
DURATION_BINS = 24
#: Visit frequency: members by visits in the period, in these bins (the last is open-ended).
FREQUENCY_BINS: tuple[tuple[int, int | None], ...] = (
    (1, 1),
    (2, 2),
    (3, 3),
    (4, 4),
    (5, 9),
    (10, 19),
    (20, None),
)
DELIVERY_STATES = ("pending", "sent", "received", "expired", "dead", "holdout", "suppressed")
CHANNELS = ("mqtt", "webhook")
NOT_ENOUGH_DATA = "not enough data"
#: The report covers visits from 2000-01-01 to 2100-01-01 (UTC) at most.
EARLIEST_S = 946_684_800.0
LATEST_S = 4_102_444_800.0

_LOCAL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


class InvalidReportQuery(BridgeError):
    """A report parameter the bridge refuses; `field` names it (from, to, store, ...)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# --- the period ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bound:
    """One end of the period: an instant (Unix seconds), or a local wall time at each store."""

    instant: float | None = None
    local: datetime | None = None  # naive: the wall time in each store's own zone

    def at(self, zone: ZoneInfo) -> float:
        """The Unix time of this bound at a store in `zone`."""
        if self.instant is not None:
            return self.instant
        assert self.local is not None
        return self.local.replace(tzinfo=zone).timestamp()

    def to_json(self) -> str:
        if self.instant is not None:
            return datetime.fromtimestamp(self.instant, UTC).isoformat().replace("+00:00", "Z")
        assert self.local is not None
        return self.local.isoformat()


def parse_bound(text: str, field: str, *, end: bool) -> Bound:
    """`--from`/`--to`: a local date (YYYY-MM-DD), a local time (YYYY-MM-DDTHH:MM[:SS]), both in
    each store's zone, or an instant with its offset (...Z, ...+01:00). An end date is inclusive:
    `--to 2026-11-30` ends at the start of 1 December."""
    text = text.strip()
    try:
        if _LOCAL_DATE.match(text):
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day)
            return Bound(local=start + timedelta(days=1) if end else start)
        if _LOCAL_TIME.match(text):
            return Bound(local=datetime.fromisoformat(text))
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidReportQuery(
            field,
            f"{text[:40]!r} is not a date or time: give YYYY-MM-DD or YYYY-MM-DDTHH:MM (each "
            "store's local time) or an ISO instant with its offset (2026-11-01T00:00:00Z)",
        )
    return Bound(instant=parsed.timestamp())


def check_return_days(value: int) -> int:
    if not 1 <= value <= MAX_RETURN_DAYS:
        raise InvalidReportQuery(
            "return_days", f"{value} is outside 1..{MAX_RETURN_DAYS}: give a number of days"
        )
    return value


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """What a report covers: [start, end) at each store, some stores and campaigns (empty: all)."""

    start: Bound | None = None  # None: from the first record
    end: Bound | None = None  # None: until `now`
    stores: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    return_days: int = DEFAULT_RETURN_DAYS

    def bounds(self, zone: ZoneInfo, now: float, first: float) -> tuple[float, float]:
        """[start, end) in Unix seconds at a store in `zone`; `first`: its first visit. Kept
        within EARLIEST_S..LATEST_S: a forged time far off must not make the report walk
        millennia of days."""
        start = first if self.start is None else self.start.at(zone)
        end = now if self.end is None else self.end.at(zone)
        return min(max(start, EARLIEST_S), LATEST_S), min(max(end, EARLIEST_S), LATEST_S)


def report_query(
    start: str | None,
    end: str | None,
    stores: Sequence[str],
    campaigns: Sequence[str],
    return_days: int,
) -> ReportQuery:
    """The report's query from its parameters as given (CLI options, API query); repeated ids
    count once. InvalidReportQuery naming the bad one."""
    first = None if start is None else parse_bound(start, "from", end=False)
    last = None if end is None else parse_bound(end, "to", end=True)
    if first is not None and last is not None and _not_before(first, last):
        raise InvalidReportQuery("to", f"{end!r} is not after the start {start!r}")
    return ReportQuery(
        first,
        last,
        tuple(dict.fromkeys(s.strip() for s in stores if s.strip())),
        tuple(dict.fromkeys(c.strip() for c in campaigns if c.strip())),
        check_return_days(return_days),
    )


def _not_before(first: Bound, last: Bound) -> bool:
    """Whether `last` is at or before `first`, when both are local times or both instants (a
    local time and an instant compare differently at each store)."""
    if first.local is not None and last.local is not None:
        return first.local >= last.local
    if first.instant is not None and last.instant is not None:
        return first.instant >= last.instant
    return False


def offset_spans(zone: ZoneInfo, start: float, end: float) -> list[tuple[float, float, int]]:
    """[start, end) cut where `zone`'s UTC offset changes: (from, to, offset_s) spans.

    Offsets are sampled once a day and each change found to the second by bisection: zones change
    offset at most a few times a year, never twice within a day."""

    def offset(t: float) -> int:
        delta = datetime.fromtimestamp(t, zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    spans: list[tuple[float, float, int]] = []
    if end <= start:
        return spans
    begin, current = start, offset(start)
    probe = start
    while probe < end:
        step = min(probe + DAY_S, end)
        found = offset(step) if step < end else current
        if found != current:
            low, high = probe, step  # offset(low) == current != offset(high)
            while high - low > 1.0:
                middle = math.floor((low + high) / 2)
                if offset(middle) == current:
                    low = middle
                else:
                    high = middle
            spans.append((begin, high, current))
            begin, current = high, offset(high)
        probe = step
    spans.append((begin, end, current))
    return spans


# --- inputs (rows) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreInfo:
    id: str
    name: str
    timezone: str
    #: Why the stored time zone was not used (it is not an IANA zone: reported in UTC), or "".
    note: str = ""


def usable_store(store: StoreInfo) -> StoreInfo:
    """`store`, or the same store in UTC with a note if its stored time zone is not an IANA zone
    (one bad row must not stop every report)."""
    try:
        ZoneInfo(store.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return StoreInfo(
            store.id,
            store.name,
            "UTC",
            f"stored time zone {store.timezone[:64]!r} is not an IANA zone; reported in UTC",
        )
    return store


@dataclass(frozen=True, slots=True)
class MemberVisits:
    """One member's visits at the selected stores: `visits` in the period, the first of them
    (`first_ts`), whether they visited before the period, and the next visit after the first
    (`next_ts`, None: none)."""

    member: str
    visits: int
    first_ts: float
    visited_before: bool
    next_ts: float | None


@dataclass(frozen=True, slots=True)
class OfferTally:
    """Offers of one campaign, channel and delivery state decided in the period: how many, and how
    many of them were sent, received, opened, dismissed and redeemed."""

    campaign: str
    channel: str
    delivery: str
    decided: int
    sent: int
    received: int
    opened: int
    dismissed: int
    redeemed: int


@dataclass(frozen=True, slots=True)
class LiftSubject:
    """A member's first offer (not suppressed) of a campaign in the period: the group it put them
    in (control: holdout), when its visit was, whether they came back (a visit at any store within
    return_days after it), and whether they redeemed any offer of the campaign in the period."""

    campaign: str
    member: str
    control: bool
    decided_ts: float
    returned: bool
    redeemed: bool


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    id: str
    title: str
    holdout_pct: float
    status: str


# --- statistics ---------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (Wilson 1927; Newcombe 1998, method 3)."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1 (the arithmetic leaves a rounding error).
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


def newcombe_interval(
    x1: int, n1: int, x2: int, n2: int, z: float = Z_95
) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper): Newcombe's hybrid score interval for a difference of independent
    proportions, without continuity correction (Newcombe, R. G. 1998, "Interval estimation for the
    difference between independent proportions: comparison of eleven methods", Statistics in
    Medicine 17:873-890, method 10): with (l_i, u_i) each proportion's Wilson interval,
    lower = d - sqrt((p1 - l1)^2 + (u2 - p2)^2), upper = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lower), min(1.0, upper)


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least pct % of values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


_EPOCH_DAY = date(1970, 1, 1)
#: A period longer than this (about ten years) lists only the days with visits.
MAX_FILLED_DAYS = 3700


# --- outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreVisits:
    store: str
    name: str
    timezone: str
    start: float
    end: float
    visits: int
    by_day: tuple[tuple[str, int], ...]  # (local date, visits), every day of the period
    by_hour: tuple[int, ...]  # 24 counts, local hour of day
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "name": self.name,
            "timezone": self.timezone,
            "from": _instant(self.start),
            "to": _instant(self.end),
            "visits": self.visits,
            "by_day": [{"date": day, "visits": n} for day, n in self.by_day],
            "by_hour": list(self.by_hour),
            "note": self.note or None,
        }


@dataclass(frozen=True, slots=True)
class Members:
    """Unique members, returning ones, visit frequency and the N-day come-back cohort."""

    unique: int
    returning: int
    new: int
    return_rate: float | None
    visits: int
    mean_visits: float | None
    median_visits: float | None
    frequency: tuple[tuple[str, int], ...]
    cohort_days: int
    cohort_eligible: int
    cohort_came_back: int
    cohort_rate: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "unique": self.unique,
            "returning": self.returning,
            "new": self.new,
            "return_rate": self.return_rate,
            "visits": self.visits,
            "visits_per_member_mean": self.mean_visits,
            "visits_per_member_median": self.median_visits,
            "frequency": [{"visits": label, "members": n} for label, n in self.frequency],
            "came_back": {
                "days": self.cohort_days,
                "eligible": self.cohort_eligible,
                "came_back": self.cohort_came_back,
                "rate": self.cohort_rate,
            },
        }


@dataclass(frozen=True, slots=True)
class TimeInStore:
    store: str  # "" : every selected store
    visits: int  # ended visits measured
    median_s: float | None
    p90_s: float | None
    mean_s: float | None
    histogram: tuple[int, ...]  # DURATION_BINS bins of DURATION_BIN_S, then longer

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store or None,
            "visits": self.visits,
            "median_s": self.median_s,
            "p90_s": self.p90_s,
            "mean_s": self.mean_s,
            "histogram": {
                "bin_s": DURATION_BIN_S,
                "counts": list(self.histogram),
            },
        }


@dataclass(frozen=True, slots=True)
class Funnel:
    decided: int = 0
    sent: int = 0
    received: int = 0
    opened: int = 0
    dismissed: int = 0
    redeemed: int = 0

    def plus(self, t: OfferTally) -> Funnel:
        return Funnel(
            self.decided + t.decided,
            self.sent + t.sent,
            self.received + t.received,
            self.opened + t.opened,
            self.dismissed + t.dismissed,
            self.redeemed + t.redeemed,
        )

    def to_json(self) -> dict[str, int]:
        return {
            "decided": self.decided,
            "sent": self.sent,
            "received": self.received,
            "opened": self.opened,
            "dismissed": self.dismissed,
            "redeemed": self.redeemed,
        }


@dataclass(frozen=True, slots=True)
class Lift:
    """Return within `days` after the decided visit: treatment against control (the holdout)."""

    days: int
    treatment: int
    treatment_returned: int
    control: int
    control_returned: int
    pending: int  # subjects whose window had not ended when the report was made
    treatment_rate: float | None
    control_rate: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    relative: float | None
    treatment_redeemed: int
    redemption_rate: float | None

    @property
    def enough(self) -> bool:
        return self.treatment > 0 and self.control > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "return_days": self.days,
            "treatment": {
                "members": self.treatment,
                "returned": self.treatment_returned,
                "rate": self.treatment_rate,
                "redeemed": self.treatment_redeemed,
                "redemption_rate": self.redemption_rate,
            },
            "control": {
                "members": self.control,
                "returned": self.control_returned,
                "rate": self.control_rate,
            },
            "pending": self.pending,
            "difference": self.difference,
            "ci95": None if self.ci_low is None else [self.ci_low, self.ci_high],
            "ci_method": "Newcombe hybrid score (1998, method 10)",
            "relative_lift": self.relative,
            "verdict": None if self.enough else NOT_ENOUGH_DATA,
        }


@dataclass(frozen=True, slots=True)
class CampaignReport:
    campaign: str
    title: str
    holdout_pct: float
    status: str
    funnel: Funnel
    states: tuple[tuple[str, int], ...]  # delivery state -> offers
    by_channel: tuple[tuple[str, Funnel], ...]
    lift: Lift

    @property
    def open_rate(self) -> float | None:
        return _ratio(self.funnel.opened, self.funnel.sent)

    @property
    def conversion(self) -> float | None:
        return _ratio(self.funnel.redeemed, self.funnel.sent)

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "title": self.title,
            "holdout_pct": self.holdout_pct,
            "status": self.status,
            "offers": self.funnel.to_json(),
            "delivery": dict(self.states),
            "by_channel": {channel: f.to_json() for channel, f in self.by_channel},
            "open_rate": self.open_rate,
            "conversion": self.conversion,
            "lift": self.lift.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Report:
    query: ReportQuery
    generated_at: float
    stores: tuple[StoreVisits, ...]
    members: Members
    time_in_store: tuple[TimeInStore, ...]  # every store first (store ""), then each store
    campaigns: tuple[CampaignReport, ...]
    by_hour: tuple[int, ...] = field(default=())  # every selected store, local hour of day

    @property
    def visits(self) -> int:
        return sum(s.visits for s in self.stores)

    def by_day(self) -> tuple[tuple[str, int], ...]:
        """Visits per local date, every selected store added up (each store's own local date)."""
        days: dict[str, int] = {}
        for store in self.stores:
            for day, n in store.by_day:
                days[day] = days.get(day, 0) + n
        return tuple(sorted(days.items()))

    def to_json(self) -> dict[str, Any]:
        q = self.query
        return {
            "version": 1,
            "generated_at": _instant(self.generated_at),
            "query": {
                "from": None if q.start is None else q.start.to_json(),
                "to": None if q.end is None else q.end.to_json(),
                "stores": list(q.stores),
                "campaigns": list(q.campaigns),
                "return_days": q.return_days,
            },
            "visits": {
                "total": self.visits,
                "by_day": [{"date": d, "visits": n} for d, n in self.by_day()],
                "by_hour": list(self.by_hour),
                "stores": [s.to_json() for s in self.stores],
            },
            "members": self.members.to_json(),
            "time_in_store": [t.to_json() for t in self.time_in_store],
            "campaigns": [c.to_json() for c in self.campaigns],
        }


def _instant(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# --- computing ----------------------------------------------------------------------------------


def store_visits(
    store: StoreInfo, start: float, end: float, hours: Iterable[tuple[int, int]]
) -> StoreVisits:
    """A store's visits per local date (every date of its period, zeros included) and per local
    hour of day, from (local hour, visits) rows: local hours counted from 1970-01-01T00:00 local."""
    zone = ZoneInfo(store.timezone)
    day_counts: dict[int, int] = {}
    by_hour = [0] * 24
    total = 0
    for local_hour, visits in hours:
        day_number, hour = divmod(local_hour, 24)
        day_counts[day_number] = day_counts.get(day_number, 0) + visits
        by_hour[hour] += visits
        total += visits
    days = {_EPOCH_DAY + timedelta(days=d): n for d, n in day_counts.items()}
    if end > start:
        first = datetime.fromtimestamp(start, zone).date()
        last = datetime.fromtimestamp(end - 0.001, zone).date()  # end is excluded
        if (last - first).days <= MAX_FILLED_DAYS:
            day = first
            while day <= last:
                days.setdefault(day, 0)
                day += timedelta(days=1)
    return StoreVisits(
        store.id,
        store.name,
        store.timezone,
        start,
        end,
        total,
        tuple((d.isoformat(), n) for d, n in sorted(days.items())),
        tuple(by_hour),
        store.note,
    )


def members_figures(rows: Iterable[MemberVisits], horizon: float, return_days: int) -> Members:
    """Members of the period (at least one visit in it at a selected store):
    - returning: those who had also visited a selected store before the period; new: the others;
      return rate = returning / unique;
    - frequency: visits in the period per member (mean, median, bins);
    - came back within N days: of the members whose first visit in the period is at least N days
      before `horizon` (when the report is made: the whole window is seen, even past the
      period's end), those with another visit at a selected store in (first, first + N days]."""
    window = return_days * DAY_S
    counts: list[int] = []
    returning = eligible = came_back = 0
    for row in rows:
        counts.append(row.visits)
        returning += row.visited_before
        if row.first_ts + window <= horizon:
            eligible += 1
            if row.next_ts is not None and row.next_ts <= row.first_ts + window:
                came_back += 1
    counts.sort()
    unique = len(counts)
    total = sum(counts)
    bins = []
    for low, high in FREQUENCY_BINS:
        n = sum(1 for c in counts if c >= low and (high is None or c <= high))
        label = str(low) if high == low else (f"{low}+" if high is None else f"{low}-{high}")
        bins.append((label, n))
    median: float | None = None
    if counts:
        middle = unique // 2
        median = float(counts[middle]) if unique % 2 else (counts[middle - 1] + counts[middle]) / 2
    return Members(
        unique,
        returning,
        unique - returning,
        _ratio(returning, unique),
        total,
        total / unique if unique else None,
        median,
        tuple(bins),
        return_days,
        eligible,
        came_back,
        _ratio(came_back, eligible),
    )


def time_in_store(store: str, durations_s: Iterable[float]) -> TimeInStore:
    """Ended visits' durations (visit end - entry): count, median and p90 (nearest rank), mean,
    and a histogram of 5-minute bins up to 2 hours plus one for longer."""
    values = sorted(durations_s)
    edges = [bisect_left(values, i * DURATION_BIN_S) for i in range(1, DURATION_BINS + 1)]
    histogram = [b - a for a, b in zip([0, *edges], [*edges, len(values)], strict=True)]
    return TimeInStore(
        store,
        len(values),
        percentile(values, 50),
        percentile(values, 90),
        math.fsum(values) / len(values) if values else None,
        tuple(histogram),
    )


def lift(subjects: Iterable[LiftSubject], horizon: float, return_days: int) -> Lift:
    """Treatment (first offer not holdout) against control (holdout), among subjects whose
    `return_days` window ended by `horizon` (when the report is made): return rates, their
    difference with Newcombe's 95 % interval, relative lift (rate_t / rate_c - 1) and the
    treatment's redemption rate."""
    window = return_days * DAY_S
    t = t_returned = c = c_returned = pending = t_redeemed = 0
    for s in subjects:
        if s.decided_ts + window > horizon:
            pending += 1
        elif s.control:
            c += 1
            c_returned += s.returned
        else:
            t += 1
            t_returned += s.returned
            t_redeemed += s.redeemed
    rate_t, rate_c = _ratio(t_returned, t), _ratio(c_returned, c)
    difference = low = high = relative = None
    if t and c:
        difference, low, high = newcombe_interval(t_returned, t, c_returned, c)
        assert rate_t is not None and rate_c is not None
        relative = rate_t / rate_c - 1 if rate_c else None
    return Lift(
        return_days,
        t,
        t_returned,
        c,
        c_returned,
        pending,
        rate_t,
        rate_c,
        difference,
        low,
        high,
        relative,
        t_redeemed,
        _ratio(t_redeemed, t),
    )


def campaign_reports(
    campaigns: Sequence[CampaignInfo],
    tallies: Iterable[OfferTally],
    subjects: Iterable[LiftSubject],
    horizon: float,
    return_days: int,
) -> tuple[CampaignReport, ...]:
    """Each campaign's funnel (decided, sent, received, opened, dismissed, redeemed), delivery
    states, channels and lift. A campaign with offers but no campaigns row is reported by its id."""
    funnels: dict[str, Funnel] = {}
    states: dict[str, dict[str, int]] = {}
    channels: dict[str, dict[str, Funnel]] = {}
    for t in tallies:
        funnels[t.campaign] = funnels.get(t.campaign, Funnel()).plus(t)
        by_state = states.setdefault(t.campaign, dict.fromkeys(DELIVERY_STATES, 0))
        by_state[t.delivery] = by_state.get(t.delivery, 0) + t.decided
        by_channel = channels.setdefault(t.campaign, {})
        by_channel[t.channel] = by_channel.get(t.channel, Funnel()).plus(t)
    grouped: dict[str, list[LiftSubject]] = {}
    for s in subjects:
        grouped.setdefault(s.campaign, []).append(s)
    known = {c.id: c for c in campaigns}
    ids = sorted(set(known) | set(funnels))
    reports = []
    for campaign in ids:
        info = known.get(campaign, CampaignInfo(campaign, campaign, 0.0, "unknown"))
        reports.append(
            CampaignReport(
                campaign,
                info.title,
                info.holdout_pct,
                info.status,
                funnels.get(campaign, Funnel()),
                tuple(states.get(campaign, dict.fromkeys(DELIVERY_STATES, 0)).items()),
                tuple(sorted(channels.get(campaign, {}).items())),
                lift(grouped.get(campaign, ()), horizon, return_days),
            )
        )
    return tuple(reports)
