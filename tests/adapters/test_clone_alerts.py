"""Cloned tags in the loyalty records (real SQLite): alerts on recording, once per pair, late uploads."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import _MIGRATIONS, SCHEMA_VERSION, SqliteLoyaltyRecords
from cloud_bridge.core.clones import ClonePolicy, GeoPoint
from cloud_bridge.core.records import IncomingEvent
from cloud_bridge.seed import seed_records
from edge.core import wire
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_visit

CHAIN = "acme"
LONDON = GeoPoint(51.5138, -0.0984)
MANCHESTER = GeoPoint(53.4794, -2.2453)
AT_LONDON = wire.GatewayAddress(CHAIN, "store-001", "door-1")
AT_MANCHESTER = wire.GatewayAddress(CHAIN, "store-002", "door-1")
AT_NOWHERE = wire.GatewayAddress(CHAIN, "store-003", "door-1")  # no location
MEMBER, DEVICE = "m-00000", "d-00000"
NOW = T0 + 86400.0
DAY = 86400.0


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.db",
        CHAIN,
        ClonePolicy(clock_tolerance_s=10.0),
        create=True,
        data_key=TEST_DATA_KEY,
    )
    try:
        await seed_records(opened, members=5, seed=1, stores=(), joined_at=T0 - DAY)
        assert await opened.add_store("store-001", "City", LONDON)
        assert await opened.add_store("store-002", "Arndale", MANCHESTER)
        assert await opened.add_store("store-003", "Pop-up")
        yield opened
    finally:
        await opened.close()


async def visit_at(
    records: SqliteLoyaltyRecords, gateway: wire.GatewayAddress, ts: float, device: str = DEVICE
) -> IncomingEvent:
    """A visit as `gateway` sends it: under its store's pseudonyms."""
    member = f"m-{device[2:]}"
    visit = make_visit(ts=ts, detected_at=ts + 0.2, member=member, device=device)
    (sent,) = await as_sent(records, gateway, visit)
    return sent


async def test_one_tag_at_two_far_stores_minutes_apart_makes_one_alert(
    records: SqliteLoyaltyRecords,
) -> None:
    london, manchester = (
        await visit_at(records, AT_LONDON, T0),
        await visit_at(records, AT_MANCHESTER, T0 + 300),
    )

    first = await records.record([london], NOW)
    second = await records.record([manchester], NOW + 1)

    assert first.clone_alerts == []
    (alert,) = second.clone_alerts
    assert (alert.device, alert.member, alert.reason) == (DEVICE, MEMBER, "too_fast")
    assert (alert.first_event_id, alert.first_store, alert.first_ts) == (
        london.event.event_id,
        "store-001",
        T0,
    )
    assert (alert.second_event_id, alert.second_store) == (manchester.event.event_id, "store-002")
    assert alert.elapsed_s == 300
    assert alert.distance_km == pytest.approx(262, rel=0.01)
    assert alert.speed_kmh == pytest.approx(262 * 12, rel=0.01)
    assert (alert.status, alert.created_at) == ("open", NOW + 1)
    assert await records.clone_alerts() == [alert]


async def test_redelivered_visits_make_no_second_alert(records: SqliteLoyaltyRecords) -> None:
    batch = [
        await visit_at(records, AT_LONDON, T0),
        await visit_at(records, AT_MANCHESTER, T0 + 300),
    ]
    first = await records.record(batch, NOW)

    again = await records.record(batch, NOW + 60)
    reversed_again = await records.record(batch[::-1], NOW + 120)

    assert len(first.clone_alerts) == 1  # the second visit of the batch sees the first
    assert again.duplicates == reversed_again.duplicates == 2
    assert again.clone_alerts == reversed_again.clone_alerts == []
    assert await records.count("clone_alerts") == 1


async def test_a_late_upload_is_judged_against_the_visits_nearest_in_time(
    records: SqliteLoyaltyRecords,
) -> None:
    manchester = [await visit_at(records, AT_MANCHESTER, T0 + dt) for dt in (-DAY, 600, DAY)]
    await records.record(manchester, NOW)

    # The London gateway was offline and uploads its visit now: ten minutes before Manchester.
    late = await visit_at(records, AT_LONDON, T0)
    outcome = await records.record([late], NOW + DAY)

    (alert,) = outcome.clone_alerts
    assert alert.first_event_id == late.event.event_id
    assert alert.second_event_id == manchester[1].event.event_id


