"""Visit ends in the loyalty records (SQLite, real file): recorded once per visit, linked to a visit
that comes later, refused when they are another member's; visits keep their platform."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import SCHEMA_VERSION, SqliteLoyaltyRecords
from cloud_bridge.seed import seed_records
from edge.core import wire
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_visit

CHAIN = "acme"
STORE = "store-001"
GW1 = wire.GatewayAddress(CHAIN, STORE, "gw-1")
NOW = T0 + 1000.0


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.db", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    try:
        await seed_records(opened, members=5, seed=1, stores=(STORE,), joined_at=T0 - 86400)
        await opened.add_store("store-002", "Station Road")
        yield opened
    finally:
        await opened.close()


def visit_of(member: str = "m-00000", platform: wire.Platform | None = "ios") -> wire.Visit:
    return make_visit(member=member, device=f"d-{member[2:]}", ts=T0, platform=platform)


def end_of(visit: wire.Visit, event_id: str | None = None, **overrides: object) -> wire.VisitEnd:
    fields: dict[str, object] = {
        "event_id": event_id or f"end-{visit.event_id}",
        "visit_id": visit.event_id,
        "ts": T0 + 600,
        "detected_at": T0 + 900,
        "member": visit.member,
        "device": visit.device,
        "entered_at": T0 - 20,
        "duration_s": 620.0,
        "reason": "timeout",
        "platform": visit.platform,
    }
    fields.update(overrides)
    return wire.VisitEnd(**fields)  # type: ignore[arg-type]


async def rows(records: SqliteLoyaltyRecords, sql: str) -> list[tuple[object, ...]]:
    async with records.connection.execute(sql) as cursor:
        return [tuple(r) async for r in cursor]


async def test_a_visit_and_its_end_give_the_time_in_store_with_the_platform(
    records: SqliteLoyaltyRecords,
) -> None:
    visit = visit_of()
    outcome = await records.record(await as_sent(records, GW1, visit, end_of(visit)), NOW)

    assert outcome.new_visits and [e.visit_id for e in outcome.new_visit_ends] == [visit.event_id]
    assert outcome.acks == {GW1: [visit.event_id, f"end-{visit.event_id}"]}
    assert await rows(records, "SELECT event_id, platform FROM visits") == [(visit.event_id, "ios")]
    assert await rows(
        records,
        "SELECT visit_id, member_id, platform, entered_at, entry_ts, ended_at, duration_s, reason "
        "FROM visit_times",
    ) == [(visit.event_id, "m-00000", "ios", T0 - 20, T0, T0 + 600, 620.0, "timeout")]


async def test_an_end_that_comes_before_its_visit_is_kept_and_counts_once_it_is_there(
    records: SqliteLoyaltyRecords,
) -> None:
    visit = visit_of(platform=None)  # from a gateway older than platforms
    first = await records.record(await as_sent(records, GW1, end_of(visit)), NOW)
    assert len(first.new_visit_ends) == 1
    assert await records.count("visit_ends") == 1
    assert await rows(records, "SELECT visit_id FROM visit_times") == []  # not yet

    await records.record(await as_sent(records, GW1, visit), NOW + 1)
    assert await rows(records, "SELECT visit_id, platform FROM visit_times") == [
        (visit.event_id, None)
    ]


async def test_a_resent_end_and_a_second_end_of_the_same_visit_record_nothing_more(
    records: SqliteLoyaltyRecords,
) -> None:
    visit = visit_of()
    await records.record(await as_sent(records, GW1, visit, end_of(visit)), NOW)
    resent = await records.record(await as_sent(records, GW1, end_of(visit)), NOW + 1)
    other = await records.record(await as_sent(records, GW1, end_of(visit, "end-2")), NOW + 2)

    assert resent.duplicates == 1 and other.duplicates == 1
    assert resent.new_visit_ends == [] and other.new_visit_ends == []
    assert resent.acks == {GW1: [f"end-{visit.event_id}"]} and other.acks == {GW1: ["end-2"]}
    assert await rows(records, "SELECT event_id FROM visit_ends") == [(f"end-{visit.event_id}",)]


async def test_an_end_of_another_members_visit_is_set_aside_as_forged(
    records: SqliteLoyaltyRecords,
) -> None:
    visit = visit_of("m-00001")
    await records.record(await as_sent(records, GW1, visit), NOW)
    # A gateway claiming m-00002 left m-00001's visit; and one at another store ending it.
    theirs = dataclasses.replace(end_of(visit, "end-other"), member="m-00002", device="d-00002")
    elsewhere = wire.GatewayAddress(CHAIN, "store-002", "gw-1")

    outcome = await records.record(await as_sent(records, GW1, theirs), NOW + 1)
    away = await records.record(await as_sent(records, elsewhere, end_of(visit, "end-away")), NOW)

    assert outcome.forged == 1 and away.forged == 1
    assert outcome.acks == {GW1: ["end-other"]}  # acknowledged: a resend would be refused again
    assert await records.count("visit_ends") == 0
    held = {q.event_id: q.reason for q in await records.quarantined()}
    assert held == {"end-other": "visit_end_other_visitor", "end-away": "visit_end_other_visitor"}


async def test_an_early_end_found_to_be_another_members_is_forgotten_when_the_visit_comes(
    records: SqliteLoyaltyRecords,
) -> None:
    visit = visit_of("m-00001")
    theirs = dataclasses.replace(end_of(visit), member="m-00002", device="d-00002")
    await records.record(await as_sent(records, GW1, theirs), NOW)
    assert await records.count("visit_ends") == 1

    outcome = await records.record(await as_sent(records, GW1, visit), NOW + 1)

    assert outcome.forged == 1 and len(outcome.new_visits) == 1
    assert await records.count("visit_ends") == 0
    # The visit's own end still counts when it comes.
    await records.record(await as_sent(records, GW1, end_of(visit, "end-real")), NOW + 2)
    assert await rows(records, "SELECT end_event_id FROM visit_times") == [("end-real",)]


async def test_an_end_marked_forged_by_admission_is_set_aside_with_its_reason(
    records: SqliteLoyaltyRecords,
) -> None:
    visit = visit_of()
    [sent] = await as_sent(records, GW1, end_of(visit, duration_s=5.0))
    outcome = await records.record([dataclasses.replace(sent, forged="wrong_duration")], NOW)
    assert outcome.forged == 1 and outcome.new_visit_ends == []
    assert [(q.event_id, q.reason) for q in await records.quarantined()] == [
        (f"end-{visit.event_id}", "wrong_duration")
    ]


async def test_the_end_of_a_member_who_withdrew_consent_is_not_recorded(
    records: SqliteLoyaltyRecords,
) -> None:
    visit = visit_of()
    await records.record(await as_sent(records, GW1, visit), NOW)
    await records.connection.execute("UPDATE members SET consent = 0 WHERE id = 'm-00000'")
    await records.connection.commit()
    outcome = await records.record(await as_sent(records, GW1, end_of(visit)), NOW + 1)
    assert outcome.suppressed == 1 and await records.count("visit_ends") == 0


async def test_a_version_7_database_gains_visit_ends_and_keeps_its_visits(tmp_path: Path) -> None:
    from cloud_bridge.adapters.sqlite_records import _MIGRATIONS

    path = tmp_path / "v7.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:7]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 7")
    conn.execute(
        "INSERT INTO events (event_id, kind, store_id, gateway, received_at) "
        "VALUES ('v-old', 'visit', ?, 'gw-1', ?)",
        (STORE, T0),
    )
    conn.execute(
        "INSERT INTO visits (event_id, member_id, device_id, store_id, gateway, ts, detected_at, "
        "recorded_at, rssi_dbm) VALUES ('v-old', 'm', 'd', ?, 'gw-1', ?, ?, ?, -60)",
        (STORE, T0, T0, T0),
    )
    conn.commit()
    conn.close()

    records = await SqliteLoyaltyRecords.open(path, CHAIN, data_key=TEST_DATA_KEY)
    try:
        assert await rows(records, "SELECT event_id, platform FROM visits") == [("v-old", None)]
        assert await records.count("visit_ends") == 0
        async with records.connection.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
    finally:
        await records.close()
    assert row is not None and row[0] == SCHEMA_VERSION >= 9
