"""Campaign definitions, changes and status (cloud_bridge/core/campaigns.py): every refusal names
its field; archiving is final."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from cloud_bridge.core.campaigns import (
    MAX_BODY_CHARS,
    MAX_TITLE_CHARS,
    Campaign,
    CampaignChange,
    CampaignDefinition,
    InvalidCampaign,
    changed,
    check_campaign,
    next_status,
)

INTERESTS = ("beauty", "home")
PROMOTIONS = ("discount", "event")
GOOD = CampaignDefinition(
    id="spring-sale",
    title="Spring sale",
    body="20% off home",
    tiers=("gold", "silver"),
    cooldown_s=86400.0,
    priority=3,
    validity_s=3600.0,
    promotion_type="discount",
    interests=("home",),
    stores=("store-001",),
)


def test_a_good_definition_passes_unchanged() -> None:
    assert check_campaign(GOOD, INTERESTS, PROMOTIONS) is GOOD
    general = dataclasses.replace(GOOD, promotion_type=None, interests=(), stores=(), cooldown_s=0)
    assert check_campaign(general, INTERESTS, PROMOTIONS) is general


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "Spring Sale"}, "id"),
        ({"id": ""}, "id"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "t" * (MAX_TITLE_CHARS + 1)}, "title"),
        ({"body": "b" * (MAX_BODY_CHARS + 1)}, "body"),
        ({"tiers": ()}, "tiers"),
        ({"tiers": ("gold", "Gold!")}, "tiers[1]"),
        ({"tiers": ("gold", "gold")}, "tiers[1]"),
        ({"promotion_type": "bogof"}, "promotion_type"),
        ({"promotion_type": "Discount"}, "promotion_type"),
        ({"interests": ("home", "garden")}, "interests[1]"),
        ({"interests": ("home", "home")}, "interests[1]"),
        ({"cooldown_s": -1.0}, "cooldown_s"),
        ({"cooldown_s": math.nan}, "cooldown_s"),
        ({"cooldown_s": 1e12}, "cooldown_s"),
        ({"validity_s": 0.0}, "validity_s"),
        ({"validity_s": math.inf}, "validity_s"),
        ({"priority": 2**31}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"stores": ("store-001", "Store 2")}, "stores[1]"),
        ({"stores": ("store-001", "store-001")}, "stores[1]"),
    ],
)
def test_a_bad_definition_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidCampaign) as caught:
        check_campaign(dataclasses.replace(GOOD, **changes), INTERESTS, PROMOTIONS)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_terms_are_checked_against_the_vocabulary_given() -> None:
    with pytest.raises(InvalidCampaign) as caught:
        check_campaign(GOOD, ("beauty",), PROMOTIONS)
    assert caught.value.field == "interests[0]" and "beauty" in caught.value.problem
    with pytest.raises(InvalidCampaign) as caught:
        check_campaign(GOOD, INTERESTS, ())
    assert caught.value.field == "promotion_type"


@pytest.mark.parametrize(
    ("status", "action", "after"),
    [
        ("active", "pause", "paused"),
        ("paused", "pause", "paused"),
        ("paused", "resume", "active"),
        ("active", "resume", "active"),
        ("active", "archive", "archived"),
        ("paused", "archive", "archived"),
    ],
)
def test_status_moves(status: Any, action: Any, after: str) -> None:
    assert next_status(Campaign(GOOD, status, None), action) == after


@pytest.mark.parametrize("action", ["pause", "resume", "archive"])
def test_archiving_is_final(action: Any) -> None:
    with pytest.raises(InvalidCampaign) as caught:
        next_status(Campaign(GOOD, "archived", 1.0), action)
    assert caught.value.field == "status"
    with pytest.raises(InvalidCampaign) as caught:
        changed(Campaign(GOOD, "archived", 1.0), CampaignChange(title="new"))
    assert caught.value.field == "status"


def test_a_change_replaces_only_what_it_names() -> None:
    current = Campaign(GOOD, "paused", 1.0)
    assert changed(current, CampaignChange(title="Summer sale", priority=0)) == (
        dataclasses.replace(GOOD, title="Summer sale", priority=0)
    )
    cleared = changed(current, CampaignChange(promotion_type="", interests=(), stores=()))
    assert (cleared.promotion_type, cleared.interests, cleared.stores) == (None, (), ())
    assert cleared.title == GOOD.title and cleared.tiers == GOOD.tiers


def test_an_empty_change_is_refused() -> None:
    with pytest.raises(InvalidCampaign) as caught:
        changed(Campaign(GOOD, "active", None), CampaignChange())
    assert caught.value.field == "update"
