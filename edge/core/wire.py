"""The wire contract between gateways, the cloud bridge and shopper apps: MQTT topics and payloads.

Written once and imported by both `edge` and `cloud_bridge`. Every payload is UTF-8 JSON with a version
`"v"` and a `"type"`; `decode` validates fields and raises `WireError` naming what is wrong. docs/mqtt.md
shows every topic with an example payload; tests/contract/ keeps golden copies.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

WIRE_VERSION = 1
TOPIC_ROOT = "threshold/v1"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

#: What the bridge subscribes to (as a shared subscription): every gateway's events.
EVENT_FILTER = f"{TOPIC_ROOT}/+/+/+/event/+"
#: What the bridge subscribes to (shared): shopper apps' receipts of offers.
RECEIPT_FILTER = f"{TOPIC_ROOT}/+/shopper/+/receipt"
#: What fleet monitoring and the bridge subscribe to: every gateway's retained status.
STATUS_FILTER = f"{TOPIC_ROOT}/+/+/+/status"
#: What IT monitoring subscribes to: every chain's bridge alerts (cloned tags).
ALERTS_FILTER = f"{TOPIC_ROOT}/+/bridge/alerts"


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


# --- Payloads ---------------------------------------------------------------------------------


class _Reader:
    """Typed field access on a decoded JSON object, with errors that name the field."""

    def __init__(self, obj: dict[str, Any], where: str) -> None:
        self.obj = obj
        self.where = where

    def _get(self, name: str, types: tuple[type, ...], what: str) -> Any:
        if name not in self.obj:
            raise WireError(f"{self.where}: missing field {name!r} ({what})")
        value = self.obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise WireError(f"{self.where}: field {name!r} must be {what}, got {value!r:.60}")
        return value

    def text(self, name: str) -> str:
        return str(self._get(name, (str,), "a string"))

    def ident(self, name: str) -> str:
        value = self.text(name)
        try:
            return check_id(value, name)
        except WireError as exc:
            raise WireError(f"{self.where}: {exc.reason}") from None

    def idents(self, name: str, what: str) -> tuple[str, ...]:
        """A list of ids; names the first bad element."""
        values = self.items(name)
        for i, value in enumerate(values):
            if not isinstance(value, str) or not _ID_RE.match(value):
                raise WireError(f"{self.where}: {name}[{i}] is not a valid {what}")
        return tuple(values)

    def integer(self, name: str) -> int:
        return int(self._get(name, (int,), "an integer"))

    def number(self, name: str) -> float:
        return float(self._get(name, (int, float), "a number"))

    def optional_number(self, name: str) -> float | None:
        """A number or null; the field must be there either way."""
        if self.obj.get(name, 0) is None:
            return None
        return float(self._get(name, (int, float), "a number or null"))

    def optional_ident(self, name: str) -> str | None:
        """An id or null; the field must be there either way."""
        if self.obj.get(name, "") is None:
            return None
        return self.ident(name)

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in allowed:
            raise WireError(
                f"{self.where}: field {name!r} must be one of {', '.join(allowed)}, got {value!r:.60}"
            )
        return value

    def items(self, name: str) -> list[Any]:
        return list(self._get(name, (list,), "a list"))

    def obj_field(self, name: str) -> dict[str, Any]:
        return dict(self._get(name, (dict,), "an object"))

    def hexbytes(self, name: str, length: int) -> bytes:
        value = self.text(name)
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise WireError(f"{self.where}: field {name!r} must be hex") from None
        if len(raw) != length:
            raise WireError(f"{self.where}: field {name!r} must be {length} bytes, got {len(raw)}")
        return raw


@dataclass(frozen=True, slots=True)
class Status:
    """Gateway health, published retained; the last will carries state "offline"."""

    TYPE: ClassVar[str] = "status"
    state: Literal["online", "offline"]
    ts: float
    software: str = ""
    uptime_s: float = 0.0
    outbox_pending: int = 0
    roster_version: int = 0
    campaigns_version: int = 0
    radio: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    # Roster sync health: the gateway's key id and its last rejected bundle (docs/mqtt.md). Added
    # after 0.1.0's first statuses: absent in older payloads, which decode with {}.
    sync: dict[str, Any] = field(default_factory=dict)
    # The gateway's clock as judged from the EIDs it resolves (docs/mqtt.md). Added with the clock
    # check (issue 4): absent in older payloads, which decode with {}.
    clock: dict[str, Any] = field(default_factory=dict)

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

    @classmethod
    def from_json(cls, r: _Reader) -> Status:
        state = r.text("state")
        if state not in ("online", "offline"):
            raise WireError(f"{r.where}: field 'state' must be 'online' or 'offline'")
        return cls(
            state="online" if state == "online" else "offline",
            ts=r.number("ts"),
            software=str(r.obj.get("software", "")),
            uptime_s=float(r.obj.get("uptime_s", 0.0)),
            outbox_pending=int(r.obj.get("outbox_pending", 0)),
            roster_version=int(r.obj.get("roster_version", 0)),
            campaigns_version=int(r.obj.get("campaigns_version", 0)),
            radio=dict(r.obj.get("radio", {})),
            counters=dict(r.obj.get("counters", {})),
            sync=r.obj_field("sync") if "sync" in r.obj else {},
            clock=r.obj_field("clock") if "clock" in r.obj else {},
        )


@dataclass(frozen=True, slots=True)
class Visit:
    """A member walked in. `ts` is radio time (Unix s); `detected_at` the gateway's wall clock."""

    TYPE: ClassVar[str] = "visit"
    KIND: ClassVar[EventKind] = "visit"
    event_id: str
    ts: float
    detected_at: float
    member: str
    device: str
    tier: str
    rssi_dbm: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "ts": self.ts,
            "detected_at": self.detected_at,
            "member": self.member,
            "device": self.device,
            "tier": self.tier,
            "rssi_dbm": round(self.rssi_dbm, 1),
        }

    @classmethod
    def from_json(cls, r: _Reader) -> Visit:
        return cls(
            event_id=r.ident("event_id"),
            ts=r.number("ts"),
            detected_at=r.number("detected_at"),
            member=r.ident("member"),
            device=r.ident("device"),
            tier=r.ident("tier"),
            rssi_dbm=r.number("rssi_dbm"),
        )


