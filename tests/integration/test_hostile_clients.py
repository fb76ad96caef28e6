"""The hostile-client suite (issue 9): one store on real parts (Mosquitto with TLS and the generated
ACL, the bridge on SQLite, a gateway, the shopper apps), and every client the ACL lets in doing its
worst on every topic a gateway, the bridge or a shopper app listens on.

One case per (topic × hostile payload): malformed, deep, huge, non-finite, wrongly typed, oversized
(near and over the limits), retained garbage, and values that pass the schema but are hostile (64-
character ids, 1000-element lists, times at the bounds, versions near 2^63, ids of someone else's
events or offers, a status claiming another gateway's key). Then forged and replayed signed
messages, floods, other identities and certificates. After EACH case both processes are running
and a genuine event is recorded and acknowledged within seconds (Rig.assert_alive_and_recording).

Who publishes what is what the ACL allows (edge/core/broker_acl.py): a registered second gateway
(door-2) on its own event and status topics, a shopper app certificate on its receipt topic, and a
second bridge certificate (stolen, or an ACL mistake: it lacks the signing key) on what the gateway
and the apps read. The cases share one rig (module scope): hostility accumulates, as it would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import (
    Message,
    MqttAuthError,
    MqttError,
    MqttPublishFailed,
    MqttSettings,
    PahoMqtt,
)
from edge.adapters.pki import LocalPki, TlsFiles
from edge.core import bundle, signed, wire
from edge.core.broker_identity import (
    BrokerIdentity,
    bridge_identity,
    gateway_identity,
    shopper_identity,
)
from edge.services.tasks import cancel_and_wait
from tests.integration.rig import CHAIN, STORE, Rig, eventually, store_rig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

DOOR_2 = wire.GatewayAddress(CHAIN, STORE, "door-2")
ROGUE_TOKEN = "rogue-app"
LIMIT = wire.MAX_PAYLOAD_BYTES
GUARD_S = 15.0
EXECUTOR_THREADS = 4


class Rogue:
    """A connected client with one identity, and what it received."""

    def __init__(self, broker: MosquittoProcess, identity: BrokerIdentity, reads: list[str]):
        self.received: list[Message] = []
        self.mqtt = PahoMqtt(
            broker.client_settings(identity),
            subscriptions=[(t, 1) for t in reads],
            on_message=self.received.append,
        )
        self.task = asyncio.create_task(self.mqtt.run(), name=f"rogue {identity}")

    async def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        await self.mqtt.publish(topic, payload, retain=retain, qos=qos)


@dataclass
class Hostile:
    """The rig, and a rogue client per identity the ACL lets publish somewhere."""

    rig: Rig
    door_2: Rogue  # a registered gateway of the store, compromised
    bridge_2: Rogue  # another bridge instance's certificate, without the signing key
    app: Rogue  # a shopper app certificate (its token names no member)
    victim_app: str  # a genuine shopper's token, whose offers bridge_2 may publish to
    notes: dict[str, Any] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostile(
    tmp_path_factory: pytest.TempPathFactory, test_pki: LocalPki
) -> AsyncIterator[Hostile]:
    # The cases share this event loop: its executor's threads (asyncio.to_thread) are started
    # here, all of them, so that no case is the one seen starting them (conftest's thread check).
    executor = concurrent.futures.ThreadPoolExecutor(EXECUTOR_THREADS, "hostile-executor")
    asyncio.get_running_loop().set_default_executor(executor)
    barrier = threading.Barrier(EXECUTOR_THREADS)
    await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(EXECUTOR_THREADS)))
    workdir = tmp_path_factory.mktemp("hostile")
    broker = MosquittoProcess(workdir / "mosquitto", pki=test_pki)
    broker.start()
    try:
        async with store_rig(workdir, broker, resend_s=1.0) as rig:
            door_2_key = bundle.generate_gateway_key(random.Random("door-2").randbytes)
            await rig.records.add_gateway(
                STORE, DOOR_2.gateway, bundle.public_key_bytes(door_2_key), time.time()
            )
            await eventually(
                lambda: rig.bridge._registered is not None and DOOR_2 in rig.bridge._registered,
                "door-2 registered at the next sync",
            )
            rogues = (
                Rogue(
                    broker,
                    gateway_identity(DOOR_2),
                    [
                        wire.ack_topic(DOOR_2),
                        wire.roster_bundle_topic(DOOR_2),
                        wire.campaigns_topic(DOOR_2),
                    ],
                ),
                Rogue(broker, bridge_identity(CHAIN, "bridge-2"), []),
                Rogue(broker, shopper_identity(CHAIN, ROGUE_TOKEN), []),
            )
            try:
                for rogue in rogues:
                    await rogue.mqtt.wait_connected(10)
                yield Hostile(rig, *rogues, victim_app=next(iter(rig.apps.apps)))
            finally:
                for rogue in rogues:
                    await rogue.mqtt.disconnect()
                await cancel_and_wait([r.task for r in rogues])
    finally:
        broker.stop()


# --- Targets: every topic someone listens on, who may publish there, what counts a drop ----------


@dataclass(frozen=True)
class Target:
    name: str
    topic: Callable[[Hostile], str]
    publisher: Callable[[Hostile], Rogue]
    counter: Callable[[Hostile], int]  # the listener's count of dropped messages
    payload_type: str
    valid: Callable[[Hostile], dict[str, Any]]  # a payload of the topic's type, schema-valid
    number: str  # a field the schema knows, where huge or non-finite numbers go


def _now() -> float:
    return time.time()


def _visit() -> dict[str, Any]:
    return {
        "event_id": "e-hostile",
        "ts": _now(),
        "detected_at": _now(),
        "member": "m" * 20,
        "device": "d" * 20,
        "tier": "gold",
        "rssi_dbm": -60.0,
    }


TARGETS = {
    t.name: t
    for t in (
        Target(
            "bridge-visit",
            lambda h: wire.event_topic(DOOR_2, "visit"),
            lambda h: h.door_2,
            lambda h: h.rig.bridge.rejected,
            "visit",
            lambda h: _visit(),
            "ts",
        ),
        Target(
            "bridge-offer",
            lambda h: wire.event_topic(DOOR_2, "offer"),
            lambda h: h.door_2,
            lambda h: h.rig.bridge.rejected,
            "offer_trigger",
            lambda h: {**_visit(), "visit_id": "e-hostile", "campaign": "welcome"},
            "ts",
        ),
        Target(
            "bridge-receipt",
            lambda h: wire.shopper_receipt_topic(CHAIN, ROGUE_TOKEN),
            lambda h: h.app,
            lambda h: h.rig.bridge.rejected,
            "offer_receipt",
            lambda h: {"offer_ids": ["o-1"]},
            "offer_ids",
        ),
        Target(
            "bridge-status",
            lambda h: wire.status_topic(DOOR_2),
            lambda h: h.door_2,
            lambda h: h.rig.bridge.rejected,
            "status",
            lambda h: {"state": "online", "ts": _now()},
            "ts",
        ),
        Target(
            "gateway-ack",
            lambda h: wire.ack_topic(h.rig.gateway.address),
            lambda h: h.bridge_2,
            lambda h: h.rig.gateway.rejected_messages,
            "ack",
            lambda h: {"event_ids": ["e-1"]},
            "event_ids",
        ),
        Target(
            "gateway-roster",
            lambda h: wire.roster_bundle_topic(h.rig.gateway.address),
            lambda h: h.bridge_2,
            lambda h: h.rig.gateway.rejected_messages,
            "bundle",
            lambda h: {"store": STORE, "version": 9, "devices": []},
            "version",
        ),
        Target(
            "gateway-campaigns",
            lambda h: wire.campaigns_topic(h.rig.gateway.address),
            lambda h: h.bridge_2,
            lambda h: h.rig.gateway.rejected_messages,
            "campaigns",
            lambda h: {"store": STORE, "version": 9, "member_cooldown_s": 0, "campaigns": []},
            "version",
        ),
        Target(
            "app-offer",
            lambda h: wire.shopper_offer_topic(CHAIN, h.victim_app),
            lambda h: h.bridge_2,
            lambda h: h.rig.apps.rejected,
            "offer",
            lambda h: {"offer_id": "o-1", "campaign": "c", "title": "t", "body": "b"},
            "issued_at",
        ),
    )
}


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _typed(target: Target, h: Hostile, **fields: Any) -> bytes:
    return _json({"v": 1, "type": target.payload_type, **target.valid(h), **fields})


def _padded(target: Target, h: Hostile, size: int) -> bytes:
    """A schema-valid payload grown to exactly `size` bytes by an unknown field."""
    valid = {"v": 1, "type": target.payload_type, **target.valid(h)}
    base = _json({**valid, "pad": ""})
    padded = _json({**valid, "pad": "x" * (size - len(base))})
    assert len(padded) == size
    return padded


def _number(target: Target, h: Hostile, number: bytes) -> bytes:
    """A valid payload whose numeric (or list) field holds `number`, raw JSON."""
    return _typed(target, h, **{target.number: "@@"}).replace(b'"@@"', number, 1)


def _wrong_types(target: Target, h: Hostile) -> bytes:
    """Every field of a valid payload given a value of the wrong type."""
    swapped = {k: ([] if isinstance(v, str) else "x") for k, v in target.valid(h).items()}
    return _typed(target, h, **swapped)


# Payload kinds for every target: (name, payload for (target, hostile), retained, counted).
# Counted: the listener counts it as dropped (an empty retained roster, campaigns or status is a
# cleared one; a message over the bridge's maximum packet size never reaches it).
Builder = Callable[[Target, Hostile], bytes]
GENERIC: list[tuple[str, Builder, bool, bool]] = [
    ("not-json", lambda t, h: b"not json", False, True),
    ("not-utf8", lambda t, h: b"\xff\xfe\x00{", False, True),
    ("json-scalar", lambda t, h: b"42", False, True),
    ("deep-array", lambda t, h: b"[" * 30_000 + b"]" * 30_000, False, True),
    ("deep-object", lambda t, h: b'{"a":' * 10_000 + b"1" + b"}" * 10_000, False, True),
    ("deep-field", lambda t, h: _typed(t, h)[:-1] + b',"x":' + b"[" * 20_000, False, True),
    ("huge-int", lambda t, h: _number(t, h, b"9" * 5000), False, True),
    ("nan", lambda t, h: _number(t, h, b"NaN"), False, True),
    ("infinity", lambda t, h: _number(t, h, b"-Infinity"), False, True),
    ("overflow-float", lambda t, h: _number(t, h, b"1e999"), False, True),
    ("wrong-types", _wrong_types, False, True),
    ("missing-fields", lambda t, h: _json({"v": 1, "type": t.payload_type}), False, True),
    ("unknown-type", lambda t, h: _json({"v": 1, "type": "refund", "amount": 1e9}), False, True),
    ("version-2", lambda t, h: _typed(t, h, v=2), False, True),
    ("version-float", lambda t, h: _typed(t, h, v=1.0), False, True),
    ("version-bool", lambda t, h: _typed(t, h, v=True), False, True),
    ("version-huge", lambda t, h: _typed(t, h, v=2**64), False, True),
    ("duplicate-keys", lambda t, h: _typed(t, h)[:-1] + b',"type":"ack","type":7}', False, True),
    ("bom", lambda t, h: b"\xef\xbb\xbf" + _typed(t, h), False, True),
    ("near-limit", lambda t, h: _padded(t, h, LIMIT), False, False),
    ("over-limit", lambda t, h: _padded(t, h, LIMIT + 1), False, True),
    ("oversized-1mb", lambda t, h: b'{"v":1,"x":"' + b"x" * 1_000_000 + b'"}', False, False),
    ("empty", lambda t, h: b"", False, False),
    ("retained-garbage", lambda t, h: b'{"v":1,"type":' + b"[" * 5000, True, True),
    ("retained-typed-garbage", lambda t, h: _wrong_types(t, h), True, True),
]
GENERIC_CASES = [(t, g) for t in TARGETS for g in GENERIC]


async def _published(rogue: Rogue, topic: str, payload: bytes, retain: bool) -> bool:
    """Publish; False if the broker refused it (over its size limit, or the ACL)."""
    try:
        await rogue.publish(topic, payload, retain=retain)
    except MqttPublishFailed:
        return False
    return True


async def _expect_drop(h: Hostile, target: Target, before: int) -> None:
    await eventually(lambda: target.counter(h) > before, f"{target.name}'s listener dropping it")


async def _roster_settled(h: Hostile) -> None:
    """Wait until the gateway holds the store's current roster: each visit recorded moves a
    member's visits count, so the bridge republishes (retained) after the earlier cases' visits,
    which would replace retained garbage before a listener reconnects to read it again."""
    rig = h.rig

    async def holds_current() -> bool:
        return rig.gateway.sync.roster_version == (await rig.records.roster(STORE)).version

    await eventually(holds_current, "the gateway holding the current roster")


@pytest.mark.parametrize(
    ("target_name", "kind"),
    [(t, g[0]) for t, g in GENERIC_CASES],
    ids=[f"{t}-{g[0]}" for t, g in GENERIC_CASES],
)
async def test_garbage_on_each_topic_is_dropped_and_counted(
    hostile: Hostile, target_name: str, kind: str
) -> None:
    """Counted and dropped by its listener (retained: again after the listener reconnects); a
    message over a client's maximum packet size is dropped by the broker before it. Then every
    part runs and a genuine event is recorded."""
    target = TARGETS[target_name]
    _, build, retain, counted = next(g for g in GENERIC if g[0] == kind)
    payload = build(target, hostile)
    topic = target.topic(hostile)
    if retain:
        await _roster_settled(hostile)
    before = target.counter(hostile)
    sent = await _published(target.publisher(hostile), topic, payload, retain)
    if counted:
        assert sent
        await _expect_drop(hostile, target, before)
    if retain:
        # What comes back on every reconnect is dropped every time: the listener resubscribes.
        listener = (
            hostile.rig.bridge.mqtt
            if target_name.startswith("bridge")
            else hostile.rig.apps.apps[hostile.victim_app]
            if target_name == "app-offer"
            else hostile.rig.gateway.mqtt
        )
        again = target.counter(hostile)
        listener._client.disconnect()  # as a network failure would: it reconnects by itself
        await _expect_drop(hostile, target, again)
        await _published(target.publisher(hostile), topic, b"", True)  # cleared for the others
    await hostile.rig.assert_alive_and_recording(f"{kind} on {topic}")


# --- Valid schema, hostile values --------------------------------------------------------------


async def test_events_with_hostile_but_valid_values_record_nothing_false(
    hostile: Hostile,
) -> None:
    rig = hostile.rig
    topic = wire.event_topic(DOOR_2, "visit")
    now = time.time()
    genuine = await rig.genuine_visits(3, now, "door-2-real")
    cases = {
        "64-character ids of no member": wire.Visit(
            "e" * 64, now, now, "m" * 64, "d" * 64, "t" * 64, -60.0
        ),
        "ts at the lower bound": wire.Visit("ts-zero", 0.0, 0.0, "m-1", "d-1", "gold", -200.0),
        "ts at the upper bound": wire.Visit("ts-max", 1e11, 1e11, "m-1", "d-1", "gold", 50.0),
        "a genuine member, ts at the upper bound": genuine[0].__class__(
            "door-2-future", 1e11, 1e11, genuine[0].member, genuine[0].device, "gold", -60.0
        ),
        "an event id the gateway used": (await rig.genuine_visits(1, now, "genuine-00001"))[0],
    }
    recorded_before = await rig.records.count("visits")
    for what, visit in cases.items():
        await hostile.door_2.publish(topic, wire.encode(visit))
        await rig.assert_alive_and_recording(what)
    offer_topic = wire.event_topic(DOOR_2, "offer")
    for what, trigger in {
        "an offer for an unknown campaign": wire.OfferTrigger(
            "o-unknown", "v-none", now, now, genuine[1].member, genuine[1].device, "gold", "z" * 64
        ),
        "an offer for a visit that never was": wire.OfferTrigger(
            "o-novisit", "v" * 64, now, now, genuine[1].member, genuine[1].device, "gold", "welcome"
        ),
    }.items():
        await hostile.door_2.publish(offer_topic, wire.encode(trigger))
        await rig.assert_alive_and_recording(what)
    recorded = set(await rig.column("SELECT event_id FROM visits"))
    assert not {"e" * 64, "ts-zero", "ts-max", "door-2-future"} & recorded
    # Only the genuine events (one per case) were recorded: nothing of door-2's.
    assert await rig.records.count("visits") == recorded_before + len(cases) + 2
    # Kept for the audit as door-2's, and never delivered.
    states = await rig.column(
        "SELECT event_id || ':' || delivery || ':' || gateway FROM offers WHERE event_id LIKE 'o-%'"
    )
    assert sorted(map(str, states)) == [
        "o-novisit:suppressed:door-2",
        "o-unknown:suppressed:door-2",
    ]


async def test_a_receipt_for_another_shoppers_offers_confirms_nothing(hostile: Hostile) -> None:
    rig = hostile.rig
    offers = [str(o) for o in await rig.column("SELECT event_id FROM offers")]
    received_before = rig.bridge.received
    ids = (offers + [f"{i:064d}" for i in range(wire.MAX_ACK_IDS)])[: wire.MAX_ACK_IDS]
    topic = wire.shopper_receipt_topic(CHAIN, ROGUE_TOKEN)
    for payload in (
        wire.encode(wire.OfferReceipt(tuple(ids))),  # 1000 ids, others' offers among them
        wire.encode(wire.OfferReceipt(tuple(offers[:1] * 1000))),  # one id 1000 times
    ):
        await hostile.app.publish(topic, payload)
        await rig.assert_alive_and_recording("a receipt naming other shoppers' offers")
    assert rig.bridge.received == received_before


async def test_statuses_claiming_other_keys_and_versions_cost_a_bounded_number_of_rosters(
    hostile: Hostile,
) -> None:
    """door-2's status lies: another gateway's key id, versions near 2^63, a rejection asking for
    a full roster. The bridge sends door-2 at most a few rosters, not one per status."""
    rig = hostile.rig
    topic = wire.status_topic(DOOR_2)
    door_1_key = rig.gateway_keys.key_id
    roster_topic = wire.roster_bundle_topic(DOOR_2)

    def rosters() -> int:
        return sum(m.topic == roster_topic for m in hostile.door_2.received)

    rosters_before = rosters()
    lies = [
        {"roster_version": wire.MAX_VERSION, "sync": {"key_id": door_1_key}},
        {"roster_version": wire.MAX_VERSION - 1, "campaigns_version": wire.MAX_VERSION},
        {"roster_version": 0, "sync": {"key_id": "k" * 64}},
        {
            "roster_version": 1,
            "sync": {
                "key_id": door_1_key,
                "last_rejection": {"what": "roster", "reason": "base_mismatch", "version": 1},
            },
        },
        {"sync": {f"k{i}": {f"j{j}": "x" * 1000 for j in range(32)} for i in range(31)}},
        {"counters": {f"c{i}": 2**63 - 1 for i in range(64)}},
        {
            "sync": {
                "last_rejection": {"what": "campaigns", "reason": "x" * 1000, "at": 1e15},
            }
        },
    ]
    for i in range(200):
        status = {"v": 1, "type": "status", "state": "online", "ts": time.time(), **lies[i % 7]}
        await hostile.door_2.publish(topic, _json(status), qos=0)
    await rig.assert_alive_and_recording("200 lying statuses")
    await asyncio.sleep(1.0)  # several sync intervals
    sent = rosters() - rosters_before
    assert sent <= 3, f"{sent} rosters to door-2 for 200 statuses"
    await hostile.door_2.publish(topic, b"", retain=True)


async def test_a_gateway_whose_status_shows_it_lacks_what_was_published_gets_it_again_once(
    hostile: Hostile,
) -> None:
    """A retained roster or campaigns set overwritten by a stolen bridge certificate, or an old
    signed set replayed to a gateway that lost its database: its status shows it, and the bridge
    resends, once per `resync_every_s` however many statuses say so."""
    rig = hostile.rig
    bridge = rig.bridge
    roster_topic, campaigns_topic = wire.roster_bundle_topic(DOOR_2), wire.campaigns_topic(DOOR_2)

    def got(topic: str) -> int:
        return sum(m.topic == topic and bool(m.payload) for m in hostile.door_2.received)

    door_2_key = bundle.key_id(
        bundle.public_key_bytes(bundle.generate_gateway_key(random.Random("door-2").randbytes))
    )
    lacking = _json(
        {
            "v": 1,
            "type": "status",
            "state": "online",
            "ts": time.time(),
            "roster_version": 0,
            "campaigns_version": 0,
            "sync": {"key_id": door_2_key},
        }
    )
    rosters, campaigns, resyncs = got(roster_topic), got(campaigns_topic), bridge.resyncs
    bridge.resync_every_s = 0.5
    try:
        await asyncio.sleep(0.6)  # nothing sent to door-2 for that long
        await hostile.door_2.publish(wire.status_topic(DOOR_2), lacking)
        await eventually(
            lambda: got(roster_topic) > rosters and got(campaigns_topic) > campaigns,
            "the roster and campaigns sent to door-2 again",
        )
        assert bridge.resyncs == resyncs + 1
        bridge.resync_every_s = 3600.0
        for _ in range(100):
            await hostile.door_2.publish(wire.status_topic(DOOR_2), lacking, qos=0)
        await rig.assert_alive_and_recording("100 statuses lacking everything")
        assert bridge.resyncs == resyncs + 1
    finally:
        bridge.resync_every_s = 60.0
    await hostile.door_2.publish(wire.status_topic(DOOR_2), b"", retain=True)


# --- Forged and replayed signed messages -------------------------------------------------------


async def test_forged_and_replayed_acks_remove_nothing(hostile: Hostile) -> None:
    rig = hostile.rig
    gateway = rig.gateway
    topic = wire.ack_topic(gateway.address)
    now = time.time()
    # Events the gateway holds while the bridge cannot ack them (its acks are refused meanwhile).
    pending = await rig.genuine_visits(5, now, "held")
    pending_ids = tuple(v.event_id for v in pending)
    old_ids = tuple(str(i) for i in await rig.column("SELECT event_id FROM visits LIMIT 100"))
    stranger = bundle.generate_signing_key(random.Random("forger").randbytes)
    other = wire.ack_topic(DOOR_2)
    refused_before = gateway.acks_refused
    forged = [
        wire.encode(wire.Ack(pending_ids)),  # unsigned
        signed.sign(wire.encode(wire.Ack(pending_ids)), topic, stranger),  # an unknown key
        signed.sign(wire.encode(wire.Ack(pending_ids)), other, rig.signing_key),  # door-2's
        b'{"v":1,"type":"signed","payload":"' + b"A" * 60_000 + b'"}',
    ]
    # Genuine signatures, replayed or naming what the gateway never sent: harmless no-ops.
    harmless = [
        signed.sign(wire.encode(wire.Ack(old_ids)), topic, rig.signing_key),  # an old ack again
        signed.sign(wire.encode(wire.Ack(("x" * 64,) * wire.MAX_ACK_IDS)), topic, rig.signing_key),
        signed.sign(
            wire.encode(wire.Ack(tuple(f"door-2-{i:057d}" for i in range(wire.MAX_ACK_IDS)))),
            topic,
            rig.signing_key,
        ),
    ]
    # Held back from the uplink: appended after the forgeries are on their way.
    for payload in forged + harmless:
        await hostile.bridge_2.publish(topic, payload)
    await gateway.store.append_events(pending, now)
    for payload in forged:
        await hostile.bridge_2.publish(topic, payload)
    await eventually(
        lambda: gateway.acks_refused >= refused_before + 2 * len(forged), "the forgeries refused"
    )
    await rig.assert_alive_and_recording("forged and replayed acks")
    recorded = set(await rig.column("SELECT event_id FROM visits"))
    assert set(pending_ids) <= recorded  # each recorded: removed by a genuine ack only


async def test_forged_and_replayed_campaigns_and_rosters_change_nothing(hostile: Hostile) -> None:
    rig = hostile.rig
    gateway = rig.gateway
    sync = gateway.sync
    campaigns_version, roster_version = sync.campaigns_version, sync.roster_version
    devices = len(sync.roster_devices())
    topic = wire.campaigns_topic(gateway.address)
    stranger = bundle.generate_signing_key(random.Random("forger").randbytes)
    empty_forever = wire.encode(wire.CampaignSync(STORE, wire.MAX_VERSION, 0.0, ()))
    old = wire.encode(wire.CampaignSync(STORE, max(campaigns_version - 1, 1), 0.0, ()))
    wrong_store = wire.encode(wire.CampaignSync("store-002", wire.MAX_VERSION, 0.0, ()))
    forged = [
        empty_forever,  # unsigned, the largest version
        signed.sign(empty_forever, topic, stranger),
        signed.sign(empty_forever, wire.campaigns_topic(DOOR_2), rig.signing_key),  # door-2's
        signed.sign(wrong_store, topic, rig.signing_key),
        signed.sign(old, topic, rig.signing_key),  # an old set replayed
    ]
    roster_topic = wire.roster_bundle_topic(gateway.address)
    recipient = X25519PublicKey.from_public_bytes(rig.gateway_keys.public_key)

    def roster_bundle(version: int, key: Any, gateway_id: str = "door-1") -> bytes:
        return bundle.build_bundle(
            bundle.plan_sync(None, {}, None),  # an empty roster: nobody recognised
            chain=CHAIN,
            store=STORE,
            gateway=gateway_id,
            version=version,
            recipient_public_key=recipient,
            signing_key=key,
            random_bytes=random.Random("r").randbytes,
        )

    rosters = [
        roster_bundle(wire.MAX_VERSION, stranger),
        roster_bundle(wire.MAX_VERSION, rig.signing_key, "door-2"),  # sealed for door-2's topic
        roster_bundle(roster_version, rig.signing_key),  # the version in force, replayed
    ]
    for payload in forged:
        await hostile.bridge_2.publish(topic, payload, retain=True)
        await rig.assert_alive_and_recording("forged campaigns")
    for payload in rosters:
        await hostile.bridge_2.publish(roster_topic, payload, retain=True)
        await rig.assert_alive_and_recording("a forged or replayed roster")
    # Only the bridge's own rosters count: each genuine visit moves the version on (the member's
    # visits), none of the forged or replayed ones took.
    assert sync.campaigns_version == campaigns_version
    assert roster_version <= sync.roster_version < wire.MAX_VERSION
    await _roster_settled(hostile)
    assert len(sync.roster_devices()) == devices and gateway.pipeline.offers.campaigns
    rejection = gateway.status().sync["last_rejection"]
    assert rejection["what"] == "roster"
    # The bridge republishes the genuine ones at its next connect (they are retained).
    rig.bridge.mqtt._client.disconnect()
    await eventually(lambda: rig.bridge.mqtt.connected, "the bridge reconnected")
    await rig.assert_alive_and_recording("the bridge's reconnect")


# --- Floods ------------------------------------------------------------------------------------


async def test_a_flood_from_one_gateway_and_one_app_does_not_starve_genuine_events(
    hostile: Hostile,
) -> None:
    """door-2 floods junk events and statuses, the rogue app receipts of 1000 offer ids each,
    as fast as the broker takes them; the gateway's genuine events are still recorded."""
    rig = hostile.rig
    junk = _json({"v": 1, "type": "visit", "pad": "x" * 60_000})
    status = _json({"v": 1, "type": "status", "state": "online", "ts": time.time()})
    receipt_topic = wire.shopper_receipt_topic(CHAIN, ROGUE_TOKEN)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            ids = tuple(f"{sent:032d}{i:032d}" for i in range(wire.MAX_ACK_IDS))
            await hostile.app.publish(receipt_topic, wire.encode(wire.OfferReceipt(ids)), qos=0)
            for _ in range(5):
                await hostile.door_2.publish(wire.event_topic(DOOR_2, "visit"), junk, qos=0)
                await hostile.door_2.publish(wire.status_topic(DOOR_2), status, qos=0)
            sent += 1
            if sent % 20 == 0:
                await asyncio.sleep(0.001)

    rejected = rig.bridge.rejected
    flooding = asyncio.create_task(flood(), name="flood")
    try:
        await eventually(lambda: rig.bridge.rejected > rejected + 2000, "the flood under way")
        for i in range(3):
            await asyncio.sleep(0.5)
            await rig.assert_alive_and_recording(f"a flood, genuine event {i}", timeout_s=20)
    finally:
        await cancel_and_wait([flooding])
    await rig.assert_alive_and_recording("the flood")
    assert sent > 100 and rig.bridge._inbox.bytes_waiting <= rig.bridge._inbox.limits.bytes


