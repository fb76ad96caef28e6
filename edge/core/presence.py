"""Entry detection and the visit's end: did a member walk in, or only walk past, and when did they leave?

One state machine per member (a member may carry a phone and a tag; both feed the same track):

    AWAY ──smoothed ≥ enter_dbm──▶ ARRIVING ──min_dwell_s held──▶ INSIDE (one Entry)
    ARRIVING ──smoothed < exit_dbm, or silent > max_gap_s──▶ AWAY
    INSIDE ──not heard for visit_timeout_s──▶ visit over (one VisitTimes), track forgotten
    INSIDE ──open for max_visit_s──▶ visit over; track kept (no new entry) until unheard

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

The visit's times (issue 10). `entered_at_s` is when the member was first heard arriving: the start of
the ARRIVING spell that became the entry. `last_near_s` is the last sighting with the fast smoothed
RSSI at or above `exit_dbm`: the member near the door, which a shopper passes on the way out. The
visit ends once the member is not heard *at all* for `visit_timeout_s` (so a shopper browsing weakly
heard at the back of the store stays inside), and its time in store is last_near_s - entered_at_s.

Why that end rule, measured on the simulated entrance (`python -m benchmarks.presence_eval`: 60 min,
seeds 1-3, default config, 730 members who walked in and out; error = |measured - true| / true time
in store, true = exit_time_s - door_time_s):

    end at ...                               median error   p95 error
    the last sighting at all                     7.9 %        19.8 %   (heard 20-30 s on the
                                                                        sidewalk after leaving)
    the last slow level >= exit_dbm              3.5 %         9.4 %   (level_tau_s lags 5 s)
    the last fast smoothed >= exit_dbm (chosen)  2.4 %         6.9 %
    the last fast smoothed >= enter_dbm          0.6 %        86.0 %   (a shopper who leaves
                                                                        without passing close to
                                                                        the gateway ends at entry)

The chosen rule reads 2.2 % long at the median (the seconds by the door on the way out) and stays
under 3 % with noisier radio (sigma 6 dB: 2.7 %), a store four times as large (2.0 %) or a quarter
the size (2.5 %). Short visits (1-2 stops of 5-30 s, about a minute in store) read about 12 % long:
the same few seconds weigh more. ARRIVING starts 0.5 s after the door is crossed at the median
(p95 3.8 s). The rule assumes shoppers leave past the gateway: where a second exit has no gateway,
time in store ends at the last pass by this door. Nothing new to tune: exit_dbm is the entry's own
stay threshold.
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
    # A visit still open this long ends ("max_length": a tag left in the store, a phone in the
    # lost property box); the member makes no new entry until unheard for visit_timeout_s. Half
    # the bridge's limit on a visit (cloud_bridge/core/admission.py, MAX_VISIT_S).
    max_visit_s: float = 12 * 3600.0

    def __post_init__(self) -> None:
        if self.exit_dbm > self.enter_dbm:
            raise ValueError(
                f"exit_dbm ({self.exit_dbm}) must not be above enter_dbm ({self.enter_dbm})"
            )
        if self.max_visit_s <= self.min_dwell_s:
            raise ValueError("max_visit_s must be above min_dwell_s")
        if self.min_dwell_s < 0 or self.smoothing_tau_s <= 0 or self.visit_timeout_s <= 0:
            raise ValueError("min_dwell_s >= 0, smoothing_tau_s > 0 and visit_timeout_s > 0")
        if self.max_gap_s <= 0 or self.level_tau_s <= 0:
            raise ValueError("max_gap_s and level_tau_s must be > 0")


@dataclass(frozen=True, slots=True)
class Entry:
    """A member walked in; `t_s` (radio time) is when the entry was confirmed, `entered_at_s` when
    the member was first heard arriving."""

    member: str
    device: RosterDevice
    t_s: float
    rssi_dbm: float  # the strongest smoothed RSSI while arriving
    entered_at_s: float


@dataclass(frozen=True, slots=True)
class VisitTimes:
    """An open or ended visit's radio times: first heard arriving, last heard near the door
    (smoothed RSSI at or above exit_dbm), last heard at all."""

    member: str
    entered_at_s: float
    last_near_s: float
    last_heard_s: float


@dataclass(slots=True)
class _Track:
    state: PresenceState
    smoothed_dbm: float
    level_dbm: float
    last_t_s: float
    arriving_since_s: float
    peak_dbm: float
    near_t_s: float = 0.0  # last sighting with smoothed >= exit_dbm, while arriving or inside
    # Restored at start-up from the last run (`restore`) and not heard since: its times come from
    # that run's clock, so a step of this run's clock does not move them.
    restored: bool = False
    # Its visit already ended at max_visit_s: it stays INSIDE (no new entry) with no visit open.
    capped: bool = False

    def times(self, member: str) -> VisitTimes:
        return VisitTimes(member, self.arriving_since_s, self.near_t_s, self.last_t_s)


class PresenceTracker:
    """Per-member entry state machines fed by resolved sightings."""

    def __init__(self, config: PresenceConfig) -> None:
        self.config = config
        self._tracks: dict[str, _Track] = {}
        #: Visits found over by `observe` (a sighting after the timeout, before `expire` came
        #: round): handed out by the next `expire` or `take_ended`.
        self.ended: list[VisitTimes] = []
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
        member = device.member
        track = self._tracks.get(member)
        if track is None or t_s - track.last_t_s > cfg.visit_timeout_s:
            if track is not None and track.state is PresenceState.INSIDE and not track.capped:
                self.ended.append(track.times(member))  # expire has not come round yet
            track = _Track(PresenceState.AWAY, rssi_dbm, rssi_dbm, t_s, t_s, rssi_dbm)
            self._tracks[member] = track
            gap_s = 0.0
        else:
            gap_s = t_s - track.last_t_s
            if gap_s > 0:
                alpha = 1.0 - math.exp(gap_s * self._neg_inv_tau)
                track.smoothed_dbm += alpha * (rssi_dbm - track.smoothed_dbm)
                alpha = 1.0 - math.exp(gap_s * self._neg_inv_level_tau)
                track.level_dbm += alpha * (rssi_dbm - track.level_dbm)
                track.last_t_s = t_s
                track.restored = False
        state = track.state
        smoothed = track.smoothed_dbm
        if state is PresenceState.INSIDE:
            if smoothed >= cfg.exit_dbm and t_s > track.near_t_s:
                track.near_t_s = t_s
            return None
        if state is PresenceState.ARRIVING:
            if track.level_dbm < cfg.exit_dbm or gap_s > cfg.max_gap_s:
                track.state = state = PresenceState.AWAY  # walked past; may arrive again below
            else:
                track.peak_dbm = max(track.peak_dbm, smoothed)
                if smoothed >= cfg.exit_dbm:
                    track.near_t_s = t_s
                if t_s - track.arriving_since_s >= cfg.min_dwell_s:
                    track.state = PresenceState.INSIDE
                    track.near_t_s = t_s  # held in range for the dwell: near the door now
                    return Entry(member, device, t_s, track.peak_dbm, track.arriving_since_s)
                return None
        if smoothed >= cfg.enter_dbm:
            track.state = PresenceState.ARRIVING
            track.level_dbm = smoothed  # the slow level starts from the arrival, not from afar
            track.arriving_since_s = t_s
            track.near_t_s = t_s
            track.peak_dbm = smoothed
            if cfg.min_dwell_s == 0:
                track.state = PresenceState.INSIDE
                return Entry(member, device, t_s, smoothed, t_s)
        return None

    def shift_time(self, step_s: float) -> None:
        """The clock that timed every sighting so far was `step_s` off (a step corrected it): move
        the open tracks by as much, so a step back does not leave members inside until the clock
        catches up with their last sighting, nor a step forward end every visit at once."""
        for track in self._tracks.values():
            if track.restored:
                continue  # timed by the last run's clock, not the one that stepped
            track.last_t_s += step_s
            track.arriving_since_s += step_s
            track.near_t_s += step_s

    def expire(self, now_s: float) -> list[VisitTimes]:
        """Forget members not heard for visit_timeout_s; return the visits that ended (with those
        `observe` found over since the last call), oldest last sighting first."""
        timeout = self.config.visit_timeout_s
        ended = self.take_ended()
        stale = [m for m, t in self._tracks.items() if now_s - t.last_t_s > timeout]
        for member in stale:
            track = self._tracks.pop(member)
            if track.state is PresenceState.INSIDE and not track.capped:
                ended.append(track.times(member))
        ended.sort(key=lambda v: v.last_heard_s)
        return ended

    def cap(self, now_s: float) -> list[VisitTimes]:
        """End the visits open for max_visit_s or longer (radio time `now_s`): each ends at its
        last sighting near the door, at most max_visit_s after it began. The member stays inside
        (no new entry) until not heard for visit_timeout_s, with no visit open."""
        longest = self.config.max_visit_s
        capped: list[VisitTimes] = []
        for member, track in self._tracks.items():
            if (
                track.state is PresenceState.INSIDE
                and not track.capped
                and now_s - track.arriving_since_s >= longest
            ):
                track.capped = True
                end_s = min(track.near_t_s, track.arriving_since_s + longest)
                capped.append(VisitTimes(member, track.arriving_since_s, end_s, track.last_t_s))
        return capped

    def take_ended(self) -> list[VisitTimes]:
        """The visits `observe` found over since the last call (usually none)."""
        ended, self.ended = self.ended, []
        return ended

    def visit(self, member: str) -> VisitTimes | None:
        """The times of the member's open visit, or None if they are not inside."""
        track = self._tracks.get(member)
        if track is None or track.state is not PresenceState.INSIDE or track.capped:
            return None
        return track.times(member)

    def restore(self, visit: VisitTimes) -> None:
        """Open a visit the last run left open (the gateway restarted within its timeout): the
        member is inside, and a sighting within visit_timeout_s of `last_heard_s` continues it.

        The smoothed levels start at exit_dbm: the next sighting (seconds later at least) sets them
        almost entirely by itself.
        """
        exit_dbm = self.config.exit_dbm
        self._tracks[visit.member] = _Track(
            PresenceState.INSIDE,
            exit_dbm,
            exit_dbm,
            visit.last_heard_s,
            visit.entered_at_s,
            exit_dbm,
            visit.last_near_s,
            restored=True,
        )
