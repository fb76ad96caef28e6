"""Simulated shopper apps: each subscribes to its shopper's offer topic and shows each offer once."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.adapters.mqtt import Message, MqttError, MqttSettings, PahoMqtt
from edge.core import wire
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedOffer:
    shopper: str
    offer: wire.ShopperOffer
    latency_ms: float  # the gateway deciding (its wall clock) → this app receiving it


class ShopperApps:
    """Stands in for every shopper's app: one MQTT connection per shopper, each with its own
    certificate, subscribed to its own offer topic only (the broker's ACL allows nothing else).

    Like the real app, each confirms every offer with a receipt (so the bridge stops resending)
    and shows an offer seen twice (QoS 1 is at least once, and the bridge resends unconfirmed
    offers) once, by offer id; `duplicates` counts the repeats.
    """

    def __init__(
        self,
        settings_for: Callable[[str], MqttSettings],
        chain: str,
        shoppers: Sequence[str],
        on_offer: Callable[[ReceivedOffer], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._chain = chain
        self._on_offer = on_offer
        self._wall = wall_clock
        self._errors = OnceLogger(_LOGGER)
        self.received: dict[str, ReceivedOffer] = {}
        self.duplicates = 0
        self.rejected = 0  # messages that broke the wire contract, dropped
        self.receipts_sent = 0
        self._receipts: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._settings_for = settings_for
        self._tasks: asyncio.TaskGroup | None = None
        self.apps: dict[str, PahoMqtt] = {}
        for shopper in shoppers:
            self._new_app(shopper)

    def _new_app(self, shopper: str) -> PahoMqtt:
        app = PahoMqtt(
            self._settings_for(shopper),
            subscriptions=[(wire.shopper_offer_topic(self._chain, shopper), 1)],
            on_message=functools.partial(self._on_message, shopper),
        )
        self.apps[shopper] = app
        return app

    def add(self, shopper: str) -> PahoMqtt:
        """Another shopper's app (a member who enrolled meanwhile); started if run() is running."""
        app = self.apps.get(shopper) or self._new_app(shopper)
        if self._tasks is not None:
            self._tasks.create_task(app.run(), name=f"shopper-app-{shopper}")
        return app

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Return once every app is connected and subscribed."""
        async with asyncio.timeout(timeout_s):
            for app in self.apps.values():
                await app.wait_connected()

    def _on_message(self, shopper: str, message: Message) -> None:
        now = self._wall()
        where = f"topic {message.topic}"
        try:
            offer = wire.decode_as(message.payload, wire.ShopperOffer, where)
        except wire.WireError as exc:
            self.rejected += 1
            self._errors.warning(message.topic, "shopper app ignored: %s", exc.reason)
            return
        self._receipts.put_nowait((shopper, offer.offer_id))
        if offer.offer_id in self.received:
            self.duplicates += 1
            return
        received = ReceivedOffer(shopper, offer, (now - offer.detected_at) * 1000.0)
        self.received[offer.offer_id] = received
        if self._on_offer is not None:
            self._on_offer(received)

    async def run(self) -> None:
        """Keep every app connected and confirm every offer received."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                for shopper, app in self.apps.items():
                    tg.create_task(app.run(), name=f"shopper-app-{shopper}")
                tg.create_task(self._send_receipts(), name="shopper-apps-receipts")
        finally:
            self._tasks = None

    async def _send_receipts(self) -> None:
        while True:
            shopper, offer_id = await self._receipts.get()
            receipt = wire.OfferReceipt((offer_id,))
            try:
                await self.apps[shopper].publish(
                    wire.shopper_receipt_topic(self._chain, shopper), wire.encode(receipt), qos=1
                )
                self.receipts_sent += 1
            except MqttError as exc:
                # The bridge resends an unconfirmed offer; its duplicate brings another receipt.
                _LOGGER.debug("receipt for %s not sent: %s", offer_id, exc)