async def test_a_shopper_who_travels_is_not_flagged(records: SqliteLoyaltyRecords) -> None:
    outcome = await records.record(
        [
            await visit_at(records, AT_LONDON, T0),
            await visit_at(records, AT_LONDON, T0 + 60),  # back at the same store
            await visit_at(records, AT_MANCHESTER, T0 + 3 * 3600),  # a train ride later
            await visit_at(
                records, AT_LONDON, T0 + 60, device="d-00001"
            ),  # another member, same time
            await visit_at(records, AT_MANCHESTER, T0 + 61, device="d-00002"),
        ],
        NOW,
    )
    assert outcome.clone_alerts == []
    assert await records.count("clone_alerts") == 0


async def test_a_store_without_location_flags_only_near_simultaneous_visits(
    records: SqliteLoyaltyRecords,
) -> None:
    hours_later = await records.record(
        [await visit_at(records, AT_LONDON, T0), await visit_at(records, AT_NOWHERE, T0 + 3600)],
        NOW,
    )
    at_once = await records.record([await visit_at(records, AT_NOWHERE, T0 + 30)], NOW)

    assert hours_later.clone_alerts == []
    (alert,) = at_once.clone_alerts
    assert alert.reason == "simultaneous"
    assert (alert.first_store, alert.second_store) == ("store-001", "store-003")
    assert alert.distance_km is None and alert.speed_kmh is None


async def test_a_location_set_later_is_used_for_the_next_visits(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.record([await visit_at(records, AT_LONDON, T0)], NOW)
    assert await records.set_store_location("store-003", GeoPoint(55.8609, -4.2514))  # Glasgow
    assert await records.store_location("store-003") == GeoPoint(55.8609, -4.2514)

    outcome = await records.record([await visit_at(records, AT_NOWHERE, T0 + 1800)], NOW)

    (alert,) = outcome.clone_alerts
    assert alert.reason == "too_fast" and alert.distance_km == pytest.approx(555, rel=0.02)
    assert await records.set_store_location("store-999", LONDON) is False


async def test_an_alert_is_closed_once_and_leaves_the_open_list(
    records: SqliteLoyaltyRecords,
) -> None:
    outcome = await records.record(
        [await visit_at(records, AT_LONDON, T0), await visit_at(records, AT_MANCHESTER, T0 + 60)],
        NOW,
    )
    (alert,) = outcome.clone_alerts

    assert await records.close_clone_alert(alert.alert_id, "dismissed", NOW + 5) is True
    assert await records.close_clone_alert(alert.alert_id, "revoked", NOW + 6) is False
    assert await records.close_clone_alert(alert.alert_id + 100, "revoked", NOW + 6) is False

    assert await records.clone_alerts() == []
    (closed,) = await records.clone_alerts(include_closed=True)
    assert closed.status == "dismissed"
    assert await records.clone_alert(alert.alert_id) == closed
    assert await records.clone_alert(alert.alert_id + 100) is None


async def test_a_version_2_database_is_migrated_its_stores_without_a_location(
    tmp_path: Path,
) -> None:
    path = tmp_path / "loyalty.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:2]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO stores (id, name) VALUES ('store-001', 'High Street')")
    conn.commit()
    conn.close()

    records = await SqliteLoyaltyRecords.open(path, CHAIN)
    try:
        assert await records.stores() == ["store-001"]
        assert await records.store_location("store-001") is None
        assert await records.set_store_location("store-001", LONDON)
        assert await records.clone_alerts() == []
        async with records.connection.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
    finally:
        await records.close()
    assert row is not None and row[0] == SCHEMA_VERSION


async def test_the_database_refuses_a_latitude_out_of_range(
    records: SqliteLoyaltyRecords,
) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await records.connection.execute(
            "UPDATE stores SET latitude = 123.0, longitude = 0 WHERE id = 'store-001'"
        )
