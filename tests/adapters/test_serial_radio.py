"""SerialAdvertSource over a real pty with pyserial-asyncio-fast, against a simulated firmware.

The firmware (tests/fakes/serial_firmware.py) sits on the pty master; the source opens a stable
symlink to the slave, as it would open /dev/serial/by-id/… on a Pi. Timeouts only guard against
hangs; no test asserts how fast anything happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.serial_radio import CoprocessorUnsupported, SerialAdvertSource
from edge.core import frames
from edge.core import serial_protocol as tsp
from edge.core.advert import RawAdvert
from edge.core.health import RadioState
from firmware_config.profiles import load_profiles
from tests.factories import T0, eid_advert, make_device
from tests.fakes.serial_firmware import GUARD_S, FakeSerialFirmware, wait_for

R = tsp.RejectReason


class FakeClock:
    """The host's wall clock, set by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def port(tmp_path: Path) -> Path:
    by_id = tmp_path / "dev" / "serial" / "by-id"
    by_id.mkdir(parents=True)
    return by_id / "usb-Threshold_nRF52_Scanner_0001-if00"


@pytest.fixture
async def firmware(port: Path) -> AsyncIterator[FakeSerialFirmware]:
    fake = FakeSerialFirmware(port)
    fake.plug()
    try:
        yield fake
    finally:
        fake.close()


def make_source(port: Path, **overrides: Any) -> SerialAdvertSource:
    fields: dict[str, Any] = {
        "clock": FakeClock(),
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.2,
        "hello_timeout_s": 2.0,
        "jitter": random.Random(1).random,
    }
    fields.update(overrides)
    return SerialAdvertSource(str(port), 1_000_000, **fields)


@contextlib.asynccontextmanager
async def running(source: SerialAdvertSource) -> AsyncIterator[list[RawAdvert]]:
    """Consume the source's batches in a task; what it delivers accumulates in the yielded list."""
    adverts: list[RawAdvert] = []

    async def consume() -> None:
        async with contextlib.aclosing(source.batches()) as batches:
            async for batch in batches:
                adverts.extend(batch)

    task = asyncio.create_task(consume(), name="serial-source")
    try:
        yield adverts
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def door_adverts(n: int = 3, rssi_dbm: int = -60) -> list[RawAdvert]:
    """Adverts of an enrolled phone, an iBeacon and a bare flags-only advert."""
    mixed = [
        eid_advert(make_device(), T0, rssi_dbm, "4A:00:00:00:00:01"),
        RawAdvert(T0, "C0:FF:EE:00:00:02", rssi_dbm - 5, frames.ibeacon_advert(bytes(16), 1, 2)),
        RawAdvert(T0, "00:1B:DC:00:00:03", rssi_dbm - 10, frames.FLAGS_LE_GENERAL),
    ]
    return mixed[:n]


def seen(adverts: list[RawAdvert]) -> list[tuple[str, int, bytes]]:
    return [(a.address, a.rssi_dbm, a.payload) for a in adverts]


# --- Adverts --------------------------------------------------------------------------------------


