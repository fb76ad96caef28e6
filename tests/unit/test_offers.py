"""Campaign rules: tiers, priority, per-campaign and per-member cooldowns."""

from __future__ import annotations

from edge.core import wire
from edge.core.offers import OfferEngine, OfferHistory
from tests.factories import make_campaigns


def test_highest_priority_campaign_for_the_tier_wins() -> None:
    engine = OfferEngine(make_campaigns())
    gold = engine.decide("m-1", "gold", 0.0)
    bronze = engine.decide("m-2", "bronze", 0.0)
    assert gold is not None and gold.campaign.id == "gold-points"
    assert bronze is not None and bronze.campaign.id == "bakery"
    assert engine.decide("m-3", "platinum", 0.0) is None


def test_member_cooldown_blocks_any_second_offer() -> None:
    engine = OfferEngine(make_campaigns(member_cooldown_s=3600.0))
    assert engine.decide("m-1", "gold", 0.0) is not None
    assert engine.decide("m-1", "gold", 3599.0) is None
    # After the member cooldown the next campaign not in its own cooldown is offered.
    second = engine.decide("m-1", "gold", 3600.0)
    assert second is not None and second.campaign.id == "bakery"


def test_campaign_cooldown_skips_to_the_next_campaign_then_none() -> None:
    engine = OfferEngine(make_campaigns(member_cooldown_s=0.0))
    picks = [engine.decide("m-1", "gold", t) for t in (0.0, 10.0, 20.0)]
    assert [p.campaign.id if p else None for p in picks] == ["gold-points", "bakery", None]
    again = engine.decide("m-1", "gold", 86400.0)
    assert again is not None and again.campaign.id == "gold-points"


def test_history_survives_a_campaign_update() -> None:
    history = OfferHistory()
    engine = OfferEngine(make_campaigns(), history)
    engine.decide("m-1", "gold", 0.0)
    engine.replace(make_campaigns(version=2))
    assert engine.version == 2
    assert engine.decide("m-1", "gold", 60.0) is None


def test_no_campaigns_no_offer() -> None:
    assert OfferEngine(None).decide("m-1", "gold", 0.0) is None
    empty = wire.CampaignSync("store-001", 1, 0.0, ())
    assert OfferEngine(empty).decide("m-1", "gold", 0.0) is None


def test_prune_forgets_only_expired_history() -> None:
    history = OfferHistory()
    history.record("m-1", "a", 0.0)
    history.record("m-2", "a", 1000.0)
    history.prune(now_s=1500.0, keep_s=600.0)
    assert set(history.last_any) == {"m-2"}
