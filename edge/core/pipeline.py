"""The gateway's decision path, advert in, events out: frame → identity → presence → offer.

Pure and synchronous. Adverts that resolve to no enrolled device are dropped here, counted and nothing
else: no address, payload or EID of theirs is kept beyond the bounded parse cache, logged or returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from edge.core.advert import RawAdvert
from edge.core.frames import Classified, FrameKind, classify_advert
from edge.core.offers import OfferEngine
from edge.core.presence import PresenceTracker
from edge.core.resolver import EidResolver
from edge.core.wire import Event, OfferTrigger, Visit

PARSE_CACHE_MAX = (
    4096  # distinct payloads; phones repeat the same bytes until the EID or MAC rotates
)
HOUSEKEEPING_EVERY_S = 1.0


@dataclass(slots=True)
class PipelineCounters:
    """What the pipeline has seen since start; published in the gateway's status."""

    adverts: int = 0
    malformed: int = 0
    eid_frames: int = 0
    resolved: int = 0
    unresolved: int = 0
    ignored: int = 0  # well-formed adverts that are not EID frames: other beacons, phones, noise
    entries: int = 0
    offers: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Pipeline:
    """Turns adverts into Visit and OfferTrigger events."""

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
        self._parse_cache: dict[bytes, Classified] = {}
        self._next_housekeeping_s = float("-inf")
        self.last_malformed_reason: str | None = None

    def feed(self, advert: RawAdvert, wall_s: float) -> list[Event]:
        """Process one advert heard at radio time advert.t_s; `wall_s` stamps events' detected_at."""
        counters = self.counters
        counters.adverts += 1
        t_s = advert.t_s
        if t_s >= self._next_housekeeping_s:
            self.housekeeping(t_s)
        payload = advert.payload
        classified = self._parse_cache.get(payload)
        if classified is None:
            classified = classify_advert(payload)
            if len(self._parse_cache) >= PARSE_CACHE_MAX:
                self._parse_cache.clear()
            self._parse_cache[payload] = classified
        eid = classified.eid
        if eid is None:
            if classified.kind is FrameKind.MALFORMED:
                counters.malformed += 1
                self.last_malformed_reason = classified.reason
            else:
                counters.ignored += 1
            return []
        counters.eid_frames += 1
        device = self.resolver.resolve(eid)
        if device is None:
            counters.unresolved += 1
            return []
        counters.resolved += 1
        entry = self.presence.observe(device, t_s, advert.rssi_dbm)
        if entry is None:
            return []
        counters.entries += 1
        visit = Visit(
            event_id=self._new_event_id(),
            ts=t_s,
            detected_at=wall_s,
            member=device.member,
            device=device.ref,
            tier=device.tier,
            rssi_dbm=entry.rssi_dbm,
        )
        decision = self.offers.decide(device.member, device.tier, t_s)
        if decision is None:
            return [visit]
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
        return [visit, trigger]

    def feed_many(self, adverts: Iterable[RawAdvert], wall_s: float) -> list[Event]:
        """Process a batch of adverts that arrived together."""
        events: list[Event] = []
        for advert in adverts:
            out = self.feed(advert, wall_s)
            if out:
                events.extend(out)
        return events

    def housekeeping(self, now_s: float) -> None:
        """Slide the resolver's windows and close visits that timed out (radio time)."""
        self.resolver.advance(now_s)
        self.presence.expire(now_s)
        self._next_housekeeping_s = now_s + HOUSEKEEPING_EVERY_S
