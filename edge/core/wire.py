"""The wire contract between gateways, the cloud bridge and shopper apps: MQTT topics and payloads.

Written once and imported by both `edge` and `cloud_bridge`. Every payload is UTF-8 JSON with a version
`"v"` and a `"type"`. `decode` treats the bytes as hostile: a size limit checked before parsing, then
msgspec decodes them against the payload's schema (types, finite numbers in range, ids by pattern,
bounded strings, lists and objects, no free-form nesting), and any failure is a `WireError` naming
where the payload came from (the topic) and the field (msgspec's path, e.g. `$.event_ids[3]`).
Fields a receiver does not know are skipped (forward compatibility, docs/mqtt.md); nesting deeper
than the schema allows is refused without recursion. docs/mqtt.md shows every topic with an example
payload; tests/contract/ keeps golden copies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
from msgspec import Meta

WIRE_VERSION = 1
TOPIC_ROOT = "threshold/v1"
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)

#: Largest payload accepted on any topic but a roster bundle: events, acks, receipts, statuses,
#: offers, campaigns, alerts. Checked before parsing; the bridge's MQTT client asks the broker for
#: nothing larger (MQTT 5 Maximum Packet Size, `MAX_BRIDGE_PACKET_BYTES`).
MAX_PAYLOAD_BYTES = 64 * 1024
#: Largest roster bundle (and roster at rest) accepted: a full bundle at 100k devices is ~18 MB.
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
#: MQTT 5 Maximum Packet Size for each client: the payload limit plus room for the fixed header,
#: topic and properties. The broker drops (never sends) larger messages to that client.
PACKET_OVERHEAD_BYTES = 4 * 1024
MAX_BRIDGE_PACKET_BYTES = MAX_PAYLOAD_BYTES + PACKET_OVERHEAD_BYTES
MAX_GATEWAY_PACKET_BYTES = MAX_BUNDLE_BYTES + PACKET_OVERHEAD_BYTES
#: Most event ids in one ack: the bridge splits larger batches (an ack must fit MAX_PAYLOAD_BYTES).
MAX_ACK_IDS = 1000
#: Largest version number (rosters, campaigns): fits SQLite's INTEGER.
MAX_VERSION = 2**63 - 1
#: Most interests, and most promotion types, a chain may name: each is one bit of a roster mask.
MAX_PREFERENCE_TERMS = 63  # a mask fits a signed 64-bit integer (SQLite, msgspec)
#: The highest frequency a member may state (offers in any 24 h, in any 7 days).
MAX_OFFERS_PER_DAY = 24
MAX_OFFERS_PER_WEEK = 100

#: Every chain's gateways' events (a bridge subscribes to its own chain's: `event_filter`).
EVENT_FILTER = f"{TOPIC_ROOT}/+/+/+/event/+"
#: Every chain's shopper apps' receipts of offers (a bridge: `receipt_filter`).
RECEIPT_FILTER = f"{TOPIC_ROOT}/+/shopper/+/receipt"
#: What fleet monitoring and the bridge subscribe to: every gateway's retained status.
STATUS_FILTER = f"{TOPIC_ROOT}/+/+/+/status"
#: What IT monitoring subscribes to: every chain's bridge alerts (cloned tags).
ALERTS_FILTER = f"{TOPIC_ROOT}/+/bridge/alerts"


def event_filter(chain: str) -> str:
    """One chain's gateways' events: what a bridge of that chain subscribes to (shared)."""
    return f"{TOPIC_ROOT}/{check_id(chain, 'chain')}/+/+/event/+"


def receipt_filter(chain: str) -> str:
    """One chain's shopper apps' receipts (shared by the chain's bridge instances)."""
    return f"{TOPIC_ROOT}/{check_id(chain, 'chain')}/shopper/+/receipt"


def status_filter(chain: str) -> str:
    """One chain's gateways' retained statuses."""
    return f"{TOPIC_ROOT}/{check_id(chain, 'chain')}/+/+/status"


class WireError(ValueError):
    """A payload or topic that does not follow the contract; `reason` says what and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_id(value: str, what: str) -> str:
    """Return `value` if it is a valid topic segment id (lowercase, digits, '-', '_'), else raise."""
    if not _ID_RE.match(value):
        raise WireError(
            f"{what} {value!r} is not a valid id: use 1-64 of a-z, 0-9, '-', '_' "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    """Where a gateway sits in the topic tree: chain / store / gateway."""

    chain: str
    store: str
    gateway: str

    def __post_init__(self) -> None:
        check_id(self.chain, "chain")
        check_id(self.store, "store")
        check_id(self.gateway, "gateway")

    @property
    def prefix(self) -> str:
        return f"{TOPIC_ROOT}/{self.chain}/{self.store}/{self.gateway}"


EventKind = Literal["visit", "offer"]
#: How a member was heard (docs/iphone-checkin.md): an Android app's EID advert, an iPhone app's GATT
#: check-in, a key-fob tag's EID advert.
Platform = Literal["android", "ios", "tag"]
PLATFORMS: tuple[Platform, ...] = ("android", "ios", "tag")
#: What an enrolled device is (the enrollment's kind): a shopper app on a phone, or a key-fob tag.
DeviceKind = Literal["app", "tag"]
#: Why a visit ended (docs/mqtt.md): not heard near the door for the visit timeout; the gateway was
#: down longer than the timeout and closes it at the last time it heard the member; or it lasted the
#: gateway's longest visit (a tag left in the store).
VisitEndReason = Literal["timeout", "restart", "max_length"]


def status_topic(gw: GatewayAddress) -> str:
    """Retained gateway status; also the gateway's last will (state "offline")."""
    return f"{gw.prefix}/status"


def event_topic(gw: GatewayAddress, kind: EventKind) -> str:
    """Gateway → bridge events, QoS 1."""
    return f"{gw.prefix}/event/{kind}"


def ack_topic(gw: GatewayAddress) -> str:
    """Bridge → gateway acknowledgements of recorded events, QoS 1."""
    return f"{gw.prefix}/ack"


def roster_bundle_topic(gw: GatewayAddress) -> str:
    """Bridge → one gateway: its signed roster bundle, sealed to its key (edge/core/bundle.py), retained."""
    return f"{gw.prefix}/sync/roster"


def campaigns_topic(gw: GatewayAddress) -> str:
    """Bridge → one gateway: its store's campaigns, signed for this topic (edge/core/signed.py),
    retained."""
    return f"{gw.prefix}/sync/campaigns"


def shopper_offer_topic(chain: str, shopper: str) -> str:
    """Bridge → one shopper's app: offers, QoS 1. `shopper` is an opaque delivery token."""
    return f"{TOPIC_ROOT}/{chain}/shopper/{shopper}/offer"


def shopper_receipt_topic(chain: str, shopper: str) -> str:
    """One shopper's app → bridge: which offers it has received, QoS 1."""
    return f"{TOPIC_ROOT}/{chain}/shopper/{shopper}/receipt"


def bridge_alerts_topic(chain: str) -> str:
    """Bridge → IT monitoring: security alerts (cloned tags), QoS 1, not retained."""
    return f"{TOPIC_ROOT}/{check_id(chain, 'chain')}/bridge/alerts"


def bridge_status_topic(chain: str, bridge_id: str) -> str:
    """One bridge instance → IT monitoring: its health, retained; also its last will ("offline")."""
    return f"{TOPIC_ROOT}/{check_id(chain, 'chain')}/bridge/status/{check_id(bridge_id, 'bridge')}"


def bridge_status_filter(chain: str) -> str:
    """What IT monitoring subscribes to: every bridge instance's status of one chain."""
    return f"{TOPIC_ROOT}/{check_id(chain, 'chain')}/bridge/status/+"


@dataclass(frozen=True, slots=True)
class ShopperTopic:
    """A parsed shopper topic: chain and the shopper's delivery token."""

    chain: str
    shopper: str


def parse_receipt_topic(topic: str) -> ShopperTopic:
    """Parse `threshold/v1/<chain>/shopper/<token>/receipt`."""
    parts = topic.split("/")
    if (
        len(parts) != 6
        or "/".join(parts[:2]) != TOPIC_ROOT
        or parts[3] != "shopper"
        or parts[5] != "receipt"
    ):
        raise WireError(
            f"topic {topic!r} is not a receipt topic ({TOPIC_ROOT}/C/shopper/T/receipt)"
        )
    return ShopperTopic(check_id(parts[2], "chain"), check_id(parts[4], "shopper"))


def parse_status_topic(topic: str) -> GatewayAddress:
    """Parse `threshold/v1/<chain>/<store>/<gateway>/status`."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != TOPIC_ROOT or parts[5] != "status":
        raise WireError(f"topic {topic!r} is not a status topic ({TOPIC_ROOT}/C/S/G/status)")
    return GatewayAddress(parts[2], parts[3], parts[4])


@dataclass(frozen=True, slots=True)
class EventTopic:
    """A parsed event topic."""

    gateway: GatewayAddress
    kind: EventKind


def parse_event_topic(topic: str) -> EventTopic:
    """Parse `threshold/v1/<chain>/<store>/<gateway>/event/<kind>`."""
    parts = topic.split("/")
    if len(parts) != 7 or "/".join(parts[:2]) != TOPIC_ROOT or parts[5] != "event":
        raise WireError(f"topic {topic!r} is not an event topic ({TOPIC_ROOT}/C/S/G/event/KIND)")
    kind = parts[6]
    if kind not in ("visit", "offer"):
        raise WireError(f"topic {topic!r} names unknown event kind {kind!r}")
    gw = GatewayAddress(parts[2], parts[3], parts[4])
    return EventTopic(gw, "visit" if kind == "visit" else "offer")


# --- Field types: what each kind of value may be (msgspec constraints) --------------------------

#: A topic-segment id: chain, store, gateway, event, member, device, tier, campaign.
Id = Annotated[str, Meta(pattern=ID_PATTERN, max_length=64)]
#: A point in time, Unix seconds (radio time or a wall clock); finite, 0 .. year 5138.
UnixTime = Annotated[float, Meta(ge=0.0, le=1e11)]
#: A duration in seconds (uptime, cooldowns, elapsed times); finite, >= 0.
Seconds = Annotated[float, Meta(ge=0.0, le=1e11)]
Version = Annotated[int, Meta(ge=0, le=MAX_VERSION)]
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
RssiDbm = Annotated[float, Meta(ge=-200.0, le=50.0)]
Priority = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Exponent = Annotated[int, Meta(ge=0, le=15)]  # Eddystone-EID rotation exponent
HexKey = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{32}$")]  # a 16-byte identity key, hex
Title = Annotated[str, Meta(max_length=500)]
#: A URL in an offer (an image, a deep link into the app); the bridge checks the scheme.
Url = Annotated[str, Meta(min_length=1, max_length=2000)]
#: A redemption code as printed and typed at a till: letters, digits, '-' and '_'.
RedemptionCode = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
#: ISO weekday numbers (Monday 1 .. Sunday 7) and minutes of a local day (0 .. 1440).
Weekday = Annotated[int, Meta(ge=1, le=7)]
DayMinute = Annotated[int, Meta(ge=0, le=1440)]
#: A count of offers (a cap or a budget).
OfferCount = Annotated[int, Meta(ge=0, le=1_000_000_000)]
#: An IANA time zone name ("Europe/Paris", "America/New_York", "UTC").
TimeZoneName = Annotated[
    str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$", max_length=64)
]
#: The audience segments the bridge computes for each member (issue 11; bit i of
#: RosterDevice.segments is SEGMENTS[i]). Append-only: a segment keeps its bit forever.
Segment = Literal["new", "regular", "lapsed"]
SEGMENTS: tuple[Segment, ...] = ("new", "regular", "lapsed")
#: Visits counted for a member's `visits` (the last 365 days), capped: no campaign counts more.
MAX_COUNTED_VISITS = 1000
Text = Annotated[str, Meta(max_length=4000)]
Software = Annotated[str, Meta(max_length=200)]
Km = Annotated[float, Meta(ge=0.0, le=1e6)]
Kmh = Annotated[float, Meta(ge=0.0, le=1e18)]
AlertId = Annotated[int, Meta(ge=1, le=2**63 - 1)]
#: Most devices in a roster (at rest or in a bundle); the byte limits bind first in practice.
MAX_ROSTER_DEVICES = 1_000_000

# The status's free-form objects are flat (or, for `sync`, one level deep) maps of short keys to
# scalars: no lists, no deeper nesting, bounded sizes. mypy sees plain dicts; msgspec the limits.
_Key = Annotated[str, Meta(max_length=64)]
_Scalar = (
    Annotated[str, Meta(max_length=1000)]
    | Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[float, Meta(ge=-1e15, le=1e15)]
    | bool
    | None
)
if TYPE_CHECKING:
    ScalarMap = dict[str, Any]
    CountMap = dict[str, int]
    NestedMap = dict[str, Any]
else:
    ScalarMap = Annotated[dict[_Key, _Scalar], Meta(max_length=32)]
    CountMap = Annotated[dict[_Key, Count], Meta(max_length=64)]
    NestedMap = Annotated[
        dict[_Key, _Scalar | Annotated[dict[_Key, _Scalar], Meta(max_length=32)]],
        Meta(max_length=32),
    ]


# --- Payloads ---------------------------------------------------------------------------------
# Frozen dataclasses whose field types carry the limits: msgspec decodes into them directly
# (ClassVars are not fields). Encoding goes through `to_json` (rounding some floats).


@dataclass(frozen=True, slots=True)
class Status:
    """Gateway health, published retained; the last will carries state "offline"."""

    TYPE: ClassVar[str] = "status"
    state: Literal["online", "offline"]
    ts: UnixTime
    software: Software = ""
    uptime_s: Seconds = 0.0
    outbox_pending: Count = 0
    roster_version: Version = 0
    campaigns_version: Version = 0
    radio: ScalarMap = field(default_factory=dict)
    counters: CountMap = field(default_factory=dict)
    # Roster sync health: the gateway's key id and its last rejected bundle (docs/mqtt.md). Added
    # after 0.1.0's first statuses: absent in older payloads, which decode with {}.
    sync: NestedMap = field(default_factory=dict)
    # The gateway's clock as judged from the EIDs it resolves (docs/mqtt.md). Added with the clock
    # check (issue 4): absent in older payloads, which decode with {}.
    clock: ScalarMap = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ts": self.ts,
            "software": self.software,
            "uptime_s": round(self.uptime_s, 3),
            "outbox_pending": self.outbox_pending,
            "roster_version": self.roster_version,
            "campaigns_version": self.campaigns_version,
            "radio": self.radio,
            "counters": self.counters,
            "sync": self.sync,
            "clock": self.clock,
        }


@dataclass(frozen=True, slots=True)
class BridgeStatus:
    """One bridge instance's health, published retained; the last will carries state "offline".

    `counters` are totals since it started: what it recorded, and what it refused and why
    (docs/mqtt.md).
    """

    TYPE: ClassVar[str] = "bridge_status"
    state: Literal["online", "offline"]
    ts: UnixTime
    bridge: Id
    software: Software = ""
    uptime_s: Seconds = 0.0
    counters: CountMap = field(default_factory=dict)
    # The webhook channel's last failure (issue 11), for IT: absent while it has had none.
    webhook_last_error: Text | None = None

    def to_json(self) -> dict[str, Any]:
        body = {
            "state": self.state,
            "ts": self.ts,
            "bridge": self.bridge,
            "software": self.software,
            "uptime_s": round(self.uptime_s, 3),
            "counters": self.counters,
        }
        if self.webhook_last_error is not None:
            body["webhook_last_error"] = self.webhook_last_error
        return body


@dataclass(frozen=True, slots=True)
class Visit:
    """A member walked in. `ts` is radio time (Unix s); `detected_at` the gateway's wall clock."""

    TYPE: ClassVar[str] = "visit"
    KIND: ClassVar[EventKind] = "visit"
    event_id: Id
    ts: UnixTime
    detected_at: UnixTime
    member: Id
    device: Id
    tier: Id
    rssi_dbm: RssiDbm
    # How the member was heard. Added with iPhone check-in (issue 10): absent (null) from older
    # gateways.
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "ts": self.ts,
            "detected_at": self.detected_at,
            "member": self.member,
            "device": self.device,
            "tier": self.tier,
            "rssi_dbm": round(self.rssi_dbm, 1),
            "platform": self.platform,
        }


