"""Enrollment of shoppers' devices: requests, results and their validation, without I/O.

A device (an app install or a loyalty tag) is enrolled for a member only with the member's consent
(consent-first). The bridge draws the device's 128-bit Eddystone-EID identity key from a CSPRNG that the
caller injects (`secrets.token_bytes` in production), and returns it exactly once, in the enrollment
result; nothing else here ever carries it. Revoking a device or withdrawing consent takes effect at every
gateway at the next roster sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cloud_bridge.errors import BridgeError
from edge.core import wire

if TYPE_CHECKING:
    from cloud_bridge.core.preferences import MemberPreferences, PreferencesRequest

IDENTITY_KEY_BYTES = 16  # Eddystone-EID: a 128-bit identity key (AES-128)
DEVICE_ID_BYTES = 8  # random device ids: "d-" + 16 hex digits
DEFAULT_EXPONENT = 10  # Eddystone-EID rotation exponent K: a new EID every 2**K s (1024 s)
MAX_EXPONENT = 15  # Eddystone-EID: K is 0..15
#: What the EID time counter counts, stated in every enrollment result: gateways compute EIDs from
#: Unix time in seconds mod 2^32, so an app or a tag must run its counter on the same basis.
EID_COUNTER_BASIS = "unix_time_s_mod_2^32"
DEVICE_KINDS = ("app", "tag")

DeviceKind = Literal["app", "tag"]
RandomBytes = Callable[[int], bytes]


class EnrollmentError(BridgeError):
    """An enrollment request the bridge refused; `code` is the API's error code."""

    code = "enrollment_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(EnrollmentError):
    """A request field is missing, of the wrong type or out of range; `field` names it."""

    code = "invalid_field"

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"field '{name}' {problem}")
        self.field = name
        self.problem = problem


class ConsentRequired(InvalidRequest):
    """Enrollment without the member's consent: refused (consent-first)."""

    code = "consent_required"

    def __init__(self) -> None:
        super().__init__(
            "consent",
            "must be true: a device is enrolled only after the member agreed to be recognised "
            'in stores; ask the member, then send "consent": true',
        )


class UnknownMember(EnrollmentError):
    """No member with this id."""

    code = "unknown_member"

    def __init__(self, member: str, hint: str = "check the member id") -> None:
        super().__init__(f"member {member!r} is not in the loyalty records: {hint}")
        self.member = member


class UnknownDevice(EnrollmentError):
    """No device with this id."""

    code = "unknown_device"

    def __init__(self, device: str) -> None:
        super().__init__(
            f"device {device!r} is not in the loyalty records: check the device id that "
            "enrollment returned"
        )
        self.device = device


class AlreadyEnrolled(EnrollmentError):
    """The member already has an active device of this kind; `device` is that device."""

    code = "already_enrolled"

    def __init__(self, member: str, kind: str, device: str) -> None:
        super().__init__(
            f"member {member!r} already has an active {kind} device {device!r}: revoke it "
            f"(DELETE /v1/devices/{device}) before enrolling a new {kind}"
        )
        self.member = member
        self.kind = kind
        self.device = device


class TierConflict(EnrollmentError):
    """A tier sent for an existing member that differs from the member's tier."""

    code = "tier_conflict"

    def __init__(self, member: str, tier: str, requested: str) -> None:
        super().__init__(
            f"member {member!r} exists with tier {tier!r}, not {requested!r}: 'tier' only sets "
            "the tier of a new member; omit it for an existing one"
        )
        self.member = member


class NoConsent(EnrollmentError):
    """Preferences for a member who has not consented (or withdrew consent): none are kept."""

    code = "no_consent"

    def __init__(self, member: str) -> None:
        super().__init__(
            f"member {member!r} has not consented to be recognised in stores (or withdrew "
            "consent): preferences are kept only with consent; enroll a device with "
            '"consent": true first'
        )
        self.member = member


class RecordsUnavailable(EnrollmentError):
    """The loyalty records could not be read or written just now; retrying later can help."""

    code = "unavailable"


