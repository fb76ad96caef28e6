"""Signed, sealed roster sync on real parts: a spawned Mosquitto, the bridge, a provisioned gateway.

Bad bundles published on the gateway's topic are rejected with their reason, visible in its retained
status, while the last good roster stays in force; revocations arrive as deltas within one sync; and
nothing the gateway writes holds an identity key, a MAC address or an EID in clear.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cloud_bridge.adapters.data_key import DATA_KEY_FILE_NAME, load_data_key
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from edge.adapters.keystore import load_gateway_keys
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import PahoMqtt
from edge.core import bundle, wire
from edge.core.broker_identity import bridge_identity
from edge.core.bundle import FullRoster, RejectReason
from edge.demo.runner import CHAIN as DEMO_CHAIN
from edge.demo.runner import DemoOptions, demo_entrance, load_enrolled_devices, run_demo
from edge.logredact import RedactingFilter
from tests.fakes.radio import walk_in
from tests.integration.rig import CHAIN, Rig, eventually, status_monitor, store_rig
from tests.integration.secrets_scan import Needles, find_secrets, scan_files


@asynccontextmanager
async def rogue_client(broker: MosquittoProcess) -> AsyncIterator[PahoMqtt]:
    """Another bridge instance of the chain (its certificate stolen, or the broker itself)
    publishing on the gateway's roster topic: only bridge identities may."""
    rogue = PahoMqtt(broker.client_settings(bridge_identity(CHAIN, "bridge-2"), "test-rogue"))
    task = asyncio.create_task(rogue.run(), name="rogue")
    try:
        await rogue.wait_connected(10)
        yield rogue
    finally:
        await rogue.disconnect()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def sealed_by_bridge(rig: Rig, version: int, recipient: bytes | None = None) -> bytes:
    """A bundle signed with the bridge's key, as the bridge (or a thief of its key) would build."""
    devices = tuple(
        wire.RosterDevice(d.ref, d.member, "gold", d.identity_key, d.exponent) for d in rig.devices
    )
    public = recipient if recipient is not None else rig.gateway_keys.public_key
    return bundle.build_bundle(
        FullRoster(devices),
        chain=rig.gateway.address.chain,
        store=rig.gateway.address.store,
        gateway=rig.gateway.address.gateway,
        version=version,
        recipient_public_key=bundle.load_gateway_public_key(public),
        signing_key=rig.signing_key,
        random_bytes=os.urandom,
    )


