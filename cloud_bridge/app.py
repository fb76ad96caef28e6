"""Composition root of the bridge: records, MQTT, and the loops that join them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cloud_bridge.adapters.http_api import EnrollmentApiServer, TokenFile
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.config import BridgeConfig
from cloud_bridge.core.records import Delivery, IncomingEvent, LoyaltyRecords, RecordOutcome
from edge.adapters.mqtt import Message, MqttError, MqttSettings, PahoMqtt
from edge.core import wire
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)
INBOX_MAX = 50_000
REDELIVER_EVERY_S = 1.0

OutcomeListener = Callable[[RecordOutcome], None]
DeliveryListener = Callable[[Sequence[Delivery]], None]


class Bridge:
    """Takes gateway events, records them once, acknowledges them, delivers offers, syncs stores."""

    def __init__(
        self,
        config: BridgeConfig,
        records: LoyaltyRecords,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.records = records
        self._wall = wall_clock
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(INBOX_MAX)
        self._deliver_wakeup = asyncio.Event()
        self._delivering: set[str] = set()
        self._published: dict[tuple[str, str], int] = {}  # (store, kind) → version published
        self._payload_errors = OnceLogger(_LOGGER)
        self.outcome_listeners: list[OutcomeListener] = []
        self.delivery_listeners: list[DeliveryListener] = []
        self.recorded = 0
        self.duplicates = 0
        self.rejected = 0
        self.delivered = 0
        self.received = 0
        self.api_server: EnrollmentApiServer | None = None
        m, b = config.mqtt, config.bridge
        self.mqtt = PahoMqtt(
            MqttSettings(
                host=m.host,
                port=m.port,
                client_id=f"threshold-bridge-{b.chain}-{b.id}",
                username=m.username or None,
                password=m.password or None,
                keepalive_s=m.keepalive_s,
            ),
            # A shared subscription: several bridge instances split the gateways' events.
            subscriptions=[
                (f"$share/{b.share_group}/{wire.EVENT_FILTER}", 1),
                (f"$share/{b.share_group}/{wire.RECEIPT_FILTER}", 1),
            ],
            on_message=self._on_message,
            on_connect=self._on_connect,
        )

    @classmethod
    async def open(cls, config: BridgeConfig) -> Bridge:
        records = await SqliteLoyaltyRecords.open(Path(config.bridge.database), config.bridge.chain)
        return cls(config, records)

    async def close(self) -> None:
        await self.records.close()

    async def run(self) -> None:
        """Run every loop until cancelled; with [api] enabled, the enrollment API too."""
        api = self.config.api
        if not api.enabled:
            await self._run_loops()
            return
        tokens = TokenFile(Path(api.tokens_file))
        tokens.load()  # a missing or unsafe tokens file stops start-up with what to do
        # Its own connection: enrollment transactions must not interleave with recording's.
        enrollment = await SqliteEnrollment.open(
            Path(self.config.bridge.database), self.config.bridge.chain
        )
        try:
            server = EnrollmentApiServer(enrollment, tokens, api.host, api.port)
            await server.start()
            self.api_server = server
            try:
                await self._run_loops()
            finally:
                await server.close()
        finally:
            await enrollment.close()

    async def _run_loops(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mqtt.run(), name="bridge-mqtt")
            tg.create_task(self._process_inbox(), name="bridge-record")
            tg.create_task(self._deliver_loop(), name="bridge-deliver")
            tg.create_task(self._sync_loop(), name="bridge-sync")

    def _on_message(self, message: Message) -> None:
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            # Not acknowledged, so the gateway resends it: nothing is lost.
            self._payload_errors.warning(
                "inbox-full", "inbox full: %s left for a resend", message.topic
            )

    async def _on_connect(self) -> None:
        self._published.clear()  # the broker may have lost retained messages: publish everything
        await self.publish_sync()
        self._deliver_wakeup.set()

    async def publish_sync(self) -> None:
        """Publish, retained, every store's roster and campaigns that changed since last published."""
        chain = self.config.bridge.chain
        for store in await self.records.stores():
            roster = await self.records.roster(store)
            if self._published.get((store, "roster")) != roster.version:
                await self.mqtt.publish(
                    wire.roster_topic(chain, store), wire.encode(roster), qos=1, retain=True
                )
                self._published[(store, "roster")] = roster.version
                _LOGGER.info(
                    "store %s: roster v%d published (%d devices)",
                    store,
                    roster.version,
                    len(roster.devices),
                )
            campaigns = await self.records.campaigns(store)
            if self._published.get((store, "campaigns")) != campaigns.version:
                await self.mqtt.publish(
                    wire.campaigns_topic(chain, store), wire.encode(campaigns), qos=1, retain=True
                )
                self._published[(store, "campaigns")] = campaigns.version
                _LOGGER.info("store %s: campaigns v%d published", store, campaigns.version)

    async def _sync_loop(self) -> None:
        """Revocations, withdrawn consent and campaign edits reach gateways at the next sync."""
        while True:
            await asyncio.sleep(self.config.bridge.sync_interval_s)
            if not self.mqtt.connected:
                continue
            try:
                await self.publish_sync()
            except MqttError as exc:  # the reconnect publishes everything again
                _LOGGER.debug("sync not published: %s", exc)

    def _decode(self, message: Message) -> IncomingEvent | None:
        where = f"topic {message.topic}"
        try:
            topic = wire.parse_event_topic(message.topic)
            if topic.gateway.chain != self.config.bridge.chain:
                raise wire.WireError(f"{where}: chain {topic.gateway.chain!r} is not ours")
            event: wire.Event
            if topic.kind == "visit":
                event = wire.decode_as(message.payload, wire.Visit, where)
            else:
                event = wire.decode_as(message.payload, wire.OfferTrigger, where)
        except wire.WireError as exc:
            self.rejected += 1
            self._payload_errors.warning(message.topic, "ignored: %s", exc.reason)
            return None
        return IncomingEvent(topic.gateway, event)

    async def _handle_receipt(self, message: Message) -> None:
        where = f"topic {message.topic}"
        try:
            topic = wire.parse_receipt_topic(message.topic)
            receipt = wire.decode_as(message.payload, wire.OfferReceipt, where)
        except wire.WireError as exc:
            self.rejected += 1
            self._payload_errors.warning(message.topic, "ignored: %s", exc.reason)
            return
        self.received += await self.records.mark_received(
            topic.shopper, list(receipt.offer_ids), self._wall()
        )

    async def _process_inbox(self) -> None:
        batch_max = self.config.bridge.batch
        while True:
            messages = [await self._inbox.get()]
            while len(messages) < batch_max and not self._inbox.empty():
                messages.append(self._inbox.get_nowait())
            events = []
            for message in messages:
                if message.topic.endswith("/receipt"):
                    await self._handle_receipt(message)
                else:
                    events.append(message)
            incoming = [e for e in map(self._decode, events) if e is not None]
            if not incoming:
                continue
            outcome = await self.records.record(incoming, self._wall())
            self.recorded += len(outcome.new_visits) + len(outcome.new_offers)
            self.duplicates += outcome.duplicates
            for listener in self.outcome_listeners:
                listener(outcome)
            await self._send_acks(outcome.acks)
            if outcome.deliveries:
                await self._deliver(outcome.deliveries)

    async def _send_acks(self, acks: dict[wire.GatewayAddress, list[str]]) -> None:
        for gateway, event_ids in acks.items():
            try:
                await self.mqtt.publish(
                    wire.ack_topic(gateway), wire.encode(wire.Ack(tuple(event_ids))), qos=1
                )
            except MqttError as exc:
                # The gateway resends unacknowledged events; the duplicate gets acknowledged then.
                _LOGGER.debug("ack to %s not sent: %s", gateway.prefix, exc)

    async def _deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Hand offers to the broker (QoS 1); those without a PUBACK stay due for a retry."""
        deliveries = [d for d in deliveries if d.offer_id not in self._delivering]
        self._delivering.update(d.offer_id for d in deliveries)
        try:
            results = await asyncio.gather(
                *(self.mqtt.publish(d.topic, d.payload, qos=1) for d in deliveries),
                return_exceptions=True,
            )
            done = [d for d, r in zip(deliveries, results, strict=True) if r is None]
            if done:
                await self.records.mark_sent([d.offer_id for d in done], self._wall())
                self.delivered += len(done)
                for listener in self.delivery_listeners:
                    listener(done)
        finally:
            self._delivering.difference_update(d.offer_id for d in deliveries)

    async def _deliver_loop(self) -> None:
        """Send offers not yet handed to the broker, and resend those the app has not confirmed.

        A broker's PUBACK is not the phone's: a broker killed right after it may lose the message.
        """
        while True:
            try:
                async with asyncio.timeout(REDELIVER_EVERY_S):
                    await self._deliver_wakeup.wait()
            except TimeoutError:
                pass
            self._deliver_wakeup.clear()
            if not self.mqtt.connected:
                continue
            b = self.config.bridge
            due = await self.records.due_deliveries(
                self._wall(), b.offer_resend_s, b.offer_max_attempts, 500
            )
            if due:
                await self._deliver(due)