# --- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    """Enroll a device of `kind` for `member`; `tier` creates the member if it does not exist yet."""

    member: str
    kind: DeviceKind
    tier: str | None = None
    exponent: int = DEFAULT_EXPONENT
    consent: bool = True  # consent-first: a request without it cannot be built

    def __post_init__(self) -> None:
        if self.consent is not True:
            raise ConsentRequired()
        check_member_id(self.member)
        if self.kind not in DEVICE_KINDS:
            raise InvalidRequest("kind", f'must be "app" or "tag", got {_json_type(self.kind)}')
        if self.tier is not None:
            check_tier(self.tier)
        check_exponent(self.exponent)


ENROLL_FIELDS = frozenset({"kind", "consent", "tier", "exponent"})
WITHDRAW_FIELDS: frozenset[str] = frozenset()


def check_member_id(member: str) -> str:
    """Return `member` if it is a valid member id (it travels in rosters), else raise InvalidRequest."""
    return _check_ident(member, "member")


def check_device_id(device: str) -> str:
    """Return `device` if it is a valid device id, else raise InvalidRequest."""
    return _check_ident(device, "device")


def check_tier(tier: str) -> str:
    """Return `tier` if it is a valid tier id, else raise InvalidRequest."""
    return _check_ident(tier, "tier")


def _check_ident(value: str, name: str) -> str:
    try:
        return wire.check_id(value, name)
    except wire.WireError:
        raise InvalidRequest(
            name,
            f"{_short(value)} is not a valid id: use 1-64 of a-z, 0-9, '-', '_' starting with a "
            "letter or digit",
        ) from None


def parse_enroll_request(member: str, body: Mapping[str, Any]) -> EnrollRequest:
    """Validate an enrollment request's JSON object; raise InvalidRequest naming the field."""
    check_member_id(member)
    _reject_unknown(body, ENROLL_FIELDS)
    if "consent" not in body:
        raise InvalidRequest("consent", 'is missing: send "consent": true once the member agreed')
    consent = body["consent"]
    if not isinstance(consent, bool):
        raise InvalidRequest("consent", f"must be true or false, got {_json_type(consent)}")
    if not consent:
        raise ConsentRequired()
    if "kind" not in body:
        raise InvalidRequest("kind", 'is missing: send "app" or "tag"')
    kind = body["kind"]
    if kind == "app":
        checked_kind: DeviceKind = "app"
    elif kind == "tag":
        checked_kind = "tag"
    else:
        raise InvalidRequest("kind", f'must be "app" or "tag", got {_json_type(kind)}')
    tier = body.get("tier")
    if tier is not None and not isinstance(tier, str):
        raise InvalidRequest("tier", f"must be a tier id string, got {_json_type(tier)}")
    exponent = body.get("exponent", DEFAULT_EXPONENT)
    if exponent is None:
        exponent = DEFAULT_EXPONENT
    if not isinstance(exponent, int) or isinstance(exponent, bool):
        raise InvalidRequest(
            "exponent", f"must be an integer 0..{MAX_EXPONENT}, got {_json_type(exponent)}"
        )
    return EnrollRequest(member, checked_kind, tier, exponent)


def check_exponent(exponent: int) -> int:
    """Return the rotation exponent if Eddystone-EID allows it (0..15), else raise InvalidRequest."""
    if not 0 <= exponent <= MAX_EXPONENT:
        raise InvalidRequest(
            "exponent",
            f"must be 0..{MAX_EXPONENT} (a new EID every 2**exponent seconds), got {exponent}",
        )
    return exponent


def parse_withdraw_request(member: str, body: Mapping[str, Any]) -> str:
    """Validate a consent withdrawal (an empty JSON object or no body); return the member id."""
    check_member_id(member)
    _reject_unknown(body, WITHDRAW_FIELDS)
    return member


def _reject_unknown(body: Mapping[str, Any], known: frozenset[str]) -> None:
    for name in body:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise InvalidRequest(name[:40], f"is not a known field (allowed: {allowed})")


def _json_type(value: object) -> str:
    """A client-supplied JSON value, described briefly for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _short(str(value)).strip("'")
    if isinstance(value, str):
        return _short(value)
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: str, limit: int = 24) -> str:
    """A client-supplied string, quoted and cut short, for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


# --- new devices ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device about to be enrolled: its id, its fresh identity key and rotation exponent."""

    id: str
    identity_key: bytes = field(repr=False)  # never in a log line or a traceback's repr
    exponent: int = DEFAULT_EXPONENT


