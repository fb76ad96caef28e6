"""Which loops of a process make progress: the pure half of the systemd watchdog.

Each loop says when it starts a unit of work (`busy`) and when it waits for input again (`idle`).
A loop waiting for input is alive however long the wait (a closed store's radio is silent for
hours); a loop busy for longer than `limit_s` is stalled (a database call that never returns, a
handler stuck in a loop). A loop that never reported since `start` counts as busy since then, so one
that hangs before its first wait is caught too. The watchdog (edge/services/watchdog.py) feeds
systemd only while `stalled()` is empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stall:
    loop: str
    busy_s: float  # how long it has been busy without finishing

    def __str__(self) -> str:
        return f"{self.loop} busy for {self.busy_s:.0f} s"


class Liveness:
    """Busy-since times per loop (monotonic seconds); None while a loop waits for input."""

    def __init__(self, loops: Iterable[str], start: float, limit_s: float) -> None:
        if limit_s <= 0:
            raise ValueError("limit_s must be > 0")
        self.limit_s = limit_s
        self._busy_since: dict[str, float | None] = dict.fromkeys(loops, start)
        self._failed: dict[str, str] = {}

    @property
    def loops(self) -> tuple[str, ...]:
        return tuple(self._busy_since)

    def busy(self, loop: str, now: float) -> None:
        """`loop` started a unit of work (or made progress within a long one)."""
        self._busy_since[loop] = now

    def idle(self, loop: str, now: float) -> None:
        """`loop` finished its work and waits for input: alive until it is busy again."""
        self._busy_since[loop] = None

    def failed(self, loop: str, reason: str) -> None:
        """The machinery behind `loop` gave up (e.g. the radio's recovery ladder): stalled now."""
        self._failed[loop] = reason

    def stalled(self, now: float) -> list[Stall | str]:
        """The loops that make no progress: busy past the limit, or failed (their reason)."""
        out: list[Stall | str] = [f"{loop}: {why}" for loop, why in self._failed.items()]
        for loop, since in self._busy_since.items():
            if since is not None and now - since > self.limit_s:
                out.append(Stall(loop, now - since))
        return out