async def test_a_gateway_cycling_through_topic_names_neither_floods_the_log_nor_hides_others(
    hostile: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    """The ACL lets a gateway publish on `event/<any name>`: before, each name was a new WARNING
    line kept in memory, and 256 of them silenced every other problem for an hour."""
    rig = hostile.rig
    for i in range(400):
        await hostile.door_2.publish(f"{DOOR_2.prefix}/event/k{i:04d}", b"{}", qos=0)
    await hostile.door_2.publish(f"{DOOR_2.prefix}/event/{'z' * 4000}", b"{}")
    await rig.assert_alive_and_recording("400 event topic names")
    door_3 = wire.GatewayAddress(CHAIN, STORE, "door-3")
    newcomer = Rogue(rig.broker, gateway_identity(door_3), [])
    try:
        await newcomer.mqtt.wait_connected(10)
        rejected = rig.bridge.rejected
        await newcomer.publish(wire.status_topic(door_3), b"garbage")
        await eventually(lambda: rig.bridge.rejected > rejected, "door-3's status dropped")
    finally:
        await newcomer.mqtt.disconnect()
        await cancel_and_wait([newcomer.task])
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "cloud_bridge.app"
    ]
    assert sum("/event/k" in w for w in warnings) <= 1, warnings
    assert any(wire.status_topic(door_3) in w for w in warnings), warnings  # not silenced
    assert all(len(w) < 2000 for w in warnings)


