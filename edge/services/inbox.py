"""A bounded inbox between an MQTT client's callback and the loop that handles its messages.

Bounded in messages and bytes, in total and per sender (the topic's first five segments: a gateway
`threshold/v1/C/S/G` or a shopper app `threshold/v1/C/shopper/T`, which the broker's ACL lets
publish only under its own prefix). So one client flooding the broker fills its own share and
nothing more: a genuine gateway's events still get in, and memory stays bounded whatever arrives.
A message refused for want of room is counted and left to its sender's resend (a gateway resends
unacknowledged events, an app confirms an offer again when it is resent, a status comes again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from edge.adapters.mqtt import Message

#: How many of a topic's leading segments name who sent it (threshold/v1/chain/store/gateway).
SENDER_SEGMENTS = 5


def sender_of(topic: str) -> str:
    """Who published `topic`, as far as the broker's ACL vouches for it: its first five segments."""
    return "/".join(topic.split("/", SENDER_SEGMENTS)[:SENDER_SEGMENTS])


@dataclass(frozen=True, slots=True)
class InboxLimits:
    """Most messages and bytes waiting, in total and from any one sender."""

    messages: int
    bytes: int
    sender_messages: int
    sender_bytes: int


class FairInbox:
    """An asyncio queue of messages with per-sender shares; `offer` never blocks or raises."""

    def __init__(self, limits: InboxLimits, on_drop: Callable[[Message, str], None]) -> None:
        self.limits = limits
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._on_drop = on_drop
        self._bytes = 0
        # Per sender waiting now: (messages, bytes). Entries go when their count drops to 0, so
        # the dict never holds more senders than messages waiting.
        self._senders: dict[str, tuple[int, int]] = {}
        #: Messages refused for want of room.
        self.dropped = 0

    @staticmethod
    def _size(message: Message) -> int:
        return len(message.payload) + len(message.topic)

    def offer(self, message: Message) -> bool:
        """Queue `message` if its sender's share and the total have room; else count and drop it.

        An empty inbox always takes one message, however big (a roster bundle of many MB)."""
        size = self._size(message)
        sender = sender_of(message.topic)
        count, held = self._senders.get(sender, (0, 0))
        limits = self.limits
        if self._queue.qsize() >= limits.messages:
            reason = f"inbox full ({limits.messages} messages)"
        elif self._queue.qsize() and self._bytes + size > limits.bytes:
            reason = f"inbox full ({limits.bytes} bytes)"
        elif count >= limits.sender_messages:
            reason = f"{sender} has {count} messages waiting already"
        elif count and held + size > limits.sender_bytes:
            reason = f"{sender} has {held} bytes waiting already"
        else:
            self._queue.put_nowait(message)
            self._bytes += size
            self._senders[sender] = (count + 1, held + size)
            return True
        self.dropped += 1
        self._on_drop(message, reason)
        return False

    def _taken(self, message: Message) -> Message:
        size = self._size(message)
        sender = sender_of(message.topic)
        self._bytes -= size
        count, held = self._senders.pop(sender, (1, size))
        if count > 1:
            self._senders[sender] = (count - 1, held - size)
        return message

    async def get(self) -> Message:
        return self._taken(await self._queue.get())

    def get_nowait(self) -> Message:
        """The next message; asyncio.QueueEmpty if none."""
        return self._taken(self._queue.get_nowait())

    def empty(self) -> bool:
        return self._queue.empty()

    def qsize(self) -> int:
        return self._queue.qsize()

    @property
    def bytes_waiting(self) -> int:
        return self._bytes

    @property
    def senders_waiting(self) -> int:
        return len(self._senders)