def forged(data: bytes) -> bytes:
    obj = json.loads(data)
    raw = bytearray(base64.b64decode(obj["ciphertext"]))
    raw[-1] ^= 0x01
    obj["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    return bundle.canonical_json(obj)


async def next_roster(rig: Rig, change: Callable[[], object]) -> int:
    """Make a change on the bridge; wait for the gateway to apply the roster it causes."""
    version = rig.gateway.sync.roster_version
    result = change()
    if asyncio.iscoroutine(result):
        await result
    await eventually(lambda: rig.gateway.sync.roster_version > version, "the next roster")
    return rig.gateway.sync.roster_version


async def test_bad_bundles_are_rejected_with_their_reason_in_the_status_and_the_roster_kept(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        db = rig.records.connection

        async def retier() -> None:
            await db.execute(
                "UPDATE members SET tier = 'gold' WHERE id = ?", (rig.devices[5].member,)
            )
            await db.commit()

        version = await next_roster(rig, retier)  # v2: a stale version exists now
        other_gateway = bundle.generate_gateway_key(random.Random("door-2").randbytes)
        future = version + 5
        cases = {
            RejectReason.BAD_SIGNATURE: forged(sealed_by_bridge(rig, future)),
            RejectReason.WRONG_RECIPIENT: sealed_by_bridge(
                rig, future, bundle.public_key_bytes(other_gateway)
            ),
            RejectReason.STALE_VERSION: sealed_by_bridge(rig, version - 1),
            RejectReason.TRUNCATED: sealed_by_bridge(rig, future)[:300],
        }
        topic = wire.roster_bundle_topic(rig.gateway.address)
        async with (
            status_monitor(mosquitto, rig.gateway.address) as statuses,
            rogue_client(mosquitto) as rogue,
        ):
            for reason, payload in cases.items():
                await rogue.publish(topic, payload)

                def reported(reason: RejectReason = reason) -> bool:
                    last = statuses[-1].sync.get("last_rejection") if statuses else None
                    return isinstance(last, dict) and last["reason"] == reason.value

                await eventually(reported, f"a status reporting {reason.value}")
                status = statuses[-1]
                assert status.roster_version == version, reason
                assert status.sync["last_rejection"]["what"] == "roster"
                assert status.sync["key_id"] == rig.gateway_keys.key_id
        assert rig.gateway.sync.rejections == len(cases)
        # The last good roster is in force: a member walking in is recognised and offered.
        rig.source.push(walk_in(rig.devices[0], time.time()))
        await rig.settled(expected_offers=1)
        assert rig.gateway.sync.roster_version == version


async def test_a_revoked_device_is_not_recognised_after_one_sync_delivered_as_a_delta(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        revoked, kept = rig.devices[0], rig.devices[1]
        enrollment = await SqliteEnrollment.open(rig.records.path, rig.gateway.address.chain)
        try:
            await next_roster(rig, lambda: enrollment.revoke(revoked.ref))
        finally:
            await enrollment.close()
        sent = rig.bridge._rosters[rig.gateway.address]
        assert sent.base_version is not None, "the revocation should travel as a delta"

        now = time.time()
        rig.source.push(walk_in(revoked, now))
        rig.source.push(walk_in(kept, now, address="4A:00:00:00:00:09"))
        await rig.settled(expected_offers=1)
        assert await rig.members_of(rig.visits) == [kept.member]


async def test_a_gateway_that_lost_its_roster_gets_a_full_one_again(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        db = rig.records.connection

        async def revoke() -> None:
            await db.execute("UPDATE devices SET active = 0 WHERE id = ?", (rig.devices[2].ref,))
            await db.commit()

        version = await next_roster(rig, revoke)  # the bridge's last bundle is a delta
        assert rig.bridge._rosters[rig.gateway.address].base_version is not None
        # As if restarted on an empty database: no roster, and its status says so.
        rig.gateway.sync.roster_version = 0
        rig.gateway.sync._roster = {}
        await rig.gateway.publish_status()

        await eventually(
            lambda: rig.gateway.sync.roster_version == version, "a full roster for the gateway"
        )
        assert rig.bridge._rosters[rig.gateway.address].base_version is None
        rig.source.push(walk_in(rig.devices[0], time.time()))
        await rig.settled(expected_offers=1)


async def test_after_a_broker_restart_a_gateway_holding_the_roster_is_not_sent_it_again(
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud_bridge.app")
    async with store_rig(tmp_path, mosquitto) as rig:
        address, version = rig.gateway.address, rig.gateway.sync.roster_version
        held = (version, rig.gateway_keys.key_id)
        await eventually(lambda: rig.bridge._held.get(address) == held, "the gateway's status")
        caplog.clear()

        mosquitto.stop()  # the bridge reconnects, then publishes everything again...
        mosquitto.start()
        await eventually(lambda: "campaigns v" in caplog.text, "the republish after reconnecting")

        # ...except the roster this gateway holds (about 18 MB at 100k devices).
        assert f"gateway {address.prefix} holds roster v{version} already" in caplog.text
        assert not [m for m in caplog.messages if "roster v" in m and "published" in m]
        # Later changes reach it as a delta from the version it held.
        await next_roster(rig, lambda: revoke_device(rig, rig.devices[2].ref))
        assert rig.bridge._rosters[address].base_version == version


async def revoke_device(rig: Rig, device: str) -> None:
    await rig.records.connection.execute("UPDATE devices SET active = 0 WHERE id = ?", (device,))
    await rig.records.connection.commit()


async def test_nothing_the_gateway_writes_holds_a_key_mac_or_eid_while_it_runs(
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RedactingFilter())  # as edge-gateway and cloud-bridge set up logging
    macs = [f"5E:{i:02X}:B7:3C:91:D4" for i in range(4)]
    async with store_rig(tmp_path, mosquitto) as rig:
        now = time.time()
        heard = [walk_in(rig.devices[i], now + i, mac) for i, mac in enumerate(macs)]
        for adverts in heard:
            rig.source.push(adverts)
        await rig.settled(expected_offers=len(heard))
        await rig.gateway.publish_status()
        # While the gateway runs, with its WAL and shared-memory files in place.
        running = sorted(p for p in (rig.workdir / "gw").rglob("*") if p.is_file())
        snapshot = {p: p.read_bytes() for p in running}

    needles = Needles()
    for device in rig.devices:
        needles.identity_key(device.identity_key, device.ref)
    for adverts in heard:
        needles.adverts(adverts, "member")
    assert any(p.name.endswith("-wal") for p in snapshot), "no WAL: the test would prove less"
    for path, data in snapshot.items():
        assert find_secrets(data, needles) == set(), f"in {path.name} while running"
    after = sorted(p for p in (rig.workdir / "gw").rglob("*") if p.is_file())
    assert scan_files(after, needles) == []
    assert find_secrets(caplog.text.encode(), needles) == set()


async def test_the_demo_leaves_no_identity_key_mac_or_eid_in_anything_its_gateway_wrote(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RedactingFilter())  # as edge-gateway and cloud-bridge set up logging
    workdir = tmp_path / "demo"
    options = DemoOptions(
        minutes=3.0,
        speed=60.0,
        seed=7,
        members=300,
        live=False,
        workdir=workdir,
        start_unix_s=time.time(),
    )

    summary = await run_demo(options, io.StringIO())

    assert summary["members_recognised"] > 0 and summary["offers_delivered"] > 0
    # What the gateway heard and held: the same seeded entrance and the bridge's enrolled devices.
    assert options.start_unix_s is not None
    records = await SqliteLoyaltyRecords.open(
        workdir / "loyalty.sqlite",
        DEMO_CHAIN,
        data_key=load_data_key(workdir / DATA_KEY_FILE_NAME, {}),
    )
    try:
        devices = await load_enrolled_devices(records)
    finally:
        await records.close()
    needles = Needles()
    for device in devices:
        needles.identity_key(device.identity_key, device.ref)
    entrance = demo_entrance(options, devices, options.start_unix_s)
    adverts = needles.adverts(entrance.adverts(), "")
    assert adverts >= summary["adverts"] > 0
    # The iPhones' check-ins: their phones' addresses and the EIDs in their tokens.
    checkins = needles.checkins(entrance.checkin_attempts, "iPhone")
    assert checkins >= summary["checkins"]["accepted"] > 0
    gateway_key = load_gateway_keys(workdir / "gw", "file", "rpi-otp-private-key").gateway_key
    needles.identity_key(bundle.private_key_bytes(gateway_key), "the gateway's private")

    written = sorted(p for p in (workdir / "gw").rglob("*") if p.is_file())
    names = {p.name for p in written}
    assert {"gateway.sqlite", "gateway.key", "seal.key"} <= names, names
    config = workdir / "gateway.toml"
    assert scan_files([*written, config], needles) == []
    assert find_secrets(caplog.text.encode(), needles) == set(), "in the logs"
