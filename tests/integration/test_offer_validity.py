"""Offers are never abandoned silently (issue 9): resent until their validity ends, then expired."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.config import BridgeConfig, BridgeSection
from cloud_bridge.seed import seed_records
from edge.adapters.mosquitto import MosquittoProcess
from edge.core import bundle, wire
from edge.core.broker_identity import bridge_identity, shopper_identity
from edge.demo.runner import shopper_tokens
from edge.demo.shopper_apps import ShopperApps
from edge.services.tasks import cancel_and_wait
from tests.factories import TEST_DATA_KEY, as_sent, make_offer_trigger
from tests.integration.rig import eventually

CHAIN = "test-chain"
STORE = "store-001"
GW = wire.GatewayAddress(CHAIN, STORE, "door-1")


async def delivery_of(records: SqliteLoyaltyRecords, offer_id: str) -> str:
    async with records.connection.execute(
        "SELECT delivery FROM offers WHERE event_id = ?", (offer_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row else "missing"


async def test_an_app_offline_within_the_validity_gets_the_offer_and_one_past_it_never_does(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    clock = [time.time()]
    issued = clock[0]
    records = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.sqlite", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    await seed_records(records, members=10, seed=3, stores=(STORE,), joined_at=issued - 86400)
    await records.connection.execute(
        "INSERT INTO campaigns (id, title, body, tiers, cooldown_s, priority, validity_s) "
        "VALUES ('flash-sale', 'Flash sale', 'Twenty minutes only.', 'bronze,silver,gold', 60, 1, "
        "1200)"
    )
    await records.connection.execute(
        "UPDATE campaigns SET validity_s = 7200 WHERE id = 'welcome-bakery'"
    )
    await records.connection.commit()
    lasting = make_offer_trigger(
        member="m-00000", device="d-00000", campaign="welcome-bakery", ts=issued
    )
    flash = make_offer_trigger(member="m-00001", device="d-00001", campaign="flash-sale", ts=issued)
    outcome = await records.record(await as_sent(records, GW, lasting, flash), issued)
    assert len(outcome.deliveries) == 2
    bridge = Bridge(
        BridgeConfig(
            BridgeSection(chain=CHAIN, database=str(records.path), offer_resend_s=60.0),
            mosquitto.mqtt_section(bridge_identity(CHAIN, "bridge-1")),
        ),
        records,
        records,
        bundle.generate_signing_key(random.Random("validity").randbytes),
        wall_clock=lambda: clock[0],
    )
    apps = ShopperApps(
        lambda token: mosquitto.client_settings(shopper_identity(CHAIN, token)),
        CHAIN,
        await shopper_tokens(records),
    )
    tasks = [asyncio.create_task(bridge.run(), name="test-bridge")]
    try:
        # The apps are offline: the bridge hands both offers to the broker, nobody gets them.
        for offer in (lasting, flash):
            await eventually(
                lambda o=offer: _is(records, o.event_id, "sent"), f"offer {offer.event_id} sent"
            )
        # Half an hour later: the flash sale's 20 minutes are over, the bakery's 2 hours are not.
        clock[0] = issued + 1800
        await eventually(lambda: _is(records, flash.event_id, "expired"), "the flash offer expired")
        tasks.append(asyncio.create_task(apps.run(), name="test-apps"))
        await apps.wait_connected(10)
        clock[0] = issued + 1900  # the next resend is due (offer_resend_s after the last)
        await eventually(lambda: lasting.event_id in apps.received, "the bakery offer on reconnect")
        await eventually(lambda: _is(records, lasting.event_id, "received"), "the app's receipt")
        await asyncio.sleep(1.5)  # another delivery round: nothing more arrives
        assert set(apps.received) == {lasting.event_id}
        assert bridge.expired == 1
    finally:
        await cancel_and_wait(tasks)
        await records.close()


async def _is(records: SqliteLoyaltyRecords, offer_id: str, state: str) -> bool:
    return await delivery_of(records, offer_id) == state
