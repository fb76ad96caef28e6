"""The bridge's roster sync on real loyalty records, with a FakePublisher for the broker.

Full bundle first, deltas afterwards, a full one when a gateway's status shows it cannot apply the
delta; nothing for gateways without a registered key. Each bundle is opened as that gateway would.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.config import BridgeConfig, BridgeSection
from cloud_bridge.seed import seed_records
from edge.adapters.mqtt import Message
from edge.core import bundle, signed, wire
from tests.factories import T0, TEST_DATA_KEY
from tests.fakes.publisher import FakePublisher
from tests.unit import test_wire_hostile as hostile

CHAIN = "acme"
STORE = "store-001"
DOOR_1 = wire.GatewayAddress(CHAIN, STORE, "door-1")
DOOR_2 = wire.GatewayAddress(CHAIN, STORE, "door-2")
ELSEWHERE = wire.GatewayAddress(CHAIN, "store-002", "door-1")
SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)
KEYS = {
    DOOR_1: bundle.generate_gateway_key(random.Random("door-1").randbytes),
    DOOR_2: bundle.generate_gateway_key(random.Random("door-2").randbytes),
    ELSEWHERE: bundle.generate_gateway_key(random.Random("elsewhere").randbytes),
}


@dataclass
class Setup:
    bridge: Bridge
    records: SqliteLoyaltyRecords
    broker: FakePublisher


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    records = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.db", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    await seed_records(records, members=6, seed=1, stores=(STORE, ELSEWHERE.store), joined_at=T0)
    for address, key in KEYS.items():
        public = bundle.public_key_bytes(key)
        await records.add_gateway(address.store, address.gateway, public, T0)
    bridge = Bridge(BridgeConfig(BridgeSection(chain=CHAIN)), records, records, SIGNER)
    broker = FakePublisher()
    bridge.mqtt = broker  # type: ignore[assignment]
    try:
        yield Setup(bridge, records, broker)
    finally:
        await records.close()


def bundles_to(broker: FakePublisher, address: wire.GatewayAddress) -> list[bytes]:
    topic = wire.roster_bundle_topic(address)
    return [m.payload for m in broker.messages if m.topic == topic]


def open_for(address: wire.GatewayAddress, data: bytes, current_version: int) -> Any:
    return bundle.open_bundle(
        data,
        gateway_private_key=KEYS[address],
        trusted_signer_public_keys=[SIGNER.public_key()],
        expected_chain=CHAIN,
        expected_store=address.store,
        expected_gateway=address.gateway,
        current_version=current_version,
    )


def status(address: wire.GatewayAddress, roster_version: int, **sync: Any) -> Message:
    payload = wire.Status("online", T0, roster_version=roster_version, sync=sync)
    return Message(wire.status_topic(address), wire.encode(payload), retain=True, qos=1)


async def execute(records: SqliteLoyaltyRecords, sql: str, *params: object) -> None:
    await records.connection.execute(sql, params)
    await records.connection.commit()


async def stored_key(records: SqliteLoyaltyRecords, device: str) -> bytes:
    """The device's identity key as stored: opened with the data key (zeros once erased)."""
    async with records.connection.execute(
        "SELECT identity_key, sealed_key FROM devices WHERE id = ?", (device,)
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    sealed = None if row[1] is None else bytes(row[1])
    return records.open_identity_key(device, bytes(row[0]), sealed)


async def test_each_store_knows_members_and_devices_only_by_its_own_pseudonyms(
    setup: Setup,
) -> None:
    await setup.bridge.publish_sync()
    here = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[0], 0).roster_after({})
    door_2 = open_for(DOOR_2, bundles_to(setup.broker, DOOR_2)[0], 0).roster_after({})
    there = open_for(ELSEWHERE, bundles_to(setup.broker, ELSEWHERE)[0], 0).roster_after({})
    records = {d.ref: d for d in (await setup.records.roster(STORE)).devices}

    assert here == door_2  # one store, one set of pseudonyms
    by_key = {d.identity_key: d for d in there.values()}
    assert len(here) == len(there) == len(records) == 6
    for device in here.values():
        elsewhere = by_key[device.identity_key]
        assert device.ref not in records and device.member not in {
            r.member for r in records.values()
        }
        assert (device.ref, device.member) != (elsewhere.ref, elsewhere.member)
        assert device.ref != elsewhere.ref and device.member != elsewhere.member


