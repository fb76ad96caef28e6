"""Opening Threshold's SQLite databases: WAL, synchronous=FULL, numbered migrations in user_version.

A database file is as hostile as a network peer: before anything is read or migrated, `open_database`
checks that the file is there (unless asked to create it), that it and its directory can be written,
that SQLite recognises it and finds it whole (`PRAGMA quick_check`), and that its schema is not newer
than this software. Each failure is a `DatabaseFileError` subclass with one line naming the file and
what to do.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import aiosqlite

from edge.errors import (
    CorruptDatabase,
    DatabaseFileError,
    EmptyDatabase,
    ForeignDatabase,
    MissingDatabase,
    NewerDatabase,
    ReadOnlyDatabase,
    StorageError,
)

# SQLite's primary result codes (https://sqlite.org/rescode.html).
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

Writable = Callable[[Path], bool]

# PRAGMA application_id (the file header's offset 68) of each kind of Threshold database, so that
# one is never opened, migrated or moved aside as the other.
GATEWAY_APPLICATION_ID = 0x54485247  # "THRG"
LOYALTY_APPLICATION_ID = 0x54485242  # "THRB"
_KINDS = {
    GATEWAY_APPLICATION_ID: "a gateway database",
    LOYALTY_APPLICATION_ID: "the bridge's loyalty database",
}


def os_writable(path: Path) -> bool:
    """Whether this process may write `path`, as the kernel says (access(2)).

    As root, file modes do not stop writes, but an immutable file (`chattr +i`) or a read-only
    mount still does, and access(2) reports both.
    """
    return os.access(path, os.W_OK)


async def open_database(
    path: Path,
    migrations: Sequence[str],
    what: str,
    *,
    foreign_keys: bool = False,
    create: bool = True,
    writable: Writable = os_writable,
    fix: str = "",
    application_id: int = 0,
) -> aiosqlite.Connection:
    """Open `path` (creating it only if `create`), check it and bring its schema to len(migrations).

    Raises a DatabaseFileError subclass for a missing, read-only, corrupt, too new or foreign file
    (`fix`, if given, is appended to the corrupt file's message), StorageError for anything else.
    With `application_id`, a file marked with another id is refused, and an unmarked one marked.
    synchronous=FULL because in WAL mode NORMAL may roll back the last commits on power loss.
    """
    # A few stat calls, once at start-up: not worth a thread (aiosqlite's own is not running yet).
    exists = _check_file(path, what, create, writable)
    try:
        make_private(path)  # directories 0700, the file 0600 (created only if `create`)
        if exists:
            # mode=rw: never create a file that vanished since the check above.
            db = await aiosqlite.connect(f"file:{quote(str(path))}?mode=rw", uri=True)
        else:
            db = await aiosqlite.connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open {what} {path}: {exc}") from exc
    try:
        # Before _check writes anything (WAL mode):
        if exists and application_id:
            await _refuse_foreign(db, path, what, application_id)
        if exists and not create and migrations:
            await _refuse_unversioned(db, path, what)
        await _check(db, path, what, fix)
        await db.execute("PRAGMA synchronous=FULL")
        if foreign_keys:
            await db.execute("PRAGMA foreign_keys=ON")
        await _migrate(db, path, migrations, what)
        if application_id and await _application_id(db) != application_id:
            await db.execute(f"PRAGMA application_id = {int(application_id)}")
    except StorageError:
        await db.close()
        raise
    except sqlite3.Error as exc:
        await db.close()
        raise _mapped(exc, path, what, fix) from exc
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


def _check_file(path: Path, what: str, create: bool, writable: Writable) -> bool:
    """Whether `path` exists; raise if it must and does not, or if it or its directory is read-only."""
    exists = path.exists()
    if not exists and not create:
        raise MissingDatabase(str(path), f"{path}: no {what} there; check the path")
    if exists and not path.is_file():
        raise DatabaseFileError(str(path), f"{path}: is not a file; point the config at the {what}")
    directory = path.parent
    if exists and not writable(path):
        raise ReadOnlyDatabase(
            str(path), f"{path}: the {what} is read-only; make it writable by this service's user"
        )
    if exists and not writable(directory):
        raise ReadOnlyDatabase(
            str(path),
            f"{path}: the {what}'s directory is read-only (SQLite writes {path.name}-wal "
            f"there); make {directory} writable by this service's user",
        )
    return exists


def _mapped(exc: sqlite3.Error, path: Path, what: str, fix: str) -> StorageError:
    """SQLite's error as one of ours, by its result code."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == _SQLITE_READONLY:
        return ReadOnlyDatabase(
            str(path), f"{path}: the {what} is read-only ({exc}); make it writable"
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CorruptDatabase(str(path), f"{path}: the {what} is corrupt ({exc}){fix}")
    return StorageError(f"cannot prepare {what} {path}: {exc}")


async def _check(db: aiosqlite.Connection, path: Path, what: str, fix: str) -> None:
    """WAL on, the file whole, and writable as SQLite sees it."""
    await db.execute("PRAGMA journal_mode=WAL")  # the first read: "file is not a database" here
    rows = await db.execute_fetchall("PRAGMA quick_check(1)")  # stop at the first problem
    answer = [str(r[0]) for r in rows]
    if answer != ["ok"]:
        lines = [line for a in answer for line in a.splitlines() if not line.startswith("***")]
        first = lines[0] if lines else "no answer"
        raise CorruptDatabase(
            str(path), f"{path}: the {what} is corrupt (quick_check: {first[:200]}){fix}"
        )
    # SQLite silently opens a file it cannot write read-only; a write in a rolled-back
    # transaction finds out now rather than at the first event.
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("CREATE TABLE main.threshold_write_probe (x)")
    finally:
        await db.rollback()


async def _application_id(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA application_id") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _refuse_foreign(
    db: aiosqlite.Connection, path: Path, what: str, application_id: int
) -> None:
    """Refuse a file marked as another kind of database: migrating it as this kind would fail
    half-way or, worse, succeed, and a gateway would move the bridge's database aside."""
    found = await _application_id(db)
    if found not in (0, application_id):
        kind = _KINDS.get(found, f"another program's database (application id {found:#x})")
        raise ForeignDatabase(str(path), f"{path}: is {kind}, not a {what}; check the path")


async def _refuse_unversioned(db: aiosqlite.Connection, path: Path, what: str) -> None:
    """Refuse a file with no schema version: an empty file (or another program's database) is a
    new database to SQLite, and migrating it would be the silent creation `create=False` refuses."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    if not row or int(row[0]) == 0:
        raise EmptyDatabase(
            str(path), f"{path}: is empty or not a {what} (schema version 0); check the path"
        )


async def _migrate(
    db: aiosqlite.Connection, path: Path, migrations: Sequence[str], what: str
) -> None:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(migrations):
        raise NewerDatabase(
            str(path),
            f"{path}: the {what} has schema version {version}, newer than this software "
            f"({len(migrations)}); upgrade Threshold or restore the previous database",
        )
    for number in range(version, len(migrations)):
        await db.executescript(
            f"BEGIN; {migrations[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
        )
