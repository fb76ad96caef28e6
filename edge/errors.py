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


class StorageError(EdgeError):
    """The gateway's database could not be opened or written."""
