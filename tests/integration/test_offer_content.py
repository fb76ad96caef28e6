"""A trigger recorded by the running bridge (issue 11): the holdout member gets nothing, the others
the campaign's content and a code of its pool, which the till then redeems through the bridge's API.
Real Mosquitto, real SQLite, the bridge's own HTTP API."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from cloud_bridge.adapters.http_api import add_token_hash, new_api_token, token_hash
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.config import ApiSection, BridgeConfig, BridgeSection
from cloud_bridge.core.holdout import in_holdout
from cloud_bridge.seed import seed_records
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import PahoMqtt
from edge.core import bundle, wire
from edge.core.broker_identity import bridge_identity, gateway_identity, shopper_identity
from edge.demo.runner import shopper_tokens
from edge.demo.shopper_apps import ShopperApps
from edge.services.tasks import cancel_and_wait
from tests.factories import TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.http import request
from tests.integration.rig import eventually

CHAIN = "test-chain"
STORE = "store-001"
GW = wire.GatewayAddress(CHAIN, STORE, "door-1")
CAMPAIGN = "spring-treat"
MEMBERS = 8


async def test_holdout_codes_and_content_from_trigger_to_redemption(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    now = time.time()
    records = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.sqlite", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    await seed_records(records, members=MEMBERS, seed=3, stores=(STORE,), joined_at=now - 86400)
    db = records.connection
    await db.execute(
        "INSERT INTO campaigns (id, title, body, tiers, cooldown_s, priority, validity_s, "
        "image_url, deep_link, holdout_pct) VALUES (?, 'Spring treat', 'A treat on us.', "
        "'bronze,silver,gold', 60, 1, 1800, 'https://cdn.example.com/spring.jpg', "
        "'acmeapp://offers/spring', 50)",
        (CAMPAIGN,),
    )
    await db.executemany(
        "INSERT INTO campaign_codes (code, campaign_id, added_at) VALUES (?, ?, ?)",
        [(f"SPRING-{i:03d}", CAMPAIGN, now) for i in range(MEMBERS)],
    )
    await db.commit()
    members = [f"m-{n:05d}" for n in range(MEMBERS)]
    held = {m for m in members if in_holdout(CAMPAIGN, m, 50)}
    assert 0 < len(held) < MEMBERS
    # The store's gateway, registered: the bridge records what it publishes.
    key = bundle.generate_gateway_key(random.Random("door-1").randbytes)
    await records.add_gateway(STORE, GW.gateway, bundle.public_key_bytes(key), now)
    triggers = {}
    events: list[wire.Event] = []
    for n, member in enumerate(members):
        visit = make_visit(member=member, device=f"d-{n:05d}", ts=now, detected_at=now)
        offer = make_offer_trigger(
            visit_id=visit.event_id,
            member=member,
            device=f"d-{n:05d}",
            campaign=CAMPAIGN,
            ts=now,
            detected_at=now,
        )
        triggers[member] = (visit.event_id, offer.event_id)
        events += [sent.event for sent in await as_sent(records, GW, visit, offer)]

    token = new_api_token()
    add_token_hash(tmp_path / "api-tokens", token_hash(token))
    bridge = Bridge(
        BridgeConfig(
            BridgeSection(chain=CHAIN, database=str(records.path)),
            mosquitto.mqtt_section(bridge_identity(CHAIN, "bridge-1")),
            ApiSection(enabled=True, port=0, tokens_file=str(tmp_path / "api-tokens")),
        ),
        records,
        records,
        bundle.generate_signing_key(random.Random("content").randbytes),
        data_key=TEST_DATA_KEY,
    )
    tokens = await shopper_tokens(records)
    apps = ShopperApps(
        lambda t: mosquitto.client_settings(shopper_identity(CHAIN, t)), CHAIN, tokens
    )
    gateway = PahoMqtt(mosquitto.client_settings(gateway_identity(GW)))
    tasks = [
        asyncio.create_task(bridge.run(), name="test-bridge"),
        asyncio.create_task(apps.run(), name="test-apps"),
        asyncio.create_task(gateway.run(), name="test-gateway"),
    ]
    try:
        await apps.wait_connected(10)
        await gateway.wait_connected(10)

        async def uploaded() -> bool:
            """As the gateway's uplink does: resend until acknowledged (the bridge may not have
            subscribed yet; a duplicate is acknowledged and changes nothing)."""
            for event in events:
                await gateway.publish(wire.event_topic(GW, event.KIND), wire.encode(event), qos=1)
            await asyncio.sleep(0.5)
            return await records.count("offers") == MEMBERS

        await eventually(uploaded, "the gateway's events recorded")
        sent = len(members) - len(held)
        await eventually(lambda: len(apps.received) == sent, f"{sent} offers received")
        by_offer = {offer: member for member, (_, offer) in triggers.items()}
        got = {by_offer[offer_id]: r.offer for offer_id, r in apps.received.items()}
        assert set(got) == set(members) - held
        codes = {offer.code for offer in got.values()}
        assert len(codes) == sent and all(c and c.startswith("SPRING-") for c in codes)
        for offer in got.values():
            assert offer.image_url == "https://cdn.example.com/spring.jpg"
            assert offer.deep_link == "acmeapp://offers/spring"
            assert offer.valid_until == offer.issued_at + 1800
        async with db.execute(
            "SELECT member_id, delivery, code FROM offers WHERE delivery = 'holdout'"
        ) as cursor:
            holdouts = {(r[0], r[2]) async for r in cursor}
        assert holdouts == {(m, None) for m in held}

        # The till redeems one shopper's code through the bridge's own API.
        member, offer = next(iter(got.items()))
        server = bridge.api_server
        assert server is not None
        reply = await request(
            server.port,
            "POST",
            "/v1/redemptions",
            token=token,
            json_body={"code": offer.code, "store": STORE},
        )
        assert reply.status == 201, reply.raw_body
        assert reply.json()["member"] == member
        assert reply.json()["visit_id"] == triggers[member][0]
        counters = bridge.status().counters
        assert counters["offers_holdout"] == len(held)
        assert counters["offers_suppressed"] == 0
    finally:
        await cancel_and_wait(tasks)
        await records.close()
