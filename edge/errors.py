"""The edge gateway's exceptions: one root, subclasses by where it failed."""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(EdgeError):
    """The configuration file is wrong; retrying cannot help. Names file, field and what is expected."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        super().__init__(f"{path}: [{field}] {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class AlreadyRunning(EdgeError):
    """Another process of ours holds these state files; starting a second one would harm it."""


class StorageError(EdgeError):
    """The gateway's database could not be opened or written."""


class DatabaseFileError(StorageError):
    """A database file cannot be used as it is: missing, read-only, corrupt or too new.

    `.path` names the file; the message is one line that says what to do. Retrying cannot help.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class MissingDatabase(DatabaseFileError):
    """The database file is not there (and the caller did not ask to create it)."""


class EmptyDatabase(MissingDatabase):
    """The file is there but holds no schema version: empty, or another program's database."""


class ForeignDatabase(DatabaseFileError):
    """The file is another kind of database (the bridge's given to the gateway, or vice versa)."""


class ReadOnlyDatabase(DatabaseFileError):
    """The database file, or its directory (where SQLite keeps -wal and -shm), cannot be written."""


class CorruptDatabase(DatabaseFileError):
    """The file is not an SQLite database, or SQLite's quick_check finds it damaged."""


class NewerDatabase(DatabaseFileError):
    """The database's schema version is newer than this software knows (a downgrade)."""
