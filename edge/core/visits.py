"""Open visits as the gateway keeps them across a restart (issue 10): what a row holds, and its check.

The gateway writes a member's open visit when it records the entry and refreshes its times in batches
(edge/app.py); at start-up it reads them back (edge/adapters/sqlite_store.py) and the pipeline
restores them (`Pipeline.restore_visits`). A row read from disk is as hostile as a radio byte:
`open_visit_from_row` checks every field and says which one is wrong.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from edge.core.wire import ID_PATTERN, PLATFORMS, Platform

_ID_RE = re.compile(ID_PATTERN)
#: The range of a time on the wire (wire.UnixTime): a row's times must fit an event.
_MAX_TIME_S = 1e11
#: Columns of a row, in order.
_PLATFORMS: dict[str, Platform] = {p: p for p in PLATFORMS}
COLUMNS = ("visit_id", "member", "device", "platform", "entered_at", "last_near", "last_heard")


@dataclass(frozen=True, slots=True)
class OpenVisit:
    """A visit the gateway has reported (its `visit` event's id) and not yet ended; radio times."""

    visit_id: str
    member: str
    device: str
    platform: Platform | None
    entered_at_s: float
    last_near_s: float
    last_heard_s: float

    def row(self) -> tuple[str, str, str, str | None, float, float, float]:
        """The values stored, in COLUMNS order."""
        return (
            self.visit_id,
            self.member,
            self.device,
            self.platform,
            self.entered_at_s,
            self.last_near_s,
            self.last_heard_s,
        )


class OpenVisitError(ValueError):
    """A stored open visit that does not decode; `reason` names the field and what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _id(value: object, name: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise OpenVisitError(f"{name}: not an id ({_show(value)})")
    return value


def _time(value: object, name: str) -> float:
    # bool is an int to Python, never a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OpenVisitError(f"{name}: not a number ({_show(value)})")
    time_s = float(value)
    if not (math.isfinite(time_s) and 0.0 <= time_s <= _MAX_TIME_S):
        raise OpenVisitError(f"{name}: {time_s!r} is not a time (Unix seconds, 0..1e11)")
    return time_s


def _show(value: object) -> str:
    """A stored value as a log line may show it: its type and the start of it."""
    return f"{type(value).__name__} {value!r:.40}"


def open_visit_from_row(row: Sequence[object]) -> OpenVisit:
    """The open visit a row holds (COLUMNS order); OpenVisitError naming the first bad field."""
    if len(row) != len(COLUMNS):
        raise OpenVisitError(f"{len(row)} columns, expected {len(COLUMNS)}")
    visit_id = _id(row[0], "visit_id")
    member = _id(row[1], "member")
    device = _id(row[2], "device")
    platform: Platform | None = None
    if row[3] is not None:
        platform = _PLATFORMS.get(row[3]) if isinstance(row[3], str) else None
        if platform is None:
            raise OpenVisitError(f"platform: not one of {', '.join(PLATFORMS)} ({_show(row[3])})")
    entered_at = _time(row[4], "entered_at")
    last_near = _time(row[5], "last_near")
    last_heard = _time(row[6], "last_heard")
    if not entered_at <= last_near <= last_heard:
        raise OpenVisitError(
            f"times out of order: entered_at {entered_at} <= last_near {last_near} <= "
            f"last_heard {last_heard} does not hold"
        )
    return OpenVisit(visit_id, member, device, platform, entered_at, last_near, last_heard)
