"""The entry detector: walk-ins enter once, walk-pasts and brief spikes do not."""

from __future__ import annotations

from collections.abc import Iterable

from edge.core.presence import PresenceConfig, PresenceState, PresenceTracker
from tests.factories import make_device

CFG = PresenceConfig(
    enter_dbm=-67, exit_dbm=-75, min_dwell_s=2.5, smoothing_tau_s=1.5, visit_timeout_s=300
)


def feed(tracker: PresenceTracker, device, samples: Iterable[tuple[float, float]]) -> list[float]:  # type: ignore[no-untyped-def]
    """Feed (t, rssi) samples; return the times entries were reported."""
    return [e.t_s for t, r in samples if (e := tracker.observe(device, t, r)) is not None]


def ramp(
    t0: float, t1: float, r0: float, r1: float, step: float = 0.2
) -> list[tuple[float, float]]:
    n = round((t1 - t0) / step)
    return [(t0 + i * step, r0 + (r1 - r0) * i / n) for i in range(n + 1)]


def walk_in(t0: float) -> list[tuple[float, float]]:
    """Approach the gateway over 6 s, then stay near it for 10 s."""
    return ramp(t0, t0 + 6, -80, -60) + ramp(t0 + 6, t0 + 16, -60, -60)


def test_walking_in_and_staying_is_one_entry() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    samples = ramp(0, 5, -85, -60) + ramp(5, 15, -60, -62) + ramp(15, 60, -70, -85)
    entries = feed(tracker, device, samples)
    assert len(entries) == 1
    assert tracker.state(device.member) is PresenceState.INSIDE


def test_walking_past_never_reaches_the_threshold() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    assert feed(tracker, device, ramp(0, 10, -90, -72) + ramp(10, 20, -72, -90)) == []


def test_a_brief_spike_does_not_enter() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    samples = [*ramp(0, 5, -85, -85), (5.1, -50), (5.2, -50), *ramp(5.4, 8, -85, -85)]
    assert feed(tracker, device, samples) == []


def test_dwell_must_be_held_above_exit() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    # Reaches the enter threshold, then falls below exit before the dwell completes.
    samples = ramp(0, 3, -80, -60) + ramp(3, 4, -60, -95) + ramp(4, 8, -95, -95)
    assert feed(tracker, device, samples) == []
    assert tracker.state(device.member) is PresenceState.AWAY


def test_leaving_past_the_gateway_is_not_a_second_entry() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    inbound = ramp(0, 6, -80, -60)
    browsing = ramp(6, 200, -85, -85, step=1.0)
    outbound = ramp(200, 206, -85, -60) + ramp(206, 212, -60, -90)
    assert len(feed(tracker, device, inbound + browsing + outbound)) == 1


def test_a_new_visit_after_the_timeout_enters_again() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    assert len(feed(tracker, device, walk_in(0))) == 1
    assert [v.member for v in tracker.expire(16 + CFG.visit_timeout_s + 1)] == [device.member]
    later = 16 + CFG.visit_timeout_s + 10
    assert len(feed(tracker, device, walk_in(later))) == 1


def test_after_a_clock_step_back_tracks_move_with_the_clock() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    hours_s = 3 * 3600.0
    assert len(feed(tracker, device, walk_in(hours_s))) == 1  # timed by a clock 3 h ahead

    tracker.shift_time(-hours_s)  # NTP steps it back

    # The visit ends on the corrected clock, and the member can enter again after it.
    [ended] = tracker.expire(16 + CFG.visit_timeout_s + 1)
    assert ended.member == device.member and ended.last_heard_s == 16
    assert len(feed(tracker, device, walk_in(16 + CFG.visit_timeout_s + 10))) == 1


def test_two_devices_of_one_member_share_a_track() -> None:
    tracker = PresenceTracker(CFG)
    phone = make_device(member="m-77777")
    tag = make_device(member="m-77777")
    samples = walk_in(0)
    entries = [
        e for t, r in samples for d in (phone, tag) if (e := tracker.observe(d, t, r)) is not None
    ]
    assert len(entries) == 1 and len(tracker) == 1


def test_smoothing_is_rate_independent() -> None:
    fast_tracker, slow_tracker, device = PresenceTracker(CFG), PresenceTracker(CFG), make_device()
    fast = feed(fast_tracker, device, ramp(0, 20, -85, -60, step=0.1))
    slow = feed(slow_tracker, device, ramp(0, 20, -85, -60, step=1.0))
    assert len(fast) == len(slow) == 1
    assert abs(fast[0] - slow[0]) <= 1.0


def test_silence_while_arriving_means_walked_past() -> None:
    tracker, device = PresenceTracker(CFG), make_device()
    # Strong at the door, then not heard for longer than max_gap_s, then one weak sighting.
    samples = [*ramp(0, 3, -80, -60), (3 + CFG.max_gap_s + 0.5, -80)]
    assert feed(tracker, device, samples) == []
    assert tracker.state(device.member) is PresenceState.AWAY


def test_defaults_need_the_member_to_stay_in_range() -> None:
    tracker, device = PresenceTracker(PresenceConfig()), make_device()
    # A passer-by: strong for a few seconds at the door, then fading below the stay level.
    passing = ramp(0, 4, -80, -62) + ramp(4, 8, -62, -66) + ramp(8, 18, -70, -94)
    assert feed(tracker, device, passing) == []
    # Someone walking in: as strong at the door, then heard in the store around -80 dBm.
    entering = ramp(100, 104, -80, -62) + ramp(104, 110, -62, -75) + ramp(110, 140, -78, -82)
    entries = feed(tracker, device, entering)
    assert len(entries) == 1
    assert 100 + PresenceConfig().min_dwell_s <= entries[0] <= 130