# --- Identities and certificates ---------------------------------------------------------------


async def test_another_gateways_certificate_cannot_publish_or_read_as_the_victim(
    hostile: Hostile,
) -> None:
    rig = hostile.rig
    victim = rig.gateway.address
    (visit,) = await rig.genuine_visits(1, time.time(), "impostor")
    for topic, payload in (
        (wire.event_topic(victim, "visit"), wire.encode(visit)),
        (wire.status_topic(victim), _json({"v": 1, "type": "status", "state": "offline"})),
        (wire.ack_topic(victim), b"{}"),
        (wire.roster_bundle_topic(victim), b"{}"),
        (wire.campaigns_topic(victim), b"{}"),
    ):
        assert not await _published(hostile.door_2, topic, payload, False), topic
    spy = Rogue(
        rig.broker,
        gateway_identity(DOOR_2),
        [wire.ack_topic(victim), wire.roster_bundle_topic(victim), wire.campaigns_topic(victim)],
    )
    # Same identity as door-2: this connection takes door-2's session over (its own, no one
    # else's); door-2 comes back afterwards.
    try:
        await spy.mqtt.wait_connected(10)
        await rig.assert_alive_and_recording("another gateway subscribing to the victim's topics")
        # Not the victim's retained roster, campaigns, nor its acks (door-2's own session may
        # still get door-2's roster: each visit recorded moves it on).
        assert [m for m in spy.received if not m.topic.startswith(f"{DOOR_2.prefix}/")] == []
    finally:
        await spy.mqtt.disconnect()
        await cancel_and_wait([spy.task])
    assert "impostor-0000" not in await rig.column("SELECT event_id FROM visits")
    await eventually(lambda: hostile.door_2.mqtt.connected, "door-2's client back")


