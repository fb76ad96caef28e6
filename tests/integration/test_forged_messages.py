"""Nothing forged counts, on a real Mosquitto: forged acks drain no outbox (issue 9)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from cloud_bridge.core.pseudonyms import Kind
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import MqttSettings, PahoMqtt
from edge.core import bundle, signed, wire
from tests.integration.rig import GATEWAY, STORE, Rig, eventually, store_rig


async def pending_visits(rig: Rig, count: int, now_s: float) -> list[wire.Visit]:
    """`count` visits of consenting members under the store's pseudonyms, as its gateway sends."""
    serials = await rig.records.serials()
    pseudonyms = rig.records.pseudonyms(STORE)
    async with rig.records.connection.execute(
        "SELECT d.id, d.member_id, m.tier FROM devices d JOIN members m ON m.id = d.member_id "
        "WHERE m.consent AND d.active ORDER BY d.id"
    ) as cursor:
        rows = [tuple(r) async for r in cursor]
    visits = []
    for i in range(count):
        device, member, tier = rows[i % len(rows)]
        visits.append(
            wire.Visit(
                event_id=f"forged-test-{i:04d}",
                ts=now_s + i,
                detected_at=now_s + i,
                member=pseudonyms.one(Kind.MEMBER, serials.members[member]),
                device=pseudonyms.one(Kind.DEVICE, serials.devices[device]),
                tier=tier,
                rssi_dbm=-60.0,
            )
        )
    return visits


async def test_forged_acks_drain_nothing_and_every_event_is_recorded_once_the_bridge_is_up(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto, start_bridge=False) as rig:
        now = time.time()
        visits = await pending_visits(rig, 100, now)
        await rig.gateway.store.append_events(visits, now)
        rig.gateway.uplink.wake()
        ids = tuple(v.event_id for v in visits)
        ack = wire.encode(wire.Ack(ids))
        address = rig.gateway.address
        topic = wire.ack_topic(address)
        elsewhere = wire.ack_topic(wire.GatewayAddress(address.chain, "store-002", GATEWAY))
        stranger = bundle.generate_signing_key(random.Random("forger").randbytes)
        forged = [
            ack,  # unsigned
            signed.sign(ack, topic, stranger),  # signed by a key the gateway does not trust
            signed.sign(ack, elsewhere, rig.signing_key),  # the bridge's, for another gateway
            b'{"v":1,"type":"signed"}',  # malformed
        ]
        forger = PahoMqtt(
            MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id="test-forger"),
            subscriptions=[],
        )
        task = asyncio.create_task(forger.run(), name="test-forger")
        try:
            await forger.wait_connected(10)
            for _ in range(3):
                for payload in forged:
                    await forger.publish(topic, payload, qos=1)
            await eventually(
                lambda: rig.gateway.acks_refused == 3 * len(forged), "the forged acks refused"
            )
        finally:
            await forger.disconnect()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert await rig.gateway.store.count() == 100
        assert rig.gateway.status().counters["acks_refused"] == 12

        rig.start_bridge()

        async def all_recorded() -> bool:
            return await rig.records.count("visits") == 100

        async def outbox_empty() -> bool:
            return await rig.gateway.store.count() == 0

        await eventually(all_recorded, "all 100 events recorded", 60)
        await eventually(outbox_empty, "an empty outbox (genuine acks)")
        assert sorted(await rig.column("SELECT event_id FROM visits")) == sorted(ids)


async def test_unsigned_or_forged_campaigns_change_nothing_and_the_status_says_so(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        gateway = rig.gateway
        version = gateway.sync.campaigns_version
        topic = wire.campaigns_topic(gateway.address)
        huge = wire.encode(
            wire.CampaignSync(STORE, 2**62, 0.0, ())  # no campaigns, for ever
        )
        stranger = bundle.generate_signing_key(random.Random("forger").randbytes)
        forger = PahoMqtt(
            MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id="test-forger"),
            subscriptions=[],
        )
        task = asyncio.create_task(forger.run(), name="test-forger")
        try:
            await forger.wait_connected(10)
            for payload in (huge, signed.sign(huge, topic, stranger)):
                rejections = gateway.sync.rejections
                await forger.publish(topic, payload, qos=1, retain=True)
                await eventually(
                    lambda r=rejections: gateway.sync.rejections == r + 1,
                    "the forged campaigns rejected",
                )
        finally:
            await forger.disconnect()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert gateway.sync.campaigns_version == version
        rejection = gateway.status().sync["last_rejection"]
        assert (rejection["what"], rejection["reason"]) == ("campaigns", "unknown_signer")
        assert gateway.pipeline.offers.campaigns  # the last good set is still in force
