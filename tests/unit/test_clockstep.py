"""ClockStepDetector: a wall clock that moves apart from the monotonic clock is a step."""

from __future__ import annotations

import pytest

from edge.core.clockstep import ClockStep, ClockStepDetector
from tests.factories import T0


@pytest.mark.parametrize(
    ("wall_later_s", "mono_later_s", "expected"),
    [
        (T0 + 1.0, 101.0, None),  # in step
        (T0 + 1.5, 101.0, None),  # within the threshold (drift, slewing)
        (T0 + 3 * 3600 + 1.0, 101.0, ClockStep(3 * 3600.0, T0 + 3 * 3600 + 1.0)),  # NTP, forward
        (T0 - 3600 + 1.0, 101.0, ClockStep(-3600.0, T0 - 3600 + 1.0)),  # back an hour
        (T0 + 60.0, 160.0, None),  # a long quiet spell: both moved the same
    ],
)
def test_a_step_is_the_wall_clock_moving_apart_from_the_monotonic_one(
    wall_later_s: float, mono_later_s: float, expected: ClockStep | None
) -> None:
    detector = ClockStepDetector(threshold_s=2.0)
    assert detector.observe(T0, 100.0) is None  # the first reading is the reference

    assert detector.observe(wall_later_s, mono_later_s) == expected


def test_each_step_is_reported_once() -> None:
    detector = ClockStepDetector()
    detector.observe(T0, 0.0)

    assert detector.observe(T0 + 7200.0, 1.0) is not None
    assert detector.observe(T0 + 7201.0, 2.0) is None
    assert detector.steps == 1


@pytest.mark.parametrize("threshold_s", [0.0, -1.0, float("nan"), float("inf")])
def test_a_threshold_must_be_positive_and_finite(threshold_s: float) -> None:
    with pytest.raises(ValueError, match="threshold_s"):
        ClockStepDetector(threshold_s)