async def test_each_registered_gateway_gets_a_full_bundle_only_it_can_open(setup: Setup) -> None:
    await setup.bridge.publish_sync()

    first = bundles_to(setup.broker, DOOR_1)
    assert len(first) == 1 and len(bundles_to(setup.broker, DOOR_2)) == 1
    assert all(m.retain for m in setup.broker.messages)
    opened = open_for(DOOR_1, first[0], current_version=0)
    assert opened.kind == "full" and len(opened.roster_after({})) == 6
    with pytest.raises(bundle.BundleRejected) as info:
        bundle.open_bundle(
            first[0],
            gateway_private_key=KEYS[DOOR_2],
            trusted_signer_public_keys=[SIGNER.public_key()],
            expected_chain=CHAIN,
            expected_store=STORE,
            expected_gateway="door-2",
            current_version=0,
        )
    assert info.value.reason is bundle.RejectReason.WRONG_RECIPIENT
    await setup.bridge.publish_sync()
    assert len(bundles_to(setup.broker, DOOR_1)) == 1  # nothing changed, nothing published


async def test_a_revocation_reaches_each_gateway_as_a_delta(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    full = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[0], 0)
    roster = full.roster_after({})
    await execute(setup.records, "UPDATE devices SET active = 0 WHERE id = 'd-00002'")

    await setup.bridge.publish_sync()

    opened = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[-1], full.version)
    assert opened.kind == "delta"
    (removed,) = opened.change.remove
    assert opened.change.size == 1
    assert removed in roster and removed not in opened.roster_after(roster)
    assert roster[removed].identity_key == await stored_key(setup.records, "d-00002")
    assert open_for(DOOR_2, bundles_to(setup.broker, DOOR_2)[-1], full.version).kind == "delta"


async def test_a_sync_reads_the_chains_devices_once_for_every_store(setup: Setup) -> None:
    # Every recorded visit moves every store's roster version (the member's visits count), so
    # each sync rebuilds every store's roster: reading the devices (and opening every identity
    # key) once per store made each sync cost stores x devices.
    reads: list[str] = []
    await setup.records.connection.set_trace_callback(reads.append)
    await execute(setup.records, "UPDATE stores SET roster_version = roster_version + 1")
    await setup.bridge.publish_sync()
    assert len(await setup.records.stores()) == 2
    assert sum("FROM devices d JOIN members" in sql for sql in reads) == 1
    assert sum("FROM serials" in sql for sql in reads) == 1  # pseudonyms for every store
    for address in (DOOR_1, ELSEWHERE):
        opened = open_for(address, bundles_to(setup.broker, address)[-1], 0)
        assert opened.kind == "full" and opened.version == 2
        assert len(opened.roster_after({})) == len((await setup.records.roster(STORE)).devices)


async def test_a_gateway_not_at_the_delta_base_gets_a_full_bundle(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    await execute(setup.records, "UPDATE members SET consent = 0 WHERE id = 'm-00001'")
    await setup.bridge.publish_sync()
    version = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[-1], 1).version

    # door-1 lost its database (holds nothing); door-2 is at the base, the delta is on its way.
    setup.bridge._handle_status(status(DOOR_1, 0))
    setup.bridge._handle_status(status(DOOR_2, 1))
    await setup.bridge.publish_sync()

    resent = bundles_to(setup.broker, DOOR_1)
    assert len(resent) == 3
    opened = open_for(DOOR_1, resent[-1], 0)
    assert (opened.kind, opened.version) == ("full", version)
    assert "m-00001" not in {d.member for d in opened.roster_after({}).values()}
    assert len(bundles_to(setup.broker, DOOR_2)) == 2


async def test_a_base_mismatch_rejection_brings_a_full_bundle(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    await execute(setup.records, "UPDATE devices SET active = 0 WHERE id = 'd-00003'")
    await setup.bridge.publish_sync()
    version = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[-1], 1).version
    rejection = {"what": "roster", "reason": "base_mismatch", "version": version}

    setup.bridge._handle_status(status(DOOR_1, 1, last_rejection=rejection))
    await setup.bridge.publish_sync()

    assert open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[-1], 1).kind == "full"


