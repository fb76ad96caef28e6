"""The inbox between an MQTT callback and its loop: bounded, and fair between senders."""

from __future__ import annotations

from edge.adapters.mqtt import Message
from edge.services.inbox import FairInbox, InboxLimits, sender_of

ROGUE = "threshold/v1/c/store-001/door-2"
GENUINE = "threshold/v1/c/store-001/door-1"
LIMITS = InboxLimits(messages=100, bytes=10_000, sender_messages=10, sender_bytes=2_000)


def message(prefix: str, size: int = 10, suffix: str = "event/visit") -> Message:
    return Message(f"{prefix}/{suffix}", b"x" * size, False, 1)


def inbox(limits: InboxLimits = LIMITS) -> tuple[FairInbox, list[str]]:
    reasons: list[str] = []
    return FairInbox(limits, lambda m, r: reasons.append(r)), reasons


def test_the_sender_is_the_prefix_the_acl_vouches_for() -> None:
    assert sender_of(f"{ROGUE}/event/visit") == ROGUE
    assert sender_of(f"{ROGUE}/event/x/y/z") == ROGUE
    assert sender_of("threshold/v1/c/shopper/t-1/receipt") == "threshold/v1/c/shopper/t-1"
    assert sender_of("a/b") == "a/b"


async def test_a_flooding_sender_fills_its_own_share_and_a_genuine_one_still_gets_in() -> None:
    queue, reasons = inbox()
    accepted = [queue.offer(message(ROGUE)) for _ in range(1000)]
    assert sum(accepted) == 10 and queue.dropped == 990
    assert "door-2 has 10 messages waiting" in reasons[0]
    assert all(queue.offer(message(GENUINE)) for _ in range(10))
    # Taking one of the rogue's gives it room for exactly one more.
    assert (await queue.get()).topic.startswith(ROGUE)
    assert queue.offer(message(ROGUE)) and not queue.offer(message(ROGUE))


def test_bytes_are_bounded_per_sender_and_in_total() -> None:
    queue, reasons = inbox()
    assert queue.offer(message(ROGUE, 1_500))
    assert not queue.offer(message(ROGUE, 1_500))
    assert "bytes waiting" in reasons[-1]
    many = [f"threshold/v1/c/store-001/g-{i}" for i in range(20)]
    taken = sum(queue.offer(message(p, 1_900)) for p in many)
    assert queue.bytes_waiting <= LIMITS.bytes and taken == 4
    assert "inbox full (10000 bytes)" in reasons[-1]


def test_an_empty_inbox_takes_one_message_however_big() -> None:
    queue, _ = inbox()
    assert queue.offer(message(ROGUE, 1_000_000, "sync/roster"))
    assert not queue.offer(message(GENUINE, 1))  # the total is over until that one is handled


async def test_the_counts_go_back_to_nothing_and_no_sender_is_remembered() -> None:
    queue, _ = inbox(InboxLimits(messages=5, bytes=10_000, sender_messages=5, sender_bytes=10_000))
    for i in range(5):
        assert queue.offer(message(f"threshold/v1/c/s/g-{i}"))
    assert not queue.offer(message(GENUINE))
    assert queue.senders_waiting == 5
    await queue.get()
    while not queue.empty():
        queue.get_nowait()
    assert (queue.qsize(), queue.bytes_waiting, queue.senders_waiting) == (0, 0, 0)
