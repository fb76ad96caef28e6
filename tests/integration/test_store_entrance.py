"""The whole path on real parts: advert → gateway → Mosquitto → bridge → loyalty records → app."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import Message, PahoMqtt
from edge.core import eid, wire
from edge.core.advert import RawAdvert
from edge.core.broker_identity import bridge_identity, gateway_identity, monitor_identity
from edge.sim.entrance import SimDevice
from tests.fakes.radio import walk_in, walk_past
from tests.integration.rig import CHAIN, STORE, eventually, status_monitor, store_rig


async def test_members_walking_in_get_one_offer_each_and_passers_by_none(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        now = time.time()
        entering, passing = rig.devices[:5], rig.devices[5:8]
        for i, device in enumerate(entering):
            rig.source.push(walk_in(device, now + i))
        for i, device in enumerate(passing):
            rig.source.push(walk_past(device, now + i))
        await rig.settled(expected_offers=len(entering))

        members = sorted(await rig.column("SELECT member_id FROM visits"))
        assert members == sorted(d.member for d in entering)
        offered = sorted(await rig.column("SELECT member_id FROM offers"))
        assert offered == members
        received = {r.offer.offer_id for r in rig.apps.received.values()}
        assert received == {t.event_id for t in rig.triggers}
        assert await rig.column("SELECT DISTINCT delivery FROM offers") == ["received"]
        # The same members walking in again within the cooldown: new visits, no second offer.
        later = now + 400  # the first visits have timed out (visit_timeout_s = 300)
        for i, device in enumerate(entering):
            rig.source.push(walk_in(device, later + i))

        async def revisits_recorded() -> bool:
            return len(await rig.column("SELECT event_id FROM visits")) == 2 * len(entering)

        await eventually(revisits_recorded, "the second visits")
        assert len(await rig.column("SELECT event_id FROM offers")) == len(entering)


async def test_status_is_retained_and_counts_what_was_heard(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    seen: list[wire.Status] = []

    def on_message(message: Message) -> None:
        seen.append(wire.decode_as(message.payload, wire.Status, message.topic))

    async with store_rig(tmp_path, mosquitto) as rig:
        rig.source.push(walk_in(rig.devices[0], time.time()))
        await rig.settled(expected_offers=1)
        await rig.gateway.publish_status()
        monitor = PahoMqtt(
            mosquitto.client_settings(monitor_identity(CHAIN, "it"), "test-monitor"),
            subscriptions=[(wire.STATUS_FILTER, 1)],
            on_message=on_message,
        )
        task = asyncio.create_task(monitor.run(), name="monitor")
        try:
            await eventually(lambda: bool(seen), "the retained status")
        finally:
            await monitor.disconnect()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    status = seen[-1]
    assert status.state == "online"
    assert status.counters["entries"] == 1 and status.counters["resolved"] > 0
    assert status.roster_version == 1 and status.outbox_pending == 0


def heard_with_device_clock(device: SimDevice, t0: float, device_ahead_s: float) -> list[RawAdvert]:
    """A walk-in at gateway time t0 by a device whose clock runs `device_ahead_s` ahead."""
    return [replace(a, t_s=a.t_s - device_ahead_s) for a in walk_in(device, t0 + device_ahead_s)]


async def test_a_gateway_whose_clock_is_hours_off_says_so_in_its_status(
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Six hours (a time zone set wrong): several windows of every exponent, so nothing resolves."""
    caplog.set_level(logging.INFO, logger="edge.app")
    async with (
        store_rig(tmp_path, mosquitto) as rig,
        status_monitor(mosquitto, rig.gateway.address) as seen,
    ):
        now = time.time()
        for i, device in enumerate(rig.devices[:25]):
            rig.source.push(heard_with_device_clock(device, now + i, 6 * 3600))

        await eventually(
            lambda: any(s.clock.get("suspect") for s in seen), "a status with a suspect clock"
        )
    clock = next(s.clock for s in seen if s.clock.get("suspect"))
    assert rig.gateway.pipeline.counters.resolved == 0 and not rig.visits
    assert clock["resolved"] == 0 and clock["unknown_eids"] >= 20
    assert clock["offset_windows"] is None
    assert "NTP" in clock["reason"]
    warnings = [r for r in caplog.records if "clock looks wrong" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


async def test_a_gateway_with_the_right_time_reports_its_clock_fine(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with (
        store_rig(tmp_path, mosquitto) as rig,
        status_monitor(mosquitto, rig.gateway.address) as seen,
    ):
        now = time.time()
        for i, device in enumerate(rig.devices[:5]):  # one after another: radio time runs on
            rig.source.push(heard_with_device_clock(device, now + 40 * i, 0.0))

        await eventually(
            lambda: any(s.clock.get("resolved", 0) >= 30 for s in seen),
            "a status judging the clock from 30 resolved EIDs",
        )
    clock = next(s.clock for s in seen if s.clock.get("resolved", 0) >= 30)
    assert clock["suspect"] is False and clock["reason"] is None
    assert clock["offset_windows"] == 0.0


async def test_broker_killed_mid_flow_loses_and_duplicates_no_offer(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto, members=40) as rig:
        now = time.time()
        waves = [rig.devices[0:12], rig.devices[12:24], rig.devices[24:36]]
        for i, device in enumerate(waves[0]):
            rig.source.push(walk_in(device, now + i))
        # The flow is under way: some offers are out, others still in flight.
        await eventually(lambda: bool(rig.apps.received), "a first offer")
        mosquitto.kill()  # kill -9: whatever the broker had not saved is gone
        for i, device in enumerate(waves[1]):  # entries while the broker is down
            rig.source.push(walk_in(device, now + 20 + i))

        async def outbox_holds_wave_2() -> bool:  # the gateway keeps deciding, offline
            return await rig.gateway.store.count() >= 2 * len(waves[1])

        await eventually(outbox_holds_wave_2, "wave 2 in the outbox")
        await asyncio.sleep(1.0)
        mosquitto.start()
        for i, device in enumerate(waves[2]):
            rig.source.push(walk_in(device, now + 40 + i))
        expected = sum(len(w) for w in waves)
        await rig.settled(expected_offers=expected)

        trigger_ids = sorted(t.event_id for t in rig.triggers)
        assert len(trigger_ids) == expected
        recorded = sorted(await rig.column("SELECT event_id FROM offers"))
        assert recorded == trigger_ids  # each recorded exactly once (event_id is the key)
        visits = await rig.column("SELECT member_id FROM visits")
        assert sorted(visits) == sorted(d.member for w in waves for d in w)
        assert sorted(rig.apps.received) == trigger_ids  # every offer reached its shopper
        assert await rig.gateway.store.count() == 0


async def test_unknown_adverts_leave_no_trace_in_storage_or_logs(
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger = SimDevice("x-stranger", "x-stranger", os.urandom(16), 10, "app")
    stranger_mac = "DE:AD:BE:EF:C0:DE"
    member_mac = "4A:BE:EF:00:00:07"
    async with store_rig(tmp_path, mosquitto) as rig:
        now = time.time()
        rig.source.push(walk_in(stranger, now, address=stranger_mac))
        rig.source.push(walk_in(rig.devices[0], now, address=member_mac))
        await rig.settled(expected_offers=1)
        assert rig.gateway.pipeline.counters.unresolved > 0
    stranger_eid = eid.compute_eid(stranger.identity_key, 10, eid.counter_at(now))
    needles = {
        "stranger MAC": stranger_mac.encode(),
        "stranger MAC (bytes)": bytes.fromhex(stranger_mac.replace(":", "")),
        "stranger MAC (hex)": stranger_mac.replace(":", "").lower().encode(),
        "stranger EID": stranger_eid,
        "stranger EID (hex)": stranger_eid.hex().encode(),
        "stranger key (hex)": stranger.identity_key.hex().encode(),
        "member MAC": member_mac.encode(),
        "member MAC (hex)": member_mac.replace(":", "").lower().encode(),
    }
    written = [p for p in (tmp_path / "gw").rglob("*") if p.is_file()]
    assert written, "the gateway wrote no files: the test would prove nothing"
    for path in written:
        data = path.read_bytes()
        for what, needle in needles.items():
            assert needle not in data, f"{what} found in {path.name}"
    logs = "\n".join(r.getMessage() for r in caplog.records).encode()
    for what, needle in needles.items():
        assert needle not in logs, f"{what} found in the logs"


async def test_a_stopped_gateway_shows_offline(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        await rig.gateway.say_goodbye()
        assert not rig.gateway.mqtt.connected
        seen: list[wire.Status] = []
        monitor = PahoMqtt(
            mosquitto.client_settings(monitor_identity(CHAIN, "it-2"), "test-monitor-2"),
            subscriptions=[(wire.STATUS_FILTER, 1)],
            on_message=lambda m: seen.append(wire.decode_as(m.payload, wire.Status, m.topic)),
        )
        task = asyncio.create_task(monitor.run(), name="monitor")
        try:
            await eventually(lambda: bool(seen), "the retained status")
        finally:
            await monitor.disconnect()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert seen[-1].state == "offline"


async def test_bad_payloads_are_logged_once_with_their_topic_and_ignored(
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with store_rig(tmp_path, mosquitto) as rig:
        address = rig.gateway.address
        # A faulty gateway (under its own prefix: the ACL allows nothing else) and a faulty
        # bridge instance (only bridges may publish acks).
        faulty = wire.GatewayAddress(CHAIN, STORE, "door-2")
        rogue = PahoMqtt(mosquitto.client_settings(gateway_identity(faulty), "test-rogue"))
        rogue_bridge = PahoMqtt(
            mosquitto.client_settings(bridge_identity(CHAIN, "bridge-2"), "test-rogue-bridge")
        )
        task = asyncio.create_task(rogue.run(), name="rogue")
        bridge_task = asyncio.create_task(rogue_bridge.run(), name="rogue-bridge")
        try:
            await rogue.wait_connected(10)
            await rogue_bridge.wait_connected(10)
            event_topic = wire.event_topic(faulty, "visit")
            for payload in (b"not json", b'{"v": 1, "type": "visit"}', b"\xff" * 3):
                await rogue.publish(event_topic, payload)
            await rogue_bridge.publish(wire.ack_topic(address), b'{"v": 9, "type": "ack"}')
            # The flow carries on.
            rig.source.push(walk_in(rig.devices[0], time.time()))
            await rig.settled(expected_offers=1)
        finally:
            await rogue.disconnect()
            await rogue_bridge.disconnect()
            task.cancel()
            bridge_task.cancel()
            await asyncio.gather(task, bridge_task, return_exceptions=True)
        assert rig.bridge.rejected == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum(event_topic in w for w in warnings) == 1  # once, then at DEBUG
    assert sum(wire.ack_topic(address) in w and "[unsigned]" in w for w in warnings) == 1
    assert rig.gateway.acks_refused == 1


async def test_withdrawn_consent_reaches_the_gateway_at_the_next_sync(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        leaving, staying = rig.devices[0], rig.devices[1]
        version = rig.gateway.sync.roster_version
        db = rig.records.connection
        await db.execute("UPDATE members SET consent = 0 WHERE id = ?", (leaving.member,))
        await db.commit()
        await eventually(lambda: rig.gateway.sync.roster_version > version, "the next roster")

        now = time.time()
        rig.source.push(walk_in(leaving, now))
        rig.source.push(walk_in(staying, now))
        await rig.settled(expected_offers=1)
        assert await rig.members_of(rig.visits) == [staying.member]  # not even recognised
        assert await rig.column("SELECT member_id FROM visits") == [staying.member]


async def test_a_device_enrolled_over_the_api_is_recognised_at_the_door(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    from cloud_bridge.adapters.http_api import add_token_hash, new_api_token, token_hash
    from tests.fakes.http import request

    token = new_api_token()
    tokens = tmp_path / "api-tokens"
    add_token_hash(tokens, token_hash(token))
    async with store_rig(tmp_path, mosquitto, api_tokens=tokens) as rig:
        assert rig.bridge.api_server is not None
        port = rig.bridge.api_server.port
        version = rig.gateway.sync.roster_version
        reply = await request(
            port,
            "POST",
            "/v1/members/m-new-1/devices",
            token=token,
            json_body={"kind": "tag", "consent": True, "tier": "gold"},
        )
        assert reply.status == 201, reply.raw_body
        enrolled = reply.json()
        unauthenticated = await request(port, "GET", "/v1/members/m-new-1")
        assert unauthenticated.status == 401
        await eventually(lambda: rig.gateway.sync.roster_version > version, "the next roster")

        tag = SimDevice(
            enrolled["device"],
            "m-new-1",
            bytes.fromhex(enrolled["identity_key"]),
            enrolled["exponent"],
            "tag",
        )
        # The new member's app connects with its own certificate.
        (token,) = await rig.column("SELECT shopper_token FROM members WHERE id = 'm-new-1'")
        await rig.apps.add(str(token)).wait_connected(10)
        rig.source.push(walk_in(tag, time.time()))
        await rig.settled(expected_offers=1)
        assert await rig.column("SELECT member_id FROM visits") == ["m-new-1"]
        assert len(rig.apps.received) == 1


_FLOOD = """
import socket, sys, time
port, count, hold_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = []
for _ in range(count):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(hold_s)
"""


async def test_a_flood_of_idle_api_connections_neither_stops_the_api_nor_the_loops(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """1,000 silent sockets from another process: the bridge holds at most the API's cap of them,
    goes on recording visits meanwhile, and answers the API once the flood ends."""
    import subprocess
    import sys

    from cloud_bridge.adapters import http_api
    from cloud_bridge.adapters.http_api import add_token_hash, new_api_token, token_hash
    from tests.fakes.http import request

    token = new_api_token()
    tokens = tmp_path / "api-tokens"
    add_token_hash(tokens, token_hash(token))
    async with store_rig(tmp_path, mosquitto, api_tokens=tokens) as rig:
        assert rig.bridge.api_server is not None
        port = rig.bridge.api_server.port
        fds_before = len(os.listdir("/proc/self/fd"))
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _FLOOD, str(port), "1000", "6", stdout=subprocess.PIPE
        )
        try:
            assert flood.stdout is not None
            opened = int(await asyncio.wait_for(flood.stdout.readline(), 60))
            assert opened >= 900
            held = len(os.listdir("/proc/self/fd")) - fds_before
            assert held <= http_api.MAX_CONNECTIONS + 8, f"{held} sockets held for the flood"
            rig.source.push(walk_in(rig.devices[0], time.time()))
            await rig.settled(expected_offers=1)
            assert len(await rig.column("SELECT member_id FROM visits")) == 1
        finally:
            if flood.returncode is None:
                flood.kill()
            await flood.wait()
        await eventually(
            lambda: rig.bridge.api_server is not None and rig.bridge.api_server.connections == 0,
            "the flood's connections closed",
            timeout_s=15,
        )
        reply = await request(port, "GET", f"/v1/members/{rig.devices[0].member}", token=token)
        assert reply.status == 200, reply.raw_body
