"""Moves events from the durable outbox to the bridge and forgets them only when the bridge acks.

A broker's PUBACK is not the bridge's record: an event is resent after `ack_timeout_s` (and after every
reconnect) until an Ack payload names it. The bridge ignores duplicates by event id, so resending is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from edge.adapters.sqlite_store import OutboxEntry, SqliteGatewayStore
from edge.core import wire
from edge.core.liveness import Liveness

_LOGGER = logging.getLogger(__name__)


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10.0,
    ) -> None: ...


class Uplink:
    """The outbox drain: at most `window` events in flight, each resent until acknowledged."""

    def __init__(
        self,
        publisher: Publisher,
        store: SqliteGatewayStore,
        address: wire.GatewayAddress,
        ack_timeout_s: float,
        window: int,
        clock: Callable[[], float] = time.monotonic,
        liveness: Liveness | None = None,
    ) -> None:
        self._publisher = publisher
        self._liveness = liveness  # told when a drain starts and ends (the watchdog's "uplink")
        self._store = store
        self._address = address
        self._ack_timeout_s = ack_timeout_s
        self._window = window
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, float] = {}  # event id → when it was last sent (monotonic)
        self.sent = 0
        self.resent = 0
        self.acked = 0
        self.pending = 0

    def wake(self) -> None:
        """New events are in the outbox, or the connection came back."""
        self._wakeup.set()

    def connection_restored(self) -> None:
        """After a reconnect nothing is known to be in flight: resend whatever is unacknowledged."""
        self._in_flight.clear()
        self.wake()

    async def handle_ack(self, ack: wire.Ack) -> None:
        removed = await self._store.remove(ack.event_ids)
        for event_id in ack.event_ids:
            self._in_flight.pop(event_id, None)
        self.acked += removed
        self.pending = await self._store.count()
        self.wake()

    async def run(self) -> None:
        """Drain forever."""
        self.pending = await self._store.count()
        while True:
            if self._liveness is not None:
                self._liveness.idle("uplink", self._clock())
            try:
                async with asyncio.timeout(self._ack_timeout_s / 2):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            if self._liveness is not None:
                self._liveness.busy("uplink", self._clock())
            await self.drain_once()

    async def drain_once(self) -> int:
        """Send what the window allows; return how many were published."""
        if not self._publisher.connected:
            return 0
        now = self._clock()
        for event_id, sent_at in list(self._in_flight.items()):
            if now - sent_at >= self._ack_timeout_s:
                del self._in_flight[event_id]  # no ack in time: eligible to resend
                self.resent += 1
        room = self._window - len(self._in_flight)
        if room <= 0:
            return 0
        entries = await self._store.pending(room, skip=self._in_flight)
        if not entries:
            return 0
        for entry in entries:
            self._in_flight[entry.event_id] = now
        results = await asyncio.gather(
            *(self._publish(entry) for entry in entries), return_exceptions=True
        )
        published = 0
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                # Not sent (disconnected or no PUBACK): make it eligible again right away.
                self._in_flight.pop(entry.event_id, None)
                _LOGGER.debug("event %s not sent: %s", entry.event_id, result)
            else:
                published += 1
        self.sent += published
        return published

    async def _publish(self, entry: OutboxEntry) -> None:
        await self._publisher.publish(
            wire.event_topic(self._address, entry.kind), entry.payload, qos=1
        )
