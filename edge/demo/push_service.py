"""The retailer's push service, as the demo runs it: the endpoint the bridge's webhook channel POSTs
offers to (docs/webhook.md), on 127.0.0.1.

It does what the guide asks of a receiver: verifies each request's signature on the raw body
before reading it (cloud_bridge.core.webhook.verify_signature, the shared secret from a 0600 file),
keeps the Idempotency-Key of every offer it took and answers 200 to a repeat without pushing again,
and hands each new offer to the shopper's phone (`on_push`, the simulated app) as APNs would.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from cloud_bridge.core.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    verify_signature,
)
from edge.core import wire
from edge.errors import EdgeError
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)

PATH = "/threshold/offers"
#: The largest body taken (an offer is at most wire.MAX_PAYLOAD_BYTES plus the envelope).
MAX_BODY_BYTES = 2 * wire.MAX_PAYLOAD_BYTES

#: `on_push(shopper_token, offer)`: the push notification reaches the shopper's phone.
PushHandler = Callable[[str, wire.ShopperOffer], None]


class PushServiceError(EdgeError):
    """The demo's push service could not start (no port, no secret file)."""


def write_secret_file(path: Path) -> bytes:
    """A new shared secret (64 hex digits) in a file only its owner may read, as
    `umask 077; openssl rand -hex 32 > FILE` makes it; return its bytes."""
    secret = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)  # an older file's mode is kept by O_CREAT: set it
    return secret.encode("ascii")


def offer_from_body(body: bytes, where: str) -> tuple[str, wire.ShopperOffer]:
    """The shopper's delivery token and the offer of a webhook body; wire.WireError if malformed."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise wire.WireError(f"{where}: the body is not JSON") from None
    if not isinstance(payload, dict):
        raise wire.WireError(f"{where}: the body is not a JSON object")
    if payload.get("v") != 1 or payload.get("type") != "offer":
        raise wire.WireError(f"{where}: not a version 1 offer body")
    shopper = payload.pop("shopper", None)
    payload.pop("channel", None)
    if not isinstance(shopper, str):
        raise wire.WireError(f"{where}: field $.shopper: missing")
    payload["v"] = wire.WIRE_VERSION
    offer = wire.decode_as(json.dumps(payload).encode(), wire.ShopperOffer, where)
    return shopper, offer


class DemoPushService:
    """An aiohttp server on 127.0.0.1 (a free port) taking the bridge's signed offers."""

    def __init__(
        self,
        secret: bytes,
        on_push: PushHandler | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        #: Where pushes go (the phones); None: nowhere yet (the request is refused with 503).
        self.on_push = on_push
        self._wall = wall_clock
        self._errors = OnceLogger(_LOGGER)
        self.port = 0
        self.requests = 0
        #: Offers pushed to phones, by offer id (each at most once: the idempotency key).
        self.pushed: Counter[str] = Counter()
        self.repeats = 0  # requests for an offer already pushed (answered 200, not pushed again)
        self.refused: Counter[str] = Counter()  # 'signature', 'body', 'key'
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    async def start(self) -> DemoPushService:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
        if not self.port:
            await self.close()
            raise PushServiceError("the demo's push service found no port on 127.0.0.1")
        return self

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        try:
            verify_signature(
                self._secret, body, request.headers.get(SIGNATURE_HEADER), self._wall()
            )
        except SignatureError as exc:
            self.refused["signature"] += 1
            self._errors.warning("signature", "push service refused a request: %s", exc.reason)
            return web.json_response({"error": "bad_signature", "message": exc.reason}, status=401)
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if self.on_push is None:
            return web.json_response({"error": "not_ready"}, status=503)  # retried by the bridge
        if key in self.pushed:
            self.repeats += 1  # an ambiguous attempt sent again: the phone has it already
            return web.json_response({"ok": True, "repeat": True}, status=200)
        try:
            shopper, offer = offer_from_body(body, f"POST {PATH}")
        except wire.WireError as exc:
            self.refused["body"] += 1
            self._errors.warning("body", "push service refused a body: %s", exc.reason)
            return web.json_response({"error": "bad_body", "message": exc.reason}, status=400)
        if offer.offer_id != key:
            self.refused["key"] += 1
            reason: dict[str, Any] = {"error": "bad_key", "message": "Idempotency-Key != offer_id"}
            return web.json_response(reason, status=400)
        self.pushed[key] += 1
        self.on_push(shopper, offer)
        return web.json_response({"ok": True}, status=202)
