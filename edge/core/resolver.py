"""Resolve an Eddystone-EID heard at the door to an enrolled device, in O(1).

For every enrolled device the resolver keeps its EIDs for the windows in range: previous, current and
next by default (`skew_windows` either side, configurable), one dict per rotation exponent and window.
A sighting is a few dict lookups; an EID from outside those windows (a replay, or a device whose clock
is far off) resolves to nothing.

Rolling over costs nothing at the boundary (issue 4: no event-loop stall over 20 ms). Each exponent
group also holds the window *after* the last one in range, and fills it a slice at a time between
boundaries (`advance(now, max_eids=...)`, from the pipeline's housekeeping); when its window rolls, that
table is already complete and simply comes into range, while the table that fell out of range is emptied
a slice at a time too. If the slices did not finish in time (too small a budget, no housekeeping for a
while, a clock step), the boundary finishes the work synchronously and counts it in `late_rebuilds`:
whatever happens, the windows in range resolve.

Roster deltas apply in place: `add` and `rotate` compute the new devices' EIDs at once (~7 µs each);
`remove` is O(1): a removed device's entries stay until their windows expire, and `resolve` ignores
them. `update` changes what a device resolves to (tier, kind, its member's preferences) but not its
key: O(1), no EID computed, so a change of preferences costs nothing here.

`ClockCheck` watches which windows the resolved EIDs come from and says when the gateway's own clock
looks wrong (EIDs are derived from time: a gateway clock off by more than `skew_windows` windows
recognises no one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# The spec's block layouts live once, in eid.py; the resolver batches them across devices.
from edge.core.eid import (
    COUNTER_MODULUS,
    _eid_block,
    _tk_block,
    check_key,
    counter_at,
    window_start,
)
from edge.core.wire import RosterDevice

EnrolledDevice = RosterDevice

# Emptying an expired table costs ~40 ns an entry against ~7 µs an EID: a slice of `max_eids` EIDs
# also drops up to this many times as many expired entries.
DROPS_PER_EID = 16
# Unresolved EIDs are counted approximately distinct, for ClockCheck: a keyed (per-process) 12-bit
# hash sets a flag, and only flags are kept, reset every MISS_PERIOD_S of radio time. No EID is kept.
MISS_BUCKETS = 4096
MISS_PERIOD_S = 600

_ECB = modes.ECB()
_EPOCH_BITS = 16  # the temporary key changes every 2**16 s (spec: counter[31:16])


@dataclass(slots=True, eq=False)
class _Window:
    """One rotation window of one exponent group: its EIDs, and the devices still to compute."""

    start: int  # window start counter
    table: dict[bytes, EnrolledDevice]
    todo: list[EnrolledDevice]


@dataclass(slots=True, eq=False)
class _Group:
    """Devices sharing a rotation exponent; their windows roll over together."""

    exponent: int
    current: int  # window start counter of the current window
    members: list[EnrolledDevice]  # may hold removed devices until compacted; see `stale`
    windows: dict[int, _Window]  # the windows in range and the one ahead, by start counter
    stale: int = 0  # removed devices still in `members`


@dataclass(frozen=True, slots=True)
class ClockSample:
    """The resolver's counters as ClockCheck reads them (cumulative since the resolver was built)."""

    hits_by_offset: tuple[int, ...]  # resolved EIDs by window offset, -skew..+skew
    unknown_eids: int  # unresolved EIDs, approximately distinct
    enrolled: int


