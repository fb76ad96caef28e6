"""The simulated iPhones: woken by the store's iBeacon region, they check in instead of advertising."""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from dataclasses import replace

import pytest

from edge.core.advert import RawAdvert
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.core.wire import RosterDevice, Visit
from edge.sim import EntranceConfig, SimDevice, StoreEntrance, make_members
from edge.sim import entrance as entrance_module
from edge.sim.entrance import CheckinAttempt, IosEvent

MEMBERS = make_members(1500, seed=11)


@pytest.fixture(scope="module")
def entrance() -> StoreEntrance:
    """20 minutes, arrivals in the first 12: most shoppers finish their visit inside the run."""
    return StoreEntrance(
        EntranceConfig(seed=5, duration_s=1200.0, arrivals_s=720.0, passers_per_min=30.0), MEMBERS
    )


def by_device(entrance: StoreEntrance) -> dict[str, list[CheckinAttempt]]:
    attempts: dict[str, list[CheckinAttempt]] = defaultdict(list)
    for attempt in entrance.checkin_attempts:
        attempts[attempt.device.ref].append(attempt)
    return attempts


def events_of(entrance: StoreEntrance) -> dict[str, list[IosEvent]]:
    events: dict[str, list[IosEvent]] = defaultdict(list)
    for event in entrance.ios_events:
        events[event.device].append(event)
    return events


def test_the_same_seed_gives_the_same_iphones() -> None:
    config = EntranceConfig(seed=9, duration_s=300.0)
    first, second = StoreEntrance(config, MEMBERS), StoreEntrance(config, MEMBERS)
    assert first.checkin_attempts == second.checkin_attempts
    assert first.ios_events == second.ios_events
    assert first.truth == second.truth
    assert list(first.stream()) == list(second.stream())
    other = StoreEntrance(replace(config, seed=10), MEMBERS)
    assert other.checkin_attempts != first.checkin_attempts


def test_about_half_of_the_app_phones_are_iphones_and_tags_stay_tags(
    entrance: StoreEntrance,
) -> None:
    people = [p for p in entrance.truth.people if p.device is not None]
    counts = Counter(p.platform for p in people)
    phones = counts["ios"] + counts["android"]
    assert phones > 150
    assert 0.4 < counts["ios"] / phones < 0.6
    assert all((p.platform == "tag") == (p.device.kind == "tag") for p in people if p.device)
    assert all(p.platform is None for p in entrance.truth.people if p.device is None)
    assert entrance.truth.platforms() == {p.device.member: p.platform for p in people if p.device}


def test_a_device_may_fix_its_platform_and_the_share_can_be_zero() -> None:
    iphones = [replace(m, platform="ios") if m.kind == "app" else m for m in MEMBERS]
    forced = StoreEntrance(EntranceConfig(seed=3, duration_s=300.0), iphones)
    platforms = {p.platform for p in forced.truth.people if p.device}
    assert platforms == {"ios", "tag"}
    android = StoreEntrance(EntranceConfig(seed=3, duration_s=300.0, ios_share=0.0), MEMBERS)
    assert {p.platform for p in android.truth.people if p.device} == {"android", "tag"}
    assert android.checkin_attempts == ()
    with pytest.raises(ValueError, match="cannot be platform"):
        SimDevice("d-1", "m-1", bytes(16), 10, "tag", platform="ios")


def test_the_stream_interleaves_check_ins_with_adverts_in_time_order(
    entrance: StoreEntrance,
) -> None:
    items = list(entrance.stream())
    times = [i.t_s for i in items]
    assert times == sorted(times)
    attempts = [i for i in items if isinstance(i, CheckinAttempt)]
    adverts = [i for i in items if isinstance(i, RawAdvert)]
    assert tuple(attempts) == entrance.checkin_attempts and len(attempts) > 1000
    assert adverts == list(entrance.adverts())
    truth = entrance.truth
    assert all(truth.start_s <= a.t_s <= truth.end_s for a in attempts)
    assert {a.device.ref for a in attempts} <= {
        p.device.ref for p in truth.people if p.device and p.platform == "ios"
    }