@dataclass(frozen=True, slots=True)
class VisitEnd:
    """The visit `visit_id` is over: published on the `visit` event topic, type "visit_end".

    `entered_at` is when the member was first heard arriving at the door and `ts` the last time the
    member was heard near it (both radio time, Unix s); `duration_s` = ts - entered_at, the time in
    store. The gateway sends it once nothing has been heard for its visit timeout (`reason`
    "timeout"), or, after being down longer than that, at start-up (`reason` "restart").
    """

    TYPE: ClassVar[str] = "visit_end"
    KIND: ClassVar[EventKind] = "visit"
    event_id: Id
    visit_id: Id
    ts: UnixTime
    detected_at: UnixTime
    member: Id
    device: Id
    entered_at: UnixTime
    duration_s: Seconds
    reason: VisitEndReason
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "visit_id": self.visit_id,
            "ts": self.ts,
            "detected_at": self.detected_at,
            "member": self.member,
            "device": self.device,
            "entered_at": self.entered_at,
            "duration_s": round(self.duration_s, 3),
            "reason": self.reason,
            "platform": self.platform,
        }


@dataclass(frozen=True, slots=True)
class OfferTrigger:
    """The gateway chose `campaign` for the member of visit `visit_id`."""

    TYPE: ClassVar[str] = "offer_trigger"
    KIND: ClassVar[EventKind] = "offer"
    event_id: Id
    visit_id: Id
    ts: UnixTime
    detected_at: UnixTime
    member: Id
    device: Id
    tier: Id
    campaign: Id

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "visit_id": self.visit_id,
            "ts": self.ts,
            "detected_at": self.detected_at,
            "member": self.member,
            "device": self.device,
            "tier": self.tier,
            "campaign": self.campaign,
        }