class EidResolver:
    """EID → enrolled device lookup over a sliding set of rotation windows."""

    def __init__(
        self, devices: Iterable[EnrolledDevice], now_unix_s: float, skew_windows: int = 1
    ) -> None:
        if skew_windows < 0:
            raise ValueError("skew_windows must be >= 0")
        self._skew = skew_windows
        # ref -> the device as its EIDs were computed: what the tables, groups and windows hold.
        self._enrolled: dict[str, EnrolledDevice] = {}
        # ref -> the same device with newer attributes (`update`): what `resolve` returns for it.
        self._updated: dict[str, EnrolledDevice] = {}
        self._groups: dict[int, _Group] = {}
        # The tables in range, most likely first, each with its window offset + skew.
        self._live: list[tuple[dict[bytes, EnrolledDevice], int]] = []
        self._drops: deque[dict[bytes, EnrolledDevice]] = deque()
        self.collisions = 0
        #: Windows that had to be finished synchronously when they came into range.
        self.late_rebuilds = 0
        #: EIDs computed in those synchronous catch-ups.
        self.late_eids = 0
        #: Resolved EIDs by the window they came from, offset -skew..+skew from the current one.
        self.hits_by_offset = [0] * (2 * skew_windows + 1)
        self.misses = 0
        #: Unresolved EIDs, counted approximately distinct per MISS_PERIOD_S (see MISS_BUCKETS).
        self.unknown_eids = 0
        self._miss_flags = bytearray(MISS_BUCKETS)
        self._miss_period = counter_at(now_unix_s) // MISS_PERIOD_S
        self.replace(devices, now_unix_s)

    def __len__(self) -> int:
        return len(self._enrolled)

    def __contains__(self, ref: object) -> bool:
        return ref in self._enrolled

    @property
    def skew_windows(self) -> int:
        return self._skew

    @property
    def table_size(self) -> int:
        """EIDs in the windows in range (a removed device's stay until their window expires)."""
        return sum(len(table) for table, _ in self._live)

    @property
    def pending_eids(self) -> int:
        """EIDs still to precompute for the windows ahead."""
        return sum(len(w.todo) for g in self._groups.values() for w in g.windows.values())

    @property
    def pending_drops(self) -> int:
        """Expired entries still to drop."""
        return sum(len(table) for table in self._drops)

    @property
    def pending_work(self) -> bool:
        """Whether `advance` has work left before the next boundary."""
        return bool(self._drops) or any(
            w.todo for g in self._groups.values() for w in g.windows.values()
        )

    def resolve(self, eid: bytes) -> EnrolledDevice | None:
        """The enrolled device broadcasting `eid` in a window in range, or None."""
        for table, slot in self._live:
            device = table.get(eid)
            if device is not None:
                if self._enrolled.get(device.ref) is not device:
                    break  # removed or rotated since; its entries expire with their windows
                self.hits_by_offset[slot] += 1
                if self._updated:
                    return self._updated.get(device.ref, device)
                return device
        self.misses += 1
        bucket = hash(eid) & (MISS_BUCKETS - 1)
        if not self._miss_flags[bucket]:
            self._miss_flags[bucket] = 1
            self.unknown_eids += 1
        return None

    def clock_sample(self) -> ClockSample:
        """The counters ClockCheck needs."""
        return ClockSample(tuple(self.hits_by_offset), self.unknown_eids, len(self._enrolled))

    def replace(self, devices: Iterable[EnrolledDevice], now_unix_s: float) -> None:
        """Rebuild every table for a new roster, synchronously (a ref listed twice: the last wins)."""
        by_ref: dict[str, EnrolledDevice] = {}
        for device in devices:
            check_key(device.identity_key, device.exponent)
            by_ref[device.ref] = device
        self._enrolled = by_ref  # _insert re-sets each entry to itself: no resize while iterating
        self._updated = {}
        self._groups = {}
        self._drops.clear()
        self.collisions = 0
        self._insert(by_ref.values(), now_unix_s)
        self._relink()

    def add(self, devices: Iterable[EnrolledDevice], now_unix_s: float) -> int:
        """Enroll new devices; they resolve on return. Raises ValueError, changing nothing, if a ref
        is already enrolled or a key is invalid."""
        new = self._checked(devices)
        known = [d.ref for d in new if d.ref in self._enrolled]
        if known:
            raise ValueError(f"already enrolled: {', '.join(known[:5])}")
        self._insert(new, now_unix_s)
        self._relink()
        return len(new)

    def rotate(self, devices: Iterable[EnrolledDevice], now_unix_s: float) -> int:
        """Give enrolled devices (matched by ref) a new key, exponent or attributes; the old EIDs stop
        resolving on return. Raises KeyError, changing nothing, if a ref is not enrolled."""
        new = self._checked(devices)
        unknown = [d.ref for d in new if d.ref not in self._enrolled]
        if unknown:
            raise KeyError(f"not enrolled: {', '.join(unknown[:5])}")
        self.remove(d.ref for d in new)
        self._insert(new, now_unix_s)
        self._relink()
        return len(new)

    def update(self, devices: Iterable[EnrolledDevice]) -> int:
        """Give enrolled devices (matched by ref) new attributes (member, tier, kind, preferences)
        with the same key and exponent: `resolve` returns the new ones at once, no EID is computed.
        Raises KeyError (not enrolled) or ValueError (a new key: use `rotate`), changing nothing."""
        new = self._checked(devices)
        for device in new:
            enrolled = self._enrolled.get(device.ref)
            if enrolled is None:
                raise KeyError(f"not enrolled: {device.ref}")
            if (enrolled.identity_key, enrolled.exponent) != (device.identity_key, device.exponent):
                raise ValueError(f"device {device.ref} has a new key or exponent: rotate it")
        for device in new:
            if device == self._enrolled[device.ref]:
                self._updated.pop(device.ref, None)  # back to what the tables hold
            else:
                self._updated[device.ref] = device
        return len(new)

    def device(self, ref: str) -> EnrolledDevice | None:
        """The enrolled device `ref`, as `resolve` returns it, or None."""
        return self._updated.get(ref) or self._enrolled.get(ref)

    def remove(self, refs: Iterable[str]) -> int:
        """Withdraw devices by ref (unknown refs are ignored); return how many were enrolled."""
        removed = 0
        emptied = False
        for ref in refs:
            device = self._enrolled.pop(ref, None)
            if device is None:
                continue
            self._updated.pop(ref, None)
            removed += 1
            group = self._groups[device.exponent]
            group.stale += 1
            if group.stale == len(group.members):
                for window in group.windows.values():
                    self._drops.append(window.table)
                del self._groups[device.exponent]
                emptied = True
            elif group.stale * 2 > len(group.members):  # amortised: once per n/2 removals
                group.members = self._live_members(group)
                group.stale = 0
        if emptied:
            self._relink()
        return removed

    def advance(self, now_unix_s: float, max_eids: int | None = None) -> bool:
        """Slide every group's windows to `now`, then precompute up to `max_eids` EIDs (None: all)
        for the windows ahead and drop expired entries; return whether work remains.

        Rolling into a window whose table is complete is O(1); one still incomplete is finished here
        and counted in `late_rebuilds`.
        """
        counter = counter_at(now_unix_s)
        period = counter // MISS_PERIOD_S
        if period != self._miss_period:
            self._miss_period = period
            self._miss_flags = bytearray(MISS_BUCKETS)
        rolled = False
        for group in self._groups.values():
            current = window_start(counter, group.exponent)
            if current != group.current:
                self._roll(group, current)
                rolled = True
        if rolled:
            self._relink()
        self._precompute(max_eids)
        self._drop(None if max_eids is None else max_eids * DROPS_PER_EID)
        return self.pending_work

    # --- internals ---

    def _checked(self, devices: Iterable[EnrolledDevice]) -> list[EnrolledDevice]:
        new = list(devices)
        refs = [d.ref for d in new]
        if len(set(refs)) != len(refs):
            raise ValueError("a ref is listed twice")
        for device in new:
            check_key(device.identity_key, device.exponent)
        return new

    def _span(self, current: int, exponent: int) -> list[int]:
        """Window starts from -skew to +skew+1 around `current`: those in range, then the one ahead."""
        step = 1 << exponent
        return [(current + i * step) % COUNTER_MODULUS for i in range(-self._skew, self._skew + 2)]

    def _insert(self, devices: Iterable[EnrolledDevice], now_unix_s: float) -> None:
        """Enroll `devices` (refs not enrolled) and compute their EIDs for every window held."""
        by_exponent: dict[int, list[EnrolledDevice]] = {}
        for device in devices:
            by_exponent.setdefault(device.exponent, []).append(device)
            self._enrolled[device.ref] = device
        counter = counter_at(now_unix_s)
        for exponent, new in by_exponent.items():
            group = self._groups.get(exponent)
            if group is None:
                current = window_start(counter, exponent)
                windows = {s: _Window(s, {}, []) for s in self._span(current, exponent)}
                group = _Group(exponent, current, [], windows)
                self._groups[exponent] = group
            group.members.extend(new)
            # Windows still being precomputed took their device list before these were enrolled.
            self._fill(new, exponent, list(group.windows.values()))

    def _roll(self, group: _Group, current: int) -> None:
        span = self._span(current, group.exponent)
        for start in [s for s in group.windows if s not in span]:
            self._drops.append(group.windows.pop(start).table)
        fresh: list[_Window] = []
        for start in span[:-1]:  # the windows in range: complete before they are used
            window = group.windows.get(start)
            if window is None:  # a jump of more than one window: nothing was precomputed
                window = group.windows[start] = _Window(start, {}, [])
                fresh.append(window)
            elif window.todo:
                self.late_rebuilds += 1
                self.late_eids += len(window.todo)
                self._fill_todo(group, window, len(window.todo))
        if fresh:
            live = self._live_members(group)
            self.late_rebuilds += len(fresh)
            self.late_eids += len(fresh) * len(live)
            self._fill(live, group.exponent, fresh)
        ahead = span[-1]
        if ahead not in group.windows:  # removed devices on the list are skipped when it is filled
            group.windows[ahead] = _Window(ahead, {}, group.members[:])
        group.current = current

    def _live_members(self, group: _Group) -> list[EnrolledDevice]:
        if not group.stale:
            return group.members[:]
        enrolled = self._enrolled
        return [d for d in group.members if enrolled.get(d.ref) is d]

    def _precompute(self, max_eids: int | None) -> None:
        budget = max_eids
        for group in self._groups.values():
            for window in group.windows.values():
                if not window.todo:
                    continue
                if budget is None:
                    self._fill_todo(group, window, len(window.todo))
                    continue
                if budget <= 0:
                    return
                n = min(budget, len(window.todo))
                self._fill_todo(group, window, n)
                budget -= n

    def _drop(self, max_entries: int | None) -> None:
        drops = self._drops
        if max_entries is None:
            drops.clear()
            return
        budget = max_entries
        while drops and budget > 0:
            table = drops[0]
            n = min(budget, len(table))
            popitem = table.popitem
            for _ in range(n):
                popitem()
            budget -= n
            if not table:
                drops.popleft()

    def _fill_todo(self, group: _Group, window: _Window, n: int) -> None:
        """Compute the window's EIDs for the last `n` devices on its list (skipping removed ones)."""
        todo = window.todo
        cut = len(todo) - n
        if n <= 0 or cut < 0:
            raise ValueError(f"cannot take {n} of {len(todo)} devices")
        chunk = todo[cut:]
        del todo[cut:]
        enrolled = self._enrolled
        self._fill([d for d in chunk if enrolled.get(d.ref) is d], group.exponent, [window])

    def _fill(
        self, devices: Sequence[EnrolledDevice], exponent: int, windows: Sequence[_Window]
    ) -> None:
        """Compute and insert the EIDs of `devices` for `windows` (all of one exponent).

        Two AES contexts a device whatever the number of windows (one per 2**16-s epoch they span):
        the identity key's, which encrypts the temporary-key blocks, and the temporary key's, which
        encrypts every EID block at once. Context creation is what costs (~3 µs each).
        """
        if not devices or not windows:
            return
        by_epoch: dict[int, list[_Window]] = {}
        for window in windows:
            by_epoch.setdefault(window.start >> _EPOCH_BITS, []).append(window)
        tk_blocks = b"".join(_tk_block(ws[0].start) for ws in by_epoch.values())
        steps = [
            (
                i * 16,
                b"".join(_eid_block(w.start, exponent) for w in ws),
                [(j * 16, w.table) for j, w in enumerate(ws)],
            )
            for i, ws in enumerate(by_epoch.values())
        ]
        enrolled = self._enrolled
        cipher, aes, ecb = Cipher, algorithms.AES128, _ECB
        collisions = 0
        for device in devices:
            tks = cipher(aes(device.identity_key), ecb).encryptor().update(tk_blocks)
            for at, blocks, tables in steps:
                out = cipher(aes(tks[at : at + 16]), ecb).encryptor().update(blocks)
                for j, table in tables:
                    eid = out[j : j + 8]
                    prior = table.setdefault(eid, device)
                    if prior is not device:
                        if enrolled.get(prior.ref) is prior:
                            # Two enrolled devices sharing an 8-byte EID is a ~2**-64 event per
                            # pair; keep the first, count it.
                            collisions += 1
                        else:  # the entry of a removed device (or of this one's old version)
                            table[eid] = device
        self.collisions += collisions

    def _relink(self) -> None:
        """List the tables in range: current windows first, then ±1, ±2…; big groups first."""
        groups = sorted(self._groups.values(), key=lambda g: len(g.members) - g.stale, reverse=True)
        offsets = [0]
        for i in range(1, self._skew + 1):
            offsets += [i, -i]
        self._live = [
            (
                g.windows[(g.current + offset * (1 << g.exponent)) % COUNTER_MODULUS].table,
                offset + self._skew,
            )
            for offset in offsets
            for g in groups
        ]


