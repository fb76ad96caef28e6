"""The resolver's windows: previous, current and next resolve; anything further does not."""

from __future__ import annotations

import pytest

from edge.core import eid
from edge.core.resolver import EidResolver
from tests.factories import make_device

K = 10
STEP = 1 << K
W = 1_790_000_000 - 1_790_000_000 % STEP  # a window start


def eid_at(device, t: float) -> bytes:  # type: ignore[no-untyped-def]
    return eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(t))


@pytest.mark.parametrize(
    ("heard_at", "resolves"),
    [
        (W - STEP - 1, False),  # two windows back
        (W - STEP, True),  # first second of the previous window
        (W - 1, True),  # last second of the previous window
        (W, True),
        (W + STEP - 1, True),
        (W + STEP, True),  # first second of the next window
        (W + 2 * STEP - 1, True),  # last second of the next window
        (W + 2 * STEP, False),  # two windows ahead
    ],
)
def test_window_boundaries(heard_at: int, resolves: bool) -> None:
    device = make_device(exponent=K)
    resolver = EidResolver([device], now_unix_s=W + 5)
    assert (resolver.resolve(eid_at(device, heard_at)) is device) is resolves


def test_advance_slides_the_windows() -> None:
    device = make_device(exponent=K)
    resolver = EidResolver([device], now_unix_s=W)
    old = eid_at(device, W - STEP)
    ahead = eid_at(device, W + 2 * STEP)
    assert resolver.resolve(old) is device and resolver.resolve(ahead) is None
    assert resolver.advance(W + STEP) is False  # now in the next window; no work left
    assert resolver.late_rebuilds == 0  # that window had been computed ahead of time
    assert resolver.resolve(old) is None
    assert resolver.resolve(ahead) is device
    assert resolver.table_size == 3


def test_advance_after_a_long_gap_rebuilds_every_window() -> None:
    device = make_device(exponent=K)
    resolver = EidResolver([device], now_unix_s=W)
    resolver.advance(W + 100 * STEP)
    assert resolver.resolve(eid_at(device, W + 100 * STEP)) is device
    assert resolver.resolve(eid_at(device, W)) is None
    assert resolver.table_size == 3


def test_devices_with_different_exponents_roll_independently() -> None:
    fast, slow = make_device(exponent=4), make_device(exponent=12)
    resolver = EidResolver([fast, slow], now_unix_s=W)
    later = W + 100  # several 16 s windows later, same 4096 s window
    resolver.advance(later)
    assert resolver.resolve(eid_at(fast, later)) is fast
    assert resolver.resolve(eid_at(slow, later)) is slow


def test_skew_windows_is_configurable() -> None:
    device = make_device(exponent=K)
    strict = EidResolver([device], now_unix_s=W, skew_windows=0)
    wide = EidResolver([device], now_unix_s=W, skew_windows=2)
    assert strict.resolve(eid_at(device, W - STEP)) is None
    assert wide.resolve(eid_at(device, W - 2 * STEP)) is device


def test_unknown_eid_resolves_to_nothing() -> None:
    resolver = EidResolver([make_device() for _ in range(50)], now_unix_s=W)
    assert resolver.resolve(bytes(8)) is None
    assert len(resolver) == 50 and resolver.table_size == 150
