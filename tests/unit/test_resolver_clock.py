"""ClockCheck: a gateway whose clock is off says so, from the windows its resolved EIDs come from."""

from __future__ import annotations

import pytest

from edge.core import eid
from edge.core.resolver import ClockCheck, ClockCheckConfig, EidResolver
from edge.core.wire import RosterDevice
from tests.factories import make_device

K = 10
STEP = 1 << K
T = 1_790_000_000 - 1_790_000_000 % STEP + 300  # device time: 300 s into a window


def eid_at(device: RosterDevice, t: float) -> bytes:
    return eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(t))


def door(
    resolver: EidResolver,
    check: ClockCheck,
    devices: list[RosterDevice],
    device_time: float,
    gateway_time: float,
    minutes: int = 10,
) -> None:
    """Every device is heard 20 times a minute; ClockCheck samples the resolver every minute."""
    for minute in range(minutes):
        resolver.advance(gateway_time + minute * 60)
        for device in devices:
            for _ in range(20):
                resolver.resolve(eid_at(device, device_time + minute * 60))
        check.observe(gateway_time + minute * 60, resolver.clock_sample())


@pytest.fixture
def devices() -> list[RosterDevice]:
    return [make_device(exponent=K) for _ in range(30)]


def test_a_correct_clock_is_not_suspect(devices: list[RosterDevice]) -> None:
    resolver, check = EidResolver(devices, T), ClockCheck()
    door(resolver, check, devices, device_time=T, gateway_time=T)
    assert not check.clock_suspect and check.reason is None
    assert check.offset_windows == 0.0


@pytest.mark.parametrize(("gateway_ahead_windows", "word"), [(1, "ahead"), (-1, "behind")])
def test_a_clock_a_window_off_still_resolves_and_is_suspect(
    devices: list[RosterDevice], gateway_ahead_windows: int, word: str
) -> None:
    gateway_time = T + gateway_ahead_windows * STEP
    resolver, check = EidResolver(devices, gateway_time), ClockCheck()
    door(resolver, check, devices, device_time=T, gateway_time=gateway_time)
    assert resolver.misses == 0  # the skew tolerance keeps recognising everyone
    assert check.clock_suspect
    assert check.offset_windows == gateway_ahead_windows
    assert check.reason is not None and word in check.reason


def test_a_clock_off_beyond_the_tolerance_resolves_nothing_and_is_suspect(
    devices: list[RosterDevice],
) -> None:
    gateway_time = T + 3 * STEP
    resolver, check = EidResolver(devices, gateway_time), ClockCheck()
    door(resolver, check, devices, device_time=T, gateway_time=gateway_time)
    assert resolver.hits_by_offset == [0, 0, 0]
    assert check.clock_suspect and check.offset_windows is None
    assert check.reason is not None and "no EID resolved" in check.reason


def test_one_stray_device_repeating_its_eid_is_not_enough(devices: list[RosterDevice]) -> None:
    resolver, check = EidResolver(devices, T), ClockCheck()
    stranger = make_device(exponent=K)  # not enrolled, heard 20 times a minute for 10 minutes
    door(resolver, check, [stranger], device_time=T, gateway_time=T)
    assert resolver.misses == 200 and resolver.unknown_eids <= 2  # its EID rotated once
    assert not check.clock_suspect


def test_an_empty_roster_is_not_a_clock_problem() -> None:
    resolver, check = EidResolver([], T), ClockCheck()
    door(resolver, check, [make_device(exponent=K) for _ in range(30)], T, T)
    assert not check.clock_suspect


def test_devices_a_little_off_around_a_boundary_are_normal(devices: list[RosterDevice]) -> None:
    resolver, check = EidResolver(devices, T), ClockCheck()
    behind = devices[:10]  # a third still in the previous window
    for minute in range(10):
        for device in devices:
            heard_at = T + minute * 60 - (STEP if device in behind else 0)
            for _ in range(20):
                resolver.resolve(eid_at(device, heard_at))
        check.observe(T + minute * 60, resolver.clock_sample())
    assert not check.clock_suspect
    assert check.offset_windows == pytest.approx(1 / 3, abs=0.01)


def test_the_verdict_clears_once_the_clock_is_fixed_and_the_evidence_ages_out(
    devices: list[RosterDevice],
) -> None:
    check = ClockCheck(ClockCheckConfig(lookback_s=600))
    wrong = EidResolver(devices, T + STEP)
    door(wrong, check, devices, device_time=T, gateway_time=T + STEP)
    assert check.clock_suspect
    now = T + STEP + 600  # NTP fixed the clock; the roster was rebuilt
    fixed = EidResolver(devices, now)
    door(fixed, check, devices, device_time=now, gateway_time=now, minutes=11)
    assert not check.clock_suspect and check.offset_windows == 0.0


def test_too_little_traffic_gives_no_verdict(devices: list[RosterDevice]) -> None:
    resolver, check = EidResolver(devices, T + STEP), ClockCheck()
    door(resolver, check, devices[:1], device_time=T, gateway_time=T + STEP, minutes=1)
    assert not check.clock_suspect and check.offset_windows is None


def test_a_clock_stepped_back_judges_only_what_comes_after(devices: list[RosterDevice]) -> None:
    resolver, check = EidResolver(devices, T + STEP), ClockCheck()
    door(resolver, check, devices, device_time=T, gateway_time=T + STEP)
    assert check.clock_suspect
    door(resolver, check, devices, device_time=T, gateway_time=T)  # NTP stepped it back
    assert not check.clock_suspect and check.offset_windows == 0.0
    assert check.resolved == 10 * 20 * len(devices)


def test_a_new_resolver_after_a_roster_rebuild_starts_its_counts_afresh(
    devices: list[RosterDevice],
) -> None:
    check = ClockCheck()
    door(EidResolver(devices, T), check, devices, device_time=T, gateway_time=T, minutes=2)
    door(EidResolver(devices, T), check, devices, device_time=T, gateway_time=T + 120, minutes=2)
    assert check.resolved == 4 * 20 * len(devices)
