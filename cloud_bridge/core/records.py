"""What the bridge does with one event, independent of the database behind it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cloud_bridge.core.pseudonyms import Serials, StorePseudonyms
from cloud_bridge.core.redemptions import Redemption, RedemptionClaim
from edge.core import wire


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """An event as received: where it came from (the topic is authoritative) and what it says."""

    gateway: wire.GatewayAddress
    event: wire.Event
    # Set by the bridge's admission check (cloud_bridge/core/admission.py): times outside its
    # tolerance. Such an event is kept in quarantine, acknowledged, and not counted.
    quarantine: str | None = None
    # Set by the admission check: a visit's end whose times contradict themselves
    # (admission.ForgeryReason). Kept in quarantine with the reason, acknowledged, counted as forged.
    forged: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    """An event kept out of the records because its times are outside the bridge's tolerance."""

    event_id: str
    kind: str
    store: str
    gateway: str
    ts: float | None  # None: not a finite number
    detected_at: float | None
    reason: str
    payload: str  # the event as received, JSON
    received_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "store": self.store,
            "gateway": self.gateway,
            "ts": self.ts,
            "detected_at": self.detected_at,
            "reason": self.reason,
            "event": json.loads(self.payload),
            "received_at": self.received_at,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """An offer waiting to reach a shopper's app."""

    offer_id: str
    shopper: str  # the member's opaque delivery token
    topic: str
    payload: bytes
    channel: str = "mqtt"  # how it goes: "mqtt" (to `topic`) or "webhook" (the push service)


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """The result of recording a batch: acks to send per gateway and offers to deliver."""

    acks: dict[wire.GatewayAddress, list[str]]
    deliveries: list[Delivery]
    new_visits: list[wire.Visit]
    new_offers: list[wire.OfferTrigger]
    duplicates: int
    suppressed: int = 0  # events of members who withdrew consent: acknowledged, not recorded
    unknown: int = 0  # events under pseudonyms this store was never given: acknowledged, dropped
    # Devices seen at two stores too far apart for the time between (cloned tags): new ones only.
    clone_alerts: list[wire.CloneAlert] = field(default_factory=list)
    quarantined: int = (
        0  # events with times outside the bridge's tolerance: acknowledged, kept aside
    )
    # Offers recorded suppressed, by reason (cloud_bridge/core/admission.py's OfferRefusal).
    refused_offers: dict[str, int] = field(default_factory=dict)
    new_visit_ends: list[wire.VisitEnd] = field(default_factory=list)
    # Visit ends that contradict themselves or their visit: acknowledged, never recorded as ends.
    forged: int = 0
    # Offers recorded `holdout` (issue 11): the member is in the campaign's control group.
    holdout: int = 0


class LoyaltyRecords(Protocol):
    """The loyalty records the bridge writes; SQLite by default, PostgreSQL at chain scale."""

    async def record(self, events: list[IncomingEvent], now_s: float) -> RecordOutcome: ...

    async def due_deliveries(
        self, now_s: float, resend_after_s: float, limit: int
    ) -> list[Delivery]:
        """Valid offers never handed to the broker, and those sent but not confirmed in time."""
        ...

    async def expire_offers(self, now_s: float) -> int:
        """Record as expired the offers not confirmed by their expiry; how many."""
        ...

    async def mark_sent(self, offer_ids: list[str], now_s: float) -> None: ...

    async def mark_received(
        self, shopper: str, offer_ids: list[str], now_s: float, status: str = "received"
    ) -> int: ...

    async def stores(self) -> list[str]: ...

    async def roster(self, store: str) -> wire.RosterSync:
        """The store's roster under the records' own ids: pseudonymized before it leaves."""
        ...

    async def rosters(self) -> list[wire.RosterSync]:
        """Every store's roster (as `roster`), the devices read once for all of them."""
        ...

    def pseudonyms(self, store: str) -> StorePseudonyms: ...

    async def serials(self) -> Serials: ...

    async def campaigns(self, store: str) -> wire.CampaignSync: ...

    async def refresh_audience(self, now_s: float) -> int:
        """Recompute members' segments and visits when due (issue 11); how many changed."""
        ...

    async def redeem(self, claim: RedemptionClaim, now_s: float) -> Redemption:
        """Record a redemption linked to its offer (issue 11), or raise RedemptionError."""
        ...

    async def sync_preference_terms(
        self, interests: tuple[str, ...], promotion_types: tuple[str, ...]
    ) -> Mapping[str, object]:
        """Make the chain's vocabulary accept exactly these terms; bits are never reused."""
        ...

    async def close(self) -> None: ...
