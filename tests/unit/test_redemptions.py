"""Redemption requests and rules (cloud_bridge/core/redemptions.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.core.redemptions import (
    AlreadyRedeemed,
    BeforeOffer,
    Expired,
    InvalidRedemption,
    NotRedeemable,
    OtherMember,
    RedeemableOffer,
    RedemptionClaim,
    RedemptionError,
    check_redemption,
    parse_redemption_request,
)

NOW = 1_790_000_000.0
OFFER = RedeemableOffer(
    offer_id="ev-o1",
    campaign="spring",
    member="m-1",
    visit_id="ev-v1",
    store="store-001",
    delivery="received",
    issued_at=NOW - 600,
    valid_until=NOW + 3000,
    code="SPRING-7",
)


def test_a_minimal_request_defaults_to_the_till_now() -> None:
    claim = parse_redemption_request({"code": "SPRING-7"}, NOW)
    assert claim == RedemptionClaim(code="SPRING-7")
    assert claim.at(NOW) == NOW


def test_every_field() -> None:
    body = {
        "offer_id": "ev-o1",
        "member": "m-1",
        "store": "store-001",
        "source": "app",
        "redeemed_at": NOW - 5,
    }
    assert parse_redemption_request(body, NOW) == RedemptionClaim(
        None, "ev-o1", "m-1", "store-001", "app", NOW - 5
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "code"),
        ({"code": "A", "offer_id": "b"}, "offer_id"),
        ({"code": ""}, "code"),
        ({"code": "A\n"}, "code"),
        ({"code": 12}, "code"),
        ({"offer_id": "Upper"}, "offer_id"),
        ({"code": "A", "member": "x" * 65}, "member"),
        ({"code": "A", "store": ["s"]}, "store"),
        ({"code": "A", "source": "web"}, "source"),
        ({"code": "A", "redeemed_at": True}, "redeemed_at"),
        ({"code": "A", "redeemed_at": float("nan")}, "redeemed_at"),
        ({"code": "A", "redeemed_at": -1}, "redeemed_at"),
        ({"code": "A", "redeemed_at": NOW + 301}, "redeemed_at"),
        ({"code": "A", "redeemed_at": 10**400}, "redeemed_at"),  # float() overflows
        ({"code": "A", "price": 3}, "price"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRedemption) as caught:
        parse_redemption_request(body, NOW)
    assert caught.value.field == field


@given(st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text() | st.floats()))
def test_any_body_is_a_claim_or_a_named_refusal(body: dict[str, Any]) -> None:
    try:
        parse_redemption_request(body, NOW)
    except InvalidRedemption as exc:
        assert exc.field and exc.message


def refusal(offer: RedeemableOffer, claim: RedemptionClaim) -> RedemptionError | None:
    try:
        check_redemption(offer, claim, NOW)
    except RedemptionError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("changes", "claim", "refused"),
    [
        ({}, RedemptionClaim(code="SPRING-7"), None),
        ({"delivery": "expired"}, RedemptionClaim(code="SPRING-7"), None),  # unconfirmed, in time
        ({"delivery": "holdout"}, RedemptionClaim(offer_id="ev-o1"), NotRedeemable),
        ({"delivery": "suppressed"}, RedemptionClaim(offer_id="ev-o1"), NotRedeemable),
        # Suppressed after it was sent (consent withdrawn): the shopper has it.
        ({"delivery": "suppressed", "sent": True}, RedemptionClaim(offer_id="ev-o1"), None),
        ({"delivery": "holdout", "sent": True}, RedemptionClaim(offer_id="ev-o1"), NotRedeemable),
        ({"redeemed_at": NOW - 60}, RedemptionClaim(code="SPRING-7"), AlreadyRedeemed),
        ({}, RedemptionClaim(code="SPRING-7", member="m-2"), OtherMember),
        ({}, RedemptionClaim(code="SPRING-7", redeemed_at=NOW - 1000), BeforeOffer),
        ({}, RedemptionClaim(code="SPRING-7", redeemed_at=NOW - 700), None),  # clock tolerance
        ({"valid_until": NOW - 1}, RedemptionClaim(code="SPRING-7"), Expired),
        ({"valid_until": NOW - 1}, RedemptionClaim(code="SPRING-7", redeemed_at=NOW - 2), None),
        ({"valid_until": None}, RedemptionClaim(code="SPRING-7"), None),
    ],
)
def test_the_rules(
    changes: dict[str, Any], claim: RedemptionClaim, refused: type[RedemptionError] | None
) -> None:
    found = refusal(dataclasses.replace(OFFER, **changes), claim)
    assert type(found) is refused if refused else found is None


def test_already_redeemed_says_when() -> None:
    found = refusal(dataclasses.replace(OFFER, redeemed_at=NOW - 60), RedemptionClaim(code="X"))
    assert isinstance(found, AlreadyRedeemed)
    assert found.details["redeemed_at"] == NOW - 60
    assert (found.code, found.field) == ("already_redeemed", "code")
