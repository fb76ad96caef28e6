"""Composition root of the gateway: config → adapters → services → one TaskGroup.

Only this module builds adapters. Tests and the demo build a `Gateway` here too, handing in the radio
source they want.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import __version__
from edge.adapters.bleak_radio import BleakAdvertSource
from edge.adapters.bluez_advertiser import BluezIBeaconAdvertiser
from edge.adapters.bluez_gatt import BluezCheckinService
from edge.adapters.instance_lock import instance_lock
from edge.adapters.keystore import GatewayKeys, load_gateway_keys, load_trusted_signers
from edge.adapters.mqtt import (
    INSECURE_PLAINTEXT_WARNING,
    Message,
    MqttError,
    MqttSettings,
    PahoMqtt,
    Will,
)
from edge.adapters.sdnotify import SdNotifier
from edge.adapters.serial_radio import SerialAdvertSource
from edge.adapters.simulated_checkin import SimulatedCheckinService
from edge.adapters.simulated_radio import SimulatedAdvertSource
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.adapters.sqlite_watch import DatabaseWatch
from edge.config import GatewayConfig
from edge.core import bundle, signed, wire
from edge.core.advert import RawAdvert
from edge.core.broker_identity import gateway_identity
from edge.core.checkin import CheckinAccepted, CheckinResult, CheckinVerifier
from edge.core.clockstep import ClockStepDetector
from edge.core.health import RadioHealth, RadioState
from edge.core.liveness import Liveness
from edge.core.offers import CAMPAIGN_MEMORY_S, OfferEngine
from edge.core.pipeline import HOUSEKEEPING_EVERY_S, RESOLVER_STEP_EVERY_S, Pipeline
from edge.core.preferences import DAY_S, WEEK_S
from edge.core.presence import PresenceTracker
from edge.core.resolver import ClockCheck, EidResolver
from edge.core.visits import OpenVisit
from edge.errors import ConfigError
from edge.logutil import OnceLogger
from edge.process import Failure
from edge.services.dbwatch import watch_database
from edge.services.inbox import FairInbox, InboxLimits
from edge.services.supervisor import guard_loop, run_until_stopped
from edge.services.sync import SyncApplier
from edge.services.uplink import Uplink
from edge.services.watchdog import Watchdog
from edge.sim.entrance import EntranceConfig, StoreEntrance, make_members
from firmware_config.profiles import load_profiles

_LOGGER = logging.getLogger(__name__)
#: What waits for the inbox loop: everything it reads comes from the bridge (acks, its roster, its
#: campaigns), but a stolen bridge certificate must not exhaust a Pi's memory with 32 MB messages.
#: An empty inbox always takes one message (a roster bundle may be that big).
INBOX_LIMITS = InboxLimits(
    messages=10_000,
    bytes=64 * 1024 * 1024,
    sender_messages=10_000,
    sender_bytes=64 * 1024 * 1024,
)
# No advert for this long (monotonic s) and the gateway, not the radio, drives housekeeping.
QUIET_S = HOUSEKEEPING_EVERY_S
SOFTWARE = f"threshold-edge {__version__}"
#: In the data directory: held while `edge-gateway run` runs (edge/adapters/instance_lock.py).
INSTANCE_LOCK_NAME = "edge-gateway.lock"
#: A loop busy this long without finishing is stalled, when systemd sets no WatchdogSec=.
STALL_LIMIT_S = 60.0
#: How often stalls are looked for (and logged) when systemd sets no WatchdogSec=.
WATCHDOG_CHECK_S = 10.0
#: How long each step of a shutdown may take: the loops ending, the goodbye, the database closing.
CLOSE_TIMEOUT_S = 5.0
#: How often (radio seconds) open visits' times are written, for a restart to carry them on: a
#: crash loses at most this much of a visit's last sightings. They are also written at entry (with
#: the visit) and at close.
OPEN_VISITS_SAVE_EVERY_S = 5.0


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
    return SimulatedAdvertSource(entrance.stream(), sim.speed)


def build_checkin_service(
    config: GatewayConfig,
    challenge: Callable[[], bytes],
    write: Callable[[bytes, str, float | None], Awaitable[CheckinResult]],
) -> BluezCheckinService | None:
    """The iPhone check-in GATT service through BlueZ, on the adapter of [radio.bleak], when the
    config serves it (`[checkin] enabled` with a real radio; never with the simulated one)."""
    if not config.serves_checkin:
        return None
    return BluezCheckinService(config.radio.bleak.adapter or None, challenge, write)


EventListener = Callable[[Sequence[wire.Event]], None]


def _clip(value: object, max_chars: int = 300) -> object:
    """A status value within the wire's limits: long texts (a radio error) are cut short."""
    return value[:max_chars] if isinstance(value, str) else value


