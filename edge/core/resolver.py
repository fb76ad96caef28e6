"""Resolve an Eddystone-EID heard at the door to an enrolled device, in O(1).

For every enrolled device the resolver precomputes its EIDs for the windows around now (previous,
current and next by default, `skew_windows` configurable) into one dict. A sighting is a dict lookup; an
EID from outside those windows (a replay, or a device whose clock is far off) resolves to nothing.
Windows are aligned per rotation exponent, so all devices of one exponent roll over together and
`advance` recomputes only the window that came into range for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge.core.eid import compute_eids, counter_at, window_start
from edge.core.wire import RosterDevice

EnrolledDevice = RosterDevice


@dataclass(slots=True)
class _ExponentGroup:
    """Devices sharing a rotation exponent, and the EIDs computed for each window in range."""

    exponent: int
    devices: list[EnrolledDevice]
    eids_by_window: dict[int, list[bytes]]
    current: int  # window start counter of the current window


class EidResolver:
    """EID → enrolled device lookup over a sliding set of rotation windows."""

    def __init__(
        self, devices: Iterable[EnrolledDevice], now_unix_s: float, skew_windows: int = 1
    ) -> None:
        if skew_windows < 0:
            raise ValueError("skew_windows must be >= 0")
        self._skew = skew_windows
        self._table: dict[bytes, EnrolledDevice] = {}
        self._groups: dict[int, _ExponentGroup] = {}
        self.collisions = 0
        self.replace(devices, now_unix_s)

    def __len__(self) -> int:
        return sum(len(g.devices) for g in self._groups.values())

    @property
    def table_size(self) -> int:
        return len(self._table)

    def resolve(self, eid: bytes) -> EnrolledDevice | None:
        """The enrolled device broadcasting `eid` in a window in range, or None."""
        return self._table.get(eid)

    def replace(self, devices: Iterable[EnrolledDevice], now_unix_s: float) -> None:
        """Rebuild the whole table for a new roster."""
        by_exponent: dict[int, list[EnrolledDevice]] = {}
        for device in devices:
            by_exponent.setdefault(device.exponent, []).append(device)
        self._table = {}
        self._groups = {}
        self.collisions = 0
        counter = counter_at(now_unix_s)
        for exponent, group_devices in by_exponent.items():
            current = window_start(counter, exponent)
            windows = self._windows(current, exponent)
            group = _ExponentGroup(exponent, group_devices, {w: [] for w in windows}, current)
            for device in group_devices:
                eids = compute_eids(device.identity_key, exponent, windows)
                for window, eid in zip(windows, eids, strict=True):
                    group.eids_by_window[window].append(eid)
                    self._insert(eid, device)
            self._groups[exponent] = group

    def advance(self, now_unix_s: float) -> int:
        """Slide every group's windows to `now`; return how many EIDs were computed."""
        counter = counter_at(now_unix_s)
        computed = 0
        for group in self._groups.values():
            current = window_start(counter, group.exponent)
            if current == group.current:
                continue
            wanted = self._windows(current, group.exponent)
            for window in [w for w in group.eids_by_window if w not in wanted]:
                for eid, device in zip(
                    group.eids_by_window.pop(window), group.devices, strict=True
                ):
                    if self._table.get(eid) is device:
                        del self._table[eid]
            missing = [w for w in wanted if w not in group.eids_by_window]
            for window in missing:
                group.eids_by_window[window] = []
            for device in group.devices:
                eids = compute_eids(device.identity_key, group.exponent, missing)
                for window, eid in zip(missing, eids, strict=True):
                    group.eids_by_window[window].append(eid)
                    self._insert(eid, device)
                computed += len(missing)
            group.current = current
        return computed

    def _windows(self, current: int, exponent: int) -> list[int]:
        step = 1 << exponent
        return [(current + i * step) % 2**32 for i in range(-self._skew, self._skew + 1)]

    def _insert(self, eid: bytes, device: EnrolledDevice) -> None:
        # Two devices sharing an 8-byte EID is a ~2**-64 event per pair; keep the first, count it.
        if self._table.setdefault(eid, device) is not device:
            self.collisions += 1
