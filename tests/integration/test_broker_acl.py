"""The broker as deployed: TLS with a certificate per identity and the generated ACL, on a real
Mosquitto. Who may connect, publish and read what (edge/core/broker_acl.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_bridge.cli import main as bridge_main
from edge.adapters.mosquitto import MosquittoProcess, find_mosquitto, free_loopback_port
from edge.adapters.mqtt import (
    Message,
    MqttAuthError,
    MqttConfigError,
    MqttPublishFailed,
    MqttSettings,
    PahoMqtt,
)
from edge.adapters.pki import LocalPki, TlsFiles
from edge.core import wire
from edge.core.broker_identity import (
    BrokerIdentity,
    bridge_identity,
    gateway_identity,
    monitor_identity,
    shopper_identity,
)
from tests.integration.rig import eventually

pytestmark = pytest.mark.integration

CHAIN = "test-chain"
DOOR_1 = wire.GatewayAddress(CHAIN, "store-001", "door-1")
DOOR_2 = wire.GatewayAddress(CHAIN, "store-001", "door-2")
OTHER_STORE = wire.GatewayAddress(CHAIN, "store-002", "door-1")
BRIDGE = bridge_identity(CHAIN, "bridge-1")
GUARD_S = 15.0


class Client:
    """A connected PahoMqtt and what it received."""

    def __init__(self, mqtt: PahoMqtt) -> None:
        self.mqtt = mqtt
        self.received: list[Message] = []

    async def published(self, topic: str, payload: bytes = b"{}", retain: bool = False) -> bool:
        """True if the broker accepted the message, False if it refused it (PUBACK 0x87)."""
        try:
            await self.mqtt.publish(topic, payload, retain=retain)
        except MqttPublishFailed as exc:
            assert "Not authorized" in exc.reason, exc.reason
            return False
        return True

    def topics(self) -> list[str]:
        return [m.topic for m in self.received]


@contextlib.asynccontextmanager
async def connected(
    broker: MosquittoProcess,
    identity: BrokerIdentity,
    subscriptions: tuple[str, ...] = (),
    client_id: str = "",
) -> AsyncIterator[Client]:
    client: Client
    mqtt = PahoMqtt(
        broker.client_settings(identity, client_id),
        subscriptions=[(s, 1) for s in subscriptions],
        on_message=lambda m: client.received.append(m),
    )
    client = Client(mqtt)
    task = asyncio.create_task(mqtt.run(), name=f"client-{identity}")
    try:
        await mqtt.wait_connected(GUARD_S)
        yield client
    finally:
        await mqtt.disconnect()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def settle(receiver: Client, bridge: Client, marker_topic: str) -> None:
    """Wait until a marker the bridge sends to `receiver` arrives: whatever was sent before it and
    not received by then was not delivered (one broker, one connection: in order)."""
    assert await bridge.published(marker_topic, b"marker")
    await eventually(lambda: any(m.payload == b"marker" for m in receiver.received), "the marker")


async def test_a_client_without_a_certificate_is_refused(mosquitto: MosquittoProcess) -> None:
    context = ssl.create_default_context(cafile=str(mosquitto.pki.ca_file))
    connect = bytes.fromhex("101000044d5154540502003c000000")  # CONNECT v5, no client id
    with (
        socket.create_connection((mosquitto.host, mosquitto.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        tls.do_handshake()
        tls.sendall(connect)
        if tls.recv(16) == b"":
            raise ConnectionResetError("closed without a CONNACK")


async def test_a_certificate_from_another_ca_is_refused_and_not_retried(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    foreign = LocalPki(tmp_path / "foreign-ca", "foreign").client_files(
        gateway_identity(DOOR_1).common_name
    )
    settings = MqttSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        tls=TlsFiles(mosquitto.pki.ca_file, foreign.cert_file, foreign.key_file),
    )
    with pytest.raises(MqttAuthError, match="refused our certificate"):
        async with asyncio.timeout(GUARD_S):
            await PahoMqtt(settings).run()


async def test_a_broker_certificate_we_do_not_trust_is_a_config_error(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    foreign = LocalPki(tmp_path / "foreign-ca", "foreign")
    ours = mosquitto.pki.client_files(gateway_identity(DOOR_1))
    settings = MqttSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        tls=TlsFiles(foreign.ca_file, ours.cert_file, ours.key_file),
    )
    with pytest.raises(MqttConfigError, match="ca_file"):
        async with asyncio.timeout(GUARD_S):
            await PahoMqtt(settings).run()


async def test_missing_certificate_files_are_a_config_error_naming_the_file(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    ours = mosquitto.pki.client_files(gateway_identity(DOOR_1))
    missing = tmp_path / "nowhere" / "client.crt"
    settings = MqttSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        tls=TlsFiles(ours.ca_file, missing, ours.key_file),
    )
    with pytest.raises(MqttConfigError, match=str(missing)):
        await PahoMqtt(settings).run()


async def test_a_certificate_for_another_identity_is_a_config_error(
    mosquitto: MosquittoProcess,
) -> None:
    settings = replace(
        mosquitto.client_settings(gateway_identity(DOOR_1)), identity=BRIDGE.common_name
    )
    with pytest.raises(MqttConfigError, match="is for 'test-chain/store-001/door-1'"):
        await PahoMqtt(settings).run()


async def test_a_gateway_publishes_only_under_its_own_prefix(mosquitto: MosquittoProcess) -> None:
    async with connected(mosquitto, gateway_identity(DOOR_1)) as door_1:
        assert await door_1.published(wire.event_topic(DOOR_1, "visit"))
        assert await door_1.published(wire.status_topic(DOOR_1), retain=True)
        for topic in (
            wire.event_topic(DOOR_2, "visit"),
            wire.status_topic(DOOR_2),
            wire.event_topic(OTHER_STORE, "offer"),
            f"{DOOR_1.prefix}/anything",
        ):
            assert not await door_1.published(topic), topic
        assert door_1.mqtt.connected


async def test_only_a_bridge_publishes_acks_rosters_campaigns_offers_and_alerts(
    mosquitto: MosquittoProcess,
) -> None:
    topics = [
        wire.ack_topic(DOOR_1),
        wire.roster_bundle_topic(DOOR_1),
        f"{DOOR_1.prefix}/sync/campaigns",
        wire.shopper_offer_topic(CHAIN, "tok-1"),
        wire.bridge_alerts_topic(CHAIN),
    ]
    others = [
        gateway_identity(DOOR_1),
        gateway_identity(DOOR_2),
        shopper_identity(CHAIN, "tok-1"),
        monitor_identity(CHAIN, "it"),
        bridge_identity("other-chain", "bridge-1"),  # another chain's bridge
    ]
    for identity in others:
        async with connected(mosquitto, identity) as client:
            for topic in topics:
                assert not await client.published(topic), (str(identity), topic)
    async with connected(mosquitto, BRIDGE) as bridge:
        for topic in topics:
            assert await bridge.published(topic), topic


async def test_a_gateway_reads_only_its_own_acks_roster_and_campaigns(
    mosquitto: MosquittoProcess,
) -> None:
    everything = f"{wire.TOPIC_ROOT}/#"
    async with (
        connected(mosquitto, BRIDGE) as bridge,
        connected(mosquitto, gateway_identity(DOOR_1), (everything,)) as door_1,
    ):
        for target in (DOOR_2, OTHER_STORE):
            assert await bridge.published(wire.ack_topic(target), b"theirs")
            assert await bridge.published(wire.roster_bundle_topic(target), b"theirs")
            assert await bridge.published(f"{target.prefix}/sync/campaigns", b"theirs")
        assert await bridge.published(wire.shopper_offer_topic(CHAIN, "tok-1"), b"theirs")
        assert await bridge.published(wire.roster_bundle_topic(DOOR_1), b"mine")
        await settle(door_1, bridge, wire.ack_topic(DOOR_1))
        assert not [m for m in door_1.received if m.payload == b"theirs"], door_1.topics()
        assert wire.roster_bundle_topic(DOOR_1) in door_1.topics()


async def test_a_shopper_reads_only_its_own_offers_and_confirms_only_its_own(
    mosquitto: MosquittoProcess,
) -> None:
    every_offer = wire.shopper_offer_topic(CHAIN, "+")
    async with (
        connected(mosquitto, BRIDGE, (wire.RECEIPT_FILTER,)) as bridge,
        connected(mosquitto, shopper_identity(CHAIN, "tok-1"), (every_offer,)) as app,
    ):
        assert await bridge.published(wire.shopper_offer_topic(CHAIN, "tok-2"), b"theirs")
        await settle(app, bridge, wire.shopper_offer_topic(CHAIN, "tok-1"))
        assert app.topics() == [wire.shopper_offer_topic(CHAIN, "tok-1")]
        assert await app.published(wire.shopper_receipt_topic(CHAIN, "tok-1"))
        assert not await app.published(wire.shopper_receipt_topic(CHAIN, "tok-2"))
        assert not await app.published(wire.event_topic(DOOR_1, "offer"))
        # Store id "shopper" is reserved: a shopper cannot pose as a gateway under its CN.
        assert not await app.published(f"{wire.TOPIC_ROOT}/{CHAIN}/shopper/tok-1/event/visit")
        assert not await app.published(f"{wire.TOPIC_ROOT}/{CHAIN}/shopper/tok-1/status")


async def test_the_bridge_reads_its_chain_with_shared_subscriptions_and_monitors_read_statuses(
    mosquitto: MosquittoProcess,
) -> None:
    other_chain = wire.GatewayAddress("other-chain", "store-001", "door-1")
    async with (
        connected(
            mosquitto,
            BRIDGE,
            (f"$share/threshold-bridge/{wire.EVENT_FILTER}", wire.STATUS_FILTER),
        ) as bridge,
        connected(
            mosquitto, monitor_identity(CHAIN, "it"), (wire.STATUS_FILTER, wire.ALERTS_FILTER)
        ) as monitor,
        connected(mosquitto, gateway_identity(DOOR_1)) as door_1,
        connected(mosquitto, gateway_identity(other_chain)) as foreign,
    ):
        assert await foreign.published(wire.event_topic(other_chain, "visit"), b"foreign")
        assert await foreign.published(wire.status_topic(other_chain), b"foreign")
        assert await door_1.published(wire.event_topic(DOOR_1, "visit"), b"event")
        assert await door_1.published(wire.status_topic(DOOR_1), b"status")
        assert await bridge.published(wire.bridge_alerts_topic(CHAIN), b"alert")
        await eventually(
            lambda: len(bridge.received) >= 2 and len(monitor.received) >= 2, "the messages"
        )
        await asyncio.sleep(0.2)
        assert sorted(m.payload for m in bridge.received) == [b"event", b"status"]
        assert sorted(m.payload for m in monitor.received) == [b"alert", b"status"]
        assert not await monitor.published(wire.status_topic(DOOR_1))


async def test_another_identity_using_a_gateways_client_id_takes_nothing_over(
    mosquitto: MosquittoProcess,
) -> None:
    victim_id = "threshold-gw-test-chain-store-001-door-1"
    async with (
        connected(mosquitto, BRIDGE) as bridge,
        connected(
            mosquitto, gateway_identity(DOOR_1), (wire.ack_topic(DOOR_1),), victim_id
        ) as victim,
        connected(
            mosquitto, gateway_identity(DOOR_2), (wire.ack_topic(DOOR_1),), victim_id
        ) as thief,
    ):
        assert await bridge.published(wire.ack_topic(DOOR_1), b"for door-1")
        await settle(victim, bridge, wire.ack_topic(DOOR_1))
        assert victim.mqtt.connected  # the broker used each certificate's CN as its client id
        assert [m.payload for m in victim.received] == [b"for door-1", b"marker"]
        assert thief.received == []


def test_broker_config_output_runs_a_real_mosquitto(tmp_path: Path) -> None:
    ca_dir, out = tmp_path / "ca", tmp_path / "broker"
    assert bridge_main(["ca", "init", "--dir", str(ca_dir), "--chain", CHAIN]) == 0
    assert ca_dir.stat().st_mode & 0o777 == 0o700
    assert (ca_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    assert bridge_main(["ca", "init", "--dir", str(ca_dir), "--chain", CHAIN]) == 2  # kept
    hosts = ("--host", "localhost", "--host", "127.0.0.1")
    assert bridge_main(["ca", "server-cert", "--dir", str(ca_dir), *hosts, "--out", str(out)]) == 0
    client_dir = tmp_path / "bridge-certs"
    kind = ("--chain", CHAIN, "--kind", "bridge", "--name", "bridge-1")
    assert (
        bridge_main(["ca", "client-cert", "--dir", str(ca_dir), *kind, "--out", str(client_dir)])
        == 0
    )
    port = free_loopback_port()
    identities = ("--chain", CHAIN, "--bridge-id", "bridge-1", "--monitor", "it")
    where = ("--out", str(out), "--port", str(port), "--bind", "127.0.0.1")
    data = ("--persistence-location", str(tmp_path / "data"))
    assert bridge_main(["broker-config", *identities, *where, *data]) == 0
    (tmp_path / "data").mkdir()
    conf = out / "threshold.conf"
    if os.geteuid() == 0:
        conf.write_text(conf.read_text() + "user root\n")
    proc = subprocess.Popen(
        [str(find_mosquitto()), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "mosquitto exited on the generated config"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.02)
        settings = MqttSettings(
            host="127.0.0.1",
            port=port,
            tls=TlsFiles(
                client_dir / "ca.crt", client_dir / "client.crt", client_dir / "client.key"
            ),
        )

        async def publish_as_the_bridge() -> None:
            client = PahoMqtt(settings)
            task = asyncio.create_task(client.run(), name="bridge-client")
            try:
                await client.wait_connected(GUARD_S)
                await client.publish(wire.ack_topic(DOOR_1), b"{}")
                with pytest.raises(MqttPublishFailed, match="Not authorized"):
                    await client.publish(wire.event_topic(DOOR_1, "visit"), b"{}")
            finally:
                await client.disconnect()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        asyncio.run(publish_as_the_bridge())
    finally:
        proc.terminate()
        proc.wait(10)
