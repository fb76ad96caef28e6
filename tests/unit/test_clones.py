"""Cloned-tag detection, pure: distance, speed limit, clock tolerance, no location, late uploads."""

from __future__ import annotations

import math

import pytest

from cloud_bridge.core.clones import (
    MAX_DISTANCE_KM,
    ClonePolicy,
    GeoPoint,
    LocationError,
    Sighting,
    check_sighting,
    distance_km,
    impossible_travel,
    location_from,
    nearest_sightings,
)
from tests.factories import T0

LONDON = GeoPoint(51.5074, -0.1278)
MANCHESTER = GeoPoint(53.4808, -2.2426)  # about 262 km from London
PARIS = GeoPoint(48.8566, 2.3522)
NEAR_LONDON = GeoPoint(51.5080, -0.1290)  # about 100 m away: another shop in the same street
EXACT = ClonePolicy(max_speed_kmh=200.0, min_gap_s=120.0, clock_tolerance_s=0.0)


def seen(
    store: str,
    ts: float,
    location: GeoPoint | None,
    event_id: str | None = None,
    skew_s: float = 0.0,
) -> Sighting:
    """A sighting at `store`; `skew_s`: how far the gateway's wall clock is from its radio time."""
    return Sighting(event_id or f"ev-{store}-{ts:.0f}", store, ts, ts + skew_s, location)


# --- distances ------------------------------------------------------------------------------------


def test_known_distances_between_cities() -> None:
    assert distance_km(LONDON, PARIS) == pytest.approx(343.5, rel=0.01)
    assert distance_km(LONDON, MANCHESTER) == pytest.approx(262, rel=0.01)
    assert distance_km(LONDON, LONDON) == 0.0


def test_antipodes_are_half_the_circumference_apart_without_a_math_error() -> None:
    for a, b in [
        (GeoPoint(0.0, 0.0), GeoPoint(0.0, 180.0)),
        (GeoPoint(90.0, 0.0), GeoPoint(-90.0, 0.0)),
        (GeoPoint(51.5074, -0.1278), GeoPoint(-51.5074, 179.8722)),
    ]:
        assert distance_km(a, b) == pytest.approx(MAX_DISTANCE_KM, rel=1e-9)
        assert distance_km(a, b) <= MAX_DISTANCE_KM + 1e-6


@pytest.mark.parametrize(
    ("lat", "lon", "field", "message"),
    [
        (91.0, 0.0, "latitude", "between -90 and 90"),
        (-0.13, 151.5, None, None),
        (151.5, -0.13, "latitude", "swapped"),
        (0.0, 180.5, "longitude", "between -180 and 180"),
        (math.nan, 0.0, "latitude", "a number"),
        (0.0, math.inf, "longitude", "a number"),
    ],
)
def test_coordinates_are_range_checked_naming_the_field(
    lat: float, lon: float, field: str | None, message: str | None
) -> None:
    if field is None:
        assert GeoPoint(lat, lon).lon == lon
        return
    with pytest.raises(LocationError) as info:
        GeoPoint(lat, lon)
    assert info.value.field == field
    assert message is not None and message in str(info.value)


def test_a_location_is_both_coordinates_or_neither() -> None:
    assert location_from(None, None) is None
    assert location_from(51.5, -0.1) == GeoPoint(51.5, -0.1)
    with pytest.raises(LocationError, match="longitude is missing"):
        location_from(51.5, None)


# --- one pair -------------------------------------------------------------------------------------


def test_two_far_stores_minutes_apart_is_impossible_travel() -> None:
    a = seen("store-001", T0, LONDON)
    b = seen("store-002", T0 + 300, MANCHESTER)

    found = impossible_travel(b, a, EXACT)

    assert found is not None
    assert (found.earlier, found.later) == (a, b)
    assert found.reason == "too_fast"
    assert found.elapsed_s == 300
    assert found.distance_km == pytest.approx(262, rel=0.01)
    assert found.speed_kmh == pytest.approx(262 * 12, rel=0.01)


def test_far_stores_hours_apart_is_a_train_journey() -> None:
    a = seen("store-001", T0, LONDON)
    b = seen("store-002", T0 + 2 * 3600, MANCHESTER)
    assert impossible_travel(a, b, EXACT) is None


def test_the_same_store_is_never_flagged_even_at_once() -> None:
    a = seen("store-001", T0, LONDON, "ev-a")
    b = seen("store-001", T0, LONDON, "ev-b")
    assert impossible_travel(a, b, EXACT) is None
    assert impossible_travel(seen("store-001", T0, None, "ev-c"), b, EXACT) is None


def test_exactly_at_the_speed_limit_is_allowed_and_a_hair_over_is_not() -> None:
    a = seen("store-001", T0, LONDON)
    b = seen("store-002", T0 + 3600, MANCHESTER)  # one hour
    km = distance_km(LONDON, MANCHESTER)

    at_limit = ClonePolicy(max_speed_kmh=km, clock_tolerance_s=0.0)
    just_under = ClonePolicy(max_speed_kmh=math.nextafter(km, 0.0), clock_tolerance_s=0.0)

    assert impossible_travel(a, b, at_limit) is None
    assert impossible_travel(a, b, just_under) is not None


