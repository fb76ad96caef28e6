"""Members' segments and visits in the rosters (issue 11), on a real seeded SQLite database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.core.segments import DAY_S, LAPSED_BIT, NEW_BIT, REGULAR_BIT, SegmentPolicy
from cloud_bridge.seed import seed_records
from edge.core import wire
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_visit

CHAIN = "acme"
STORE = "store-001"
OTHER = "store-002"


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.db", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    try:
        await seed_records(opened, members=6, seed=1, stores=(STORE,), joined_at=T0 - 86400)
        await opened.add_store(OTHER, "Station Road")
        yield opened
    finally:
        await opened.close()


async def visit(records: SqliteLoyaltyRecords, n: int, ts: float, store: str = STORE) -> None:
    event = make_visit(member=f"m-{n:05d}", device=f"d-{n:05d}", ts=ts, detected_at=ts + 1)
    gateway = wire.GatewayAddress(CHAIN, store, "gw-1")
    outcome = await records.record(await as_sent(records, gateway, event), ts + 2)
    assert len(outcome.new_visits) == 1


async def device_of(records: SqliteLoyaltyRecords, n: int) -> tuple[int, wire.RosterDevice]:
    roster = await records.roster(STORE)
    (device,) = [d for d in roster.devices if d.member == f"m-{n:05d}"]
    return roster.version, device


async def test_a_member_never_heard_is_new_with_no_visits(records: SqliteLoyaltyRecords) -> None:
    roster = await records.roster(STORE)
    assert roster.devices
    assert {(d.segments, d.visits) for d in roster.devices} == {(NEW_BIT, 0)}


async def test_each_visit_anywhere_moves_the_members_audience_and_the_roster(
    records: SqliteLoyaltyRecords,
) -> None:
    versions = [(await device_of(records, 0))[0]]
    # Four visits in a fortnight at two stores: a new member becomes a regular too.
    for i, store in enumerate((STORE, OTHER, STORE, OTHER)):
        await visit(records, 0, T0 + i * 3 * DAY_S, store)
        version, device = await device_of(records, 0)
        versions.append(version)
        assert device.visits == i + 1
    assert device.segments == NEW_BIT | REGULAR_BIT
    assert versions == sorted(set(versions))  # moved on with every visit
    # Another member's audience is untouched.
    assert (await device_of(records, 1))[1].visits == 0


async def test_a_batch_of_visits_moves_each_of_its_members_once_with_every_visit_counted(
    records: SqliteLoyaltyRecords,
) -> None:
    """The audience is recomputed once per batch a gateway uploads (not per visit): two visits of
    one member and one of another in one batch all count."""
    gateway = wire.GatewayAddress(CHAIN, STORE, "gw-1")
    events = [
        make_visit(member="m-00000", device="d-00000", ts=T0, detected_at=T0 + 1),
        make_visit(member="m-00000", device="d-00000", ts=T0 + DAY_S, detected_at=T0 + DAY_S + 1),
        make_visit(member="m-00001", device="d-00001", ts=T0, detected_at=T0 + 1),
    ]
    sent = [e for event in events for e in await as_sent(records, gateway, event)]
    outcome = await records.record(sent, T0 + DAY_S + 2)
    assert len(outcome.new_visits) == 3
    assert (await device_of(records, 0))[1].visits == 2
    assert (await device_of(records, 1))[1].visits == 1
    assert (await device_of(records, 2))[1].visits == 0


async def test_time_alone_lapses_a_member_at_the_periodic_recompute(
    records: SqliteLoyaltyRecords,
) -> None:
    for i in range(4):
        await visit(records, 0, T0 + i * DAY_S)
    last = T0 + 3 * DAY_S
    assert await records.refresh_audience(last + 60) == 0  # nothing changed since the visits
    version, device = await device_of(records, 0)
    assert device.segments == NEW_BIT | REGULAR_BIT

    # 40 days on: no longer new nor regular; 61 days on: lapsed.
    assert await records.refresh_audience(last + 40 * DAY_S) == 1
    later, device = await device_of(records, 0)
    assert (device.segments, device.visits, later > version) == (0, 4, True)
    assert await records.refresh_audience(last + 40 * DAY_S + 60) == 0  # not due again yet
    assert await records.refresh_audience(last + 61 * DAY_S) == 1
    lapsed_version, device = await device_of(records, 0)
    assert (device.segments, lapsed_version > later) == (LAPSED_BIT, True)
    # A year on, the visits no longer count; a recompute that changes nothing moves nothing.
    assert await records.refresh_audience(last + 366 * DAY_S) == 1
    version, device = await device_of(records, 0)
    assert (device.segments, device.visits) == (LAPSED_BIT, 0)
    assert await records.refresh_audience(last + 367 * DAY_S) == 0
    assert (await device_of(records, 0))[0] == version


async def test_the_configured_policy_is_applied(records: SqliteLoyaltyRecords) -> None:
    records.segment_policy = SegmentPolicy(new_days=1, regular_visits=2, regular_days=7)
    await visit(records, 2, T0)
    await visit(records, 2, T0 + 2 * DAY_S)
    assert (await device_of(records, 2))[1].segments == REGULAR_BIT
