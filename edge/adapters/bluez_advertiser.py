"""The gateway's own iBeacon, advertised through BlueZ's LEAdvertisingManager1 over D-Bus (dbus-fast).

A backgrounded iOS app cannot advertise custom data, but iOS wakes it when the phone enters an iBeacon
region: the gateway broadcasts its store's iBeacon so shoppers' apps wake at the door.

The advertisement is an `org.bluez.LEAdvertisement1` object we export on the system bus; BlueZ reads
its properties when we call `RegisterAdvertisement` (so it is exported first). BlueZ forgets it when
bluetoothd restarts or the adapter goes away (it calls `Release` in the second case); a keeper task
watches for both and registers it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Annotated

from dbus_fast import PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from edge.adapters.bleak_radio import (
    ADVERTISING_MANAGER_IFACE,
    CALL_TIMEOUT_S,
    WAIT_POLL_MAX_S,
    WAIT_POLL_MIN_S,
    AdapterSnapshot,
    BluezObjects,
    RadioError,
    check_adapter_spec,
)
from edge.core import frames
from edge.core.backoff import Backoff
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)

ADVERTISEMENT_IFACE = "org.bluez.LEAdvertisement1"
DEFAULT_OBJECT_PATH = "/org/threshold/ibeacon0"
REGISTER_RETRY_MAX_S = 60.0
REFRESH_WHILE_REGISTERED_S = 30.0  # re-read BlueZ's objects this often, in case a signal was missed
# Core Spec Vol 6 Part B §4.4.2.2: advertising intervals run from 20 ms to 10.24 s.
MIN_INTERVAL_MS = 20
MAX_INTERVAL_MS = 10_240


def ibeacon_manufacturer_payload(uuid: bytes, major: int, minor: int, measured_power: int) -> bytes:
    """The Apple (0x004C) manufacturer data of an iBeacon: 02 15, UUID, major, minor, power."""
    if len(uuid) != 16:
        raise ValueError(f"an iBeacon UUID is 16 bytes, got {len(uuid)}")
    for field, value in (("major", major), ("minor", minor)):
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"iBeacon {field} {value} is outside 0..65535")
    if not -128 <= measured_power <= 127:
        raise ValueError(f"iBeacon measured power {measured_power} dBm is outside -128..127")
    fields = frames.parse_ad(frames.ibeacon_advert(uuid, major, minor, measured_power))
    assert not isinstance(fields, str), fields  # our own encoder's output parses
    return fields.manufacturer_data[frames.COMPANY_APPLE]


async def keep_registered(
    objects: BluezObjects,
    step: Callable[[], Awaitable[bool]],
    registered: Callable[[], bool],
    failed: Callable[[RadioError], None],
    attempted: asyncio.Event,
) -> None:
    """Keep something registered with BlueZ for as long as the task runs (the iBeacon, the
    check-in service): `step` checks and (re)registers what is missing, True when it registered
    anew; a RadioError goes to `failed` and is retried with capped backoff; while `registered()`,
    BlueZ's objects are re-read every REFRESH_WHILE_REGISTERED_S in case a signal was missed.
    `attempted` is set after every attempt (start() waits for the first)."""
    retry = Backoff(WAIT_POLL_MIN_S, REGISTER_RETRY_MAX_S, random.random)
    while True:
        objects.changed.clear()
        try:
            await objects.ensure_fresh()
            if await step():
                retry.reset()
        except RadioError as exc:
            failed(exc)
            objects.mark_stale()
        attempted.set()
        wait_s = (
            max(REFRESH_WHILE_REGISTERED_S, WAIT_POLL_MAX_S)
            if registered()
            else retry.next_delay_s()
        )
        if not await objects.wait_changed(wait_s):
            objects.mark_stale()


class IBeaconAdvertisement(ServiceInterface):
    """org.bluez.LEAdvertisement1 (BlueZ doc/org.bluez.LEAdvertisement.rst) carrying one iBeacon.

    Method and property names are the D-Bus member names, hence CamelCase.
    """

    def __init__(
        self, payload: bytes, interval_ms: int, advertiser: BluezIBeaconAdvertiser
    ) -> None:
        super().__init__(ADVERTISEMENT_IFACE)
        self._payload = payload
        self._interval_ms = interval_ms
        self._advertiser = advertiser

    def _release(self) -> None:
        self._advertiser.released()

    # Under `from __future__ import annotations` the return annotation is the string "None", which
    # dbus-fast 5.2 turns into a None signature and rejects; the object None means "no out args".
    _release.__annotations__["return"] = None
    Release = dbus_method(name="Release")(_release)

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> DBusStr:
        return "broadcast"  # non-connectable: what iOS region monitoring needs

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(
        self,
    ) -> Annotated[dict[int, Variant], DBusSignature("a{qv}")]:
        return {frames.COMPANY_APPLE: Variant("ay", self._payload)}

    # BlueZ >= 5.66 reads these (experimental before); older BlueZ ignores unknown properties.
    @dbus_property(access=PropertyAccess.READ)
    def MinInterval(self) -> DBusUInt32:
        return self._interval_ms

    @dbus_property(access=PropertyAccess.READ)
    def MaxInterval(self) -> DBusUInt32:
        return self._interval_ms


class BluezIBeaconAdvertiser:
    """Keeps one iBeacon registered with BlueZ on `adapter` ("hci0", an address, or None: the first)."""

    def __init__(
        self,
        adapter: str | None,
        uuid: bytes,
        major: int,
        minor: int,
        measured_power: int = -59,
        interval_ms: int = 100,
        *,
        object_path: str = DEFAULT_OBJECT_PATH,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        check_adapter_spec(adapter)
        if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
            raise ValueError(
                f"advertising interval {interval_ms} ms is outside {MIN_INTERVAL_MS}.."
                f"{MAX_INTERVAL_MS} ms"
            )
        self.manufacturer_payload = ibeacon_manufacturer_payload(uuid, major, minor, measured_power)
        self.object_path = object_path
        self._adapter_spec = adapter
        self._call_timeout_s = call_timeout_s
        self._interface = IBeaconAdvertisement(self.manufacturer_payload, interval_ms, self)
        self._objects = BluezObjects(call_timeout_s)
        self._exported_on: MessageBus | None = None
        self._registration: tuple[str, AdapterSnapshot] | None = None  # adapter path, identity
        self._released = False
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._log = OnceLogger(_LOGGER)
        self.registrations = 0  # how often BlueZ accepted it (first time and after each loss)
        self.last_error: str | None = None

    @property
    def registered_on(self) -> str | None:
        """The adapter ("hci0") BlueZ advertises us on, or None."""
        return None if self._registration is None else self._registration[0].rsplit("/", 1)[-1]

    async def start(self, wait_s: float = CALL_TIMEOUT_S) -> bool:
        """Start keeping the iBeacon registered; return whether the first registration succeeded.

        BlueZ or the adapter being absent is not an error: the keeper registers when they appear.
        """
        if self._task is not None:
            raise RuntimeError("the iBeacon advertiser is already started")
        self._attempted.clear()
        self._task = asyncio.create_task(self._keep_registered(), name="bluez-ibeacon")
        try:
            async with asyncio.timeout(wait_s):
                await self._attempted.wait()
        except TimeoutError:
            pass
        return self._registration is not None

    async def stop(self) -> None:
        """Unregister (best effort), withdraw the object, close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    await asyncio.wait({task})
            except TimeoutError:
                _LOGGER.error("the iBeacon keeper did not stop within its timeout")
        if self._registration is not None:
            path, _ = self._registration
            self._registration = None
            try:
                await self._objects.call_bluez(
                    path,
                    ADVERTISING_MANAGER_IFACE,
                    "UnregisterAdvertisement",
                    "o",
                    [self.object_path],
                )
            except RadioError as exc:
                _LOGGER.debug("unregistering the iBeacon: %s", exc.reason)
        if self._exported_on is not None:
            self._exported_on.unexport(self.object_path, self._interface)
            self._exported_on = None
        await self._objects.close()

    def released(self) -> None:
        """BlueZ called Release(): it dropped the advertisement (the adapter went away)."""
        _LOGGER.info("BlueZ released the iBeacon advertisement")
        self._released = True
        self._objects.changed.set()

    async def _keep_registered(self) -> None:
        await keep_registered(
            self._objects,
            self._step,
            lambda: self._registration is not None,
            self._failed,
            self._attempted,
        )

    async def _step(self) -> bool:
        self._check_registration()
        if self._registration is not None:
            return False
        await self._register()
        return True

    def _failed(self, exc: RadioError) -> None:
        self.last_error = exc.reason
        self._log.warning(
            f"register-{exc.dbus_error or exc.reason}", "iBeacon not advertised: %s", exc
        )

    def _check_registration(self) -> None:
        """Forget the registration when BlueZ lost it: restarted, adapter replaced, or Release()."""
        if self._registration is None:
            return
        path, since = self._registration
        objects = self._objects
        lost = None
        if self._released:
            lost = "BlueZ released it"
        elif objects.owner != since.owner:
            lost = "BlueZ restarted"
        elif path not in objects.adapters or objects.incarnations.get(path, 0) != since.incarnation:
            lost = f"adapter {path.rsplit('/', 1)[-1]} went away"
        if lost is not None:
            _LOGGER.warning("iBeacon advertisement lost (%s): registering it again", lost)
            self._registration = None

    async def _register(self) -> None:
        objects = self._objects
        bus = await objects.connect()
        if self._exported_on is not bus:  # first time, or our connection was replaced
            if self._exported_on is not None and self._exported_on.connected:
                self._exported_on.unexport(self.object_path, self._interface)
            bus.export(self.object_path, self._interface)
            self._exported_on = bus
        if objects.owner is None:
            raise RadioError("BlueZ (org.bluez) is not on the system bus")
        adapter = objects.resolve(self._adapter_spec)
        if adapter is None:
            raise RadioError(f"adapter {self._adapter_spec or '(any)'} not found")
        if not adapter.can_advertise:
            raise RadioError(f"adapter {adapter.name} offers no LEAdvertisingManager1")
        snapshot = objects.snapshot(adapter.path)
        self._released = False
        try:
            await objects.call_bluez(
                adapter.path,
                ADVERTISING_MANAGER_IFACE,
                "RegisterAdvertisement",
                "oa{sv}",
                [self.object_path, {}],
            )
        except RadioError as exc:
            if exc.dbus_error != "org.bluez.Error.AlreadyExists":
                raise
        self._registration = (adapter.path, snapshot)
        self.registrations += 1
        _LOGGER.info(
            "advertising the store iBeacon on %s (%s)",
            adapter.name,
            self.manufacturer_payload.hex(),
        )
