"""The demo's push service, a real aiohttp server on 127.0.0.1, sent real requests signed as the
bridge signs them (cloud_bridge.core.webhook): it pushes each offer to the phone once, answers a
repeat of a key without pushing again, and refuses a forged or stale signature or a body that is
not an offer."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import aiohttp

from cloud_bridge.adapters.webhook_aiohttp import load_webhook_secret
from cloud_bridge.core.webhook import request_body, request_headers
from edge.core import wire
from edge.demo.push_service import DemoPushService, write_secret_file

OFFER = wire.ShopperOffer(
    "ev-o000001",
    "gift-with-purchase",
    "A gift with your purchase",
    "Spend £30 today and choose a gift at the tills.",
    "store-001",
    1_790_000_010.0,
    1_790_000_009.5,
    promotion_type="free_gift",
    code="GIFT-0001",
)
SHOPPER = "c3b1f0e2a9d84c77e1a0b2c4"


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as answer,
    ):
        await answer.read()
        return answer.status


async def test_each_offer_is_pushed_once_and_a_forgery_never(tmp_path: Path) -> None:
    secret = write_secret_file(tmp_path / "webhook-secret")
    # The file the bridge reads: owner-only, and the same key.
    assert stat.S_IMODE((tmp_path / "webhook-secret").stat().st_mode) == 0o600
    assert load_webhook_secret(tmp_path / "webhook-secret") == secret
    phone: list[tuple[str, wire.ShopperOffer]] = []
    service = await DemoPushService(secret, lambda s, o: phone.append((s, o))).start()
    try:
        assert service.port and service.url.startswith("http://127.0.0.1:")
        body = request_body(OFFER, SHOPPER)
        headers = request_headers(secret, body, OFFER.offer_id, time.time())
        assert await post(service.url, body, headers) == 202
        # The bridge's retry of an ambiguous attempt: answered, not pushed again.
        assert await post(service.url, body, headers) == 200
        assert phone == [(SHOPPER, OFFER)]
        assert service.pushed == {OFFER.offer_id: 1} and service.repeats == 1

        other = wire.ShopperOffer(**{**OFFER.to_json(), "offer_id": "ev-o000002"})
        other_body = request_body(other, SHOPPER)
        forged = request_headers(
            b"not-the-shared-secret-at-all", other_body, "ev-o000002", time.time()
        )
        stale = request_headers(secret, other_body, "ev-o000002", time.time() - 3600)
        assert await post(service.url, other_body, forged) == 401
        assert await post(service.url, other_body, stale) == 401
        # Signed, but the key is not the offer's id, or the body is not an offer.
        mismatched = request_headers(secret, other_body, "ev-o000003", time.time())
        assert await post(service.url, other_body, mismatched) == 400
        junk = json.dumps({"v": 1, "type": "offer", "shopper": SHOPPER}).encode()
        assert (
            await post(service.url, junk, request_headers(secret, junk, "ev-o4", time.time()))
            == 400
        )
        assert phone == [(SHOPPER, OFFER)]
        assert service.refused == {"signature": 2, "key": 1, "body": 1}
    finally:
        await service.close()


async def test_before_the_phones_are_there_an_offer_is_refused_for_a_retry(
    tmp_path: Path,
) -> None:
    secret = write_secret_file(tmp_path / "webhook-secret")
    service = await DemoPushService(secret).start()
    try:
        body = request_body(OFFER, SHOPPER)
        headers = request_headers(secret, body, OFFER.offer_id, time.time())
        assert await post(service.url, body, headers) == 503  # retried by the bridge
        phone: list[str] = []
        service.on_push = lambda s, o: phone.append(o.offer_id)
        assert await post(service.url, body, headers) == 202
        assert phone == [OFFER.offer_id]
    finally:
        await service.close()
