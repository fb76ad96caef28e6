"""`edge-gateway scan`: a live view of what the gateway hears, for installers at the door.

One row per device address: frame type, smoothed RSSI, adverts/s, enrolled or not. The view is
refreshed in place on a terminal and printed as periodic blocks otherwise.

Privacy: this is a diagnostic that shows device addresses on screen. They are kept in memory only
(bounded) and never logged; the one place they are written is the capture file the installer asks
for with `--record`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from edge.core import beacons, wire
from edge.core.advert import RawAdvert
from edge.core.capture import format_advert_line
from edge.core.frames import Classified, FrameKind
from edge.core.pipeline import AdvertClassifier
from edge.core.resolver import EidResolver

if TYPE_CHECKING:
    from edge.app import AdvertSource

#: What `--filter-type` accepts.
FRAME_TYPES = tuple(kind.value for kind in FrameKind)

RSSI_TAU_S = 2.0  # smoothing of the RSSI column: a few adverts, so a step shows within seconds
RATE_TAU_S = 5.0  # the adverts/s columns average over about this long
FORGET_AFTER_S = 60.0  # a device unheard this long (radio time) leaves the view
MAX_DEVICES = 4096  # rows kept; past this, new addresses are counted but not shown
DETAIL_WIDTH = 44


@dataclass(slots=True)
class DeviceRow:
    """What the view knows about one address."""

    address: str
    classified: Classified
    device: wire.RosterDevice | None
    rssi_dbm: float
    rate: float  # exponentially weighted adverts per second, as of last_t_s
    first_t_s: float
    last_t_s: float
    adverts: int

    @property
    def kind(self) -> FrameKind:
        return self.classified.kind

    def rate_at(self, now_s: float) -> float:
        """Adverts per second, decayed to `now_s` (a device that went quiet fades out)."""
        return self.rate * math.exp(-max(0.0, now_s - self.last_t_s) / RATE_TAU_S)


def describe(classified: Classified, device: wire.RosterDevice | None) -> str:
    """A short, human description of a frame for the DETAIL column."""
    frame = classified.frame
    if classified.kind is FrameKind.MALFORMED:
        return classified.reason or "malformed"
    if device is not None:
        return f"device {device.ref}"
    if isinstance(frame, beacons.IBeacon):
        return f"{frame.uuid_text} {frame.major}/{frame.minor}"
    if isinstance(frame, beacons.AltBeacon):
        return f"mfg 0x{frame.company_id:04x} id {frame.beacon_id.hex()}"
    if isinstance(frame, beacons.EddystoneUid):
        return f"{frame.namespace.hex()} {frame.instance.hex()}"
    if isinstance(frame, beacons.EddystoneUrl):
        return frame.url
    if isinstance(frame, beacons.EddystoneTlm):
        battery = f"{frame.battery_mv} mV" if frame.battery_mv is not None else "no battery"
        temp = f"{frame.temperature_c:.1f} °C" if frame.temperature_c is not None else "no temp"
        return f"{battery}, {temp}, up {frame.uptime_s:.0f} s"
    if isinstance(frame, beacons.EddystoneEtlm):
        return "encrypted telemetry"
    if isinstance(frame, beacons.Noise):
        return frame.source.value
    return ""


class ScanView:
    """The state behind the live view: rows per address, fed adverts in radio time."""

    def __init__(
        self,
        resolver: EidResolver | None,
        *,
        filter_enrolled: bool = False,
        filter_type: FrameKind | None = None,
        max_devices: int = MAX_DEVICES,
    ) -> None:
        self.resolver = resolver
        self.filter_enrolled = filter_enrolled
        self.filter_type = filter_type
        self._max_devices = max_devices
        self._classifier = AdvertClassifier()
        self._rows: dict[str, DeviceRow] = {}
        self._next_advance_s = -math.inf
        self.adverts = 0
        self.not_shown = 0  # adverts from new addresses while the table was full
        self.now_s: float | None = None  # radio time of the latest advert
        self._rate = 0.0
        self._rate_t_s = 0.0

    def observe(self, advert: RawAdvert) -> None:
        """Take one advert into the view."""
        t = advert.t_s
        self.adverts += 1
        if self.now_s is None or t > self.now_s:
            self.now_s = t
        self._rate = self._decayed(self._rate, self._rate_t_s, t) + 1.0 / RATE_TAU_S
        self._rate_t_s = t
        classified = self._classifier.classify(advert.address, advert.payload)
        device = None
        if classified.eid is not None and self.resolver is not None:
            if t >= self._next_advance_s:
                self.resolver.advance(t)
                self._next_advance_s = t + 1.0
            device = self.resolver.resolve(classified.eid)
        row = self._rows.get(advert.address)
        if row is None:
            if len(self._rows) >= self._max_devices:
                self._forget_stale(t)
                if len(self._rows) >= self._max_devices:
                    self.not_shown += 1
                    return
            self._rows[advert.address] = DeviceRow(
                advert.address,
                classified,
                device,
                float(advert.rssi_dbm),
                1.0 / RATE_TAU_S,
                t,
                t,
                1,
            )
            return
        dt = max(0.0, t - row.last_t_s)
        alpha = 1.0 - math.exp(-dt / RSSI_TAU_S)
        row.rssi_dbm += alpha * (advert.rssi_dbm - row.rssi_dbm)
        row.rate = self._decayed(row.rate, row.last_t_s, t) + 1.0 / RATE_TAU_S
        row.last_t_s = max(row.last_t_s, t)
        row.adverts += 1
        row.classified = classified
        row.device = device

    @staticmethod
    def _decayed(rate: float, since_s: float, now_s: float) -> float:
        return rate * math.exp(-max(0.0, now_s - since_s) / RATE_TAU_S)

    def _forget_stale(self, now_s: float) -> None:
        stale = [a for a, r in self._rows.items() if now_s - r.last_t_s > FORGET_AFTER_S]
        for address in stale:
            del self._rows[address]

    @property
    def devices(self) -> int:
        return len(self._rows)

    def adverts_per_s(self) -> float:
        """All adverts heard per second, around the latest radio time."""
        if self.now_s is None:
            return 0.0
        return self._decayed(self._rate, self._rate_t_s, self.now_s)

    def enrolled(self, row: DeviceRow) -> str:
        """The ENROLLED column: yes / no for EID frames, '?' without a roster, '-' for the rest."""
        if row.classified.eid is None:
            return "-"
        if self.resolver is None:
            return "?"
        return "yes" if row.device is not None else "no"

    def rows(self) -> list[DeviceRow]:
        """The rows to show, strongest first, after the filters; stale rows are forgotten."""
        if self.now_s is not None:
            self._forget_stale(self.now_s)
        shown: Iterable[DeviceRow] = self._rows.values()
        if self.filter_type is not None:
            wanted = self.filter_type
            shown = (r for r in shown if r.kind is wanted)
        if self.filter_enrolled:
            shown = (r for r in shown if r.device is not None)
        return sorted(shown, key=lambda r: -r.rssi_dbm)

    def render(self, source: str, max_rows: int, radio_state: str | None = None) -> list[str]:
        """The lines of one screen: a header, then up to `max_rows` device rows."""
        now = self.now_s
        rows = self.rows()
        enrolled = len(self.resolver) if self.resolver is not None else 0
        roster = "no roster" if self.resolver is None else f"roster of {enrolled:,}"
        clock = time.strftime("%H:%M:%S", time.localtime(now)) if now is not None else "--:--:--"
        filters = []
        if self.filter_type is not None:
            filters.append(f"type {self.filter_type.value}")
        if self.filter_enrolled:
            filters.append("enrolled only")
        radio = f"{source} ({radio_state})" if radio_state else source
        header = (
            f"scan · {radio} · radio time {clock} · {len(self._rows)} devices · "
            f"{self.adverts_per_s():.0f} adverts/s · {roster}"
            + (f" · showing {', '.join(filters)}" if filters else "")
        )
        lines = [
            header,
            f"{'ADDRESS':<18} {'TYPE':<14} {'RSSI':>5} {'ADV/S':>6} {'ENROLLED':<8} DETAIL",
        ]
        for row in rows[:max_rows]:
            detail = describe(row.classified, row.device)
            if len(detail) > DETAIL_WIDTH:
                detail = detail[: DETAIL_WIDTH - 1] + "…"
            lines.append(
                f"{row.address:<18} {row.kind.value:<14} {row.rssi_dbm:>5.0f} "
                f"{row.rate_at(now or row.last_t_s):>6.1f} {self.enrolled(row):<8} {detail}"
            )
        if len(rows) > max_rows:
            lines.append(f"… and {len(rows) - max_rows} more")
        if self.not_shown:
            lines.append(f"({self.not_shown} adverts from devices beyond the {MAX_DEVICES} shown)")
        return lines


class ScanDisplay:
    """Writes the view: redrawn in place on a terminal, as timestamped blocks otherwise."""

    def __init__(
        self, out: TextIO, source: str, *, tty: bool, max_rows: int, width: int | None = None
    ) -> None:
        self._out = out
        self._source = source
        self._tty = tty
        self._max_rows = max_rows
        self._width = width  # a terminal's columns: longer lines are cut, not wrapped
        self._drawn = False

    def show(self, view: ScanView, radio_state: str | None = None) -> None:
        """Draw the view; `radio_state` is the radio's health state (scanning, recovering, ...)."""
        lines = view.render(self._source, self._max_rows, radio_state)
        if self._width is not None:
            lines = [line[: self._width] for line in lines]
        if self._tty:
            # Home, then each line cleared to its end, then clear below: no flicker, no scrolling.
            prefix = "\033[H" if self._drawn else "\033[2J\033[H"
            body = "".join(f"{line}\033[K\n" for line in lines)
            self._out.write(prefix + body + "\033[J")
            self._drawn = True
        else:
            self._out.write("\n".join(lines) + "\n\n")
        self._out.flush()


async def run_scan(
    source: AdvertSource,
    view: ScanView,
    display: ScanDisplay,
    *,
    seconds: float | None = None,
    record: TextIO | None = None,
    refresh_s: float = 1.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Show what `source` hears until `seconds` pass, `stop` is set or the source ends.

    `record` receives every advert heard, unfiltered, in the capture format (docs/capture.md).
    """
    stop = stop or asyncio.Event()

    async def consume() -> None:
        async for batch in source.batches():
            for advert in batch:
                view.observe(advert)
            if record is not None:
                record.write("".join(format_advert_line(a) + "\n" for a in batch))
                record.flush()

    async def refresh() -> None:
        while True:
            await asyncio.sleep(refresh_s)
            display.show(view, source.health().state.value)

    consumer = asyncio.create_task(consume(), name="scan-radio")
    stopper = asyncio.create_task(stop.wait(), name="scan-stop")
    refresher = asyncio.create_task(refresh(), name="scan-refresh")
    tasks = (consumer, stopper, refresher)
    try:
        await asyncio.wait(
            {consumer, stopper}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    error = None if consumer.cancelled() else consumer.exception()
    if error is not None:
        raise error  # the radio failed: that is the installer's answer
    display.show(view, source.health().state.value)
