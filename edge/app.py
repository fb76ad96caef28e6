"""Composition root of the gateway: config → adapters → services → one TaskGroup.

Only this module builds adapters. Tests and the demo build a `Gateway` here too, handing in the radio
source they want.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import __version__
from edge.adapters.bleak_radio import BleakAdvertSource
from edge.adapters.bluez_advertiser import BluezIBeaconAdvertiser
from edge.adapters.keystore import GatewayKeys, load_gateway_keys, load_trusted_signers
from edge.adapters.mqtt import (
    INSECURE_PLAINTEXT_WARNING,
    Message,
    MqttError,
    MqttSettings,
    PahoMqtt,
    Will,
)
from edge.adapters.serial_radio import SerialAdvertSource
from edge.adapters.simulated_radio import SimulatedAdvertSource
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.config import GatewayConfig
from edge.core import bundle, wire
from edge.core.advert import RawAdvert
from edge.core.broker_identity import gateway_identity
from edge.core.health import RadioHealth
from edge.core.offers import OfferEngine
from edge.core.pipeline import HOUSEKEEPING_EVERY_S, RESOLVER_STEP_EVERY_S, Pipeline
from edge.core.presence import PresenceTracker
from edge.core.resolver import ClockCheck, EidResolver
from edge.errors import ConfigError
from edge.logutil import OnceLogger
from edge.services.sync import SyncApplier
from edge.services.uplink import Uplink
from edge.sim.entrance import EntranceConfig, StoreEntrance, make_members
from firmware_config.profiles import load_profiles

_LOGGER = logging.getLogger(__name__)
INBOX_MAX = 10_000
# No advert for this long (monotonic s) and the gateway, not the radio, drives housekeeping.
QUIET_S = HOUSEKEEPING_EVERY_S
SOFTWARE = f"threshold-edge {__version__}"


class AdvertSource(Protocol):
    """What every radio adapter offers the gateway."""

    name: str

    def batches(self) -> AsyncIterator[list[RawAdvert]]: ...

    def health(self) -> RadioHealth: ...


def build_radio(config: GatewayConfig) -> AdvertSource:
    """The radio source the config names."""
    radio = config.radio
    if radio.source == "bleak":
        b = radio.bleak
        return BleakAdvertSource(
            b.adapter or None,
            mode="passive" if b.mode == "passive" else "active" if b.mode == "active" else "auto",
            stall_timeout_s=b.stall_timeout_s,
            restart_limit=b.restart_limit,
            power_cycle_limit=b.power_cycle_limit,
        )
    if radio.source == "serial":
        s = radio.serial
        return SerialAdvertSource(
            s.port,
            s.baudrate,
            scan_mode=s.scan_mode,
            scan_interval_ms=s.scan_interval_ms,
            scan_window_ms=s.scan_window_ms,
            hello_timeout_s=s.hello_timeout_s,
            profiles=load_profiles(),
        )
    sim = radio.simulated
    entrance = StoreEntrance(
        EntranceConfig(
            seed=sim.seed,
            start_unix_s=time.time(),
            duration_s=sim.duration_s,
            arrivals_per_min=sim.arrivals_per_min,
            passers_per_min=sim.passers_per_min,
        ),
        make_members(sim.members, sim.seed),
    )
    return SimulatedAdvertSource(entrance.adverts(), sim.speed)


EventListener = Callable[[Sequence[wire.Event]], None]


def new_event_id() -> str:
    """A globally unique event id (random UUID, hex)."""
    return uuid.uuid4().hex


class Gateway:
    """One running gateway: pipeline, outbox, uplink and sync around a radio source."""

    def __init__(
        self,
        config: GatewayConfig,
        source: AdvertSource,
        store: SqliteGatewayStore,
        keys: GatewayKeys,
        trusted_signers: Sequence[Ed25519PublicKey],
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.keys = keys
        self.address = config.address
        self.source = source
        self.store = store
        self._wall = wall_clock
        self._mono = monotonic
        self._started_mono = time.monotonic()
        self.listeners: list[EventListener] = []
        self.pipeline = Pipeline(
            EidResolver((), wall_clock(), config.identity.skew_windows),
            PresenceTracker(config.presence_config),
            OfferEngine(None),
            new_event_id,
        )
        self._last_radio_s: float | None = None
        self._last_batch_mono: float | None = None
        self.sync = SyncApplier(
            self.pipeline,
            store,
            self.address,
            config.identity.skew_windows,
            self.radio_now,
            keys,
            trusted_signers,
            wall_clock,
            retention_s=config.privacy.retention_s,
        )
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(INBOX_MAX)
        self._status_wakeup = asyncio.Event()
        self._leaving = False
        self.inbox_dropped = 0
        self._payload_errors = OnceLogger(_LOGGER)
        m = config.mqtt
        self.mqtt = PahoMqtt(
            MqttSettings(
                host=m.host,
                port=m.port,
                client_id=f"threshold-gw-{self.address.chain}-{self.address.store}-"
                f"{self.address.gateway}",
                username=m.username or None,
                password=m.password or None,
                keepalive_s=m.keepalive_s,
                tls=config.mqtt_tls,
                identity=gateway_identity(self.address).common_name,
            ),
            will=Will(
                wire.status_topic(self.address),
                wire.encode(wire.Status(state="offline", ts=wall_clock(), software=SOFTWARE)),
            ),
            subscriptions=[
                (wire.ack_topic(self.address), 1),
                (wire.roster_bundle_topic(self.address), 1),
                (wire.campaigns_topic(self.address.chain, self.address.store), 1),
            ],
            on_message=self._on_message,
            on_connect=self._on_connect,
        )
        self.uplink = Uplink(
            self.mqtt, store, self.address, config.uplink.ack_timeout_s, config.uplink.batch
        )
        self._adverts_window = (time.monotonic(), 0)
        self.adverts_per_s = 0.0
        #: Judges the gateway's clock from the windows resolved EIDs come from; fed every status tick.
        self.clock_check = ClockCheck()

    @classmethod
    async def open(cls, config: GatewayConfig, source: AdvertSource) -> Gateway:
        """Open the gateway's keys and database and restore its last good roster and campaigns."""
        identity = config.identity
        signers, problems = await asyncio.to_thread(
            load_trusted_signers, identity.trusted_signers, identity.trusted_signers_file
        )
        if problems:
            raise ConfigError("gateway config", "identity.trusted_signers", "; ".join(problems))
        if not signers:
            raise ConfigError(
                "gateway config",
                "identity.trusted_signers",
                "no trusted bridge key, so every roster would be rejected: add the public key "
                "`cloud-bridge keygen` printed",
            )
        # Reading the OTP key shells out: off the event loop.
        keys = await asyncio.to_thread(
            load_gateway_keys, config.data_dir, identity.key_source, identity.otp_command
        )
        store = await SqliteGatewayStore.open(config.database_path)
        try:
            gateway = cls(config, source, store, keys, signers)
            gateway.pipeline.offers.history = await store.load_history()
            await gateway.sync.restore()
        except BaseException:
            await store.close()
            raise
        _LOGGER.info(
            "gateway key %s (sealed with the %s), trusting bridge keys %s",
            keys.key_id,
            "Pi's OTP key" if keys.source == "otp" else "key file: weaker",
            ", ".join(bundle.key_id(k) for k in signers),
        )
        return gateway

    async def close(self) -> None:
        await self.store.close()

    def radio_now(self) -> float:
        """Radio time: the last advert's time, or the wall clock before the first."""
        return self._last_radio_s if self._last_radio_s is not None else self._wall()

    async def run(self) -> None:
        """Run every loop until cancelled; the radio source ending does not stop the uplink."""
        if self.config.mqtt.insecure_plaintext:
            _LOGGER.warning(
                INSECURE_PLAINTEXT_WARNING, self.config.mqtt.host, self.config.mqtt.port
            )
        beacon = self.config.store_beacon
        advertiser = None
        if beacon.enabled:
            advertiser = BluezIBeaconAdvertiser(
                self.config.radio.bleak.adapter or None,
                bytes.fromhex(beacon.uuid.replace("-", "")),
                beacon.major,
                beacon.minor,
                beacon.measured_power,
                beacon.interval_ms,
            )
            if not await advertiser.start():
                _LOGGER.warning("store iBeacon not registered yet; retrying while BlueZ is away")
        try:
            await self._run_loops()
        finally:
            if advertiser is not None:
                await advertiser.stop()

    async def _run_loops(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mqtt.run(), name="mqtt")
            tg.create_task(self.uplink.run(), name="uplink")
            tg.create_task(self._scan(), name="scan")
            tg.create_task(self._process_inbox(), name="inbox")
            tg.create_task(self._publish_status_periodically(), name="status")
            tg.create_task(self.housekeep_while_quiet(), name="housekeeping")

    async def _scan(self) -> None:
        async for batch in self.source.batches():
            self._last_radio_s = batch[-1].t_s
            self._last_batch_mono = self._mono()
            wall = self._wall()
            events = self.pipeline.feed_many(batch, wall)
            if events:
                await self.store.append_events(events, wall)
                self.uplink.wake()
                for listener in self.listeners:
                    listener(events)
        _LOGGER.info("radio source %r ended", self.source.name)

    def quiet_radio_now(self) -> float | None:
        """Radio time while no adverts arrive (None while they do): the last advert's time plus the
        seconds since, never behind it; the wall clock before the first advert."""
        last = self._last_batch_mono
        if last is None or self._last_radio_s is None:
            return self._wall()
        quiet_s = self._mono() - last
        if quiet_s < QUIET_S:
            return None
        return self._last_radio_s + quiet_s

    async def housekeep_while_quiet(self) -> None:
        """Drive the pipeline's housekeeping while the radio is quiet, a slice at a time.

        Adverts drive it otherwise (Pipeline.feed). Without this, after a quiet spell across a
        rotation boundary (a closed store, passive scanning) the first advert would roll the windows
        and compute every window it skipped at once: ~0.6 s on the loop at 100k devices. Here the
        windows roll on time and the window ahead fills in slices, RESOLVER_STEP_EVERY_S apart, the
        loop free between them, as when adverts arrive.
        """
        while True:
            pending = self.pipeline.resolver.pending_work
            await asyncio.sleep(RESOLVER_STEP_EVERY_S if pending else HOUSEKEEPING_EVERY_S)
            now_s = self.quiet_radio_now()
            if now_s is not None:
                self.pipeline.housekeeping(now_s)

    def _on_message(self, message: Message) -> None:
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.inbox_dropped += 1
            self._payload_errors.warning(
                "inbox-full", "inbox full (%d): dropped a message on %s", INBOX_MAX, message.topic
            )

    async def _process_inbox(self) -> None:
        ack = wire.ack_topic(self.address)
        roster = wire.roster_bundle_topic(self.address)
        campaigns = wire.campaigns_topic(self.address.chain, self.address.store)
        while True:
            message = await self._inbox.get()
            where = f"topic {message.topic}"
            if message.topic == ack:
                try:
                    await self.uplink.handle_ack(wire.decode_as(message.payload, wire.Ack, where))
                except wire.WireError as exc:
                    self._payload_errors.warning(message.topic, "ignored: %s", exc.reason)
            elif message.topic in (roster, campaigns):
                rejections = self.sync.rejections
                if message.topic == roster:
                    applied = await self.sync.apply_roster(message.payload, where)
                else:
                    applied = await self.sync.apply_campaigns(message.payload, where)
                if applied or self.sync.rejections != rejections:
                    # Tell the bridge (and monitoring) soon: the version is the bridge's
                    # acknowledgement, a rejection may ask it for a full roster.
                    self._status_wakeup.set()
            else:
                self._payload_errors.warning(message.topic, "ignored message on %s", where)

    async def _on_connect(self) -> None:
        self.uplink.connection_restored()
        await self.publish_status()

    def status(self) -> wire.Status:
        """The gateway's health as published on its status topic."""
        now_mono = time.monotonic()
        started, count = self._adverts_window
        adverts = self.pipeline.counters.adverts
        if now_mono - started >= 5.0:
            self.adverts_per_s = (adverts - count) / (now_mono - started)
            self._adverts_window = (now_mono, adverts)
        return wire.Status(
            state="online",
            ts=self._wall(),
            software=SOFTWARE,
            uptime_s=now_mono - self._started_mono,
            outbox_pending=self.uplink.pending,
            roster_version=self.sync.roster_version,
            campaigns_version=self.sync.campaigns_version,
            radio={
                **self.source.health().as_dict(),
                "adverts_per_s": round(self.adverts_per_s, 1),
                "radio_time": self._last_radio_s,
            },
            counters={
                **self.pipeline.counters.as_dict(),
                "events_sent": self.uplink.sent,
                "events_acked": self.uplink.acked,
                "inbox_dropped": self.inbox_dropped,
                # 1: this gateway talks to the broker in plain TCP (config insecure_plaintext).
                "mqtt_insecure_plaintext": int(self.config.mqtt.insecure_plaintext),
            },
            sync=self.sync.status_json(),
            clock=self.clock_json(),
        )

    def clock_json(self) -> dict[str, Any]:
        """The `clock` object of the status payload: the clock check's last verdict."""
        check = self.clock_check
        return {
            "suspect": check.clock_suspect,
            "offset_windows": check.offset_windows,
            "reason": check.reason,
            "resolved": check.resolved,
            "unknown_eids": check.unknown_eids,
        }

    def check_clock(self) -> bool:
        """Give the clock check the resolver's counters; log when its verdict changes."""
        check = self.clock_check
        was_suspect = check.clock_suspect
        suspect = check.observe(self._wall(), self.pipeline.resolver.clock_sample())
        if suspect and not was_suspect:
            # Once per episode: a wrong clock stops the gateway recognising anyone.
            _LOGGER.warning("the gateway's clock looks wrong: %s", check.reason)
        elif was_suspect and not suspect:
            _LOGGER.info("the gateway's clock looks right again (EIDs resolve in its windows)")
        return suspect

    async def say_goodbye(self) -> None:
        """On a planned stop: publish the retained "offline" status the will would have, then leave.

        A clean DISCONNECT suppresses the last will, so without this a stopped gateway would look
        online to the fleet forever.
        """
        self._leaving = True  # no "online" status may follow the "offline" one
        if self.mqtt.connected:
            offline = wire.Status(state="offline", ts=self._wall(), software=SOFTWARE)
            try:
                await self.mqtt.publish(
                    wire.status_topic(self.address),
                    wire.encode(offline),
                    qos=1,
                    retain=True,
                    timeout_s=5.0,
                )
            except MqttError as exc:
                _LOGGER.warning("could not publish the offline status: %s", exc)
        await self.mqtt.disconnect()

    async def publish_status(self) -> None:
        if self._leaving:
            return
        try:
            await self.mqtt.publish(
                wire.status_topic(self.address), wire.encode(self.status()), qos=1, retain=True
            )
        except MqttError as exc:  # best effort: the next tick or reconnect publishes it again
            _LOGGER.debug("status not published: %s", exc)

    async def purge_history(self) -> int:
        """Forget offers older than the longest cooldown, or the retention if that is shorter
        (`[privacy] retention_s`), in memory and on disk; return how many rows were purged."""
        keep_s = min(self.config.privacy.retention_s, self.pipeline.offers.longest_cooldown_s)
        now_s = self.radio_now()
        self.pipeline.offers.history.prune(now_s, keep_s)
        return await self.store.purge_history(now_s - keep_s)

    async def _publish_status_periodically(self) -> None:
        interval_s = self.config.uplink.status_interval_s
        next_tick = time.monotonic() + interval_s
        while True:
            try:
                async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                    await self._status_wakeup.wait()
            except TimeoutError:
                pass
            if self._status_wakeup.is_set():  # a roster applied or rejected: say so now
                self._status_wakeup.clear()
                if self.mqtt.connected:
                    await self.publish_status()
                continue
            next_tick = time.monotonic() + interval_s
            self.check_clock()
            self.uplink.pending = await self.store.count()
            await self.purge_history()
            if self.mqtt.connected:
                await self.publish_status()
