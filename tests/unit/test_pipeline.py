"""The whole decision path on bytes and an injected clock."""

from __future__ import annotations

import itertools
import logging

import pytest

from edge.core import frames, wire
from edge.core.advert import RawAdvert
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from tests.factories import T0, eid_advert, make_campaigns, make_device


def make_pipeline(devices: list[wire.RosterDevice]) -> Pipeline:
    ids = (f"ev{n}" for n in itertools.count())
    return Pipeline(
        EidResolver(devices, T0),
        PresenceTracker(PresenceConfig()),
        OfferEngine(make_campaigns()),
        lambda: next(ids),
    )


def walk_in(device: wire.RosterDevice, t0: float) -> list[RawAdvert]:
    rssi = [-85, -80, -75, -70, -65, -62, -60] + [-60] * 100
    return [eid_advert(device, t0 + i * 0.25, r) for i, r in enumerate(rssi)]


def test_member_walking_in_yields_a_visit_and_an_offer() -> None:
    member = make_device(tier="gold")
    pipeline = make_pipeline([member])
    events = pipeline.feed_many(walk_in(member, T0), wall_s=5.0)
    assert [type(e) for e in events] == [wire.Visit, wire.OfferTrigger]
    visit, offer = events
    assert isinstance(visit, wire.Visit) and isinstance(offer, wire.OfferTrigger)
    assert (visit.member, visit.device, visit.detected_at) == (member.member, member.ref, 5.0)
    assert offer.visit_id == visit.event_id and offer.campaign == "gold-points"
    assert pipeline.counters.entries == 1 and pipeline.counters.offers == 1


def test_second_entry_within_cooldown_gets_no_offer() -> None:
    member = make_device(tier="gold")
    pipeline = make_pipeline([member])
    pipeline.feed_many(walk_in(member, T0), 1.0)
    later = T0 + 400  # the visit timed out: a new visit, but still within the member cooldown
    events = pipeline.feed_many(walk_in(member, later), 2.0)
    # The first visit's end comes first, then the new visit, without an offer.
    assert [type(e) for e in events] == [wire.VisitEnd, wire.Visit]


def test_an_entry_without_offer_says_why_in_the_counters() -> None:
    """IT reads why members got nothing: what they asked for, their frequency, a cooldown."""
    campaigns = make_campaigns(
        campaigns=(
            wire.CampaignSpec("gold-points", "x", "x", ("gold",), 86400.0, 30, "points_multiplier"),
        ),
        promotion_terms=("discount", "points_multiplier"),
    )
    picky = make_device(prefs=wire.MemberPrefs(promotions=0b01))  # discounts only
    quiet = make_device(prefs=wire.MemberPrefs(per_day=0, per_week=0))  # no offers
    once = make_device(prefs=wire.MemberPrefs(per_day=1))
    ids = (f"ev{n}" for n in itertools.count())
    pipeline = Pipeline(
        EidResolver([picky, quiet, once], T0),
        PresenceTracker(PresenceConfig()),
        OfferEngine(campaigns),
        lambda: next(ids),
    )
    for device, expected in ((picky, [wire.Visit]), (quiet, [wire.Visit])):
        assert [type(e) for e in pipeline.feed_many(walk_in(device, T0), 1.0)] == expected
    events = pipeline.feed_many(walk_in(once, T0), 1.0)
    assert [type(e) for e in events] == [wire.Visit, wire.OfferTrigger]
    events = pipeline.feed_many(walk_in(once, T0 + 7200), 2.0)  # back after the visit timed out
    ended = [e for e in events if isinstance(e, wire.VisitEnd)]  # the first visits' ends
    assert len(ended) == 3
    assert [type(e) for e in events if e not in ended] == [wire.Visit]
    c = pipeline.counters
    assert (c.entries, c.offers) == (4, 1)
    assert (c.offers_withheld_prefs, c.offers_withheld_frequency) == (1, 2)
    assert c.offers_withheld_cooldown == 0


def test_unknown_and_malformed_adverts_are_counted_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger = make_device()  # not enrolled
    pipeline = make_pipeline([make_device()])
    adverts = [
        *walk_in(stranger, T0),
        RawAdvert(T0 + 20, "11:22:33:44:55:66", -40, b"\x05\x16\xaa\xfe"),
        RawAdvert(T0 + 20, "11:22:33:44:55:67", -40, frames.ibeacon_advert(bytes(16), 1, 2)),
    ]
    assert pipeline.feed_many(adverts, 1.0) == []
    c = pipeline.counters
    assert (c.unresolved, c.malformed, c.ignored, c.resolved) == (len(adverts) - 2, 1, 1, 0)
    assert len(pipeline.presence) == 0  # no track was opened for a stranger
    assert caplog.records == []  # nothing about them is logged


def test_windows_follow_radio_time() -> None:
    member = make_device(exponent=8)  # 256 s windows
    pipeline = make_pipeline([member])
    # An hour later the resolver must have slid its windows to keep recognising the member.
    events = pipeline.feed_many(walk_in(member, T0 + 3600), 1.0)
    assert len(events) == 2
