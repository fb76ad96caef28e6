"""Cloned tags: a device seen at two stores too far apart to travel between in the time (issue 4).

Pure: sightings in, suspicions out. A sighting's time is the gateway's radio time `ts` (when the
entry was heard); `detected_at` (the gateway's wall clock when it decided) is normally within a
second of it, since both come from the Pi's system clock. Clocks are wrong sometimes, and a false
alarm can revoke a real shopper's card, so every doubt goes to the shopper: each sighting's time is
trusted only to within `clock_tolerance_s` plus however far its own two clocks disagree, and travel is
impossible only if it is impossible even with the most generous reading of both times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius
#: Half the Earth's circumference: no two places are further apart along the surface.
MAX_DISTANCE_KM = math.pi * EARTH_RADIUS_KM

# Door to door, no journey between two shop entrances averages more than 200 km/h on the ground:
# motorways are limited to 130 km/h or less and high-speed rail averages under 250 km/h station to
# station, before getting to and from the stations; a short flight, counting airports, is slower
# still. A long-haul flight can beat it (London to New York is about 600 km/h door to door), so a
# chain with stores on several continents should raise `[bridge] clone_max_speed_kmh` to about 900.
DEFAULT_MAX_SPEED_KMH = 200.0
# When a store's location is unknown, only sightings at two stores closer in time than this are
# flagged: about the shortest walk between two shop doors in one mall, with a margin.
DEFAULT_MIN_GAP_S = 120.0
# How far a gateway's clock may be off. An NTP-synced Pi is within a fraction of a second; 10 s
# leaves room for a flaky time sync without hiding a tag cloned to a store in the next town.
DEFAULT_CLOCK_TOLERANCE_S = 10.0

Reason = Literal["too_fast", "simultaneous"]


class LocationError(ValueError):
    """A store location out of range; `field` names the coordinate at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A place on Earth in decimal degrees (WGS 84): latitude -90..90, longitude -180..180."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        check_coordinate("latitude", self.lat, 90.0)
        check_coordinate("longitude", self.lon, 180.0)