Event = Visit | VisitEnd | OfferTrigger


@dataclass(frozen=True, slots=True)
class Ack:
    """The bridge recorded these events (or had already); the gateway may forget them."""

    TYPE: ClassVar[str] = "ack"
    event_ids: Annotated[tuple[Id, ...], Meta(max_length=MAX_ACK_IDS)]

    def to_json(self) -> dict[str, Any]:
        return {"event_ids": list(self.event_ids)}


@dataclass(frozen=True, slots=True)
class ShopperOffer:
    """An offer as the shopper's app receives it; `offer_id` is the trigger's event id."""

    TYPE: ClassVar[str] = "offer"
    offer_id: Id
    campaign: Id
    title: Title
    body: Text
    store: Id
    issued_at: UnixTime
    detected_at: UnixTime
    # What the offer is (issue 10), so the app can file it and the shopper see why they got it.
    # Absent from older bridges.
    promotion_type: Id | None = None
    interests: Annotated[tuple[Id, ...], Meta(max_length=MAX_PREFERENCE_TERMS)] = ()
    # The campaign's content (issue 11): a picture (https), where in the app it opens, the code to
    # show at the till (the campaign's one code, or one of its pool), and until when it is valid.
    # Absent from older bridges.
    image_url: Url | None = None
    deep_link: Url | None = None
    code: RedemptionCode | None = None
    valid_until: UnixTime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "campaign": self.campaign,
            "title": self.title,
            "body": self.body,
            "store": self.store,
            "issued_at": self.issued_at,
            "detected_at": self.detected_at,
            "promotion_type": self.promotion_type,
            "interests": list(self.interests),
            "image_url": self.image_url,
            "deep_link": self.deep_link,
            "code": self.code,
            "valid_until": self.valid_until,
        }


