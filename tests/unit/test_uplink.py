"""Uplink: the outbox drain, with a FakePublisher, a fake clock and a real SqliteGatewayStore."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edge.adapters.mqtt import MqttError, MqttNotConnected, MqttPublishFailed
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.core import wire
from edge.services.uplink import Uplink
from tests.factories import T0, make_offer_trigger, make_visit
from tests.fakes.publisher import FakePublisher

GW = wire.GatewayAddress("acme", "store-001", "gw-1")
VISIT_TOPIC = wire.event_topic(GW, "visit")
OFFER_TOPIC = wire.event_topic(GW, "offer")
ACK_TIMEOUT_S = 30.0
GUARD_S = 10.0  # only a guard against hangs


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_uplink(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock, window: int = 10
) -> Uplink:
    return Uplink(publisher, store, GW, ACK_TIMEOUT_S, window, clock=clock)


async def stored(store: SqliteGatewayStore, events: list[wire.Event]) -> list[wire.Event]:
    await store.append_events(events, now_s=T0)
    return events


def expected(*events: wire.Event) -> list[tuple[str, bytes]]:
    return [(wire.event_topic(GW, e.KIND), wire.encode(e)) for e in events]


def sent_ids(publisher: FakePublisher) -> list[str]:
    ids = []
    for _, payload in publisher.published:
        event = wire.decode(payload)
        assert isinstance(event, wire.Visit | wire.OfferTrigger)
        ids.append(event.event_id)
    return ids


async def test_drain_publishes_pending_events_to_their_event_topics_in_order(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    visit = make_visit()
    offer = make_offer_trigger(visit_id=visit.event_id)
    await stored(store, [visit, offer])
    uplink = make_uplink(publisher, store, clock)

    published = await uplink.drain_once()

    assert published == 2
    assert publisher.published == [
        (VISIT_TOPIC, wire.encode(visit)),
        (OFFER_TOPIC, wire.encode(offer)),
    ]
    assert all(m.qos == 1 and not m.retain for m in publisher.messages)
    assert uplink.sent == 2
    # A PUBACK is not the bridge's record: the events stay in the outbox until acked.
    assert await store.count() == 2


async def test_nothing_is_published_while_disconnected(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    events = await stored(store, [make_visit(), make_visit()])
    publisher.connected = False
    uplink = make_uplink(publisher, store, clock)

    assert await uplink.drain_once() == 0
    assert publisher.published == []

    publisher.connected = True
    assert await uplink.drain_once() == 2
    assert publisher.published == expected(*events)


async def test_in_flight_events_are_not_resent_before_the_ack_timeout(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    events = await stored(store, [make_visit(), make_offer_trigger()])
    uplink = make_uplink(publisher, store, clock)
    await uplink.drain_once()

    clock.advance(ACK_TIMEOUT_S - 0.5)
    assert await uplink.drain_once() == 0

    assert publisher.published == expected(*events)
    assert uplink.resent == 0


async def test_unacknowledged_events_are_resent_after_the_ack_timeout(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    events = await stored(store, [make_visit(), make_offer_trigger()])
    uplink = make_uplink(publisher, store, clock)
    await uplink.drain_once()

    clock.advance(ACK_TIMEOUT_S)
    assert await uplink.drain_once() == 2

    assert publisher.published == expected(*events) * 2
    assert uplink.resent == 2
    # Resent once; not again until another ack timeout has passed.
    clock.advance(ACK_TIMEOUT_S - 0.5)
    assert await uplink.drain_once() == 0


async def test_connection_restored_makes_every_unacknowledged_event_eligible_again(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    events = await stored(store, [make_visit(), make_offer_trigger()])
    uplink = make_uplink(publisher, store, clock)
    await uplink.drain_once()

    uplink.connection_restored()
    assert await uplink.drain_once() == 2  # no ack timeout had to pass

    assert publisher.published == expected(*events) * 2


async def test_ack_forgets_the_event_so_it_is_never_resent(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    visit, offer = await stored(store, [make_visit(), make_offer_trigger()])
    uplink = make_uplink(publisher, store, clock)
    await uplink.drain_once()

    await uplink.handle_ack(wire.Ack((visit.event_id,)))

    assert [e.event_id for e in await store.pending(limit=10)] == [offer.event_id]
    assert (uplink.acked, uplink.pending) == (1, 1)
    clock.advance(ACK_TIMEOUT_S)
    await uplink.drain_once()
    uplink.connection_restored()
    await uplink.drain_once()
    assert sent_ids(publisher) == [visit.event_id, offer.event_id, offer.event_id, offer.event_id]


async def test_ack_naming_unknown_or_already_acked_events_is_harmless(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    (visit,) = await stored(store, [make_visit()])
    uplink = make_uplink(publisher, store, clock)
    await uplink.drain_once()
    await uplink.handle_ack(wire.Ack((visit.event_id,)))

    await uplink.handle_ack(wire.Ack((visit.event_id, "ev-never-sent")))

    assert (uplink.acked, uplink.pending) == (1, 0)
    assert await store.count() == 0


async def test_window_bounds_the_events_in_flight(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    events = await stored(store, [make_visit() for _ in range(5)])
    ids = [e.event_id for e in events]
    uplink = make_uplink(publisher, store, clock, window=2)

    assert await uplink.drain_once() == 2
    assert await uplink.drain_once() == 0  # the window is full until an ack
    assert sent_ids(publisher) == ids[:2]

    await uplink.handle_ack(wire.Ack((ids[0],)))
    assert await uplink.drain_once() == 1
    assert sent_ids(publisher) == ids[:3]

    await uplink.handle_ack(wire.Ack((ids[1], ids[2])))
    assert await uplink.drain_once() == 2
    assert sent_ids(publisher) == ids
    assert await store.count() == 2


async def test_timed_out_events_are_resent_within_the_window(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    events = await stored(store, [make_visit() for _ in range(3)])
    ids = [e.event_id for e in events]
    uplink = make_uplink(publisher, store, clock, window=2)
    await uplink.drain_once()

    clock.advance(ACK_TIMEOUT_S)
    assert await uplink.drain_once() == 2

    # The oldest unacknowledged events go first; the third still waits for room.
    assert sent_ids(publisher) == [ids[0], ids[1], ids[0], ids[1]]


@pytest.mark.parametrize(
    "error",
    [
        MqttPublishFailed("no PUBACK before the connection dropped"),
        MqttNotConnected("connection lost"),
    ],
    ids=["publish-failed", "not-connected"],
)
async def test_failed_publish_keeps_the_event_and_retries_it_without_waiting(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock, error: MqttError
) -> None:
    events = await stored(store, [make_visit()])
    uplink = make_uplink(publisher, store, clock)
    publisher.fail_next(error)

    assert await uplink.drain_once() == 0

    assert publisher.published == []
    assert await store.count() == 1
    assert await uplink.drain_once() == 1  # same clock: eligible at once, not after a timeout
    assert publisher.published == expected(*events)


async def test_one_failed_publish_does_not_resend_the_others(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    first, second = await stored(store, [make_visit(), make_visit()])
    uplink = make_uplink(publisher, store, clock)
    publisher.fail_next(MqttPublishFailed("refused"))

    assert await uplink.drain_once() == 1
    assert await uplink.drain_once() == 1

    assert sent_ids(publisher) == [second.event_id, first.event_id]
    assert uplink.sent == 2


async def test_run_sends_new_events_when_woken(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    uplink = make_uplink(publisher, store, clock)
    task = asyncio.create_task(uplink.run(), name="uplink-under-test")
    try:
        events = await stored(store, [make_visit(), make_offer_trigger()])
        uplink.wake()
        async with asyncio.timeout(GUARD_S):
            await publisher.wait_for(2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert publisher.published == expected(*events)


async def test_run_sends_the_next_event_as_soon_as_an_ack_frees_the_window(
    publisher: FakePublisher, store: SqliteGatewayStore, clock: FakeClock
) -> None:
    first, second = await stored(store, [make_visit(), make_visit()])
    uplink = make_uplink(publisher, store, clock, window=1)
    task = asyncio.create_task(uplink.run(), name="uplink-under-test")
    try:
        uplink.wake()
        async with asyncio.timeout(GUARD_S):
            await publisher.wait_for(1)
        await uplink.handle_ack(wire.Ack((first.event_id,)))
        # GUARD_S is below the drain's own timer (ack_timeout_s / 2): only the ack can wake it.
        async with asyncio.timeout(GUARD_S):
            await publisher.wait_for(2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert sent_ids(publisher) == [first.event_id, second.event_id]
