"""A simulated store entrance: the seeded radio source for the demo, integration tests, benchmarks.

Pure and deterministic: stdlib `random.Random` seeded from the config and `edge.core` for EIDs and
frames; no clock, no I/O. The same `EntranceConfig` and members always give the same advert stream.

Assumptions (metres, seconds, dBm). The entry detector is tuned against these: change with care.

Geometry
- The storefront runs along y = 0; outside is y < 0; the store is y > 0, a `store_width_m` x
  `store_depth_m` box centred on x = 0. The door opening is `door_width_m` (2 m) wide at x = 0.
- The gateway sits just inside, at (`gateway_x_m`, `gateway_y_m`) = (1.5, 1.0). Positions are
  2-D: the height between a ceiling-mounted gateway and a pocket is ignored (distance floor 0.3 m).
- The sidewalk lane is y = -3 (+-0.3 m per person); a `glass_lane_share` (25 %) of people walk
  closer to the glass, at y = -1.5 (+-0.2 m). The modelled sidewalk is x = -40..+40 m, about where
  a phone behind the storefront wall fades below the gateway's sensitivity.

People
- Passers-by arrive as a Poisson process (`passers_per_min`) and walk the whole sidewalk from one
  end to the other at 1.2-1.5 m/s; `door_time_s` is when they pass x = 0. Passers already on the
  sidewalk when the run starts are included. A `window_shopper_share` of them (default 0) step to
  the glass beside the door for a few seconds.
- Entering shoppers cross the door inbound as a Poisson process (`arrivals_per_min`; door times
  fall inside the run, so the store starts empty). Each walks along the sidewalk, turns to the
  door, crosses it at `door_time_s`, pauses 2-6 s just inside (basket, mat), walks at 0.6-1.0 m/s
  to 2-5 random points in the store, dwelling 15-120 s at each, then walks back out of the door
  (`exit_time_s`, possibly after the run's end) and away along the sidewalk.
- Each person carries an enrolled `SimDevice` with probability `member_share` (members drawn
  without replacement; when they run out, people are non-members), and independently another
  retailer's EID tag (a key not in `members`) with probability `foreign_eid_share`. Non-members
  emit nothing else: phone chatter is modelled by the noise devices.

Radio
- Log-distance path loss: rssi = tx_1m - 10 n log10(max(d, 0.3)) - wall_loss + body + N(0, sigma),
  rounded to an int. tx_1m is -59 dBm for phones and -62 dBm for tags; `body` is a static
  per-device offset N(0, 3 dB) (pocket, bag, hand); n = 2.2; sigma = 4 dB, independent per sample.
- wall_loss (8 dB) applies when the straight line from the gateway to the device crosses the
  storefront outside the door opening, or when the device is in a neighbouring shop.
- Adverts weaker than `sensitivity_dbm` (-95) are not heard and not emitted.
- Advertising intervals, drawn per device: app phones 0.1-1.0 s (foreground/background), tags
  0.9-1.1 s, foreign tags 0.5-1.5 s, noise devices 0.1-2.0 s; each advert adds the 0-10 ms
  advDelay of Core Vol 6 Part B §4.4.2.2.1.
- Enrolled and foreign devices broadcast Eddystone-EID frames for the advert's time, computed
  once per rotation window. App phones use a resolvable private address (top bits 01) that
  changes every ~15 min (+-10 %, random phase); tags keep one static random address (top bits 11).
- Noise (`noise_devices`): Apple continuity phones (0x004C, not iBeacon) and Google Fast Pair
  accessories on rotating resolvable private addresses, Windows laptops (Microsoft CDP 0x0006) on
  rotating non-resolvable addresses, other stores' iBeacons and Eddystone-UID beacons on fixed
  addresses. 60 % are inside the store (about a fifth of those phones and earbuds are staff
  walking the floor, the rest stay put), 25 % are outside on the street, 15 % are in the
  neighbouring shops; all are present for the whole run.

iPhones (issue 10; docs/iphone-checkin.md is the app's side)
- An `ios_share` (half) of app devices are iPhones, drawn per person from the seed (a SimDevice may
  fix its `platform`). A backgrounded iOS app cannot advertise the EID: an iPhone sends no EID
  advert. It is woken by the store's iBeacon region and checks in over GATT instead, emitted as
  `CheckinAttempt`s interleaved with the adverts (`StoreEntrance.stream()`).
- The phone hears the gateway's iBeacon through the same path-loss model, the gateway transmitting
  (`gateway_tx_1m_dbm`, -59 dBm: the beacon's measured power) and the phone's body offset applying
  both ways. iOS samples the region about once a second: the region is entered when a sample is
  above `region_entry_dbm` (-90), and exited after `region_exit_s` (30 s) without one.
- iOS delivers the region entry to the app after 1-5 s, a `wake_tail_share` (15 %) after 5-20 s.
  The app then connects to the gateway: 1-3 s, failing in `connect_failure_share` (10 %) of
  attempts, or when the link is below `link_lost_dbm` (-95) as it completes; it retries after 2-5 s,
  up to `connect_retries` (3) times, then waits for the next region entry.
- Connected, the app writes a check-in every 0.8-1.2 s carrying the RSSI it measures at that moment
  (a fresh sample; the first write 0.1-0.5 s after connecting, once it has read the challenge). A
  sample below `link_lost_dbm` is a lost write; three in a row (the link's supervision timeout)
  end the connection. While still in the region, the app connects again as soon as the gateway is
  in range (iOS keeps a pending connect), with fresh retries; on region exit it stops.
- A `stale_challenge_share` (3 %) of writes carry a challenge that expired while the app slept; the
  app re-reads the challenge and writes again (edge/adapters/simulated_checkin.py does that part).
- The phone's address is a resolvable private one that iOS rotates every ~15 min: the BlueZ device
  path (`central`) the gateway sees changes with it.
- Walk-past iPhones are woken too and check in for a few seconds: the gateway's entry rule, not the
  simulation, must tell them apart.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from edge.core.advert import RawAdvert
from edge.core.eid import IDENTITY_KEY_LEN, check_key, compute_eid, counter_at
from edge.core.frames import (
    COMPANY_APPLE,
    COMPANY_MICROSOFT,
    eddystone_eid_advert,
    eddystone_uid_advert,
    fast_pair_advert,
    ibeacon_advert,
    manufacturer_advert,
)
from edge.core.wire import Platform

Role = Literal["entering", "passing"]
DeviceKind = Literal["app", "tag"]
IosEventKind = Literal[
    "region_entry", "woken", "connect_failed", "connected", "disconnected", "region_exit"
]

# Address types by the two most significant bits (Core Vol 6 Part B §1.3.2).
_ADDR_STATIC_RANDOM = 0xC0
_ADDR_RESOLVABLE_PRIVATE = 0x40
_ADDR_NON_RESOLVABLE = 0x00

_ADV_DELAY_MAX_S = 0.010  # Core Vol 6 Part B §4.4.2.2.1: advDelay is 0-10 ms per advertising event
_MIN_DISTANCE_M = 0.3
_RANGING_OFFSET_DB = 41.0  # Eddystone ranging data is the power at 0 m: about 41 dB above 1 m

_NOISE_APPLE = "apple"
_NOISE_MICROSOFT = "microsoft"
_NOISE_FAST_PAIR = "fast_pair"
_NOISE_IBEACON = "ibeacon"
_NOISE_UID = "eddystone_uid"
_NOISE_MIX = (
    (_NOISE_APPLE, 0.40),
    (_NOISE_MICROSOFT, 0.15),
    (_NOISE_FAST_PAIR, 0.15),
    (_NOISE_IBEACON, 0.15),
    (_NOISE_UID, 0.15),
)
_FAST_PAIR_MODELS = (b"\x0e\x30\xc3", b"\x2d\x7a\x23", b"\xf5\x24\x12", b"\x71\x8f\xa4")

_REGION_TICK_S = 1.0  # iOS samples a monitored beacon region about once a second
_SUPERVISION_MISSES = 3  # lost writes in a row that end a connection (~3 s supervision timeout)
_BLUEZ_DEVICE_PATH = "/org/bluez/hci0/dev_"


@dataclass(frozen=True, slots=True)
class SimDevice:
    """An EID device a simulated person carries: an enrolled one (roster refs) or a foreign one."""

    ref: str  # opaque device ref as in the roster, e.g. "d-00042"
    member: str  # opaque member ref, e.g. "m-00042"
    identity_key: bytes  # 16 bytes
    exponent: int  # rotation exponent 0..15: the EID changes every 2**exponent seconds
    kind: DeviceKind  # "app" (phone) or "tag" (key-fob)
    # An app's phone: "android" (advertises the EID) or "ios" (checks in); None lets the entrance
    # draw it (EntranceConfig.ios_share). A tag is "tag" (or None).
    platform: Platform | None = None

    def __post_init__(self) -> None:
        check_key(self.identity_key, self.exponent)
        if self.kind not in ("app", "tag"):
            raise ValueError(f"device {self.ref}: kind must be 'app' or 'tag', got {self.kind!r}")
        allowed = ("android", "ios", None) if self.kind == "app" else ("tag", None)
        if self.platform not in allowed:
            raise ValueError(
                f"device {self.ref}: a {self.kind} cannot be platform {self.platform!r}"
            )


@dataclass(frozen=True, slots=True)
class CheckinAttempt:
    """An iPhone app writing a check-in at radio time `t_s` (edge/core/checkin.py protocol)."""

    t_s: float
    device: SimDevice
    central: str  # the BlueZ device path the gateway sees: the phone's current private address
    rssi_dbm: int  # the RSSI of the gateway the app measures now (CBPeripheral.readRSSI)
    stale_challenge: bool  # the app slept and holds an expired challenge: re-read, write again


@dataclass(frozen=True, slots=True)
class IosEvent:
    """What happened to an iPhone (for tests and scoring; the gateway never sees these)."""

    t_s: float
    device: str  # the SimDevice's ref
    kind: IosEventKind
    delay_s: float = 0.0  # "woken": how long iOS took to deliver the region entry


@dataclass(frozen=True, slots=True)
class EntranceConfig:
    """Everything that shapes one simulated run; validated on construction."""

    seed: int = 1
    start_unix_s: float = 1_790_000_000.0  # simulated radio clock start (Unix seconds)
    duration_s: float = 600.0
    arrivals_per_min: float = 12.0  # people who walk in
    passers_per_min: float = 20.0  # people who only walk past outside
    member_share: float = 0.5  # share of people carrying an enrolled SimDevice
    foreign_eid_share: float = 0.05  # share of people carrying an EID tag that is not enrolled
    noise_devices: int = 25  # phones, laptops, earbuds and other stores' beacons in and around
    rssi_sigma_db: float = 4.0  # shadowing noise per sample
    path_loss_exponent: float = 2.2
    # Radio.
    phone_tx_1m_dbm: float = -59.0
    tag_tx_1m_dbm: float = -62.0
    body_sigma_db: float = 3.0  # static per-device offset: pocket, bag, hand
    wall_loss_db: float = 8.0
    sensitivity_dbm: float = -95.0
    address_rotation_s: float = 900.0  # private address lifetime of phones (about 15 min)
    # Geometry: door at the origin, storefront along y = 0, inside is y > 0.
    gateway_x_m: float = 1.5
    gateway_y_m: float = 1.0
    door_width_m: float = 2.0
    store_width_m: float = 20.0
    store_depth_m: float = 15.0
    sidewalk_y_m: float = -3.0
    glass_lane_y_m: float = -1.5
    glass_lane_share: float = 0.25  # share of people walking close to the glass
    sidewalk_half_length_m: float = 40.0
    # Behaviour.
    walk_speed_mps: tuple[float, float] = (1.2, 1.5)
    store_speed_mps: tuple[float, float] = (0.6, 1.0)
    entrance_pause_s: tuple[float, float] = (2.0, 6.0)
    store_stops: tuple[int, int] = (2, 5)
    stop_dwell_s: tuple[float, float] = (15.0, 120.0)
    window_shopper_share: float = 0.0  # share of passers who stop at the glass beside the door
    window_stop_s: tuple[float, float] = (3.0, 15.0)
    # Entering shoppers walk in during the first `arrivals_s` of the run (None: all of it); the
    # run goes on, so those inside finish their visit and leave.
    arrivals_s: float | None = None
    # iPhones: woken by the store's iBeacon region, they check in (module docstring).
    ios_share: float = 0.5  # share of app devices that are iPhones
    gateway_tx_1m_dbm: float = -59.0  # the gateway's iBeacon and GATT link, at 1 m
    region_entry_dbm: float = -90.0
    region_exit_s: float = 30.0
    link_lost_dbm: float = -95.0
    wake_delay_s: tuple[float, float] = (1.0, 5.0)
    wake_tail_share: float = 0.15
    wake_tail_s: tuple[float, float] = (5.0, 20.0)
    connect_s: tuple[float, float] = (1.0, 3.0)
    connect_failure_share: float = 0.10
    connect_retry_s: tuple[float, float] = (2.0, 5.0)
    connect_retries: int = 3
    checkin_interval_s: tuple[float, float] = (0.8, 1.2)
    stale_challenge_share: float = 0.03

    def __post_init__(self) -> None:
        shares = {
            "member_share": self.member_share,
            "foreign_eid_share": self.foreign_eid_share,
            "glass_lane_share": self.glass_lane_share,
            "window_shopper_share": self.window_shopper_share,
            "ios_share": self.ios_share,
            "wake_tail_share": self.wake_tail_share,
            "connect_failure_share": self.connect_failure_share,
            "stale_challenge_share": self.stale_challenge_share,
        }
        for name, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"EntranceConfig.{name} must be within 0..1, got {share}")
        non_negative = {
            "duration_s": self.duration_s,
            "arrivals_per_min": self.arrivals_per_min,
            "passers_per_min": self.passers_per_min,
            "noise_devices": self.noise_devices,
            "rssi_sigma_db": self.rssi_sigma_db,
            "body_sigma_db": self.body_sigma_db,
            "wall_loss_db": self.wall_loss_db,
            "arrivals_s": 0.0 if self.arrivals_s is None else self.arrivals_s,
            "connect_retries": self.connect_retries,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"EntranceConfig.{name} must not be negative, got {value}")
        positive = {
            "path_loss_exponent": self.path_loss_exponent,
            "address_rotation_s": self.address_rotation_s,
            "door_width_m": self.door_width_m,
            "store_width_m": self.store_width_m,
            "store_depth_m": self.store_depth_m,
            "sidewalk_half_length_m": self.sidewalk_half_length_m,
            "gateway_y_m": self.gateway_y_m,
            "region_exit_s": self.region_exit_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"EntranceConfig.{name} must be positive, got {value}")
        if not self.sidewalk_y_m < 0 or not self.glass_lane_y_m < 0:
            raise ValueError(
                "EntranceConfig: sidewalk_y_m and glass_lane_y_m must be outside (< 0)"
            )
        if self.store_depth_m < 4.0 or self.store_width_m < self.door_width_m + 2.0:
            raise ValueError(
                "EntranceConfig: the store must be at least 4 m deep and wider than the door"
            )
        ranges: dict[str, tuple[float, float]] = {
            "walk_speed_mps": self.walk_speed_mps,
            "store_speed_mps": self.store_speed_mps,
            "entrance_pause_s": self.entrance_pause_s,
            "stop_dwell_s": self.stop_dwell_s,
            "window_stop_s": self.window_stop_s,
            "wake_delay_s": self.wake_delay_s,
            "wake_tail_s": self.wake_tail_s,
            "connect_s": self.connect_s,
            "connect_retry_s": self.connect_retry_s,
            "checkin_interval_s": self.checkin_interval_s,
        }
        for name, (low, high) in ranges.items():
            if not 0 <= low <= high:
                raise ValueError(f"EntranceConfig.{name} must be (low, high) with 0 <= low <= high")
        if self.walk_speed_mps[0] <= 0 or self.store_speed_mps[0] <= 0:
            raise ValueError("EntranceConfig: walking speeds must be positive")
        if self.checkin_interval_s[0] <= 0:
            raise ValueError("EntranceConfig.checkin_interval_s must be positive")
        if self.link_lost_dbm > self.region_entry_dbm:
            raise ValueError(
                "EntranceConfig: link_lost_dbm must not be above region_entry_dbm (a phone that "
                "hears the beacon can connect)"
            )
        if not 0 <= self.store_stops[0] <= self.store_stops[1]:
            raise ValueError("EntranceConfig.store_stops must be (low, high) with 0 <= low <= high")

    @property
    def end_unix_s(self) -> float:
        """The end of the simulated window (Unix seconds)."""
        return self.start_unix_s + self.duration_s


@dataclass(frozen=True, slots=True)
class Person:
    """One simulated person and what they really did."""

    id: str
    role: Role
    device: SimDevice | None  # the enrolled device they carry, if they are a member
    carries_foreign_eid: bool
    door_time_s: float  # radio time they cross the door inbound (entering) or pass x = 0 (passing)
    exit_time_s: float | None = None  # entering: when they walk back out (may be after the end)
    foreign_device: SimDevice | None = None  # the non-enrolled EID tag, if they carry one
    lane_y_m: float = 0.0  # the sidewalk lane they walk (y); the glass lane is the hard case
    window_stop_s: float = 0.0  # passers: how long they stopped at the glass beside the door
    platform: Platform | None = None  # the member device's: "android", "ios", "tag"; None: none


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Who really did what during one run, ordered by `door_time_s`.

    `people` also holds passers-by who were already walking, or not yet past the door, at the run's
    edges (door times up to about a minute outside `start_s..end_s`).
    """

    people: tuple[Person, ...]
    start_s: float
    end_s: float

    def entered_members(
        self, until_s: float | None = None, platform: Platform | None = None
    ) -> set[str]:
        """Member refs that walked in through the door by `until_s` (default: the run's end),
        carrying a device of `platform` (default: any)."""
        limit = self.end_s if until_s is None else until_s
        return {
            p.device.member
            for p in self.people
            if p.role == "entering"
            and p.device is not None
            and p.door_time_s <= limit
            and (platform is None or p.platform == platform)
        }

    def platforms(self) -> dict[str, Platform]:
        """The platform of every member present (walking in or past)."""
        return {
            p.device.member: p.platform
            for p in self.people
            if p.device is not None and p.platform is not None
        }

    def stays_s(self) -> dict[str, float]:
        """Time in store (door in to door out, seconds) of every member who walked in, by member;
        the exit may fall after the run's end."""
        return self.time_in_store_s(math.inf)

    def exited_members(self, until_s: float | None = None) -> set[str]:
        """Member refs that walked in and back out again by `until_s` (default: the run's end)."""
        limit = self.end_s if until_s is None else until_s
        return {
            p.device.member
            for p in self.people
            if p.role == "entering"
            and p.device is not None
            and p.exit_time_s is not None
            and p.exit_time_s <= limit
        }

    def time_in_store_s(self, until_s: float | None = None) -> dict[str, float]:
        """Each member who walked in and back out by `until_s` (default: the run's end): how long
        they were inside, exit_time_s - door_time_s (what a visit_end's duration_s measures)."""
        limit = self.end_s if until_s is None else until_s
        return {
            p.device.member: p.exit_time_s - p.door_time_s
            for p in self.people
            if p.role == "entering"
            and p.device is not None
            and p.exit_time_s is not None
            and p.exit_time_s <= limit
        }

    def passing_members(self) -> set[str]:
        """Member refs that only walked past outside."""
        return {
            p.device.member for p in self.people if p.role == "passing" and p.device is not None
        }