#: What an app says it did with offers (issue 11): it has them (`received`: the bridge stops
#: resending), the shopper opened them, or dismissed them.
ReceiptStatus = Literal["received", "opened", "dismissed"]
RECEIPT_STATUSES: tuple[ReceiptStatus, ...] = ("received", "opened", "dismissed")


@dataclass(frozen=True, slots=True)
class OfferReceipt:
    """The shopper's app has these offers: the bridge stops resending them."""

    TYPE: ClassVar[str] = "offer_receipt"
    offer_ids: Annotated[tuple[Id, ...], Meta(max_length=MAX_ACK_IDS)]
    # Absent from older apps: `received`. Opened and dismissed imply received.
    status: ReceiptStatus = "received"

    def to_json(self) -> dict[str, Any]:
        return {"offer_ids": list(self.offer_ids), "status": self.status}


@dataclass(frozen=True, slots=True)
class MemberPrefs:
    """What a member asked for, in the roster's compact, pseudonymous form (issue 10).

    `interests` and `promotions` are bit masks: bit i stands for the i-th term of the campaign sync's
    `interest_terms` / `promotion_terms` (the bridge never reuses a bit). A mask of 0 means "no
    preference": every interest, or every promotion type. `per_day` / `per_week` are the most offers
    the member wants in any 24 hours / any 7 days; 0 means no offers at all (visits are still
    recorded).
    """

    interests: int = 0
    promotions: int = 0
    per_day: int = MAX_OFFERS_PER_DAY
    per_week: int = MAX_OFFERS_PER_WEEK

    def to_json(self) -> list[int]:
        return [self.interests, self.promotions, self.per_day, self.per_week]


