"""Cloned tags on real parts: a spawned Mosquitto, the bridge, gateways at two stores 260 km apart.

One tag walks in at London and at Manchester a minute apart: the bridge publishes a clone alert on
the alerts topic for IT monitoring; with `clone_auto_revoke` it also revokes the device, which
then leaves the gateways' rosters at the next sync and is recognised no more.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from edge.adapters.mosquitto import MosquittoProcess
from edge.core import wire
from tests.fakes.radio import walk_in
from tests.integration.rig import STORE, eventually, monitor, store_rig

MANCHESTER = "store-002"  # seeded stores: store-001 in London, the second in Manchester


def alerts_monitor(
    broker: MosquittoProcess,
) -> contextlib.AbstractAsyncContextManager[list[wire.CloneAlert]]:
    """Every clone alert on the alerts topic, as IT monitoring sees them."""
    return monitor(broker, wire.ALERTS_FILTER, wire.CloneAlert, "it-2")


async def test_a_tag_at_two_distant_stores_within_a_minute_is_published_as_an_alert(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with (
        store_rig(tmp_path, mosquitto, other_stores=(MANCHESTER,)) as rig,
        alerts_monitor(mosquitto) as alerts,
    ):
        tag, bystander = rig.devices[0], rig.devices[1]
        _, manchester_radio = rig.others[MANCHESTER]
        now = time.time()
        rig.source.push(walk_in(tag, now))
        rig.source.push(walk_in(bystander, now, address="4A:00:00:00:00:07"))
        manchester_radio.push(walk_in(tag, now + 60, address="4A:00:00:00:00:08"))

        await eventually(lambda: len(alerts) >= 1, "a clone alert on the alerts topic")
        await rig.settled(expected_offers=2)

        (alert,) = alerts
        assert (alert.device, alert.member) == (tag.ref, None)  # no member id on MQTT
        assert (alert.first_store, alert.second_store) == (STORE, MANCHESTER)
        assert alert.reason == "too_fast" and alert.status == "open"
        assert alert.distance_km is not None and 250 < alert.distance_km < 275
        assert await rig.column("SELECT status FROM clone_alerts") == ["open"]
        # Only an alert: the device is still enrolled and recognised.
        assert await rig.column(f"SELECT active FROM devices WHERE id = '{tag.ref}'") == [1]


async def test_with_auto_revoke_the_cloned_device_leaves_the_roster_at_the_next_sync(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with (
        store_rig(
            tmp_path,
            mosquitto,
            other_stores=(MANCHESTER,),
            bridge_options={"clone_auto_revoke": True},
        ) as rig,
        alerts_monitor(mosquitto) as alerts,
    ):
        tag, kept = rig.devices[0], rig.devices[1]
        manchester, manchester_radio = rig.others[MANCHESTER]
        versions = (rig.gateway.sync.roster_version, manchester.sync.roster_version)
        now = time.time()
        rig.source.push(walk_in(tag, now))
        manchester_radio.push(walk_in(tag, now + 60, address="4A:00:00:00:00:08"))

        await eventually(lambda: len(alerts) >= 1, "a clone alert on the alerts topic")
        (alert,) = alerts
        assert alert.device == tag.ref and alert.status == "revoked"
        await eventually(
            lambda: (
                (rig.gateway.sync.roster_version, manchester.sync.roster_version) > versions
                and rig.gateway.sync.roster_version > versions[0]
                and manchester.sync.roster_version > versions[1]
            ),
            "the roster without the revoked device at both stores",
        )
        assert await rig.column("SELECT status FROM clone_alerts") == ["revoked"]
        assert await rig.column(f"SELECT active FROM devices WHERE id = '{tag.ref}'") == [0]

        # Back in London five minutes later, with another member: only the other one is seen.
        later = now + 300
        rig.source.push(walk_in(tag, later, address="4A:00:00:00:00:09"))
        rig.source.push(walk_in(kept, later, address="4A:00:00:00:00:0A"))
        await rig.settled(expected_offers=2)
        assert await rig.members_of(rig.visits) == [tag.member, kept.member]
        assert len(alerts) == 1