def test_every_iphone_that_walks_in_checks_in_from_about_the_door(
    entrance: StoreEntrance,
) -> None:
    truth = entrance.truth
    attempts = by_device(entrance)
    shoppers = [
        p
        for p in truth.people
        if p.role == "entering" and p.platform == "ios" and p.door_time_s < truth.end_s - 60
    ]
    assert len(shoppers) > 20
    first_write_after_door = []
    for person in shoppers:
        assert person.device is not None
        writes = attempts[person.device.ref]
        assert writes, f"{person.id} walked in with an iPhone that never checked in"
        first_write_after_door.append(writes[0].t_s - person.door_time_s)
        # Connected, about once a second until the shopper leaves.
        assert len(writes) > 0.5 * (
            min(person.exit_time_s or truth.end_s, truth.end_s) - writes[0].t_s
        )
    # The region is entered ~10 m out on the street: most apps write before or just after the door.
    assert statistics.median(first_write_after_door) < 5.0


def test_wake_up_delays_are_mostly_seconds_with_a_tail(entrance: StoreEntrance) -> None:
    delays = [e.delay_s for e in entrance.ios_events if e.kind == "woken"]
    assert len(delays) > 100
    assert all(1.0 <= d <= 20.0 for d in delays)
    quick = sum(d <= 5.0 for d in delays) / len(delays)
    assert 0.75 < quick < 0.95  # most within 1-5 s
    assert max(delays) > 10.0  # and a tail


def test_connections_fail_sometimes_and_are_retried(entrance: StoreEntrance) -> None:
    iphones = [replace(m, platform="ios") if m.kind == "app" else m for m in MEMBERS]
    many = StoreEntrance(EntranceConfig(seed=6, duration_s=600.0, passers_per_min=40.0), iphones)
    # The first connection after each wake-up: the app's own ~10 % of failed connections, and a
    # few more where iOS woke the app far out on the street, the link still too weak.
    first = []
    for events in events_of(many).values():
        kinds = [e.kind for e in events]
        first += [kinds[i + 1] for i, k in enumerate(kinds[:-1]) if k == "woken"]
    outcome = Counter(first)
    assert outcome["connected"] + outcome["connect_failed"] == len(first) > 150
    assert 0.05 < outcome["connect_failed"] / len(first) < 0.35
    # A failure is followed by another attempt (up to three retries).
    for events in events_of(many).values():
        kinds = [e.kind for e in events]
        for i, kind in enumerate(kinds[:-1]):
            if kind == "connect_failed":
                assert kinds[i + 1] in ("connect_failed", "connected", "region_exit")


def test_a_few_writes_carry_an_expired_challenge(entrance: StoreEntrance) -> None:
    attempts = entrance.checkin_attempts
    stale = sum(a.stale_challenge for a in attempts) / len(attempts)
    assert 0.01 < stale < 0.06


def test_check_ins_only_while_connected_in_the_region_and_in_link_range(
    entrance: StoreEntrance,
) -> None:
    config = entrance.config
    attempts = by_device(entrance)
    for ref, events in events_of(entrance).items():
        spans = []
        entry = None
        for event in events:
            if event.kind == "region_entry":
                entry = event.t_s
            elif event.kind == "region_exit":
                assert entry is not None
                spans.append((entry, event.t_s))
                entry = None
        assert entry is None  # every entry has its exit
        for attempt in attempts.get(ref, ()):
            assert any(a <= attempt.t_s <= b for a, b in spans)
            assert attempt.rssi_dbm >= config.link_lost_dbm
    assert all(
        c.startswith("/org/bluez/hci0/dev_") for c in {a.central for a in entrance.checkin_attempts}
    )


