"""Composition root of the bridge: records, MQTT, and the loops that join them.

Rosters go to each registered gateway as a signed bundle sealed to its key, on its own retained topic
(edge/core/bundle.py, docs/mqtt.md). The first bundle to a gateway is a full snapshot; later ones are
deltas from the roster last published to it, kept in memory per store. A gateway's retained status
corrects that guess: if it holds a version other than the one a delta builds on (a restart of the
gateway without its database, a lost message), or rejects a delta with `base_mismatch`, it gets a
full snapshot. After a restart or reconnect of the bridge, a gateway whose retained status shows
the current version (read for `status_grace_s`) gets nothing; every other one a full snapshot.
Bundles name members and devices by each store's pseudonyms (cloud_bridge/core/pseudonyms.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from cloud_bridge import __version__
from cloud_bridge.adapters import http_campaigns, http_redemptions, http_report, openapi
from cloud_bridge.adapters.data_key import DataKey, load_data_key
from cloud_bridge.adapters.http_api import (
    EnrollmentApiServer,
    Route,
    TokenFile,
    server_tls_context,
)
from cloud_bridge.adapters.http_offers import offer_routes
from cloud_bridge.adapters.sqlite_deliveries import SqliteDeliveries
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import RegisteredGateway, SqliteLoyaltyRecords
from cloud_bridge.adapters.webhook_aiohttp import AiohttpWebhookSender, load_webhook_secret
from cloud_bridge.config import BridgeConfig
from cloud_bridge.core import admission
from cloud_bridge.core.enrollment import Enrollment, EnrollmentError
from cloud_bridge.core.pseudonyms import Serials, pseudonymize
from cloud_bridge.core.records import Delivery, IncomingEvent, LoyaltyRecords, RecordOutcome
from cloud_bridge.errors import BridgeError
from cloud_bridge.services.clones import AlertError, CloneAlerts, describe, revoke_for_alert
from cloud_bridge.services.webhook import WebhookDispatcher
from edge.adapters.instance_lock import instance_lock
from edge.adapters.keystore import load_signing_key_file
from edge.adapters.mqtt import (
    INSECURE_PLAINTEXT_WARNING,
    Message,
    MqttError,
    MqttSettings,
    PahoMqtt,
    Will,
)
from edge.adapters.sdnotify import SdNotifier
from edge.adapters.sqlite_watch import DatabaseWatch
from edge.core import bundle, signed, wire
from edge.core.broker_identity import bridge_identity
from edge.core.liveness import Liveness
from edge.logutil import OnceLogger
from edge.process import Failure
from edge.services.dbwatch import watch_database
from edge.services.inbox import FairInbox, InboxLimits, sender_of
from edge.services.supervisor import guard_loop, run_until_stopped
from edge.services.watchdog import Watchdog

_LOGGER = logging.getLogger(__name__)
SOFTWARE = f"threshold-bridge {__version__}"
#: What waits for the record loop: in total, and from any one gateway or shopper app (its topic's
#: prefix), so one client flooding the broker cannot crowd out the others' events or exhaust memory
#: (edge/services/inbox.py). A genuine gateway's batch is far inside its share.
INBOX_LIMITS = InboxLimits(
    messages=50_000,
    bytes=64 * 1024 * 1024,
    sender_messages=5_000,
    sender_bytes=8 * 1024 * 1024,
)
REDELIVER_EVERY_S = 1.0
# Event ids per ack: 500 ids of the longest kind (64 characters) signed and base64'd stay within
# wire.MAX_PAYLOAD_BYTES.
ACK_IDS_MAX = 500
#: A loop busy this long without finishing is stalled, when systemd sets no WatchdogSec=.
STALL_LIMIT_S = 60.0
#: How often stalls are looked for (and logged) when systemd sets no WatchdogSec=.
WATCHDOG_CHECK_S = 10.0
#: At most one resend of a roster or campaigns set to a gateway this often, when its status shows
#: it does not hold what was published (a lost or overwritten retained message, a gateway that lost
#: its database and took an old set replayed to it). A status is the gateway's to choose: a lying
#: one costs one resend per interval, never one per status.
RESYNC_EVERY_S = 60.0
#: How long each step of a shutdown may take: the loops ending, the database closing.
CLOSE_TIMEOUT_S = 5.0

OutcomeListener = Callable[[RecordOutcome], None]
DeliveryListener = Callable[[Sequence[Delivery]], None]
Roster = dict[str, wire.RosterDevice]

#: The topics the bridge reads, after their sender's prefix (edge/services/inbox.py sender_of).
_TOPIC_KINDS = frozenset({"/event/visit", "/event/offer", "/status", "/receipt"})
#: Why a gateway refuses campaigns (edge/services/sync.py): the reasons the bridge tells apart.
_CAMPAIGNS_REJECTIONS = frozenset(
    {
        *(r.value for r in signed.SignedReason),
        "malformed",
        "wrong_store",
        "stale_version",
        "unknown_timezone",
    }
)
# Rejections a full snapshot cures: the gateway was not at the version the delta builds on.
_NEEDS_FULL = frozenset({bundle.RejectReason.BASE_MISMATCH, bundle.RejectReason.DELTA_CONFLICT})


class GatewayRegistry(Protocol):
    """Where the bridge finds the gateways it seals rosters to (SqliteLoyaltyRecords)."""

    async def gateways(self) -> list[RegisteredGateway]: ...


class Registry(GatewayRegistry, CloneAlerts, Protocol):
    """The gateways, and the clone alerts the bridge closes when it revokes a device itself."""


@dataclass(slots=True)
class _Published:
    """The roster bundle last published to one gateway."""

    version: int
    key_id: str  # the gateway key it was sealed to
    base_version: int | None  # None: a full snapshot
    full_needed: bool = False  # the gateway cannot apply it: send a full one
    adopted: bool = False  # not published: the gateway's status said it held this version


def api_routes(
    records: LoyaltyRecords,
    clock: Callable[[], float],
    deliveries: SqliteDeliveries | None = None,
) -> tuple[Route, ...]:
    """The API's endpoints beyond enrollment (campaigns, stores, receipts, reports), then its
    description."""
    extra: list[Route] = []
    if isinstance(records, SqliteLoyaltyRecords):
        extra += http_campaigns.routes(records, clock)
        extra += http_report.routes(records.path, clock)
        extra += http_redemptions.routes(records, clock)
    if deliveries is not None:
        extra += offer_routes(deliveries, clock)
    return (*extra, *openapi.routes())


class Bridge:
    """Takes gateway events, records them once, acknowledges them, delivers offers, syncs stores."""

    def __init__(
        self,
        config: BridgeConfig,
        records: LoyaltyRecords,
        registry: Registry,
        signing_key: Ed25519PrivateKey,
        wall_clock: Callable[[], float] = time.time,
        data_key: DataKey | None = None,
        notifier: SdNotifier | None = None,
        db_watch: DatabaseWatch | None = None,
        stall_limit_s: float | None = None,
        webhook_secret: bytes | None = None,
    ) -> None:
        self.config = config
        self._data_key = data_key  # for the enrollment connection, which seals new identity keys
        self.records = records
        self.notifier = notifier if notifier is not None else SdNotifier()
        #: Which loops make progress (edge/core/liveness.py): the watchdog feeds systemd on it.
        self.liveness = Liveness(
            ("record", "deliver", "sync", "database"),
            time.monotonic(),
            stall_limit_s or self.notifier.watchdog_s or STALL_LIMIT_S,
        )
        #: The database's files, watched while running (None: records that are not SQLite files).
        self.db_watch = db_watch
        #: Why the bridge stops, once a loop failed (the first failure).
        self.failure: Failure | None = None
        self.registry = registry
        self._signing_key = signing_key
        self._wall = wall_clock
        self._sync_wakeup = asyncio.Event()
        self._rosters: dict[wire.GatewayAddress, _Published] = {}
        self._snapshots: dict[str, tuple[int, Roster]] = {}  # store → last roster published
        self._serials = Serials({}, {})
        self._serials_read = False  # in this publish_sync already (one read serves every store)
        # What each online gateway says it holds (roster version, its key id), from its status.
        self._held: dict[wire.GatewayAddress, tuple[int, str]] = {}
        self._sync_not_before = 0.0  # monotonic: no roster publishing before (the status grace)
        self._registered: dict[wire.GatewayAddress, bytes] | None = None  # None: not read yet
        # When each registered gateway was last sent a roster or campaigns set (monotonic s): a
        # status in flight meanwhile shows the old version, and asks for no resend.
        self._last_sent: dict[wire.GatewayAddress, float] = {}
        self.resync_every_s = RESYNC_EVERY_S
        self.resyncs = 0  # resends a gateway's status asked for
        self._inbox = FairInbox(INBOX_LIMITS, self._inbox_full)
        self._deliver_wakeup = asyncio.Event()
        self._delivering: set[str] = set()
        # Campaigns version last published to each gateway (signed for its own topic).
        self._published: dict[wire.GatewayAddress, int] = {}
        self._payload_errors = OnceLogger(_LOGGER)
        self.outcome_listeners: list[OutcomeListener] = []
        self.delivery_listeners: list[DeliveryListener] = []
        self.recorded = 0
        self.duplicates = 0
        self.unknown = 0  # events under pseudonyms their store was never given
        #: Messages dropped because they broke the wire contract (events, receipts, statuses).
        self.rejected = 0
        self.refused_events = 0  # from gateways not registered for the topic's store
        self.quarantined = 0  # times outside the bridge's tolerance
        self.forged = 0  # visit ends that contradict themselves or their visit
        self.expired = 0  # offers not confirmed within their validity
        # Offers the bridge refused to deliver (recorded suppressed), by reason (admission.py).
        self.offers_suppressed: dict[str, int] = {}
        self.offers_holdout = 0  # offers to members in their campaign's holdout (issue 11)
        self.delivered = 0
        self.received = 0
        self.api_server: EnrollmentApiServer | None = None
        self.enrollment: Enrollment | None = None  # while running, with the API or auto-revoke
        self.clone_alerts = 0
        # The webhook channel (docs/webhook.md): offers are given theirs when recorded.
        self.deliveries: SqliteDeliveries | None = None
        self.webhook: WebhookDispatcher | None = None
        if isinstance(records, SqliteLoyaltyRecords):
            records.channel_for = config.delivery.channel_for
            self.deliveries = SqliteDeliveries(records)
            hook = config.webhook
            if config.uses_webhook:
                self.webhook = WebhookDispatcher(
                    hook,
                    self.deliveries,
                    lambda: AiohttpWebhookSender(
                        hook.url, hook.timeout_s, hook.concurrency, hook.max_backoff_s, wall_clock
                    ),
                    webhook_secret
                    if webhook_secret is not None
                    else load_webhook_secret(Path(hook.secret_file)),
                    wall_clock,
                )
        self._started_mono = time.monotonic()
        self._leaving = False  # stopping: no "online" status may follow the "offline" one
        m, b = config.mqtt, config.bridge
        self.status_topic = wire.bridge_status_topic(b.chain, b.id)
        self.mqtt = PahoMqtt(
            MqttSettings(
                host=m.host,
                port=m.port,
                client_id=f"threshold-bridge-{b.chain}-{b.id}",
                username=m.username or None,
                password=m.password or None,
                keepalive_s=m.keepalive_s,
                # Everything the bridge reads is small; the broker drops anything larger for us.
                max_packet_bytes=wire.MAX_BRIDGE_PACKET_BYTES,
                tls=config.mqtt_tls,
                identity=bridge_identity(b.chain, b.id).common_name,
            ),
            # Only its own chain's topics: another chain's events never reach it. A shared
            # subscription: several bridge instances split the gateways' events.
            subscriptions=[
                (f"$share/{b.share_group}/{wire.event_filter(b.chain)}", 1),
                (f"$share/{b.share_group}/{wire.receipt_filter(b.chain)}", 1),
                # Not shared: every instance learns which roster each gateway holds.
                (wire.status_filter(b.chain), 1),
            ],
            will=Will(
                self.status_topic,
                wire.encode(wire.BridgeStatus("offline", wall_clock(), b.id, SOFTWARE)),
            ),
            on_message=self._on_message,
            on_connect=self._on_connect,
        )

    def status(self, state: Literal["online", "offline"] = "online") -> wire.BridgeStatus:
        """This instance's health as IT monitoring sees it (docs/mqtt.md, `bridge_status`)."""
        counters = {
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "unknown": self.unknown,
            "rejected": self.rejected,
            "refused_events": self.refused_events,
            "quarantined": self.quarantined,
            "forged": self.forged,
            "delivered": self.delivered,
            "received": self.received,
            "expired": self.expired,
            "clone_alerts": self.clone_alerts,
            "offers_suppressed": sum(self.offers_suppressed.values()),
            # What the member asked for, re-checked: not their interests or promotion types, or
            # over their caps (counted across every store).
            "offers_suppressed_preferences": self.offers_suppressed.get("preferences", 0),
            "offers_suppressed_frequency": self.offers_suppressed.get("frequency", 0),
            # Issue 11: the campaign's caps across stores, a pool of codes run dry, and the
            # members kept as the campaign's control group (recorded, never sent).
            "offers_suppressed_campaign_cap": self.offers_suppressed.get("campaign_cap", 0),
            "offers_suppressed_codes_exhausted": self.offers_suppressed.get("codes_exhausted", 0),
            "offers_holdout": self.offers_holdout,
            "inbox_pending": self._inbox.qsize(),
            "inbox_dropped": self.inbox_dropped,
        }
        if self.config.mqtt.insecure_plaintext:
            counters["mqtt_insecure_plaintext"] = 1
        if self.webhook is not None:
            counters.update(self.webhook.counters())
        return wire.BridgeStatus(
            state=state,
            ts=self._wall(),
            bridge=self.config.bridge.id,
            software=SOFTWARE,
            uptime_s=time.monotonic() - self._started_mono,
            counters=counters,
            webhook_last_error=None if self.webhook is None else self.webhook.last_error,
        )

    async def publish_status(self) -> None:
        """Publish this instance's status, retained; a broker that is away is not waited for."""
        if self._leaving or not self.mqtt.connected:
            return
        try:
            await self.mqtt.publish(
                self.status_topic, wire.encode(self.status()), qos=1, retain=True
            )
        except MqttError as exc:
            _LOGGER.debug("bridge status not published: %s", exc)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.bridge.status_interval_s)
            await self.publish_status()

    async def say_goodbye(self) -> None:
        """On a stop: publish the retained "offline" status the will would have (a clean
        DISCONNECT suppresses the will), within CLOSE_TIMEOUT_S."""
        self._leaving = True
        if not self.mqtt.connected:
            return
        try:
            await self.mqtt.publish(
                self.status_topic,
                wire.encode(self.status("offline")),
                qos=1,
                retain=True,
                timeout_s=CLOSE_TIMEOUT_S,
            )
        except MqttError as exc:
            _LOGGER.debug("offline status not published: %s", exc)

    @classmethod
    async def open(cls, config: BridgeConfig, notifier: SdNotifier | None = None) -> Bridge:
        signing_key = await asyncio.to_thread(
            load_signing_key_file, Path(config.bridge.signing_key_file)
        )
        # A missing, read-only or corrupt database, then a missing or wrong data key, stops
        # start-up here with one line saying what to do (never an empty database in its place).
        records = await SqliteLoyaltyRecords.open(
            Path(config.bridge.database), config.bridge.chain, config.bridge.clone_policy()
        )
        records.segment_policy = config.segments
        try:
            data_key = await asyncio.to_thread(load_data_key, Path(config.bridge.data_key_file))
            await records.unlock(data_key)
        except BaseException:
            await records.close()
            raise
        webhook_secret = None
        if config.uses_webhook:
            try:
                # A missing or unsafe secret stops start-up here, saying what to do.
                webhook_secret = await asyncio.to_thread(
                    load_webhook_secret, Path(config.webhook.secret_file)
                )
            except BaseException:
                await records.close()
                raise
        _LOGGER.info("signing rosters with key %s", bundle.key_id(signing_key))
        watch = DatabaseWatch(records.path, "loyalty database")
        return cls(
            config,
            records,
            records,
            signing_key,
            data_key=data_key,
            notifier=notifier,
            db_watch=watch,
            webhook_secret=webhook_secret,
        )

    async def close(self) -> None:
        """Close the records; records that do not close within CLOSE_TIMEOUT_S are left to the
        process's exit (edge/process.py), logged."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.records.close()
        except (TimeoutError, sqlite3.Error) as exc:
            _LOGGER.error("the loyalty records did not close: %r", exc)

    async def run(self) -> None:
        """Run every loop until cancelled; with [api] enabled, the enrollment API too.

        The API and `clone_auto_revoke` need an enrollment connection of their own: enrollment
        transactions must not interleave with recording's.
        """
        if self.config.mqtt.insecure_plaintext:
            _LOGGER.warning(
                INSECURE_PLAINTEXT_WARNING, self.config.mqtt.host, self.config.mqtt.port
            )
        api = self.config.api
        # The chain's preference vocabulary from the config: new terms get bits, dropped ones
        # are retired (the API stops accepting them; their bits stay theirs).
        prefs = self.config.preferences
        await self.records.sync_preference_terms(prefs.interests, prefs.promotion_types)
        # Members' segments as of now, before the first roster goes out (then hourly, sync loop).
        await self.records.refresh_audience(self._wall())
        async with contextlib.AsyncExitStack() as stack:
            if api.enabled or self.config.bridge.clone_auto_revoke:
                tokens = TokenFile(Path(api.tokens_file))
                if api.enabled:
                    tokens.load()  # a missing or unsafe tokens file stops start-up with what to do
                enrollment = await SqliteEnrollment.open(
                    Path(self.config.bridge.database),
                    self.config.bridge.chain,
                    data_key=self._data_key,
                )
                stack.push_async_callback(enrollment.close)
                self.enrollment = enrollment
                stack.callback(setattr, self, "enrollment", None)
                if api.enabled:
                    context = (
                        server_tls_context(Path(api.tls_cert_file), Path(api.tls_key_file))
                        if api.tls
                        else None
                    )
                    server = EnrollmentApiServer(
                        enrollment,
                        tokens,
                        api.host,
                        api.port,
                        context,
                        routes=api_routes(self.records, self._wall, self.deliveries),
                    )
                    await server.start()
                    stack.push_async_callback(server.close)
                    self.api_server = server
            await self._run_loops()

    async def _run_loops(self) -> None:
        watchdog = Watchdog(
            self.notifier,
            self.liveness,
            self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else WATCHDOG_CHECK_S,
        )
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "mqtt": self.mqtt.run(),
            "record": self._process_inbox(),
            "deliver": self._deliver_loop(),
            "sync": self._sync_loop(),
            "watchdog": watchdog.run(),
            "status": self._status_loop(),
        }
        if self.webhook is not None:
            loops["webhook"] = self.webhook.run()
        if self.db_watch is not None:
            loops["database"] = watch_database(self.db_watch, self.records.stores, self.liveness)
        else:
            self.liveness.idle("database", time.monotonic())
        async with asyncio.TaskGroup() as tg:
            for name, loop in loops.items():
                guarded = guard_loop(self, name, loop, CLOSE_TIMEOUT_S, runtime=(BridgeError,))
                tg.create_task(guarded, name=f"bridge-{name}")
            await asyncio.sleep(0)  # every loop started
            self.notifier.ready(
                f"bridge {self.config.bridge.chain}/{self.config.bridge.id} running"
            )

    def _on_message(self, message: Message) -> None:
        self._inbox.offer(message)

    def _inbox_full(self, message: Message, reason: str) -> None:
        # Not acknowledged, so the gateway resends it; an app confirms an offer resent to it
        # again, and a gateway's status comes again: nothing is lost.
        self._payload_errors.warning(
            f"inbox-full {sender_of(message.topic)}",
            "a message on %s left for a resend (%d so far): %s",
            message.topic,
            self._inbox.dropped,
            reason,
        )

    @property
    def inbox_dropped(self) -> int:
        """Messages refused by the inbox for want of room (their senders resend them)."""
        return self._inbox.dropped

    async def _on_connect(self) -> None:
        # The broker may have lost retained messages: publish everything again. The gateways'
        # retained statuses arrive first, for a grace period: a gateway that already holds the
        # current roster (after a bridge restart, most of them) is not sent it in full again.
        self._published.clear()
        self._rosters.clear()
        self._sync_not_before = time.monotonic() + self.config.bridge.status_grace_s
        self._sync_wakeup.set()
        self._deliver_wakeup.set()
        await self.publish_status()

    async def publish_sync(self) -> None:
        """Publish, retained, every roster and campaigns set that changed since last published."""
        chain = self.config.bridge.chain
        registered = await self.registry.gateways()
        by_store: dict[str, list[tuple[wire.GatewayAddress, bytes]]] = {}
        for r in registered:
            address = wire.GatewayAddress(chain, r.store, r.gateway)
            by_store.setdefault(r.store, []).append((address, r.public_key))
        self._registered = {a: k for gateways in by_store.values() for a, k in gateways}
        for address in [a for a in self._rosters if a not in self._registered]:
            # Removed from the registry: no more bundles, and clear the last one (sealed to it).
            await self.mqtt.publish(wire.roster_bundle_topic(address), b"", qos=1, retain=True)
            del self._rosters[address]
            _LOGGER.info("gateway %s removed: its roster topic cleared", address.prefix)
        for address in [a for a in self._last_sent if a not in self._registered]:
            del self._last_sent[address]
        for address in [a for a in self._published if a not in self._registered]:
            await self.mqtt.publish(wire.campaigns_topic(address), b"", qos=1, retain=True)
            del self._published[address]
        last: tuple[tuple[wire.RosterDevice, ...], Roster] | None = None
        # One read of the chain's devices, and of the serials, for every store (each visit moves
        # every store's roster version: a read per store per sync grew with stores x devices).
        self._serials_read = False
        for roster in await self.records.rosters():
            store = roster.store
            # Every store gets the chain's roster today: share one dict between them.
            if last is None or last[0] != roster.devices:
                last = (roster.devices, {d.ref: d for d in roster.devices})
            await self._publish_rosters(store, roster.version, last[1], by_store.get(store, []))
            await self._publish_campaigns(store, [a for a, _ in by_store.get(store, [])])

    async def _publish_campaigns(self, store: str, gateways: Sequence[wire.GatewayAddress]) -> None:
        """Publish the store's campaigns, signed for each gateway's own topic, where not current."""
        campaigns = await self.records.campaigns(store)
        payload = wire.encode(campaigns)
        outdated = [a for a in gateways if self._published.get(a) != campaigns.version]
        if outdated and len(payload) > wire.MAX_PAYLOAD_BYTES:
            self._payload_errors.warning(
                f"campaigns too big {store} v{campaigns.version}",
                "store %s: campaigns v%d are %d bytes, more than the %d a gateway accepts: not "
                "published; shorten or deactivate campaigns",
                store,
                campaigns.version,
                len(payload),
                wire.MAX_PAYLOAD_BYTES,
            )
            return
        for address in outdated:
            self.liveness.busy("sync", time.monotonic())
            topic = wire.campaigns_topic(address)
            data = signed.sign(payload, topic, self._signing_key)
            await self.mqtt.publish(topic, data, qos=1, retain=True)
            self._published[address] = campaigns.version
            self._last_sent[address] = time.monotonic()
        if outdated:
            _LOGGER.info(
                "store %s: campaigns v%d published to %d gateway(s)",
                store,
                campaigns.version,
                len(outdated),
            )

    async def _publish_rosters(
        self,
        store: str,
        version: int,
        current: Roster,
        gateways: Sequence[tuple[wire.GatewayAddress, bytes]],
    ) -> None:
        """Seal the store's roster at `version` to each of its gateways that lacks it."""
        snapshot = self._snapshots.get(store)
        changes: dict[int | None, bundle.RosterChange] = {}  # by base version
        serials: Serials | None = None
        for address, public_key in gateways:
            # Progress, for the watchdog: a full roster to each of a large fleet takes a while.
            self.liveness.busy("sync", time.monotonic())
            kid = bundle.key_id(public_key)
            sent = self._rosters.get(address)
            if sent and (sent.version, sent.key_id) == (version, kid) and not sent.full_needed:
                continue
            if sent is None and self._held.get(address) == (version, kid):
                # Its status says it holds this version, opened with its current key.
                self._rosters[address] = _Published(version, kid, None, adopted=True)
                _LOGGER.info("gateway %s holds roster v%d already", address.prefix, version)
                continue
            base = None
            if (
                sent is not None
                and snapshot is not None
                and not sent.full_needed
                and sent.key_id == kid
                and sent.version == snapshot[0] < version
            ):
                base = snapshot
            base_version = base[0] if base else None
            if base_version not in changes:
                if serials is None:
                    serials = await self._fresh_serials()
                planned = await asyncio.to_thread(
                    bundle.plan_sync, base[1] if base else None, current, base_version
                )
                # Planned in the records' ids (one snapshot serves every store); each store's
                # gateways see only its own pseudonyms.
                changes[base_version] = await asyncio.to_thread(
                    pseudonymize, planned, serials, self.records.pseudonyms(store)
                )
            change = changes[base_version]
            data = await asyncio.to_thread(
                bundle.build_bundle,
                change,
                chain=address.chain,
                store=store,
                gateway=address.gateway,
                version=version,
                recipient_public_key=X25519PublicKey.from_public_bytes(public_key),
                signing_key=self._signing_key,
                random_bytes=os.urandom,
            )
            await self.mqtt.publish(wire.roster_bundle_topic(address), data, qos=1, retain=True)
            delta_from = change.base_version if isinstance(change, bundle.RosterDelta) else None
            self._rosters[address] = _Published(version, kid, delta_from)
            self._last_sent[address] = time.monotonic()
            _LOGGER.info(
                "gateway %s: roster v%d published (%s, %d bytes)",
                address.prefix,
                version,
                f"delta from v{change.base_version}: {change.size} changes"
                if isinstance(change, bundle.RosterDelta)
                else f"full: {len(current)} devices",
                len(data),
            )
        self._snapshots[store] = (version, current)

    async def _fresh_serials(self) -> Serials:
        """Every serial the records hold, plus those already known: a delta still names devices
        whose records are gone. Read once per publish_sync, after the rosters: they hold every
        device the rosters name."""
        if self._serials_read:
            return self._serials
        fresh = await self.records.serials()
        self._serials = Serials(
            {**self._serials.devices, **fresh.devices}, {**self._serials.members, **fresh.members}
        )
        self._serials_read = True
        return self._serials

    def _handle_status(self, message: Message) -> None:
        """Learn which roster a gateway holds; a full snapshot for one a delta cannot reach."""
        if not message.payload:
            return  # a retained status cleared
        try:
            address = wire.parse_status_topic(message.topic)
            if address.chain != self.config.bridge.chain:
                raise wire.WireError(f"topic {message.topic}: chain {address.chain!r} is not ours")
            status = wire.decode_as(message.payload, wire.Status, f"topic {message.topic}")
        except wire.WireError as exc:
            # A retained bad status comes back on every reconnect: dropped every time.
            self._drop(message, exc.reason)
            return
        key_id = status.sync.get("key_id")
        if status.state == "online" and isinstance(key_id, str):
            self._held[address] = (status.roster_version, key_id)
        else:
            self._held.pop(address, None)  # offline: whatever it held, send what it needs
        if status.state != "online":
            return
        if self._registered is not None and address not in self._registered:
            self._payload_errors.warning(
                f"unregistered {address.prefix}",
                "gateway %s has no registered key, so it gets no roster: run `cloud-bridge "
                "add-gateway DATABASE %s %s --public-key KEY` with the key `edge-gateway provision` "
                "printed on it",
                address.prefix,
                address.store,
                address.gateway,
            )
            return
        self._log_campaigns_rejection(address, status)
        self._resync_if_behind(address, status)
        sent = self._rosters.get(address)
        if sent is None or status.roster_version == sent.version or sent.full_needed:
            return
        if sent.adopted:
            # It held this version when the bridge connected, and holds another now (it lost its
            # database, or was re-provisioned): nothing was published to it, so send it in full.
            sent.full_needed = True
            self._sync_wakeup.set()
            _LOGGER.info(
                "gateway %s now holds roster v%d, not v%d: sending a full roster",
                address.prefix,
                status.roster_version,
                sent.version,
            )
            return
        rejection = status.sync.get("last_rejection")
        rejected = (
            isinstance(rejection, dict)
            and rejection.get("what") == "roster"
            and rejection.get("version") == sent.version
        )
        reason = rejection.get("reason") if isinstance(rejection, dict) and rejected else None
        if sent.base_version is not None and (
            status.roster_version != sent.base_version or reason in _NEEDS_FULL
        ):
            sent.full_needed = True
            self._sync_wakeup.set()
            _LOGGER.info(
                "gateway %s holds roster v%d, not v%d that the delta to v%d builds on: "
                "sending a full roster",
                address.prefix,
                status.roster_version,
                sent.base_version,
                sent.version,
            )
        elif rejected:
            self._payload_errors.warning(
                f"rejected {address.prefix} v{sent.version}",
                "gateway %s rejected roster v%d [%s]: %s",
                address.prefix,
                sent.version,
                reason,
                rejection.get("message") if isinstance(rejection, dict) else "",
            )

    def _resync_if_behind(self, address: wire.GatewayAddress, status: wire.Status) -> None:
        """Resend a registered gateway what its status shows it lacks, if nothing was sent to it
        for `resync_every_s`: the campaigns set, or a full roster where a full one was sent (a
        delta is handled below) and not refused for a reason a resend cannot cure."""
        campaigns = self._published.get(address)
        sent = self._rosters.get(address)
        rejection = status.sync.get("last_rejection")
        refused = (
            isinstance(rejection, dict)
            and rejection.get("what") == "roster"
            and sent is not None
            and rejection.get("version") == sent.version
        )
        roster_behind = (
            sent is not None
            and sent.base_version is None
            and not sent.adopted
            and not sent.full_needed
            and status.roster_version != sent.version
            and not refused
        )
        campaigns_behind = campaigns is not None and status.campaigns_version != campaigns
        if not (roster_behind or campaigns_behind):
            return
        now = time.monotonic()
        last = self._last_sent.get(address)
        if last is not None and now - last < self.resync_every_s:
            return
        self._last_sent[address] = now
        self.resyncs += 1
        if campaigns_behind:
            del self._published[address]
        if roster_behind and sent is not None:
            sent.full_needed = True
        self._sync_wakeup.set()
        _LOGGER.info(
            "gateway %s holds roster v%d, campaigns v%d, not v%s, v%s as published: resending",
            address.prefix,
            status.roster_version,
            status.campaigns_version,
            sent.version if sent else "-",
            campaigns if campaigns is not None else "-",
        )

    def _log_campaigns_rejection(self, address: wire.GatewayAddress, status: wire.Status) -> None:
        """Say once per gateway and reason that it refused campaigns (forged ones, or a key
        mix-up); the rest at DEBUG."""
        rejection = status.sync.get("last_rejection")
        if not isinstance(rejection, dict) or rejection.get("what") != "campaigns":
            return
        # Keyed by the gateway and a known reason: what its status says (when, why) is its to
        # choose, so an unknown reason is one key, and a new time no new key.
        reason = rejection.get("reason")
        known = reason if reason in _CAMPAIGNS_REJECTIONS else "other"
        self._payload_errors.warning(
            f"campaigns rejected {address.prefix} {known}",
            "gateway %s rejected campaigns [%s], keeping its last good set: %s",
            address.prefix,
            rejection.get("reason"),
            rejection.get("message"),
        )

    async def _sync_loop(self) -> None:
        """Revocations, withdrawn consent and campaign edits reach gateways at the next sync."""
        while True:
            self.liveness.idle("sync", time.monotonic())
            try:
                async with asyncio.timeout(self.config.bridge.sync_interval_s):
                    await self._sync_wakeup.wait()
            except TimeoutError:
                pass
            self._sync_wakeup.clear()
            grace_s = self._sync_not_before - time.monotonic()
            if grace_s > 0:
                await asyncio.sleep(grace_s)
            if not self.mqtt.connected:
                continue
            self.liveness.busy("sync", time.monotonic())
            # Segments move with time alone (a regular lapses): recomputed when due (hourly).
            await self.records.refresh_audience(self._wall())
            try:
                await self.publish_sync()
            except MqttError as exc:  # the reconnect publishes everything again
                _LOGGER.debug("sync not published: %s", exc)

    def _drop(self, message: Message, reason: str) -> None:
        """Count a message that breaks the contract; one WARNING per sender and kind of topic,
        then DEBUG: a client cycling through topic names (`event/<anything>`, which the ACL lets a
        gateway publish) fills neither memory nor the log, nor hides the others' problems."""
        self.rejected += 1
        sender = sender_of(message.topic)
        kind = message.topic[len(sender) :]
        self._payload_errors.warning(
            f"rejected {sender}{kind if kind in _TOPIC_KINDS else '/(other)'}",
            "dropped a message (%d so far): %s",
            self.rejected,
            reason,
        )

    def _decode(self, message: Message) -> IncomingEvent | None:
        where = f"topic {message.topic}"
        try:
            topic = wire.parse_event_topic(message.topic)
            if topic.gateway.chain != self.config.bridge.chain:
                raise wire.WireError(f"{where}: chain {topic.gateway.chain!r} is not ours")
            event: wire.Event
            if topic.kind == "visit":
                payload = wire.decode(message.payload, where)
                if not isinstance(payload, wire.Visit | wire.VisitEnd):
                    raise wire.WireError(
                        f"{where}: field $.type: expected a 'visit' or 'visit_end' payload, "
                        f"got {payload.TYPE!r}"
                    )
                event = payload
            else:
                event = wire.decode_as(message.payload, wire.OfferTrigger, where)
        except wire.WireError as exc:
            self._drop(message, exc.reason)
            return None
        return IncomingEvent(topic.gateway, event)

    def _decode_receipt(self, message: Message, into: dict[tuple[str, str], set[str]]) -> None:
        """Add a receipt's offer ids to `into`, under the shopper its topic names and its status."""
        where = f"topic {message.topic}"
        try:
            topic = wire.parse_receipt_topic(message.topic)
            if topic.chain != self.config.bridge.chain:
                raise wire.WireError(f"{where}: chain {topic.chain!r} is not ours")
            receipt = wire.decode_as(message.payload, wire.OfferReceipt, where)
        except wire.WireError as exc:
            self._drop(message, exc.reason)
            return
        into.setdefault((topic.shopper, receipt.status), set()).update(receipt.offer_ids)

    async def _mark_received(self, receipts: dict[tuple[str, str], set[str]]) -> None:
        """One write per shopper app per batch, however many receipts it sent: a flood of
        receipts costs the record loop little. Only the shopper an offer was for confirms it."""
        now_s = self._wall()
        for (shopper, status), offer_ids in receipts.items():
            self.received += await self.records.mark_received(
                shopper, sorted(offer_ids), now_s, status
            )

    async def _process_inbox(self) -> None:
        batch_max = self.config.bridge.batch
        while True:
            self.liveness.idle("record", time.monotonic())
            messages = [await self._inbox.get()]
            self.liveness.busy("record", time.monotonic())
            while len(messages) < batch_max and not self._inbox.empty():
                messages.append(self._inbox.get_nowait())
            events = []
            receipts: dict[tuple[str, str], set[str]] = {}
            for message in messages:
                if message.topic.endswith("/receipt"):
                    self._decode_receipt(message, receipts)
                elif message.topic.endswith("/status"):
                    self._handle_status(message)
                else:
                    events.append(message)
            if receipts:
                await self._mark_received(receipts)
            decoded = [e for e in map(self._decode, events) if e is not None]
            incoming = await self._admit(decoded) if decoded else []
            if not incoming:
                continue
            outcome = await self.records.record(incoming, self._wall())
            self.recorded += (
                len(outcome.new_visits) + len(outcome.new_visit_ends) + len(outcome.new_offers)
            )
            self.duplicates += outcome.duplicates
            for reason, count in outcome.refused_offers.items():
                self.offers_suppressed[reason] = self.offers_suppressed.get(reason, 0) + count
            self.offers_holdout += outcome.holdout
            if outcome.forged:
                self.forged += outcome.forged
                self._payload_errors.warning(
                    "forged visit ends",
                    "%d visit end(s) contradict themselves or their visit (forged, or a gateway's "
                    "bug): acknowledged, not recorded (%d so far); `cloud-bridge quarantine "
                    "DATABASE` lists them",
                    outcome.forged,
                    self.forged,
                )
            if outcome.quarantined:
                self.quarantined += outcome.quarantined
                _LOGGER.warning(
                    "%d event(s) quarantined for their times (%d so far): acknowledged, not "
                    "counted; `cloud-bridge quarantine DATABASE` lists them",
                    outcome.quarantined,
                    self.quarantined,
                )
            if outcome.unknown:
                self.unknown += outcome.unknown
                self._payload_errors.warning(
                    "unknown pseudonyms",
                    "%d event(s) name members or devices under pseudonyms their store was never "
                    "given (another store's events replayed, or forged): acknowledged, not recorded "
                    "(%d so far)",
                    outcome.unknown,
                    self.unknown,
                )
            for listener in self.outcome_listeners:
                listener(outcome)
            await self._send_acks(outcome.acks)
            if outcome.clone_alerts:
                await self._raise_clone_alerts(outcome.clone_alerts)
            by_mqtt = [d for d in outcome.deliveries if d.channel == "mqtt"]
            if self.webhook is not None and len(by_mqtt) < len(outcome.deliveries):
                self.webhook.wake()
            if by_mqtt:
                await self._deliver(by_mqtt)

    async def _admit(self, events: Sequence[IncomingEvent]) -> list[IncomingEvent]:
        """The events the bridge may record (cloud_bridge/core/admission.py), those with times
        outside its tolerance marked for quarantine, visit ends that contradict themselves marked
        forged. Events of a gateway not registered for the
        topic's store are dropped unacknowledged: its outbox keeps them, so once it is registered
        (read at the next sync) its backlog is recorded."""
        if self._registered is None:
            chain = self.config.bridge.chain
            self._registered = {
                wire.GatewayAddress(chain, r.store, r.gateway): r.public_key
                for r in await self.registry.gateways()
            }
        registered = {(a.store, a.gateway) for a in self._registered}
        chain, policy, now_s = (
            self.config.bridge.chain,
            self.config.bridge.time_policy(),
            self._wall(),
        )
        admitted = []
        for incoming in events:
            refusal = admission.check_gateway(incoming.gateway, chain, registered)
            if refusal is not None:
                self.refused_events += 1
                self._payload_errors.warning(
                    f"refused {incoming.gateway.prefix}",
                    "events from %s not recorded, not acknowledged [%s] (%d so far): register it "
                    "with `cloud-bridge add-gateway DATABASE %s %s --public-key KEY` if it is ours",
                    incoming.gateway.prefix,
                    refusal,
                    self.refused_events,
                    incoming.gateway.store,
                    incoming.gateway.gateway,
                )
                continue
            event = incoming.event
            forged = admission.check_visit_end(event) if isinstance(event, wire.VisitEnd) else None
            if forged is not None:
                admitted.append(dataclasses.replace(incoming, forged=forged))
                continue
            reason = admission.check_event_times(event, now_s, policy)
            admitted.append(
                incoming if reason is None else dataclasses.replace(incoming, quarantine=reason)
            )
        return admitted

    async def _raise_clone_alerts(self, alerts: Sequence[wire.CloneAlert]) -> None:
        """Log each new clone alert, revoke its device if configured to, and tell IT monitoring."""
        topic = wire.bridge_alerts_topic(self.config.bridge.chain)
        for alert in alerts:
            self.clone_alerts += 1
            if self.config.bridge.clone_auto_revoke and self.enrollment is not None:
                try:
                    alert = await revoke_for_alert(
                        self.registry, self.enrollment, alert.alert_id, self._wall()
                    )
                    self._sync_wakeup.set()  # the revocation reaches the gateways now
                except (EnrollmentError, AlertError) as exc:
                    _LOGGER.error(
                        "clone alert %d: device %s not revoked: %s; revoke it with "
                        "`cloud-bridge clones DATABASE --revoke %d`",
                        alert.alert_id,
                        alert.device,
                        exc,
                        alert.alert_id,
                    )
            _LOGGER.warning(
                "%s%s",
                describe(alert),
                ": device revoked"
                if alert.status == "revoked"
                else f"; `cloud-bridge clones DATABASE --revoke {alert.alert_id}` revokes it",
            )
            try:
                # Without the member id: the broker, and whoever reads the topic, get no member id.
                published = dataclasses.replace(alert, member=None)
                await self.mqtt.publish(topic, wire.encode(published), qos=1)
            except MqttError as exc:
                # The database keeps the alert: `cloud-bridge clones` and GET /v1/alerts list it.
                _LOGGER.warning(
                    "clone alert %d not published on %s: %s", alert.alert_id, topic, exc
                )

    async def _send_acks(self, acks: dict[wire.GatewayAddress, list[str]]) -> None:
        for gateway, event_ids in acks.items():
            # Signed for the gateway's own ack topic: an ack forged by another client, or replayed
            # onto another gateway's topic, removes nothing from an outbox (edge/core/signed.py).
            # At most ACK_IDS_MAX ids each, well inside a signed message's size limit.
            topic = wire.ack_topic(gateway)
            for start in range(0, len(event_ids), ACK_IDS_MAX):
                ack = wire.Ack(tuple(event_ids[start : start + ACK_IDS_MAX]))
                payload = signed.sign(wire.encode(ack), topic, self._signing_key)
                try:
                    await self.mqtt.publish(topic, payload, qos=1)
                except MqttError as exc:
                    # The gateway resends unacknowledged events; the duplicate gets acked then.
                    _LOGGER.debug("ack to %s not sent: %s", gateway.prefix, exc)
                    break

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
            self.liveness.idle("deliver", time.monotonic())
            try:
                async with asyncio.timeout(REDELIVER_EVERY_S):
                    await self._deliver_wakeup.wait()
            except TimeoutError:
                pass
            self._deliver_wakeup.clear()
            if not self.mqtt.connected:
                continue
            self.liveness.busy("deliver", time.monotonic())
            now_s = self._wall()
            expired = await self.records.expire_offers(now_s)
            if self.webhook is None and self.deliveries is not None:
                # Webhook offers recorded before the channel was turned off: no loop sends them
                # now; at their expiry they are dead letters IT sees, not pending for ever.
                expired += await self.deliveries.expire_webhooks(now_s)
            if expired:
                self.expired += expired
                _LOGGER.info(
                    "%d offer(s) expired unconfirmed by the app (their campaign's validity_s)",
                    expired,
                )
            due = await self.records.due_deliveries(now_s, self.config.bridge.offer_resend_s, 500)
            if due:
                await self._deliver(due)


async def run_bridge(config: BridgeConfig, notifier: SdNotifier | None = None) -> Failure | None:
    """`cloud-bridge run`: until SIGTERM/SIGINT (None) or a loop fails (why; the caller exits with
    its code). Either way the loops end, the broker connection and the database are closed, each
    within CLOSE_TIMEOUT_S; what does not end in time is left to edge/process.py's hard exit."""
    notifier = notifier if notifier is not None else SdNotifier.from_environ()
    notifier.status("starting")
    database = Path(config.bridge.database)
    # One bridge process per database (several instances share PostgreSQL, not a SQLite file).
    with instance_lock(database.with_name(database.name + ".lock"), "cloud-bridge"):
        bridge = await Bridge.open(config, notifier)
        return await run_until_stopped(
            "bridge", bridge, notifier, CLOSE_TIMEOUT_S, runtime=(BridgeError,)
        )
