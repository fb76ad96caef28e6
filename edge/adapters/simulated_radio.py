"""A radio source that plays a simulated store entrance at a chosen speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable

from edge.core.advert import RawAdvert
from edge.core.health import RadioHealth, RadioState

TICK_S = 0.02  # wall seconds per delivered batch


class SimulatedAdvertSource:
    """Delivers adverts in batches when they are due: radio time runs `speed` times faster than wall time.

    speed = inf delivers as fast as the consumer takes them (replay, benchmarks).
    """

    name = "simulated"

    def __init__(
        self,
        adverts: Iterable[RawAdvert],
        speed: float,
        wall_clock: Callable[[], float] = time.monotonic,
        start: asyncio.Event | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self._adverts = adverts
        self._speed = speed
        self._clock = wall_clock
        self._start = start
        self.radio_time_s: float | None = None
        self.delivered = 0
        self.finished = False
        self._last_batch_mono: float | None = None

    def health(self) -> RadioHealth:
        """The simulated radio never stalls; it stops when the simulation ends."""
        if self.finished:
            state = RadioState.STOPPED
        elif self._last_batch_mono is None:
            state = RadioState.STARTING
        else:
            state = RadioState.SCANNING
        age = None if self._last_batch_mono is None else self._clock() - self._last_batch_mono
        return RadioHealth(self.name, state, last_advert_age_s=age)

    async def batches(self) -> AsyncIterator[list[RawAdvert]]:
        """Yield batches of due adverts until the simulation ends (after `start` is set, if given)."""
        if self._start is not None:
            await self._start.wait()
        iterator = iter(self._adverts)
        first = next(iterator, None)
        if first is None:
            self.finished = True
            return
        radio_start = first.t_s
        wall_start = self._clock()
        pending: RawAdvert | None = first
        while pending is not None:
            batch: list[RawAdvert] = []
            horizon_wall = self._clock() + TICK_S
            horizon_radio = radio_start + (horizon_wall - wall_start) * self._speed
            while pending is not None and pending.t_s <= horizon_radio and len(batch) < 5000:
                batch.append(pending)
                pending = next(iterator, None)
            if batch:
                self.radio_time_s = batch[-1].t_s
                self.delivered += len(batch)
                self._last_batch_mono = self._clock()
                yield batch
            if pending is not None:
                due_wall = wall_start + (pending.t_s - radio_start) / self._speed
                delay = due_wall - self._clock()
                await asyncio.sleep(min(max(delay, 0.0), TICK_S))
        self.finished = True