@dataclass(frozen=True, slots=True)
class OfferTrigger:
    """The gateway chose `campaign` for the member of visit `visit_id`."""

    TYPE: ClassVar[str] = "offer_trigger"
    KIND: ClassVar[EventKind] = "offer"
    event_id: str
    visit_id: str
    ts: float
    detected_at: float
    member: str
    device: str
    tier: str
    campaign: str

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

    @classmethod
    def from_json(cls, r: _Reader) -> OfferTrigger:
        return cls(
            event_id=r.ident("event_id"),
            visit_id=r.ident("visit_id"),
            ts=r.number("ts"),
            detected_at=r.number("detected_at"),
            member=r.ident("member"),
            device=r.ident("device"),
            tier=r.ident("tier"),
            campaign=r.ident("campaign"),
        )


Event = Visit | OfferTrigger


@dataclass(frozen=True, slots=True)
class Ack:
    """The bridge recorded these events (or had already); the gateway may forget them."""

    TYPE: ClassVar[str] = "ack"
    event_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"event_ids": list(self.event_ids)}

    @classmethod
    def from_json(cls, r: _Reader) -> Ack:
        return cls(r.idents("event_ids", "event id"))


@dataclass(frozen=True, slots=True)
class ShopperOffer:
    """An offer as the shopper's app receives it; `offer_id` is the trigger's event id."""

    TYPE: ClassVar[str] = "offer"
    offer_id: str
    campaign: str
    title: str
    body: str
    store: str
    issued_at: float
    detected_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "campaign": self.campaign,
            "title": self.title,
            "body": self.body,
            "store": self.store,
            "issued_at": self.issued_at,
            "detected_at": self.detected_at,
        }

    @classmethod
    def from_json(cls, r: _Reader) -> ShopperOffer:
        return cls(
            offer_id=r.ident("offer_id"),
            campaign=r.ident("campaign"),
            title=r.text("title"),
            body=r.text("body"),
            store=r.ident("store"),
            issued_at=r.number("issued_at"),
            detected_at=r.number("detected_at"),
        )


@dataclass(frozen=True, slots=True)
class OfferReceipt:
    """The shopper's app has these offers: the bridge stops resending them."""

    TYPE: ClassVar[str] = "offer_receipt"
    offer_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"offer_ids": list(self.offer_ids)}

    @classmethod
    def from_json(cls, r: _Reader) -> OfferReceipt:
        return cls(r.idents("offer_ids", "offer id"))


@dataclass(frozen=True, slots=True)
class RosterDevice:
    """One enrolled device as a gateway needs it. `ref` and `member` are opaque references."""

    ref: str
    member: str
    tier: str
    identity_key: bytes
    exponent: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "member": self.member,
            "tier": self.tier,
            "identity_key": self.identity_key.hex(),
            "exponent": self.exponent,
        }

    @classmethod
    def from_json(cls, r: _Reader) -> RosterDevice:
        exponent = r.integer("exponent")
        if not 0 <= exponent <= 15:
            raise WireError(f"{r.where}: field 'exponent' must be 0..15, got {exponent}")
        return cls(
            ref=r.ident("ref"),
            member=r.ident("member"),
            tier=r.ident("tier"),
            identity_key=r.hexbytes("identity_key", 16),
            exponent=exponent,
        )


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

    @classmethod
    def from_json(cls, r: _Reader) -> RosterSync:
        devices = []
        for i, item in enumerate(r.items("devices")):
            if not isinstance(item, dict):
                raise WireError(f"{r.where}: devices[{i}] must be an object")
            devices.append(RosterDevice.from_json(_Reader(item, f"{r.where} devices[{i}]")))
        return cls(store=r.ident("store"), version=r.integer("version"), devices=tuple(devices))


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """One entry campaign: who qualifies (tiers), what it is called, how often a member may get it."""

    id: str
    title: str
    body: str
    tiers: tuple[str, ...]
    cooldown_s: float
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "tiers": list(self.tiers),
            "cooldown_s": self.cooldown_s,
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, r: _Reader) -> CampaignSpec:
        tiers = r.items("tiers")
        if not all(isinstance(t, str) and _ID_RE.match(t) for t in tiers):
            raise WireError(f"{r.where}: field 'tiers' must be a list of tier ids")
        cooldown_s = r.number("cooldown_s")
        if cooldown_s < 0:
            raise WireError(f"{r.where}: field 'cooldown_s' must be >= 0")
        return cls(
            id=r.ident("id"),
            title=r.text("title"),
            body=r.text("body"),
            tiers=tuple(tiers),
            cooldown_s=cooldown_s,
            priority=r.integer("priority"),
        )


