"""A member's preferences, end to end on real parts: stated through the enrollment, delivered to the
store's gateway within one sync as a delta, honoured offline at the next entry (issue 10)."""

from __future__ import annotations

import time
from pathlib import Path

from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.core.preferences import parse_preferences_request
from edge.adapters.mosquitto import MosquittoProcess
from tests.fakes.radio import walk_in
from tests.integration.rig import store_rig
from tests.integration.test_roster_sync import next_roster


async def test_a_member_who_asks_for_no_offers_gets_none_from_the_next_sync_on(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        quiet, other = rig.devices[0], rig.devices[1]
        body = {"interests": [], "promotion_types": [], "no_offers": True}
        enrollment = await SqliteEnrollment.open(rig.records.path, rig.gateway.address.chain)
        try:
            await next_roster(
                rig,
                lambda: enrollment.set_preferences(parse_preferences_request(quiet.member, body)),
            )
        finally:
            await enrollment.close()
        sent = rig.bridge._rosters[rig.gateway.address]
        assert sent.base_version is not None, "a change of preferences should travel as a delta"

        now = time.time()
        rig.source.push(walk_in(quiet, now))
        rig.source.push(walk_in(other, now, address="4A:00:00:00:00:09"))
        await rig.settled(expected_offers=1)
        assert sorted(await rig.members_of(rig.visits)) == sorted([quiet.member, other.member])
        assert await rig.members_of(rig.triggers) == [other.member]
        assert rig.gateway.pipeline.counters.offers_withheld_frequency == 1
