"""Enrollment requests and results, validated without a database or a network."""

from __future__ import annotations

import ast
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.core import enrollment
from cloud_bridge.core.enrollment import (
    DEFAULT_EXPONENT,
    EID_COUNTER_BASIS,
    ConsentRequired,
    DeviceStatus,
    EnrollRequest,
    InvalidRequest,
    MemberStatus,
    RevokeResult,
    enroll_result,
    new_device,
    parse_enroll_request,
    parse_withdraw_request,
)
from edge.core import wire

MEMBER = "m-00042"
KEY = bytes(range(16))


def counting_bytes() -> Callable[[int], bytes]:
    """A stand-in for secrets.token_bytes: distinct, predictable bytes on every call."""
    calls = count()

    def random_bytes(n: int) -> bytes:
        call = next(calls)
        return bytes((call * 16 + i) % 256 for i in range(n))

    return random_bytes


def make_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "app", "consent": True}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (make_body(), EnrollRequest(MEMBER, "app")),
        (make_body(kind="tag", tier="gold"), EnrollRequest(MEMBER, "tag", "gold")),
        (make_body(exponent=0), EnrollRequest(MEMBER, "app", exponent=0)),
        (make_body(exponent=15), EnrollRequest(MEMBER, "app", exponent=15)),
        (make_body(tier=None, exponent=None), EnrollRequest(MEMBER, "app")),
    ],
)
def test_valid_enroll_requests(body: dict[str, Any], expected: EnrollRequest) -> None:
    assert parse_enroll_request(MEMBER, body) == expected


def test_the_default_rotation_exponent_is_10() -> None:
    assert parse_enroll_request(MEMBER, make_body()).exponent == DEFAULT_EXPONENT == 10


@pytest.mark.parametrize(
    ("member", "body", "field", "says"),
    [
        (MEMBER, make_body(kind=...), "kind", "is missing"),
        (MEMBER, make_body(kind="phone"), "kind", "'phone'"),
        (MEMBER, make_body(kind=["app"]), "kind", "an array"),
        (MEMBER, make_body(kind=None), "kind", "null"),
        (MEMBER, make_body(consent=...), "consent", "is missing"),
        (MEMBER, make_body(consent="true"), "consent", "must be true or false"),
        (MEMBER, make_body(consent=1), "consent", "must be true or false"),
        (MEMBER, make_body(consent=False), "consent", "must be true"),
        (MEMBER, make_body(tier=7), "tier", "must be a tier id string"),
        (MEMBER, make_body(tier=""), "tier", "is not a valid id"),
        (MEMBER, make_body(tier="Gold"), "tier", "is not a valid id"),
        (MEMBER, make_body(exponent=-1), "exponent", "must be 0..15"),
        (MEMBER, make_body(exponent=16), "exponent", "must be 0..15"),
        (MEMBER, make_body(exponent=True), "exponent", "got true"),
        (MEMBER, make_body(exponent=9.5), "exponent", "got 9.5"),
        (MEMBER, make_body(key="00" * 16), "key", "is not a known field"),
        ("M-1", make_body(), "member", "is not a valid id"),
        ("m/1", make_body(), "member", "is not a valid id"),
        ("x" * 65, make_body(), "member", "is not a valid id"),
    ],
)
def test_invalid_enroll_requests_name_the_field(
    member: str, body: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_enroll_request(member, body)
    assert caught.value.field == field
    assert says in caught.value.message
    assert caught.value.message.startswith(f"field '{field}' ")


def test_enrollment_without_consent_cannot_even_be_built() -> None:
    with pytest.raises(ConsentRequired):
        parse_enroll_request(MEMBER, make_body(consent=False))
    with pytest.raises(ConsentRequired):
        EnrollRequest(MEMBER, "app", consent=False)


def test_a_request_built_in_code_is_validated_too() -> None:
    with pytest.raises(InvalidRequest, match="'kind'"):
        EnrollRequest(MEMBER, "phone")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="'exponent'"):
        EnrollRequest(MEMBER, "tag", exponent=20)
    with pytest.raises(InvalidRequest, match="'member'"):
        EnrollRequest("", "tag")


def test_a_withdrawal_takes_an_empty_object() -> None:
    assert parse_withdraw_request(MEMBER, {}) == MEMBER
    with pytest.raises(InvalidRequest) as caught:
        parse_withdraw_request(MEMBER, {"reason": "moved away"})
    assert caught.value.field == "reason"


def test_a_new_device_draws_its_key_and_id_from_the_injected_random_source() -> None:
    random_bytes = counting_bytes()
    request = EnrollRequest(MEMBER, "tag", exponent=12)

    first = new_device(request, random_bytes)
    second = new_device(request, random_bytes)

    assert first.identity_key == bytes(range(16))
    assert len(first.identity_key) == 16
    assert first.exponent == 12
    assert first.id.startswith("d-") and len(first.id) == 2 + 16
    wire.check_id(first.id, "device")
    assert first.id != second.id and first.identity_key != second.identity_key


def test_a_short_random_source_is_a_bug_not_a_short_key() -> None:
    with pytest.raises(ValueError, match="exactly n bytes"):
        new_device(EnrollRequest(MEMBER, "app"), lambda n: b"\x00" * (n - 1))


def test_the_result_gives_the_app_its_key_counter_basis_and_offer_topic() -> None:
    request = EnrollRequest(MEMBER, "app", "silver")
    device = new_device(request, lambda n: KEY[:n])
    result = enroll_result(
        request,
        device,
        chain="acme",
        tier="silver",
        shopper_token="ab" * 12,
        enrolled_at=1_790_000_000.0,
        member_created=True,
    )

    assert result.to_json() == {
        "device": device.id,
        "member": MEMBER,
        "kind": "app",
        "tier": "silver",
        "identity_key": KEY.hex(),
        "exponent": 10,
        "eid_counter": EID_COUNTER_BASIS,
        "enrolled_at": 1_790_000_000.0,
        "shopper_token": "ab" * 12,
        "offer_topic": wire.shopper_offer_topic("acme", "ab" * 12),
        "member_created": True,
    }
    assert KEY.hex() not in repr(result) and KEY.hex() not in repr(device)


def test_status_and_revocation_carry_no_key() -> None:
    status = MemberStatus(
        MEMBER, "gold", True, 1.0, (DeviceStatus("d-1", "tag", True, 2.0),)
    ).to_json()
    assert status == {
        "member": MEMBER,
        "tier": "gold",
        "consent": True,
        "joined_at": 1.0,
        "devices": [{"device": "d-1", "kind": "tag", "active": True, "enrolled_at": 2.0}],
    }
    assert RevokeResult("d-1", MEMBER, True).to_json() == {
        "device": "d-1",
        "member": MEMBER,
        "active": False,
        "was_active": True,
    }


def test_the_enrollment_core_does_no_io() -> None:
    tree = ast.parse(Path(enrollment.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    } | {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"asyncio", "sqlite3", "aiosqlite", "secrets", "time", "os", "socket"}
