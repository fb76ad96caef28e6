"""Entry detection: did a member walk in, or only walk past?

One state machine per member (a member may carry a phone and a tag; both feed the same track):

    AWAY --smoothed >= enter_dbm--> ARRIVING --held min_dwell_s, never below exit_dbm--> INSIDE
    ARRIVING --smoothed < exit_dbm--> AWAY
    INSIDE --not heard for visit_timeout_s--> (visit over, track forgotten) AWAY

RSSI is smoothed with a time-constant EMA (alpha = 1 - exp(-dt / tau)), so phones advertising every
100 ms and tags every second smooth alike. The gap between `enter_dbm` and `exit_dbm` is the hysteresis
that keeps a shopper hovering at the threshold from flapping; INSIDE ends only when the member has not
been heard for `visit_timeout_s`, so walking back out past the gateway is not a second entry.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from edge.core.wire import RosterDevice


class PresenceState(enum.Enum):
    AWAY = "away"
    ARRIVING = "arriving"
    INSIDE = "inside"


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    """Thresholds of the entry detector; door calibration sets them per installation."""

    enter_dbm: float = -67.0
    exit_dbm: float = -75.0
    min_dwell_s: float = 2.5
    smoothing_tau_s: float = 1.5
    visit_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.exit_dbm > self.enter_dbm:
            raise ValueError(
                f"exit_dbm ({self.exit_dbm}) must not be above enter_dbm ({self.enter_dbm})"
            )
        if self.min_dwell_s < 0 or self.smoothing_tau_s <= 0 or self.visit_timeout_s <= 0:
            raise ValueError("min_dwell_s >= 0, smoothing_tau_s > 0 and visit_timeout_s > 0")


@dataclass(frozen=True, slots=True)
class Entry:
    """A member walked in at `t_s` (radio time); `device` completed the entry."""

    member: str
    device: RosterDevice
    t_s: float
    rssi_dbm: float


@dataclass(slots=True)
class _Track:
    state: PresenceState
    smoothed_dbm: float
    last_t_s: float
    arriving_since_s: float


class PresenceTracker:
    """Per-member entry state machines fed by resolved sightings."""

    def __init__(self, config: PresenceConfig) -> None:
        self.config = config
        self._tracks: dict[str, _Track] = {}
        self._neg_inv_tau = -1.0 / config.smoothing_tau_s

    def __len__(self) -> int:
        return len(self._tracks)

    def state(self, member: str) -> PresenceState:
        track = self._tracks.get(member)
        return track.state if track else PresenceState.AWAY

    def inside(self) -> int:
        """How many members are inside (their visit is open)."""
        return sum(1 for t in self._tracks.values() if t.state is PresenceState.INSIDE)

    def observe(self, device: RosterDevice, t_s: float, rssi_dbm: float) -> Entry | None:
        """Feed one sighting; return an Entry when it completes one."""
        cfg = self.config
        track = self._tracks.get(device.member)
        if track is None or t_s - track.last_t_s > cfg.visit_timeout_s:
            track = _Track(PresenceState.AWAY, rssi_dbm, t_s, t_s)
            self._tracks[device.member] = track
        else:
            dt = t_s - track.last_t_s
            if dt > 0:
                alpha = 1.0 - math.exp(dt * self._neg_inv_tau)
                track.smoothed_dbm += alpha * (rssi_dbm - track.smoothed_dbm)
            track.last_t_s = max(track.last_t_s, t_s)
        smoothed = track.smoothed_dbm
        state = track.state
        if state is PresenceState.INSIDE:
            return None
        if state is PresenceState.AWAY:
            if smoothed >= cfg.enter_dbm:
                track.state = PresenceState.ARRIVING
                track.arriving_since_s = t_s
                if cfg.min_dwell_s == 0:
                    return self._enter(track, device, t_s)
            return None
        # ARRIVING
        if smoothed < cfg.exit_dbm:
            track.state = PresenceState.AWAY
            return None
        if t_s - track.arriving_since_s >= cfg.min_dwell_s:
            return self._enter(track, device, t_s)
        return None

    def _enter(self, track: _Track, device: RosterDevice, t_s: float) -> Entry:
        track.state = PresenceState.INSIDE
        return Entry(device.member, device, t_s, track.smoothed_dbm)

    def expire(self, now_s: float) -> list[str]:
        """Forget members not heard for visit_timeout_s; return those whose visit ended."""
        timeout = self.config.visit_timeout_s
        stale = [m for m, t in self._tracks.items() if now_s - t.last_t_s > timeout]
        ended = [m for m in stale if self._tracks[m].state is PresenceState.INSIDE]
        for member in stale:
            del self._tracks[member]
        return ended
