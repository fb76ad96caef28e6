"""The cloud bridge's exceptions: one root, subclasses by where it failed."""

from __future__ import annotations

from edge.errors import ConfigError


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class RecordsError(BridgeError):
    """The loyalty records could not be opened, migrated or written."""


class ApiError(BridgeError):
    """The enrollment API cannot serve: its address cannot be listened on (a port in use)."""


__all__ = ["ApiError", "BridgeError", "ConfigError", "RecordsError"]
