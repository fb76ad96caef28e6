"""Rolling over without a stall: the window ahead is precomputed a slice at a time.

Whatever the budget, at every second the windows in range (previous, current, next) resolve and the
ones beyond do not; a budget too small to finish before the boundary is caught up at the boundary.
"""

from __future__ import annotations

import pytest

from edge.core import eid
from edge.core.resolver import EidResolver
from edge.core.wire import RosterDevice
from tests.factories import make_device

K = 4  # 16-second windows keep the walks short
STEP = 1 << K
W = 1_790_000_000 - 1_790_000_000 % 4096  # a window start for every exponent up to 12


def eid_at(device: RosterDevice, t: float) -> bytes:
    return eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(t))


def assert_in_range(resolver: EidResolver, devices: list[RosterDevice], now: float) -> None:
    """Offsets -skew..+skew resolve to their device; the windows just beyond do not."""
    skew = resolver.skew_windows
    for device in devices:
        step = 1 << device.exponent
        for offset in range(-skew - 1, skew + 2):
            heard = resolver.resolve(eid_at(device, now + offset * step))
            expected = device if abs(offset) <= skew else None
            assert heard is expected, (device.ref, now, offset)


def test_the_boundary_only_swaps_in_the_precomputed_window() -> None:
    devices = [make_device(exponent=K) for _ in range(40)]
    resolver = EidResolver(devices, W)
    assert not resolver.pending_work  # built with the window ahead already computed
    assert resolver.advance(W + STEP, max_eids=0) is True  # roll over, compute nothing
    assert resolver.late_rebuilds == 0
    assert_in_range(resolver, devices, W + STEP)
    assert (resolver.pending_eids, resolver.pending_drops) == (40, 40)  # next window, old window
    while resolver.advance(W + STEP, max_eids=7):
        pass
    assert (resolver.pending_eids, resolver.pending_drops) == (0, 0)
    assert_in_range(resolver, devices, W + STEP)
    resolver.advance(W + 2 * STEP, max_eids=0)
    assert resolver.late_rebuilds == 0
    assert_in_range(resolver, devices, W + 2 * STEP)


def test_an_expired_window_stops_resolving_before_its_entries_are_dropped() -> None:
    device = make_device(exponent=K)
    resolver = EidResolver([device], W)
    old = eid_at(device, W - STEP)
    resolver.advance(W + STEP, max_eids=0)
    assert resolver.pending_drops == 1
    assert resolver.resolve(old) is None  # a replay of an expired EID


@pytest.mark.parametrize("skew", [0, 1, 2])
def test_every_second_resolves_while_the_work_is_spread(skew: int) -> None:
    devices = [make_device(exponent=K) for _ in range(10)]
    resolver = EidResolver(devices, W, skew_windows=skew)
    for t in range(W, W + 5 * STEP):  # housekeeping every second, one EID a time
        resolver.advance(t, max_eids=1)
        assert_in_range(resolver, devices, t)
    assert resolver.late_rebuilds == 0


def test_a_budget_too_small_is_caught_up_at_the_boundary() -> None:
    devices = [make_device(exponent=K) for _ in range(40)]  # 40 EIDs a window, 16 calls a window
    resolver = EidResolver(devices, W)
    for t in range(W, W + 4 * STEP):
        resolver.advance(t, max_eids=1)
        assert_in_range(resolver, devices, t)
    # Three boundaries: the first found its window ready (built ahead); at each later one, 16 calls
    # of one EID had left 40 - 16 to do.
    assert resolver.late_rebuilds == 2
    assert resolver.late_eids == 2 * (40 - STEP)


def test_no_housekeeping_for_windows_then_catches_up_in_one_call() -> None:
    devices = [make_device(exponent=K) for _ in range(5)]
    resolver = EidResolver(devices, W)
    resolver.advance(W + 2 * STEP, max_eids=0)  # skipped a boundary: W+3 was never started
    assert_in_range(resolver, devices, W + 2 * STEP)
    assert resolver.late_rebuilds == 1


def test_advance_after_a_long_gap_rebuilds_every_window_in_range() -> None:
    devices = [make_device(exponent=K) for _ in range(5)]
    resolver = EidResolver(devices, W)
    resolver.advance(W + 100 * STEP, max_eids=0)
    assert_in_range(resolver, devices, W + 100 * STEP)
    assert resolver.late_rebuilds == 3
    assert resolver.table_size == 15


def test_a_clock_stepped_back_a_window_resolves_the_windows_of_its_time() -> None:
    devices = [make_device(exponent=K) for _ in range(5)]
    resolver = EidResolver(devices, W + 3 * STEP)
    resolver.advance(W + 2 * STEP, max_eids=0)
    assert_in_range(resolver, devices, W + 2 * STEP)
    resolver.advance(W + 3 * STEP, max_eids=0)
    assert_in_range(resolver, devices, W + 3 * STEP)


def test_exponents_roll_independently_with_a_budget() -> None:
    devices = [make_device(exponent=k) for k in (4, 4, 5, 6, 10) for _ in range(3)]
    resolver = EidResolver(devices, W)
    for t in range(W, W + 200):
        resolver.advance(t, max_eids=2)
        assert_in_range(resolver, devices, t)
    assert resolver.late_rebuilds == 0


@pytest.mark.parametrize(
    "start",
    [
        2**16 * 27_313 - 2 * 1024,  # the windows in range and ahead span two 2**16-second epochs
        2**32 - 2 * 1024,  # the counter wraps to 0 (mod 2**32) in the window ahead
    ],
)
def test_windows_across_an_epoch_or_the_counter_wrap(start: int) -> None:
    devices = [make_device(exponent=10) for _ in range(4)]
    resolver = EidResolver(devices, start)
    for t in range(start, start + 4 * 1024, 256):
        resolver.advance(t, max_eids=1)
        assert_in_range(resolver, devices, t)
    assert resolver.late_rebuilds == 0


def test_advance_without_a_budget_finishes_everything() -> None:
    devices = [make_device(exponent=K) for _ in range(8)]
    resolver = EidResolver(devices, W)
    assert resolver.advance(W + STEP) is False
    assert not resolver.pending_work and resolver.table_size == 24
