"""A radio source the test feeds by hand, and the adverts of people walking in or past."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from edge.core import eid, frames
from edge.core.advert import RawAdvert
from edge.core.health import RadioHealth, RadioState
from edge.sim.entrance import SimDevice


class FakeAdvertSource:
    """Delivers exactly the batches a test pushes."""

    name = "fake"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[list[RawAdvert] | None] = asyncio.Queue()

    def push(self, adverts: Iterable[RawAdvert]) -> None:
        self._queue.put_nowait(list(adverts))

    def end(self) -> None:
        """End the current `batches()` once what was pushed before is delivered (a later call to
        `batches()` goes on with what is pushed after)."""
        self._queue.put_nowait(None)

    async def batches(self) -> AsyncIterator[list[RawAdvert]]:
        while (batch := await self._queue.get()) is not None:
            yield batch

    def health(self) -> RadioHealth:
        return RadioHealth(self.name, RadioState.SCANNING)


def _ramp(
    t0: float, t1: float, r0: float, r1: float, step: float = 0.25
) -> list[tuple[float, float]]:
    n = max(1, round((t1 - t0) / step))
    return [(t0 + i * step, r0 + (r1 - r0) * i / n) for i in range(n)]


def _adverts(
    key: bytes, exponent: int, address: str, samples: list[tuple[float, float]]
) -> list[RawAdvert]:
    out = []
    for t, rssi in samples:
        value = eid.compute_eid(key, exponent, eid.counter_at(t))
        out.append(RawAdvert(t, address, round(rssi), frames.eddystone_eid_advert(value)))
    return out


def walk_in(device: SimDevice, t0: float, address: str = "4A:00:00:00:00:01") -> list[RawAdvert]:
    """Strong at the door, then heard inside the store for half a minute: an entry."""
    samples = _ramp(t0, t0 + 4, -80, -62) + _ramp(t0 + 4, t0 + 10, -62, -75)
    samples += _ramp(t0 + 10, t0 + 35, -78, -82)
    return _adverts(device.identity_key, device.exponent, address, samples)


def walk_past(device: SimDevice, t0: float, address: str = "4A:00:00:00:00:02") -> list[RawAdvert]:
    """As strong at the open door as a walk-in, then fading behind the glass: not an entry."""
    samples = _ramp(t0, t0 + 4, -80, -62) + _ramp(t0 + 4, t0 + 8, -62, -66)
    samples += _ramp(t0 + 8, t0 + 18, -70, -94)
    return _adverts(device.identity_key, device.exponent, address, samples)


def walk_out(device: SimDevice, t0: float, address: str = "4A:00:00:00:00:01") -> list[RawAdvert]:
    """From the back of the store to the door (passing the gateway at t0 + 6), then away along the
    sidewalk, heard faintly for another 20 s: a visit's last near sighting is about t0 + 8."""
    samples = _ramp(t0, t0 + 6, -88, -62) + _ramp(t0 + 6, t0 + 9, -66, -92)
    samples += _ramp(t0 + 9, t0 + 29, -93, -93, step=1.0)
    return _adverts(device.identity_key, device.exponent, address, samples)
