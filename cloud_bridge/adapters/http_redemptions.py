"""`POST /v1/redemptions`: the till (or the shopper's app) reports an offer used (issue 11).

Thin: parsing and the rules are cloud_bridge/core/redemptions.py's, the lookup and the one-transaction
write SqliteLoyaltyRecords.redeem's. docs/redemptions.md is the integrator's guide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from cloud_bridge.adapters.http_api import HttpProblem, HttpResponse, Request, Route, json_object
from cloud_bridge.core.redemptions import (
    AlreadyRedeemed,
    BeforeOffer,
    Expired,
    NotRedeemable,
    OtherMember,
    Redemption,
    RedemptionClaim,
    RedemptionError,
    UnknownCode,
    UnknownOffer,
    parse_redemption_request,
)
from cloud_bridge.errors import RecordsError

RETRY_AFTER_S = 5


class RedemptionLedger(Protocol):
    """Where redemptions are recorded (SqliteLoyaltyRecords)."""

    async def redeem(self, claim: RedemptionClaim, now_s: float) -> Redemption: ...


def status_of(exc: RedemptionError) -> int:
    """The HTTP status of a refusal."""
    if isinstance(exc, UnknownCode | UnknownOffer):
        return 404
    if isinstance(exc, AlreadyRedeemed | NotRedeemable | OtherMember | BeforeOffer | Expired):
        return 409
    return 400


class _Problem(HttpProblem):
    """An HttpProblem that carries a refusal's facts (when it was redeemed, valid until)."""

    def __init__(self, request: Request, exc: RedemptionError) -> None:
        super().__init__(
            status_of(exc), exc.code, f"{request.where}: {exc.message}", field=exc.field
        )
        self.details = dict(exc.details)

    def response(self) -> HttpResponse:
        base = super().response()
        return HttpResponse(base.status, {**base.body, **self.details}, base.headers)


def routes(
    ledger: RedemptionLedger, wall_clock: Callable[[], float] = time.time
) -> tuple[Route, ...]:
    """The redemption endpoint, for EnrollmentApiServer(routes=...)."""

    async def redeem(request: Request, _: str) -> HttpResponse:
        now_s = wall_clock()
        try:
            claim = parse_redemption_request(json_object(request), now_s)
            redemption = await ledger.redeem(claim, now_s)
        except RedemptionError as exc:
            raise _Problem(request, exc) from None
        except RecordsError:
            raise HttpProblem(
                503,
                "records_unavailable",
                f"{request.where}: the loyalty records are busy or unavailable; retry in "
                f"{RETRY_AFTER_S} s (a redemption that failed wrote nothing)",
                headers=(("Retry-After", str(RETRY_AFTER_S)),),
            ) from None
        return HttpResponse(201, redemption.to_json())

    return (Route.of(r"^/v1/redemptions$", {"POST": redeem}),)


#: The API's error body (HttpProblem), inline so these paths stand alone.
_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "the request field at fault"},
        "redeemed_at": {"type": "number", "description": "already_redeemed: when"},
        "valid_until": {"type": "number", "description": "expired: the offer's validity"},
        "issued_at": {"type": "number", "description": "before_offer: when it was issued"},
    },
}


def _refusal(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


#: OpenAPI 3.1 path items (merged into GET /v1/openapi.json).
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/redemptions": {
        "post": {
            "summary": "Record that an offer was redeemed at the till or in the app",
            "description": (
                "Name the offer by `code` (a pool code names one offer; a campaign's shared "
                "code needs `member` and redeems their latest unredeemed offer of it) or by "
                "`offer_id`. Nothing is written when it is refused. See docs/redemptions.md."
            ),
            "operationId": "redeemOffer",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                                },
                                "offer_id": {
                                    "type": "string",
                                    "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
                                },
                                "member": {
                                    "type": "string",
                                    "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
                                },
                                "store": {
                                    "type": "string",
                                    "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
                                },
                                "source": {
                                    "type": "string",
                                    "enum": ["pos", "app"],
                                    "default": "pos",
                                },
                                "redeemed_at": {
                                    "type": "number",
                                    "description": "Unix seconds; default now; at most 300 s ahead",
                                },
                            },
                            "oneOf": [{"required": ["code"]}, {"required": ["offer_id"]}],
                        }
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "Recorded, linked to the offer and its visit",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": [
                                    "offer_id",
                                    "campaign",
                                    "member",
                                    "visit_id",
                                    "source",
                                    "redeemed_at",
                                    "recorded_at",
                                ],
                                "properties": {
                                    "offer_id": {"type": "string"},
                                    "campaign": {"type": "string"},
                                    "member": {"type": "string"},
                                    "visit_id": {"type": "string"},
                                    "offer_store": {"type": "string"},
                                    "code": {"type": ["string", "null"]},
                                    "store": {"type": ["string", "null"]},
                                    "source": {"type": "string", "enum": ["pos", "app"]},
                                    "redeemed_at": {"type": "number"},
                                    "recorded_at": {"type": "number"},
                                },
                            }
                        }
                    },
                },
                "400": _refusal(
                    "A field is missing, malformed or contradictory (`field` names it)"
                ),
                "401": _refusal("No valid API token"),
                "404": _refusal("`unknown_code` or `unknown_offer`"),
                "409": _refusal(
                    "`already_redeemed` (with `redeemed_at`), `not_redeemable` (holdout or "
                    "suppressed), `other_member`, `before_offer`, `expired` (with `valid_until`)"
                ),
                "503": _refusal("The records are busy: retry after Retry-After seconds"),
            },
        }
    }
}