async def test_adverts_arrive_as_raw_adverts_with_payload_rssi_and_host_time(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    clock = FakeClock(T0 + 42.0)
    source = make_source(port, clock=clock)
    sent = door_adverts()
    async with running(source) as got:
        scan = await firmware.wait_scanning()
        await firmware.advertise(sent)
        await wait_for(lambda: len(got) == len(sent), "the adverts")

        assert seen(got) == seen(sent)
        assert {a.t_s for a in got} == {T0 + 42.0}  # stamped by the host clock at receipt
        assert scan == tsp.ScanCommand(tsp.ScanMode.PASSIVE, 100, 100)
        assert source.hello is not None and source.hello.firmware == "threshold-nrf52"
        health = source.health()
        assert health.source == "serial"
        assert health.state is RadioState.SCANNING
        assert health.last_advert_age_s is not None
        assert health.adverts_per_s > 0
        assert health.recoveries == 0
        assert source.decode_counters.rejected_total == 0


async def test_active_scanning_with_custom_timing_is_requested_when_configured(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    source = make_source(port, scan_mode="active", scan_interval_ms=60, scan_window_ms=30)
    async with running(source):
        scan = await firmware.wait_scanning()
    assert scan == tsp.ScanCommand(tsp.ScanMode.ACTIVE, 60, 30)


def test_an_unknown_scan_mode_is_refused_at_construction(port: Path) -> None:
    with pytest.raises(ValueError, match="scan_mode"):
        make_source(port, scan_mode="aggressive")


async def test_a_line_split_across_reads_arrives_whole(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    (advert,) = door_adverts(1)
    line = firmware.advert_line(advert)
    source = make_source(port)
    async with running(source) as got:
        await firmware.wait_scanning()
        # Each piece is read by the host before the next is written.
        await firmware.send(line + line, pieces=[1, 3, 17, len(line) - 21, 40])
        await wait_for(lambda: len(got) == 2, "both adverts")
    assert seen(got) == seen([advert, advert])
    assert source.decode_counters.rejected_total == 0


# --- Hostile bytes --------------------------------------------------------------------------------


def _bad_checksum(line: bytes) -> bytes:
    return line[:-5] + (b"0000" if not line.endswith(b"0000\n") else b"FFFF") + b"\n"


def _noise(n: int, seed: int = 3) -> bytes:
    """What a baud-rate mismatch reads as: high bytes, and no newline for a long stretch."""
    rng = random.Random(seed)
    return bytes(rng.randrange(0x80, 0x100) for _ in range(n))


INJECTIONS: list[tuple[str, bytes, tsp.RejectReason]] = [
    ("garbage", b"\x00\x13\xfe\xff garbage \x7f\n", R.GARBAGE),
    ("oversized line", b"A" * 5000 + b"\n", R.OVERSIZED),
    ("baud-mismatch noise", _noise(64 * 1024) + b"\n", R.GARBAGE),
    (
        "bad checksum",
        _bad_checksum(tsp.encode_advert(1, "C0:FF:EE:00:00:09", tsp.AddressType.RANDOM, -50, b"")),
        R.BAD_CHECKSUM,
    ),
    ("rssi out of range", tsp.frame_line("ADV 1 C0:FF:EE:00:00:09 random 99 020106"), R.BAD_RSSI),
    ("bad hex", tsp.frame_line("ADV 1 C0:FF:EE:00:00:09 random -50 02010"), R.BAD_HEX),
    ("wrong field count", tsp.frame_line("ADV 1 C0:FF:EE:00:00:09 -50 020106"), R.FIELD_COUNT),
]


@pytest.mark.parametrize(
    ("junk", "reason"), [(i[1], i[2]) for i in INJECTIONS], ids=[i[0] for i in INJECTIONS]
)
async def test_hostile_bytes_are_counted_and_skipped_and_later_adverts_arrive(
    firmware: FakeSerialFirmware, port: Path, junk: bytes, reason: tsp.RejectReason
) -> None:
    before, after = door_adverts(2)
    source = make_source(port)
    async with running(source) as got:
        await firmware.wait_scanning()
        await firmware.advertise([before])
        await firmware.send(junk)
        await firmware.advertise([after])
        await wait_for(lambda: len(got) == 2, "the adverts around the junk")
    assert seen(got) == seen([before, after])
    assert source.decode_counters.rejected == {reason: 1}
    assert source.health().recoveries == 0


async def test_an_advert_right_after_baud_noise_is_recovered(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    (advert,) = door_adverts(1)
    source = make_source(port)
    async with running(source) as got:
        await firmware.wait_scanning()
        await firmware.send(_noise(64 * 1024) + firmware.advert_line(advert))
        await wait_for(lambda: len(got) == 1, "the advert after the noise")
    assert seen(got) == seen([advert])
    assert source.decode_counters.resynced == 1


async def test_repeated_decode_errors_log_once_at_warning_then_at_debug(
    firmware: FakeSerialFirmware, port: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.adapters.serial_radio")
    (advert,) = door_adverts(1)
    bad = _bad_checksum(firmware.advert_line(advert))
    source = make_source(port)
    async with running(source) as got:
        await firmware.wait_scanning()
        await firmware.send(bad * 5)
        await firmware.advertise([advert])
        await wait_for(lambda: len(got) == 1, "the good advert")
    records = [r for r in caplog.records if "bad_checksum" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING] + [logging.DEBUG] * 4
    assert source.decode_counters.rejected == {R.BAD_CHECKSUM: 5}


async def test_device_errors_are_logged_and_scanning_goes_on(
    firmware: FakeSerialFirmware, port: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (advert,) = door_adverts(1)
    source = make_source(port)
    async with running(source) as got:
        await firmware.wait_scanning()
        await firmware.send(tsp.encode_error(tsp.ERR_OVERFLOW, "17 adverts dropped"))
        await firmware.advertise([advert])
        await wait_for(lambda: len(got) == 1, "the advert after the error")
    assert source.device_errors == 1
    assert any(
        r.levelno == logging.WARNING and "17 adverts dropped" in r.getMessage()
        for r in caplog.records
    )
    assert source.health().recoveries == 0


# --- The device disappearing ----------------------------------------------------------------------


async def test_unplug_and_replug_reconnects_and_adverts_flow_again(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    first, second = door_adverts(2)
    source = make_source(port)
    async with running(source) as got:
        await firmware.wait_scanning()
        await firmware.advertise([first])
        await wait_for(lambda: len(got) == 1, "the advert before unplugging")

        firmware.unplug()
        await wait_for(lambda: source.health().state is RadioState.RECOVERING, "RECOVERING")
        # The port is gone for a while: the source keeps trying to open the missing link.
        await wait_for(lambda: source.reconnect_attempts >= 3, "retries while unplugged")
        assert "cannot open" in (source.health().last_error or "")

        firmware.plug()  # a new pty behind the same stable path
        await firmware.wait_scanning()
        await firmware.advertise([second])
        await wait_for(lambda: len(got) == 2, "the advert after replugging")

        health = source.health()
    assert seen(got) == seen([first, second])
    assert firmware.plugs == 2
    assert health.state is RadioState.SCANNING
    assert health.recoveries == 1
    assert health.last_error is not None


async def test_a_device_plugged_in_after_start_is_picked_up(port: Path) -> None:
    fake = FakeSerialFirmware(port)
    source = make_source(port)
    try:
        async with running(source) as got:
            await wait_for(lambda: source.reconnect_attempts >= 2, "retries with no device")
            assert source.health().state is RadioState.RECOVERING
            fake.plug()
            await fake.wait_scanning()
            await fake.advertise(door_adverts(1))
            await wait_for(lambda: len(got) == 1, "the advert")
            assert source.health().state is RadioState.SCANNING
            assert source.health().recoveries == 0  # it had never been scanning
    finally:
        fake.close()


async def test_a_restarted_device_is_told_to_scan_again(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    first, second = door_adverts(2)
    source = make_source(port)
    async with running(source) as got:
        await firmware.wait_scanning()
        # A watchdog reset: the firmware boots, says HELLO unasked and is no longer scanning.
        firmware.scanning = None
        await firmware.send(firmware.hello_line())
        await firmware.wait_scanning()
        await firmware.advertise([first, second])
        await wait_for(lambda: len(got) == 2, "adverts after the restart")
    scans = [c for c in firmware.commands if isinstance(c, tsp.ScanCommand)]
    assert len(scans) == 2
    assert source.health().recoveries == 1
    assert "restarted" in (source.health().last_error or "")


async def test_a_silent_device_is_probed_then_reconnected(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    source = make_source(port, probe_after_s=0.2, hello_timeout_s=0.3)
    async with running(source) as got:
        await firmware.wait_scanning()
        await wait_for(
            lambda: firmware.commands.count(tsp.HelloRequest()) >= 2, "a liveness probe (answered)"
        )
        assert source.health().state is RadioState.SCANNING

        firmware.muted = True  # hung: reads commands, answers nothing
        await wait_for(lambda: source.health().state is RadioState.RECOVERING, "RECOVERING")
        assert "HELLO" in (source.health().last_error or "")

        firmware.muted = False
        firmware.scanning = None
        await firmware.wait_scanning()
        await firmware.advertise(door_adverts(1))
        await wait_for(lambda: len(got) == 1, "the advert after recovery")
    assert source.health().recoveries >= 1


async def test_no_hello_through_noise_suggests_checking_the_baud_rate(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    firmware.muted = True
    source = make_source(port, hello_timeout_s=0.3)
    async with running(source) as got:
        await wait_for(lambda: tsp.HelloRequest() in firmware.commands, "the HELLO? command")
        await firmware.send(_noise(4096) + b"\n")
        await wait_for(lambda: "baud" in (source.health().last_error or ""), "a baud-rate hint")
        assert source.health().state is RadioState.RECOVERING

        firmware.muted = False
        await firmware.wait_scanning()
        await firmware.advertise(door_adverts(1))
        await wait_for(lambda: len(got) == 1, "the advert once the firmware answers")


async def test_closing_the_source_stops_the_scan_and_releases_the_port(
    firmware: FakeSerialFirmware, port: Path
) -> None:
    async with running(make_source(port)):
        await firmware.wait_scanning()
    await wait_for(lambda: firmware.scanning is None, "STOP")
    assert firmware.commands[-1] == tsp.StopCommand()
    # The port was released: another source can open it and scan.
    async with running(make_source(port)):
        await firmware.wait_scanning()


# --- Firmware the gateway cannot drive --------------------------------------------------------


async def _run_until_error(source: SerialAdvertSource) -> CoprocessorUnsupported:
    with pytest.raises(CoprocessorUnsupported) as info:
        async with asyncio.timeout(GUARD_S):
            async with contextlib.aclosing(source.batches()) as batches:
                async for _ in batches:
                    pass
    return info.value


async def test_an_unsupported_protocol_major_is_a_clear_error_and_not_retried(
    port: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeSerialFirmware(port, firmware="threshold-nrf52", version="3.0.0", proto="2.1")
    fake.plug()
    try:
        source = make_source(port)
        error = await _run_until_error(source)
        await wait_for(lambda: tsp.StopCommand() in fake.commands, "the port closed politely")
    finally:
        fake.close()
    message = str(error)
    assert "threshold-nrf52 3.0.0" in message
    assert "TSP/2.1" in message and "TSP/1" in message
    assert "flash a firmware" in message
    assert error.device == str(port)
    assert source.health().state is RadioState.FAILED
    assert not any(isinstance(c, tsp.ScanCommand) for c in fake.commands)  # never told to scan
    assert fake.commands.count(tsp.HelloRequest()) == 1  # not retried
    assert any(r.levelno == logging.ERROR and "TSP/2.1" in r.getMessage() for r in caplog.records)


async def test_active_scanning_on_a_passive_only_firmware_is_a_clear_error(port: Path) -> None:
    fake = FakeSerialFirmware(port, firmware="threshold-esp32", capabilities=("passive",))
    fake.plug()
    try:
        error = await _run_until_error(make_source(port, scan_mode="active"))
    finally:
        fake.close()
    assert "threshold-esp32" in str(error)
    assert "cannot scan active" in str(error)


async def test_a_firmware_older_than_its_profile_is_refused(port: Path) -> None:
    fake = FakeSerialFirmware(port, firmware="threshold-nrf52", version="1.1.9")
    fake.plug()
    try:
        error = await _run_until_error(make_source(port, profiles=load_profiles()))
    finally:
        fake.close()
    assert "older than 1.2.0" in str(error)
    assert "reflash" in str(error)


async def test_a_firmware_without_a_profile_is_driven_with_a_warning(
    port: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeSerialFirmware(port, firmware="homebrew-scanner", version="0.1.0")
    fake.plug()
    try:
        async with running(make_source(port, profiles=load_profiles())) as got:
            await fake.wait_scanning()
            await fake.advertise(door_adverts(1))
            await wait_for(lambda: len(got) == 1, "the advert")
    finally:
        fake.close()
    assert any(
        r.levelno == logging.WARNING and "homebrew-scanner" in r.getMessage()
        for r in caplog.records
    )
