"""Simulated shopper apps: each subscribes to its shopper's offer topic and shows each offer once;
apps whose member stated preferences send them to the enrollment API and judge every offer by them."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edge.adapters.mqtt import Message, MqttError, MqttSettings, PahoMqtt
from edge.core import wire
from edge.demo.api_client import EnrollmentApiClient
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