def make_members(n: int, seed: int) -> list[SimDevice]:
    """`n` deterministic enrolled devices for tests and benchmarks: ~70 % app, mostly K = 10."""
    rng = random.Random(seed)
    members: list[SimDevice] = []
    for i in range(n):
        key = rng.randbytes(IDENTITY_KEY_LEN)
        exponent = 10 if rng.random() < 0.8 else rng.choice((8, 9, 11, 12))
        kind: DeviceKind = "app" if rng.random() < 0.7 else "tag"
        members.append(SimDevice(f"d-{i:05d}", f"m-{i:05d}", key, exponent, kind))
    return members


# --- Planning: people, paths and emitters, all drawn once in StoreEntrance.__init__. ---

# A path segment: (t0, t1, x0, y0, vx, vy); position at t in [t0, t1) is (x0 + vx (t - t0), ...).
_Segment = tuple[float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class _EmitterPlan:
    """One radio a person or a noise source carries, with its whole path."""

    segments: tuple[_Segment, ...]
    interval_s: float
    tx_dbm: float  # tx at 1 m plus the static body offset
    identity_key: bytes | None = None  # EID devices
    exponent: int = 0
    ranging_dbm: int = -18
    address: str | None = None  # fixed address; None: rotating private address
    address_top_bits: int = _ADDR_RESOLVABLE_PRIVATE
    noise_kind: str | None = None
    payload: bytes = b""  # fixed payload for beacons and fast pair

    @property
    def t_first(self) -> float:
        return self.segments[0][0]

    @property
    def t_last(self) -> float:
        return self.segments[-1][1]


def _segments(knots: Sequence[tuple[float, float, float]]) -> tuple[_Segment, ...]:
    """Piecewise-linear segments through (t, x, y) knots; a repeated position is a pause."""
    out: list[_Segment] = []
    for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(knots):
        span = t1 - t0
        if span <= 0:
            continue
        out.append((t0, t1, x0, y0, (x1 - x0) / span, (y1 - y0) / span))
    if not out:
        t, x, y = knots[0]
        out.append((t, t, x, y, 0.0, 0.0))
    return tuple(out)


class _Knots:
    """Builds a (t, x, y) knot list by walking and pausing."""

    __slots__ = ("knots",)

    def __init__(self, t: float, x: float, y: float) -> None:
        self.knots: list[tuple[float, float, float]] = [(t, x, y)]

    @property
    def t(self) -> float:
        return self.knots[-1][0]

    def walk(self, x: float, y: float, speed_mps: float) -> None:
        t0, x0, y0 = self.knots[-1]
        self.knots.append((t0 + math.hypot(x - x0, y - y0) / speed_mps, x, y))

    def pause(self, duration_s: float) -> None:
        t0, x0, y0 = self.knots[-1]
        self.knots.append((t0 + duration_s, x0, y0))


def _time_of(item: RawAdvert | CheckinAttempt) -> float:
    return item.t_s


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(bounds[0], bounds[1])


def _address(rng: random.Random, top_bits: int) -> str:
    raw = bytearray(rng.randbytes(6))
    raw[0] = (raw[0] & 0x3F) | top_bits
    return ":".join(f"{b:02X}" for b in raw)


def _poisson_times(rng: random.Random, per_min: float, low: float, high: float) -> list[float]:
    times: list[float] = []
    if per_min <= 0:
        return times
    rate_per_s = per_min / 60.0
    t = low + rng.expovariate(rate_per_s)
    while t < high:
        times.append(t)
        t += rng.expovariate(rate_per_s)
    return times


def _noise_payload(kind: str, rng: random.Random) -> bytes:
    """A fresh payload for a rotating noise device (content changes with its address)."""
    if kind == _NOISE_APPLE:
        # Continuity "Nearby Info" (type 0x10): never the iBeacon prefix 0x02 0x15.
        return manufacturer_advert(COMPANY_APPLE, b"\x10\x05" + rng.randbytes(5))
    if kind == _NOISE_MICROSOFT:
        # CDP beacon: scenario 0x01, device type, flags, reserved, 4-byte salt, 16-byte hash.
        return manufacturer_advert(
            COMPANY_MICROSOFT, b"\x01\x09\x20\x02" + rng.randbytes(20), flags=False
        )
    raise ValueError(f"noise kind {kind!r} has a fixed payload")


class _Planner:
    """Draws people, their paths and every emitter from one seeded generator."""

    def __init__(self, config: EntranceConfig, members: Sequence[SimDevice]) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.pool = list(members)
        self.rng.shuffle(self.pool)
        self.enrolled_keys = {m.identity_key for m in members}
        self.emitters: list[_EmitterPlan] = []
        self.people: list[Person] = []
        self.foreign_count = 0
        # Separate generators: the platform split and the iPhones' behaviour move nothing else.
        self.platform_rng = random.Random(f"threshold-sim-platform-{config.seed}")
        self.iphones: list[tuple[SimDevice, tuple[_Segment, ...], float]] = []
        self.attempts: list[CheckinAttempt] = []
        self.ios_events: list[IosEvent] = []

    def plan(self) -> None:
        c = self.c
        rng = self.rng
        start, end = c.start_unix_s, c.end_unix_s
        transit_s = c.sidewalk_half_length_m / c.walk_speed_mps[0] + c.window_stop_s[1]
        arrivals_end = end if c.arrivals_s is None else min(end, start + c.arrivals_s)
        arrivals: list[tuple[float, Role]] = [
            (t, "entering") for t in _poisson_times(rng, c.arrivals_per_min, start, arrivals_end)
        ]
        # Passers are in steady state: some are already walking when the run starts.
        arrivals += [
            (t, "passing")
            for t in _poisson_times(rng, c.passers_per_min, start - transit_s, end + transit_s)
        ]
        arrivals.sort()
        for n, (door_time, role) in enumerate(arrivals):
            # Draw even when the pool is empty, so running out of members moves nothing else.
            is_member = rng.random() < c.member_share
            device = self.pool.pop() if is_member and self.pool else None
            foreign = self._foreign_device() if rng.random() < c.foreign_eid_share else None
            platform = self._platform(device)
            if role == "entering":
                knots, lane, exit_time = self._entering_path(door_time)
                stop_s = 0.0
            else:
                knots, lane, stop_s = self._passing_path(door_time)
                exit_time = None
            self.people.append(
                Person(
                    id=f"p-{n:05d}",
                    role=role,
                    device=device,
                    carries_foreign_eid=foreign is not None,
                    door_time_s=door_time,
                    exit_time_s=exit_time,
                    foreign_device=foreign,
                    lane_y_m=lane,
                    window_stop_s=stop_s,
                    platform=platform,
                )
            )
            segments = _segments(knots)
            if device is not None:
                emitter = self._eid_emitter(device, segments, foreign=False)
                if platform == "ios":
                    # No EID advert from a backgrounded iOS app: it checks in instead. The
                    # emitter is still drawn, so an iPhone's path and body are an Android's.
                    self.iphones.append((device, segments, emitter.tx_dbm - c.phone_tx_1m_dbm))
                else:
                    self.emitters.append(emitter)
            if foreign is not None:
                self.emitters.append(self._eid_emitter(foreign, segments, foreign=True))
        self._noise()
        ios = _IphonePlanner(c, random.Random(f"threshold-sim-ios-{c.seed}"))
        for device, segments, body_db in self.iphones:
            ios.plan(device, segments, body_db)
        self.attempts = sorted(
            (a for a in ios.attempts if start <= a.t_s <= end), key=lambda a: a.t_s
        )
        self.ios_events = sorted(ios.events, key=lambda e: e.t_s)

    def _platform(self, device: SimDevice | None) -> Platform | None:
        """The platform of a member's device: a tag's, the device's own, or drawn from the seed."""
        # Drawn for everyone, so whether one person is a member moves no one else's platform.
        ios = self.platform_rng.random() < self.c.ios_share
        if device is None:
            return None
        if device.kind == "tag":
            return "tag"
        if device.platform is not None:
            return device.platform
        return "ios" if ios else "android"

    def _foreign_device(self) -> SimDevice:
        key = self.rng.randbytes(IDENTITY_KEY_LEN)
        # A collision is astronomically unlikely, but the contract is "not enrolled".
        while key in self.enrolled_keys:
            key = self.rng.randbytes(IDENTITY_KEY_LEN)
        self.foreign_count += 1
        n = self.foreign_count
        exponent = self.rng.choice((8, 9, 10, 10, 10, 11, 12))
        return SimDevice(f"fd-{n:05d}", f"fm-{n:05d}", key, exponent, "tag")

    def _lane(self) -> float:
        c = self.c
        if self.rng.random() < c.glass_lane_share:
            return c.glass_lane_y_m + self.rng.uniform(-0.2, 0.2)
        return c.sidewalk_y_m + self.rng.uniform(-0.3, 0.3)

    def _door_x(self) -> float:
        return self.rng.uniform(-0.3, 0.3) * self.c.door_width_m

    def _entering_path(
        self, door_time: float
    ) -> tuple[list[tuple[float, float, float]], float, float]:
        c = self.c
        rng = self.rng
        far = c.sidewalk_half_length_m
        speed = _uniform(rng, c.walk_speed_mps)
        lane = self._lane()
        side = rng.choice((-1.0, 1.0))
        door_x = self._door_x()
        turn_x = door_x + side * rng.uniform(0.5, 2.5)
        approach_m = abs(side * far - turn_x) + math.hypot(turn_x - door_x, lane)
        path = _Knots(door_time - approach_m / speed, side * far, lane)
        path.walk(turn_x, lane, speed)
        path.walk(door_x, 0.0, speed)
        # Just inside: basket, mat, a look around.
        store_speed = _uniform(rng, c.store_speed_mps)
        path.walk(rng.uniform(-1.0, 1.0), rng.uniform(1.2, 2.5), store_speed)
        path.pause(_uniform(rng, c.entrance_pause_s))
        half_w = c.store_width_m / 2 - 1.0
        for _ in range(rng.randint(c.store_stops[0], c.store_stops[1])):
            path.walk(
                rng.uniform(-half_w, half_w), rng.uniform(2.0, c.store_depth_m - 1.0), store_speed
            )
            path.pause(_uniform(rng, c.stop_dwell_s))
        exit_x = self._door_x()
        path.walk(exit_x, 0.0, store_speed)
        exit_time = path.t
        out_lane = self._lane()
        out_side = rng.choice((-1.0, 1.0))
        path.walk(exit_x + out_side * rng.uniform(0.5, 2.5), out_lane, speed)
        path.walk(out_side * far, out_lane, speed)
        return path.knots, lane, exit_time

    def _passing_path(
        self, door_time: float
    ) -> tuple[list[tuple[float, float, float]], float, float]:
        c = self.c
        rng = self.rng
        far = c.sidewalk_half_length_m
        speed = _uniform(rng, c.walk_speed_mps)
        lane = self._lane()
        side = rng.choice((-1.0, 1.0))
        stop_s = 0.0
        if rng.random() < c.window_shopper_share:
            stop_s = _uniform(rng, c.window_stop_s)
            # Window shopping: a step to the glass just beside the door, on the passer's way.
            stop_x = -side * rng.uniform(c.door_width_m / 2 + 0.5, c.door_width_m / 2 + 4.0)
            path = _Knots(door_time - far / speed, side * far, lane)
            path.walk(0.0, lane, speed)  # door_time is when they pass x = 0
            path.walk(stop_x, -0.6, speed)
            path.pause(stop_s)
            path.walk(stop_x - side * 1.0, lane, speed)
            path.walk(-side * far, lane, speed)
            return path.knots, lane, stop_s
        path = _Knots(door_time - far / speed, side * far, lane)
        path.walk(-side * far, lane, speed)
        return path.knots, lane, stop_s

    def _eid_emitter(
        self, device: SimDevice, segments: tuple[_Segment, ...], foreign: bool
    ) -> _EmitterPlan:
        c = self.c
        rng = self.rng
        app = device.kind == "app"
        tx = c.phone_tx_1m_dbm if app else c.tag_tx_1m_dbm
        if foreign:
            interval = rng.uniform(0.5, 1.5)
        elif app:
            interval = rng.uniform(0.1, 1.0)
        else:
            interval = rng.uniform(0.9, 1.1)
        return _EmitterPlan(
            segments=segments,
            interval_s=interval,
            tx_dbm=tx + rng.gauss(0.0, c.body_sigma_db),
            identity_key=device.identity_key,
            exponent=device.exponent,
            ranging_dbm=round(tx + _RANGING_OFFSET_DB),
            address=None if app else _address(rng, _ADDR_STATIC_RANDOM),
            address_top_bits=_ADDR_RESOLVABLE_PRIVATE,
        )

    def _noise(self) -> None:
        c = self.c
        rng = self.rng
        # Present for the whole run (the margin keeps the first advert's phase random).
        t0, t1 = c.start_unix_s - 5.0, c.end_unix_s + 5.0
        half_w = c.store_width_m / 2
        for _ in range(c.noise_devices):
            kind = rng.choices([k for k, _ in _NOISE_MIX], [w for _, w in _NOISE_MIX])[0]
            place = rng.random()
            if place < 0.60:
                x, y = rng.uniform(-half_w + 0.5, half_w - 0.5), rng.uniform(0.5, c.store_depth_m)
            elif place < 0.85:
                x, y = rng.uniform(-25.0, 25.0), rng.uniform(-12.0, -2.0)
            else:
                x = rng.choice((-1.0, 1.0)) * rng.uniform(half_w + 1.0, half_w + 15.0)
                y = rng.uniform(1.0, c.store_depth_m)
            if place < 0.12 and kind in (_NOISE_APPLE, _NOISE_FAST_PAIR):
                segments = self._staff_path(t0, t1, x, y)
            else:
                segments = ((t0, t1, x, y, 0.0, 0.0),)
            interval = rng.uniform(0.1, 2.0)
            tx = c.phone_tx_1m_dbm + rng.gauss(0.0, c.body_sigma_db)
            if kind == _NOISE_IBEACON:
                payload = ibeacon_advert(
                    rng.randbytes(16), rng.randrange(65536), rng.randrange(65536)
                )
                plan = _EmitterPlan(
                    segments,
                    interval,
                    tx,
                    payload=payload,
                    address=_address(rng, _ADDR_STATIC_RANDOM),
                )
            elif kind == _NOISE_UID:
                payload = eddystone_uid_advert(rng.randbytes(10), rng.randbytes(6))
                plan = _EmitterPlan(
                    segments,
                    interval,
                    tx,
                    payload=payload,
                    address=_address(rng, _ADDR_STATIC_RANDOM),
                )
            elif kind == _NOISE_FAST_PAIR:
                payload = fast_pair_advert(rng.choice(_FAST_PAIR_MODELS))
                plan = _EmitterPlan(segments, interval, tx, payload=payload)
            elif kind == _NOISE_MICROSOFT:
                plan = _EmitterPlan(
                    segments, interval, tx, noise_kind=kind, address_top_bits=_ADDR_NON_RESOLVABLE
                )
            else:
                plan = _EmitterPlan(segments, interval, tx, noise_kind=kind)
            self.emitters.append(plan)

    def _staff_path(self, t0: float, t1: float, x: float, y: float) -> tuple[_Segment, ...]:
        c = self.c
        rng = self.rng
        half_w = c.store_width_m / 2 - 0.5
        path = _Knots(t0, x, y)
        speed = _uniform(rng, c.store_speed_mps)
        while path.t < t1:
            path.pause(rng.uniform(20.0, 300.0))
            path.walk(rng.uniform(-half_w, half_w), rng.uniform(2.0, c.store_depth_m - 0.5), speed)
        return _segments(path.knots)


class _Cursor:
    """Position along a path at non-decreasing times."""

    __slots__ = ("i", "segments")

    def __init__(self, segments: tuple[_Segment, ...]) -> None:
        self.segments = segments
        self.i = 0

    def at(self, t: float) -> tuple[float, float]:
        segments = self.segments
        last = len(segments) - 1
        while self.i < last and t >= segments[self.i][1]:
            self.i += 1
        t0, _, x0, y0, vx, vy = segments[self.i]
        return x0 + vx * (t - t0), y0 + vy * (t - t0)


def _mean_rssi(c: EntranceConfig, tx_dbm: float, x: float, y: float) -> float:
    """The path-loss model's RSSI between the gateway and (x, y), before per-sample shadowing.

    The same model as StoreEntrance.adverts() (inlined there for speed); the path is symmetric, so
    it serves the gateway hearing a device and a phone hearing the gateway alike.
    """
    dx, dy = x - c.gateway_x_m, y - c.gateway_y_m
    d2 = max(dx * dx + dy * dy, _MIN_DISTANCE_M * _MIN_DISTANCE_M)
    rssi = tx_dbm - 5.0 * c.path_loss_exponent * math.log10(d2)
    if y < 0.0:
        crossing_x = c.gateway_x_m - dx * c.gateway_y_m / dy
        if abs(crossing_x) > c.door_width_m / 2:
            rssi -= c.wall_loss_db
    elif abs(x) > c.store_width_m / 2:
        rssi -= c.wall_loss_db
    return rssi


class _IphonePlanner:
    """An iPhone's region, wake-ups, connections and check-in writes (module docstring)."""

    def __init__(self, config: EntranceConfig, rng: random.Random) -> None:
        self.c = config
        self.rng = rng
        self.attempts: list[CheckinAttempt] = []
        self.events: list[IosEvent] = []
        self._addresses: dict[str, tuple[str, float]] = {}

    def plan(self, device: SimDevice, segments: tuple[_Segment, ...], body_db: float) -> None:
        """Everything one iPhone does along its owner's path."""
        for enter_s, exit_s in self._region(segments, body_db):
            self._visit_region(device, segments, body_db, enter_s, exit_s)

    def _sampler(self, segments: tuple[_Segment, ...], body_db: float) -> Callable[[float], float]:
        """RSSI the phone measures of the gateway at non-decreasing times (one sample each)."""
        c = self.c
        cursor = _Cursor(segments)
        tx = c.gateway_tx_1m_dbm + body_db
        gauss = self.rng.gauss

        def sample(t: float) -> float:
            x, y = cursor.at(t)
            return _mean_rssi(c, tx, x, y) + gauss(0.0, c.rssi_sigma_db)

        return sample

    def _region(self, segments: tuple[_Segment, ...], body_db: float) -> list[tuple[float, float]]:
        """(entry, exit) times of the store's iBeacon region as iOS monitors it."""
        c = self.c
        sample = self._sampler(segments, body_db)
        t_last = segments[-1][1]
        t = segments[0][0] + self.rng.random() * _REGION_TICK_S
        spans: list[tuple[float, float]] = []
        entered_s: float | None = None
        heard_s = -math.inf
        while t <= t_last:
            if sample(t) >= c.region_entry_dbm:
                heard_s = t
                if entered_s is None:
                    entered_s = t
            elif entered_s is not None and t - heard_s >= c.region_exit_s:
                spans.append((entered_s, t))
                entered_s = None
            t += _REGION_TICK_S
        if entered_s is not None:
            spans.append((entered_s, t_last))  # walked off the modelled street still inside
        return spans

    def _visit_region(
        self,
        device: SimDevice,
        segments: tuple[_Segment, ...],
        body_db: float,
        enter_s: float,
        exit_s: float,
    ) -> None:
        c = self.c
        rng = self.rng
        link = self._sampler(segments, body_db)
        ref = device.ref
        self.events.append(IosEvent(enter_s, ref, "region_entry"))
        if rng.random() < c.wake_tail_share:
            delay = _uniform(rng, c.wake_tail_s)
        else:
            delay = _uniform(rng, c.wake_delay_s)
        t = enter_s + delay
        if t < exit_s:
            self.events.append(IosEvent(t, ref, "woken", delay))
        retries = c.connect_retries
        while t < exit_s:
            done = t + _uniform(rng, c.connect_s)
            if done >= exit_s:
                break
            failed = rng.random() < c.connect_failure_share
            if failed or link(done) < c.link_lost_dbm:
                self.events.append(IosEvent(done, ref, "connect_failed"))
                if retries == 0:
                    break  # the app gives up until the next region entry
                retries -= 1
                t = done + _uniform(rng, c.connect_retry_s)
                continue
            self.events.append(IosEvent(done, ref, "connected"))
            central = _BLUEZ_DEVICE_PATH + self._address(ref, done).replace(":", "_")
            t = done + rng.uniform(0.1, 0.5)  # reads the challenge first
            misses = 0
            while t < exit_s:
                rssi = link(t)
                if rssi >= c.link_lost_dbm:
                    misses = 0
                    stale = rng.random() < c.stale_challenge_share
                    self.attempts.append(CheckinAttempt(t, device, central, round(rssi), stale))
                else:
                    misses += 1
                    if misses >= _SUPERVISION_MISSES:
                        break
                t += _uniform(rng, c.checkin_interval_s)
            self.events.append(IosEvent(min(t, exit_s), ref, "disconnected"))
            # Still in the region: iOS completes the app's pending connect once the gateway is
            # in range again.
            t += _REGION_TICK_S
            while t < exit_s and link(t) < c.link_lost_dbm:
                t += _REGION_TICK_S
            retries = c.connect_retries
        self.events.append(IosEvent(exit_s, ref, "region_exit"))

    def _address(self, ref: str, t: float) -> str:
        """The phone's private address at `t` (iOS rotates it about every 15 min)."""
        current = self._addresses.get(ref)
        if current is None or t >= current[1]:
            rotation_s = self.c.address_rotation_s * self.rng.uniform(0.9, 1.1)
            # The first address of the run has already lived a random part of its life.
            until = t + (rotation_s * self.rng.random() if current is None else rotation_s)
            current = (_address(self.rng, _ADDR_RESOLVABLE_PRIVATE), until)
            self._addresses[ref] = current
        return current[0]


# --- Running: one pass over the plan, in time order. ---


class _Live:
    """The mutable radio state of one emitter during one `adverts()` pass (hot loop: slots only)."""

    __slots__ = (
        "address",
        "exponent",
        "identity_key",
        "interval_s",
        "next_rotation_s",
        "noise_kind",
        "payload",
        "ranging_dbm",
        "rotation_s",
        "seg_i",
        "seg_t0",
        "seg_t1",
        "segments",
        "t_last",
        "top_bits",
        "tx_dbm",
        "vx",
        "vy",
        "window",
        "x0",
        "y0",
    )

    def __init__(
        self, plan: _EmitterPlan, rng: random.Random, t_begin: float, rotation_s: float
    ) -> None:
        self.segments = plan.segments
        self.seg_i = 0
        self.t_last = plan.t_last
        self.interval_s = plan.interval_s
        self.tx_dbm = plan.tx_dbm
        self.identity_key = plan.identity_key
        self.exponent = plan.exponent
        self.ranging_dbm = plan.ranging_dbm
        self.window = -1
        self.noise_kind = plan.noise_kind
        self.top_bits = plan.address_top_bits
        self.payload = plan.payload
        if plan.address is None:
            self.rotation_s = rotation_s * rng.uniform(0.9, 1.1)
            self.next_rotation_s = t_begin + rng.uniform(0.0, self.rotation_s)
            self.address = _address(rng, self.top_bits)
            if self.noise_kind is not None:
                self.payload = _noise_payload(self.noise_kind, rng)
        else:
            self.rotation_s = math.inf
            self.next_rotation_s = math.inf
            self.address = plan.address
        self.seek(t_begin)

    def seek(self, t: float) -> None:
        """Move the segment cursor forward to the segment holding `t` (or the last one)."""
        segments = self.segments
        i = self.seg_i
        last = len(segments) - 1
        while i < last and t >= segments[i][1]:
            i += 1
        self.seg_i = i
        self.seg_t0, self.seg_t1, self.x0, self.y0, self.vx, self.vy = segments[i]

    def rotate(self, t: float, rng: random.Random) -> None:
        """A new private address (and, for noise phones, new payload content)."""
        while self.next_rotation_s <= t:
            self.next_rotation_s += self.rotation_s
        self.address = _address(rng, self.top_bits)
        if self.noise_kind is not None:
            self.payload = _noise_payload(self.noise_kind, rng)

    def refresh_eid(self, t: float, window: int) -> None:
        """Compute the EID once per rotation window."""
        assert self.identity_key is not None
        self.window = window
        eid = compute_eid(self.identity_key, self.exponent, counter_at(t))
        self.payload = eddystone_eid_advert(eid, self.ranging_dbm)


class StoreEntrance:
    """A seeded store entrance: people and noise devices, their adverts in time order, the truth."""

    def __init__(self, config: EntranceConfig, members: Sequence[SimDevice]) -> None:
        planner = _Planner(config, members)
        planner.plan()
        self._config = config
        self._emitters = tuple(planner.emitters)
        self._truth = GroundTruth(tuple(planner.people), config.start_unix_s, config.end_unix_s)
        self._attempts = tuple(planner.attempts)
        self._ios_events = tuple(planner.ios_events)

    @property
    def config(self) -> EntranceConfig:
        """The configuration this entrance was built from."""
        return self._config

    @property
    def truth(self) -> GroundTruth:
        """Who really did what (complete from construction)."""
        return self._truth

    @property
    def checkin_attempts(self) -> tuple[CheckinAttempt, ...]:
        """Every iPhone check-in write within the run, in time order."""
        return self._attempts

    @property
    def ios_events(self) -> tuple[IosEvent, ...]:
        """What the iPhones did (region, wake-ups, connections), in time order, run edges included."""
        return self._ios_events

    def stream(self) -> Iterator[RawAdvert | CheckinAttempt]:
        """The adverts and the iPhones' check-in writes merged in time order (`t_s` non-decreasing;
        an advert first at equal times); repeatable."""
        return heapq.merge(self.adverts(), self._attempts, key=_time_of)

    def adverts(self) -> Iterator[RawAdvert]:
        """Every heard advert from start to start + duration, `t_s` non-decreasing; repeatable.

        iPhones send none (they check in: `stream()`, `checkin_attempts`)."""
        c = self._config
        rng = random.Random(f"threshold-sim-radio-{c.seed}")
        start, end = c.start_unix_s, c.end_unix_s
        live: list[_Live] = []
        heap: list[tuple[float, int]] = []
        for plan in self._emitters:
            if plan.t_last <= start or plan.t_first > end:
                continue
            t_begin = max(start, plan.t_first)
            live.append(_Live(plan, rng, t_begin, c.address_rotation_s))
            heap.append((t_begin + rng.random() * plan.interval_s, len(live) - 1))
        heapq.heapify(heap)

        gx, gy = c.gateway_x_m, c.gateway_y_m
        half_door = c.door_width_m / 2
        half_width = c.store_width_m / 2
        loss_per_log_d2 = 5.0 * c.path_loss_exponent  # 10 n log10(d) == 5 n log10(d**2)
        min_d2 = _MIN_DISTANCE_M * _MIN_DISTANCE_M
        wall_db = c.wall_loss_db
        sensitivity = c.sensitivity_dbm
        sigma = c.rssi_sigma_db
        gauss = rng.gauss
        uniform01 = rng.random
        log10 = math.log10
        heappop = heapq.heappop
        heapreplace = heapq.heapreplace

        while heap:
            t, i = heap[0]
            if t > end:
                break
            e = live[i]
            if t >= e.seg_t1:
                if t >= e.t_last:
                    heappop(heap)
                    continue
                e.seek(t)
            heapreplace(heap, (t + e.interval_s + uniform01() * _ADV_DELAY_MAX_S, i))
            dt = t - e.seg_t0
            x = e.x0 + e.vx * dt
            y = e.y0 + e.vy * dt
            dx = x - gx
            dy = y - gy
            d2 = dx * dx + dy * dy
            if d2 < min_d2:
                d2 = min_d2
            rssi = e.tx_dbm - loss_per_log_d2 * log10(d2) + gauss(0.0, sigma)
            if y < 0.0:
                # Where the gateway->device line crosses the storefront (dy < 0 here).
                crossing_x = gx - dx * gy / dy
                if crossing_x < -half_door or crossing_x > half_door:
                    rssi -= wall_db
            elif x < -half_width or x > half_width:
                rssi -= wall_db  # a neighbouring shop
            if rssi < sensitivity:
                continue
            if t >= e.next_rotation_s:
                e.rotate(t, rng)
            if e.identity_key is not None:
                window = counter_at(t) >> e.exponent
                if window != e.window:
                    e.refresh_eid(t, window)
            yield RawAdvert(t, e.address, round(rssi), e.payload)
