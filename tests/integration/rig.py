"""A store entrance on real parts: a spawned Mosquitto, the bridge on SQLite, one gateway, the apps.

Keys as in a deployment: the bridge's signing key, the gateway provisioned (keys sealed with a key
file) and registered with the bridge, its config trusting the bridge's public key.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.config import ApiSection, BridgeConfig, BridgeSection
from cloud_bridge.core.pseudonyms import Kind
from cloud_bridge.seed import seed_records
from edge.adapters.keystore import GatewayKeys, create_signing_key_file, provision_gateway_keys
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import PahoMqtt
from edge.app import Gateway
from edge.config import (
    GatewayConfig,
    GatewaySection,
    IdentitySection,
    RadioSection,
    UplinkSection,
)
from edge.core import bundle, wire
from edge.core.broker_identity import (
    bridge_identity,
    gateway_identity,
    monitor_identity,
    shopper_identity,
)
from edge.demo.runner import load_enrolled_devices, shopper_tokens, unmasker
from edge.demo.shopper_apps import ShopperApps
from edge.services.tasks import cancel_and_wait
from edge.sim.entrance import SimDevice
from tests.factories import TEST_DATA_KEY
from tests.fakes.radio import FakeAdvertSource

P = TypeVar("P", wire.Status, wire.BridgeStatus, wire.CloneAlert)

CHAIN = "test-chain"
STORE = "store-001"
GATEWAY = "door-1"
SETTLE_TIMEOUT_S = 60.0


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 30.0
) -> None:
    """Poll `check` until it holds; fail naming `what` after timeout_s (a guard, not a timing test)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def monitor(
    broker: MosquittoProcess, topic_filter: str, kind: type[P], name: str = "it"
) -> AsyncIterator[list[P]]:
    """Every `kind` payload published on `topic_filter` (retained ones first), as IT sees them
    with the monitor certificate `name` (one connection per name at a time)."""
    seen: list[P] = []
    client_id = f"test-monitor-{name}"
    client = PahoMqtt(
        broker.client_settings(monitor_identity(CHAIN, name), client_id),
        subscriptions=[(topic_filter, 1)],
        on_message=lambda m: seen.append(wire.decode_as(m.payload, kind, m.topic)),
    )
    task = asyncio.create_task(client.run(), name=client_id)
    try:
        await client.wait_connected(10)
        yield seen
    finally:
        await client.disconnect()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def status_monitor(
    broker: MosquittoProcess, address: wire.GatewayAddress
) -> contextlib.AbstractAsyncContextManager[list[wire.Status]]:
    """Every status the gateway publishes (the retained one first), as fleet monitoring sees it."""
    return monitor(broker, wire.status_topic(address), wire.Status, "it-3")