@dataclass(frozen=True, slots=True)
class RosterDevice:
    """One enrolled device as a gateway needs it. `ref` and `member` are opaque references.

    `kind` ("app" or "tag", None in rosters older than issue 10) labels the visit's platform;
    `prefs` is None when the member stated no preferences (every campaign of their tier, no cap but
    the cooldowns).
    """

    ref: str
    member: str
    tier: str
    identity_key: bytes
    exponent: int
    kind: DeviceKind | None = None
    prefs: MemberPrefs | None = None
    # The member's audience (issue 11), computed by the bridge: bit i set when the member is in
    # SEGMENTS[i]; and their visits in the last 365 days (at most MAX_COUNTED_VISITS). 0 in older
    # rosters.
    segments: int = 0
    visits: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "member": self.member,
            "tier": self.tier,
            "identity_key": self.identity_key.hex(),
            "exponent": self.exponent,
            "kind": self.kind,
            "prefs": None if self.prefs is None else self.prefs.to_json(),
            "segments": self.segments,
            "visits": self.visits,
        }


Mask = Annotated[int, Meta(ge=0, le=2**MAX_PREFERENCE_TERMS - 1)]
PerDay = Annotated[int, Meta(ge=0, le=MAX_OFFERS_PER_DAY)]
PerWeek = Annotated[int, Meta(ge=0, le=MAX_OFFERS_PER_WEEK)]
#: A member's preferences on the wire: [interests mask, promotions mask, per_day, per_week].
WirePrefs = tuple[Mask, Mask, PerDay, PerWeek]


