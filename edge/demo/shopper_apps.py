"""Simulated shopper apps: each subscribes to its shopper's offer topic and shows each offer once;
apps whose member stated preferences send them to the enrollment API and judge every offer by them.

Offers come over MQTT, or (iPhones, issue 11) as a push notification from the retailer's push
service that the bridge's webhook reached (`push`). Each app confirms every offer and then says
what the shopper did with it (`receipt_fate`: opened, dismissed, or only received): over MQTT on its
receipt topic, or for a pushed offer through the retailer's backend to the bridge's API
(`POST /v1/offers/{offer_id}/receipt`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edge.adapters.mqtt import Message, MqttError, MqttSettings, PahoMqtt
from edge.core import wire
from edge.demo.api_client import ApiClientError, EnrollmentApiClient
from edge.demo.preferences import StatedPreferences
from edge.errors import EdgeError
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)


#: Preferences sent to the enrollment API at once (its connection cap is 64).
STATE_CONCURRENCY = 8


class PreferencesNotStated(EdgeError):
    """The enrollment API did not take a member's preferences (the demo cannot measure them)."""


@dataclass(frozen=True, slots=True)
class ReceivedOffer:
    shopper: str
    offer: wire.ShopperOffer
    latency_ms: float  # the gateway deciding (its wall clock) → this app receiving it
    channel: str = "mqtt"  # how it came: "mqtt", or "webhook" (a push notification)


def receipt_fate(offer_id: str) -> wire.ReceiptStatus:
    """What the shopper does with an offer, the same every run: about 45 % open it, 20 % swipe it
    away, the rest leave it unread ("received" only)."""
    point = hashlib.sha256(b"demo-receipt:" + offer_id.encode()).digest()[0]
    return "opened" if point < 115 else "dismissed" if point < 166 else "received"


