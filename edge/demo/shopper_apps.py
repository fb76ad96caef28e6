"""Simulated shopper apps: subscribe to shoppers' offer topics and show each offer once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
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
    """Stands in for every shopper's app on one MQTT connection (a wildcard on the offer topics).

    A real app subscribes to its own topic only. Like the real app, it confirms each offer with a
    receipt (so the bridge stops resending) and shows an offer seen twice (QoS 1 is at least once, and
    the bridge resends unconfirmed offers) once, by offer id; `duplicates` counts the repeats.
    """

    def __init__(
        self,
        settings: MqttSettings,
        chain: str,
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
        self.mqtt = PahoMqtt(
            settings,
            subscriptions=[(wire.shopper_offer_topic(chain, "+"), 1)],
            on_message=self._on_message,
        )

    def _on_message(self, message: Message) -> None:
        now = self._wall()
        parts = message.topic.split("/")
        where = f"topic {message.topic}"
        try:
            shopper = wire.check_id(parts[-2] if len(parts) >= 2 else "", f"{where}: shopper")
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
        """Stay connected and confirm every offer received."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mqtt.run(), name="shopper-apps-mqtt")
            tg.create_task(self._send_receipts(), name="shopper-apps-receipts")

    async def _send_receipts(self) -> None:
        while True:
            shopper, offer_id = await self._receipts.get()
            receipt = wire.OfferReceipt((offer_id,))
            try:
                await self.mqtt.publish(
                    wire.shopper_receipt_topic(self._chain, shopper), wire.encode(receipt), qos=1
                )
                self.receipts_sent += 1
            except MqttError as exc:
                # The bridge resends an unconfirmed offer; its duplicate brings another receipt.
                _LOGGER.debug("receipt for %s not sent: %s", offer_id, exc)