def check_coordinate(field: str, value: float, limit: float) -> float:
    """Return `value` if it is a finite number of degrees within ±limit, else raise LocationError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LocationError(field, f"must be a number of decimal degrees, got {value!r}")
    if not -limit <= value <= limit:
        hint = (
            " (latitude and longitude swapped?)"
            if field == "latitude" and abs(value) <= 180
            else ""
        )
        raise LocationError(
            field, f"must be between -{limit:g} and {limit:g} degrees, got {value:g}{hint}"
        )
    return float(value)


def location_from(lat: float | None, lon: float | None) -> GeoPoint | None:
    """Both coordinates, or neither (no location); one without the other is a LocationError."""
    if lat is None and lon is None:
        return None
    if lat is None or lon is None:
        missing = "latitude" if lat is None else "longitude"
        raise LocationError(missing, "is missing: give both latitude and longitude, or neither")
    return GeoPoint(lat, lon)


def distance_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance (haversine), accurate to about 0.5% (the Earth is not a sphere)."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    # min(): rounding can push h a hair over 1 near the antipodes, outside asin's domain.
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, h))))


@dataclass(frozen=True, slots=True)
class ClonePolicy:
    """When two sightings of one device at two stores count as impossible travel."""

    max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH
    min_gap_s: float = DEFAULT_MIN_GAP_S
    clock_tolerance_s: float = DEFAULT_CLOCK_TOLERANCE_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_speed_kmh) and self.max_speed_kmh > 0):
            raise ValueError(f"max_speed_kmh must be > 0, got {self.max_speed_kmh}")
        if not (math.isfinite(self.min_gap_s) and self.min_gap_s >= 0):
            raise ValueError(f"min_gap_s must be >= 0, got {self.min_gap_s}")
        if not (math.isfinite(self.clock_tolerance_s) and self.clock_tolerance_s >= 0):
            raise ValueError(f"clock_tolerance_s must be >= 0, got {self.clock_tolerance_s}")

    def horizon_s(self) -> float:
        """Sightings further apart in time than this are never flagged, whatever their clocks say."""
        # Clock doubt only ever lengthens the time allowed, so the longest flaggable gap is the
        # slowest impossible trip: to the antipodes, or the minimum gap between unknown places.
        return max(self.min_gap_s, MAX_DISTANCE_KM / self.max_speed_kmh * 3600.0)


@dataclass(frozen=True, slots=True)
class Sighting:
    """One visit of a device: where (the store and its location, if known) and when."""

    event_id: str
    store: str
    ts: float  # radio time, Unix seconds
    detected_at: float  # the gateway's wall clock, Unix seconds
    location: GeoPoint | None = None

    def uncertainty_s(self, policy: ClonePolicy) -> float:
        """How far off this sighting's time may be: the clock tolerance, plus its clocks' disagreement."""
        return policy.clock_tolerance_s + abs(self.detected_at - self.ts)


@dataclass(frozen=True, slots=True)
class ImpossibleTravel:
    """Two sightings of one device that one device cannot explain; `earlier.ts <= later.ts`."""

    earlier: Sighting
    later: Sighting
    reason: Reason  # too_fast: both locations known; simultaneous: at least one unknown
    elapsed_s: float  # between the radio times, as the gateways reported them
    distance_km: float | None  # None when a location is unknown

    @property
    def speed_kmh(self) -> float | None:
        """The speed the reported times imply; None if unknown or the times are equal."""
        if self.distance_km is None or self.elapsed_s <= 0:
            return None
        return self.distance_km / self.elapsed_s * 3600.0


def impossible_travel(a: Sighting, b: Sighting, policy: ClonePolicy) -> ImpossibleTravel | None:
    """The two sightings as impossible travel, or None if one device could have made both."""
    if a.store == b.store:
        return None  # seen twice at one store: whatever the times, that is a shopper coming back
    earlier, later = (a, b) if (a.ts, a.event_id) <= (b.ts, b.event_id) else (b, a)
    elapsed_s = later.ts - earlier.ts
    # The longest the device may really have had, given how far off either clock may be.
    window_s = elapsed_s + earlier.uncertainty_s(policy) + later.uncertainty_s(policy)
    if earlier.location is None or later.location is None:
        if window_s < policy.min_gap_s:
            return ImpossibleTravel(earlier, later, "simultaneous", elapsed_s, None)
        return None
    km = distance_km(earlier.location, later.location)
    # Compared as a product, not a quotient: no division by a zero window, and "exactly at the
    # limit" is exact.
    if km * 3600.0 > policy.max_speed_kmh * window_s:
        return ImpossibleTravel(earlier, later, "too_fast", elapsed_s, km)
    return None


def nearest_sightings(new: Sighting, others: Iterable[Sighting]) -> list[Sighting]:
    """Of `others`, per other store, the sighting nearest in time before `new` and after it.

    Gateways upload late after an outage, so a new sighting may fall between two already recorded;
    the nearest ones at each other store are the ones that constrain travel most.
    """
    before: dict[str, Sighting] = {}
    after: dict[str, Sighting] = {}
    key = (new.ts, new.event_id)
    for other in others:
        if other.store == new.store or other.event_id == new.event_id:
            continue
        if (other.ts, other.event_id) <= key:
            best = before.get(other.store)
            if best is None or (other.ts, other.event_id) > (best.ts, best.event_id):
                before[other.store] = other
        else:
            best = after.get(other.store)
            if best is None or (other.ts, other.event_id) < (best.ts, best.event_id):
                after[other.store] = other
    chosen = [*before.values(), *after.values()]
    return sorted(chosen, key=lambda s: (s.ts, s.event_id))


def check_sighting(
    new: Sighting, others: Iterable[Sighting], policy: ClonePolicy
) -> list[ImpossibleTravel]:
    """Every impossible pair `new` makes with the nearest sightings (in time) at other stores."""
    found = []
    for other in nearest_sightings(new, others):
        suspicion = impossible_travel(new, other, policy)
        if suspicion is not None:
            found.append(suspicion)
    return found
