"""Receipts (received, opened, dismissed) through the API and over MQTT's receipt path, on a real,
seeded SQLite loyalty database and the real API server on loopback."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters.http_api import (
    EnrollmentApiServer,
    add_token_hash,
    new_api_token,
    serve_api,
    token_hash,
)
from cloud_bridge.adapters.http_offers import OPENAPI_PATHS, offer_routes
from cloud_bridge.adapters.sqlite_deliveries import SqliteDeliveries
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.seed import seed_records
from edge.core import wire
from tests.factories import TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.http import HttpReply, request

CHAIN = "acme"
STORE = "store-001"
GW = wire.GatewayAddress(CHAIN, STORE, "door-1")
NOW = time.time()


@dataclass
class Api:
    server: EnrollmentApiServer
    records: SqliteLoyaltyRecords
    token: str
    clock: list[float]

    async def receipt(self, offer_id: str, body: Any, **kwargs: Any) -> HttpReply:
        kwargs.setdefault("token", self.token)
        return await request(
            self.server.port, "POST", f"/v1/offers/{offer_id}/receipt", json_body=body, **kwargs
        )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    path = tmp_path / "loyalty.db"
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    enrollment: SqliteEnrollment | None = None
    server: EnrollmentApiServer | None = None
    clock = [NOW]
    try:
        await seed_records(records, members=6, seed=2, stores=(STORE,), joined_at=NOW - 86400)
        await records.connection.execute(
            "UPDATE campaigns SET tiers = 'bronze,silver,gold' WHERE id = 'welcome-bakery'"
        )
        await records.connection.commit()
        enrollment = await SqliteEnrollment.open(path, CHAIN, data_key=TEST_DATA_KEY)
        token = new_api_token()
        tokens_file = tmp_path / "api-tokens"
        add_token_hash(tokens_file, token_hash(token))
        routes = offer_routes(SqliteDeliveries(records), lambda: clock[0])
        server = await serve_api(enrollment, tokens_file, "127.0.0.1", 0, routes=routes)
        yield Api(server, records, token, clock)
    finally:
        if server is not None:
            await server.close()
        if enrollment is not None:
            await enrollment.close()
        await records.close()


async def record_offer(records: SqliteLoyaltyRecords, n: int) -> str:
    member, device = f"m-{n:05d}", f"d-{n:05d}"
    visit = make_visit(member=member, device=device, ts=NOW, platform="ios")
    offer = make_offer_trigger(
        visit_id=visit.event_id, member=member, device=device, campaign="welcome-bakery", ts=NOW
    )
    outcome = await records.record(await as_sent(records, GW, visit, offer), NOW)
    assert len(outcome.deliveries) == 1, outcome.refused_offers
    return offer.event_id


async def row(records: SqliteLoyaltyRecords, offer_id: str) -> tuple[Any, ...]:
    async with records.connection.execute(
        "SELECT delivery, received_at, opened_at, dismissed_at FROM offers WHERE event_id = ?",
        (offer_id,),
    ) as cursor:
        found = await cursor.fetchone()
    assert found is not None
    return tuple(found)


async def token_of(records: SqliteLoyaltyRecords, offer_id: str) -> str:
    async with records.connection.execute(
        "SELECT shopper_token FROM offers WHERE event_id = ?", (offer_id,)
    ) as cursor:
        found = await cursor.fetchone()
    assert found is not None
    return str(found[0])


async def test_opened_implies_received_and_a_repeat_changes_nothing(api: Api) -> None:
    offer_id = await record_offer(api.records, 0)
    api.clock[0] = NOW + 5
    reply = await api.receipt(offer_id, {"status": "opened"})
    assert reply.status == 200, reply.raw_body
    assert reply.json() == {
        "offer_id": offer_id,
        "delivery": "received",
        "received_at": NOW + 5,
        "opened_at": NOW + 5,
        "dismissed_at": None,
    }
    api.clock[0] = NOW + 50
    again = await api.receipt(offer_id, {"status": "opened"})
    assert again.status == 200 and again.json() == reply.json()
    late_received = await api.receipt(offer_id, {"status": "received"})
    assert late_received.json()["received_at"] == NOW + 5  # the first time is kept
    dismissed = await api.receipt(offer_id, {"status": "dismissed"})
    assert dismissed.json()["dismissed_at"] == NOW + 50
    assert await row(api.records, offer_id) == ("received", NOW + 5, NOW + 5, NOW + 50)


async def test_received_stops_the_resending_of_a_pending_or_dead_offer(api: Api) -> None:
    pending = await record_offer(api.records, 0)
    dead = await record_offer(api.records, 1)
    await api.records.connection.execute(
        "UPDATE offers SET delivery = 'dead', last_error = 'timeout' WHERE event_id = ?", (dead,)
    )
    await api.records.connection.commit()
    for offer_id in (pending, dead):
        reply = await api.receipt(offer_id, {"status": "received"})
        assert reply.status == 200 and reply.json()["delivery"] == "received"
    assert await api.records.due_deliveries(NOW, 30.0, 100) == []


async def test_an_unknown_offer_is_404_and_one_never_sent_is_409(api: Api) -> None:
    unknown = await api.receipt("ev-nothing", {"status": "received"})
    assert unknown.status == 404 and unknown.json()["error"] == "unknown_offer"
    offer_id = await record_offer(api.records, 0)
    for state in ("holdout", "suppressed"):
        await api.records.connection.execute(
            "UPDATE offers SET delivery = ? WHERE event_id = ?", (state, offer_id)
        )
        await api.records.connection.commit()
        refused = await api.receipt(offer_id, {"status": "opened"})
        assert refused.status == 409, refused.raw_body
        assert state in refused.json()["message"]
        assert await row(api.records, offer_id) == (state, None, None, None)


@pytest.mark.parametrize(
    ("offer_id", "body", "field"),
    [
        ("ev-1", {"status": "clicked"}, "status"),
        ("ev-1", {}, "status"),
        ("ev-1", {"status": "opened", "at": 5}, "at"),
        ("EV 1", {"status": "opened"}, "offer_id"),
    ],
)
async def test_a_bad_receipt_is_400_naming_the_field(
    api: Api, offer_id: str, body: Any, field: str
) -> None:
    reply = await api.receipt(offer_id.replace(" ", "%20"), body)
    assert reply.status == 400, reply.raw_body
    assert reply.json()["field"] == field


async def test_a_receipt_needs_an_api_token(api: Api) -> None:
    offer_id = await record_offer(api.records, 0)
    reply = await api.receipt(offer_id, {"status": "opened"}, token="thr_not-a-token")
    assert reply.status == 401
    assert await row(api.records, offer_id) == ("pending", None, None, None)


def test_the_receipt_endpoint_is_described_for_openapi() -> None:
    post = OPENAPI_PATHS["/v1/offers/{offer_id}/receipt"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["status"]["enum"] == ["received", "opened", "dismissed"]
    assert set(post["responses"]) >= {"200", "400", "401", "404", "409", "503"}


async def test_mqtt_receipts_carry_a_status_and_only_the_offers_shopper_counts(api: Api) -> None:
    mine = await record_offer(api.records, 0)
    theirs = await record_offer(api.records, 1)
    token = await token_of(api.records, mine)
    records = api.records
    # Another shopper's app naming my offer changes nothing.
    assert await records.mark_received(await token_of(records, theirs), [mine], NOW + 1) == 0
    assert await records.mark_received(token, [mine, theirs], NOW + 2, "dismissed") == 1
    assert await row(records, mine) == ("received", NOW + 2, None, NOW + 2)
    assert await records.mark_received(token, [mine], NOW + 3, "dismissed") == 0  # idempotent
    assert await records.mark_received(token, [mine], NOW + 4, "opened") == 1
    assert await row(records, mine) == ("received", NOW + 2, NOW + 4, NOW + 2)
    assert await row(records, theirs) == ("pending", None, None, None)


async def test_records_that_are_locked_answer_503_with_retry_after_not_500(
    api: Api, tmp_path: Path
) -> None:
    # A database error was a 500 "internal error" (a bug, by the API's contract), while the
    # redemptions and enrollment endpoints say 503 and when to come back.
    offer_id = await record_offer(api.records, 0)
    other = sqlite3.connect(tmp_path / "loyalty.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another writer holds the file past the busy timeout
        reply = await api.receipt(offer_id, {"status": "opened"})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert reply.status == 503, reply.raw_body
    assert reply.headers["retry-after"] == "5"
    assert reply.json()["error"] == "records_unavailable"
    assert await row(api.records, offer_id) == ("pending", None, None, None)
    assert (await api.receipt(offer_id, {"status": "opened"})).status == 200


async def test_an_offer_suppressed_after_it_was_sent_records_its_receipt_and_stays_suppressed(
    api: Api,
) -> None:
    # The member's preferences changed after the offer reached the app: the receipt was refused
    # 409 "never sent to anyone", while the till still redeems the offer (it is in their hands).
    sent = await record_offer(api.records, 0)
    unsent = await record_offer(api.records, 1)
    await api.records.connection.execute(
        "UPDATE offers SET delivery = 'sent', sent_at = ? WHERE event_id = ?", (NOW + 1, sent)
    )
    await api.records.connection.execute(
        "UPDATE offers SET delivery = 'suppressed', suppressed_reason = 'preferences' "
        "WHERE event_id IN (?, ?)",
        (sent, unsent),
    )
    await api.records.connection.commit()
    api.clock[0] = NOW + 5
    reply = await api.receipt(sent, {"status": "opened"})
    assert reply.status == 200, reply.raw_body
    assert reply.json() == {
        "offer_id": sent,
        "delivery": "suppressed",
        "received_at": NOW + 5,
        "opened_at": NOW + 5,
        "dismissed_at": None,
    }
    api.clock[0] = NOW + 9
    assert (await api.receipt(sent, {"status": "opened"})).json() == reply.json()  # a repeat
    # The app's own receipt over MQTT is recorded the same way.
    token = await token_of(api.records, sent)
    assert await api.records.mark_received(token, [sent], NOW + 9, "dismissed") == 1
    assert await row(api.records, sent) == ("suppressed", NOW + 5, NOW + 5, NOW + 9)
    assert await api.records.due_deliveries(NOW + 10, 30.0, 100) == []  # not sent again
    # Suppressed before it was ever sent: nobody has it.
    refused = await api.receipt(unsent, {"status": "received"})
    assert refused.status == 409 and "suppressed" in refused.json()["message"]
    assert await api.records.mark_received(await token_of(api.records, unsent), [unsent], NOW) == 0
    assert await row(api.records, unsent) == ("suppressed", None, None, None)


async def test_after_consent_is_withdrawn_receipts_are_answered_and_nothing_is_recorded(
    api: Api, tmp_path: Path
) -> None:
    # The offer reached the app, then the member withdrew consent: the app's receipts must not go
    # on tracking what they do with it. The API still answers (the backend has nothing to fix).
    sent = await record_offer(api.records, 0)
    await api.records.connection.execute(
        "UPDATE offers SET delivery = 'sent', sent_at = ? WHERE event_id = ?", (NOW + 1, sent)
    )
    await api.records.connection.commit()
    enrollment = await SqliteEnrollment.open(tmp_path / "loyalty.db", CHAIN, data_key=TEST_DATA_KEY)
    try:
        await enrollment.withdraw_consent("m-00000")
    finally:
        await enrollment.close()
    assert (await row(api.records, sent))[0] == "suppressed"
    api.clock[0] = NOW + 5
    reply = await api.receipt(sent, {"status": "opened"})
    assert reply.status == 200, reply.raw_body
    assert reply.json()["opened_at"] is None and reply.json()["received_at"] is None
    token = await token_of(api.records, sent)
    assert await api.records.mark_received(token, [sent], NOW + 9, "dismissed") == 0
    assert await row(api.records, sent) == ("suppressed", None, None, None)
