"""Installer tools behind `edge-gateway scan` and `edge-gateway replay`: what a gateway hears."""

from __future__ import annotations

from pathlib import Path

from edge.core import wire
from edge.errors import EdgeError


class ToolError(EdgeError):
    """A tool's input (a capture, a roster file) cannot be used; the message says which and why."""


def load_roster(path: Path) -> tuple[wire.RosterDevice, ...]:
    """The enrolled devices of a roster file: the `roster` payload as the bridge publishes it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        roster = wire.decode_as(data, wire.RosterSync, str(path))
    except wire.WireError as exc:
        raise ToolError(
            f"{exc.reason} (expected a roster file: the JSON `roster` payload of docs/mqtt.md, "
            "version 1, with the devices to treat as enrolled)"
        ) from None
    return roster.devices
