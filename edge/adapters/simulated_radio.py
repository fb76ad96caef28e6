"""A radio source that plays a simulated store entrance at a chosen speed."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from edge.core.advert import RawAdvert
from edge.core.health import RadioHealth, RadioState
from edge.sim.entrance import CheckinAttempt

_LOGGER = logging.getLogger(__name__)

TICK_S = 0.02  # wall seconds per delivered batch
MAX_BATCH = 5000

#: Serves an iPhone's check-in write (edge/adapters/simulated_checkin.py).
CheckinSink = Callable[[CheckinAttempt], Awaitable[object]]


class SimulatedAdvertSource:
    """Delivers adverts in batches when they are due: radio time runs `speed` times faster than wall time.

    speed = inf delivers as fast as the consumer takes them (replay, benchmarks).

    The stream may hold iPhones' check-in writes (`StoreEntrance.stream()`): each goes to the check-in
    sink once radio time (the last delivered advert's time) has reached it, after the batch that
    reached it was taken, so a write and the adverts around it reach the gateway in time order.
    Without a sink they are counted in `checkins_unserved` and dropped.
    """

    name = "simulated"

    def __init__(
        self,
        adverts: Iterable[RawAdvert | CheckinAttempt],
        speed: float,
        wall_clock: Callable[[], float] = time.monotonic,
        start: asyncio.Event | None = None,
        checkins: CheckinSink | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self._adverts = adverts
        self._speed = speed
        self._clock = wall_clock
        self._start = start
        self._checkins = checkins
        self.radio_time_s: float | None = None
        self.delivered = 0
        self.checkins_delivered = 0
        self.checkins_unserved = 0
        self.finished = False
        self._last_batch_mono: float | None = None

    def serve_checkins(self, sink: CheckinSink) -> None:
        """Hand the iPhones' check-in writes to `sink` from now on (the gateway's check-in service)."""
        self._checkins = sink

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
        pending: RawAdvert | CheckinAttempt | None = first
        waiting: collections.deque[CheckinAttempt] = collections.deque()
        while pending is not None:
            batch: list[RawAdvert] = []
            horizon_wall = self._clock() + TICK_S
            horizon_radio = radio_start + (horizon_wall - wall_start) * self._speed
            reached = False
            while pending is not None and pending.t_s <= horizon_radio and len(batch) < MAX_BATCH:
                item = pending
                pending = next(iterator, None)
                if isinstance(item, CheckinAttempt):
                    waiting.append(item)
                    continue
                batch.append(item)
                if waiting and item.t_s >= waiting[0].t_s:
                    reached = True  # serve the waiting writes once the gateway took this batch
                    break
            if batch:
                self.radio_time_s = batch[-1].t_s
                self.delivered += len(batch)
                self._last_batch_mono = self._clock()
                yield batch
            if reached:
                radio_now = self.radio_time_s
                while waiting and radio_now is not None and waiting[0].t_s <= radio_now:
                    await self._serve(waiting.popleft())
                continue
            if pending is not None:
                due_wall = wall_start + (pending.t_s - radio_start) / self._speed
                delay = due_wall - self._clock()
                await asyncio.sleep(min(max(delay, 0.0), TICK_S))
        # No advert comes to reach these: served at the last advert's time.
        while waiting:
            await self._serve(waiting.popleft())
        self.finished = True

    async def _serve(self, attempt: CheckinAttempt) -> None:
        if self._checkins is None:
            self.checkins_unserved += 1
            if self.checkins_unserved == 1:
                _LOGGER.warning(
                    "simulated iPhone check-ins dropped: no check-in service to serve them"
                )
            return
        await self._checkins(attempt)
        self.checkins_delivered += 1
