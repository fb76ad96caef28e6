"""BleakAdvertSource against a fake BlueZ (python-dbusmock on a private system bus).

The fake only lets an advert through while a client scans (discovery session or monitor) on a powered
adapter, so adverts flowing again after a fault prove that the source really restarted its scan.
Timeouts here are guards, never assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

import pytest
from dbus_fast import Variant

from edge.adapters.bleak_radio import (
    BleakAdvertSource,
    RadioFailed,
    RecoveryLadder,
    RecoveryStep,
    ScanMode,
)
from edge.core import frames
from edge.core.advert import RawAdvert
from edge.core.health import RadioState
from tests.fakes.bluez import FakeBluez, FakeBluezError, device_props, running_fake_bluez

GUARD_S = 20.0  # a guard against hanging, not a performance expectation
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
APP_COMPANY = 0xFFFF
PHONE = "4A:00:00:00:00:01"
TAG = "5B:00:00:00:00:02"
EID_A = bytes.fromhex("a9b76a71c5f89290")
EID_B = bytes.fromhex("4144413e45fefa58")


def eid_frame(eid: bytes) -> bytes:
    return bytes((frames.FRAME_TYPE_EID, 0xEC)) + eid


@pytest.fixture
async def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBluez]:
    async with running_fake_bluez(tmp_path, monkeypatch) as fake:
        yield fake


async def until(predicate: Callable[[], bool], what: str, guard_s: float = GUARD_S) -> None:
    """Wait until `predicate()` holds; fail naming `what` if the guard runs out."""
    try:
        async with asyncio.timeout(guard_s):
            while True:  # polled: the conditions live in other tasks and in the mock
                if predicate():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


class Collector:
    """Runs `source.batches()` in a task and keeps every advert and the error that ended it."""

    def __init__(self, source: BleakAdvertSource) -> None:
        self.source = source
        self.adverts: list[RawAdvert] = []
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async with contextlib.aclosing(self.source.batches()) as batches:
                async for batch in batches:
                    self.adverts.extend(batch)
        except RadioFailed as exc:
            self.error = exc

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def from_(self, address: str) -> list[RawAdvert]:
        return [a for a in self.adverts if a.address == address]

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run(), name="collector")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        async with asyncio.timeout(GUARD_S):
            await asyncio.wait({self._task})
        if not self._task.cancelled() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]


class Air:
    """Devices advertising through the fake adapter while `on`; each advert nudges the RSSI."""

    def __init__(self, bluez: FakeBluez, adapter: str = "hci0") -> None:
        self._bluez = bluez
        self.adapter = adapter
        self.on = True
        self.devices: dict[str, dict[str, Variant]] = {}
        self.heard = 0
        self._task: asyncio.Task[None] | None = None
        self._tick = 0

    async def _run(self) -> None:
        while True:
            if self.on:
                self._tick += 1
                for address, props in list(self.devices.items()):
                    props = {**props, "RSSI": Variant("n", -60 - self._tick % 5)}
                    try:
                        if await self._bluez.advertise(self.adapter, address, props):
                            self.heard += 1
                    except FakeBluezError:
                        pass  # BlueZ or the adapter is gone right now: nobody hears it
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> Air:
        self._task = asyncio.create_task(self._run(), name="air")
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        async with asyncio.timeout(GUARD_S):
            await asyncio.wait({self._task})


def make_source(
    adapter: str | None = "hci0", mode: ScanMode = "auto", **overrides: object
) -> BleakAdvertSource:
    options: dict[str, object] = {
        "stall_timeout_s": 60.0,
        "restart_limit": 3,
        "power_cycle_limit": 2,
    }
    options.update(overrides)
    return BleakAdvertSource(adapter, mode=mode, **options)  # type: ignore[arg-type]


async def count_calls(bluez: FakeBluez, method: str, adapter: str = "hci0") -> int:
    return len(await bluez.method_calls(f"/org/bluez/{adapter}", method))


async def until_calls(bluez: FakeBluez, method: str, at_least: int, adapter: str = "hci0") -> None:
    try:
        async with asyncio.timeout(GUARD_S):
            while True:
                if await count_calls(bluez, method, adapter) >= at_least:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {at_least} {method} calls on {adapter}")


async def flowing_again(collector: Collector, address: str, recoveries: int) -> None:
    """Adverts from `address` arrive after the recovery numbered `recoveries`."""
    await until(lambda: collector.source.recoveries >= recoveries, f"recovery {recoveries}")
    seen = len(collector.from_(address))
    await until(lambda: len(collector.from_(address)) > seen + 2, f"adverts from {address} again")


# --- scanning ---


async def test_active_scan_delivers_adverts_then_rssi_and_data_changes(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", passive=False)
    source = make_source(mode="auto", clock=lambda: 1_700_000_000.0)
    async with Collector(source) as collector:
        await until(lambda: source.scan_mode is not None, "the scan to start")
        assert source.scan_mode == "active"  # no AdvertisementMonitorManager1: auto → active

        first = device_props(rssi_dbm=-70, service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        assert await bluez.advertise("hci0", PHONE, first)
        await until(lambda: len(collector.from_(PHONE)) == 1, "the first advert")
        advert = collector.from_(PHONE)[0]
        assert advert.t_s == 1_700_000_000.0
        assert advert.rssi_dbm == -70
        classified = frames.classify_advert(advert.payload)
        assert classified.kind is frames.FrameKind.EDDYSTONE_EID
        assert classified.eid == EID_A

        assert await bluez.advertise("hci0", PHONE, device_props(rssi_dbm=-52))
        await until(lambda: len(collector.from_(PHONE)) == 2, "the RSSI change")
        assert collector.from_(PHONE)[1].rssi_dbm == -52
        assert frames.classify_advert(collector.from_(PHONE)[1].payload).eid == EID_A

        changed = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_B)})
        assert await bluez.advertise("hci0", PHONE, changed)
        await until(lambda: len(collector.from_(PHONE)) == 3, "the data change")
        assert frames.classify_advert(collector.from_(PHONE)[2].payload).eid == EID_B

    filters = await bluez.method_calls("/org/bluez/hci0", "SetDiscoveryFilter")
    started_with = {k: v.value for k, v in filters[0][0].items()}
    assert started_with == {"Transport": "le", "DuplicateData": False}
    assert source.health().state is RadioState.STOPPED
    assert await bluez.discovery_clients("hci0") == []  # the scan was stopped on the way out


async def test_passive_scan_registers_threshold_patterns_and_delivers_changes(
    bluez: FakeBluez,
) -> None:
    await bluez.add_adapter("hci0", passive=True)
    source = make_source(mode="auto")
    ibeacon = frames.parse_ad(frames.ibeacon_advert(bytes(range(16)), 7, 9))
    assert not isinstance(ibeacon, str)
    async with Collector(source) as collector:
        await until(lambda: source.scan_mode is not None, "the scan to start")
        assert source.scan_mode == "passive"
        assert await bluez.discovery_clients("hci0") == []  # no discovery session: passive
        [(client, monitor_path)] = await bluez.monitors("hci0")
        [props] = await bluez.call(
            monitor_path,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            "s",
            ["org.bluez.AdvertisementMonitor1"],
            destination=client,
        )
        assert props["Type"].value == "or_patterns"
        patterns = {(p[0], p[1], bytes(p[2])) for p in props["Patterns"].value}
        assert (0, 0x16, b"\xaa\xfe") in patterns  # Eddystone service data
        assert (0, 0xFF, b"\xff\xff") in patterns  # the app frame
        assert (0, 0xFF, b"\x4c\x00\x02\x15") in patterns  # iBeacon

        mfr = {frames.COMPANY_APPLE: ibeacon.manufacturer_data[frames.COMPANY_APPLE]}
        assert await bluez.advertise("hci0", TAG, device_props(rssi_dbm=-80, manufacturer_data=mfr))
        await until(lambda: len(collector.from_(TAG)) == 1, "the iBeacon advert")
        assert (
            frames.classify_advert(collector.from_(TAG)[0].payload).kind is frames.FrameKind.IBEACON
        )

        app = {APP_COMPANY: b"\x01threshold"}
        assert await bluez.advertise("hci0", TAG, device_props(rssi_dbm=-75, manufacturer_data=app))
        await until(lambda: len(collector.from_(TAG)) == 2, "the data change")
        fields = frames.parse_ad(collector.from_(TAG)[1].payload)
        assert not isinstance(fields, str)
        assert fields.manufacturer_data[APP_COMPANY] == b"\x01threshold"
        assert collector.from_(TAG)[1].rssi_dbm == -75
    assert await bluez.monitors("hci0") == []  # unregistered on the way out


async def test_explicit_passive_mode_without_monitor_support_fails_clearly(
    bluez: FakeBluez,
) -> None:
    await bluez.add_adapter("hci0", passive=False)
    source = make_source(mode="passive")
    async with Collector(source) as collector:
        await until(lambda: collector.done, "the source to give up")
    assert isinstance(collector.error, RadioFailed)
    assert "cannot scan passively" in collector.error.reason
    assert source.health().state is RadioState.FAILED


@pytest.mark.parametrize(
    "error", ["org.freedesktop.DBus.Error.UnknownMethod", "org.bluez.Error.Failed"]
)
async def test_auto_mode_scans_actively_when_bluez_refuses_the_monitor(
    bluez: FakeBluez, error: str
) -> None:
    await bluez.add_adapter("hci0", passive=True)
    await bluez.fail_method(
        "hci0", "org.bluez.AdvertisementMonitorManager1", "RegisterMonitor", "o", error
    )
    source = make_source(mode="auto")
    async with Collector(source) as collector, Air(bluez) as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until(lambda: len(collector.from_(PHONE)) > 0, "adverts through an active scan")
        assert source.scan_mode == "active"
        assert "refused the advertisement monitor" in (source.health().last_error or "")
    assert await count_calls(bluez, "RegisterMonitor") == 1


async def test_adapter_chosen_by_address_scans_on_that_adapter(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", "00:1A:7D:DA:71:10", passive=False)
    await bluez.add_adapter("hci1", "00:1A:7D:DA:71:11", passive=False)
    source = make_source("00:1a:7d:da:71:11")
    async with Collector(source) as collector, Air(bluez, "hci1") as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until(lambda: len(collector.from_(PHONE)) > 0, "adverts through hci1")
        assert source.adapter_name == "hci1"
        assert await bluez.discovery_clients("hci0") == []
        assert len(await bluez.discovery_clients("hci1")) == 1


async def test_full_queue_drops_new_adverts_and_counts_them(
    bluez: FakeBluez, caplog: pytest.LogCaptureFixture
) -> None:
    await bluez.add_adapter("hci0", passive=False)
    source = make_source(queue_max=3)
    async with Air(bluez) as air, contextlib.aclosing(source.batches()) as batches:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        first = await anext(batches)  # then stop consuming: the pipeline is "behind"
        assert first
        with caplog.at_level(logging.DEBUG, logger="edge.adapters.bleak_radio"):
            await until(lambda: source.dropped >= 5, "adverts to be dropped")
        queued = await anext(batches)
        assert len(queued) == 3
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert [r.levelno for r in full[:2]] == [logging.WARNING, logging.DEBUG]  # said once


# --- surviving BlueZ ---


@pytest.mark.parametrize("passive", [False, True], ids=["active", "passive"])
async def test_recovers_when_bluez_restarts(bluez: FakeBluez, passive: bool) -> None:
    await bluez.add_adapter("hci0", passive=passive)
    source = make_source()
    async with Collector(source) as collector, Air(bluez) as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until(lambda: len(collector.from_(PHONE)) > 2, "adverts before the restart")

        await bluez.kill_bluez()
        await until(lambda: source.health().state is RadioState.RECOVERING, "RECOVERING")
        assert "BlueZ" in (source.health().last_error or "")
        await bluez.start_bluez()

        await flowing_again(collector, PHONE, recoveries=1)
        assert source.health().state is RadioState.SCANNING
        assert source.scan_mode == ("passive" if passive else "active")


async def test_recovers_when_the_adapter_is_unplugged_and_plugged_back(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", passive=False)
    source = make_source()
    async with Collector(source) as collector, Air(bluez) as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until(lambda: len(collector.from_(PHONE)) > 2, "adverts before the unplug")

        await bluez.unplug_adapter("hci0")
        await until(lambda: "hci0" in (source.health().last_error or ""), "the unplug noticed")
        assert source.health().state is RadioState.RECOVERING
        await bluez.plug_adapter("hci0")

        await flowing_again(collector, PHONE, recoveries=1)


async def test_recovers_when_the_adapter_is_powered_off_and_on(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", passive=False)
    source = make_source()
    async with Collector(source) as collector, Air(bluez) as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until(lambda: len(collector.from_(PHONE)) > 2, "adverts before power off")

        await bluez.set_powered("hci0", False)
        await until(
            lambda: "powered off" in (source.health().last_error or ""), "power off noticed"
        )
        assert source.health().state is RadioState.RECOVERING
        await bluez.set_powered("hci0", True)

        await flowing_again(collector, PHONE, recoveries=1)


async def test_waits_for_a_powered_off_adapter_at_start(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", passive=False, powered=False)
    source = make_source(None)  # the default adapter
    async with Collector(source) as collector, Air(bluez) as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until(lambda: "powered off" in (source.health().last_error or ""), "the wait")
        assert source.health().state is RadioState.STARTING
        await bluez.set_powered("hci0", True)
        await flowing_again(collector, PHONE, recoveries=1)


async def test_retries_when_start_discovery_answers_in_progress(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", passive=False)
    await bluez.fail_start_discovery("hci0", "org.bluez.Error.InProgress")
    source = make_source(restart_limit=50)
    async with Collector(source) as collector, Air(bluez) as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until_calls(bluez, "StartDiscovery", 2)  # tried, backed off, tried again
        assert "org.bluez.Error.InProgress" in (source.health().last_error or "")
        assert collector.from_(PHONE) == []
        await bluez.restore_start_discovery("hci0")
        await flowing_again(collector, PHONE, recoveries=1)


async def test_stall_restarts_the_scan_and_adverts_flow_again(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", passive=False)
    source = make_source(stall_timeout_s=0.5)
    async with Collector(source) as collector, Air(bluez) as air:
        air.devices[PHONE] = device_props(service_data={EDDYSTONE_UUID: eid_frame(EID_A)})
        await until(lambda: len(collector.from_(PHONE)) > 2, "adverts before the stall")

        air.on = False  # BlueZ goes quiet, as it does on real Pis after hours or days
        await until_calls(bluez, "StopDiscovery", 1)
        await until_calls(bluez, "StartDiscovery", 2)
        assert "no adverts" in (source.health().last_error or "")
        air.on = True

        await flowing_again(collector, PHONE, recoveries=1)
        assert await count_calls(bluez, "Set") == 0  # a restart was enough: no power cycle


async def test_stall_escalates_restart_then_power_cycle_then_fails(bluez: FakeBluez) -> None:
    await bluez.add_adapter("hci0", passive=False)
    source = make_source(stall_timeout_s=0.3, restart_limit=2, power_cycle_limit=1)
    async with Collector(source) as collector:
        await until(lambda: collector.done, "the source to give up")

    assert isinstance(collector.error, RadioFailed)
    assert "no adverts" in collector.error.reason
    assert "systemd" in collector.error.reason
    health = source.health()
    assert health.state is RadioState.FAILED
    assert health.recoveries == 0
    # the first scan, two restarts, and the scan after the power cycle
    assert await count_calls(bluez, "StartDiscovery") == 4
    power = await bluez.method_calls("/org/bluez/hci0", "Set")
    assert [(args[1], args[2]) for args in power] == [("Powered", False), ("Powered", True)]
    assert await bluez.adapter_property("hci0", "Powered") is True
    assert await bluez.discovery_clients("hci0") == []  # the last scan was stopped


async def test_waits_without_a_system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    source = make_source()
    async with Collector(source) as collector:
        await until(lambda: "system bus" in (source.health().last_error or ""), "the wait")
        assert source.health().state is RadioState.STARTING
        assert not collector.done  # waiting, not failing: dbus may come up later
    assert source.health().state is RadioState.STOPPED


# --- the pure parts ---


@pytest.mark.parametrize(
    ("restarts", "power_cycles", "expected"),
    [
        (2, 1, ["RESTART_SCAN", "RESTART_SCAN", "POWER_CYCLE", "GIVE_UP"]),
        (0, 2, ["POWER_CYCLE", "POWER_CYCLE", "GIVE_UP"]),
        (1, 0, ["RESTART_SCAN", "GIVE_UP"]),
        (0, 0, ["GIVE_UP"]),
    ],
)
def test_recovery_ladder_steps(restarts: int, power_cycles: int, expected: list[str]) -> None:
    ladder = RecoveryLadder(restarts, power_cycles)
    assert [ladder.step_after_failure().name for _ in expected] == expected


def test_recovery_ladder_starts_over_after_a_recovery() -> None:
    ladder = RecoveryLadder(1, 1)
    assert ladder.step_after_failure() is RecoveryStep.RESTART_SCAN
    assert ladder.step_after_failure() is RecoveryStep.POWER_CYCLE
    ladder.reset()
    assert ladder.step_after_failure() is RecoveryStep.RESTART_SCAN


@pytest.mark.parametrize("adapter", ["bluetooth0", "hci", "00:1A:7D:DA:71", "hci0 "])
def test_rejects_an_adapter_that_is_neither_a_name_nor_an_address(adapter: str) -> None:
    with pytest.raises(ValueError, match="bluetoothctl list"):
        BleakAdvertSource(adapter)