@dataclass(frozen=True, slots=True)
class ClockCheckConfig:
    """When ClockCheck calls the gateway's clock suspect."""

    lookback_s: float = 1800.0
    # Resolved EIDs in the lookback before judging which windows they come from.
    min_resolved: int = 30
    off_window_share: float = (
        0.5  # more than this share from one side of the current window: suspect
    )
    min_unknown_eids: int = 20  # unknown EIDs in the lookback with none resolved: suspect

    def __post_init__(self) -> None:
        if self.lookback_s <= 0 or not 0 < self.off_window_share < 1:
            raise ValueError("lookback_s must be > 0 and off_window_share in (0, 1)")


HISTORY_MAX = 4096  # observations kept, whatever the lookback: an hour at one a second


class ClockCheck:
    """Judges the gateway's clock from the windows its resolved EIDs come from; pure, fed samples.

    Devices keep their own time (phones from the network, tags from a crystal set when programmed).
    When most EIDs resolve from earlier windows than the gateway's current one, the gateway's clock is
    ahead of theirs; from later windows, behind. Off by more than `skew_windows`, nothing resolves at
    all while EID frames keep arriving: suspect too, with the offset unknown (or the roster is stale).
    """

    def __init__(self, config: ClockCheckConfig | None = None) -> None:
        self.config = config or ClockCheckConfig()
        self._last: ClockSample | None = None
        # (time, resolved by offset, unknown EIDs) per observation, over the lookback.
        self._history: deque[tuple[float, tuple[int, ...], int]] = deque(maxlen=HISTORY_MAX)
        self.clock_suspect = False
        #: Estimated gateway clock minus the devices' clocks, in windows (> 0: the gateway is ahead);
        #: None until enough EIDs resolved.
        self.offset_windows: float | None = None
        #: Why the clock is suspect, for the status topic; None when it is not.
        self.reason: str | None = None
        self.resolved = 0  # in the lookback
        self.unknown_eids = 0  # in the lookback

    def observe(self, now_s: float, sample: ClockSample) -> bool:
        """Take the resolver's counters at `now_s` (every few seconds); return `clock_suspect`."""
        last = self._last
        history = self._history
        if last is None or len(last.hits_by_offset) != len(sample.hits_by_offset):
            history.clear()  # first sample, or a resolver counting offsets over another span
            last = None
        elif sample.unknown_eids < last.unknown_eids or any(
            n < o for n, o in zip(sample.hits_by_offset, last.hits_by_offset, strict=True)
        ):
            last = None  # a new resolver (the roster was rebuilt): its counters started at zero
        elif now_s < history[-1][0]:
            history.clear()  # the clock went back: the evidence so far is dated wrong
        if last is None:
            hits, unknown = sample.hits_by_offset, sample.unknown_eids
        else:
            hits = tuple(
                n - o for n, o in zip(sample.hits_by_offset, last.hits_by_offset, strict=True)
            )
            unknown = sample.unknown_eids - last.unknown_eids
        self._last = sample
        history.append((now_s, hits, unknown))
        while history[0][0] <= now_s - self.config.lookback_s:
            history.popleft()
        self._judge(sample.enrolled)
        return self.clock_suspect

    def _judge(self, enrolled: int) -> None:
        config = self.config
        totals = [sum(column) for column in zip(*(h for _, h, _ in self._history), strict=True)]
        skew = (len(totals) - 1) // 2
        resolved = sum(totals)
        self.resolved = resolved
        self.unknown_eids = sum(u for _, _, u in self._history)
        self.clock_suspect = False
        self.offset_windows = None
        self.reason = None
        minutes = config.lookback_s / 60
        if resolved >= config.min_resolved:
            mean = sum((i - skew) * n for i, n in enumerate(totals)) / resolved
            self.offset_windows = round(-mean, 2) + 0.0  # + 0.0: no "-0.0"
            earlier, later = sum(totals[:skew]), sum(totals[skew + 1 :])
            for share, where, direction in (
                (earlier / resolved, "earlier", "ahead"),
                (later / resolved, "later", "behind"),
            ):
                if share > config.off_window_share:
                    self.clock_suspect = True
                    self.reason = (
                        f"{share:.0%} of the {resolved} EIDs resolved in the last {minutes:g} min "
                        f"came from {where} windows than the gateway's: its clock looks about "
                        f"{abs(self.offset_windows):g} window(s) {direction}; check NTP"
                    )
        elif resolved == 0 and enrolled > 0 and self.unknown_eids >= config.min_unknown_eids:
            self.clock_suspect = True
            self.reason = (
                f"no EID resolved in the last {minutes:g} min while about {self.unknown_eids} "
                f"unknown EIDs arrived: the gateway clock may be off by more than the skew "
                f"tolerance (check NTP), or the roster is stale"
            )
