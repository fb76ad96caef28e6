"""The demo's members' stated preferences, and how their apps judge the offers they receive."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_bridge.seed import seed_preferences
from edge.adapters.mqtt import Message, MqttSettings
from edge.core import wire
from edge.demo.preferences import DAY_S, StatedPreferences
from edge.demo.shopper_apps import ShopperApps

T0 = 1_790_000_000.0
MEMBERS = [f"m-{i:05d}" for i in range(1000)]


def make_offer(**overrides: Any) -> wire.ShopperOffer:
    fields: dict[str, Any] = {
        "offer_id": "o-1",
        "campaign": "c-1",
        "title": "An offer",
        "body": "For you",
        "store": "store-001",
        "issued_at": T0,
        "detected_at": T0,
        "promotion_type": "discount",
        "interests": ("beauty",),
    }
    fields.update(overrides)
    return wire.ShopperOffer(**fields)


def test_each_app_states_exactly_what_the_seed_gave_its_member() -> None:
    bodies = seed_preferences(MEMBERS, seed=7)
    assert bodies
    for member, body in bodies.items():
        prefs = StatedPreferences.from_json(member, body)
        assert prefs.member == member
        assert prefs.to_json() == body
        if prefs.no_offers:
            assert prefs.per_day == prefs.per_week == 0


def test_the_api_body_follows_the_contract() -> None:
    prefs = StatedPreferences("m-1", ("beauty", "home"), ("discount", "event"), 1, 3)
    assert prefs.to_json() == {
        "interests": ["beauty", "home"],
        "promotion_types": ["discount", "event"],
        "max_offers_per_day": 1,
        "max_offers_per_week": 3,
    }
    none = StatedPreferences("m-2", per_day=0, per_week=0, no_offers=True)
    assert none.to_json() == {"interests": [], "promotion_types": [], "no_offers": True}


@pytest.mark.parametrize(
    ("prefs", "offer", "against"),
    [
        (StatedPreferences("m"), make_offer(), False),  # everything
        (StatedPreferences("m", interests=("beauty", "home")), make_offer(), False),
        (StatedPreferences("m", interests=("kids",)), make_offer(), True),
        (StatedPreferences("m", interests=("kids",)), make_offer(interests=()), False),  # general
        (StatedPreferences("m", promotion_types=("discount",)), make_offer(), False),
        (StatedPreferences("m", promotion_types=("event",)), make_offer(), True),
        # An offer of no declared type suits only members who take any type.
        (StatedPreferences("m", promotion_types=("event",)), make_offer(promotion_type=None), True),
        (StatedPreferences("m"), make_offer(promotion_type=None), False),
        (StatedPreferences("m", no_offers=True, per_day=0, per_week=0), make_offer(), True),
        (
            StatedPreferences("m", ("beauty",), ("event",)),
            make_offer(interests=("beauty",), promotion_type="discount"),
            True,
        ),
    ],
)
def test_an_offer_is_judged_by_what_the_member_asked_for(
    prefs: StatedPreferences, offer: wire.ShopperOffer, against: bool
) -> None:
    assert prefs.rules_out(offer) is against


@pytest.mark.parametrize(
    ("per_day", "per_week", "hours", "over"),
    [
        (1, 7, [0, 25, 50], 0),  # one a day
        (1, 7, [0, 2], 1),  # two within a day
        (1, 7, [0, 2, 4], 2),
        (2, 7, [0, 2, 4], 1),
        (1, 2, [0, 30, 60], 1),  # the third within 7 days
        (1, 2, [0, 30, 7 * 24 + 1], 0),  # the first is more than 7 days old by the third
        (24, 100, [0, 0.1, 0.2], 0),
    ],
)
def test_offers_beyond_the_stated_frequency_are_counted(
    per_day: int, per_week: int, hours: list[float], over: int
) -> None:
    prefs = StatedPreferences("m", per_day=per_day, per_week=per_week)
    offers = [make_offer(offer_id=f"o-{i}", detected_at=T0 + h * 3600) for i, h in enumerate(hours)]
    assert prefs.over_cap(offers) == over
    assert prefs.over_cap(reversed(offers)) == over  # by when they were decided, not received


def delivered(apps: ShopperApps, shopper: str, offer: wire.ShopperOffer) -> None:
    """The broker delivers `offer` to `shopper`'s app, as bytes on its topic."""
    topic = wire.shopper_offer_topic("demo-chain", shopper)
    apps._on_message(shopper, Message(topic, wire.encode(offer), False, 1))


def test_each_app_counts_what_breaks_its_own_members_preferences() -> None:
    preferences = {
        "tok-a": StatedPreferences("m-a", interests=("kids",), per_day=1, per_week=3),
        "tok-b": StatedPreferences("m-b", no_offers=True, per_day=0, per_week=0),
        "tok-c": StatedPreferences("m-c", promotion_types=("discount",), per_day=1, per_week=7),
    }
    apps = ShopperApps(
        lambda _: MqttSettings(),
        "demo-chain",
        ["tok-a", "tok-b", "tok-c", "tok-d"],
        preferences=preferences,
    )
    # tok-a: a kids offer, another within the day (over the cap), a beauty one (against).
    delivered(apps, "tok-a", make_offer(offer_id="a1", interests=("kids",)))
    delivered(apps, "tok-a", make_offer(offer_id="a2", interests=("kids",), detected_at=T0 + 60))
    delivered(apps, "tok-a", make_offer(offer_id="a3", detected_at=T0 + 2 * DAY_S))
    # tok-b asked for none at all.
    delivered(apps, "tok-b", make_offer(offer_id="b1"))
    # tok-c: a discount, then the same offer again (a resend: shown once, counted once).
    delivered(apps, "tok-c", make_offer(offer_id="c1"))
    delivered(apps, "tok-c", make_offer(offer_id="c1"))
    # tok-d stated nothing: anything goes.
    delivered(apps, "tok-d", make_offer(offer_id="d1", promotion_type=None))
    delivered(apps, "tok-d", make_offer(offer_id="d2", detected_at=T0 + 1))
    assert len(apps.received) == 7 and apps.duplicates == 1
    assert apps.offers_against_preferences() == 2  # a3, b1
    assert apps.offers_over_frequency_cap() == 1  # a2 (a3 is two days later; b1 counted above)


def test_apps_without_preferences_count_nothing() -> None:
    apps = ShopperApps(lambda _: MqttSettings(), "demo-chain", ["tok-a"])
    delivered(apps, "tok-a", make_offer(offer_id="a1"))
    delivered(apps, "tok-a", make_offer(offer_id="a2"))
    assert apps.offers_against_preferences() == apps.offers_over_frequency_cap() == 0
