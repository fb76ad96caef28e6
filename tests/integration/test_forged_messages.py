"""Nothing forged counts, on a real Mosquitto: forged acks drain no outbox (issue 9)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from pathlib import Path

import pytest

from cloud_bridge.cli import main
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import PahoMqtt
from edge.core import bundle, signed, wire
from edge.core.broker_identity import bridge_identity, gateway_identity
from tests.integration.rig import CHAIN, GATEWAY, STORE, Rig, eventually, monitor, store_rig


async def pending_visits(rig: Rig, count: int, now_s: float) -> list[wire.Visit]:
    """`count` visits of consenting members under the store's pseudonyms, as its gateway sends."""
    return await rig.genuine_visits(count, now_s, "forged-test")


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
            # Another bridge instance's certificate: the ACL lets it publish acks and campaigns
            # (a stolen certificate, or an ACL mistake), but it does not hold the signing key.
            mosquitto.client_settings(bridge_identity(CHAIN, "bridge-2")),
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
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
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
            # Another bridge instance's certificate: the ACL lets it publish acks and campaigns
            # (a stolen certificate, or an ACL mistake), but it does not hold the signing key.
            mosquitto.client_settings(bridge_identity(CHAIN, "bridge-2")),
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
        # The bridge reads it from the gateway's status and tells IT.
        await eventually(
            lambda: "rejected campaigns [unknown_signer]" in caplog.text, "the bridge's warning"
        )


async def test_events_of_an_unregistered_gateway_wait_unacked_until_it_is_registered(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        newcomer = wire.GatewayAddress(rig.gateway.address.chain, STORE, "door-9")
        visits = await pending_visits(rig, 3, time.time())
        acks: list[bytes] = []
        client = PahoMqtt(
            mosquitto.client_settings(gateway_identity(newcomer)),
            subscriptions=[(wire.ack_topic(newcomer), 1)],
            on_message=lambda m: acks.append(m.payload),
        )
        task = asyncio.create_task(client.run(), name="test-door-9")
        try:
            await client.wait_connected(10)

            async def send() -> None:
                for visit in visits:
                    await client.publish(wire.event_topic(newcomer, "visit"), wire.encode(visit))

            await send()
            await eventually(lambda: rig.bridge.refused_events == 3, "the events refused")
            assert await rig.records.count("visits") == 0 and acks == []

            # Registered now: its resends (the gateway keeps unacknowledged events) are recorded.
            key = bundle.generate_gateway_key(random.Random("door-9").randbytes)
            await rig.records.add_gateway(
                STORE, "door-9", bundle.public_key_bytes(key), time.time()
            )
            await eventually(
                lambda: rig.bridge._registered is not None and newcomer in rig.bridge._registered,
                "the registration read at the next sync",
            )
            await send()

            async def recorded() -> bool:
                return await rig.records.count("visits") == 3

            await eventually(recorded, "the backlog recorded")
            await eventually(lambda: len(acks) >= 1, "a signed ack")
        finally:
            await client.disconnect()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        verified = signed.verify(acks[0], wire.ack_topic(newcomer), [rig.signing_key.public_key()])
        assert set(wire.decode_as(verified.payload, wire.Ack).event_ids) <= {
            v.event_id for v in visits
        }


async def test_events_with_times_far_off_are_quarantined_acked_and_listed_for_it(
    tmp_path: Path, mosquitto: MosquittoProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    options = {"event_max_future_s": 300.0, "status_interval_s": 0.2}
    async with (
        store_rig(tmp_path, mosquitto, bridge_options=options) as rig,
        monitor(mosquitto, wire.bridge_status_filter(CHAIN), wire.BridgeStatus) as statuses,
    ):
        now = time.time()
        future = await pending_visits(rig, 2, now + 3 * 86400)  # a gateway clock days ahead
        ancient = await pending_visits(rig, 1, now - 90 * 86400)
        ancient = [dataclasses.replace(v, event_id="ancient-0") for v in ancient]
        fine = [
            dataclasses.replace(v, event_id="fine-0") for v in await pending_visits(rig, 1, now)
        ]
        await rig.gateway.store.append_events([*future, *ancient, *fine], now)
        rig.gateway.uplink.wake()

        async def outbox_empty() -> bool:
            return await rig.gateway.store.count() == 0

        await eventually(outbox_empty, "every event acknowledged")
        assert await rig.column("SELECT event_id FROM visits") == ["fine-0"]
        assert rig.bridge.quarantined == 3
        # IT sees them on the bridge's retained status, and sees it go offline when it stops.
        await eventually(
            lambda: any(s.counters.get("quarantined") == 3 for s in statuses),
            "the quarantine count on the bridge's status",
        )
        assert {s.bridge for s in statuses} == {"bridge-1"}
        await rig.bridge.say_goodbye()
        await eventually(lambda: statuses[-1].state == "offline", "the bridge's offline status")
        database = str(rig.records.path)
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["quarantine", database, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((q["event_id"], q["reason"]) for q in listed) == [
        ("ancient-0", "ts_too_old"),
        (future[0].event_id, "ts_future"),
        (future[1].event_id, "ts_future"),
    ]
    assert await asyncio.to_thread(main, ["quarantine", database]) == 0
    assert capsys.readouterr().out.startswith("3 quarantined event(s)")