@dataclass(frozen=True, slots=True)
class CampaignSync:
    """The store's campaigns at `version`; `member_cooldown_s` spaces any two offers to one member."""

    TYPE: ClassVar[str] = "campaigns"
    store: str
    version: int
    member_cooldown_s: float
    campaigns: tuple[CampaignSpec, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "version": self.version,
            "member_cooldown_s": self.member_cooldown_s,
            "campaigns": [c.to_json() for c in self.campaigns],
        }

    @classmethod
    def from_json(cls, r: _Reader) -> CampaignSync:
        campaigns = []
        for i, item in enumerate(r.items("campaigns")):
            if not isinstance(item, dict):
                raise WireError(f"{r.where}: campaigns[{i}] must be an object")
            campaigns.append(CampaignSpec.from_json(_Reader(item, f"{r.where} campaigns[{i}]")))
        return cls(
            store=r.ident("store"),
            version=r.integer("version"),
            member_cooldown_s=r.number("member_cooldown_s"),
            campaigns=tuple(campaigns),
        )


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
    alert_id: int
    device: str
    member: str | None  # null on MQTT: the member id stays in the loyalty records
    reason: CloneReason
    first_event_id: str
    first_store: str
    first_ts: float
    second_event_id: str
    second_store: str
    second_ts: float
    elapsed_s: float
    distance_km: float | None
    speed_kmh: float | None
    status: AlertStatus
    created_at: float

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

    @classmethod
    def from_json(cls, r: _Reader) -> CloneAlert:
        alert_id = r.integer("alert_id")
        if alert_id < 1:
            raise WireError(f"{r.where}: field 'alert_id' must be >= 1, got {alert_id}")
        reason = r.choice("reason", CLONE_REASONS)
        status = r.choice("status", ALERT_STATUSES)
        return cls(
            alert_id=alert_id,
            device=r.ident("device"),
            member=r.optional_ident("member"),
            reason=typing.cast(CloneReason, reason),
            first_event_id=r.ident("first_event_id"),
            first_store=r.ident("first_store"),
            first_ts=r.number("first_ts"),
            second_event_id=r.ident("second_event_id"),
            second_store=r.ident("second_store"),
            second_ts=r.number("second_ts"),
            elapsed_s=r.number("elapsed_s"),
            distance_km=r.optional_number("distance_km"),
            speed_kmh=r.optional_number("speed_kmh"),
            status="open"
            if status == "open"
            else "revoked"
            if status == "revoked"
            else "dismissed",
            created_at=r.number("created_at"),
        )


Payload = (
    Status
    | Visit
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
    Visit,
    OfferTrigger,
    Ack,
    ShopperOffer,
    OfferReceipt,
    RosterSync,
    CampaignSync,
    CloneAlert,
)
_TYPES: dict[str, type[Payload]] = {
    cls.TYPE: cls
    for cls in (
        Status,
        Visit,
        OfferTrigger,
        Ack,
        ShopperOffer,
        OfferReceipt,
        RosterSync,
        CampaignSync,
        CloneAlert,
    )
}


def encode(payload: Payload) -> bytes:
    """Serialise a payload as versioned JSON."""
    body = {"v": WIRE_VERSION, "type": payload.TYPE, **payload.to_json()}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes, where: str = "payload") -> Payload:
    """Parse and validate versioned JSON; raise WireError naming the problem and `where`."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{where}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise WireError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    version = obj.get("v")
    if version != WIRE_VERSION:
        raise WireError(f"{where}: payload version {version!r} is not supported (expected 1)")
    kind = obj.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"{where}: unknown payload type {kind!r}")
    return cls.from_json(_Reader(obj, f"{where} ({kind})"))


def decode_as(data: bytes, cls: type[_T], where: str = "payload") -> _T:
    """Decode and require a payload of type `cls`."""
    payload = decode(data, where)
    if not isinstance(payload, cls):
        raise WireError(f"{where}: expected a {cls.TYPE!r} payload, got {payload.TYPE!r}")
    return payload
