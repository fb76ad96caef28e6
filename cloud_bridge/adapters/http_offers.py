"""Receipts through the API: the retailer's backend relays what its app did with an offer the
bridge delivered by webhook (docs/webhook.md, "Receipts"), as the app does itself over MQTT.

`POST /v1/offers/{offer_id}/receipt` with `{"status": "received" | "opened" | "dismissed"}`:
opened and dismissed imply received; repeating a receipt changes nothing (the first time of each is
kept). An unknown offer is 404; one that never went to anyone (holdout, suppressed before it was
sent) is 409; one suppressed after it was sent is in the app, so its receipt is recorded; records
that are busy or unavailable are 503 with Retry-After (nothing was written), as for redemptions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from cloud_bridge.adapters.http_api import (
    RETRY_AFTER_S,
    HttpProblem,
    HttpResponse,
    Request,
    Route,
    json_object,
)
from cloud_bridge.adapters.sqlite_deliveries import ReceiptState
from cloud_bridge.errors import RecordsError
from edge.core import wire


class ReceiptRecords(Protocol):
    async def record_receipt(self, offer_id: str, status: str, now_s: float) -> ReceiptState: ...


def offer_routes(records: ReceiptRecords, wall_clock: Callable[[], float]) -> tuple[Route, ...]:
    """The offers' endpoints."""

    async def receipt(request: Request, offer_id: str) -> HttpResponse:
        try:
            wire.check_id(offer_id, "offer_id")
        except wire.WireError as exc:
            raise HttpProblem(
                400, "invalid_field", f"{request.where}: {exc.reason}", field="offer_id"
            ) from None
        body = json_object(request)
        unknown = sorted(set(body) - {"status"})
        if unknown:
            raise HttpProblem(
                400,
                "invalid_field",
                f"{request.where}: unknown field {unknown[0][:40]!r}; the body is "
                '{"status": "received" | "opened" | "dismissed"}',
                field=unknown[0][:40],
            )
        status = body.get("status")
        if status not in wire.RECEIPT_STATUSES:
            raise HttpProblem(
                400,
                "invalid_field",
                f"{request.where}: field 'status' must be one of "
                f"{', '.join(wire.RECEIPT_STATUSES)}, got {str(status)[:40]!r}",
                field="status",
            )
        try:
            state = await records.record_receipt(offer_id, status, wall_clock())
        except RecordsError:
            raise HttpProblem(
                503,
                "records_unavailable",
                f"{request.where}: the loyalty records are busy or unavailable; retry in "
                f"{RETRY_AFTER_S} s (a receipt that failed wrote nothing)",
                headers=(("Retry-After", str(RETRY_AFTER_S)),),
            ) from None
        if state.outcome == "unknown":
            raise HttpProblem(404, "unknown_offer", f"{request.where}: no offer {offer_id!r}")
        if state.outcome == "refused":
            raise HttpProblem(
                409,
                "not_delivered",
                f"{request.where}: offer {offer_id!r} was never sent to anyone "
                f"({state.delivery}): it cannot have been received",
            )
        return HttpResponse(200, state.to_json())

    return (Route.of(r"^/v1/offers/([^/]+)/receipt$", {"POST": receipt}),)


_RECEIPT_STATE = {
    "type": "object",
    "properties": {
        "offer_id": {"type": "string"},
        "delivery": {
            "type": "string",
            "enum": ["pending", "sent", "received", "expired", "dead", "suppressed"],
            "description": (
                "The offer's delivery state after the receipt (suppressed: withdrawn after it "
                "was sent; the receipt is recorded and it is not sent again)."
            ),
        },
        "received_at": {"type": ["number", "null"], "description": "Unix seconds"},
        "opened_at": {"type": ["number", "null"], "description": "Unix seconds"},
        "dismissed_at": {"type": ["number", "null"], "description": "Unix seconds"},
    },
    "required": ["offer_id", "delivery", "received_at", "opened_at", "dismissed_at"],
}
_PROBLEM = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
    },
    "required": ["error", "message"],
}

#: OpenAPI 3.1 path items of this module (merged into GET /v1/openapi.json).
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/offers/{offer_id}/receipt": {
        "parameters": [
            {
                "name": "offer_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "maxLength": 64},
                "description": "The offer's id (the webhook's Idempotency-Key).",
            }
        ],
        "post": {
            "operationId": "recordOfferReceipt",
            "summary": "Relay what the shopper's app did with an offer",
            "description": (
                "For offers delivered by webhook: the retailer's backend relays the app's "
                "receipts. `opened` and `dismissed` imply `received`; a repeated receipt "
                "changes nothing. docs/webhook.md."
            ),
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "string",
                                    "enum": list(wire.RECEIPT_STATUSES),
                                }
                            },
                            "required": ["status"],
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Recorded (or already recorded)",
                    "content": {"application/json": {"schema": _RECEIPT_STATE}},
                },
                "400": {
                    "description": "Bad status or body",
                    "content": {"application/json": {"schema": _PROBLEM}},
                },
                "401": {"description": "No valid API token"},
                "404": {
                    "description": "No such offer",
                    "content": {"application/json": {"schema": _PROBLEM}},
                },
                "409": {
                    "description": (
                        "The offer was never sent (holdout, or suppressed before it was sent)"
                    ),
                    "content": {"application/json": {"schema": _PROBLEM}},
                },
                "503": {
                    "description": "The records are busy: retry after Retry-After seconds",
                    "content": {"application/json": {"schema": _PROBLEM}},
                },
            },
        },
    }
}
