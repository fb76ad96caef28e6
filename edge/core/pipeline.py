"""The gateway's decision path, advert in, events out: frame → identity → presence → offer.

Pure and synchronous. Adverts that resolve to no enrolled device are dropped here, counted and nothing
else: no address, payload or EID of theirs is kept beyond the bounded classification cache, logged or
returned.

Each entry opens a visit, remembered per member (its `visit` event id, device, platform); when the
presence tracker ends it (edge/core/presence.py: not heard for the visit timeout) the pipeline emits
its `visit_end`, from `feed`, `check_in`, `housekeeping` or `clock_stepped`, whichever notices first.
Open visits outlive a restart: the gateway saves what `visits_to_save` returns and hands them back to
`restore_visits` at start-up (edge/core/visits.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from edge.core.advert import RawAdvert
from edge.core.frames import Classified, FrameKind, classify_advert
from edge.core.offers import OfferDecision, OfferEngine, Withheld
from edge.core.presence import PresenceTracker, VisitTimes
from edge.core.resolver import EidResolver
from edge.core.visits import OpenVisit
from edge.core.wire import (
    Event,
    OfferTrigger,
    Platform,
    RosterDevice,
    Visit,
    VisitEnd,
    VisitEndReason,
)

# Addresses remembered with their last bytes. A door hears a few hundred devices at a time, and
# phones rotate their address every ~15 min; when the table is full it is cleared (memory stays bounded,
# and a flood of made-up addresses costs re-parsing, never memory).
ADDRESS_CACHE_MAX = 8192
HOUSEKEEPING_EVERY_S = 1.0
# The resolver precomputes the EIDs of the window after next a slice at a time, so that no window
# rollover stalls the event loop (issue 4: no stall over 20 ms). A slice of 500 EIDs takes ~4.5 ms on
# the reference machine (a Pi 4 is several times slower); while work remains, housekeeping comes every
# 0.125 s of radio time: ~4,000 EIDs a second, 100k devices in ~30 s, far inside the shortest window in
# use (2**8 s). What a slice leaves undone at the next boundary is finished there (late_rebuilds).
RESOLVER_EIDS_PER_STEP = 500
RESOLVER_STEP_EVERY_S = 0.125


class AdvertClassifier:
    """Classifies adverts, skipping the parse when an address repeats the bytes it sent last.

    A device repeats the same advert until its EID, its payload or its address rotates, so nearly every
    advert is a repeat (habluetooth's base_scanner skips work the same way). The cache holds addresses
    and payloads of unresolved devices in memory only, bounded by `max_addresses`.
    """

    __slots__ = ("_last", "_max", "hits", "misses")

    def __init__(self, max_addresses: int = ADDRESS_CACHE_MAX) -> None:
        if max_addresses < 1:
            raise ValueError("max_addresses must be >= 1")
        self._last: dict[str, tuple[bytes, Classified]] = {}
        self._max = max_addresses
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._last)

    def classify(self, address: str, payload: bytes) -> Classified:
        """Classify `payload` heard from `address`; never raises."""
        last = self._last.get(address)
        if last is not None and last[0] == payload:
            self.hits += 1
            return last[1]
        self.misses += 1
        classified = classify_advert(payload)
        if last is None and len(self._last) >= self._max:
            self._last.clear()
        self._last[address] = (payload, classified)
        return classified


@dataclass(slots=True)
class PipelineCounters:
    """What the pipeline has seen since start; published in the gateway's status."""

    adverts: int = 0
    malformed: int = 0
    eid_frames: int = 0  # adverts carrying an EID: Eddystone-EID and the app frame
    resolved: int = 0
    unresolved: int = 0
    ignored: int = 0  # well-formed adverts that are not EID frames: other beacons, phones, noise
    checkins: int = 0  # accepted iPhone check-ins (refusals are counted by the verifier)
    entries: int = 0
    offers: int = 0
    visits_ended: int = 0  # visit_end events, whatever their reason
    # Entries without an offer, by why (edge/core/offers.py; none counted without a campaign for
    # the member's tier): nothing the member asked for among the campaigns of their tier; their
    # per_day / per_week reached, or no offers wanted; a cooldown.
    offers_withheld_prefs: int = 0
    offers_withheld_frequency: int = 0
    offers_withheld_cooldown: int = 0
    # Issue 11: no campaign of the tier running now (its schedule, store's local time); none for
    # the member's segments or visit count; the member had each one's per_member_day / _week; this
    # gateway's share of each one's daily budget spent.
    offers_withheld_schedule: int = 0
    offers_withheld_audience: int = 0
    offers_withheld_campaign_cap: int = 0
    offers_withheld_budget: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _OpenVisit:
    """What the pipeline remembers of a member's open visit (the tracker keeps its times)."""

    visit_id: str
    device: str
    platform: Platform | None
    saved_heard_s: float | None = None  # last_heard_s as last handed out to save; None: never


class Pipeline:
    """Turns adverts into Visit, VisitEnd and OfferTrigger events."""

    def __init__(
        self,
        resolver: EidResolver,
        presence: PresenceTracker,
        offers: OfferEngine,
        new_event_id: Callable[[], str],
    ) -> None:
        self.resolver = resolver
        self.presence = presence
        self.offers = offers
        self.counters = PipelineCounters()
        self._new_event_id = new_event_id
        self.classifier = AdvertClassifier()
        #: Adverts by what they are, every FrameKind present (aliases share their member's count).
        self.frame_counts: dict[FrameKind, int] = dict.fromkeys(FrameKind, 0)
        self._next_housekeeping_s = float("-inf")
        self.last_malformed_reason: str | None = None
        #: Each member's open visit, by member.
        self._open: dict[str, _OpenVisit] = {}

    def feed(self, advert: RawAdvert, wall_s: float) -> list[Event]:
        """Process one advert heard at radio time advert.t_s; `wall_s` stamps events' detected_at."""
        counters = self.counters
        counters.adverts += 1
        t_s = advert.t_s
        ended: list[Event] = []
        if t_s >= self._next_housekeeping_s:
            ended = self.housekeeping(t_s, wall_s)
        classified = self.classifier.classify(advert.address, advert.payload)
        self.frame_counts[classified.kind] += 1
        eid = classified.eid
        if eid is None:
            if classified.kind is FrameKind.MALFORMED:
                counters.malformed += 1
                self.last_malformed_reason = classified.reason
            else:
                counters.ignored += 1
            return ended
        counters.eid_frames += 1
        device = self.resolver.resolve(eid)
        if device is None:
            counters.unresolved += 1
            return ended
        counters.resolved += 1
        platform: Platform = "tag" if device.kind == "tag" else "android"
        events = self._sighting(device, t_s, advert.rssi_dbm, wall_s, platform)
        return ended + events if ended else events

    def check_in(
        self, device: RosterDevice, t_s: float, rssi_dbm: float, wall_s: float
    ) -> list[Event]:
        """One accepted iPhone check-in (edge/core/checkin.py): a sighting like an advert's."""
        counters = self.counters
        counters.checkins += 1
        ended: list[Event] = []
        if t_s >= self._next_housekeeping_s:
            ended = self.housekeeping(t_s, wall_s)
        return ended + self._sighting(device, t_s, rssi_dbm, wall_s, "ios")

    def _sighting(
        self, device: RosterDevice, t_s: float, rssi_dbm: float, wall_s: float, platform: Platform
    ) -> list[Event]:
        counters = self.counters
        presence = self.presence
        entry = presence.observe(device, t_s, rssi_dbm)
        # A visit over since the timeout, found by this sighting before housekeeping came round:
        # ended before the member's next visit opens.
        events = self._end(presence.take_ended(), "timeout", wall_s) if presence.ended else []
        if entry is None:
            return events
        counters.entries += 1
        visit = Visit(
            event_id=self._new_event_id(),
            ts=t_s,
            detected_at=wall_s,
            member=device.member,
            device=device.ref,
            tier=device.tier,
            rssi_dbm=entry.rssi_dbm,
            platform=platform,
        )
        self._open[device.member] = _OpenVisit(visit.event_id, device.ref, platform)
        events.append(visit)
        decision = self.offers.evaluate(
            device.member,
            device.tier,
            t_s,
            device.prefs,
            segments=device.segments,
            visits=device.visits,
        )
        if not isinstance(decision, OfferDecision):
            if decision is Withheld.PREFERENCES:
                counters.offers_withheld_prefs += 1
            elif decision is Withheld.FREQUENCY:
                counters.offers_withheld_frequency += 1
            elif decision is Withheld.COOLDOWN:
                counters.offers_withheld_cooldown += 1
            elif decision is Withheld.SCHEDULE:
                counters.offers_withheld_schedule += 1
            elif decision is Withheld.AUDIENCE:
                counters.offers_withheld_audience += 1
            elif decision is Withheld.CAMPAIGN_CAP:
                counters.offers_withheld_campaign_cap += 1
            elif decision is Withheld.BUDGET:
                counters.offers_withheld_budget += 1
            return events
        counters.offers += 1
        trigger = OfferTrigger(
            event_id=self._new_event_id(),
            visit_id=visit.event_id,
            ts=t_s,
            detected_at=wall_s,
            member=device.member,
            device=device.ref,
            tier=device.tier,
            campaign=decision.campaign.id,
        )
        events.append(trigger)
        return events

    def feed_many(self, adverts: Iterable[RawAdvert], wall_s: float) -> list[Event]:
        """Process a batch of adverts that arrived together."""
        events: list[Event] = []
        for advert in adverts:
            out = self.feed(advert, wall_s)
            if out:
                events.extend(out)
        return events

    def clock_stepped(
        self, now_s: float, step_s: float, wall_s: float | None = None
    ) -> list[Event]:
        """The wall clock stepped by `step_s` to `now_s`: roll the resolver's windows there at once,
        completely, move presence tracks with the clock, and housekeep on from the new time (after
        a step back, the old schedule would not come round for as long as the step). Returns the
        ends of visits that timed out; `wall_s` (default `now_s`) stamps their detected_at."""
        self.resolver.advance(now_s)
        self.presence.shift_time(step_s)
        ended = self._end(
            self.presence.expire(now_s), "timeout", now_s if wall_s is None else wall_s
        )
        self._next_housekeeping_s = now_s + HOUSEKEEPING_EVERY_S
        return ended

    def housekeeping(self, now_s: float, wall_s: float | None = None) -> list[Event]:
        """Slide the resolver's windows, precompute a slice of the next, close visits that timed out
        or reached max_visit_s (radio time); return their ends, stamped detected_at `wall_s`
        (default `now_s`)."""
        pending = self.resolver.advance(now_s, max_eids=RESOLVER_EIDS_PER_STEP)
        ended = self.presence.expire(now_s)
        capped = self.presence.cap(now_s)
        every_s = RESOLVER_STEP_EVERY_S if pending else HOUSEKEEPING_EVERY_S
        self._next_housekeeping_s = now_s + every_s
        if not ended and not capped:
            return []
        wall = now_s if wall_s is None else wall_s
        return self._end(ended, "timeout", wall) + self._end(capped, "max_length", wall)

    def _end(self, ended: list[VisitTimes], reason: VisitEndReason, wall_s: float) -> list[Event]:
        """The visit_end events of visits the tracker closed (those the pipeline opened)."""
        events: list[Event] = []
        for times in ended:
            visit = self._open.pop(times.member, None)
            if visit is not None:
                events.append(self._visit_end(times, visit, reason, wall_s))
        return events

    def _visit_end(
        self, times: VisitTimes, visit: _OpenVisit, reason: VisitEndReason, wall_s: float
    ) -> VisitEnd:
        self.counters.visits_ended += 1
        return VisitEnd(
            event_id=self._new_event_id(),
            visit_id=visit.visit_id,
            ts=times.last_near_s,
            detected_at=wall_s,
            member=times.member,
            device=visit.device,
            entered_at=times.entered_at_s,
            duration_s=max(0.0, times.last_near_s - times.entered_at_s),
            reason=reason,
            platform=visit.platform,
        )

    @property
    def open_visits(self) -> int:
        """How many visits are open (reported, not yet ended)."""
        return len(self._open)

    def visits_to_save(self) -> tuple[list[OpenVisit], list[OpenVisit]]:
        """The open visits to write: (opened since the last call, heard since they were last
        handed out). Each is handed out once per change; the caller saves what it is given."""
        opened: list[OpenVisit] = []
        refreshed: list[OpenVisit] = []
        for member, visit in self._open.items():
            times = self.presence.visit(member)
            if times is None or times.last_heard_s == visit.saved_heard_s:
                continue
            (opened if visit.saved_heard_s is None else refreshed).append(
                OpenVisit(
                    visit.visit_id,
                    member,
                    visit.device,
                    visit.platform,
                    times.entered_at_s,
                    times.last_near_s,
                    times.last_heard_s,
                )
            )
            visit.saved_heard_s = times.last_heard_s
        return opened, refreshed

    def restore_visits(
        self, visits: Iterable[OpenVisit], now_s: float, wall_s: float
    ) -> list[Event]:
        """Take back the visits the last run left open, at start-up (radio time `now_s`).

        A visit last heard within the visit timeout is open again: a sighting within the timeout
        continues it (no second entry), and it ends as any other. One last heard longer ago ends
        now, at its last sighting near the door, reason "restart"; so does one last heard more
        than the timeout *ahead* of now (timed by a clock that was ahead: kept open, it would
        outlast every sighting until this clock caught up). A member with several (only a
        tampered file can hold that) keeps the latest; the others end, reason "restart".
        """
        timeout_s = self.presence.config.visit_timeout_s
        events: list[Event] = []
        for saved in sorted(visits, key=lambda v: v.last_heard_s, reverse=True):
            times = VisitTimes(
                saved.member, saved.entered_at_s, saved.last_near_s, saved.last_heard_s
            )
            visit = _OpenVisit(saved.visit_id, saved.device, saved.platform, saved.last_heard_s)
            if abs(now_s - saved.last_heard_s) > timeout_s or saved.member in self._open:
                events.append(self._visit_end(times, visit, "restart", wall_s))
                continue
            self.presence.restore(times)
            self._open[saved.member] = visit
        return events
