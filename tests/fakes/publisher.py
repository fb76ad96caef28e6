"""FakePublisher: the `Publisher` the uplink talks to, recording what it publishes.

Like PahoMqtt it returns from `publish()` only for a message the broker took, and raises
`MqttNotConnected` or `MqttPublishFailed` for one it did not; a failed message is not recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from edge.adapters.mqtt import MqttError, MqttNotConnected


@dataclass(frozen=True, slots=True)
class PublishedMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class FakePublisher:
    """Records published messages; `connected` and `fail_next()` decide what fails."""

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = connected
        self.messages: list[PublishedMessage] = []
        self.failures: list[MqttError] = []  # raised, in order, by the next publishes
        self._changed = asyncio.Event()

    @property
    def published(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message the broker took, in publish order."""
        return [(m.topic, m.payload) for m in self.messages]

    def fail_next(self, error: MqttError, count: int = 1) -> None:
        """Make the next `count` publishes raise `error` (nothing is recorded for them)."""
        self.failures.extend([error] * count)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        if not self.connected:
            raise MqttNotConnected(f"not connected; {topic} not sent")
        if self.failures:
            raise self.failures.pop(0)
        self.messages.append(PublishedMessage(topic, payload, qos, retain))
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        """Wait until at least `count` messages were published (callers add their own timeout)."""
        while len(self.messages) < count:
            self._changed.clear()
            await self._changed.wait()
