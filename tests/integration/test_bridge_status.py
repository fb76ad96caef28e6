"""Each bridge instance's retained status for IT monitoring: online while it runs, "offline" when it
stops or dies (its last will), and only that instance may publish it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from edge.adapters.mqtt import PahoMqtt
from edge.core import wire
from edge.core.broker_identity import bridge_identity, gateway_identity, monitor_identity
from edge.process import ExitCode
from tests.fakes.broker import MosquittoProcess
from tests.integration.processes import CHAIN, bridge_config, notify_socket, running
from tests.integration.rig import eventually
from tests.integration.test_broker_acl import connected
from tests.integration.test_fail_fast import _BRIDGE_BUG

BRIDGE_1 = wire.bridge_status_topic(CHAIN, "bridge-1")


@contextlib.asynccontextmanager
async def bridge_statuses(broker: MosquittoProcess) -> AsyncIterator[list[wire.BridgeStatus]]:
    """Every bridge status of the chain as IT monitoring sees it (the retained one first)."""
    seen: list[wire.BridgeStatus] = []
    client = PahoMqtt(
        broker.client_settings(monitor_identity(CHAIN, "it")),
        subscriptions=[(wire.bridge_status_filter(CHAIN), 1)],
        on_message=lambda m: seen.append(wire.decode_as(m.payload, wire.BridgeStatus, m.topic)),
    )
    task = asyncio.create_task(client.run(), name="test-bridge-status-monitor")
    try:
        await client.wait_connected(10)
        yield seen
    finally:
        await client.disconnect()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def last_state(statuses: list[wire.BridgeStatus]) -> str | None:
    return statuses[-1].state if statuses else None


async def test_a_bridge_is_online_while_it_runs_and_offline_when_stopped_or_killed(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    config = bridge_config(tmp_path / "bridge", mosquitto)
    async with bridge_statuses(mosquitto) as statuses:
        with notify_socket(tmp_path) as notify, running("cloud_bridge", config, notify) as bridge:
            await eventually(lambda: last_state(statuses) == "online", "the bridge online", 60)
            assert statuses[-1].bridge == "bridge-1"
            assert {"recorded", "rejected", "quarantined", "expired"} <= statuses[
                -1
            ].counters.keys()
            bridge.popen.send_signal(signal.SIGKILL)  # a crash or a power cut: the will speaks
            await eventually(lambda: last_state(statuses) == "offline", "the will, offline", 30)
        with (
            notify_socket(tmp_path, abstract=True) as notify,
            running("cloud_bridge", config, notify) as bridge,
        ):
            await eventually(lambda: last_state(statuses) == "online", "online again", 60)
            bridge.popen.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(bridge.wait, 30, notify) == 0
            await eventually(lambda: last_state(statuses) == "offline", "offline on a stop", 30)


async def test_only_that_bridge_instance_publishes_its_status(
    mosquitto: MosquittoProcess,
) -> None:
    door = wire.GatewayAddress(CHAIN, "store-001", "door-1")
    for identity in (bridge_identity(CHAIN, "bridge-2"), gateway_identity(door)):
        async with connected(mosquitto, identity) as intruder:
            assert not await intruder.published(BRIDGE_1, retain=True), identity
    async with connected(mosquitto, bridge_identity(CHAIN, "bridge-1")) as bridge_1:
        assert await bridge_1.published(BRIDGE_1, retain=True)


async def test_a_bridge_whose_loop_fails_says_offline_before_it_exits(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    config = bridge_config(tmp_path / "bridge", mosquitto)
    trigger = tmp_path / "fail-now"
    async with bridge_statuses(mosquitto) as statuses:
        with (
            notify_socket(tmp_path) as notify,
            running("cloud_bridge", config, notify, inject=_BRIDGE_BUG, trigger=trigger) as bridge,
        ):
            await eventually(lambda: last_state(statuses) == "online", "the bridge online", 60)
            trigger.touch()
            assert await asyncio.to_thread(bridge.wait, 30, notify) == ExitCode.INTERNAL
        # Said by the bridge itself: its MQTT loop's clean DISCONNECT suppressed the will.
        await eventually(lambda: last_state(statuses) == "offline", "offline after a failure", 10)