@dataclass
class Rig:
    broker: MosquittoProcess
    records: SqliteLoyaltyRecords
    bridge: Bridge
    gateway: Gateway
    source: FakeAdvertSource
    apps: ShopperApps
    devices: list[SimDevice]
    events: list[wire.Event]
    signing_key: Ed25519PrivateKey
    gateway_keys: GatewayKeys
    workdir: Path
    # The gateway (door-1) of each other store the rig was asked for, and its radio.
    others: dict[str, tuple[Gateway, FakeAdvertSource]] = field(default_factory=dict)
    # The running parts' tasks, torn down on exit (start_bridge adds the bridge's).
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _genuine: int = 0  # genuine events sent by assert_alive_and_recording

    def start_bridge(self) -> None:
        """Start the bridge of a rig built with `start_bridge=False`."""
        self.tasks.append(asyncio.create_task(self.bridge.run(), name="rig-bridge"))

    @property
    def triggers(self) -> list[wire.OfferTrigger]:
        return [e for e in self.events if isinstance(e, wire.OfferTrigger)]

    @property
    def visits(self) -> list[wire.Visit]:
        return [e for e in self.events if isinstance(e, wire.Visit)]

    async def members_of(self, events: list[wire.Visit] | list[wire.OfferTrigger]) -> list[str]:
        """The records' member ids behind the store's pseudonyms in `events` (only the bridge can)."""
        member_of = await unmasker(self.records, STORE)
        found = [member_of(e.member) for e in events]
        assert None not in found, f"not all of {[e.member for e in events]} are {STORE}'s"
        return [m for m in found if m is not None]

    async def settled(self, expected_offers: int) -> None:
        """Wait until every offer reached the apps, was confirmed, and the outbox is empty."""

        async def done() -> bool:
            # Delivered, or held back by the bridge (the chain-wide campaign cooldown, consent).
            suppressed = await self.column(
                "SELECT event_id FROM offers WHERE delivery = 'suppressed'"
            )
            finished = self.apps.received.keys() | set(suppressed)
            received = {t.event_id for t in self.triggers} <= finished
            return (
                len(self.triggers) >= expected_offers
                and received
                and await self.gateway.store.count() == 0
                and await self.unconfirmed_offers() == 0
            )

        await eventually(
            done, f"{expected_offers} offers delivered and confirmed", SETTLE_TIMEOUT_S
        )

    async def unconfirmed_offers(self) -> int:
        async with self.records.connection.execute(
            "SELECT count(*) FROM offers WHERE delivery IN ('pending', 'sent')"
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def column(self, sql: str) -> list[object]:
        async with self.records.connection.execute(sql) as cursor:
            return [r[0] async for r in cursor]

    async def genuine_visits(self, count: int, now_s: float, prefix: str) -> list[wire.Visit]:
        """`count` visits of consenting members under the store's pseudonyms, as its gateway
        sends them; event ids `{prefix}-0000`..."""
        serials = await self.records.serials()
        pseudonyms = self.records.pseudonyms(STORE)
        async with self.records.connection.execute(
            "SELECT d.id, d.member_id, m.tier FROM devices d JOIN members m ON m.id = d.member_id "
            "WHERE m.consent AND d.active ORDER BY d.id"
        ) as cursor:
            rows = [tuple(r) async for r in cursor]
        visits = []
        for i in range(count):
            device, member, tier = rows[i % len(rows)]
            visits.append(
                wire.Visit(
                    event_id=f"{prefix}-{i:04d}",
                    ts=now_s + i,
                    detected_at=now_s + i,
                    member=pseudonyms.one(Kind.MEMBER, serials.members[member]),
                    device=pseudonyms.one(Kind.DEVICE, serials.devices[device]),
                    tier=tier,
                    rssi_dbm=-60.0,
                )
            )
        return visits

    async def assert_alive_and_recording(self, after: str, timeout_s: float = 10.0) -> None:
        """Every part still running, and a genuine event of the gateway recorded and acknowledged
        within `timeout_s`: what must hold after anything hostile (`after` names it)."""
        for task in self.tasks:
            assert not task.done(), f"{task.get_name()} ended after {after}: {task!r}"
        self._genuine += 1
        (visit,) = await self.genuine_visits(1, time.time(), f"genuine-{self._genuine:05d}")
        await self.gateway.store.append_events([visit], time.time())
        self.gateway.uplink.wake()

        async def recorded_and_acked() -> bool:
            ids = await self.column(
                f"SELECT event_id FROM visits WHERE event_id = '{visit.event_id}'"
            )
            return bool(ids) and await self.gateway.store.count() == 0

        await eventually(
            recorded_and_acked, f"a genuine event recorded and acked after {after}", timeout_s
        )


@contextlib.asynccontextmanager
async def store_rig(
    workdir: Path,
    broker: MosquittoProcess,
    members: int = 40,
    resend_s: float = 2.0,
    api_tokens: Path | None = None,
    other_stores: tuple[str, ...] = (),
    bridge_options: dict[str, Any] | None = None,
    start_bridge: bool = True,
    radio_source: str = "simulated",
) -> AsyncIterator[Rig]:
    """Build and run everything; tear it all down on exit.

    `other_stores` get a gateway each too (seeded stores have locations: cloud_bridge/seed.py);
    `bridge_options` are more [bridge] settings. Without `start_bridge` the bridge waits for
    `Rig.start_bridge()`, and the gateway holds no roster or campaigns until then. The gateway's
    radio is always the test's FakeAdvertSource; `radio_source` is what its config says (with
    "bleak" it serves the iPhone check-in through BlueZ: run it inside `running_fake_bluez`).
    """
    records = await SqliteLoyaltyRecords.open(
        workdir / "loyalty.sqlite", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    await seed_records(
        records, members=members, seed=3, stores=(STORE, *other_stores), joined_at=time.time()
    )
    devices = await load_enrolled_devices(records)
    signing_key_file = workdir / "bridge-signing.key"
    signing_key, _ = create_signing_key_file(signing_key_file)
    data_dir = workdir / "gw"
    gateway_keys, _ = provision_gateway_keys(data_dir, "file", "rpi-otp-private-key")
    await records.add_gateway(STORE, GATEWAY, gateway_keys.public_key, time.time())
    for store in other_stores:
        other_keys, _ = provision_gateway_keys(
            workdir / f"gw-{store}", "file", "rpi-otp-private-key"
        )
        await records.add_gateway(store, GATEWAY, other_keys.public_key, time.time())
    bridge = Bridge(
        BridgeConfig(
            BridgeSection(
                chain=CHAIN,
                database=str(records.path),
                offer_resend_s=resend_s,
                sync_interval_s=0.2,
                status_grace_s=0.2,
                signing_key_file=str(signing_key_file),
                # The tests walk shoppers in at simulated times hours ahead of the clock.
                **{"event_max_future_s": 7 * 86400.0, **(bridge_options or {})},
            ),
            broker.mqtt_section(bridge_identity(CHAIN, "bridge-1")),
            ApiSection(enabled=True, port=0, tokens_file=str(api_tokens))
            if api_tokens
            else ApiSection(),
        ),
        records,
        records,
        signing_key,
        data_key=TEST_DATA_KEY,
    )
    trusted = (bundle.key_to_text(bundle.public_key_bytes(signing_key)),)

    def gateway_config(store: str, gateway_dir: Path) -> GatewayConfig:
        return GatewayConfig(
            gateway=GatewaySection(chain=CHAIN, store=store, id=GATEWAY, data_dir=str(gateway_dir)),
            mqtt=broker.mqtt_section(gateway_identity(wire.GatewayAddress(CHAIN, store, GATEWAY))),
            uplink=UplinkSection(ack_timeout_s=resend_s, batch=100, status_interval_s=1.0),
            identity=IdentitySection(trusted_signers=trusted, key_source="file"),
            radio=RadioSection(source=radio_source),
        )

    source = FakeAdvertSource()
    others: dict[str, tuple[Gateway, FakeAdvertSource]] = {}
    try:
        gateway = await Gateway.open(gateway_config(STORE, data_dir), source)
        for store in other_stores:
            other_source = FakeAdvertSource()
            other = await Gateway.open(gateway_config(store, workdir / f"gw-{store}"), other_source)
            others[store] = (other, other_source)
    except BaseException:
        for other, _ in others.values():
            await other.close()
        await records.close()
        raise
    events: list[wire.Event] = []
    gateway.listeners.append(events.extend)
    apps = ShopperApps(
        lambda token: broker.client_settings(shopper_identity(CHAIN, token)),
        CHAIN,
        await shopper_tokens(records),
    )
    tasks = [
        *([asyncio.create_task(bridge.run(), name="rig-bridge")] if start_bridge else []),
        asyncio.create_task(apps.run(), name="rig-apps"),
        asyncio.create_task(gateway.run(), name="rig-gateway"),
        *(asyncio.create_task(g.run(), name=f"rig-gateway-{s}") for s, (g, _) in others.items()),
    ]
    try:
        async with asyncio.timeout(30):
            await apps.wait_connected()
            if start_bridge:
                await gateway.sync.synced.wait()
                for other, _ in others.values():
                    await other.sync.synced.wait()
            else:
                await gateway.mqtt.wait_connected()
        if api_tokens:
            await eventually(lambda: bridge.api_server is not None, "the enrollment API")
        yield Rig(
            broker,
            records,
            bridge,
            gateway,
            source,
            apps,
            devices,
            events,
            signing_key,
            gateway_keys,
            workdir,
            others,
            tasks,
        )
    finally:
        try:
            await cancel_and_wait(tasks)
        finally:
            await gateway.close()
            for other, _ in others.values():
                await other.close()
            await bridge.close()
