"""The systemd watchdog: fed only while every loop of the process makes progress.

Every `interval_s` (half of WatchdogSec=) it asks the liveness record (edge/core/liveness.py) and the
extra `checks` (each returns why its part is dead, or None) whether anything stalled. All well: one
`WATCHDOG=1`. Something stalled: no feeding (systemd kills the process after WatchdogSec= and
restarts it), a log line saying which loop, and the reason in the unit's status. This loop runs on
the event loop, so a blocked event loop stops the feeding too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from edge.core.liveness import Liveness

_LOGGER = logging.getLogger(__name__)


class Notifier(Protocol):
    def watchdog(self) -> bool: ...

    def status(self, status: str) -> bool: ...


class Watchdog:
    """Feeds `notifier` while `liveness` and `checks` say every loop is alive."""

    def __init__(
        self,
        notifier: Notifier,
        liveness: Liveness,
        interval_s: float,
        checks: Sequence[Callable[[], str | None]] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._liveness = liveness
        self._interval_s = interval_s
        self._checks = tuple(checks)
        self._mono = monotonic
        self.fed = 0
        self.stalled: list[str] = []

    def tick(self) -> bool:
        """Feed the watchdog if every loop is alive; True if fed."""
        problems = [str(s) for s in self._liveness.stalled(self._mono())]
        problems += [p for p in (check() for check in self._checks) if p is not None]
        if problems:
            if problems != self.stalled:
                _LOGGER.error(
                    "not feeding the watchdog: %s; systemd restarts the process",
                    "; ".join(problems),
                )
                self._notifier.status(f"stalled: {'; '.join(problems)}")
            self.stalled = problems
            return False
        if self.stalled:
            _LOGGER.warning("every loop makes progress again: feeding the watchdog")
            self._notifier.status("running")
            self.stalled = []
        self.fed += self._notifier.watchdog()
        return True

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self._interval_s)
