"""Garbage from any MQTT client, on every topic the bridge and the gateway listen on, on real parts.

Both keep running, count and drop each bad message (retained ones every time they come back), and a
genuine event is still recorded and acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import PahoMqtt
from edge.core import wire
from edge.core.broker_identity import bridge_identity, gateway_identity, shopper_identity
from edge.services.tasks import cancel_and_wait
from tests.fakes.radio import walk_in
from tests.integration.rig import CHAIN, STORE, eventually, store_rig

OTHER_CHAIN = wire.GatewayAddress("other-chain", STORE, "door-1")
VISIT = wire.Visit("e-forged", 1795000000.0, 1795000000.1, "m-1", "d-1", "gold", -60.0)
GARBAGE = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"[" * 30_000 + b"]" * 30_000,  # deep, within the size limit
    b'{"v":1,"type":"visit","ts":' + b"9" * 5000 + b"}",
    b'{"v":1,"type":"visit","ts":NaN}',
    b'{"v":1,"type":"visit","ts":1e999}',
    b'{"v":1,"type":"status","state":"online","ts":"yesterday"}',
    b'{"v":1,"type":"refund"}',
    b'{"v":2,"type":"ack","event_ids":[]}',
    b'{"v":1,"type":"ack","event_ids":["../../etc","E 1"]}',
    b'{"v":1,"type":"status","state":"online","ts":1,"sync":{"a":{"b":{"c":{}}}}}',
]
OVERSIZED = b'{"v":1,"type":"ack","event_ids":["' + b"e" * (wire.MAX_PAYLOAD_BYTES * 2) + b'"]}'


async def test_garbage_on_every_topic_is_counted_and_dropped_and_events_still_flow(
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with store_rig(tmp_path, mosquitto) as rig:
        address = rig.gateway.address
        # Garbage as the broker's ACL lets it arrive: a gateway's certificate on its own event
        # topics (a compromised gateway), a shopper app's on its own receipt topic, another bridge
        # instance's on what the gateway reads (a stolen bridge certificate).
        door_2 = wire.GatewayAddress(CHAIN, STORE, "door-2")
        stranger = wire.GatewayAddress(CHAIN, STORE, "door-9")  # not registered, never online
        bridge_topics = [
            wire.event_topic(door_2, "visit"),
            wire.event_topic(door_2, "offer"),
            wire.shopper_receipt_topic(CHAIN, "token-1"),
        ]
        gateway_topics = [
            wire.ack_topic(address),
            wire.roster_bundle_topic(address),
            wire.campaigns_topic(address),
        ]
        identities = {
            bridge_topics[0]: gateway_identity(door_2),
            bridge_topics[1]: gateway_identity(door_2),
            bridge_topics[2]: shopper_identity(CHAIN, "token-1"),
            wire.status_topic(stranger): gateway_identity(stranger),
            # A gateway of another chain on the same broker: the bridge does not subscribe to it.
            wire.event_topic(OTHER_CHAIN, "visit"): gateway_identity(OTHER_CHAIN),
            **{topic: bridge_identity(CHAIN, "bridge-2") for topic in gateway_topics},
        }
        rogues: dict[str, PahoMqtt] = {}
        for identity in set(identities.values()):
            rogues[str(identity)] = PahoMqtt(mosquitto.client_settings(identity))
        tasks = [asyncio.create_task(r.run(), name=f"rogue {n}") for n, r in rogues.items()]

        async def publish(topic: str, payload: bytes, retain: bool = False) -> None:
            await rogues[str(identities[topic])].publish(topic, payload, retain=retain)

        try:
            for rogue in rogues.values():
                await rogue.wait_connected(10)
            for topic in bridge_topics + gateway_topics:
                for payload in GARBAGE[1:]:  # an empty roster or status is a cleared retained one
                    await publish(topic, payload)
                await publish(topic, OVERSIZED)
            # Retained garbage: a status (what the gateway reads on every (re)connect comes
            # after the genuine visit below, whose recording moves the roster on).
            await publish(wire.status_topic(stranger), GARBAGE[4], retain=True)
            # A genuine-looking event of another chain's gateway never reaches this bridge.
            await publish(wire.event_topic(OTHER_CHAIN, "visit"), wire.encode(VISIT))

            # The bridge: every small garbage message counted; the oversized ones never reached
            # it (its maximum packet size); the gateway got its oversized ack and dropped it.
            bridge_expected = len(bridge_topics) * (len(GARBAGE) - 1) + 1
            gateway_expected = len(gateway_topics) * len(GARBAGE)
            await eventually(lambda: rig.bridge.rejected >= bridge_expected, "the bridge's drops")
            await eventually(
                lambda: rig.gateway.rejected_messages >= gateway_expected, "the gateway's drops"
            )

            # Both still work end to end.
            rig.source.push(walk_in(rig.devices[0], time.time()))
            await rig.settled(expected_offers=1)
            assert rig.bridge.rejected == bridge_expected  # nothing oversized arrived
            assert rig.gateway.status().counters["rejected_messages"] >= gateway_expected
            assert rig.gateway.sync.campaigns_version

            # The visit moved the member's visits count, so the roster: the gateway takes the
            # bridge's new one (and nothing else).
            async def holds_current() -> bool:
                current = (await rig.records.roster(STORE)).version
                return current > 1 and rig.gateway.sync.roster_version == current

            await eventually(holds_current, "the gateway holding the current roster")
            # Retained garbage where the gateway reads on every (re)connect.
            dropped = rig.gateway.rejected_messages
            await publish(wire.roster_bundle_topic(address), GARBAGE[3], retain=True)
            await publish(wire.campaigns_topic(address), GARBAGE[5], retain=True)
            await eventually(
                lambda: rig.gateway.rejected_messages >= dropped + 2, "the retained garbage"
            )

            # The broker restarts: the retained garbage comes back, and is dropped again.
            bridge_before, gateway_before = rig.bridge.rejected, rig.gateway.rejected_messages
            mosquitto.stop()
            mosquitto.start()
            await eventually(
                lambda: rig.bridge.rejected > bridge_before, "the retained garbage status again"
            )
            await eventually(
                lambda: rig.gateway.rejected_messages > gateway_before,
                "the retained garbage roster again",
            )
            rig.source.push(walk_in(rig.devices[1], time.time() + 1))
            await rig.settled(expected_offers=2)
        finally:
            for rogue in rogues.values():
                await rogue.disconnect()
            await cancel_and_wait(tasks)
        assert "e-forged" not in await rig.column("SELECT event_id FROM visits")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for topic in [*bridge_topics, wire.ack_topic(address)]:
        # One line per topic at WARNING (the rest at DEBUG), naming the topic.
        assert sum(f"topic {topic}" in w and "dropped a message" in w for w in warnings) == 1, topic
    assert any(
        f"topic {wire.ack_topic(address)}" in w and "[unsigned]" in w for w in caplog.messages
    )
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