async def test_a_rejection_a_full_bundle_cannot_cure_is_logged_once(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await setup.bridge.publish_sync()
    rejection = {"what": "roster", "reason": "decrypt_failed", "version": 1, "message": "m"}

    for _ in range(3):
        setup.bridge._handle_status(status(DOOR_1, 0, last_rejection=rejection))
    await setup.bridge.publish_sync()

    assert len(bundles_to(setup.broker, DOOR_1)) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rejected roster v1 [decrypt_failed]" in warnings[0].message


async def test_a_reconnect_sends_every_gateway_a_full_bundle_again(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    await execute(setup.records, "UPDATE devices SET active = 0 WHERE id = 'd-00004'")

    await setup.bridge._on_connect()
    await setup.bridge.publish_sync()  # what the sync loop does after the status grace

    assert open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[-1], 1).kind == "full"


def held(address: wire.GatewayAddress, version: int) -> Message:
    key_id = bundle.key_id(bundle.public_key_bytes(KEYS[address]))
    return status(address, version, key_id=key_id)


async def test_after_a_restart_a_gateway_that_holds_the_current_roster_gets_nothing(
    tmp_path: Path, setup: Setup
) -> None:
    await setup.bridge.publish_sync()
    version = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[0], 0).version
    restarted = Bridge(
        BridgeConfig(BridgeSection(chain=CHAIN)), setup.records, setup.records, SIGNER
    )
    broker = FakePublisher()
    restarted.mqtt = broker  # type: ignore[assignment]

    await restarted._on_connect()
    restarted._handle_status(held(DOOR_1, version))  # retained: it holds the current roster
    restarted._handle_status(held(DOOR_2, version - 1))  # it missed the last one
    restarted._handle_status(held(ELSEWHERE, version))
    restarted._handle_status(status(ELSEWHERE, 0, key_id="0" * 16))  # re-keyed since: wrong key
    await restarted.publish_sync()

    assert bundles_to(broker, DOOR_1) == []
    assert open_for(DOOR_2, bundles_to(broker, DOOR_2)[-1], version - 1).kind == "full"
    assert len(bundles_to(broker, ELSEWHERE)) == 1
    # Later changes reach the adopted gateway as a delta from the version it holds.
    await execute(setup.records, "UPDATE devices SET active = 0 WHERE id = 'd-00004'")
    await restarted.publish_sync()
    assert open_for(DOOR_1, bundles_to(broker, DOOR_1)[-1], version).kind == "delta"


async def test_a_gateway_that_loses_the_roster_it_held_at_the_restart_gets_it_in_full(
    setup: Setup,
) -> None:
    await setup.bridge.publish_sync()
    version = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[0], 0).version
    await setup.bridge._on_connect()  # the broker may have lost the retained bundle
    setup.bridge._handle_status(held(DOOR_1, version))
    await setup.bridge.publish_sync()
    assert len(bundles_to(setup.broker, DOOR_1)) == 1  # adopted: nothing sent

    setup.bridge._handle_status(held(DOOR_1, 0))  # its database is gone
    await setup.bridge.publish_sync()

    assert len(bundles_to(setup.broker, DOOR_1)) == 2
    assert open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[-1], 0).kind == "full"


