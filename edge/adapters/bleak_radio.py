"""BLE adverts from BlueZ through bleak, kept alive through BlueZ's known failures.

`BleakAdvertSource` scans with a `BleakScanner` and turns each (BLEDevice, AdvertisementData) into a
`RawAdvert` whose payload is AD bytes re-encoded from the fields BlueZ reports (frames.encode_ad_fields).
Passive scanning goes through BlueZ's advertisement monitor (`or_patterns`) where the adapter offers it,
active scanning otherwise; duplicate filtering is off.

A supervisor keeps the scan alive. It watches `org.bluez` on its own system-bus connection (dbus-fast):
the name's owner (BlueZ restarting), adapter objects (unplug / replug) and `Adapter1.Powered`. Those
faults are waited out: no recovery step is spent on them. A stall (no advert for `stall_timeout_s`) or
a scan that cannot start (`org.bluez.Error.InProgress`, other BlueZ errors) climbs a ladder: restart the
scan `restart_limit` times, then power-cycle the adapter `power_cycle_limit` times, then give up:
`batches()` raises `RadioFailed` and the service exits non-zero so systemd restarts it. Adverts flowing
again count one recovery and reset the ladder.

Real-BlueZ quirks this relies on or works around: Device1 properties are a merged, sticky view of
adverts and scan responses (not one report); BlueZ signals property changes, so a report identical to
the previous one (same RSSI, same data) never reaches us; passive monitors need BlueZ's
AdvertisementMonitorManager1 (BlueZ >= 5.56, on some versions only with `bluetoothd --experimental`);
StopDiscovery can answer InProgress (bleak retries it, https://github.com/bluez/bluez/issues/807) and
a discovery state stuck that way needs a power cycle.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakError,
)
from dbus_fast import BusType, Message, MessageType, Variant, unpack_variants
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

from edge.core import frames
from edge.core.advert import RawAdvert
from edge.core.backoff import Backoff
from edge.core.health import RadioHealth, RadioState
from edge.errors import EdgeError
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)

ScanMode = Literal["passive", "active", "auto"]
SCAN_MODES: tuple[ScanMode, ...] = ("passive", "active", "auto")

# D-Bus names (BlueZ doc/org.bluez.*.rst, D-Bus specification).
BLUEZ_SERVICE = "org.bluez"
DBUS_SERVICE = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
ADAPTER_IFACE = "org.bluez.Adapter1"
MONITOR_MANAGER_IFACE = "org.bluez.AdvertisementMonitorManager1"
ADVERTISING_MANAGER_IFACE = "org.bluez.LEAdvertisingManager1"
GATT_MANAGER_IFACE = "org.bluez.GattManager1"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
ERROR_NOT_READY = "org.bluez.Error.NotReady"
ERROR_NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"
# BlueZ (or its adapter object) is not there: waiting helps, a recovery step does not.
UNAVAILABLE_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        ERROR_NAME_HAS_NO_OWNER,
        "org.freedesktop.DBus.Error.UnknownObject",
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.freedesktop.DBus.Error.NoReply",
        ERROR_NOT_READY,
    }
)

# What the passive monitor lets through (BlueZ matches each pattern against one AD structure's data).
THRESHOLD_OR_PATTERNS: tuple[OrPattern, ...] = (
    # Eddystone: 16-bit service data for UUID 0xFEAA, little-endian (Eddystone protocol spec).
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xaa\xfe"),
    # The shopper app's frame: manufacturer data with company id 0xFFFF.
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xff\xff"),
    # Apple iBeacon: company 0x004C, type 0x02, length 0x15.
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00\x02\x15"),
    # AltBeacon: beacon code 0xBEAC after any company id.
    OrPattern(2, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xbe\xac"),
)

CALL_TIMEOUT_S = 10.0  # any one D-Bus call, scanner start or stop
POWER_TIMEOUT_S = 10.0  # for Powered to follow a Properties.Set
WAIT_POLL_MIN_S = 0.1  # waiting for BlueZ / an adapter / power: re-read everything this often,
WAIT_POLL_MAX_S = 5.0  # backing off to this (signals wake the wait at once)
RETRY_MIN_S = 0.2  # after a failed scan start (InProgress and friends)
RETRY_MAX_S = 5.0
RATE_WINDOW_S = 5.0
_HCI_NAME = re.compile(r"hci[0-9]+")
_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


class RadioError(EdgeError):
    """The BLE radio could not do something; `reason` says what and where, `dbus_error` is BlueZ's."""

    def __init__(
        self, reason: str, *, adapter: str | None = None, dbus_error: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.adapter = adapter
        self.dbus_error = dbus_error


class RadioUnavailable(RadioError):
    """BlueZ, the adapter or its power is missing: waiting for it helps, a recovery step does not."""


class RadioFailed(RadioError):
    """Recovery gave up, or the configuration cannot work: exit non-zero so systemd restarts us."""


def check_adapter_spec(adapter: str | None) -> None:
    """Raise ValueError unless `adapter` is None (the first adapter), "hciN" or a MAC address."""
    if adapter is None or _HCI_NAME.fullmatch(adapter) or _ADDRESS.fullmatch(adapter):
        return
    raise ValueError(
        f"adapter {adapter!r} is neither an adapter name like 'hci0' nor an address like "
        "'00:1A:7D:DA:71:13' (see `bluetoothctl list`)"
    )


# --- The recovery ladder: pure, every transition here. ---


class RecoveryStep(enum.Enum):
    RESTART_SCAN = "restart the scan"
    POWER_CYCLE = "power-cycle the adapter"
    GIVE_UP = "give up"


class RecoveryLadder:
    """The step each consecutive failure calls for; adverts flowing again reset it.

    Failures 1..restart_limit restart the scan; the next power_cycle_limit power-cycle the adapter;
    the one after gives up.
    """

    def __init__(self, restart_limit: int, power_cycle_limit: int) -> None:
        if restart_limit < 0 or power_cycle_limit < 0:
            raise ValueError("restart_limit and power_cycle_limit must be >= 0")
        self.restart_limit = restart_limit
        self.power_cycle_limit = power_cycle_limit
        self.failures = 0

    def step_after_failure(self) -> RecoveryStep:
        self.failures += 1
        if self.failures <= self.restart_limit:
            return RecoveryStep.RESTART_SCAN
        if self.failures <= self.restart_limit + self.power_cycle_limit:
            return RecoveryStep.POWER_CYCLE
        return RecoveryStep.GIVE_UP

    def reset(self) -> None:
        self.failures = 0


# --- org.bluez as seen over our own system-bus connection. ---


@dataclass(slots=True)
class AdapterInfo:
    """One BlueZ adapter object as last seen."""

    path: str
    address: str
    powered: bool
    roles: tuple[str, ...]
    monitor_types: tuple[str, ...] | None  # None: no AdvertisementMonitorManager1 on this adapter
    can_advertise: bool  # LEAdvertisingManager1 is there
    can_serve_gatt: bool = False  # GattManager1 is there (the iPhone check-in service)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def passive_capable(self) -> bool:
        return self.monitor_types is not None and "or_patterns" in self.monitor_types

    def update(self, interfaces: dict[str, dict[str, Any]]) -> None:
        """Apply unpacked properties of InterfacesAdded / GetManagedObjects / PropertiesChanged."""
        adapter = interfaces.get(ADAPTER_IFACE, {})
        if "Address" in adapter:
            self.address = str(adapter["Address"])
        if "Powered" in adapter:
            self.powered = bool(adapter["Powered"])
        if "Roles" in adapter:
            self.roles = tuple(str(r) for r in adapter["Roles"])
        if MONITOR_MANAGER_IFACE in interfaces:
            types = interfaces[MONITOR_MANAGER_IFACE].get("SupportedMonitorTypes", [])
            self.monitor_types = tuple(str(t) for t in types)
        if ADVERTISING_MANAGER_IFACE in interfaces:
            self.can_advertise = True
        if GATT_MANAGER_IFACE in interfaces:
            self.can_serve_gatt = True


@dataclass(frozen=True, slots=True)
class AdapterSnapshot:
    """Identity of the adapter a scan or advertisement was set up on, to notice it changed under us."""

    owner: str | None
    incarnation: int
    power_offs: int


_MATCH_RULES = (
    f"type='signal',sender='{DBUS_SERVICE}',interface='{DBUS_SERVICE}',"
    f"member='NameOwnerChanged',arg0='{BLUEZ_SERVICE}'",
    f"type='signal',interface='{OBJECT_MANAGER_IFACE}',member='InterfacesAdded',"
    "arg0path='/org/bluez/'",
    f"type='signal',interface='{OBJECT_MANAGER_IFACE}',member='InterfacesRemoved',"
    "arg0path='/org/bluez/'",
    # Adapter properties only: device RSSI updates are bleak's business, not this connection's.
    f"type='signal',interface='{PROPERTIES_IFACE}',member='PropertiesChanged',"
    f"path_namespace='/org/bluez',arg0='{ADAPTER_IFACE}'",
)


def _adapter_info(path: str, interfaces: dict[str, dict[str, Any]]) -> AdapterInfo:
    info = AdapterInfo(path, "", False, ("central", "peripheral"), None, False)
    info.update(interfaces)
    return info


class BluezObjects:
    """BlueZ's bus owner and adapters, read once and then kept current by signals.

    `changed` is set on every change a scanner or advertiser cares about; a waiter clears it, checks
    the state, then waits. Counters (`incarnations`, `power_offs`) let a waiter notice an adapter
    that went away and came back, or was powered off and on, between two looks.
    """

    def __init__(self, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._bus: MessageBus | None = None
        self._call_timeout_s = call_timeout_s
        self._stale = True
        self.owner: str | None = None
        self.adapters: dict[str, AdapterInfo] = {}
        self.incarnations: dict[str, int] = {}
        self.power_offs: dict[str, int] = {}
        self.changed = asyncio.Event()

    @property
    def bus(self) -> MessageBus | None:
        return self._bus if self._bus is not None and self._bus.connected else None

    async def connect(self) -> MessageBus:
        """Connect to the system bus (DBUS_SYSTEM_BUS_ADDRESS) if not connected; listen to BlueZ."""
        if (bus := self.bus) is not None:
            return bus
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
        try:
            bus = MessageBus(bus_type=BusType.SYSTEM)
        except (OSError, DBusFastError) as exc:
            raise RadioUnavailable(f"cannot reach the D-Bus system bus: {exc!r}") from exc
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await bus.connect()
        except (OSError, TimeoutError, DBusFastError) as exc:
            bus.disconnect()  # releases the socket the constructor opened
            raise RadioUnavailable(
                f"cannot connect to the D-Bus system bus: {exc!r}; is dbus running, and may this "
                "user use it (group `bluetooth`)?"
            ) from exc
        bus.add_message_handler(self._on_message)
        try:
            for rule in _MATCH_RULES:
                await self._call(
                    Message(
                        destination=DBUS_SERVICE,
                        path=DBUS_PATH,
                        interface=DBUS_SERVICE,
                        member="AddMatch",
                        signature="s",
                        body=[rule],
                    ),
                    bus,
                )
        except RadioError:
            bus.disconnect()
            raise
        self._bus = bus
        self._stale = True
        return bus

    async def close(self) -> None:
        if self._bus is not None:
            bus, self._bus = self._bus, None
            bus.disconnect()
            if bus.connected:
                try:
                    async with asyncio.timeout(self._call_timeout_s):
                        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
                except (TimeoutError, OSError, EOFError, DBusFastError) as exc:
                    _LOGGER.debug("closing the system-bus connection: %r", exc)

    def mark_stale(self) -> None:
        """Re-read everything at the next `ensure_fresh()` (a poll, in case a signal was missed)."""
        self._stale = True

    async def ensure_fresh(self) -> None:
        if self._stale or self.bus is None:
            await self.refresh()

    async def refresh(self) -> None:
        """Read BlueZ's owner and adapters afresh (GetNameOwner, GetManagedObjects)."""
        bus = await self.connect()
        try:
            reply = await self._call(
                Message(
                    destination=DBUS_SERVICE,
                    path=DBUS_PATH,
                    interface=DBUS_SERVICE,
                    member="GetNameOwner",
                    signature="s",
                    body=[BLUEZ_SERVICE],
                ),
                bus,
            )
            owner: str | None = str(reply.body[0])
        except RadioUnavailable as exc:
            if exc.dbus_error != ERROR_NAME_HAS_NO_OWNER:
                raise
            owner = None
        if owner != self.owner:
            self._set_owner(owner)
        if owner is not None:
            reply = await self._call(
                Message(
                    destination=BLUEZ_SERVICE,
                    path="/",
                    interface=OBJECT_MANAGER_IFACE,
                    member="GetManagedObjects",
                ),
                bus,
            )
            seen = set()
            for path, interfaces in reply.body[0].items():
                if ADAPTER_IFACE in interfaces:
                    seen.add(path)
                    self._adapter_seen(path, unpack_variants(interfaces))
            for path in set(self.adapters) - seen:
                self._adapter_gone(path)
        self._stale = False

    def resolve(self, spec: str | None) -> AdapterInfo | None:
        """The adapter named ("hci0") or addressed by `spec`; for None, the first (powered) central."""
        if spec is None:
            adapters = sorted(self.adapters.values(), key=lambda a: a.path)
            centrals = [a for a in adapters if "central" in a.roles]
            return next((a for a in centrals if a.powered), centrals[0] if centrals else None)
        if _HCI_NAME.fullmatch(spec):
            return self.adapters.get(f"/org/bluez/{spec}")
        return next((a for a in self.adapters.values() if a.address.upper() == spec.upper()), None)

    def snapshot(self, path: str) -> AdapterSnapshot:
        return AdapterSnapshot(
            self.owner, self.incarnations.get(path, 0), self.power_offs.get(path, 0)
        )

    def fault(self, path: str, since: AdapterSnapshot) -> str | None:
        """What changed about adapter `path` since `since` that ends a scan or advertisement."""
        name = path.rsplit("/", 1)[-1]
        if self.owner is None:
            return "BlueZ (org.bluez) left the system bus"
        if self.owner != since.owner:
            return "BlueZ restarted (org.bluez has a new owner)"
        adapter = self.adapters.get(path)
        if adapter is None:
            return f"adapter {name} disappeared (unplugged?)"
        if self.incarnations.get(path, 0) != since.incarnation:
            return f"adapter {name} was removed and added again"
        if not adapter.powered:
            return f"adapter {name} was powered off"
        if self.power_offs.get(path, 0) != since.power_offs:
            return f"adapter {name} was powered off and on again"
        return None

    async def wait_changed(self, timeout_s: float) -> bool:
        """Wait for `changed` (cleared by the caller before it looked); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.changed.wait()
        except TimeoutError:
            return False
        return True

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `predicate()` holds, re-checking on every change; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.changed.clear()
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not await self.wait_changed(min(remaining, WAIT_POLL_MAX_S)):
                await self.refresh()

    async def set_powered(self, path: str, powered: bool) -> None:
        """Adapter1.Powered through org.freedesktop.DBus.Properties.Set."""
        await self.call_bluez(
            path, PROPERTIES_IFACE, "Set", "ssv", [ADAPTER_IFACE, "Powered", Variant("b", powered)]
        )

    async def call_bluez(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> Message:
        bus = await self.connect()
        return await self._call(
            Message(
                destination=BLUEZ_SERVICE,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            ),
            bus,
        )

    async def _call(self, message: Message, bus: MessageBus) -> Message:
        """One call with a timeout; a D-Bus error becomes RadioError (RadioUnavailable if waiting helps)."""
        where = f"{message.interface}.{message.member} on {message.path}"
        try:
            async with asyncio.timeout(self._call_timeout_s):
                reply = await bus.call(message)
        except TimeoutError as exc:
            raise RadioError(f"{where}: no reply within {self._call_timeout_s} s") from exc
        except (OSError, EOFError, DBusFastError) as exc:
            raise RadioUnavailable(f"{where}: lost the system bus: {exc!r}") from exc
        if reply is None:
            raise RadioUnavailable(f"{where}: lost the system bus")
        if reply.message_type == MessageType.ERROR:
            name = reply.error_name or "unknown error"
            detail = f": {reply.body[0]}" if reply.body else ""
            kind = RadioUnavailable if name in UNAVAILABLE_ERRORS else RadioError
            raise kind(f"{where} failed: {name}{detail}", dbus_error=name)
        return reply

    def _set_owner(self, owner: str | None) -> None:
        self.owner = owner
        for path in list(self.adapters):
            self._adapter_gone(path)
        self._stale = True
        self.changed.set()

    def _adapter_seen(self, path: str, interfaces: dict[str, dict[str, Any]]) -> None:
        adapter = self.adapters.get(path)
        if adapter is None:
            self.adapters[path] = _adapter_info(path, interfaces)
            self.incarnations[path] = self.incarnations.get(path, 0) + 1
        else:
            was_powered = adapter.powered
            adapter.update(interfaces)
            if was_powered and not adapter.powered:
                self.power_offs[path] = self.power_offs.get(path, 0) + 1
        self.changed.set()

    def _adapter_gone(self, path: str) -> None:
        if self.adapters.pop(path, None) is not None:
            self.changed.set()

    def _on_message(self, message: Message) -> None:
        """Signal handler: must not raise (it runs inside dbus-fast's reader)."""
        if message.message_type != MessageType.SIGNAL:
            return
        member = message.member
        body = message.body
        try:
            if member == "NameOwnerChanged" and body[0] == BLUEZ_SERVICE:
                self._set_owner(str(body[2]) or None)
            elif member == "InterfacesAdded":
                path, interfaces = str(body[0]), body[1]
                if ADAPTER_IFACE in interfaces or path in self.adapters:
                    self._adapter_seen(path, unpack_variants(interfaces))
            elif member == "InterfacesRemoved":
                path, names = str(body[0]), body[1]
                if ADAPTER_IFACE in names:
                    self._adapter_gone(path)
                elif path in self.adapters:
                    adapter = self.adapters[path]
                    if MONITOR_MANAGER_IFACE in names:
                        adapter.monitor_types = None
                    if ADVERTISING_MANAGER_IFACE in names:
                        adapter.can_advertise = False
                    if GATT_MANAGER_IFACE in names:
                        adapter.can_serve_gatt = False
                    self.changed.set()
            elif member == "PropertiesChanged" and body[0] == ADAPTER_IFACE:
                path = str(message.path)
                if path in self.adapters:
                    self._adapter_seen(path, {ADAPTER_IFACE: unpack_variants(body[1])})
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
            _LOGGER.debug("ignored a malformed %s signal from %s: %r", member, message.sender, exc)
            self._stale = True


# --- The advert source. ---


@dataclass(slots=True)
class _Scan:
    scanner: BleakScanner
    adapter: str
    mode: ScanMode


class BleakAdvertSource:
    """Adverts heard through BlueZ via bleak, delivered in batches; recovers from BlueZ's failures."""

    name = "bleak"

    def __init__(
        self,
        adapter: str | None,
        *,
        mode: ScanMode = "auto",
        stall_timeout_s: float = 120.0,
        restart_limit: int = 3,
        power_cycle_limit: int = 2,
        clock: Callable[[], float] = time.time,
        queue_max: int = 10_000,
        batch_max: int = 1_000,
        call_timeout_s: float = CALL_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        check_adapter_spec(adapter)
        if mode not in SCAN_MODES:
            raise ValueError(f"scan mode {mode!r} is not one of {', '.join(SCAN_MODES)}")
        if stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be > 0")
        if queue_max < 1 or batch_max < 1:
            raise ValueError("queue_max and batch_max must be >= 1")
        self._adapter_spec = adapter
        self._mode: ScanMode = mode
        self._stall_timeout_s = stall_timeout_s
        self._clock = clock
        self._mono = monotonic
        self._queue_max = queue_max
        self._batch_max = batch_max
        self._call_timeout_s = call_timeout_s
        self._ladder = RecoveryLadder(restart_limit, power_cycle_limit)
        self._queue: deque[RawAdvert] = deque()
        self._ready = asyncio.Event()
        self._log = OnceLogger(_LOGGER)
        self._scan: _Scan | None = None
        self._passive_refused: set[tuple[str, int]] = set()  # (adapter path, incarnation)
        self._running = False
        self._recovering = False  # a fault or stall was seen; the next advert completes a recovery
        self._last_advert_mono: float | None = None
        self._rate_window = (monotonic(), 0)
        self._rate = 0.0
        self._rate_measured = False
        self.state = RadioState.STARTING
        self.last_error: str | None = None
        self.recoveries = 0
        self.received = 0  # adverts BlueZ reported, including dropped and unencodable ones
        self.dropped = 0  # queue full
        self.unencodable = 0
        self.scan_mode: ScanMode | None = None  # the mode of the running scan
        self.adapter_name: str | None = None  # the adapter of the running (or last) scan

    # --- what the gateway sees ---

    def health(self) -> RadioHealth:
        """A snapshot; adverts/s is measured over the last full RATE_WINDOW_S (at first, so far)."""
        now = self._mono()
        started, count = self._rate_window
        elapsed = now - started
        if elapsed >= RATE_WINDOW_S:
            self._rate = (self.received - count) / elapsed
            self._rate_window = (now, self.received)
            self._rate_measured = True
        elif not self._rate_measured and elapsed > 0:
            self._rate = (self.received - count) / elapsed
        return RadioHealth(
            source=self.name,
            state=self.state,
            adverts_per_s=self._rate,
            last_advert_age_s=None
            if self._last_advert_mono is None
            else now - self._last_advert_mono,
            recoveries=self.recoveries,
            last_error=self.last_error,
        )

    async def batches(self) -> AsyncIterator[list[RawAdvert]]:
        """Scan until cancelled, yielding adverts in order; raises RadioFailed when recovery gives up."""
        if self._running:
            raise RuntimeError("BleakAdvertSource.batches() is already running")
        self._running = True
        supervisor = asyncio.create_task(self._supervise(), name=f"bleak-supervisor-{self._label}")
        supervisor.add_done_callback(lambda _: self._ready.set())
        try:
            while True:
                if self._queue:
                    count = min(len(self._queue), self._batch_max)
                    yield [self._queue.popleft() for _ in range(count)]
                    continue
                if supervisor.done():
                    supervisor.result()  # raises RadioFailed (or a bug) out of batches()
                    return
                self._ready.clear()
                if not self._queue and not supervisor.done():
                    try:
                        async with asyncio.timeout(self._stall_timeout_s):
                            await self._ready.wait()
                    except TimeoutError:
                        pass  # the supervisor owns stall handling; just look again
        finally:
            self._running = False
            if not supervisor.done():
                supervisor.cancel()
            try:
                async with asyncio.timeout(2 * self._call_timeout_s + 1):
                    await asyncio.wait({supervisor})
            except TimeoutError:
                _LOGGER.error("the bleak supervisor did not stop within its timeout")
            crashed = (
                supervisor.done()
                and not supervisor.cancelled()
                and supervisor.exception() is not None
            )
            if crashed or self.state is RadioState.FAILED:
                self.state = RadioState.FAILED
            else:
                self.state = RadioState.STOPPED

    @property
    def _label(self) -> str:
        return self._adapter_spec or "default adapter"

    # --- the detection callback: bleak calls it from its D-Bus signal handler ---

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._last_advert_mono = self._mono()
        self.received += 1
        if self._recovering:
            self._recovering = False
            self.recoveries += 1
            self._ladder.reset()
            _LOGGER.info(
                "radio on %s recovered: adverts flow again (last problem: %s)",
                self.adapter_name,
                self.last_error,
            )
        try:
            payload = frames.encode_ad_fields(
                manufacturer_data=adv.manufacturer_data,
                service_data=adv.service_data,
                service_uuids=adv.service_uuids,
                local_name=adv.local_name,
                tx_power_dbm=adv.tx_power,
            )
        except ValueError as exc:
            self.unencodable += 1
            self._log.warning("unencodable", "dropped an advert from %s: %s", device.address, exc)
            return
        if len(self._queue) >= self._queue_max:
            self.dropped += 1
            self._log.warning(
                "queue-full",
                "radio queue full (%d adverts, the pipeline is behind): dropping new adverts",
                self._queue_max,
            )
            return
        self._queue.append(RawAdvert(self._clock(), device.address, adv.rssi, payload))
        self._ready.set()

    # --- the supervisor ---

    async def _supervise(self) -> None:
        objects = BluezObjects(self._call_timeout_s)
        retry = Backoff(RETRY_MIN_S, RETRY_MAX_S, random.random)
        power_cycle_due = False
        try:
            while True:
                adapter = await self._wait_until_ready(objects)
                if power_cycle_due:
                    power_cycle_due = False
                    try:
                        await self._power_cycle(objects, adapter)
                    except RadioUnavailable as exc:
                        self._fault("power-cycle", exc.reason)
                    except RadioError as exc:
                        power_cycle_due = self._escalate(exc.reason) is RecoveryStep.POWER_CYCLE
                        await asyncio.sleep(retry.next_delay_s())
                    continue  # look at BlueZ and the adapter again before starting
                snapshot = objects.snapshot(adapter.path)
                try:
                    await self._start_scan(adapter, objects.incarnations.get(adapter.path, 0))
                except RadioFailed:
                    raise
                except RadioError as exc:
                    try:
                        await objects.refresh()
                    except RadioError as refresh_exc:
                        _LOGGER.debug("refresh after a failed start: %s", refresh_exc.reason)
                    fault = objects.fault(adapter.path, snapshot)
                    if fault is not None or isinstance(exc, _PassiveRefused):
                        self._fault("start", fault or exc.reason)
                    else:  # BlueZ and the adapter look fine, yet the scan would not start
                        step = self._escalate(exc.reason)
                        power_cycle_due = step is RecoveryStep.POWER_CYCLE
                    await asyncio.sleep(retry.next_delay_s())
                    continue
                retry.reset()
                self.state = RadioState.SCANNING
                outcome = await self._watch(objects, adapter, snapshot)
                await self._stop_scan()
                if outcome is None:
                    stalled = f"no adverts for {self._stall_timeout_s:g} s on {adapter.name}"
                    power_cycle_due = self._escalate(stalled) is RecoveryStep.POWER_CYCLE
                else:
                    self._fault("watch", outcome)
        except RadioFailed as exc:
            self.state = RadioState.FAILED
            self.last_error = exc.reason
            raise
        finally:
            await self._stop_scan()
            await objects.close()

    async def _wait_until_ready(self, objects: BluezObjects) -> AdapterInfo:
        """Wait (polling with backoff, woken by signals) for BlueZ and a powered adapter."""
        poll = Backoff(WAIT_POLL_MIN_S, WAIT_POLL_MAX_S, random.random)
        while True:
            objects.changed.clear()
            try:
                await objects.ensure_fresh()
                if objects.owner is None:
                    problem = (
                        "BlueZ (org.bluez) is not on the system bus: waiting for bluetooth.service"
                    )
                elif (adapter := objects.resolve(self._adapter_spec)) is None:
                    problem = (
                        f"adapter {self._label} not found: waiting for it to be plugged in "
                        "(`bluetoothctl list` shows the adapters)"
                    )
                elif not adapter.powered:
                    problem = (
                        f"adapter {adapter.name} is powered off: waiting for it to be powered on "
                        "(`bluetoothctl power on`; check `rfkill list`)"
                    )
                else:
                    return adapter
            except RadioError as exc:
                problem = exc.reason
                objects.mark_stale()
            self._fault("wait", problem)
            if not await objects.wait_changed(poll.next_delay_s()):
                objects.mark_stale()

    async def _start_scan(self, adapter: AdapterInfo, incarnation: int) -> None:
        mode = self._mode
        if mode == "passive" and not adapter.passive_capable:
            raise RadioFailed(
                f"adapter {adapter.name} cannot scan passively (its BlueZ offers no "
                "AdvertisementMonitorManager1 with or_patterns; BlueZ >= 5.56, older ones need "
                "`bluetoothd --experimental`): set the radio's scan mode to auto or active",
                adapter=adapter.name,
            )
        if mode == "auto":
            refused = (adapter.path, incarnation) in self._passive_refused
            mode = "passive" if adapter.passive_capable and not refused else "active"
        bluez: BlueZScannerArgs = {"adapter": adapter.name}
        if mode == "passive":
            bluez["or_patterns"] = list(THRESHOLD_OR_PATTERNS)
        else:
            # bleak sets these too; spelled out because the pipeline needs every report.
            bluez["filters"] = {"Transport": "le", "DuplicateData": False}
        scanner = BleakScanner(
            self._on_advert, scanning_mode="active" if mode == "active" else "passive", bluez=bluez
        )
        verb = f"starting a {mode} scan on {adapter.name}"
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await scanner.start()
        except BleakDBusError as exc:
            if exc.dbus_error in UNAVAILABLE_ERRORS:
                raise RadioUnavailable(
                    f"{verb}: {exc}", adapter=adapter.name, dbus_error=exc.dbus_error
                ) from exc
            if mode == "passive" and self._mode == "auto":  # RegisterMonitor refused
                self._passive_refused.add((adapter.path, incarnation))
                raise _PassiveRefused(
                    f"{verb}: BlueZ refused the advertisement monitor ({exc}); "
                    "scanning actively instead",
                    adapter=adapter.name,
                    dbus_error=exc.dbus_error,
                ) from exc
            # e.g. org.bluez.Error.InProgress from StartDiscovery: retried on the recovery ladder
            raise RadioError(
                f"{verb}: {exc}", adapter=adapter.name, dbus_error=exc.dbus_error
            ) from exc
        except BleakBluetoothNotAvailableError as exc:
            if exc.reason in (
                BleakBluetoothNotAvailableReason.DENIED_BY_SYSTEM,
                BleakBluetoothNotAvailableReason.DENIED_BY_USER,
                BleakBluetoothNotAvailableReason.DENIED_BY_UNKNOWN,
            ):
                raise RadioFailed(
                    f"{verb}: Bluetooth access denied ({exc.args[0]}): run the gateway as a user "
                    "that may use BlueZ over D-Bus",
                    adapter=adapter.name,
                ) from exc
            raise RadioUnavailable(f"{verb}: {exc.args[0]}", adapter=adapter.name) from exc
        except BleakError as exc:
            if mode == "passive" and self._mode == "auto":
                self._passive_refused.add((adapter.path, incarnation))
                raise _PassiveRefused(
                    f"{verb}: BlueZ refused the advertisement monitor ({exc}); "
                    "scanning actively instead",
                    adapter=adapter.name,
                ) from exc
            raise RadioError(f"{verb}: {exc}", adapter=adapter.name) from exc
        except TimeoutError as exc:
            raise RadioError(
                f"{verb}: BlueZ did not answer within {self._call_timeout_s:g} s",
                adapter=adapter.name,
            ) from exc
        except (OSError, EOFError, DBusFastError) as exc:  # bleak's own bus connection failed
            raise RadioUnavailable(
                f"{verb}: the D-Bus system bus failed: {exc!r}", adapter=adapter.name
            ) from exc
        self._scan = _Scan(scanner, adapter.name, mode)
        self.scan_mode = mode
        self.adapter_name = adapter.name
        _LOGGER.info("scanning on %s (%s, %s)", adapter.name, adapter.address, mode)

    async def _stop_scan(self) -> None:
        scan, self._scan = self._scan, None
        self.scan_mode = None
        if scan is None:
            return
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await scan.scanner.stop()
        except (BleakError, TimeoutError, OSError, EOFError, DBusFastError) as exc:
            # Expected after a fault: BlueZ or the adapter is gone, or it already ended the scan.
            _LOGGER.debug("stopping the scan on %s: %r", scan.adapter, exc)

    async def _watch(
        self, objects: BluezObjects, adapter: AdapterInfo, since: AdapterSnapshot
    ) -> str | None:
        """Watch a running scan; return what ended it, or None for a stall."""
        started = self._mono()
        while True:
            objects.changed.clear()
            fault = objects.fault(adapter.path, since)
            if fault is not None:
                return fault
            last = max(started, self._last_advert_mono or started)
            remaining = last + self._stall_timeout_s - self._mono()
            if remaining <= 0:
                return None
            if not await objects.wait_changed(min(remaining, WAIT_POLL_MAX_S)) and (
                objects.bus is None
            ):
                try:  # our own connection died (dbus-daemon restarted?): look again
                    await objects.refresh()
                except RadioError as exc:
                    return f"lost the system bus: {exc.reason}"

    async def _power_cycle(self, objects: BluezObjects, adapter: AdapterInfo) -> None:
        path = adapter.path
        _LOGGER.warning("power-cycling adapter %s to revive its scan", adapter.name)
        await objects.set_powered(path, False)
        off = await objects.wait_for(
            lambda: path not in objects.adapters or not objects.adapters[path].powered,
            POWER_TIMEOUT_S,
        )
        if not off:
            raise RadioError(
                f"adapter {adapter.name} did not power off within {POWER_TIMEOUT_S:g} s",
                adapter=adapter.name,
            )
        await objects.set_powered(path, True)
        on = await objects.wait_for(
            lambda: path in objects.adapters and objects.adapters[path].powered, POWER_TIMEOUT_S
        )
        if not on:
            raise RadioError(
                f"adapter {adapter.name} did not power on within {POWER_TIMEOUT_S:g} s "
                "(check `rfkill list`)",
                adapter=adapter.name,
            )

    # --- state transitions on trouble ---

    def _fault(self, kind: str, reason: str) -> None:
        """Something outside us broke the scan: wait it out (no recovery step spent)."""
        if self.state is not RadioState.STARTING:
            self.state = RadioState.RECOVERING
        self.last_error = reason
        self._recovering = True
        self._log.warning(f"fault-{kind}-{reason}", "radio: %s", reason)

    def _escalate(self, reason: str) -> RecoveryStep:
        """A stall or a failed start: take the next step of the ladder; give up past its end."""
        step = self._ladder.step_after_failure()
        self.last_error = reason
        self._recovering = True
        if step is RecoveryStep.GIVE_UP:
            self.state = RadioState.FAILED
            message = (
                f"{reason}; {self._ladder.restart_limit} scan restarts and "
                f"{self._ladder.power_cycle_limit} adapter power cycles did not help: "
                "giving up so that systemd restarts the gateway"
            )
            _LOGGER.error("radio failed: %s", message)
            raise RadioFailed(message, adapter=self.adapter_name)
        self.state = RadioState.RECOVERING
        self._log.warning(
            f"escalate-{step.name}",
            "radio: %s: will %s (failure %d)",
            reason,
            step.value,
            self._ladder.failures,
        )
        return step


class _PassiveRefused(RadioError):
    """BlueZ refused the advertisement monitor; in auto mode the next start scans actively."""
