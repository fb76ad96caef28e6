"""A quiet gateway keeps its resolver's windows rolling and the window ahead precomputed, with no adverts.

Real SQLite and keys, no broker; the gateway's clocks are fakes the test moves, its housekeeping task
runs on the real event loop.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.adapters.keystore import provision_gateway_keys
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.app import Gateway
from edge.config import GatewayConfig, GatewaySection
from edge.core import bundle, eid, wire
from edge.core.advert import RawAdvert
from edge.core.resolver import EidResolver
from tests.factories import make_device
from tests.fakes.radio import FakeAdvertSource
from tests.integration.rig import eventually

K = 8  # 256-s windows
STEP = 1 << K
BOUNDARY = 1_790_000_000 - 1_790_000_000 % 4096 + 4096
DEVICES = 2_000  # four slices of precomputation per window
SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def eid_at(device: wire.RosterDevice, t: float) -> bytes:
    return eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(t))


@dataclass
class Door:
    gateway: Gateway
    source: FakeAdvertSource
    wall: FakeClock
    mono: FakeClock

    def tick(self, seconds: float) -> None:
        """Time passes: both clocks move together (no step)."""
        self.wall.now += seconds
        self.mono.now += seconds


@pytest.fixture
def door(tmp_path: Path, store: SqliteGatewayStore) -> Door:
    keys, _ = provision_gateway_keys(tmp_path / "keys", "file", "rpi-otp-private-key")
    config = GatewayConfig(gateway=GatewaySection(data_dir=str(tmp_path)))
    source, wall, mono = FakeAdvertSource(), FakeClock(BOUNDARY - 10), FakeClock(1000.0)
    gateway = Gateway(
        config, source, store, keys, [SIGNER.public_key()], wall_clock=wall, monotonic=mono
    )
    return Door(gateway, source, wall, mono)


@pytest.fixture
def devices() -> list[wire.RosterDevice]:
    return [make_device(exponent=K) for _ in range(DEVICES)]


async def test_with_no_adverts_the_windows_roll_on_time_and_the_next_is_ready(
    door: Door, devices: list[wire.RosterDevice]
) -> None:
    resolver = door.gateway.pipeline.resolver = EidResolver(devices, BOUNDARY - 10)
    task = asyncio.create_task(door.gateway.housekeep_while_quiet(), name="housekeeping")
    try:
        door.tick(11.0)
        # Rolled without an advert: the window after the boundary's is in range now...
        await eventually(
            lambda: resolver.resolve(eid_at(devices[0], BOUNDARY + STEP)) is not None,
            "the windows to roll at the boundary",
        )
        # ...and the one after that is computed, a slice at a time, before its boundary.
        await eventually(lambda: not resolver.pending_work, "the window ahead to be precomputed")

        door.tick(STEP)
        await eventually(
            lambda: resolver.resolve(eid_at(devices[-1], BOUNDARY + 2 * STEP)) is not None,
            "the next roll",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert resolver.late_rebuilds == 0 and resolver.late_eids == 0  # nothing done at a boundary


async def test_while_adverts_arrive_the_radio_drives_housekeeping(door: Door) -> None:
    gateway = door.gateway
    assert gateway.quiet_radio_now() == BOUNDARY - 10  # before any advert: the wall clock
    door.source.push([RawAdvert(BOUNDARY - 5, "4A:00:00:00:00:01", -70, b"\x02\x01\x06")])
    scan = asyncio.create_task(gateway._scan(), name="scan")
    try:
        await eventually(lambda: gateway.pipeline.counters.adverts == 1, "the advert")
        assert gateway.quiet_radio_now() is None  # heard just now: the radio's clock rules
        door.mono.now += 3.0
        assert gateway.quiet_radio_now() == BOUNDARY - 5 + 3.0  # quiet: the radio's clock runs on
    finally:
        scan.cancel()
        await asyncio.gather(scan, return_exceptions=True)


HOURS_S = 3 * 3600.0


async def test_a_forward_step_of_the_clock_is_detected_and_the_new_windows_resolve_at_once(
    door: Door, devices: list[wire.RosterDevice], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = door.gateway
    resolver = gateway.pipeline.resolver = EidResolver(devices, BOUNDARY - 10)
    door.source.push([RawAdvert(BOUNDARY - 10, "4A:00:00:00:00:01", -70, b"\x02\x01\x06")])
    scan = asyncio.create_task(gateway._scan(), name="scan")
    try:
        await eventually(lambda: gateway.pipeline.counters.adverts == 1, "the advert")
        assert not gateway.check_clock_step()  # the reference reading
        door.tick(1.0)
        assert not gateway.check_clock_step()

        door.wall.now += HOURS_S  # NTP sets the clock of a Pi that booted without network
        door.tick(1.0)
        now = door.wall.now
        assert resolver.resolve(eid_at(devices[0], now)) is None  # the windows held are hours old

        assert gateway.check_clock_step()
    finally:
        scan.cancel()
        await asyncio.gather(scan, return_exceptions=True)

    # At once, not after a quiet spell or the next boundary: an EID of the new window resolves.
    assert resolver.resolve(eid_at(devices[0], now)) is not None
    assert resolver.resolve(eid_at(devices[-1], now)) is not None
    # The radio's time carried through quiet spells moved with the clock.
    door.tick(3.0)
    assert gateway.quiet_radio_now() == pytest.approx(BOUNDARY - 10 + HOURS_S + 2.0 + 3.0)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"the wall clock stepped forward by {HOURS_S + 0:.1f} s" in warning
    assert not gateway.check_clock_step()  # logged once


async def test_a_backward_step_seen_by_the_housekeeping_tick_does_not_blind_the_resolver(
    door: Door, devices: list[wire.RosterDevice], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = door.gateway
    resolver = gateway.pipeline.resolver = EidResolver(devices, BOUNDARY - 10)
    door.source.push([RawAdvert(BOUNDARY - 10, "4A:00:00:00:00:01", -70, b"\x02\x01\x06")])
    scan = asyncio.create_task(gateway._scan(), name="scan")
    await eventually(lambda: gateway.pipeline.counters.adverts == 1, "the advert")
    # Quiet from now on: housekeeping carries the radio's time on from that advert's.
    task = asyncio.create_task(gateway.housekeep_while_quiet(), name="housekeeping")
    try:
        door.tick(2.0)
        await eventually(lambda: gateway.quiet_radio_now() is not None, "a quiet radio")
        door.wall.now -= HOURS_S  # the clock was ahead (a bad RTC): NTP steps it back
        door.tick(1.0)
        now = door.wall.now

        await eventually(
            lambda: resolver.resolve(eid_at(devices[0], now)) is not None,
            "the windows of the new time",
        )
    finally:
        task.cancel()
        scan.cancel()
        await asyncio.gather(task, scan, return_exceptions=True)
    assert "the wall clock stepped back by" in caplog.text
    assert resolver.resolve(eid_at(devices[-1], now)) is not None
