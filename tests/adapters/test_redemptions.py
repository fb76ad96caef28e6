"""Redemptions (issue 11) through the real HTTP API and the CLI, on a real seeded SQLite database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters import http_redemptions
from cloud_bridge.adapters.http_api import (
    EnrollmentApiServer,
    add_token_hash,
    new_api_token,
    serve_api,
    token_hash,
)
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.cli import main
from cloud_bridge.core.campaigns import CampaignChange, InvalidCampaign
from cloud_bridge.core.holdout import in_holdout
from cloud_bridge.seed import seed_records
from edge.core import wire
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.http import HttpReply, request

CHAIN = "acme"
STORE = "store-001"
GW = wire.GatewayAddress(CHAIN, STORE, "gw-1")
NOW = T0 + 60.0
POOLED = "pooled-treat"  # a code of its own for each offer
SHARED = "coffee-code"  # one code, COFFEE, for every shopper
HELD = "held-back"  # everybody in its holdout
VALIDITY_S = 3600.0


@dataclass
class Setup:
    records: SqliteLoyaltyRecords
    offers: dict[str, wire.OfferTrigger]  # by name
    visits: dict[str, str]  # offer name → its visit id


async def execute(records: SqliteLoyaltyRecords, sql: str, *params: object) -> None:
    await records.connection.execute(sql, params)
    await records.connection.commit()


async def rows(records: SqliteLoyaltyRecords, sql: str, *params: object) -> list[tuple[Any, ...]]:
    async with records.connection.execute(sql, params) as cursor:
        return [tuple(r) async for r in cursor]


async def build(path: Path) -> Setup:
    """Offers of each kind, recorded as a gateway sends them."""
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    await seed_records(records, members=6, seed=1, stores=(STORE,), joined_at=T0 - 86400)
    await execute(records, "UPDATE settings SET value = '0' WHERE key = 'member_cooldown_s'")
    for campaign, code, holdout in ((POOLED, None, 0), (SHARED, "COFFEE", 0), (HELD, None, 100)):
        await execute(
            records,
            "INSERT INTO campaigns (id, title, body, tiers, cooldown_s, priority, validity_s, "
            "code, holdout_pct) VALUES (?, 'A treat', 'For you.', 'bronze,silver,gold', 0, 1, ?, "
            "?, ?)",
            campaign,
            VALIDITY_S,
            code,
            holdout,
        )
    for code in ("TREAT-1", "TREAT-2", "TREAT-3"):
        await execute(
            records,
            "INSERT INTO campaign_codes (code, campaign_id, added_at) VALUES (?, ?, ?)",
            code,
            POOLED,
            T0,
        )
    plan = {
        "pooled": (0, POOLED, T0),
        "pooled-other": (1, POOLED, T0 + 1),
        "coffee-early": (2, SHARED, T0 + 2),
        "coffee-late": (2, SHARED, T0 + 3),
        "held": (3, HELD, T0 + 4),
        "unknown-campaign": (4, "gone-campaign", T0 + 5),
    }
    offers: dict[str, wire.OfferTrigger] = {}
    visits: dict[str, str] = {}
    for name, (n, campaign, ts) in plan.items():
        member, device = f"m-{n:05d}", f"d-{n:05d}"
        visit = make_visit(member=member, device=device, ts=ts, detected_at=ts)
        offer = make_offer_trigger(
            visit_id=visit.event_id, member=member, device=device, campaign=campaign, ts=ts
        )
        # Recorded one after the other: the later coffee offer is the latest.
        await records.record(await as_sent(records, GW, visit, offer), NOW + ts - T0)
        offers[name], visits[name] = offer, visit.event_id
    assert in_holdout(HELD, "m-00003", 100)
    return Setup(records, offers, visits)


@dataclass
class Api:
    setup: Setup
    server: EnrollmentApiServer
    token: str
    clock: list[float]

    async def redeem(self, **body: Any) -> HttpReply:
        return await request(
            self.server.port, "POST", "/v1/redemptions", token=self.token, json_body=body
        )

    def offer(self, name: str) -> str:
        return self.setup.offers[name].event_id

    async def redemptions(self) -> list[tuple[Any, ...]]:
        return await rows(
            self.setup.records,
            "SELECT offer_id, code, store_id, source, redeemed_at FROM redemptions ORDER BY 1",
        )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    path = tmp_path / "loyalty.db"
    setup = await build(path)
    enrollment = await SqliteEnrollment.open(path, CHAIN, data_key=TEST_DATA_KEY)
    token = new_api_token()
    add_token_hash(tmp_path / "tokens", token_hash(token))
    clock = [NOW + 600]
    routes = http_redemptions.routes(setup.records, lambda: clock[0])
    server = await serve_api(enrollment, tmp_path / "tokens", "127.0.0.1", 0, routes=routes)
    try:
        yield Api(setup, server, token, clock)
    finally:
        await server.close()
        await enrollment.close()
        await setup.records.close()


async def test_a_pool_code_redeems_its_offer_once_linked_to_the_visit(api: Api) -> None:
    (code,) = [
        r[0]
        for r in await rows(
            api.setup.records, "SELECT code FROM offers WHERE event_id = ?", api.offer("pooled")
        )
    ]
    assert code == "TREAT-1"

    reply = await api.redeem(code=code, store=STORE)

    assert reply.status == 201, reply.raw_body
    assert reply.json() == {
        "offer_id": api.offer("pooled"),
        "campaign": POOLED,
        "member": "m-00000",
        "visit_id": api.setup.visits["pooled"],
        "offer_store": STORE,
        "code": "TREAT-1",
        "store": STORE,
        "source": "pos",
        "redeemed_at": api.clock[0],
        "recorded_at": api.clock[0],
    }
    # The redemption joins to the visit through the offer.
    linked = await rows(
        api.setup.records,
        "SELECT v.event_id FROM redemptions r JOIN offers o ON o.event_id = r.offer_id "
        "JOIN visits v ON v.event_id = o.visit_id",
    )
    assert linked == [(api.setup.visits["pooled"],)]

    api.clock[0] += 30
    again = await api.redeem(code=code)
    assert again.status == 409
    assert again.json()["error"] == "already_redeemed"
    assert again.json()["redeemed_at"] == NOW + 600
    assert again.json()["field"] == "code"
    assert len(await api.redemptions()) == 1


async def test_by_offer_id_from_the_app_at_a_given_time(api: Api) -> None:
    at = NOW + 120
    reply = await api.redeem(offer_id=api.offer("pooled-other"), source="app", redeemed_at=at)
    assert reply.status == 201, reply.raw_body
    assert await api.redemptions() == [(api.offer("pooled-other"), "TREAT-2", None, "app", at)]


async def test_a_shared_code_needs_the_member_and_takes_their_latest_unredeemed_offer(
    api: Api,
) -> None:
    anonymous = await api.redeem(code="COFFEE")
    assert (anonymous.status, anonymous.json()["error"], anonymous.json()["field"]) == (
        400,
        "invalid_field",
        "member",
    )
    first = await api.redeem(code="COFFEE", member="m-00002")
    second = await api.redeem(code="COFFEE", member="m-00002")
    third = await api.redeem(code="COFFEE", member="m-00002")
    stranger = await api.redeem(code="COFFEE", member="m-00005")

    assert first.json()["offer_id"] == api.offer("coffee-late")
    assert second.json()["offer_id"] == api.offer("coffee-early")
    assert (third.status, third.json()["error"]) == (409, "already_redeemed")
    assert (stranger.status, stranger.json()["error"], stranger.json()["field"]) == (
        404,
        "unknown_offer",
        "member",
    )
    assert len(await api.redemptions()) == 2


async def test_a_shared_code_changed_after_offers_went_out_still_redeems_them(api: Api) -> None:
    # The marketer changes the campaign's code (or clears it for a pool): shoppers hold offers
    # with the old one. Looking the code up on the campaigns alone answered 404 unknown_code
    # for every offer already in their hands.
    await execute(api.setup.records, "UPDATE campaigns SET code = 'LATTE' WHERE id = ?", SHARED)
    anonymous = await api.redeem(code="COFFEE")
    assert (anonymous.status, anonymous.json()["field"]) == (400, "member")
    assert SHARED in anonymous.json()["message"]
    first = await api.redeem(code="COFFEE", member="m-00002")
    assert first.status == 201, first.raw_body
    assert first.json()["offer_id"] == api.offer("coffee-late")
    assert first.json()["code"] == "COFFEE"
    stranger = await api.redeem(code="COFFEE", member="m-00005")
    assert (stranger.status, stranger.json()["error"]) == (404, "unknown_offer")
    latte = await api.redeem(code="LATTE", member="m-00002")  # the new code: no offer has it
    assert (latte.status, latte.json()["error"], latte.json()["field"]) == (
        404,
        "unknown_offer",
        "member",
    )


async def test_a_code_old_offers_carry_is_not_given_to_a_pool_or_another_campaign(
    api: Api,
) -> None:
    # After the shared code COFFEE is changed, shoppers still hold offers with it. A pool taking
    # COFFEE made the till's COFFEE name the pool's offer: the old offers could not be redeemed.
    records = api.setup.records
    await execute(records, "UPDATE campaigns SET code = 'LATTE' WHERE id = ?", SHARED)
    with pytest.raises(InvalidCampaign) as caught:
        await records.add_campaign_codes(POOLED, ["TREAT-9", "COFFEE"], NOW)
    assert caught.value.field == "codes[1]" and SHARED in str(caught.value)
    await execute(records, "UPDATE campaigns SET code = NULL WHERE id = ?", HELD)
    with pytest.raises(InvalidCampaign) as caught:
        await records.update_campaign(HELD, CampaignChange(code="COFFEE"), NOW)
    assert caught.value.field == "code"
    await records.update_campaign(SHARED, CampaignChange(code="COFFEE"), NOW)  # its own
    assert await rows(records, "SELECT code FROM campaign_codes WHERE code = 'TREAT-9'") == []


@pytest.mark.parametrize(
    ("body", "status", "error", "field"),
    [
        ({"code": "NOPE-42"}, 404, "unknown_code", "code"),
        ({"code": "TREAT-3"}, 404, "unknown_code", "code"),  # in the pool, never given out
        ({"offer_id": "ev-o-nowhere"}, 404, "unknown_offer", "offer_id"),
        ({"offer_id": "{held}"}, 409, "not_redeemable", "offer_id"),
        ({"offer_id": "{unknown-campaign}"}, 409, "not_redeemable", "offer_id"),
        ({"offer_id": "{pooled}", "member": "m-00001"}, 409, "other_member", "member"),
        ({"offer_id": "{pooled}", "redeemed_at": T0 - 3600}, 409, "before_offer", "redeemed_at"),
        ({"offer_id": "{pooled}", "store": "store-999"}, 400, "invalid_field", "store"),
        ({"offer_id": "{pooled}", "code": "TREAT-1"}, 400, "invalid_field", "offer_id"),
        ({}, 400, "invalid_field", "code"),
        ({"code": "with space"}, 400, "invalid_field", "code"),
        ({"offer_id": "{pooled}", "source": "web"}, 400, "invalid_field", "source"),
        ({"offer_id": "{pooled}", "redeemed_at": "yesterday"}, 400, "invalid_field", "redeemed_at"),
        ({"offer_id": "{pooled}", "redeemed_at": NOW + 7200}, 400, "invalid_field", "redeemed_at"),
        ({"offer_id": "{pooled}", "amount": 3}, 400, "invalid_field", "amount"),
    ],
)
async def test_refusals_name_the_field_and_write_nothing(
    api: Api, body: dict[str, Any], status: int, error: str, field: str
) -> None:
    body = {
        k: api.offer(v[1:-1]) if isinstance(v, str) and v.startswith("{") else v
        for k, v in body.items()
    }
    reply = await api.redeem(**body)
    assert (reply.status, reply.json()["error"], reply.json().get("field")) == (
        status,
        error,
        field,
    ), reply.raw_body
    assert await api.redemptions() == []


async def test_an_offer_past_its_validity_is_refused_as_expired(api: Api) -> None:
    valid_until = NOW + VALIDITY_S  # recorded at NOW, valid for an hour
    api.clock[0] = valid_until + 60
    late = await api.redeem(offer_id=api.offer("pooled"))
    assert (late.status, late.json()["error"], late.json()["valid_until"]) == (
        409,
        "expired",
        valid_until,
    )
    # Redeemed at the till in time, reported late: accepted.
    in_time = await api.redeem(offer_id=api.offer("pooled"), redeemed_at=valid_until - 60)
    assert in_time.status == 201, in_time.raw_body


async def test_the_api_needs_a_token(api: Api) -> None:
    reply = await request(api.server.port, "POST", "/v1/redemptions", json_body={"code": "TREAT-1"})
    assert reply.status == 401
    assert await api.redemptions() == []


def test_the_cli_redeems_and_refuses_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "loyalty.db"

    async def prepare() -> str:
        setup = await build(path)
        await setup.records.close()
        return setup.offers["coffee-late"].event_id

    latest = asyncio.run(prepare())
    db = str(path)

    # Offers of the seeded past: redeemed then (now, they would be expired).
    at = str(NOW + 100)
    redeem = ["redeem", db, "--code", "COFFEE", "--member", "m-00002", "--store", STORE]
    assert main([*redeem, "--redeemed-at", at]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["offer_id"], printed["store"], printed["source"]) == (latest, STORE, "pos")

    assert main(["redeem", db, "--code", "COFFEE"]) == 2
    assert capsys.readouterr().err.startswith("cloud-bridge redeem: --member: ")
    assert main(["redeem", db, "--offer", latest]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cloud-bridge redeem: --offer: ") and "[already_redeemed]" in err
    assert main(["redeem", db, "--code", "NOPE"]) == 2
    assert "[unknown_code]" in capsys.readouterr().err
    assert main(["redeem", db, "--offer", latest, "--redeemed-at", "1e12"]) == 2
    assert capsys.readouterr().err.startswith("cloud-bridge redeem: --redeemed-at: ")


def test_every_route_is_in_the_openapi_paths() -> None:
    class Nowhere:
        async def redeem(self, claim: object, now_s: float) -> Any:
            raise AssertionError("not called")

    for route in http_redemptions.routes(Nowhere()):
        path = route.pattern.pattern.strip("^$")
        item = http_redemptions.OPENAPI_PATHS[path]
        assert {m.lower() for m in route.methods} == set(item)
        json.dumps(http_redemptions.OPENAPI_PATHS)  # plain JSON, for /v1/openapi.json


async def test_an_offer_suppressed_after_it_was_sent_is_still_the_shoppers(api: Api) -> None:
    # Consent withdrawn after the broker took it: suppressed, but it may be on the phone.
    await execute(
        api.setup.records,
        "UPDATE offers SET delivery = 'suppressed', suppressed_reason = 'no_consent', "
        "sent_at = ? WHERE event_id = ?",
        NOW + 5,
        api.offer("pooled"),
    )
    reply = await api.redeem(code="TREAT-1")
    assert reply.status == 201, reply.raw_body