async def test_a_client_id_takeover_by_another_identity_takes_nothing_over(
    hostile: Hostile,
) -> None:
    rig = hostile.rig
    gateway_cn = gateway_identity(rig.gateway.address).common_name
    bridge_cn = bridge_identity(CHAIN, "bridge-1").common_name
    thieves = []
    for client_id in (
        gateway_cn,
        rig.gateway.mqtt._settings.client_id,
        bridge_cn,
        rig.bridge.mqtt._settings.client_id,
    ):
        settings = rig.broker.client_settings(shopper_identity(CHAIN, "thief"), client_id)
        thief = PahoMqtt(settings)
        thieves.append(asyncio.create_task(thief.run(), name=f"thief {client_id}"))
        await thief.wait_connected(10)
        await rig.assert_alive_and_recording(f"a client connecting with client id {client_id}")
        assert rig.gateway.mqtt.connected and rig.bridge.mqtt.connected
        await thief.disconnect()
    await cancel_and_wait(thieves)


@pytest.mark.parametrize("whose", ["gateway", "bridge"])
async def test_a_stolen_certificate_kicks_its_owner_off_once_and_the_owner_comes_back(
    hostile: Hostile, whose: str
) -> None:
    """The same certificate twice is the same client id: the broker drops the older session. The
    owner reconnects by itself, the bridge republishes what a reconnect needs, nothing is lost."""
    rig = hostile.rig
    owner = rig.gateway.mqtt if whose == "gateway" else rig.bridge.mqtt
    identity = (
        gateway_identity(rig.gateway.address)
        if whose == "gateway"
        else bridge_identity(CHAIN, "bridge-1")
    )
    (visit,) = await rig.genuine_visits(1, time.time(), f"during-takeover-{whose}")
    thief = PahoMqtt(rig.broker.client_settings(identity))
    task = asyncio.create_task(thief.run(), name=f"thief {identity}")
    try:
        await thief.wait_connected(10)
        await eventually(lambda: not owner.connected or not thief.connected, "a session dropped")
        await rig.gateway.store.append_events([visit], time.time())  # while it fights for it
    finally:
        await thief.disconnect()
        await cancel_and_wait([task])
    await eventually(lambda: owner.connected, f"the {whose} reconnected")
    await rig.assert_alive_and_recording(f"the {whose}'s certificate used elsewhere", timeout_s=30)
    assert visit.event_id in await rig.column("SELECT event_id FROM visits")


