"""Opening Threshold's SQLite databases: WAL, synchronous=FULL, numbered migrations in user_version."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from edge.errors import StorageError


async def open_database(
    path: Path, migrations: Sequence[str], what: str, *, foreign_keys: bool = False
) -> aiosqlite.Connection:
    """Open `path` (creating it), bring its schema to len(migrations); raise StorageError saying `what`.

    synchronous=FULL because in WAL mode NORMAL may roll back the last commits on power loss.
    """
    try:
        make_private(path)
        db = await aiosqlite.connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open {what} {path}: {exc}") from exc
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        if foreign_keys:
            await db.execute("PRAGMA foreign_keys=ON")
        await _migrate(db, path, migrations)
    except (sqlite3.Error, StorageError) as exc:
        await db.close()
        raise StorageError(f"cannot prepare {what} {path}: {exc}") from exc
    return db


def make_private(path: Path) -> None:
    """Directories created for `path` are 0700; the database file is created 0600 (SQLite gives its
    -wal and -shm the database file's mode), and an existing one and its -wal/-shm lose any group or
    other access: they hold identity keys, members and visits."""
    missing = []
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # empty: SQLite's new database
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            pass


async def _migrate(db: aiosqlite.Connection, path: Path, migrations: Sequence[str]) -> None:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise StorageError(
            f"{path} has schema version {version}, newer than this software ({len(migrations)}); "
            "upgrade Threshold or restore the previous database"
        )
    for number in range(version, len(migrations)):
        await db.executescript(
            f"BEGIN; {migrations[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
        )
