"""A gateway database and the bridge's loyalty database are marked (PRAGMA application_id), so one
is never opened, migrated or moved aside as the other: the path in a config was wrong."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.errors import RecordsError
from edge.adapters.sqlite_db import GATEWAY_APPLICATION_ID, LOYALTY_APPLICATION_ID
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.errors import ForeignDatabase
from tests.factories import TEST_DATA_KEY


def application_id(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA application_id").fetchone()[0])
    finally:
        conn.close()


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


async def test_each_database_is_marked_with_its_kind(tmp_path: Path) -> None:
    store = await SqliteGatewayStore.open(tmp_path / "gw" / "gateway.sqlite")
    await store.close()
    records = await SqliteLoyaltyRecords.open(
        tmp_path / "bridge" / "loyalty.sqlite", "acme", create=True, data_key=TEST_DATA_KEY
    )
    await records.close()
    assert application_id(tmp_path / "gw" / "gateway.sqlite") == GATEWAY_APPLICATION_ID
    assert application_id(tmp_path / "bridge" / "loyalty.sqlite") == LOYALTY_APPLICATION_ID


async def test_the_gateway_refuses_the_bridges_database_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bridge" / "loyalty.sqlite"
    records = await SqliteLoyaltyRecords.open(path, "acme", create=True, data_key=TEST_DATA_KEY)
    await records.close()
    before = files_of(path)

    with pytest.raises(ForeignDatabase) as refused:
        await SqliteGatewayStore.open(path)

    assert str(refused.value) == (
        f"{path}: is the bridge's loyalty database, not a gateway database; check the path"
    )
    assert files_of(path) == before  # not moved aside, not migrated, not even put in WAL mode


async def test_the_bridge_refuses_a_gateway_database_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "gw" / "gateway.sqlite"
    store = await SqliteGatewayStore.open(path)
    await store.close()
    before = files_of(path)

    with pytest.raises(RecordsError) as refused:
        await SqliteLoyaltyRecords.open(path, "acme", data_key=TEST_DATA_KEY)

    assert "is a gateway database, not a loyalty database" in str(refused.value)
    assert files_of(path) == before


async def test_another_programs_marked_database_is_refused_by_both(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ForeignDatabase, match="another program's database"):
        await SqliteGatewayStore.open(path)
    with pytest.raises(RecordsError, match="another program's database"):
        await SqliteLoyaltyRecords.open(path, "acme", create=True, data_key=TEST_DATA_KEY)
    assert application_id(path) == 1234
