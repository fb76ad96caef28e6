"""A whole bridge with both channels (issue 11) on a real Mosquitto: iPhones' offers go to the
retailer's push service by webhook, the others over MQTT. A push service that hangs holds up none of
the MQTT offers, nor the recording; when it recovers every webhook offer arrives once, and the
bridge's status tells IT what happened."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.config import (
    BridgeConfig,
    BridgeSection,
    ByPlatformSection,
    DeliverySection,
    WebhookSection,
)
from cloud_bridge.seed import seed_records
from edge.adapters.mosquitto import MosquittoProcess
from edge.core import bundle, wire
from edge.core.broker_identity import bridge_identity, shopper_identity
from edge.demo.runner import shopper_tokens
from edge.demo.shopper_apps import ShopperApps
from edge.services.tasks import cancel_and_wait
from tests.factories import TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.push_service import FakePushService
from tests.integration.rig import eventually

CHAIN = "test-chain"
STORE = "store-001"
GW = wire.GatewayAddress(CHAIN, STORE, "door-1")
SECRET = b"integration-secret-0123456789abcdef"


async def states(records: SqliteLoyaltyRecords) -> dict[str, tuple[str, str]]:
    async with records.connection.execute("SELECT event_id, channel, delivery FROM offers") as c:
        return {r[0]: (r[1], r[2]) async for r in c}


async def test_a_hanging_push_service_holds_up_no_mqtt_offer_and_gets_every_webhook_one_once(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    now_s = time.time()
    records = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.sqlite", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    await seed_records(records, members=8, seed=4, stores=(STORE,), joined_at=now_s - 86400)
    await records.connection.execute(
        "UPDATE campaigns SET tiers = 'bronze,silver,gold' WHERE id = 'welcome-bakery'"
    )
    await records.connection.commit()
    push = await FakePushService(SECRET).start()
    push.mode = "slow"
    config = BridgeConfig(
        BridgeSection(chain=CHAIN, database=str(records.path), offer_resend_s=60.0),
        mosquitto.mqtt_section(bridge_identity(CHAIN, "bridge-1")),
        delivery=DeliverySection("mqtt", ByPlatformSection(ios="webhook")),
        webhook=WebhookSection(url=push.url, timeout_s=60.0, concurrency=2, max_backoff_s=0.2),
    )
    bridge = Bridge(
        config,
        records,
        records,
        bundle.generate_signing_key(random.Random("webhook").randbytes),
        webhook_secret=SECRET,
    )
    apps = ShopperApps(
        lambda token: mosquitto.client_settings(shopper_identity(CHAIN, token)),
        CHAIN,
        await shopper_tokens(records),
    )
    tasks = [
        asyncio.create_task(bridge.run(), name="test-bridge"),
        asyncio.create_task(apps.run(), name="test-apps"),
    ]
    try:
        await apps.wait_connected(10)
        # Four iPhone visits first: their offers take both webhook slots and hang there.
        iphones = await record(records, range(0, 4), now_s, "ios")
        await eventually(lambda: push.hanging == 2, "the push service holding two attempts")
        # Then Android visits: their offers go over MQTT at once, the webhook still hanging.
        androids = await record(records, range(4, 8), now_s, "android")
        await eventually(lambda: set(androids) <= set(apps.received), "the MQTT offers")
        await eventually(
            lambda: all_are(records, androids, "received"), "the apps' receipts recorded"
        )
        assert push.hanging == 2 and not set(iphones) & set(apps.received)
        assert bridge.status().counters["webhook_in_flight"] == 2
        # The push service restarts, dropping the hanging connections (an ambiguous failure:
        # retried under the same key), and answers from now on: every webhook offer arrives.
        push.mode = "ok"
        await push.serve_http()
        await eventually(lambda: all_are(records, iphones, "sent"), "the webhook offers sent")
        assert set(push.accepted) == set(iphones)
        hung = {key for mode, key in push.requests if mode == "slow"}
        assert set(push.duplicates) <= hung
        assert push.bad_signatures == []
        counters = bridge.status().counters
        assert counters["webhook_sent"] == 4 and counters["webhook_dead"] == 0
        assert counters["webhook_retries"] >= 2 and counters["offers_dead"] == 0
        status = bridge.status()
        assert status.webhook_last_error is not None
        assert "connection reset" in status.webhook_last_error or "not an HTTP" in (
            status.webhook_last_error
        )
        published = wire.decode_as(wire.encode(status), wire.BridgeStatus, "status")
        assert published.webhook_last_error == status.webhook_last_error
        assert published.counters == status.counters
    finally:
        await cancel_and_wait(tasks)
        await push.close()
        await records.close()
    assert not set(iphones) & set(apps.received), "no webhook offer also went over MQTT"


async def record(
    records: SqliteLoyaltyRecords, members: range, now_s: float, platform: str
) -> list[str]:
    events: list[wire.Event] = []
    ids = []
    for n in members:
        member, device = f"m-{n:05d}", f"d-{n:05d}"
        visit = make_visit(member=member, device=device, ts=now_s, platform=platform)
        offer = make_offer_trigger(
            visit_id=visit.event_id, member=member, device=device, campaign="welcome-bakery"
        )
        events += [visit, offer]
        ids.append(offer.event_id)
    # Recorded as the bridge's record loop does (the test stands in for the gateways); the
    # delivery loops find the new offers in the records.
    outcome = await records.record(await as_sent(records, GW, *events), now_s)
    assert len(outcome.deliveries) == len(ids), outcome.refused_offers
    return ids


async def all_are(records: SqliteLoyaltyRecords, ids: list[str], state: str) -> bool:
    found = await states(records)
    return all(found.get(i, ("", ""))[1] == state for i in ids)