def test_clock_tolerance_gives_the_doubt_to_the_shopper() -> None:
    # Seen 15 s sooner than the trip takes at 200 km/h, by the gateways' clocks: 10 s of doubt on
    # each clock covers it.
    trip_s = distance_km(LONDON, MANCHESTER) / 200.0 * 3600.0
    a = seen("store-001", T0, LONDON)
    b = seen("store-002", T0 + trip_s - 15, MANCHESTER)

    assert impossible_travel(a, b, EXACT) is not None
    assert impossible_travel(a, b, ClonePolicy(clock_tolerance_s=10.0)) is None


def test_a_gateway_whose_wall_clock_disagrees_with_its_radio_time_is_trusted_less() -> None:
    # Minutes apart by radio time, but the second gateway's two clocks disagree by two hours:
    # its radio time cannot be trusted to say the device travelled too fast.
    a = seen("store-001", T0, LONDON)
    b = seen("store-002", T0 + 300, MANCHESTER, skew_s=-7200)
    assert impossible_travel(a, b, EXACT) is None


def test_neighbouring_shops_at_once_are_not_flagged() -> None:
    a = seen("store-001", T0, LONDON)
    b = seen("store-002", T0 + 5, NEAR_LONDON)
    assert impossible_travel(a, b, ClonePolicy()) is None


def test_without_a_location_only_near_simultaneous_sightings_are_flagged() -> None:
    policy = ClonePolicy(min_gap_s=120.0, clock_tolerance_s=10.0)  # window = elapsed + 20 s
    a = seen("store-001", T0, LONDON)

    close = impossible_travel(a, seen("store-002", T0 + 99, None), policy)
    at_gap = impossible_travel(a, seen("store-002", T0 + 100, None), policy)

    assert close is not None and close.reason == "simultaneous"
    assert close.distance_km is None and close.speed_kmh is None
    assert at_gap is None
    # Neither location known: the same rule.
    assert impossible_travel(seen("x-1", T0, None), seen("x-2", T0 + 30, None), policy) is not None


def test_sightings_at_the_same_instant_at_far_stores_have_no_speed_but_are_flagged() -> None:
    found = impossible_travel(seen("store-001", T0, LONDON), seen("store-002", T0, PARIS), EXACT)
    assert found is not None and found.speed_kmh is None and found.elapsed_s == 0


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_speed_kmh": 0.0}, "max_speed_kmh"),
        ({"min_gap_s": -1.0}, "min_gap_s"),
        ({"clock_tolerance_s": math.nan}, "clock_tolerance_s"),
    ],
)
def test_a_nonsense_policy_is_refused(kwargs: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ClonePolicy(**kwargs)


# --- a new sighting among recorded ones ---------------------------------------------------------


def test_a_late_upload_is_compared_with_the_sightings_nearest_in_time() -> None:
    # Recorded: Manchester over several days. London, uploaded late by a gateway that was offline,
    # falls between them, ten minutes before one of them: the nearest ones in time are compared.
    day = 86400.0
    recorded = [
        seen("store-002", T0 - 2 * day, MANCHESTER),
        seen("store-002", T0 - day, MANCHESTER),
        seen("store-002", T0 + 600, MANCHESTER),
        seen("store-002", T0 + day, MANCHESTER),
        seen("store-001", T0 - 60, LONDON),  # the same store as the new one: irrelevant
    ]
    late = seen("store-001", T0, LONDON)

    assert nearest_sightings(late, recorded) == [recorded[1], recorded[2]]
    (found,) = check_sighting(late, recorded, ClonePolicy())
    assert (found.earlier, found.later) == (late, recorded[2])


def test_nearest_before_and_after_at_each_other_store() -> None:
    recorded = [
        seen("store-002", T0 - 900, MANCHESTER),
        seen("store-002", T0 - 60, MANCHESTER),
        seen("store-003", T0 + 120, PARIS),
        seen("store-003", T0 + 7200, PARIS),
        seen("store-002", T0 + 30, MANCHESTER),
    ]
    new = seen("store-001", T0, LONDON)

    assert nearest_sightings(new, recorded) == [recorded[1], recorded[4], recorded[2]]
    found = check_sighting(new, recorded, ClonePolicy())
    assert [(f.earlier.store, f.later.store) for f in found] == [
        ("store-002", "store-001"),
        ("store-001", "store-002"),
        ("store-001", "store-003"),
    ]


def test_the_new_sighting_itself_among_the_recorded_ones_is_ignored() -> None:
    new = seen("store-001", T0, LONDON)
    assert check_sighting(new, [new], EXACT) == []


def test_the_horizon_covers_the_slowest_impossible_trip_and_no_more() -> None:
    policy = ClonePolicy(max_speed_kmh=200.0, clock_tolerance_s=0.0)
    horizon = policy.horizon_s()
    a = seen("store-001", T0, GeoPoint(0.0, 0.0))
    inside = seen("store-002", T0 + horizon - 1, GeoPoint(0.0, 180.0))
    beyond = seen("store-002", T0 + horizon + 1, GeoPoint(0.0, 180.0))
    assert impossible_travel(a, inside, policy) is not None
    assert impossible_travel(a, beyond, policy) is None
    assert ClonePolicy(max_speed_kmh=1e9, min_gap_s=120.0).horizon_s() == 120.0
