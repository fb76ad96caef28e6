"""Detect a step of the wall clock (NTP correcting a gateway that booted without network).

EIDs are derived from the wall clock, and the resolver holds the windows around "now". When the
clock steps by hours, the windows it holds are the wrong ones until it catches up (a step back: for
as long as the step). Compared over the same interval, the wall clock and the monotonic clock agree
to within drift and NTP's slewing (at most 500 ppm); a disagreement beyond `threshold_s` is a step.
Pure: the caller passes both readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# NTP slews offsets under 128 ms and steps larger ones; between two housekeeping ticks (about a
# second, or a few minutes at most while the radio is quiet) slewing adds well under this.
DEFAULT_STEP_THRESHOLD_S = 2.0


@dataclass(frozen=True, slots=True)
class ClockStep:
    """The wall clock moved `step_s` more than the monotonic clock (> 0: forward) and reads `wall_s`."""

    step_s: float
    wall_s: float


class ClockStepDetector:
    """Fed (wall, monotonic) readings; reports each step once, at the first reading after it."""

    def __init__(self, threshold_s: float = DEFAULT_STEP_THRESHOLD_S) -> None:
        if not (threshold_s > 0 and math.isfinite(threshold_s)):
            raise ValueError("threshold_s must be a finite number > 0")
        self.threshold_s = threshold_s
        self._last: tuple[float, float] | None = None
        self.steps = 0  # seen since start, for the status

    def observe(self, wall_s: float, mono_s: float) -> ClockStep | None:
        """The step since the last reading, or None."""
        last = self._last
        self._last = (wall_s, mono_s)
        if last is None:
            return None
        step_s = (wall_s - last[0]) - (mono_s - last[1])
        if abs(step_s) <= self.threshold_s:
            return None
        self.steps += 1
        return ClockStep(step_s, wall_s)
