"""The webhook channel end to end on real parts: real loyalty records (SQLite), the real aiohttp
client, and a real local push service (tests/fakes/push_service.py) that goes down, hangs, answers
500, 429 and garbage, then recovers. Each offer reaches it exactly once per Idempotency-Key."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_deliveries import SqliteDeliveries
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.adapters.webhook_aiohttp import (
    AiohttpWebhookSender,
    WebhookError,
    load_webhook_secret,
)
from cloud_bridge.app import Bridge
from cloud_bridge.config import BridgeConfig, BridgeSection, WebhookSection
from cloud_bridge.core.webhook import Verdict, request_headers
from cloud_bridge.seed import seed_records
from cloud_bridge.services.webhook import WebhookDispatcher, WebhookSender
from edge.core import bundle, wire
from edge.services.tasks import cancel_and_wait
from tests.factories import TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.publisher import FakePublisher
from tests.fakes.push_service import FakePushService, Mode
from tests.integration.rig import eventually

CHAIN = "acme"
STORE = "store-001"
GW = wire.GatewayAddress(CHAIN, STORE, "door-1")
SECRET = b"0123456789abcdef0123456789abcdef"
MEMBERS = 12


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.sqlite", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    try:
        await seed_records(
            opened, members=MEMBERS, seed=5, stores=(STORE,), joined_at=time.time() - 86400
        )
        # Every member's visit is offered the bakery campaign, valid for an hour.
        await opened.connection.execute(
            "UPDATE campaigns SET tiers = 'bronze,silver,gold', validity_s = 3600 "
            "WHERE id = 'welcome-bakery'"
        )
        await opened.connection.commit()
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def push() -> AsyncIterator[FakePushService]:
    service = await FakePushService(SECRET).start()
    try:
        yield service
    finally:
        await service.close()


async def record_offers(
    records: SqliteLoyaltyRecords, members: range, now_s: float, platform: str = "ios"
) -> list[str]:
    """One visit (heard from `platform`) and its bakery offer per member; the offer ids."""
    events: list[wire.Event] = []
    offer_ids = []
    for n in members:
        member, device = f"m-{n:05d}", f"d-{n:05d}"
        visit = make_visit(member=member, device=device, ts=now_s, platform=platform)
        offer = make_offer_trigger(
            visit_id=visit.event_id,
            member=member,
            device=device,
            campaign="welcome-bakery",
            ts=now_s,
            detected_at=now_s,
        )
        events += [visit, offer]
        offer_ids.append(offer.event_id)
    outcome = await records.record(await as_sent(records, GW, *events), now_s)
    assert len(outcome.deliveries) == len(offer_ids), outcome.refused_offers
    return offer_ids


def dispatcher(
    records: SqliteLoyaltyRecords,
    url: str,
    *,
    timeout_s: float = 2.0,  # an "ok" answer under a loaded CI machine is never a timeout
    max_backoff_s: float = 0.2,
    concurrency: int = 4,
    wall_clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> WebhookDispatcher:
    section = WebhookSection(
        url=url,
        secret_file="-",
        timeout_s=timeout_s,
        rate_per_s=1000.0,
        concurrency=concurrency,
        max_backoff_s=max_backoff_s,
    )

    def sender() -> AbstractAsyncContextManager[WebhookSender]:
        return AiohttpWebhookSender(url, timeout_s, concurrency, max_backoff_s, wall_clock)

    return WebhookDispatcher(
        section,
        SqliteDeliveries(records),
        sender,
        SECRET,
        wall_clock,
        monotonic,
        rng=random.Random(11),
    )


async def states(records: SqliteLoyaltyRecords) -> dict[str, tuple[str, int, str | None]]:
    async with records.connection.execute(
        "SELECT event_id, delivery, attempts, last_error FROM offers WHERE channel = 'webhook'"
    ) as cursor:
        return {r[0]: (r[1], r[2], r[3]) async for r in cursor}


async def all_in(records: SqliteLoyaltyRecords, state: str) -> bool:
    found = await states(records)
    return bool(found) and all(s == state for s, _, _ in found.values())


async def every_tried(records: SqliteLoyaltyRecords) -> bool:
    return all(attempts >= 1 for _, attempts, _ in (await states(records)).values())


async def errors_seen(records: SqliteLoyaltyRecords, marker: str) -> bool:
    return any(e and marker in e for _, _, e in (await states(records)).values())


async def test_an_endpoint_down_slow_failing_and_talking_garbage_gets_every_offer_exactly_once(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    records.channel_for = lambda platform: "webhook"
    offer_ids = await record_offers(records, range(MEMBERS), time.time())
    await push.go_down()
    channel = dispatcher(records, push.url)
    task = asyncio.create_task(channel.run(), name="test-webhook")
    try:
        # Down: nothing listens; every attempt is refused and rescheduled.
        await eventually(lambda: every_tried(records), "every offer refused at least once")
        assert await errors_seen(records, "connection refused")
        # Slow: the push service takes requests but answers after the client gave up.
        push.mode = "slow"
        await push.serve_http()
        await eventually(lambda: push.count("slow") >= 6, "slow requests")
        await eventually(lambda: errors_seen(records, "timeout"), "timed-out attempts")
        push.mode = "500"
        await eventually(lambda: errors_seen(records, "HTTP 500: upstream FCM"), "500s")
        push.mode = "429"
        await eventually(lambda: errors_seen(records, "HTTP 429"), "429s")
        await push.serve_garbage()
        await eventually(lambda: errors_seen(records, "not an HTTP answer"), "garbage answers")
        assert await all_in(records, "pending"), "nothing is given up while offers are valid"
        # It recovers: every offer arrives.
        push.mode = "ok"
        await push.serve_http()
        await eventually(lambda: all_in(records, "sent"), "every offer sent")
    finally:
        await cancel_and_wait([task])
    assert set(push.accepted) == set(offer_ids), "none lost"
    slow_keys = {key for mode, key in push.requests if mode == "slow"}
    # A duplicate only follows an ambiguous failure (taken, then no answer in time), same key.
    assert set(push.duplicates) <= slow_keys
    assert all(push.accepted[k]["offer_id"] == k for k in offer_ids)
    assert push.bad_signatures == []
    assert channel.dead == 0 and channel.sent == MEMBERS
    final = await states(records)
    assert all(attempts >= 2 for _, attempts, _ in final.values())  # each failed at least once
    body = push.accepted[offer_ids[0]]
    assert body["v"] == 1 and body["channel"] == "webhook" and body["title"]
    assert body["shopper"] and body["store"] == STORE


async def test_a_bridge_stopped_mid_attempt_resumes_and_the_receiver_deduplicates(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    records.channel_for = lambda platform: "webhook"
    offer_ids = await record_offers(records, range(MEMBERS), time.time())
    push.mode = "slow"
    first = dispatcher(records, push.url, timeout_s=60.0, concurrency=4)
    task = asyncio.create_task(first.run(), name="test-webhook-1")
    try:
        await eventually(lambda: push.hanging == 4, "four attempts in flight")
        await asyncio.sleep(0.3)  # a few more rounds of the loop: no fifth attempt starts
        assert push.most_hanging == 4, "at most `concurrency` attempts in flight"
    finally:
        await cancel_and_wait([task])  # the bridge dies with four offers in flight
    assert await all_in(records, "pending"), "an attempt cut short leaves its offer pending"
    in_flight = {key for _, key in push.requests}
    assert len(in_flight) == 4
    push.mode = "ok"
    second = dispatcher(records, push.url)
    task = asyncio.create_task(second.run(), name="test-webhook-2")
    try:
        await eventually(lambda: all_in(records, "sent"), "every offer sent after the restart")
    finally:
        await cancel_and_wait([task])
    assert set(push.accepted) == set(offer_ids)
    # The four taken before the stop came again, under the same key, and were recognised.
    assert set(push.duplicates) == in_flight
    assert all(count == 1 for count in push.duplicates.values())


async def test_offers_past_their_validity_are_dead_with_the_reason(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    records.channel_for = lambda platform: "webhook"
    offset = [0.0]
    offer_ids = await record_offers(records, range(3), time.time())
    push.mode = "500"
    channel = dispatcher(records, push.url, wall_clock=lambda: time.time() + offset[0])
    task = asyncio.create_task(channel.run(), name="test-webhook")
    try:
        await eventually(lambda: push.count("500") >= 6, "failing attempts")
        offset[0] = 3600.0  # the hour of validity is over
        await eventually(lambda: all_in(records, "dead"), "the offers given up")
    finally:
        await cancel_and_wait([task])
    for state, attempts, error in (await states(records)).values():
        assert state == "dead" and attempts >= 1
        assert error is not None
        assert error.startswith(f"validity ran out after {attempts} attempt")
        assert error.endswith("last error: HTTP 500: upstream FCM unavailable")
    assert push.accepted == {}
    assert channel.dead == len(offer_ids) and channel.dead_total == len(offer_ids)
    assert channel.counters()["offers_dead"] == len(offer_ids)


async def test_a_refusal_for_good_is_dead_at_once_with_the_status_and_body(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    records.channel_for = lambda platform: "webhook"
    await record_offers(records, range(2), time.time())
    push.mode = "400"
    channel = dispatcher(records, push.url)
    task = asyncio.create_task(channel.run(), name="test-webhook")
    try:
        await eventually(lambda: all_in(records, "dead"), "the refused offers dead")
        await asyncio.sleep(0.3)  # more rounds: a dead offer is not tried again
    finally:
        await cancel_and_wait([task])
    assert push.count("400") == 2
    for _, attempts, error in (await states(records)).values():
        assert attempts == 1
        assert error == 'permanent: HTTP 400: {"error": "unknown shopper token"}'
    assert channel.last_error == 'permanent: HTTP 400: {"error": "unknown shopper token"}'


async def test_the_channel_follows_the_visits_platform_and_each_loop_takes_only_its_own(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    records.channel_for = lambda platform: "webhook" if platform == "ios" else "mqtt"
    now_s = time.time()
    by_webhook = await record_offers(records, range(0, 3), now_s, platform="ios")
    by_mqtt = await record_offers(records, range(3, 6), now_s, platform="android")
    due_mqtt = await records.due_deliveries(now_s, 30.0, 100)
    assert {d.offer_id for d in due_mqtt} == set(by_mqtt)
    channel = dispatcher(records, push.url)
    task = asyncio.create_task(channel.run(), name="test-webhook")
    try:
        await eventually(lambda: set(push.accepted) == set(by_webhook), "the iPhones' offers")
    finally:
        await cancel_and_wait([task])
    async with records.connection.execute(
        "SELECT event_id, channel, delivery FROM offers ORDER BY event_id"
    ) as cursor:
        rows = {r[0]: (r[1], r[2]) async for r in cursor}
    assert {i for i, (c, _) in rows.items() if c == "webhook"} == set(by_webhook)
    assert all(rows[i] == ("mqtt", "pending") for i in by_mqtt)  # untouched by the webhook loop
    # A webhook offer the push service took is not resent over MQTT, however long it waits.
    later = await records.due_deliveries(now_s + 1000, 30.0, 100)
    assert {d.offer_id for d in later} == set(by_mqtt)


def test_the_secret_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "webhook-secret"
    with pytest.raises(WebhookError, match="openssl rand -hex 32"):
        load_webhook_secret(path)
    path.write_text(SECRET.decode() + "\n")
    path.chmod(0o644)
    with pytest.raises(WebhookError, match="others may read it"):
        load_webhook_secret(path)
    path.chmod(0o600)
    assert load_webhook_secret(path) == SECRET  # without the newline
    path.write_text("short\n")
    with pytest.raises(WebhookError, match="is 5 bytes; use at least 16"):
        load_webhook_secret(path)


async def test_a_2xx_whose_body_stalls_is_delivered_not_posted_again(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    # The push service answers 202 and its headers, then never sends the body it announced: the
    # status is its answer (it has the offer). Waiting for the body timed the attempt out and
    # POSTed the offer again, for ever, while the shopper already had it.
    records.channel_for = lambda platform: "webhook"
    offer_ids = await record_offers(records, range(3), time.time())
    push.mode = "stalled_body"
    channel = dispatcher(records, push.url, timeout_s=2.0)
    task = asyncio.create_task(channel.run(), name="test-webhook")
    try:
        await eventually(lambda: all_in(records, "sent"), "the offers taken with a 202")
    finally:
        await cancel_and_wait([task])
    assert set(push.accepted) == set(offer_ids)
    assert sorted(key for _, key in push.requests) == sorted(offer_ids), "one POST each"
    assert channel.sent == 3 and channel.retries == 0


async def test_webhook_offers_left_when_the_channel_is_turned_off_are_dead_at_their_expiry(
    records: SqliteLoyaltyRecords,
) -> None:
    # Offers recorded for the webhook, then the chain goes back to MQTT (config changed, bridge
    # restarted): no webhook loop runs, and the MQTT loop neither sends nor expired them. They
    # stayed pending for ever, never counted, never in the dead letters IT reads.
    records.channel_for = lambda platform: "webhook"
    offset = [0.0]
    offer_ids = await record_offers(records, range(2), time.time())
    signer = bundle.generate_signing_key(random.Random("bridge").randbytes)
    bridge = Bridge(
        BridgeConfig(BridgeSection(chain=CHAIN)),
        records,
        records,
        signer,
        wall_clock=lambda: time.time() + offset[0],
    )
    assert bridge.webhook is None
    bridge.mqtt = FakePublisher()  # type: ignore[assignment]
    task = asyncio.create_task(bridge._deliver_loop(), name="test-deliver")
    try:
        offset[0] = 3600.0  # the hour of validity is over
        await eventually(lambda: all_in(records, "dead"), "the stranded offers dead letters")
    finally:
        await cancel_and_wait([task])
    for state, _, error in (await states(records)).values():
        assert state == "dead" and error is not None and "validity ran out" in error
    assert bridge.expired == len(offer_ids)
    assert bridge.mqtt.messages == []  # type: ignore[attr-defined]


async def test_a_damaged_queue_row_is_a_dead_letter_not_a_stopped_channel(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    # A row edited by hand or damaged on disk: no payload, a payload stored as text, no shopper
    # token. Reading it raised TypeError out of the queue, which stopped the bridge, and again
    # at every restart: no webhook offer went out any more.
    records.channel_for = lambda platform: "webhook"
    offer_ids = await record_offers(records, range(4), time.time())
    damaged = {
        offer_ids[0]: "delivery_payload = NULL",
        offer_ids[1]: "delivery_payload = 'not bytes'",
        offer_ids[2]: "shopper_token = NULL",
    }
    for offer_id, change in damaged.items():
        await records.connection.execute(
            f"UPDATE offers SET {change} WHERE event_id = ?", (offer_id,)
        )
    await records.connection.commit()
    channel = dispatcher(records, push.url)
    task = asyncio.create_task(channel.run(), name="test-webhook")
    try:
        await eventually(lambda: every_tried(records), "every row taken")
        assert not task.done(), "the channel keeps running"
    finally:
        await cancel_and_wait([task])
    found = await states(records)
    for offer_id in damaged:
        state, _, error = found[offer_id]
        assert state == "dead" and error is not None
        assert error.startswith("permanent: the stored offer is damaged")
    assert found[offer_ids[3]][0] == "sent"
    assert set(push.accepted) == {offer_ids[3]}


async def test_a_damaged_mqtt_offer_row_is_left_to_expire_not_raised_out_of_the_queue(
    records: SqliteLoyaltyRecords,
) -> None:
    # The MQTT loop's queue: a pending row without a payload (or with text for one, or without
    # its topic) raised TypeError out of due_deliveries, stopping the bridge at every restart.
    offer_ids = await record_offers(records, range(4), time.time(), platform="android")
    for offer_id, change in zip(
        offer_ids,
        ("delivery_payload = NULL", "delivery_payload = 'text'", "delivery_topic = NULL"),
        strict=False,
    ):
        await records.connection.execute(
            f"UPDATE offers SET {change} WHERE event_id = ?", (offer_id,)
        )
    await records.connection.commit()
    due = await records.due_deliveries(time.time(), 30.0, 100)
    assert [d.offer_id for d in due] == [offer_ids[3]]
    assert await records.expire_offers(time.time() + 3600) == 4  # the sweep still ends them


async def test_a_queue_row_with_text_for_its_expiry_or_attempts_is_a_dead_letter(
    records: SqliteLoyaltyRecords, push: FakePushService
) -> None:
    # Text for expires_at (or attempts) raised ValueError out of due_webhooks: the channel
    # stopped, and again at every restart, since text sorts after every number in SQLite and so
    # the row was always due and never expired.
    records.channel_for = lambda platform: "webhook"
    offer_ids = await record_offers(records, range(3), time.time())
    damaged = {offer_ids[0]: "expires_at = 'tomorrow'", offer_ids[1]: "attempts = 'two'"}
    for offer_id, change in damaged.items():
        await records.connection.execute(
            f"UPDATE offers SET {change} WHERE event_id = ?", (offer_id,)
        )
    await records.connection.commit()
    channel = dispatcher(records, push.url)
    task = asyncio.create_task(channel.run(), name="test-webhook")

    async def none_pending() -> bool:
        return all(state != "pending" for state, _, _ in (await states(records)).values())

    try:
        await eventually(none_pending, "every row ended")
        assert not task.done(), "the channel keeps running"
    finally:
        await cancel_and_wait([task])
    found = await states(records)
    assert found[offer_ids[0]] == (
        "dead",
        1,
        "permanent: the stored offer is damaged: expires_at is 'tomorrow', not a time",
    )
    assert found[offer_ids[1]] == (
        "dead",
        1,
        "permanent: the stored offer is damaged: attempts is 'two', not a count",
    )
    assert found[offer_ids[2]][0] == "sent"
    assert set(push.accepted) == {offer_ids[2]}
    assert channel.dead == 2


async def test_a_proxy_in_the_environment_does_not_reroute_signed_offers(
    push: FakePushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp's trust_env read HTTP(S)_PROXY: a proxy set on the host for something else took
    # every signed offer and delivery token (here: nothing listens there, so none arrived).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = probe.getsockname()[1]  # closed on leaving: connection refused
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{nowhere}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    body = b'{"offer_id":"ev-proxy"}'
    async with AiohttpWebhookSender(push.url, 2.0, 1, 1.0) as sender:
        result = await sender.post(body, request_headers(SECRET, body, "ev-proxy", time.time()))
    assert result.verdict is Verdict.DELIVERED, result.error
    assert set(push.accepted) == {"ev-proxy"}


@pytest.mark.parametrize("status", ["429", "503"])
async def test_a_slow_down_from_the_push_service_pauses_the_whole_channel_not_mqtt(
    records: SqliteLoyaltyRecords, push: FakePushService, status: Mode
) -> None:
    # A 429 (or 503 with Retry-After) only delayed the offer that got it: every other offer was
    # POSTed at once and got the same answer, while the push service asked the bridge to wait.
    records.channel_for = lambda platform: "webhook" if platform == "ios" else "mqtt"
    offset = [0.0]  # both clocks: the Retry-After's minute passes when the test says
    by_webhook = await record_offers(records, range(0, 6), time.time(), platform="ios")
    by_mqtt = await record_offers(records, range(6, 9), time.time(), platform="android")
    push.mode = status
    push.retry_after = "60"
    channel = dispatcher(
        records,
        push.url,
        max_backoff_s=600.0,
        concurrency=1,
        wall_clock=lambda: time.time() + offset[0],
        monotonic=lambda: time.monotonic() + offset[0],
    )
    signer = bundle.generate_signing_key(random.Random("bridge").randbytes)
    bridge = Bridge(BridgeConfig(BridgeSection(chain=CHAIN)), records, records, signer)
    bridge.mqtt = FakePublisher()  # type: ignore[assignment]
    tasks = [
        asyncio.create_task(channel.run(), name="test-webhook"),
        asyncio.create_task(bridge._deliver_loop(), name="test-deliver"),
    ]
    try:
        await eventually(lambda: push.count(status) >= 1, "the first slow-down answer")
        # The MQTT channel is not held up by the webhook's pause.
        await eventually(lambda: len(bridge.mqtt.messages) == len(by_mqtt), "the MQTT offers")  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)  # the loop keeps looking (POLL_S): nothing else starts
        assert push.count(status) == 1, "no other attempt while the push service asks to wait"
        counters = channel.counters()
        assert counters["webhook_pauses"] == 1
        assert time.time() + 55 < counters["webhook_paused_until"] <= time.time() + 61
        found = await states(records)
        tried = [i for i in by_webhook if found[i][1] == 1]
        assert len(tried) == 1 and found[tried[0]][0] == "pending"
        # The others keep their place: nothing recorded against them, nothing lost.
        assert all(found[i] == ("pending", 0, None) for i in by_webhook if i not in tried)
        push.mode = "ok"
        offset[0] = 61.0  # the minute is over: the channel resumes
        await eventually(lambda: all_in(records, "sent"), "every webhook offer sent")
    finally:
        await cancel_and_wait(tasks)
    assert set(push.accepted) == set(by_webhook)
    assert push.duplicates == Counter()
    assert channel.counters()["webhook_paused_until"] == 0
    assert channel.counters()["webhook_pauses"] == 1