def _certificate(pki: LocalPki, cn: str, where: Path, now: datetime.datetime) -> TlsFiles:
    """A client certificate from the test CA for `cn`, as if issued at `now`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.ca.issue(key.public_key(), cn, now=now)
    where.mkdir(parents=True, exist_ok=True)
    (where / "c.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "c.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(pki.ca_file, where / "c.crt", where / "c.key")


@pytest.mark.parametrize("which", ["foreign-ca", "expired", "not-yet-valid"])
async def test_a_certificate_the_broker_must_not_accept_is_refused(
    hostile: Hostile, test_pki: LocalPki, tmp_path: Path, which: str
) -> None:
    cn = bridge_identity(CHAIN, "bridge-2").common_name  # the most powerful identity to fake
    now = datetime.datetime.now(datetime.UTC)
    if which == "foreign-ca":
        foreign = LocalPki(tmp_path / "foreign", CHAIN).client_files(cn)
        files = TlsFiles(test_pki.ca_file, foreign.cert_file, foreign.key_file)
    elif which == "expired":
        files = _certificate(test_pki, cn, tmp_path / which, now - datetime.timedelta(days=4000))
    else:
        files = _certificate(test_pki, cn, tmp_path / which, now + datetime.timedelta(days=30))
    cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    assert (cert.not_valid_after_utc < now) == (which == "expired")
    assert (cert.not_valid_before_utc > now) == (which == "not-yet-valid")
    broker = hostile.rig.broker
    settings = MqttSettings(host=broker.host, port=broker.port, tls=files, connect_timeout_s=5.0)
    with pytest.raises((MqttAuthError, MqttError)):
        async with asyncio.timeout(GUARD_S):
            await PahoMqtt(settings).run()
    await hostile.rig.assert_alive_and_recording(f"a {which} certificate")
