"""Noticing that a database was deleted, replaced, made read-only or corrupted under a running process.

SQLite does not: it keeps writing to a deleted file's inode, and serves garbage-overwritten pages from
its cache (both tried on SQLite 3.40). So a running gateway or bridge looks at its files itself:
cheaply on every tick (`check_files`: the paths still name the inodes opened, still writable, the
header intact) and, less often, with a fresh read-only connection whose `PRAGMA quick_check` reads
every page from disk (`check_pages`). Either returns one line saying what is wrong, or None.

"Writable" means writable by us (`access(W_OK)`: mode bits, an immutable flag, a read-only file
system) and, since root ignores mode bits, a write bit left for someone: a file chmodded 0400 as
root is read-only by intent, and the next start refuses it.

`storage_failure` maps an SQLite error that ended a loop to StorageError when retrying cannot help
(SQLITE_CORRUPT, NOTADB, READONLY, IOERR, FULL, CANTOPEN, PERM).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from edge.errors import StorageError

SQLITE_MAGIC = b"SQLite format 3\x00"
# Result codes whose family means the database itself is unusable (sqlite3.h, primary codes).
_FATAL_PRIMARY = {
    3: "SQLITE_PERM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    11: "SQLITE_CORRUPT",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    26: "SQLITE_NOTADB",
}


@dataclass(frozen=True, slots=True)
class _FileId:
    dev: int
    ino: int
    writable: bool


def _identify(path: Path) -> _FileId | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    writable = os.access(path, os.W_OK) and bool(st.st_mode & (stat.S_IWUSR | stat.S_IWGRP))
    return _FileId(st.st_dev, st.st_ino, writable)


class DatabaseWatch:
    """The files of one open database, as they were when it was opened."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._files = {
            p: f for p in self._paths() if (f := _identify(p)) is not None
        }  # the -wal and -shm exist while a connection in WAL mode is open
        self._dir_writable = os.access(path.parent, os.W_OK)

    def _paths(self) -> tuple[Path, ...]:
        return (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))

    def check_files(self) -> str | None:
        """Why the files no longer hold our database (deleted, replaced, read-only), or None."""
        for path, opened in self._files.items():
            now = _identify(path)
            if now is None:
                return f"{self.what} {path} was deleted under the running process"
            if (now.dev, now.ino) != (opened.dev, opened.ino):
                return f"{self.what} {path} was replaced by another file under the running process"
            if opened.writable and not now.writable:
                return f"{self.what} {path} was made read-only under the running process"
        if self._dir_writable and not os.access(self.path.parent, os.W_OK):
            return f"the directory of {self.what} {self.path} was made read-only"
        try:
            with open(self.path, "rb") as f:
                header = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            return f"{self.what} {self.path} cannot be read: {exc.strerror}"
        if self.path in self._files and header != SQLITE_MAGIC:
            return f"{self.what} {self.path} is corrupt: its header was overwritten"
        return None

    def check_pages(self) -> str | None:
        """Read every page from disk with a fresh read-only connection; why it is corrupt, or None."""
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
            ) as db:
                rows = db.execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == 5:  # SQLITE_BUSY: a writer's lock, not corruption
                return None
            return f"{self.what} {self.path} is corrupt or unreadable: {_describe(exc)}"
        except sqlite3.Error as exc:
            return f"{self.what} {self.path} is corrupt or unreadable: {_describe(exc)}"
        if rows != [("ok",)]:
            found = "; ".join(str(r[0]).replace("\n", "; ") for r in rows)
            return f"{self.what} {self.path} is corrupt: {found}"
        return None


def _describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc)


def storage_failure(exc: BaseException) -> StorageError | None:
    """The StorageError an SQLite error (or one chained under `exc`) means, if retrying cannot help."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _FATAL_PRIMARY:
                return StorageError(f"database failed: {_describe(seen)}")
            return None
        seen = seen.__cause__ or seen.__context__
    return None