def prefs_from_wire(value: WirePrefs | None) -> MemberPrefs | None:
    """A MemberPrefs from its wire form (already range-checked by the decoder), or None."""
    return None if value is None else MemberPrefs(*value)


class _WireDevice(msgspec.Struct, frozen=True):
    """A roster device as JSON carries it (the key in hex); becomes a RosterDevice."""

    ref: Id
    member: Id
    tier: Id
    identity_key: HexKey
    exponent: Exponent
    kind: DeviceKind | None = None
    prefs: WirePrefs | None = None
    segments: Annotated[int, Meta(ge=0, le=2 ** len(SEGMENTS) - 1)] = 0
    visits: Annotated[int, Meta(ge=0, le=MAX_COUNTED_VISITS)] = 0

    def device(self) -> RosterDevice:
        return RosterDevice(
            self.ref,
            self.member,
            self.tier,
            bytes.fromhex(self.identity_key),
            self.exponent,
            self.kind,
            prefs_from_wire(self.prefs),
            self.segments,
            self.visits,
        )


class _WireRoster(msgspec.Struct, frozen=True):
    store: Id
    version: Version
    devices: Annotated[list[_WireDevice], Meta(max_length=MAX_ROSTER_DEVICES)]


@dataclass(frozen=True, slots=True)
class RosterSync:
    """Enrolled devices at `version`, in clear: sealed at rest, read by tools, never published."""

    # On MQTT a roster travels only inside a signed bundle sealed to one gateway (edge/core/bundle.py).

    TYPE: ClassVar[str] = "roster"
    store: str
    version: int
    devices: tuple[RosterDevice, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "version": self.version,
            "devices": [d.to_json() for d in self.devices],
        }


def _roster_from_wire(wire: _WireRoster) -> RosterSync:
    return RosterSync(wire.store, wire.version, tuple(d.device() for d in wire.devices))


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a campaign runs (issue 11): between `starts_at` and `ends_at` (Unix seconds; the bridge
    turns the marketer's local dates into instants with the store's time zone), on `days` (ISO
    weekdays; empty: every day), within `hours` ([start, end) minutes of the local day, 0 .. 1440;
    empty: all day). Days and hours are read in the campaign sync's `timezone` by the gateway, so
    a schedule keeps to the store's wall clock across a DST change."""

    starts_at: UnixTime | None = None
    ends_at: UnixTime | None = None
    days: Annotated[tuple[Weekday, ...], Meta(max_length=7)] = ()
    hours: Annotated[tuple[tuple[DayMinute, DayMinute], ...], Meta(max_length=24)] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "days": list(self.days),
            "hours": [list(h) for h in self.hours],
        }


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """One entry campaign: who qualifies (tiers), what it is called, how often a member may get it."""

    id: Id
    title: Title
    body: Text
    tiers: Annotated[tuple[Id, ...], Meta(max_length=64)]
    cooldown_s: Seconds
    priority: Priority = 0
    # What the campaign serves (issue 10): one promotion type and the interests it is about (none:
    # a general offer, for any interest). Absent from older campaign syncs.
    promotion_type: Id | None = None
    interests: Annotated[tuple[Id, ...], Meta(max_length=MAX_PREFERENCE_TERMS)] = ()
    # Issue 11, each absent from older campaign syncs (and then no limit): when it runs, in the
    # store's local time; the most offers of it to one member in a local day and in 7 days; each of
    # the store's gateways' share of its daily budget (a gateway not named has none: it sends
    # none); the audience segments it is for (empty: every member) and the member's visits in the
    # last 365 days (RosterDevice.visits) it asks for.
    schedule: Schedule | None = None
    per_member_day: OfferCount | None = None
    per_member_week: OfferCount | None = None
    gateway_budgets: Annotated[tuple[tuple[Id, OfferCount], ...], Meta(max_length=64)] | None = None
    segments: Annotated[tuple[Segment, ...], Meta(max_length=len(SEGMENTS))] = ()
    min_visits: OfferCount | None = None
    max_visits: OfferCount | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "tiers": list(self.tiers),
            "cooldown_s": self.cooldown_s,
            "priority": self.priority,
            "promotion_type": self.promotion_type,
            "interests": list(self.interests),
            "schedule": None if self.schedule is None else self.schedule.to_json(),
            "per_member_day": self.per_member_day,
            "per_member_week": self.per_member_week,
            "gateway_budgets": None
            if self.gateway_budgets is None
            else [list(b) for b in self.gateway_budgets],
            "segments": list(self.segments),
            "min_visits": self.min_visits,
            "max_visits": self.max_visits,
        }


