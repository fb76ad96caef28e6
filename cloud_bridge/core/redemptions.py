"""Redemptions (issue 11): the till or the shopper's app says an offer was used; the records link it.

A request names the offer by its `code` (a code of a campaign's pool names one offer; a campaign's one
code shared by every shopper needs the `member` too, and then means that member's latest offer of the
campaign not yet redeemed) or by its `offer_id`. This module parses the request and decides whether
the offer may be redeemed; the adapter looks the offer up and records the redemption in one
transaction. Every refusal names the field and carries what the integrator needs to act.

The rules, checked in this order:
- a holdout offer, or one suppressed before it was sent, was never given to the shopper:
  `not_redeemable` (one suppressed after it was sent, e.g. consent withdrawn, may be in their hands);
- an offer is redeemed once: `already_redeemed` (with when);
- a `member` named must be the offer's: `other_member`;
- not before the offer was issued (less the clock tolerance): `before_offer`;
- not after its validity (`valid_until`, what the shopper was promised): `expired`.

No clock, no I/O: `now_s` comes in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from edge.core import wire

RedemptionSource = Literal["pos", "app"]
SOURCES: tuple[RedemptionSource, ...] = ("pos", "app")
#: How far ahead of the bridge's clock, or before the offer's issue, a till's clock may be.
CLOCK_TOLERANCE_S = 300.0
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # wire.RedemptionCode
_ID = re.compile(wire.ID_PATTERN)
FIELDS = ("code", "offer_id", "member", "store", "source", "redeemed_at")


class RedemptionError(Exception):
    """A redemption refused: `code` says why, `field` names the request field at fault."""

    code: ClassVar[str] = "invalid_request"

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        #: Facts the integrator acts on (e.g. `redeemed_at` of the earlier redemption).
        self.details = details


class InvalidRedemption(RedemptionError):
    """The request itself is wrong (a missing, malformed or contradictory field)."""

    code = "invalid_field"


class UnknownCode(RedemptionError):
    code = "unknown_code"


class UnknownOffer(RedemptionError):
    code = "unknown_offer"


class AlreadyRedeemed(RedemptionError):
    code = "already_redeemed"


class NotRedeemable(RedemptionError):
    code = "not_redeemable"


class OtherMember(RedemptionError):
    code = "other_member"


class BeforeOffer(RedemptionError):
    code = "before_offer"


class Expired(RedemptionError):
    code = "expired"


@dataclass(frozen=True, slots=True)
class RedemptionClaim:
    """A parsed request: exactly one of `code` and `offer_id`; `redeemed_at` None means now."""

    code: str | None = None
    offer_id: str | None = None
    member: str | None = None
    store: str | None = None
    source: RedemptionSource = "pos"
    redeemed_at: float | None = None

    def at(self, now_s: float) -> float:
        return now_s if self.redeemed_at is None else self.redeemed_at


def _id(body: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidRedemption(name, f"{name} must be {what}, got {str(value)[:80]!r}")
    return value


def parse_redemption_request(
    body: Mapping[str, Any], now_s: float, tolerance_s: float = CLOCK_TOLERANCE_S
) -> RedemptionClaim:
    """A redemption request (JSON object, or the CLI's options) as a claim; InvalidRedemption
    naming the field otherwise."""
    for name in body:
        if name not in FIELDS:
            named = str(name)[:40] or '""'
            raise InvalidRedemption(named, f"unknown field {named}; known: {', '.join(FIELDS)}")
    code_what = "1-64 letters, digits, '-' or '_' (the code the shopper shows)"
    code = _id(body, "code", _CODE, code_what)
    id_what = "an id: 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit"
    offer_id = _id(body, "offer_id", _ID, id_what)
    if code is not None and offer_id is not None:
        raise InvalidRedemption("offer_id", "send the code or the offer_id, not both")
    if code is None and offer_id is None:
        raise InvalidRedemption("code", "send the code the shopper showed, or the offer_id")
    source = body.get("source", "pos")
    if source not in SOURCES:
        raise InvalidRedemption(
            "source", f"source must be 'pos' or 'app', got {str(source)[:40]!r}"
        )
    redeemed_at = body.get("redeemed_at")
    if redeemed_at is not None:
        if isinstance(redeemed_at, bool) or not isinstance(redeemed_at, int | float):
            raise InvalidRedemption(
                "redeemed_at", "redeemed_at must be a number (Unix seconds), or left out for now"
            )
        try:
            redeemed_at = float(redeemed_at)
        except OverflowError:  # a JSON integer of hundreds of digits
            redeemed_at = math.inf
        if not (math.isfinite(redeemed_at) and redeemed_at > 0):
            raise InvalidRedemption("redeemed_at", "redeemed_at must be a positive Unix time")
        if redeemed_at > now_s + tolerance_s:
            raise InvalidRedemption(
                "redeemed_at",
                f"redeemed_at {redeemed_at:.0f} is {redeemed_at - now_s:.0f} s in the future "
                f"(more than {tolerance_s:g} s): check the till's clock",
            )
    return RedemptionClaim(
        code=code,
        offer_id=offer_id,
        member=_id(body, "member", _ID, id_what),
        store=_id(body, "store", _ID, id_what),
        source=source,
        redeemed_at=redeemed_at,
    )


@dataclass(frozen=True, slots=True)
class RedeemableOffer:
    """An offer as the loyalty records hold it, with its redemption if it has one."""

    offer_id: str
    campaign: str
    member: str
    visit_id: str
    store: str
    delivery: str  # the offers row's state
    issued_at: float  # when the bridge recorded it
    valid_until: float | None
    code: str | None
    redeemed_at: float | None = None  # already redeemed then
    #: Handed to its channel at least once (a suppressed offer may have reached the shopper before).
    sent: bool = False


def check_redemption(
    offer: RedeemableOffer,
    claim: RedemptionClaim,
    now_s: float,
    tolerance_s: float = CLOCK_TOLERANCE_S,
) -> None:
    """Raise why `offer` cannot be redeemed as `claim` says; nothing if it can."""
    where = "code" if claim.code is not None else "offer_id"
    if offer.delivery == "holdout" or (offer.delivery == "suppressed" and not offer.sent):
        why = (
            "the member is in the campaign's holdout"
            if offer.delivery == "holdout"
            else "it was suppressed"
        )
        raise NotRedeemable(where, f"offer {offer.offer_id} was never given to the shopper ({why})")
    if offer.redeemed_at is not None:
        raise AlreadyRedeemed(
            where,
            f"offer {offer.offer_id} was already redeemed at {offer.redeemed_at:.0f}",
            redeemed_at=offer.redeemed_at,
            offer_id=offer.offer_id,
        )
    if claim.member is not None and claim.member != offer.member:
        raise OtherMember(
            "member", f"offer {offer.offer_id} is another member's, not {claim.member!r}'s"
        )
    at = claim.at(now_s)
    if at < offer.issued_at - tolerance_s:
        raise BeforeOffer(
            "redeemed_at",
            f"redeemed_at {at:.0f} is before offer {offer.offer_id} was issued "
            f"({offer.issued_at:.0f}): check the till's clock",
            issued_at=offer.issued_at,
        )
    if offer.valid_until is not None and at > offer.valid_until:
        raise Expired(
            "redeemed_at" if claim.redeemed_at is not None else where,
            f"offer {offer.offer_id} was valid until {offer.valid_until:.0f}; the shopper was "
            "promised no more",
            valid_until=offer.valid_until,
        )


@dataclass(frozen=True, slots=True)
class Redemption:
    """A recorded redemption, linked to its offer and, through it, its visit."""

    offer: RedeemableOffer
    code: str | None
    store: str | None  # where it was redeemed (None: not said)
    source: RedemptionSource
    redeemed_at: float
    recorded_at: float

    def to_json(self) -> dict[str, Any]:
        o = self.offer
        return {
            "offer_id": o.offer_id,
            "campaign": o.campaign,
            "member": o.member,
            "visit_id": o.visit_id,
            "offer_store": o.store,
            "code": self.code,
            "store": self.store,
            "source": self.source,
            "redeemed_at": self.redeemed_at,
            "recorded_at": self.recorded_at,
        }
