"""A fake BlueZ for adapter tests: a private system bus with python-dbusmock playing bluetoothd.

The bus is a real `dbus-daemon` (config `<type>system</type>`, a unix socket in a temp dir, allow-all
policy); BlueZ is `/usr/bin/python3 -m dbusmock --system -t tests/fakes/bluez_template.py`, a child
process that a test can kill and start again. Tests drive it with dbus-fast. See shared/RECIPES.md,
"bleak against a fake BlueZ", for why it is built this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

TEMPLATE = Path(__file__).with_name("bluez_template.py")
SYSTEM_PYTHON = Path("/usr/bin/python3")
BLUEZ = "org.bluez"
MOCK_IFACE = "org.freedesktop.DBus.Mock"  # dbusmock's own control interface, on every object
BLUEZ_MOCK_IFACE = "org.bluez.Mock"  # our template's helpers, on "/"
ADAPTER_IFACE = "org.bluez.Adapter1"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 10.0

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


class FakeBluezError(Exception):
    """The fake bus or the BlueZ mock could not be started or driven."""


def missing_system_packages() -> list[str]:
    """The Debian packages the fake needs that are not installed (see .ci/system-deps.sh)."""
    missing = []
    if shutil.which("dbus-daemon") is None:
        missing.append("dbus-daemon")
    probe = (
        subprocess.run(
            [str(SYSTEM_PYTHON), "-c", "import dbus, dbusmock"],
            capture_output=True,
            check=False,
        )
        if SYSTEM_PYTHON.exists()
        else None
    )
    if probe is None or probe.returncode != 0:
        missing.append("python3-dbusmock")
    return missing


def require_system_packages() -> None:
    """Fail (not skip) the test, naming the Debian packages to install, when the fake cannot run."""
    missing = missing_system_packages()
    if missing:
        pytest.fail(
            "the fake BlueZ needs the Debian packages "
            + " and ".join(missing)
            + f": run `sudo apt-get install -y {' '.join(missing)}` (or `sh .ci/system-deps.sh` as "
            "root); CI installs them through .ci/system-deps.sh",
            pytrace=False,
        )


@dataclass
class FakeAdapter:
    """What the fake re-creates when BlueZ starts again or the adapter is plugged back."""

    name: str
    address: str
    powered: bool = True
    monitor_types: tuple[str, ...] = ("or_patterns",)

    @property
    def path(self) -> str:
        return f"/org/bluez/{self.name}"


def _ay(data: bytes) -> Variant:
    return Variant("ay", bytes(data))


def device_props(
    *,
    rssi_dbm: int | None = None,
    manufacturer_data: Mapping[int, bytes] | None = None,
    service_data: Mapping[str, bytes] | None = None,
    local_name: str | None = None,
    service_uuids: list[str] | None = None,
    tx_power_dbm: int | None = None,
) -> dict[str, Variant]:
    """Device1 properties with BlueZ's own D-Bus types (RSSI `n`, ManufacturerData `a{qv}` → `ay`,
    ServiceData `a{sv}` → `ay`); only the given ones."""
    props: dict[str, Variant] = {}
    if rssi_dbm is not None:
        props["RSSI"] = Variant("n", rssi_dbm)
    if manufacturer_data is not None:
        props["ManufacturerData"] = Variant(
            "a{qv}", {company: _ay(data) for company, data in manufacturer_data.items()}
        )
    if service_data is not None:
        props["ServiceData"] = Variant(
            "a{sv}", {uuid: _ay(data) for uuid, data in service_data.items()}
        )
    if local_name is not None:
        props["Name"] = Variant("s", local_name)
        props["Alias"] = Variant("s", local_name)
    if service_uuids is not None:
        props["UUIDs"] = Variant("as", list(service_uuids))
    if tx_power_dbm is not None:
        props["TxPower"] = Variant("n", tx_power_dbm)
    return props


class FakeBluez:
    """A private system bus with a BlueZ mock on it; `address` goes into DBUS_SYSTEM_BUS_ADDRESS."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        # A unix socket path must stay under 108 bytes: pytest's tmp_path can be longer.
        self._sockdir = Path(tempfile.mkdtemp(prefix="tb-bus-"))
        self.address = f"unix:path={self._sockdir / 'system_bus_socket'}"
        self.adapters: dict[str, FakeAdapter] = {}
        self._daemon: subprocess.Popen[bytes] | None = None
        self._bluez: subprocess.Popen[bytes] | None = None
        self._bus: MessageBus | None = None
        self.bluez_starts = 0

    @property
    def log_path(self) -> Path:
        return self._workdir / "bluez-mock.log"

    # --- processes ---

    def start_bus(self) -> None:
        """Start dbus-daemon; return once it printed its address (it is listening then)."""
        self._workdir.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "system-bus.conf"
        config.write_text(BUS_CONFIG.format(socket=self._sockdir / "system_bus_socket"))
        with (self._workdir / "dbus-daemon.err").open("ab") as err:
            self._daemon = subprocess.Popen(
                ["dbus-daemon", "--nofork", "--print-address=1", f"--config-file={config}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        assert self._daemon.stdout is not None
        ready, _, _ = select.select([self._daemon.stdout], [], [], START_TIMEOUT_S)
        line = self._daemon.stdout.readline().decode().strip() if ready else ""
        # dbus-daemon writes nothing more to stdout; close our end so no pipe is left unread.
        self._daemon.stdout.close()
        if not line:
            self._stop_process(self._daemon)
            raise FakeBluezError(
                f"dbus-daemon printed no address within {START_TIMEOUT_S} s: "
                f"{(self._workdir / 'dbus-daemon.err').read_text(errors='replace')[-2000:]}"
            )

    def _spawn_bluez(self) -> None:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}
        env.pop("PYTHONPATH", None)  # the mock runs on Debian's python3, not in our venv
        with (self._workdir / "bluez-mock.err").open("ab") as err:
            self._bluez = subprocess.Popen(
                [SYSTEM_PYTHON, "-m", "dbusmock", "--system", "-t", TEMPLATE, "-l", self.log_path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # never an unread pipe: the mock blocks at 64 KiB
                stderr=err,
                env=env,
                start_new_session=True,
            )
        self.bluez_starts += 1

    def _stop_process(
        self, proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM
    ) -> None:
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        if proc.stderr is not None:
            proc.stderr.close()

    async def start(self) -> None:
        """Start the bus, connect the test's own D-Bus client, and start BlueZ."""
        self.start_bus()
        self._bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        await self.start_bluez()

    async def start_bluez(self) -> None:
        """Start the BlueZ mock (again); ready when org.bluez has an owner; re-add the adapters."""
        self._spawn_bluez()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not await self.bluez_running():
            assert self._bluez is not None
            if self._bluez.poll() is not None or time.monotonic() > deadline:
                self._stop_process(self._bluez)
                self._bluez = None
                raise FakeBluezError(
                    f"the BlueZ mock did not take org.bluez within {START_TIMEOUT_S} s: "
                    + (self._workdir / "bluez-mock.err").read_text(errors="replace")[-2000:]
                )
            await asyncio.sleep(0.02)
        for adapter in self.adapters.values():
            await self._add_adapter_object(adapter)

    async def kill_bluez(self) -> None:
        """bluetoothd crashes: SIGKILL the mock and wait until org.bluez has no owner."""
        self._stop_process(self._bluez, signal.SIGKILL)
        self._bluez = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while await self.bluez_running():
            if time.monotonic() > deadline:
                raise FakeBluezError("org.bluez still has an owner after the mock was killed")
            await asyncio.sleep(0.02)

    async def restart_bluez(self) -> None:
        await self.kill_bluez()
        await self.start_bluez()

    async def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._bus.wait_for_disconnect()
            self._bus = None
        self._stop_process(self._bluez, signal.SIGKILL)
        self._bluez = None
        self._stop_process(self._daemon)
        self._daemon = None
        shutil.rmtree(self._sockdir, ignore_errors=True)

    # --- D-Bus ---

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        destination: str = BLUEZ,
    ) -> list[Any]:
        """Call a method and return the reply body; raise FakeBluezError on a D-Bus error."""
        reply = await self.call_message(path, interface, member, signature, body, destination)
        if reply.message_type == MessageType.ERROR:
            raise FakeBluezError(f"{interface}.{member} on {path}: {reply.error_name} {reply.body}")
        return list(reply.body)

    async def call_message(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        destination: str = BLUEZ,
    ) -> Message:
        """Call a method as bluetoothd would and return the reply as it came, error or not."""
        assert self._bus is not None, "FakeBluez.start() first"
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await self._bus.call(
                Message(
                    destination=destination,
                    path=path,
                    interface=interface,
                    member=member,
                    signature=signature,
                    body=body or [],
                )
            )

    async def bluez_running(self) -> bool:
        body = await self.call(
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            [BLUEZ],
            destination="org.freedesktop.DBus",
        )
        return bool(body[0])

    # --- adapters ---

    async def add_adapter(
        self,
        name: str = "hci0",
        address: str = "00:1A:7D:DA:71:13",
        *,
        powered: bool = True,
        passive: bool = True,
    ) -> FakeAdapter:
        """Add an adapter; `passive=False` leaves out AdvertisementMonitorManager1 (no passive scan)."""
        adapter = FakeAdapter(name, address, powered, ("or_patterns",) if passive else ())
        self.adapters[name] = adapter
        await self._add_adapter_object(adapter)
        return adapter

    async def _add_adapter_object(self, adapter: FakeAdapter) -> None:
        await self.call(
            "/",
            BLUEZ_MOCK_IFACE,
            "AddAdapter",
            "ssbas",
            [adapter.name, adapter.address, adapter.powered, list(adapter.monitor_types)],
        )

    async def unplug_adapter(self, name: str = "hci0") -> None:
        """The USB adapter is pulled: its devices and the adapter object disappear."""
        await self.call("/", BLUEZ_MOCK_IFACE, "RemoveAdapter", "s", [name])

    async def plug_adapter(self, name: str = "hci0") -> None:
        """The adapter is plugged back (same name and address)."""
        await self._add_adapter_object(self.adapters[name])

    async def set_powered(self, name: str, powered: bool) -> None:
        """Power the adapter off or on, as `bluetoothctl power off|on` does (Properties.Set)."""
        self.adapters[name].powered = powered
        await self.call(
            f"/org/bluez/{name}",
            PROPERTIES_IFACE,
            "Set",
            "ssv",
            [ADAPTER_IFACE, "Powered", Variant("b", powered)],
        )

    async def adapter_property(self, name: str, prop: str) -> Any:
        body = await self.call(
            f"/org/bluez/{name}", PROPERTIES_IFACE, "Get", "ss", [ADAPTER_IFACE, prop]
        )
        return body[0].value

    # --- faults ---

    async def fail_method(
        self,
        name: str,
        interface: str,
        method: str,
        in_signature: str,
        error: str,
        text: str = "injected fault",
    ) -> None:
        """Replace a method of adapter `name` (dbusmock AddMethod) with one that raises `error`."""
        code = f"raise dbus.exceptions.DBusException({text!r}, name={error!r})"
        await self.call(
            f"/org/bluez/{name}",
            MOCK_IFACE,
            "AddMethod",
            "sssss",
            [interface, method, in_signature, "", code],
        )

    async def fail_start_discovery(
        self, name: str = "hci0", error: str = "org.bluez.Error.InProgress"
    ) -> None:
        """StartDiscovery answers `error` until `restore_start_discovery`."""
        await self.fail_method(
            name, ADAPTER_IFACE, "StartDiscovery", "", error, "Operation already in progress"
        )

    async def restore_start_discovery(self, name: str = "hci0") -> None:
        await self.call("/", BLUEZ_MOCK_IFACE, "RestoreStartDiscovery", "s", [name])

    # --- the air ---

    async def advertise(self, name: str, address: str, props: dict[str, Variant]) -> bool:
        """One advert (see `device_props`); returns whether a scanning client could hear it."""
        body = await self.call(
            "/", BLUEZ_MOCK_IFACE, "Advertise", "ssa{sv}", [name, address, props]
        )
        return bool(body[0])

    # --- what clients did ---

    async def method_calls(self, path: str, method: str) -> list[list[Any]]:
        """The arguments of every call of `method` on the object at `path` since BlueZ started."""
        body = await self.call(path, MOCK_IFACE, "GetMethodCalls", "s", [method])
        return [
            [arg.value if isinstance(arg, Variant) else arg for arg in args] for _, args in body[0]
        ]

    async def discovery_clients(self, name: str = "hci0") -> list[str]:
        return list((await self.call("/", BLUEZ_MOCK_IFACE, "GetDiscoveryClients", "s", [name]))[0])

    async def monitors(self, name: str = "hci0") -> list[tuple[str, str]]:
        body = await self.call("/", BLUEZ_MOCK_IFACE, "GetMonitors", "s", [name])
        return [(sender, path) for sender, path in body[0]]

    async def applications(self, name: str = "hci0") -> list[tuple[str, str]]:
        """(client bus name, object path) of each GATT application registered on the adapter."""
        body = await self.call("/", BLUEZ_MOCK_IFACE, "GetApplications", "s", [name])
        return [(sender, path) for sender, path in body[0]]

    async def connect_central(
        self, name: str, address: str, props: dict[str, Variant] | None = None
    ) -> str:
        """A central (a phone) connects to the adapter: its Device1 object, Connected, with `props`
        (see `device_props`); returns its path, the `device` option of BlueZ's GATT calls."""
        body = await self.call(
            "/", BLUEZ_MOCK_IFACE, "ConnectDevice", "ssa{sv}", [name, address, props or {}]
        )
        return str(body[0])

    async def advertisements(self, name: str = "hci0") -> list[tuple[str, str]]:
        """(client bus name, object path) of each advertisement registered on the adapter."""
        body = await self.call("/", BLUEZ_MOCK_IFACE, "GetAdvertisements", "s", [name])
        return [(sender, path) for sender, path in body[0]]


async def close_bleak_manager() -> None:
    """Disconnect bleak's BlueZ manager of the running loop (one per loop, kept for the process).

    A test's event loop dies with the test; without this its manager's bus socket is left for the
    garbage collector, which warns, and the next loop's manager would find a dead entry.
    """
    from bleak.backends.bluezdbus import manager as bleak_manager

    instance = bleak_manager._global_instances.pop(asyncio.get_running_loop(), None)
    if instance is None or instance._bus is None:
        return
    watcher = instance._bus_watcher_task
    instance._bus.disconnect()
    if watcher is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.wait({watcher})


@contextlib.asynccontextmanager
async def running_fake_bluez(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeBluez]:
    """A started FakeBluez with DBUS_SYSTEM_BUS_ADDRESS pointing at it; everything stopped after."""
    require_system_packages()
    fake = FakeBluez(workdir)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", fake.address)
    try:
        await fake.start()
        yield fake
    finally:
        await close_bleak_manager()
        await fake.close()
