"""Opening Threshold's SQLite databases: WAL, synchronous=FULL, numbered migrations in user_version."""

from __future__ import annotations

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
        path.parent.mkdir(parents=True, exist_ok=True)
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