@dataclass(frozen=True, slots=True)
class CampaignSync:
    """The store's campaigns at `version`; `member_cooldown_s` spaces any two offers to one member."""

    TYPE: ClassVar[str] = "campaigns"
    store: Id
    version: Version
    member_cooldown_s: Seconds
    campaigns: Annotated[tuple[CampaignSpec, ...], Meta(max_length=256)]
    # The chain's preference vocabulary (issue 10): term i is bit i of a roster member's mask
    # (MemberPrefs). Absent from older campaign syncs.
    interest_terms: Annotated[tuple[Id, ...], Meta(max_length=MAX_PREFERENCE_TERMS)] = ()
    promotion_terms: Annotated[tuple[Id, ...], Meta(max_length=MAX_PREFERENCE_TERMS)] = ()
    # The store's IANA time zone (issue 11): campaign schedules' days and hours, and the local day
    # that per-member-day caps and budgets count, are read in it. Absent from older syncs: UTC.
    timezone: TimeZoneName = "UTC"

    def to_json(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "store": self.store,
            "version": self.version,
            "member_cooldown_s": self.member_cooldown_s,
            "campaigns": [c.to_json() for c in self.campaigns],
            "interest_terms": list(self.interest_terms),
            "promotion_terms": list(self.promotion_terms),
        }


CloneReason = Literal["too_fast", "simultaneous"]
AlertStatus = Literal["open", "revoked", "dismissed"]
CLONE_REASONS: tuple[CloneReason, ...] = ("too_fast", "simultaneous")
ALERT_STATUSES: tuple[AlertStatus, ...] = ("open", "revoked", "dismissed")


@dataclass(frozen=True, slots=True)
class CloneAlert:
    """One device seen at two stores too far apart for the time between: a cloned tag, or a bug.

    `first_*` is the earlier sighting by radio time. `distance_km` and `speed_kmh` are null when a
    store has no location (reason `simultaneous`); `speed_kmh` also when both times are equal.
    """

    TYPE: ClassVar[str] = "clone_alert"
    alert_id: AlertId
    device: Id
    member: Id | None  # null on MQTT: the member id stays in the loyalty records
    reason: CloneReason
    first_event_id: Id
    first_store: Id
    first_ts: UnixTime
    second_event_id: Id
    second_store: Id
    second_ts: UnixTime
    elapsed_s: Seconds
    distance_km: Km | None
    speed_kmh: Kmh | None
    status: AlertStatus
    created_at: UnixTime

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "device": self.device,
            "member": self.member,
            "reason": self.reason,
            "first_event_id": self.first_event_id,
            "first_store": self.first_store,
            "first_ts": self.first_ts,
            "second_event_id": self.second_event_id,
            "second_store": self.second_store,
            "second_ts": self.second_ts,
            "elapsed_s": round(self.elapsed_s, 3),
            "distance_km": None if self.distance_km is None else round(self.distance_km, 3),
            "speed_kmh": None if self.speed_kmh is None else round(self.speed_kmh, 1),
            "status": self.status,
            "created_at": self.created_at,
        }


Payload = (
    Status
    | BridgeStatus
    | Visit
    | VisitEnd
    | OfferTrigger
    | Ack
    | ShopperOffer
    | OfferReceipt
    | RosterSync
    | CampaignSync
    | CloneAlert
)
_T = TypeVar(
    "_T",
    Status,
    BridgeStatus,
    Visit,
    VisitEnd,
    OfferTrigger,
    Ack,
    ShopperOffer,
    OfferReceipt,
    RosterSync,
    CampaignSync,
    CloneAlert,
)


