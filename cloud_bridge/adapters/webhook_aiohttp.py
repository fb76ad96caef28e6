"""POSTing offers to the retailer's push service with aiohttp: one ClientSession (a connection pool
of at most `concurrency` connections, a total timeout per attempt), every library or OS error mapped
to the core's outcomes (cloud_bridge/core/webhook.py). `post` never raises but for cancellation.

aiohttp rather than another hand-written HTTP/1.1 client (the API server is one, tests/fakes/http.py
another): the bridge talks to a server it does not control, over TLS, with keep-alive pooling, chunked
or compressed answers; those are aiohttp's to get right, and it is already what the project's tests
serve from. It reads no proxy settings from the environment (trust_env=False): the bridge talks to
the push service directly.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp

from cloud_bridge.core.webhook import (
    Failure,
    Result,
    classify_failure,
    classify_response,
)
from cloud_bridge.errors import BridgeError
from edge.adapters.keystore import read_secret_file
from edge.errors import EdgeError

_LOGGER = logging.getLogger(__name__)
#: The most of an answer's body read (for last_error); the rest is not waited for.
MAX_ANSWER_BYTES = 64 * 1024
#: A secret shorter than this is refused: HMAC-SHA256 wants 32 bytes of entropy.
MIN_SECRET_BYTES = 16
_REFUSED = frozenset({errno.ECONNREFUSED})
_RESET = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class WebhookError(BridgeError):
    """The webhook channel cannot start: its secret file is missing or unsafe."""


def load_webhook_secret(path: Path) -> bytes:
    """The HMAC key: the file's text without surrounding whitespace; refused if group or others
    may read it, or if it is too short to be a key."""
    try:
        data = read_secret_file(path, "webhook secret").strip()
    except FileNotFoundError:
        raise WebhookError(
            f"{path}: no webhook secret there ([webhook] secret_file): create one with "
            f"`umask 077; openssl rand -hex 32 > {path}` and give the same to the push service"
        ) from None
    except EdgeError as exc:
        raise WebhookError(str(exc)) from None
    if len(data) < MIN_SECRET_BYTES:
        raise WebhookError(
            f"{path}: the webhook secret is {len(data)} bytes; use at least {MIN_SECRET_BYTES} "
            "(`openssl rand -hex 32`)"
        )
    return data


def _failure_of(exc: BaseException, timeout_s: float) -> Result:
    """The core's outcome for an attempt that raised `exc` (no HTTP answer was read)."""
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError and asyncio's timeouts
        return classify_failure(Failure.TIMEOUT, str(exc) or f"no answer within {timeout_s:g} s")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return classify_failure(Failure.RESET, "the server closed the connection")
    if isinstance(exc, aiohttp.ClientConnectorError):
        failure = Failure.REFUSED if exc.os_error.errno in _REFUSED else Failure.NETWORK
        return classify_failure(failure, str(exc.os_error.strerror or exc))
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        # An answer aiohttp cannot parse as HTTP: garbage, a wrong protocol.
        return classify_failure(Failure.NOT_HTTP, getattr(exc, "message", "") or str(exc))
    if isinstance(exc, OSError):  # ClientOSError too
        failure = Failure.RESET if exc.errno in _RESET else Failure.NETWORK
        return classify_failure(failure, exc.strerror or str(exc))
    return classify_failure(Failure.NETWORK, f"{type(exc).__name__}: {exc}")


class AiohttpWebhookSender:
    """One push service's endpoint, POSTed to through a pooled aiohttp session."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        concurrency: int,
        max_backoff_s: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._concurrency = concurrency
        self._max_backoff_s = max_backoff_s
        self._wall = wall_clock
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpWebhookSender:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=self._concurrency, ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": "threshold-bridge"},
            raise_for_status=False,
            # Not from the environment: an HTTP(S)_PROXY set for something else on the host
            # (a package manager, a shell) would silently reroute every signed offer, with the
            # shoppers' delivery tokens, through a proxy nobody chose for them. docs/webhook.md.
            trust_env=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Result:
        """POST one attempt; what it came to. Raises nothing but CancelledError."""
        session = self._session
        if session is None:
            raise RuntimeError("AiohttpWebhookSender used outside `async with`")
        try:
            async with session.post(
                self.url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                try:
                    answer = await response.content.read(MAX_ANSWER_BYTES)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    # The status line is the answer (a 2xx: the push service has the offer);
                    # a body that stalls or breaks off is only what last_error would quote.
                    # Retrying a 2xx would POST again what was taken.
                    answer = b""
                    response.close()
                else:
                    if not response.content.at_eof():
                        response.close()  # not waited for: the connection is not reused
                return classify_response(
                    response.status,
                    response.headers.get("Retry-After"),
                    answer,
                    self._wall(),
                    self._max_backoff_s,
                )
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return _failure_of(exc, self._timeout_s)
