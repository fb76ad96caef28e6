"""Webhook throughput: one bridge's webhook channel draining a backlog of offers to a push service.

    python -m benchmarks.webhook_bench [--offers N]

Real parts: the loyalty records on SQLite (the queue, each attempt's result written), the aiohttp
client and a local aiohttp receiver (tests/fakes/push_service.py) that verifies every signature
and answers each request after 50 ms, as a push service calling FCM/APNs might. The clock runs
from the loop's start until every offer is recorded sent. The channel runs at its default
concurrency (16 attempts in flight: at most 320 offers/s against 50 ms answers); the rate limit is
lifted so that the figure shows what one bridge can do (the default `rate_per_s = 50` caps it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from cloud_bridge.adapters.sqlite_deliveries import SqliteDeliveries
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.adapters.webhook_aiohttp import AiohttpWebhookSender
from cloud_bridge.config import WebhookSection
from cloud_bridge.seed import seed_records
from cloud_bridge.services.webhook import WebhookDispatcher, WebhookSender
from edge.core import wire
from tests.factories import TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.push_service import FakePushService

CHAIN = "bench-chain"
STORE = "store-001"
SECRET = b"bench-secret-0123456789abcdef0123"
ANSWER_S = 0.05
WEBHOOK_TARGETS = {
    "webhook_offers_per_s": (
        "report (one bridge, concurrency 16, receiver answering in 50 ms: at most 320/s)"
    )
}


async def _record_backlog(records: SqliteLoyaltyRecords, offers: int, now_s: float) -> None:
    gateway = wire.GatewayAddress(CHAIN, STORE, "door-1")
    await records.connection.execute(
        "UPDATE campaigns SET tiers = 'bronze,silver,gold', validity_s = 86400 "
        "WHERE id = 'welcome-bakery'"
    )
    await records.connection.commit()
    records.channel_for = lambda platform: "webhook"
    for start in range(0, offers, 200):
        events: list[wire.Event] = []
        for n in range(start, min(offers, start + 200)):
            member, device = f"m-{n:05d}", f"d-{n:05d}"
            visit = make_visit(member=member, device=device, ts=now_s, platform="ios")
            events += [
                visit,
                make_offer_trigger(
                    visit_id=visit.event_id, member=member, device=device, campaign="welcome-bakery"
                ),
            ]
        await records.record(await as_sent(records, gateway, *events), now_s)


async def webhook_results(offers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="threshold-webhook-bench-") as tmp:
        records = await SqliteLoyaltyRecords.open(
            Path(tmp) / "loyalty.sqlite", CHAIN, create=True, data_key=TEST_DATA_KEY
        )
        push = await FakePushService(SECRET, answer_delay_s=ANSWER_S).start()
        try:
            now_s = time.time()
            await seed_records(
                records, members=offers, seed=9, stores=(STORE,), joined_at=now_s - 86400
            )
            await _record_backlog(records, offers, now_s)
            section = WebhookSection(url=push.url, rate_per_s=100_000.0)

            def sender() -> AbstractAsyncContextManager[WebhookSender]:
                return AiohttpWebhookSender(
                    push.url, section.timeout_s, section.concurrency, section.max_backoff_s
                )

            channel = WebhookDispatcher(
                section, SqliteDeliveries(records), sender, SECRET, rng=random.Random(1)
            )
            started = time.perf_counter()
            task = asyncio.create_task(channel.run(), name="bench-webhook")
            try:
                while channel.sent < offers:
                    if task.done():
                        task.result()  # a failure: raise it
                    await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - started
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert len(push.accepted) == offers and not push.bad_signatures
        finally:
            await push.close()
            await records.close()
    return {
        "webhook_offers_per_s": round(offers / elapsed, 1),
        "webhook_offers": offers,
        "webhook_retries": channel.retries,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offers", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(webhook_results(args.offers)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
