"""Entry detection: did a member walk in, or only walk past?

One state machine per member (a member may carry a phone and a tag; both feed the same track):

    AWAY ──smoothed ≥ enter_dbm──▶ ARRIVING ──min_dwell_s held──▶ INSIDE (one Entry)
    ARRIVING ──smoothed < exit_dbm, or silent > max_gap_s──▶ AWAY
    INSIDE ──not heard for visit_timeout_s──▶ visit over, track forgotten

Why this shape: at a storefront the *peak* RSSI of someone walking past the open door and of someone
walking in overlap by a few dB (see the numbers in edge/sim/entrance.py). What separates them is what
follows the peak. A passer-by fades behind the glass within seconds; a shopper who walked in stays in
range. So arriving needs a strong signal near the door (`enter_dbm`), and the entry is confirmed only if
the member stays above `exit_dbm` (well below `enter_dbm`: the hysteresis) and is heard without a long
silence for `min_dwell_s`. INSIDE ends only after `visit_timeout_s` unheard, so walking back out past
the gateway is not a second entry.

RSSI is smoothed with time-constant EMAs (alpha = 1 - exp(-dt / tau)), so phones advertising every
100 ms and tags every second smooth alike: a fast one (`smoothing_tau_s`) for arriving, and a slow
one (`level_tau_s`) for staying, so one weak advert deep in the store does not end an arrival.
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

    # Defaults chosen with benchmarks/presence_eval.py on the simulated entrance: about 1 entry in
    # 2,500 members walking past, ~90 % of members walking in recognised, ~21 s after the door.
    enter_dbm: float = -70.0
    exit_dbm: float = -84.0
    min_dwell_s: float = 20.0
    smoothing_tau_s: float = 1.5
    visit_timeout_s: float = 300.0
    max_gap_s: float = 4.0
    level_tau_s: float = 5.0

    def __post_init__(self) -> None:
        if self.exit_dbm > self.enter_dbm:
            raise ValueError(
                f"exit_dbm ({self.exit_dbm}) must not be above enter_dbm ({self.enter_dbm})"
            )
        if self.min_dwell_s < 0 or self.smoothing_tau_s <= 0 or self.visit_timeout_s <= 0:
            raise ValueError("min_dwell_s >= 0, smoothing_tau_s > 0 and visit_timeout_s > 0")
        if self.max_gap_s <= 0 or self.level_tau_s <= 0:
            raise ValueError("max_gap_s and level_tau_s must be > 0")


@dataclass(frozen=True, slots=True)
class Entry:
    """A member walked in; `t_s` (radio time) is when the entry was confirmed."""

    member: str
    device: RosterDevice
    t_s: float
    rssi_dbm: float  # the strongest smoothed RSSI while arriving


@dataclass(slots=True)
class _Track:
    state: PresenceState
    smoothed_dbm: float
    level_dbm: float
    last_t_s: float
    arriving_since_s: float
    peak_dbm: float


class PresenceTracker:
    """Per-member entry state machines fed by resolved sightings."""

    def __init__(self, config: PresenceConfig) -> None:
        self.config = config
        self._tracks: dict[str, _Track] = {}
        self._neg_inv_tau = -1.0 / config.smoothing_tau_s
        self._neg_inv_level_tau = -1.0 / config.level_tau_s

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
            track = _Track(PresenceState.AWAY, rssi_dbm, rssi_dbm, t_s, t_s, rssi_dbm)
            self._tracks[device.member] = track
            gap_s = 0.0
        else:
            gap_s = t_s - track.last_t_s
            if gap_s > 0:
                alpha = 1.0 - math.exp(gap_s * self._neg_inv_tau)
                track.smoothed_dbm += alpha * (rssi_dbm - track.smoothed_dbm)
                alpha = 1.0 - math.exp(gap_s * self._neg_inv_level_tau)
                track.level_dbm += alpha * (rssi_dbm - track.level_dbm)
                track.last_t_s = t_s
        state = track.state
        if state is PresenceState.INSIDE:
            return None
        smoothed = track.smoothed_dbm
        if state is PresenceState.ARRIVING:
            if track.level_dbm < cfg.exit_dbm or gap_s > cfg.max_gap_s:
                track.state = state = PresenceState.AWAY  # walked past; may arrive again below
            else:
                track.peak_dbm = max(track.peak_dbm, smoothed)
                if t_s - track.arriving_since_s >= cfg.min_dwell_s:
                    track.state = PresenceState.INSIDE
                    return Entry(device.member, device, t_s, track.peak_dbm)
                return None
        if smoothed >= cfg.enter_dbm:
            track.state = PresenceState.ARRIVING
            track.level_dbm = smoothed  # the slow level starts from the arrival, not from afar
            track.arriving_since_s = t_s
            track.peak_dbm = smoothed
            if cfg.min_dwell_s == 0:
                track.state = PresenceState.INSIDE
                return Entry(device.member, device, t_s, smoothed)
        return None

    def shift_time(self, step_s: float) -> None:
        """The clock that timed every sighting so far was `step_s` off (a step corrected it): move
        the open tracks by as much, so a step back does not leave members inside until the clock
        catches up with their last sighting, nor a step forward end every visit at once."""
        for track in self._tracks.values():
            track.last_t_s += step_s
            track.arriving_since_s += step_s

    def expire(self, now_s: float) -> list[str]:
        """Forget members not heard for visit_timeout_s; return those whose visit ended."""
        timeout = self.config.visit_timeout_s
        stale = [m for m, t in self._tracks.items() if now_s - t.last_t_s > timeout]
        ended = [m for m in stale if self._tracks[m].state is PresenceState.INSIDE]
        for member in stale:
            del self._tracks[member]
        return ended
