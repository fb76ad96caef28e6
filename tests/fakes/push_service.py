"""A retailer's push service on 127.0.0.1, for the webhook channel's tests: a real aiohttp.web server
that verifies each request's signature and keeps the first request of each Idempotency-Key (as
docs/webhook.md asks of a receiver), and that fails on demand the ways a real one does.

Modes, switched while the bridge keeps sending to the same port:
- "ok": 202 for a new key, 200 for a key it already has (counted as a duplicate);
- "slow": takes the request (a new key is kept), then answers only after the client gave up;
- "stalled_body": takes the request, sends its 202 status and headers, then never the body;
- "500", "429" and "503" (both with Retry-After), "400": answers that status without taking the
  request;
- `go_down()`: nothing listens on the port (connection refused);
- `serve_garbage()`: a raw asyncio server answers every connection with bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from typing import Any, Literal

from aiohttp import web

from cloud_bridge.core.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    verify_signature,
)

Mode = Literal["ok", "slow", "stalled_body", "500", "429", "503", "400"]
GARBAGE = b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n\x00\x01\x02\xff not http at all\r\n\r\n"


class FakePushService:
    def __init__(self, secret: bytes, *, answer_delay_s: float = 0.0) -> None:
        self.secret = secret
        self.mode: Mode = "ok"
        self.retry_after = "1"
        self.answer_delay_s = answer_delay_s  # every "ok" answer waits this long (the bench)
        self.port = 0
        #: The first body of each key taken (what the push service would push to the phone).
        self.accepted: dict[str, dict[str, Any]] = {}
        self.duplicates: Counter[str] = Counter()
        #: Every request that reached the handler: (mode, key).
        self.requests: list[tuple[str, str]] = []
        self.bad_signatures: list[str] = []
        self.garbage_connections = 0
        self.hanging = 0  # slow requests waiting now
        self.most_hanging = 0  # the most at once
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._garbage: asyncio.Server | None = None
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/threshold/offers"

    def count(self, mode: str) -> int:
        return sum(1 for m, _ in self.requests if m == mode)

    async def start(self) -> FakePushService:
        if not self.port:
            with socket.socket() as probe:  # a free port, kept for every mode
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        await self.serve_http()
        return self

    async def serve_http(self) -> None:
        await self._stop_listening()
        app = web.Application()
        app.router.add_post("/threshold/offers", self._handle)
        # A stop drops requests in progress at once (a crash, not a graceful drain).
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.05)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def go_down(self) -> None:
        await self._stop_listening()

    async def serve_garbage(self) -> None:
        await self._stop_listening()
        self._garbage = await asyncio.start_server(
            self._garbage_answer, "127.0.0.1", self.port, reuse_address=True
        )

    async def close(self) -> None:
        self._release.set()
        await self._stop_listening()

    async def _stop_listening(self) -> None:
        """Stop listening and drop every open connection (as a server that goes away does)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None
        if self._garbage is not None:
            self._garbage.close()
            await self._garbage.wait_closed()
            self._garbage = None

    async def _garbage_answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.garbage_connections += 1
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(2):
                await reader.readuntil(b"\r\n\r\n")  # the request's head: it was sent
            writer.write(GARBAGE)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        mode = self.mode
        self.requests.append((mode, key))
        try:
            verify_signature(self.secret, body, request.headers.get(SIGNATURE_HEADER), time.time())
        except SignatureError as exc:
            self.bad_signatures.append(exc.reason)
            return web.json_response({"error": exc.reason}, status=401)
        if mode == "500":
            return web.Response(status=500, text="upstream FCM unavailable")
        if mode == "429":
            return web.Response(
                status=429, text="slow down", headers={"Retry-After": self.retry_after}
            )
        if mode == "503":
            return web.Response(
                status=503, text="over capacity", headers={"Retry-After": self.retry_after}
            )
        if mode == "400":
            return web.json_response({"error": "unknown shopper token"}, status=400)
        new = self._take(key, body)
        if mode == "stalled_body":
            response = web.StreamResponse(status=202 if new else 200)
            response.content_length = 64
            await response.prepare(request)
            await self._release.wait()  # the promised 64 bytes never come
            return response
        if mode == "slow":
            self.hanging += 1
            self.most_hanging = max(self.most_hanging, self.hanging)
            try:
                await self._release.wait()  # answers only once the test ends: the client gave up
            finally:
                self.hanging -= 1
        elif self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        return web.json_response({"ok": True}, status=202 if new else 200)

    def _take(self, key: str, body: bytes) -> bool:
        if key in self.accepted:
            self.duplicates[key] += 1
            return False
        payload = json.loads(body)
        assert payload["offer_id"] == key, "the Idempotency-Key is the offer id"
        self.accepted[key] = payload
        return True
