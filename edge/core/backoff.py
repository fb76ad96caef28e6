"""The project's one backoff: capped exponential delays with jitter, the random draw injected.

Every retry in Threshold waits `initial_s * 2**failures`, capped at `cap_s`, then jittered so that
many clients failing together do not retry together (AWS Architecture Blog, "Exponential Backoff And
Jitter"): reconnects (MQTT, BlueZ, the serial radio) use *equal* jitter (half the delay fixed, half
random: a reconnect never comes at once), webhook deliveries *full* jitter (anywhere from 0 to the
delay: the best spread when many offers fail on one endpoint together).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Jitter = Literal["equal", "full"]
#: Past this many doublings every sensible cap is reached; keeps 2**n small.
_MAX_DOUBLINGS = 30


def capped_delay_s(failures: int, initial_s: float, cap_s: float) -> float:
    """`initial_s * 2**failures`, at most `cap_s` (failures counted from 0)."""
    return min(cap_s, initial_s * float(1 << min(max(failures, 0), _MAX_DOUBLINGS)))


def backoff_s(
    failures: int, initial_s: float, cap_s: float, draw: float, jitter: Jitter = "equal"
) -> float:
    """The delay after `failures` earlier failures; `draw` is a uniform random number in [0, 1)."""
    delay = capped_delay_s(failures, initial_s, cap_s)
    if jitter == "full":
        return delay * draw
    return delay * (0.5 + 0.5 * draw)


class Backoff:
    """Successive delays for one retrying client, restarting at `reset()`; `draw` returns uniform
    random numbers in [0, 1) (`random.random`, or a seeded one in tests)."""

    def __init__(
        self, initial_s: float, cap_s: float, draw: Callable[[], float], jitter: Jitter = "equal"
    ) -> None:
        self._initial_s = initial_s
        self._cap_s = cap_s
        self._draw = draw
        self._jitter: Jitter = jitter
        self._failures = 0

    def next_delay_s(self) -> float:
        delay = backoff_s(self._failures, self._initial_s, self._cap_s, self._draw(), self._jitter)
        self._failures += 1
        return delay

    def reset(self) -> None:
        self._failures = 0
