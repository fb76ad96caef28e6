"""The bridge refuses a missing, read-only, corrupt or too new loyalty database, in one line.

Tests run as root, where file modes do not stop a write. Read-only is shown two ways: with the
kernel's own refusal (`chattr +i`, which stops root too; skipped where the filesystem lacks it), and
with the injected writability check standing in for a file this process may not write.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.cli import main
from cloud_bridge.errors import RecordsError
from edge.adapters.keystore import create_signing_key_file

CHAIN = "demo-chain"


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` made immutable (root cannot write it either) for the block; skip if unsupported."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("no chattr here")
    if subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


async def created(path: Path) -> Path:
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True)
    await records.add_store("store-001", "High Street")
    await records.close()
    return path


async def refused(path: Path, **options: object) -> str:
    with pytest.raises(RecordsError) as caught:
        await SqliteLoyaltyRecords.open(path, CHAIN, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


async def test_a_missing_database_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "loyalty.sqlite"

    message = await refused(path)

    assert f"create a new one with `cloud-bridge create-db {path}`" in message
    assert not path.exists()


def test_every_command_but_create_db_refuses_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "loyalty.sqlite")
    for argv in (
        ["add-store", db, "store-001"],
        ["gateways", db],
        ["clones", db],
        ["member", "--database", db, "m-1"],
    ):
        assert main(argv) == 2, argv
        assert "no loyalty database there" in capsys.readouterr().err
    assert not Path(db).exists()

    assert main(["create-db", db]) == 0
    assert "created (mode 0600)" in capsys.readouterr().out
    assert Path(db).stat().st_mode & 0o777 == 0o600
    assert main(["add-store", db, "store-001"]) == 0
    assert main(["create-db", db]) == 0  # an existing one is checked and kept
    assert "exists, checked and kept" in capsys.readouterr().out
    assert main(["gateways", db]) == 0


@pytest.mark.parametrize("kind", ["empty", "another program's"])
async def test_an_empty_file_or_another_programs_database_is_refused_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    """A zero-byte file is a new database to SQLite: migrating it would be the silent creation
    that a missing file is refused for (the bridge would acknowledge the gateways' backlog into
    it)."""
    path = tmp_path / "loyalty.sqlite"
    if kind == "empty":
        path.write_bytes(b"")
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (x TEXT)")
        conn.commit()
        conn.close()
    before = path.read_bytes()

    message = await refused(path)

    assert "no loyalty database in that file" in message
    assert f"cloud-bridge create-db {path}" in message
    assert path.read_bytes() == before
    if kind == "empty":  # nothing to keep: create-db makes it the database
        assert await asyncio.to_thread(main, ["create-db", str(path)]) == 0
        records = await SqliteLoyaltyRecords.open(path, CHAIN)
        await records.close()
        assert path.stat().st_mode & 0o777 == 0o600
    else:
        assert await asyncio.to_thread(main, ["create-db", str(path)]) == 2  # never written over
        assert path.read_bytes() == before


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loyalty.sqlite"
    path.write_bytes(b"not sqlite at all " * 1000)

    message = await refused(path)

    assert "is corrupt" in message and "restore it from a backup" in message


async def test_a_damaged_database_fails_the_quick_check(tmp_path: Path) -> None:
    path = tmp_path / "loyalty.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("CREATE INDEX t_x ON t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(str(i) * 20,) for i in range(3000)])
    conn.execute("PRAGMA user_version = 1")  # versioned: an unversioned file is refused sooner
    conn.commit()
    conn.close()
    with path.open("r+b") as f:  # scribble over the middle of a b-tree page
        f.seek(4096 * 5 + 100)
        f.write(b"\xff" * 300)

    message = await refused(path)

    assert "is corrupt" in message and "restore it from a backup" in message


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = await created(tmp_path / "loyalty.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()

    message = await refused(path)

    assert "schema version 99, newer than this software" in message


async def test_a_file_this_process_may_not_write_is_refused(tmp_path: Path) -> None:
    path = await created(tmp_path / "loyalty.sqlite")

    message = await refused(path, writable=lambda p: p != path)

    assert "read-only" in message and "make it writable" in message


async def test_a_directory_this_process_may_not_write_is_refused(tmp_path: Path) -> None:
    path = await created(tmp_path / "loyalty.sqlite")

    message = await refused(path, writable=lambda p: p != path.parent)

    assert "the loyalty database's directory is read-only" in message
    assert f"make {path.parent} writable" in message


async def test_an_immutable_file_is_refused_even_as_root(tmp_path: Path) -> None:
    path = await created(tmp_path / "loyalty.sqlite")
    with immutable(path):
        # The kernel's access(2) says no, even to root.
        assert "read-only" in await refused(path)
        # And when that check is fooled, SQLite's own write probe still says no.
        assert "read-only" in await refused(path, writable=lambda p: True)
    reopened = await SqliteLoyaltyRecords.open(path, CHAIN)
    assert await reopened.stores() == ["store-001"]
    await reopened.close()


def test_the_bridge_refuses_to_run_on_a_missing_database_and_creates_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "loyalty.sqlite"
    create_signing_key_file(tmp_path / "signing.key")
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[bridge]\ndatabase = "{db}"\nsigning_key_file = "{tmp_path / "signing.key"}"\n'
        f'data_key_file = "{tmp_path / "data.key"}"\n',
        encoding="utf-8",
    )

    assert main(["run", "--config", str(config)]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert "no loyalty database there; check the path ([bridge] database)" in line
    assert f"cloud-bridge create-db {db}" in line
    assert not db.exists()