def away_and_back(away_s: float) -> tuple[tuple[float, float, float, float, float, float], ...]:
    """Stand at the door, hurry 25 m down the street, stay `away_s`, hurry back to the door.

    Out of the region's range (beyond ~11 m) for about `away_s` + 11 s."""
    t0 = 1_790_000_000.0
    knots = [(t0, 0.0, 1.0), (t0 + 60.0, 0.0, 1.0), (t0 + 70.0, 25.0, -3.0)]
    knots += [(knots[-1][0] + away_s, 25.0, -3.0)]
    knots += [(knots[-1][0] + 10.0, 0.0, 1.0), (knots[-1][0] + 100.0, 0.0, 1.0)]
    return entrance_module._segments(knots)


@pytest.mark.parametrize(("away_s", "entries"), [(5.0, 1), (120.0, 2)])
def test_coming_back_re_enters_the_region_only_after_ios_saw_it_exited(
    away_s: float, entries: int
) -> None:
    config = EntranceConfig(seed=1, rssi_sigma_db=0.0)
    planner = entrance_module._IphonePlanner(config, random.Random(1))
    phone = replace(MEMBERS[0], kind="app", platform="ios")
    planner.plan(phone, away_and_back(away_s), body_db=0.0)
    kinds = [e.kind for e in planner.events]
    assert kinds.count("region_entry") == kinds.count("region_exit") == entries
    assert kinds.count("woken") == entries
    # Back at the door the app checks in again: after a new wake-up, or (still in the region)
    # through the connect it left pending when the link was lost.
    assert kinds.count("connected") >= 2 and len(planner.attempts) > 100


def test_walk_past_iphones_check_in_briefly(entrance: StoreEntrance) -> None:
    truth = entrance.truth
    attempts = by_device(entrance)
    passers = [
        p
        for p in truth.people
        if p.role == "passing"
        and p.platform == "ios"
        and truth.start_s + 60 < p.door_time_s < truth.end_s - 60
    ]
    assert len(passers) > 30
    spans = [w[-1].t_s - w[0].t_s for p in passers if p.device and (w := attempts[p.device.ref])]
    assert len(spans) > 0.7 * len(passers)  # iOS wakes them too
    assert statistics.median(spans) < 30.0
    assert max(spans) < 90.0


def test_the_entry_rule_recognises_iphones_and_ignores_iphones_walking_past(
    entrance: StoreEntrance,
) -> None:
    """The gateway's pipeline fed the stream (check-ins as the verifier would pass them on)."""
    truth = entrance.truth
    roster = {
        m.ref: RosterDevice(m.ref, m.member, "gold", m.identity_key, m.exponent, m.kind)
        for m in MEMBERS
    }
    ids = iter(range(10**9))
    pipeline = Pipeline(
        EidResolver(list(roster.values()), truth.start_s),
        PresenceTracker(PresenceConfig()),
        OfferEngine(None),
        lambda: f"e{next(ids)}",
    )
    recognised: set[str] = set()
    for item in entrance.stream():
        if isinstance(item, CheckinAttempt):
            events = pipeline.check_in(roster[item.device.ref], item.t_s, item.rssi_dbm, 0.0)
        else:
            events = pipeline.feed(item, 0.0)
        recognised |= {e.member for e in events if isinstance(e, Visit)}
    assert not recognised & truth.passing_members()
    rates = {}
    for platform in ("android", "ios"):
        entered = truth.entered_members(until_s=truth.end_s - 60, platform=platform)
        assert len(entered) > 20
        rates[platform] = len(entered & recognised) / len(entered)
    assert rates["ios"] >= 0.9 * rates["android"], rates


def test_arrivals_can_stop_while_the_run_goes_on() -> None:
    config = EntranceConfig(seed=4, duration_s=900.0, arrivals_s=300.0)
    truth = StoreEntrance(config, MEMBERS).truth
    entering = [p for p in truth.people if p.role == "entering"]
    assert entering and all(p.door_time_s <= truth.start_s + 300.0 for p in entering)
    assert any(p.role == "passing" and p.door_time_s > truth.start_s + 600.0 for p in truth.people)
    stays = truth.stays_s()
    assert set(stays) == {p.device.member for p in entering if p.device}
    assert all(s > 0 for s in stays.values())
    with pytest.raises(ValueError, match="arrivals_s"):
        EntranceConfig(arrivals_s=-1.0)
