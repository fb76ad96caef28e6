"""The iPhone check-in service, served over GATT through BlueZ (D-Bus, dbus-fast), and the connectable
advertisement that lets a backgrounded iPhone find it (docs/iphone-checkin.md).

A thin translator between BlueZ and the two callables it is given, the gateway's `checkin_challenge()`
and `checkin_write(payload, central, link_rssi_dbm)`: BlueZ calls ReadValue and WriteValue on objects
exported here; the verdicts go back as the D-Bus errors BlueZ turns into the ATT errors the phone sees
(edge/core/checkin.py, ATT_ERRORS):

    verdict                               D-Bus error                          ATT error
    accepted                              (none: the write succeeds)           -
    malformed, or not one write at 0      org.bluez.Error.InvalidValueLength   0x0D
    bad_tag, replayed, unknown,           org.bluez.Error.Failed "0x81".."0x85" 0x81..0x85 (BlueZ 5.66+;
      throttled, no_signal                                                      0x80 before)
    too many writes in hand               org.bluez.Error.Failed "0x86"        0x86 (0x80 before 5.66)
    the gateway failed to handle it       org.bluez.Error.Failed "0x80"        0x80

Objects, on a system-bus connection of our own:

    /org/threshold/checkin                   the application: BlueZ reads it with GetManagedObjects
    /org/threshold/checkin/service0          GattService1, primary, CHECKIN_SERVICE_UUID
    /org/threshold/checkin/service0/char0    GattCharacteristic1 CHALLENGE_CHAR_UUID, ["read"]
    /org/threshold/checkin/service0/char1    GattCharacteristic1 CHECKIN_CHAR_UUID, ["write"]
    /org/threshold/checkin_advert0           LEAdvertisement1 "peripheral": the service UUID, connectable

dbus-fast answers GetManagedObjects on the application's path with everything exported below it.
A keeper task registers both with the adapter (GattManager1.RegisterApplication,
LEAdvertisingManager1.RegisterAdvertisement) and again whenever BlueZ restarts, the adapter goes and
comes back, BlueZ releases the advertisement, or our bus connection was replaced (bluetoothd forgets
an application whose owner left the bus). Nothing a central sends is kept here: its BlueZ device
path lives only while its write is in hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusBytes,
    DBusDict,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
)
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property
from dbus_fast.validators import is_object_path_valid

from edge.adapters.bleak_radio import (
    ADVERTISING_MANAGER_IFACE,
    CALL_TIMEOUT_S,
    GATT_MANAGER_IFACE,
    PROPERTIES_IFACE,
    AdapterSnapshot,
    BluezObjects,
    RadioError,
    check_adapter_spec,
)
from edge.adapters.bluez_advertiser import ADVERTISEMENT_IFACE, keep_registered
from edge.core.checkin import (
    ATT_BUSY,
    ATT_ERRORS,
    ATT_INVALID_VALUE_LENGTH,
    ATT_REFUSED,
    CHALLENGE_CHAR_UUID,
    CHECKIN_CHAR_UUID,
    CHECKIN_SERVICE_UUID,
    CheckinRefused,
    CheckinResult,
)
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)

GATT_SERVICE_IFACE = "org.bluez.GattService1"
GATT_CHARACTERISTIC_IFACE = "org.bluez.GattCharacteristic1"
DEVICE_IFACE = "org.bluez.Device1"
# BlueZ's gatt-database.c maps these replies to ATT errors (dbus_error_to_att_ecode): Failed with a
# message of exactly "0x80".."0x9f" becomes that application error (BlueZ 5.66 and later; 0x80
# before), InvalidValueLength becomes 0x0D, InvalidOffset 0x07.
ERROR_FAILED = "org.bluez.Error.Failed"
ERROR_INVALID_VALUE_LENGTH = "org.bluez.Error.InvalidValueLength"
ERROR_INVALID_OFFSET = "org.bluez.Error.InvalidOffset"
ERROR_ALREADY_EXISTS = "org.bluez.Error.AlreadyExists"

DEFAULT_APP_PATH = "/org/threshold/checkin"
DEFAULT_ADVERT_PATH = "/org/threshold/checkin_advert0"
#: What a write without BlueZ's `device` option is throttled as (BlueZ always names the central).
NO_CENTRAL = "(no device)"
#: Writes in hand at once, over all centrals. ATT lets each central have one request outstanding and
#: a Pi's controller holds a handful of links, so this is only reached by something that is not
#: BlueZ relaying phones; the excess is answered ATT_BUSY at once rather than queued.
MAX_IN_FLIGHT = 32
#: How long a write waits for BlueZ to say the central's RSSI; without it the app's own reading is
#: used (edge/core/checkin.py). Other writes are not held up: each is its own task.
RSSI_TIMEOUT_S = 0.5
# One of the advertising intervals Apple's Accessory Design Guidelines recommend (152.5 ms):
# iPhones scanning in the background find it within seconds.
ADVERT_MIN_INTERVAL_MS = 152
ADVERT_MAX_INTERVAL_MS = 153

Challenge = Callable[[], bytes]
Write = Callable[[bytes, str, float | None], Awaitable[CheckinResult]]


def att_error(code: int, detail: str = "") -> DBusError:
    """The D-Bus error BlueZ answers the phone as ATT error `code` (see the module's table)."""
    if code == ATT_INVALID_VALUE_LENGTH:
        return DBusError(ERROR_INVALID_VALUE_LENGTH, detail or "not a check-in of this version")
    # BlueZ parses the whole message as the code (strtol, nothing after it): no detail here.
    return DBusError(ERROR_FAILED, f"0x{code:02x}")


def _option(options: object, name: str) -> object:
    """`options[name]`'s value, or None; BlueZ's options are an a{sv}, but take nothing on trust."""
    if not isinstance(options, dict):
        return None
    value = options.get(name)
    return value.value if isinstance(value, Variant) else None


def _offset(options: object) -> int | None:
    """The `offset` option (0 when absent), or None when it is not a uint16."""
    value = _option(options, "offset")
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF:
        return value
    return None


def _central(options: object) -> str:
    """The central's BlueZ device path (`device` option), or "" when absent or not an object path
    (BlueZ's RSSI is asked for by that path: a string that is none would fail the write)."""
    value = _option(options, "device")
    if isinstance(value, str) and len(value) <= 255 and is_object_path_valid(value):
        return value
    return ""


class CheckinService(ServiceInterface):
    """org.bluez.GattService1 (BlueZ doc/org.bluez.GattService.rst): the check-in service."""

    def __init__(self) -> None:
        super().__init__(GATT_SERVICE_IFACE)

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return CHECKIN_SERVICE_UUID

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:
        return True


class _Characteristic(ServiceInterface):
    """org.bluez.GattCharacteristic1 (BlueZ doc/org.bluez.GattCharacteristic.rst), its properties."""

    def __init__(self, uuid: str, service_path: str, flags: list[str]) -> None:
        super().__init__(GATT_CHARACTERISTIC_IFACE)
        self._uuid = uuid
        self._service_path = service_path
        self._flags = flags

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:
        return self._service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> Annotated[list[str], DBusSignature("as")]:
        return self._flags


class ChallengeCharacteristic(_Characteristic):
    """The challenge: read only."""

    def __init__(self, service_path: str, gatt: BluezCheckinService) -> None:
        super().__init__(CHALLENGE_CHAR_UUID, service_path, ["read"])
        self._gatt = gatt

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:
        return self._gatt.read_challenge(options)


class CheckinCharacteristic(_Characteristic):
    """The check-in: write with response only (a refusal must reach the app)."""

    def __init__(self, service_path: str, gatt: BluezCheckinService) -> None:
        super().__init__(CHECKIN_CHAR_UUID, service_path, ["write"])
        self._gatt = gatt

    async def _write_value(self, value: DBusBytes, options: DBusDict) -> None:
        await self._gatt.write_checkin(value, options)

    # As in bluez_advertiser.py: the string "None" (from `from __future__ import annotations`) is not
    # a signature dbus-fast 5.2 accepts; the object None means "no out args".
    _write_value.__annotations__["return"] = None
    WriteValue = dbus_method(name="WriteValue")(_write_value)


class CheckinAdvertisement(ServiceInterface):
    """org.bluez.LEAdvertisement1: connectable, naming the check-in service, so that an iPhone app
    scanning for that service UUID in the background finds (and is woken for) the gateway."""

    def __init__(self, gatt: BluezCheckinService) -> None:
        super().__init__(ADVERTISEMENT_IFACE)
        self._gatt = gatt

    def _release(self) -> None:
        self._gatt.released()

    _release.__annotations__["return"] = None
    Release = dbus_method(name="Release")(_release)

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> DBusStr:
        return "peripheral"  # connectable

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> Annotated[list[str], DBusSignature("as")]:
        return [CHECKIN_SERVICE_UUID]

    # The LE General Discoverable flag (BlueZ otherwise follows the adapter's Discoverable setting);
    # older BlueZ ignores properties it does not know.
    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> DBusBool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def MinInterval(self) -> DBusUInt32:
        return ADVERT_MIN_INTERVAL_MS

    @dbus_property(access=PropertyAccess.READ)
    def MaxInterval(self) -> DBusUInt32:
        return ADVERT_MAX_INTERVAL_MS


@dataclass(frozen=True, slots=True)
class _Registration:
    adapter_path: str
    since: AdapterSnapshot
    bus: MessageBus


class BluezCheckinService:
    """Keeps the check-in GATT application and its advertisement registered on `adapter` ("hci0",
    an address, or None: the first), answering BlueZ's reads with `challenge()` and its writes with
    `await write(payload, central, link_rssi_dbm)`."""

    def __init__(
        self,
        adapter: str | None,
        challenge: Challenge,
        write: Write,
        *,
        app_path: str = DEFAULT_APP_PATH,
        advert_path: str = DEFAULT_ADVERT_PATH,
        call_timeout_s: float = CALL_TIMEOUT_S,
        rssi_timeout_s: float = RSSI_TIMEOUT_S,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        check_adapter_spec(adapter)
        if max_in_flight < 1 or rssi_timeout_s <= 0:
            raise ValueError("max_in_flight >= 1 and rssi_timeout_s > 0")
        self.app_path = app_path
        self.service_path = f"{app_path}/service0"
        self.challenge_path = f"{self.service_path}/char0"
        self.checkin_path = f"{self.service_path}/char1"
        self.advert_path = advert_path
        #: The adapter asked for ("hci0", an address, or None: the first).
        self.adapter = adapter
        self._challenge = challenge
        self._write = write
        self._call_timeout_s = call_timeout_s
        self._rssi_timeout_s = rssi_timeout_s
        self._max_in_flight = max_in_flight
        self._interfaces: tuple[tuple[str, ServiceInterface], ...] = (
            (self.service_path, CheckinService()),
            (self.challenge_path, ChallengeCharacteristic(self.service_path, self)),
            (self.checkin_path, CheckinCharacteristic(self.service_path, self)),
            (advert_path, CheckinAdvertisement(self)),
        )
        self._objects = BluezObjects(call_timeout_s)
        self._exported_on: MessageBus | None = None
        self._registration: _Registration | None = None
        self._advertised = False
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._in_flight = 0
        self._centrals_in_flight: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._log = OnceLogger(_LOGGER)
        #: How often BlueZ accepted the application (first time and after each loss).
        self.registrations = 0
        self.last_error: str | None = None
        #: Challenge reads answered.
        self.reads = 0
        #: Check-in writes BlueZ handed over (each then accepted or refused by the gateway, or below).
        self.writes = 0
        #: Writes refused here, without the gateway seeing them: too many in hand (ATT_BUSY), ...
        self.busy = 0
        #: ... not one write at offset 0, or options that are not BlueZ's (InvalidValueLength), ...
        self.bad_requests = 0
        #: ... or the gateway failed to handle (ATT_REFUSED, logged).
        self.failed = 0

    @property
    def registered_on(self) -> str | None:
        """The adapter ("hci0") BlueZ serves the check-in service on, or None."""
        reg = self._registration
        return None if reg is None else reg.adapter_path.rsplit("/", 1)[-1]

    @property
    def advertised(self) -> bool:
        """Whether the connectable advertisement naming the service is registered too."""
        return self._registration is not None and self._advertised

    def counters(self) -> dict[str, int]:
        """For the gateway's status (docs/iphone-checkin.md, "What the gateway counts")."""
        return {
            "checkin_served": int(self._registration is not None),
            "checkin_advertised": int(self.advertised),
            "checkin_reads": self.reads,
            "checkin_writes": self.writes,
            "checkin_busy": self.busy,
            "checkin_bad_requests": self.bad_requests,
            "checkin_failed": self.failed,
        }

    async def start(self, wait_s: float = CALL_TIMEOUT_S) -> bool:
        """Start keeping the service registered; return whether the first registration succeeded.

        BlueZ or the adapter being absent is not an error: the keeper registers when they appear.
        """
        if self._task is not None:
            raise RuntimeError("the check-in service is already started")
        self._attempted.clear()
        self._task = asyncio.create_task(self._keep_registered(), name="bluez-checkin")
        self._task.add_done_callback(self._keeper_ended)
        try:
            async with asyncio.timeout(wait_s):
                await self._attempted.wait()
        except TimeoutError:
            pass
        return self._registration is not None

    async def stop(self) -> None:
        """Unregister (best effort), let writes in hand finish, withdraw the objects, disconnect."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    await asyncio.wait({task})
            except TimeoutError:
                _LOGGER.error("the check-in keeper did not stop within its timeout")
        registration, self._registration = self._registration, None
        if registration is not None:
            calls = [(GATT_MANAGER_IFACE, "UnregisterApplication", self.app_path)]
            if self._advertised:
                calls.insert(
                    0, (ADVERTISING_MANAGER_IFACE, "UnregisterAdvertisement", self.advert_path)
                )
            for manager, member, path in calls:
                try:
                    await self._objects.call_bluez(
                        registration.adapter_path, manager, member, "o", [path]
                    )
                except RadioError as exc:
                    _LOGGER.debug("%s: %s", member, exc.reason)
        self._advertised = False
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await self._idle.wait()
        except TimeoutError:
            _LOGGER.warning("%d check-in writes still in hand at stop", self._in_flight)
        if self._exported_on is not None:
            for path, interface in self._interfaces:
                self._exported_on.unexport(path, interface)
            self._exported_on = None
        await self._objects.close()

    def _keeper_ended(self, task: asyncio.Task[None]) -> None:
        """The keeper only ends when stopped; anything else is a bug to see in the log at once."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.last_error = f"the registration keeper failed: {exc!r}"
            _LOGGER.error("iPhone check-in is no longer kept registered with BlueZ", exc_info=exc)

    def released(self) -> None:
        """BlueZ called Release() on the advertisement: it dropped it (the adapter went away)."""
        _LOGGER.info("BlueZ released the check-in advertisement")
        self._advertised = False
        self._objects.changed.set()

    # --- what BlueZ calls ---

    def read_challenge(self, options: object) -> bytes:
        """ReadValue on the challenge: the gateway's current challenge, from `offset` on."""
        offset = _offset(options)
        try:
            value = self._challenge()
        except Exception as exc:  # a D-Bus handler is a boundary: BlueZ gets a mapped error only
            self.failed += 1
            self._log.warning(f"challenge-{type(exc).__name__}", "challenge read failed: %r", exc)
            raise att_error(ATT_REFUSED) from exc
        if offset is None or offset > len(value):
            self.bad_requests += 1
            raise DBusError(ERROR_INVALID_OFFSET, "offset past the challenge")
        self.reads += 1
        return value[offset:]

    async def write_checkin(self, value: object, options: object) -> None:
        """WriteValue on the check-in: hand it to the gateway, answer its verdict as an ATT error."""
        self.writes += 1
        central = _central(options) or NO_CENTRAL
        if _offset(options) != 0 or not isinstance(value, bytes | bytearray):
            # A check-in is one write at offset 0; BlueZ splits a long (prepared) write by offset.
            self.bad_requests += 1
            raise att_error(ATT_INVALID_VALUE_LENGTH, "a check-in is one write of 20 bytes")
        if self._in_flight >= self._max_in_flight or central in self._centrals_in_flight:
            self.busy += 1
            raise att_error(ATT_BUSY)
        self._in_flight += 1
        self._centrals_in_flight.add(central)
        self._idle.clear()
        try:
            link_rssi_dbm = await self._link_rssi(central)
            result = await self._write(bytes(value), central, link_rssi_dbm)
        except Exception as exc:  # a D-Bus handler is a boundary: BlueZ gets a mapped error only
            self.failed += 1
            self._log.warning(f"write-{type(exc).__name__}", "check-in write failed: %r", exc)
            raise att_error(ATT_REFUSED) from exc
        finally:
            self._in_flight -= 1
            self._centrals_in_flight.discard(central)
            if not self._in_flight:
                self._idle.set()
        if isinstance(result, CheckinRefused):
            raise att_error(ATT_ERRORS[result.reason], result.detail)

    async def _link_rssi(self, central: str) -> float | None:
        """The central's RSSI as BlueZ last saw it (Device1.RSSI), if it has one within the wait."""
        registration = self._registration
        if registration is None or not central.startswith(registration.adapter_path + "/"):
            return None
        if self._objects.bus is None:
            return None  # never (re)connect from a write: the keeper does that
        try:
            async with asyncio.timeout(self._rssi_timeout_s):
                reply = await self._objects.call_bluez(
                    central, PROPERTIES_IFACE, "Get", "ss", [DEVICE_IFACE, "RSSI"]
                )
        except (TimeoutError, RadioError):
            # No such property (BlueZ has not heard it advertise), or BlueZ is slow: the gateway
            # goes on with the app's own reading.
            return None
        body: list[Any] = reply.body
        value = body[0].value if body and isinstance(body[0], Variant) else None
        if isinstance(value, int) and not isinstance(value, bool) and -127 <= value <= 20:
            return float(value)
        return None

    # --- registration ---

    async def _keep_registered(self) -> None:
        await keep_registered(
            self._objects,
            self._step,
            lambda: self._registration is not None and self._advertised,
            self._failed,
            self._attempted,
        )

    async def _step(self) -> bool:
        self._check_registration()
        registered = False
        if self._registration is None:
            await self._register()
            registered = True
        if not self._advertised:
            await self._advertise()
        return registered

    def _failed(self, exc: RadioError) -> None:
        self.last_error = exc.reason
        self._log.warning(
            f"register-{exc.dbus_error or exc.reason}", "iPhone check-in not fully served: %s", exc
        )

    def _check_registration(self) -> None:
        """Forget the registration when BlueZ lost it: restarted, adapter replaced, our bus gone."""
        reg = self._registration
        if reg is None:
            return
        objects = self._objects
        lost = None
        if objects.bus is not reg.bus:
            lost = "our system-bus connection was replaced"
        elif objects.owner != reg.since.owner:
            lost = "BlueZ restarted"
        elif (
            reg.adapter_path not in objects.adapters
            or objects.incarnations.get(reg.adapter_path, 0) != reg.since.incarnation
        ):
            lost = f"adapter {reg.adapter_path.rsplit('/', 1)[-1]} went away"
        if lost is not None:
            _LOGGER.warning("iPhone check-in service lost (%s): registering it again", lost)
            self._registration = None
            self._advertised = False

    def _export(self, bus: MessageBus) -> None:
        if self._exported_on is bus:
            return
        if self._exported_on is not None and self._exported_on.connected:
            for path, interface in self._interfaces:
                self._exported_on.unexport(path, interface)
        for path, interface in self._interfaces:
            bus.export(path, interface)
        self._exported_on = bus

    async def _register(self) -> None:
        objects = self._objects
        bus = await objects.connect()
        # Exported before registering: bluetoothd reads the objects before it replies.
        self._export(bus)
        if objects.owner is None:
            raise RadioError("BlueZ (org.bluez) is not on the system bus")
        adapter = objects.resolve(self.adapter)
        if adapter is None:
            raise RadioError(f"adapter {self.adapter or '(any)'} not found")
        if not adapter.can_serve_gatt:
            raise RadioError(f"adapter {adapter.name} offers no GattManager1")
        snapshot = objects.snapshot(adapter.path)
        self._advertised = False
        try:
            await objects.call_bluez(
                adapter.path,
                GATT_MANAGER_IFACE,
                "RegisterApplication",
                "oa{sv}",
                [self.app_path, {}],
            )
        except RadioError as exc:
            if exc.dbus_error != ERROR_ALREADY_EXISTS:
                raise
        self._registration = _Registration(adapter.path, snapshot, bus)
        self.registrations += 1
        self.last_error = None
        _LOGGER.info(
            "serving iPhone check-in (GATT service %s) on %s", CHECKIN_SERVICE_UUID, adapter.name
        )

    async def _advertise(self) -> None:
        reg = self._registration
        if reg is None:
            return
        adapter = self._objects.adapters.get(reg.adapter_path)
        if adapter is None or not adapter.can_advertise:
            raise RadioError(
                f"adapter {reg.adapter_path.rsplit('/', 1)[-1]} offers no LEAdvertisingManager1: "
                "iPhones in the background will not find the check-in service"
            )
        try:
            await self._objects.call_bluez(
                reg.adapter_path,
                ADVERTISING_MANAGER_IFACE,
                "RegisterAdvertisement",
                "oa{sv}",
                [self.advert_path, {}],
            )
        except RadioError as exc:
            if exc.dbus_error != ERROR_ALREADY_EXISTS:
                raise
        self._advertised = True
        _LOGGER.info("advertising the check-in service on %s", adapter.name)