def new_device(request: EnrollRequest, random_bytes: RandomBytes) -> NewDevice:
    """Draw a device id and a 128-bit identity key from `random_bytes` (the CSPRNG in production)."""
    identity_key = random_bytes(IDENTITY_KEY_BYTES)
    device_bytes = random_bytes(DEVICE_ID_BYTES)
    if len(identity_key) != IDENTITY_KEY_BYTES or len(device_bytes) != DEVICE_ID_BYTES:
        raise ValueError("random_bytes(n) must return exactly n bytes")
    return NewDevice(f"d-{device_bytes.hex()}", identity_key, request.exponent)


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What the app, or the tag programmer, needs: returned once, the only place the key appears."""

    device: str
    member: str
    kind: DeviceKind
    tier: str
    identity_key: bytes = field(repr=False)
    exponent: int
    enrolled_at: float  # Unix time, seconds
    shopper_token: str  # the member's opaque offer delivery token
    offer_topic: str  # where the member's offers arrive (MQTT, QoS 1)
    member_created: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "member": self.member,
            "kind": self.kind,
            "tier": self.tier,
            "identity_key": self.identity_key.hex(),
            "exponent": self.exponent,
            "eid_counter": EID_COUNTER_BASIS,
            "enrolled_at": self.enrolled_at,
            "shopper_token": self.shopper_token,
            "offer_topic": self.offer_topic,
            "member_created": self.member_created,
        }


def enroll_result(
    request: EnrollRequest,
    device: NewDevice,
    *,
    chain: str,
    tier: str,
    shopper_token: str,
    enrolled_at: float,
    member_created: bool,
) -> EnrollResult:
    """The result of a stored enrollment, with the member's offer topic on `chain`."""
    return EnrollResult(
        device=device.id,
        member=request.member,
        kind=request.kind,
        tier=tier,
        identity_key=device.identity_key,
        exponent=device.exponent,
        enrolled_at=enrolled_at,
        shopper_token=shopper_token,
        offer_topic=wire.shopper_offer_topic(chain, shopper_token),
        member_created=member_created,
    )


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One of a member's devices as status shows it: never its identity key."""

    device: str
    kind: str
    active: bool
    enrolled_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "kind": self.kind,
            "active": self.active,
            "enrolled_at": self.enrolled_at,
        }


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """A member's tier, consent and devices (active and revoked), oldest device first."""

    member: str
    tier: str
    consent: bool
    joined_at: float
    devices: tuple[DeviceStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "tier": self.tier,
            "consent": self.consent,
            "joined_at": self.joined_at,
            "devices": [d.to_json() for d in self.devices],
        }


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """A revoked device; `was_active` is False when it had already been revoked (revoking is idempotent)."""

    device: str
    member: str
    was_active: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "member": self.member,
            "active": False,
            "was_active": self.was_active,
        }


class Enrollment(Protocol):
    """Enrollment on the loyalty records (SQLite by default); changes reach gateways at the next sync."""

    async def enroll(self, request: EnrollRequest) -> EnrollResult:
        """Store a new device (and a new member if `request.tier` is set and the member is unknown).

        Raises UnknownMember, AlreadyEnrolled, TierConflict or RecordsUnavailable.
        """
        ...

    async def revoke(self, device: str) -> RevokeResult:
        """Deactivate a device and erase its key; raises UnknownDevice."""
        ...

    async def withdraw_consent(self, member: str) -> MemberStatus:
        """Record withdrawn consent, deactivate every device, stop undelivered offers; UnknownMember."""
        ...

    async def member_status(self, member: str) -> MemberStatus:
        """Tier, consent and devices (no keys); raises UnknownMember."""
        ...

    async def clone_alerts(self) -> list[wire.CloneAlert]:
        """Open clone alerts, oldest first: devices seen at two stores too far apart."""
        ...

    async def set_preferences(self, request: PreferencesRequest) -> MemberPreferences:
        """Store what a consenting member asked for (cloud_bridge/core/preferences.py).

        Raises InvalidRequest (a term the chain does not accept), UnknownMember or NoConsent.
        """
        ...

    async def preferences(self, member: str) -> MemberPreferences | None:
        """The member's stated preferences, None if none; raises UnknownMember."""
        ...

    async def forget_preferences(self, member: str) -> bool:
        """Forget the member's preferences; whether there were any. Raises UnknownMember."""
        ...
