"""Identity keys are sealed at rest in the loyalty database, under a data key kept outside it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from cloud_bridge.adapters.data_key import (
    DATA_KEY_ENV,
    DataKey,
    create_data_key_file,
    load_data_key,
)
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import _MIGRATIONS, SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.cli import main
from cloud_bridge.config import BridgeConfig, BridgeSection
from cloud_bridge.core.enrollment import EnrollRequest
from cloud_bridge.errors import RecordsError
from cloud_bridge.seed import seed_records
from edge.adapters.keystore import create_signing_key_file
from tests.factories import T0, TEST_DATA_KEY

CHAIN = "acme"
STORE = "store-001"


def files_holding(directory: Path, secrets: list[bytes]) -> list[str]:
    """Which files under `directory` hold any of `secrets` (the database, -wal, -shm)."""
    found = []
    for path in directory.iterdir():
        data = path.read_bytes()
        if any(s in data for s in secrets):
            found.append(path.name)
    return found


async def test_no_identity_key_is_in_the_database_files_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "db" / "loyalty.sqlite"
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    enrollment = await SqliteEnrollment.open(path, CHAIN, data_key=TEST_DATA_KEY)
    try:
        await seed_records(records, members=30, seed=1, stores=(STORE,), joined_at=T0)
        enrolled = await enrollment.enroll(EnrollRequest("m-new", "tag", "gold", 10))
        roster = await records.roster(STORE)
        keys = [d.identity_key for d in roster.devices]

        assert len(keys) >= 30 and enrolled.identity_key in keys  # they open for the roster
        assert files_holding(path.parent, keys) == []
    finally:
        await enrollment.close()
        await records.close()
    assert files_holding(path.parent, keys) == []


async def test_keys_stored_in_clear_by_older_software_are_sealed_and_erased(
    tmp_path: Path,
) -> None:
    path = tmp_path / "loyalty.sqlite"
    keys = {f"d-{i:04d}": os.urandom(16) for i in range(200)}
    conn = sqlite3.connect(path)
    for number, migration in enumerate(_MIGRATIONS[:5]):
        conn.executescript(f"BEGIN; {migration}; PRAGMA user_version = {number + 1}; COMMIT;")
    conn.execute("INSERT INTO stores (id, name) VALUES (?, 'High Street')", (STORE,))
    conn.execute(
        "INSERT INTO members (id, name, tier, shopper_token, joined_at) VALUES "
        "('m-1', '', 'gold', 'token', 0)"
    )
    conn.executemany(
        "INSERT INTO devices (id, member_id, kind, identity_key, exponent, enrolled_at) "
        "VALUES (?, 'm-1', 'tag', ?, 10, 0)",
        list(keys.items()),
    )
    conn.commit()
    conn.close()
    assert files_holding(tmp_path, list(keys.values())) == ["loyalty.sqlite"]

    records = await SqliteLoyaltyRecords.open(path, CHAIN, data_key=TEST_DATA_KEY)
    try:
        roster = await records.roster(STORE)
        assert {d.ref: d.identity_key for d in roster.devices} == keys
        assert files_holding(tmp_path, list(keys.values())) == []
    finally:
        await records.close()


async def test_a_wrong_data_key_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "loyalty.sqlite"
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    await records.close()

    with pytest.raises(RecordsError) as caught:
        await SqliteLoyaltyRecords.open(path, CHAIN, data_key=DataKey(bytes(32), "the other key"))

    message = str(caught.value)
    assert "\n" not in message
    assert "the data key from the other key is not the one its identity keys are sealed with" in (
        message
    )


async def test_the_bridge_does_not_start_without_its_data_key(tmp_path: Path) -> None:
    database = tmp_path / "loyalty.sqlite"
    records = await SqliteLoyaltyRecords.open(database, CHAIN, create=True, data_key=TEST_DATA_KEY)
    await records.close()
    signing_key = tmp_path / "signing.key"
    create_signing_key_file(signing_key)
    config = BridgeConfig(
        BridgeSection(
            chain=CHAIN,
            database=str(database),
            signing_key_file=str(signing_key),
            data_key_file=str(tmp_path / "missing.key"),
        )
    )

    with pytest.raises(RecordsError, match="no data key there"):
        await Bridge.open(config)


def test_a_data_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.key"
    key, created = create_data_key_file(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_data_key(path, {}) == key
    assert create_data_key_file(path) == (key, False)  # never replaced

    path.chmod(0o640)

    with pytest.raises(RecordsError, match="chmod 600"):
        load_data_key(path, {})


def test_the_environment_wins_over_the_file_and_is_checked(tmp_path: Path) -> None:
    missing = tmp_path / "none.key"

    key = load_data_key(missing, {DATA_KEY_ENV: TEST_DATA_KEY.key.hex()})

    assert key.key == TEST_DATA_KEY.key and key.source == f"${DATA_KEY_ENV}"
    with pytest.raises(RecordsError, match=f"\\${DATA_KEY_ENV}: a data key is 32 bytes"):
        load_data_key(missing, {DATA_KEY_ENV: "abcd"})
    with pytest.raises(RecordsError, match="no data key there"):
        load_data_key(missing, {})
    assert "key=" not in repr(key) and TEST_DATA_KEY.key.hex() not in repr(key)


def test_create_db_makes_the_data_key_and_enroll_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "loyalty.sqlite"

    assert main(["create-db", str(db)]) == 0

    key_file = tmp_path / "bridge-data.key"
    assert f"data key {key_file}: created (mode 0600)" in capsys.readouterr().out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert main(["add-store", str(db), STORE]) == 0
    argv = ["enroll", "--database", str(db), "m-1", "--kind", "app", "--tier", "gold", "--consent"]
    assert main(argv) == 0
    key_file.rename(tmp_path / "elsewhere.key")
    assert main([*argv[:3], "m-2", *argv[4:]]) == 2
    assert "no data key there" in capsys.readouterr().err


def test_the_bridge_opens_a_database_made_by_create_db_with_its_data_key(tmp_path: Path) -> None:
    database = tmp_path / "loyalty.sqlite"
    assert main(["create-db", str(database)]) == 0
    assert main(["add-store", str(database), STORE, "--chain", CHAIN]) == 0
    signing_key = tmp_path / "signing.key"
    create_signing_key_file(signing_key)
    config = BridgeConfig(
        BridgeSection(
            chain=CHAIN,
            database=str(database),
            signing_key_file=str(signing_key),
            data_key_file=str(tmp_path / "bridge-data.key"),
        )
    )

    async def start() -> tuple[int, ...]:
        bridge = await Bridge.open(config)
        try:
            roster = await bridge.records.roster(STORE)
            return roster.version, len(roster.devices)
        finally:
            await bridge.close()

    assert asyncio.run(start()) == (1, 0)