async def _true() -> bool:
    return True


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
        notifier: SdNotifier | None = None,
        stall_limit_s: float | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.notifier = notifier if notifier is not None else SdNotifier()
        #: Which loops make progress (edge/core/liveness.py): the watchdog feeds systemd on it.
        self.liveness = Liveness(
            ("radio", "uplink", "inbox", "status", "database"),
            monotonic(),
            stall_limit_s or self.notifier.watchdog_s or STALL_LIMIT_S,
        )
        self.db_watch = DatabaseWatch(store.path, "gateway database")
        #: Why the gateway stops, once a loop failed (the first failure).
        self.failure: Failure | None = None
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
            OfferEngine(None, gateway=config.address.gateway),
            new_event_id,
        )
        self._last_radio_s: float | None = None
        self._last_batch_mono: float | None = None
        #: Events made outside a loop's batch (a clock step's visit ends), stored with the next.
        self._unstored: list[wire.Event] = []
        self._next_visits_save_s = float("-inf")
        #: Open visits read back at start-up that did not decode (dropped, logged).
        self.open_visits_dropped = 0
        #: iPhone check-ins (edge/core/checkin.py): looks EIDs up in whatever resolver the last
        #: roster sync installed.
        self.checkin = CheckinVerifier(os.urandom, lambda eid: self.pipeline.resolver.resolve(eid))
        #: The GATT service BlueZ relays iPhones' check-ins through, while `run` serves it.
        self.checkin_service: BluezCheckinService | None = None
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
        self._inbox = FairInbox(INBOX_LIMITS, self._inbox_full)
        self._status_wakeup = asyncio.Event()
        self._leaving = False
        #: Messages dropped because they broke the wire contract (ack, roster, campaigns, others).
        self.rejected_messages = 0
        # Acks not signed by a trusted bridge key for this gateway's ack topic: they drain nothing.
        self._trusted_signers = tuple(trusted_signers)
        self.acks_refused = 0
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
                # Room for a full roster bundle; the broker drops anything larger for us.
                max_packet_bytes=wire.MAX_GATEWAY_PACKET_BYTES,
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
                (wire.campaigns_topic(self.address), 1),
            ],
            on_message=self._on_message,
            on_connect=self._on_connect,
        )
        self.uplink = Uplink(
            self.mqtt,
            store,
            self.address,
            config.uplink.ack_timeout_s,
            config.uplink.batch,
            liveness=self.liveness,
        )
        self._adverts_window = (time.monotonic(), 0)
        self.adverts_per_s = 0.0
        #: Judges the gateway's clock from the windows resolved EIDs come from; fed every status tick.
        self.clock_check = ClockCheck()
        #: Notices a step of the wall clock (NTP), every advert batch and housekeeping tick.
        self.clock_steps = ClockStepDetector()

    @classmethod
    async def open(
        cls,
        config: GatewayConfig,
        source: AdvertSource,
        notifier: SdNotifier | None = None,
        stall_limit_s: float | None = None,
    ) -> Gateway:
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
            gateway = cls(
                config, source, store, keys, signers, notifier=notifier, stall_limit_s=stall_limit_s
            )
            gateway.pipeline.offers.history = await store.load_history()
            await gateway.sync.restore()
            await gateway.restore_visits()
        except BaseException:
            await store.close()
            raise
        if config.privacy.retention_s < WEEK_S:
            _LOGGER.warning(
                "[privacy] retention_s is %g s, shorter than the 7 days members' weekly offer caps "
                "count back: this gateway counts only that far, and may exceed a weekly cap%s",
                config.privacy.retention_s,
                # A local day lasts up to 25 h: shorter, today's offers are forgotten before its end.
                ", a campaign's daily cap or its daily budget"
                if config.privacy.retention_s < 2 * DAY_S
                else "",
            )
        _LOGGER.info(
            "gateway key %s (sealed with the %s), trusting bridge keys %s",
            keys.key_id,
            "Pi's OTP key" if keys.source == "otp" else "key file: weaker",
            ", ".join(bundle.key_id(k) for k in signers),
        )
        return gateway

    async def close(self) -> None:
        """Save the open visits' last times and close the database; a database that does not close
        within CLOSE_TIMEOUT_S is left to the process's exit (edge/process.py), logged."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.save_open_visits()
        except (TimeoutError, sqlite3.Error, ValueError) as exc:  # ValueError: closed already
            _LOGGER.error(
                "open visits' last times not saved in %s (after a restart they go on from their "
                "last save): %r",
                self.store.path,
                exc,
            )
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.store.close()
        except (TimeoutError, sqlite3.Error) as exc:
            _LOGGER.error("gateway database %s did not close: %r", self.store.path, exc)

    async def restore_visits(self) -> None:
        """At start-up: take back the visits the last run left open (edge/core/visits.py). Those
        last heard longer ago than the visit timeout end now (reason "restart"), stored for the
        uplink; the others go on. Rows that do not decode were dropped by the store, logged."""
        visits, dropped = await self.store.load_open_visits()
        self.open_visits_dropped += dropped
        wall = self._wall()
        events = self.pipeline.restore_visits(visits, self.radio_now(), wall)
        await self._store_events(events, wall)
        if visits:
            _LOGGER.info(
                "%d visit(s) open when the gateway stopped: %d go on, %d ended at their last "
                "sighting (gone longer than the visit timeout)",
                len(visits),
                len(visits) - len(events),
                len(events),
            )

    async def save_open_visits(self) -> None:
        """Write the open visits heard since they were last written (a restart carries them on)."""
        opened, refreshed = self.pipeline.visits_to_save()
        if opened or refreshed:
            await self.store.save_open_visits(opened, refreshed)

    async def _save_open_visits_every(self, now_s: float) -> None:
        """`save_open_visits`, every OPEN_VISITS_SAVE_EVERY_S of radio time."""
        due_s = self._next_visits_save_s
        if now_s >= due_s or now_s < due_s - OPEN_VISITS_SAVE_EVERY_S:  # or the clock stepped back
            self._next_visits_save_s = now_s + OPEN_VISITS_SAVE_EVERY_S
            await self.save_open_visits()

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
        checkin = build_checkin_service(self.config, self.checkin_challenge, self.checkin_write)
        self.checkin_service = checkin
        if checkin is not None and not beacon.enabled:
            _LOGGER.warning(
                "iPhone check-in is served but [store_beacon] is off: a backgrounded iPhone app "
                "is woken only by its own scan for the check-in service, slower than by the "
                "store's iBeacon region (docs/iphone-checkin.md)"
            )
        try:
            # Both wait for BlueZ's first answer: side by side, not one after the other.
            beacon_up, checkin_up = await asyncio.gather(
                advertiser.start() if advertiser is not None else _true(),
                checkin.start() if checkin is not None else _true(),
            )
            if not beacon_up:
                _LOGGER.warning("store iBeacon not registered yet; retrying while BlueZ is away")
            if not checkin_up:
                _LOGGER.warning("iPhone check-in not served yet; retrying while BlueZ is away")
            await self._run_loops()
        finally:
            if checkin is not None:
                await checkin.stop()
            if advertiser is not None:
                await advertiser.stop()

    async def _run_loops(self) -> None:
        watchdog = Watchdog(
            self.notifier,
            self.liveness,
            self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else WATCHDOG_CHECK_S,
            checks=(self._radio_machinery_dead,),
        )
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "mqtt": self.mqtt.run(),
            "uplink": self.uplink.run(),
            "scan": self._scan(),
            "inbox": self._process_inbox(),
            "status": self._publish_status_periodically(),
            "housekeeping": self.housekeep_while_quiet(),
            "database": watch_database(self.db_watch, self.store.count, self.liveness),
            "watchdog": watchdog.run(),
        }
        async with asyncio.TaskGroup() as tg:
            for name, loop in loops.items():
                guarded = guard_loop(self, name, loop, CLOSE_TIMEOUT_S)
                tg.create_task(guarded, name=name)
            await asyncio.sleep(0)  # every loop started
            self.notifier.ready(f"gateway {self.address.prefix} running")

    def _radio_machinery_dead(self) -> str | None:
        """Why the radio's scan machinery is dead (its recovery gave up), or None while it runs:
        waiting for BlueZ, recovering or scanning a silent store all count as running."""
        health = self.source.health()
        if health.state is RadioState.FAILED:
            return f"radio failed: {health.last_error}"
        return None

    async def _scan(self) -> None:
        mono = self._mono
        self.liveness.idle("radio", mono())
        async for batch in self.source.batches():
            self.liveness.busy("radio", mono())
            self.check_clock_step()
            self._last_radio_s = batch[-1].t_s
            self._last_batch_mono = self._mono()
            wall = self._wall()
            events = self.pipeline.feed_many(batch, wall)
            await self._store_events(events, wall)
            await self._save_open_visits_every(self._last_radio_s)
            self.liveness.idle("radio", mono())
        _LOGGER.info("radio source %r ended", self.source.name)

    def checkin_now(self) -> float:
        """Radio time for a check-in: the last advert's time, carried on by the monotonic clock
        while the radio is quiet (as housekeeping does). Check-ins do not move radio time, so
        without this a store where only iPhones are heard would see no time pass: no challenge
        rotation, no throttle refill, and no dwell, hence no entry."""
        quiet = self.quiet_radio_now()
        return self.radio_now() if quiet is None else quiet

    def checkin_challenge(self) -> bytes:
        """The check-in challenge an iPhone app reads now (radio time: the same clock as adverts)."""
        return self.checkin.challenge(self.checkin_now())

    async def checkin_write(
        self, payload: bytes, central: str, link_rssi_dbm: float | None = None
    ) -> CheckinResult:
        """One check-in write from `central` (the GATT service's caller): verified, and if genuine fed
        to the pipeline as a sighting, its events stored for the uplink like an advert's."""
        t_s = self.checkin_now()
        result = self.checkin.verify(payload, central, t_s, link_rssi_dbm)
        if isinstance(result, CheckinAccepted):
            wall = self._wall()
            events = self.pipeline.check_in(result.device, t_s, result.rssi_dbm, wall)
            await self._store_events(events, wall)
        return result

    async def _store_events(self, events: list[wire.Event], wall: float) -> None:
        """Store events for the uplink (with a clock step's, if any are waiting), in one
        transaction with the visits they open (written at entry) and close (forgotten)."""
        if self._unstored:
            events, self._unstored = [*self._unstored, *events], []
        if events:
            opened: list[OpenVisit] = []
            refreshed: list[OpenVisit] = []
            if any(isinstance(e, wire.Visit) for e in events):
                opened, refreshed = self.pipeline.visits_to_save()
            await self.store.append_events(events, wall, opened, refreshed)
            self.uplink.wake()
            for listener in self.listeners:
                listener(events)

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
            self.check_clock_step()
            now_s = self.quiet_radio_now()
            wall = self._wall()
            events = [] if now_s is None else self.pipeline.housekeeping(now_s, wall)
            await self._store_events(events, wall)  # and a clock step's, if any
            if now_s is not None:
                await self._save_open_visits_every(now_s)

    def check_clock_step(self) -> bool:
        """Compare the wall clock's progress with the monotonic clock's; on a step, log it once and
        rebuild the resolver's windows for the new time at once. Return whether it stepped."""
        step = self.clock_steps.observe(self._wall(), self._mono())
        if step is None:
            return False
        _LOGGER.warning(
            "the wall clock stepped %s by %.1f s (NTP setting it?): rebuilding the resolver's "
            "windows for the new time",
            "forward" if step.step_s > 0 else "back",
            abs(step.step_s),
        )
        if self._last_radio_s is not None:
            self._last_radio_s += step.step_s  # radio time, carried through quiet spells, too
        # Visits that time out on the new clock: stored by the loop that asked, with its events.
        self._unstored += self.pipeline.clock_stepped(step.wall_s, step.step_s, step.wall_s)
        return True

    def _on_message(self, message: Message) -> None:
        self._inbox.offer(message)

    def _inbox_full(self, message: Message, reason: str) -> None:
        # An ack not handled means a resend and a duplicate the bridge acks again; a retained
        # roster or campaigns set comes back on the next (re)publish or reconnect.
        self._payload_errors.warning(
            "inbox-full",
            "dropped a message on %s (%d so far): %s",
            message.topic,
            self._inbox.dropped,
            reason,
        )

    @property
    def inbox_dropped(self) -> int:
        """Messages refused by the inbox for want of room."""
        return self._inbox.dropped

    async def _process_inbox(self) -> None:
        while True:
            self.liveness.idle("inbox", self._mono())
            message = await self._inbox.get()
            self.liveness.busy("inbox", self._mono())
            await self.handle_message(message)

    def _drop(self, message: Message, reason: str) -> None:
        """Count a message that breaks the contract; one WARNING per topic, then DEBUG."""
        self.rejected_messages += 1
        self._payload_errors.warning(
            f"rejected {message.topic}",
            "dropped a message (%d so far): %s",
            self.rejected_messages,
            reason,
        )

    async def handle_message(self, message: Message) -> None:
        """Act on one message from the broker; a bad one is counted and dropped, never raised.

        Retained rosters and campaigns come back on every reconnect: a bad retained one is dropped
        each time it is seen and changes nothing.
        """
        topic = message.topic
        where = f"topic {topic}"
        roster = wire.roster_bundle_topic(self.address)
        if topic == wire.ack_topic(self.address):
            await self._handle_ack(message)
        elif topic in (roster, wire.campaigns_topic(self.address)):
            rejections = self.sync.rejections
            if topic == roster:
                applied = await self.sync.apply_roster(message.payload, where)
            else:
                applied = await self.sync.apply_campaigns(message.payload, where)
            if self.sync.rejections != rejections:
                # The applier logged why (once per reason) and kept the last good set.
                self.rejected_messages += self.sync.rejections - rejections
            if applied or self.sync.rejections != rejections:
                # Tell the bridge (and monitoring) soon: the version is the bridge's
                # acknowledgement, a rejection may ask it for a full roster.
                self._status_wakeup.set()
        else:
            self._drop(message, f"{where}: not a topic this gateway listens on")

    async def _handle_ack(self, message: Message) -> None:
        """Forget the events an ack names, only if a trusted bridge key signed it for our topic.

        Anything else is refused: counted twice (`acks_refused`, and `rejected_messages` with every
        message that breaks the contract), logged once per topic, and removes nothing.
        """
        where = f"topic {message.topic}"
        try:
            verified = signed.verify(
                message.payload, wire.ack_topic(self.address), self._trusted_signers, where
            )
            ack = wire.decode_as(verified.payload, wire.Ack, where)
        except (signed.SignedRejected, wire.WireError) as exc:
            self.acks_refused += 1
            self._drop(message, f"ack refused, nothing removed from the outbox: {exc}")
            return
        await self.uplink.handle_ack(ack)

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
                **{k: _clip(v) for k, v in self.source.health().as_dict().items()},
                "adverts_per_s": round(self.adverts_per_s, 1),
                "radio_time": self._last_radio_s,
            },
            counters={
                **self.pipeline.counters.as_dict(),
                "visits_open": self.pipeline.open_visits,
                "open_visits_dropped": self.open_visits_dropped,
                **{f"checkin_{r}": n for r, n in self.checkin.refused.items()},
                **(self.checkin_service.counters() if self.checkin_service is not None else {}),
                "events_sent": self.uplink.sent,
                "events_acked": self.uplink.acked,
                "inbox_dropped": self.inbox_dropped,
                "rejected_messages": self.rejected_messages,
                "acks_refused": self.acks_refused,
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
        """Forget offers older than the retention (`[privacy] retention_s`, the refresh memory),
        offer times older than 7 days (no cap looks further back) and each campaign's offers older
        than CAMPAIGN_MEMORY_S (its caps and budgets), in memory and on disk; return how many
        (member, campaign) rows were purged."""
        keep_s = self.config.privacy.retention_s
        now_s = self.radio_now()
        self.pipeline.offers.history.prune(now_s, keep_s)
        return await self.store.purge_history(
            now_s - keep_s,
            now_s - min(keep_s, WEEK_S),
            now_s - min(keep_s, CAMPAIGN_MEMORY_S),
            now_s - CAMPAIGN_MEMORY_S,  # budgets: times without members
        )

    async def _publish_status_periodically(self) -> None:
        interval_s = self.config.uplink.status_interval_s
        next_tick = time.monotonic() + interval_s
        while True:
            self.liveness.idle("status", self._mono())
            try:
                async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                    await self._status_wakeup.wait()
            except TimeoutError:
                pass
            self.liveness.busy("status", self._mono())
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
            self.notifier.status(
                f"running: radio {self.source.health().state.value}, broker "
                f"{'connected' if self.mqtt.connected else 'unreachable'}, "
                f"{self.uplink.pending} events to send"
            )


async def run_gateway(config: GatewayConfig, notifier: SdNotifier | None = None) -> Failure | None:
    """`edge-gateway run`: until SIGTERM/SIGINT (None) or a loop fails (why; the caller exits with
    its code). Either way the loops end, the broker hears goodbye and the database is closed, each
    within CLOSE_TIMEOUT_S; what does not end in time is left to edge/process.py's hard exit."""
    notifier = notifier if notifier is not None else SdNotifier.from_environ()
    notifier.status("starting")
    with instance_lock(config.data_dir / INSTANCE_LOCK_NAME, "edge-gateway"):
        gateway = await Gateway.open(config, build_radio(config), notifier=notifier)
        if isinstance(gateway.source, SimulatedAdvertSource):
            # The simulated store's iPhones check in through the same entry as BlueZ's GATT service.
            gateway.source.serve_checkins(SimulatedCheckinService(gateway).deliver)
        _LOGGER.info("gateway %s running", config.address.prefix)
        return await run_until_stopped("gateway", gateway, notifier, CLOSE_TIMEOUT_S)