class ShopperApps:
    """Stands in for every shopper's app: one MQTT connection per shopper, each with its own
    certificate, subscribed to its own offer topic only (the broker's ACL allows nothing else).

    Like the real app, each confirms every offer with a receipt (so the bridge stops resending)
    and shows an offer seen twice (QoS 1 is at least once, and the bridge resends unconfirmed
    offers) once, by offer id; `duplicates` counts the repeats.

    `preferences` (by shopper) are what each member told their app: `state_preferences` sends them
    to the enrollment API, and the apps count the offers that break them.
    """

    def __init__(
        self,
        settings_for: Callable[[str], MqttSettings],
        chain: str,
        shoppers: Sequence[str],
        on_offer: Callable[[ReceivedOffer], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        preferences: Mapping[str, StatedPreferences] | None = None,
    ) -> None:
        self._chain = chain
        self.preferences = dict(preferences or {})
        self.preferences_stated = 0
        self._on_offer = on_offer
        self._wall = wall_clock
        self._errors = OnceLogger(_LOGGER)
        self.received: dict[str, ReceivedOffer] = {}
        self.duplicates = 0
        self.rejected = 0  # messages that broke the wire contract, dropped
        self.receipts_sent = 0
        #: What the shoppers did, as their apps reported it (both channels): opened, dismissed.
        self.reported: dict[str, int] = {"opened": 0, "dismissed": 0}
        self.push_duplicates = 0  # pushed offers a phone got twice (the push service dedupes)
        self.receipt_errors = 0  # API receipts the bridge did not take
        #: Where pushed offers' receipts go (the retailer's backend relays them to the bridge).
        self.receipts_api: EnrollmentApiClient | None = None
        self._receipts: asyncio.Queue[tuple[str, str, wire.ReceiptStatus]] = asyncio.Queue()
        self._api_receipts: asyncio.Queue[tuple[str, wire.ReceiptStatus]] = asyncio.Queue()
        self._unsent = 0  # receipts queued or being sent, on either path
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

    async def state_preferences(self, api: EnrollmentApiClient) -> int:
        """Each app whose member stated preferences sends them, as the app backend does; return
        how many. Raise PreferencesNotStated on any refusal: the demo measures nothing without them."""
        slots = asyncio.Semaphore(STATE_CONCURRENCY)

        async def state(prefs: StatedPreferences) -> None:
            async with slots:
                reply = await api.put_preferences(prefs.member, prefs.to_json())
            where = f"PUT /v1/members/{prefs.member}/preferences"
            if reply.status == 404 and reply.body.get("error") == "not_found":
                raise PreferencesNotStated(
                    f"{where}: the bridge's enrollment API has no preferences endpoint (404 "
                    "not_found): this bridge predates member preferences"
                )
            if reply.status != 200:
                raise PreferencesNotStated(
                    f"{where}: refused with {reply.status} {reply.body.get('error')}: "
                    f"{reply.body.get('message')}"
                )
            self.preferences_stated += 1

        tasks = [
            asyncio.create_task(state(prefs), name=f"state-preferences-{prefs.member}")
            for prefs in self.preferences.values()
        ]
        try:
            for done in asyncio.as_completed(tasks):
                await done  # the first refusal stops the rest
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.preferences_stated

    def offers_against_preferences(self) -> int:
        """Offers received that the shopper's own stated preferences rule out."""
        return sum(
            1
            for r in self.received.values()
            if (prefs := self.preferences.get(r.shopper)) is not None and prefs.rules_out(r.offer)
        )

    def offers_over_frequency_cap(self) -> int:
        """Offers received beyond the shopper's own stated offers a day or a week."""
        by_shopper: dict[str, list[wire.ShopperOffer]] = defaultdict(list)
        for r in self.received.values():
            by_shopper[r.shopper].append(r.offer)
        return sum(
            prefs.over_cap(offers)
            for shopper, offers in by_shopper.items()
            if (prefs := self.preferences.get(shopper)) is not None
        )

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
        if offer.offer_id in self.received:
            self.duplicates += 1
            self._queue_receipt((shopper, offer.offer_id, "received"))
            return
        for status in self._take(ReceivedOffer(shopper, offer, (now - offer.detected_at) * 1000.0)):
            self._queue_receipt((shopper, offer.offer_id, status))

    def push(self, shopper: str, offer: wire.ShopperOffer) -> None:
        """A push notification from the retailer's push service (the webhook channel): shown once,
        its receipts relayed through the API."""
        now = self._wall()
        if offer.offer_id in self.received:
            self.push_duplicates += 1
            return
        received = ReceivedOffer(shopper, offer, (now - offer.detected_at) * 1000.0, "webhook")
        for status in self._take(received):
            self._queue_api_receipt(offer.offer_id, status)

    def _take(self, received: ReceivedOffer) -> list[wire.ReceiptStatus]:
        """Show a new offer; the receipts its app sends for it, in order."""
        self.received[received.offer.offer_id] = received
        if self._on_offer is not None:
            self._on_offer(received)
        fate = receipt_fate(received.offer.offer_id)
        if fate == "received":
            return ["received"]
        self.reported[fate] += 1
        return ["received", fate]

    async def run(self) -> None:
        """Keep every app connected and confirm every offer received."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                for shopper, app in self.apps.items():
                    tg.create_task(app.run(), name=f"shopper-app-{shopper}")
                tg.create_task(self._send_receipts(), name="shopper-apps-receipts")
                tg.create_task(self._relay_receipts(), name="shopper-apps-api-receipts")
        finally:
            self._tasks = None

    async def _send_receipts(self) -> None:
        while True:
            shopper, offer_id, status = await self._receipts.get()
            try:
                await self._publish_receipt(shopper, offer_id, status)
            finally:
                self._unsent -= 1

    async def _publish_receipt(
        self, shopper: str, offer_id: str, status: wire.ReceiptStatus
    ) -> None:
        receipt = wire.OfferReceipt((offer_id,), status)
        try:
            await self.apps[shopper].publish(
                wire.shopper_receipt_topic(self._chain, shopper), wire.encode(receipt), qos=1
            )
            self.receipts_sent += 1
        except MqttError as exc:
            # The bridge resends an unconfirmed offer; its duplicate brings another receipt.
            _LOGGER.debug("receipt for %s not sent: %s", offer_id, exc)

    def receipts_pending(self) -> bool:
        """Whether receipts wait to be sent, or are being sent (on either path)."""
        return self._unsent > 0

    def _queue_receipt(self, item: tuple[str, str, wire.ReceiptStatus]) -> None:
        self._unsent += 1
        self._receipts.put_nowait(item)

    def _queue_api_receipt(self, offer_id: str, status: wire.ReceiptStatus) -> None:
        self._unsent += 1
        self._api_receipts.put_nowait((offer_id, status))

    async def _relay_receipts(self) -> None:
        """The retailer's backend relaying pushed offers' receipts to the bridge's API."""
        while True:
            offer_id, status = await self._api_receipts.get()
            try:
                await self._relay_receipt(offer_id, status)
            finally:
                self._unsent -= 1

    async def _relay_receipt(self, offer_id: str, status: wire.ReceiptStatus) -> None:
        if self.receipts_api is None:
            self.receipt_errors += 1
            _LOGGER.warning("receipt for %s not relayed: no API to relay it to", offer_id)
            return
        try:
            reply = await self.receipts_api.request(
                "POST", f"/v1/offers/{offer_id}/receipt", {"status": status}
            )
        except ApiClientError as exc:
            self.receipt_errors += 1
            _LOGGER.warning("receipt for %s not relayed: %s", offer_id, exc)
            return
        if reply.status != 200:
            self.receipt_errors += 1
            self._errors.warning(
                f"receipt-{reply.status}",
                "the bridge refused the receipt for %s: %s %s",
                offer_id,
                reply.status,
                reply.body.get("message"),
            )
        else:
            self.receipts_sent += 1
