"""The webhook delivery loop: due offers from the records to the retailer's push service.

Separate from the MQTT delivery loop (a slow or dead endpoint never holds up an MQTT offer, nor the
recording), at most `concurrency` attempts in flight, started no faster than `rate_per_s`, and none
while the push service's last 429 (or 503 with Retry-After) asks the channel to wait (ChannelPause). Every
attempt's result is written before the next of the same offer can start, and nothing lives only in
memory: after a restart the pending offers are simply due again (an attempt cut short is repeated
under the same Idempotency-Key; the receiver keeps the first).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from cloud_bridge.config import WebhookSection
from cloud_bridge.core.webhook import (
    BodyError,
    ChannelPause,
    Next,
    Result,
    RetryPolicy,
    Step,
    TokenBucket,
    Verdict,
    body_from_stored,
    next_step,
    request_headers,
)
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)
#: With nothing due, look again this often (a retry's time comes; an offer recorded elsewhere).
POLL_S = 0.5
#: How often the dead letters are counted again (a `deliveries retry` by IT changes them).
DEAD_RECOUNT_S = 10.0


class WebhookJobLike(Protocol):
    @property
    def offer_id(self) -> str: ...
    @property
    def shopper(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def attempts(self) -> int: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def damage(self) -> str | None: ...


class WebhookRecords(Protocol):
    """The queue (cloud_bridge/adapters/sqlite_deliveries.py)."""

    async def due_webhooks(
        self, now_s: float, limit: int, skip: Collection[str]
    ) -> Sequence[WebhookJobLike]: ...

    async def finish_attempt(self, offer_id: str, step: Step, now_s: float) -> bool: ...

    async def expire_webhooks(self, now_s: float) -> int: ...

    async def dead_count(self) -> int: ...


class WebhookSender(Protocol):
    """POSTs one attempt (cloud_bridge/adapters/webhook_aiohttp.py); never raises."""

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Result: ...


class WebhookDispatcher:
    """Runs the webhook channel until cancelled; its counters go into the bridge's status."""

    def __init__(
        self,
        section: WebhookSection,
        records: WebhookRecords,
        sender: Callable[[], AbstractAsyncContextManager[WebhookSender]],
        secret: bytes,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.section = section
        self.records = records
        self._sender = sender
        self._secret = secret
        self._wall = wall_clock
        self._mono = monotonic
        self._rng = rng or random.Random()
        self.policy = RetryPolicy(max_backoff_s=section.max_backoff_s)
        self._bucket = TokenBucket(section.rate_per_s, monotonic())
        self.pause = ChannelPause(self.policy)  # on the monotonic clock
        self._slots = asyncio.Semaphore(section.concurrency)
        self._wakeup = asyncio.Event()
        self.in_flight: set[str] = set()
        self._errors = OnceLogger(_LOGGER)
        self.attempts = 0  # attempts made
        self.sent = 0  # offers the push service took (2xx)
        self.retries = 0  # attempts that failed and were rescheduled
        self.dead = 0  # offers this instance gave up on
        self.dead_total = 0  # dead letters in the records, as last counted
        self.last_error: str | None = None
        self.rounds = 0  # passes over the queue (progress, for tests and the watchdog)

    def wake(self) -> None:
        """New webhook offers were recorded: look now."""
        self._wakeup.set()

    def counters(self) -> dict[str, int]:
        """The channel's figures for the bridge's status."""
        return {
            "webhook_attempts": self.attempts,
            "webhook_sent": self.sent,
            "webhook_retries": self.retries,
            "webhook_dead": self.dead,
            "webhook_in_flight": len(self.in_flight),
            # The push service's "slow down" (429, 503 with Retry-After) pauses the channel.
            "webhook_pauses": self.pause.pauses,
            "webhook_paused_until": self.paused_until(),
            "offers_dead": self.dead_total,
        }

    def paused_until(self) -> int:
        """When the channel's pause ends (Unix s, rounded up); 0 when it is not paused."""
        remaining_s = self.pause.remaining_s(self._mono())
        return math.ceil(self._wall() + remaining_s) if remaining_s > 0 else 0

    async def run(self) -> None:
        """Until cancelled; a records error ends it (the bridge stops: systemd restarts it)."""
        try:
            await self._run()
        except ExceptionGroup as group:  # an attempt's records error: the first says why
            raise group.exceptions[0] from group

    async def _run(self) -> None:
        async with self._sender() as sender, asyncio.TaskGroup() as attempts:
            recounted_at = -DEAD_RECOUNT_S
            while True:
                if self._mono() - recounted_at >= DEAD_RECOUNT_S:
                    self.dead_total = await self.records.dead_count()
                    recounted_at = self._mono()
                expired = await self.records.expire_webhooks(self._wall())
                if expired:
                    self.dead += expired
                    self.dead_total += expired
                    _LOGGER.warning(
                        "%d webhook offer(s) dead: their validity ran out before the push "
                        "service took them; `cloud-bridge deliveries DATABASE --dead` lists them",
                        expired,
                    )
                paused_s = self.pause.remaining_s(self._mono())
                if paused_s > 0:  # nothing starts; the expiry sweep goes on meanwhile
                    await asyncio.sleep(min(paused_s, POLL_S))
                    continue
                limit = self.section.concurrency * 4
                due = await self.records.due_webhooks(self._wall(), limit, set(self.in_flight))
                self.rounds += 1
                for job in due:
                    await self._slots.acquire()
                    try:
                        await self._wait_turn()
                    except BaseException:
                        self._slots.release()
                        raise
                    self.in_flight.add(job.offer_id)
                    attempts.create_task(self._attempt(sender, job), name=f"webhook-{job.offer_id}")
                if len(due) < limit:
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout(POLL_S):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(0)

    async def _wait_turn(self) -> None:
        """Until a new attempt may start: no pause, and a token of the rate limit."""
        while True:
            paused_s = self.pause.remaining_s(self._mono())
            if paused_s > 0:
                # Looked at again every POLL_S: a later answer may have lengthened it.
                await asyncio.sleep(min(paused_s, POLL_S))
                continue
            if self.pause.resumed(self._mono()):
                self._bucket.restart(self._mono())  # back at the rate, not a burst
            await self._rate_limit()
            if self.pause.remaining_s(self._mono()) == 0.0:
                return  # else a pause began while it waited for its token

    async def _rate_limit(self) -> None:
        wait_s = self._bucket.reserve(self._mono())
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _attempt(self, sender: WebhookSender, job: WebhookJobLike) -> None:
        try:
            if self._wall() >= job.expires_at:
                return  # its validity ended while it waited for a slot: the sweep records it dead
            try:
                if job.damage is not None:
                    raise BodyError(job.damage)
                body = body_from_stored(job.payload, job.shopper)
            except BodyError as exc:
                result = Result(Verdict.PERMANENT, f"permanent: the stored offer is damaged: {exc}")
            else:
                headers = request_headers(self._secret, body, job.offer_id, self._wall())
                self.attempts += 1
                result = await sender.post(body, headers)
                if self.pause.note(result, self._mono()):
                    self._errors.warning(
                        "pause",
                        "webhook channel paused %.1f s: the push service answered %s",
                        self.pause.remaining_s(self._mono()),
                        result.error,
                    )
            now_s = self._wall()
            step = next_step(
                result, job.attempts, now_s, job.expires_at, self.policy, self._rng.random()
            )
            await self.records.finish_attempt(job.offer_id, step, now_s)
            self._count(job.offer_id, step)
        finally:
            self.in_flight.discard(job.offer_id)
            self._slots.release()

    def _count(self, offer_id: str, step: Step) -> None:
        if step.next is Next.SENT:
            self.sent += 1
            return
        self.last_error = step.error
        if step.next is Next.RETRY:
            self.retries += 1
            self._errors.warning(
                "retry",
                "webhook offer %s: %s; retrying (later failures at DEBUG)",
                offer_id,
                step.error,
            )
            return
        self.dead += 1
        self.dead_total += 1
        _LOGGER.warning(
            "webhook offer %s dead after %d attempt(s): %s; `cloud-bridge deliveries retry "
            "DATABASE %s` retries it while it is valid",
            offer_id,
            step.attempts,
            step.error,
            offer_id,
        )