class _Head(msgspec.Struct, frozen=True):
    """The two fields every payload starts with; the rest is skipped at this stage."""

    v: int | float | str | bool | None = None
    type: int | float | str | bool | None = None


@dataclass(frozen=True, slots=True)
class _Schema:
    """How one payload type is decoded: its decoder and the conversion to the public class."""

    decoder: msgspec.json.Decoder[Any]
    convert: Callable[[Any], Payload]


def _identity(value: Payload) -> Payload:
    return value


_HEAD = msgspec.json.Decoder(_Head)
_SCHEMAS: dict[str, _Schema] = {
    cls.TYPE: _Schema(msgspec.json.Decoder(cls), _identity)
    for cls in (
        Status,
        BridgeStatus,
        Visit,
        VisitEnd,
        OfferTrigger,
        Ack,
        ShopperOffer,
        OfferReceipt,
        CampaignSync,
        CloneAlert,
    )
}
# A roster is read from disk (sealed at rest, or a roster file), never from MQTT: the bundle limit.
_SCHEMAS[RosterSync.TYPE] = _Schema(msgspec.json.Decoder(_WireRoster), _roster_from_wire)
# Every payload is at most MAX_PAYLOAD_BYTES but these.
_LIMITS: dict[type[Payload], int] = {RosterSync: MAX_BUNDLE_BYTES}


_MISSING = re.compile(r"^Object missing required field `([^`]{1,64})`$")
_ID_RULE = "1-64 of a-z, 0-9, '-', '_' starting with a letter or digit"


def decode_error(where: str, exc: Exception) -> WireError:
    """A WireError from a msgspec (or recursion) error: `where`, then the field's path and why."""
    if isinstance(exc, RecursionError):
        return WireError(f"{where}: nested too deeply")
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return WireError(f"{where}: not JSON ({text})")
    what, sep, path = text.rpartition(" - at `")
    path = path.rstrip("`") if sep else "$"
    what = what if sep else text
    missing = _MISSING.match(what)
    if missing:
        path, what = f"{path}.{missing[1]}", "missing"
    what = what.replace(f"matching regex {ID_PATTERN!r}", f"that is an id ({_ID_RULE})")
    # msgspec quotes the offending value: a log line must not carry 64 KiB of it.
    return WireError(f"{where}: field {path[:200]}: {what[:300]}")


def _schema(data: bytes, where: str, expected: type[Payload] | None) -> tuple[str, _Schema]:
    """Check the size (before parsing), the version and the type: which schema decodes the rest."""
    limit = _LIMITS.get(expected, MAX_PAYLOAD_BYTES) if expected else MAX_PAYLOAD_BYTES
    if len(data) > limit:
        raise WireError(f"{where}: {len(data)} bytes, over the {limit}-byte limit")
    try:
        head = _HEAD.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise decode_error(where, exc) from None
    if type(head.v) is not int or head.v != WIRE_VERSION:  # not 1.0, not true
        raise WireError(
            f"{where}: field $.v: payload version {head.v!r:.40} is not supported (expected 1)"
        )
    kind = head.type
    schema = _SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None or not isinstance(kind, str):
        raise WireError(f"{where}: field $.type: unknown payload type {kind!r:.40}")
    if expected is not None and kind != expected.TYPE:
        raise WireError(
            f"{where}: field $.type: expected a {expected.TYPE!r} payload, got {kind!r}"
        )
    return kind, schema


def encode(payload: Payload) -> bytes:
    """Serialise a payload as versioned JSON."""
    body = {"v": WIRE_VERSION, "type": payload.TYPE, **payload.to_json()}
    return json.dumps(body, separators=(",", ":")).encode()


def _decode(data: bytes, where: str, expected: type[Payload] | None) -> Payload:
    kind, schema = _schema(data, where, expected)
    try:
        payload: Payload = schema.convert(schema.decoder.decode(data))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise decode_error(f"{where} ({kind})", exc) from None
    return payload


def decode(data: bytes, where: str = "payload") -> Payload:
    """Check and decode versioned JSON of any payload type; WireError names `where` and the field.

    At most MAX_PAYLOAD_BYTES: a roster (at rest, up to MAX_BUNDLE_BYTES) needs `decode_as`.
    """
    return _decode(data, where, None)


def decode_as(data: bytes, cls: type[_T], where: str = "payload") -> _T:
    """Decode and require a payload of type `cls`."""
    payload = _decode(data, where, cls)
    if not isinstance(payload, cls):  # cannot happen: _schema checked the type
        raise WireError(f"{where}: expected a {cls.TYPE!r} payload, got {payload.TYPE!r}")
    return payload