async def test_a_gateway_gone_offline_is_sent_its_roster_even_if_it_held_it(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    version = open_for(DOOR_1, bundles_to(setup.broker, DOOR_1)[0], 0).version
    setup.bridge._handle_status(held(DOOR_1, version))
    offline = wire.Status("offline", T0)
    setup.bridge._handle_status(
        Message(wire.status_topic(DOOR_1), wire.encode(offline), retain=True, qos=1)
    )

    await setup.bridge._on_connect()
    await setup.bridge.publish_sync()

    assert len(bundles_to(setup.broker, DOOR_1)) == 2


async def test_an_unregistered_gateway_gets_nothing_and_is_named_once(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = wire.GatewayAddress(CHAIN, STORE, "door-9")
    await setup.bridge.publish_sync()

    setup.bridge._handle_status(status(stranger, 0))
    setup.bridge._handle_status(status(stranger, 0))

    assert bundles_to(setup.broker, stranger) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"add-gateway DATABASE {STORE} door-9" in warnings[0]


async def test_a_removed_gateway_gets_its_retained_bundle_cleared(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    await setup.records.remove_gateway(STORE, "door-2")

    await setup.bridge.publish_sync()

    assert bundles_to(setup.broker, DOOR_2)[-1] == b""
    await execute(setup.records, "UPDATE devices SET active = 0 WHERE id = 'd-00005'")
    await setup.bridge.publish_sync()
    assert bundles_to(setup.broker, DOOR_2)[-1] == b""  # no more bundles for it


async def test_a_rekeyed_gateway_gets_a_full_bundle_sealed_to_its_new_key(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    new_key = bundle.generate_gateway_key(random.Random("door-1 again").randbytes)
    public = bundle.public_key_bytes(new_key)
    await setup.records.add_gateway(STORE, "door-1", public, T0)

    await setup.bridge.publish_sync()

    latest = bundles_to(setup.broker, DOOR_1)[-1]
    opened = bundle.open_bundle(
        latest,
        gateway_private_key=new_key,
        trusted_signer_public_keys=[SIGNER.public_key()],
        expected_chain=CHAIN,
        expected_store=STORE,
        expected_gateway="door-1",
        current_version=0,
    )
    assert opened.kind == "full"


async def test_the_bridge_subscribes_to_its_own_chain_only(setup: Setup) -> None:
    bridge = Bridge(BridgeConfig(BridgeSection(chain=CHAIN)), setup.records, setup.records, SIGNER)
    filters = [topic for topic, _ in bridge.mqtt._subscriptions]
    assert filters == [
        f"$share/threshold-bridge/threshold/v1/{CHAIN}/+/+/event/+",
        f"$share/threshold-bridge/threshold/v1/{CHAIN}/shopper/+/receipt",
        f"threshold/v1/{CHAIN}/+/+/status",
    ]


HANDLERS_FUZZ = settings(
    max_examples=60,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HANDLERS_FUZZ
@given(st.lists(hostile.statuses, min_size=1, max_size=3))
async def test_any_valid_status_however_odd_never_raises_out_of_the_handler(
    setup: Setup, statuses: list[wire.Status]
) -> None:
    """Schema-valid but odd `sync` maps (wrong types inside, unknown reasons) reach the sync logic."""
    await setup.bridge.publish_sync()
    for payload in statuses:
        message = Message(wire.status_topic(DOOR_1), wire.encode(payload), retain=True, qos=1)
        setup.bridge._handle_status(message)
    rejected = setup.bridge.rejected
    setup.bridge._handle_status(status(DOOR_1, 1, key_id="0" * 16, last_rejection=[1]))
    assert setup.bridge.rejected == rejected + 1  # a list inside `sync`: refused, counted


@HANDLERS_FUZZ
@given(st.lists(st.one_of(hostile.visits, hostile.triggers), min_size=1, max_size=3))
async def test_any_valid_event_however_odd_is_recorded_or_dropped_never_raised(
    setup: Setup, events: list[wire.Event]
) -> None:
    incoming = []
    for event in events:
        topic = wire.event_topic(DOOR_1, event.KIND)
        decoded = setup.bridge._decode(Message(topic, wire.encode(event), retain=False, qos=1))
        assert decoded is not None and decoded.event == event
        incoming.append(decoded)
    outcome = await setup.records.record(incoming, T0)
    assert outcome.unknown + outcome.duplicates == len(events)  # not this store's pseudonyms


def campaigns_to(broker: FakePublisher, address: wire.GatewayAddress) -> list[bytes]:
    topic = wire.campaigns_topic(address)
    return [m.payload for m in broker.messages if m.topic == topic]


async def test_each_gateway_gets_its_stores_campaigns_signed_for_its_own_topic(
    setup: Setup,
) -> None:
    await setup.bridge.publish_sync()
    await setup.bridge.publish_sync()  # unchanged: nothing published again

    for address in KEYS:
        published = campaigns_to(setup.broker, address)
        assert len(published) == 1
        verified = signed.verify(published[0], wire.campaigns_topic(address), [SIGNER.public_key()])
        campaigns = wire.decode_as(verified.payload, wire.CampaignSync)
        assert campaigns.store == address.store
    # Door 1's copy is no good on door 2's topic.
    with pytest.raises(signed.SignedRejected, match="bad_signature"):
        signed.verify(
            campaigns_to(setup.broker, DOOR_1)[0],
            wire.campaigns_topic(DOOR_2),
            [SIGNER.public_key()],
        )
    await execute(setup.records, "UPDATE campaigns SET active = 0 WHERE id = 'welcome-bakery'")
    await setup.bridge.publish_sync()
    assert all(len(campaigns_to(setup.broker, a)) == 2 for a in KEYS)


async def test_a_removed_gateways_retained_campaigns_are_cleared(setup: Setup) -> None:
    await setup.bridge.publish_sync()
    await setup.records.remove_gateway(DOOR_2.store, DOOR_2.gateway)

    await setup.bridge.publish_sync()

    assert campaigns_to(setup.broker, DOOR_2)[-1] == b""


async def test_acks_are_signed_for_each_gateways_ack_topic_in_bounded_chunks(
    setup: Setup,
) -> None:
    ids = [f"{n:064x}" for n in range(2500)]  # the longest ids the contract allows

    await setup.bridge._send_acks({DOOR_1: ids, DOOR_2: ["ev-x"]})

    acked: list[str] = []
    for message in setup.broker.messages:
        if message.topic == wire.ack_topic(DOOR_1):
            verified = signed.verify(message.payload, message.topic, [SIGNER.public_key()])
            acked += wire.decode_as(verified.payload, wire.Ack).event_ids
    assert acked == ids
    sent = [m.payload for m in setup.broker.messages if m.topic == wire.ack_topic(DOOR_1)]
    assert len(sent) == 5
    assert all(len(payload) <= wire.MAX_PAYLOAD_BYTES for payload in sent)
