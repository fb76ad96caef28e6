"""The bridge's admission rules (cloud_bridge/core/admission.py), driven by tables of cases."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cloud_bridge.core.admission import (
    MAX_VISIT_S,
    CampaignFacts,
    ForgeryReason,
    GatewayRefusal,
    MemberFacts,
    OfferFacts,
    OfferRefusal,
    QuarantineReason,
    TimePolicy,
    Visitor,
    check_gateway,
    check_offer,
    check_times,
    check_visit_end,
    check_visit_end_owner,
    offer_expires_at,
)
from edge.core import wire

CHAIN = "acme"
REGISTERED = {("store-001", "door-1"), ("store-001", "door-2"), ("store-002", "door-9")}


@pytest.mark.parametrize(
    ("chain", "store", "gateway", "expected"),
    [
        (CHAIN, "store-001", "door-1", None),
        (CHAIN, "store-002", "door-9", None),
        (CHAIN, "store-001", "door-3", GatewayRefusal.UNREGISTERED),
        (CHAIN, "store-003", "door-7", GatewayRefusal.UNREGISTERED),
        (CHAIN, "store-002", "door-1", GatewayRefusal.WRONG_STORE),
        (CHAIN, "store-001", "door-9", GatewayRefusal.WRONG_STORE),
        ("other", "store-001", "door-1", GatewayRefusal.OTHER_CHAIN),
    ],
)
def test_only_a_gateway_registered_for_the_topics_store_is_believed(
    chain: str, store: str, gateway: str, expected: GatewayRefusal | None
) -> None:
    address = wire.GatewayAddress(chain, store, gateway)
    assert check_gateway(address, CHAIN, REGISTERED) == expected


def test_no_gateway_is_believed_before_any_is_registered() -> None:
    address = wire.GatewayAddress(CHAIN, "store-001", "door-1")
    assert check_gateway(address, CHAIN, set()) == GatewayRefusal.UNREGISTERED


NOW = 1_795_000_000.0
POLICY = TimePolicy(max_future_s=300.0, max_age_s=30 * 86400.0)


@pytest.mark.parametrize(
    ("ts", "detected_at", "expected"),
    [
        (NOW, NOW, None),
        (NOW - 3600, NOW - 3599, None),  # an hour's backlog
        (NOW + 299, NOW + 299, None),  # a gateway clock a little ahead
        (NOW + 300, NOW, None),  # the edge itself is tolerated
        (NOW - 30 * 86400, NOW, None),
        (NOW + 301, NOW, QuarantineReason.TS_FUTURE),
        (NOW + 3 * 86400, NOW + 3 * 86400, QuarantineReason.TS_FUTURE),  # days ahead
        (NOW - 30 * 86400 - 1, NOW, QuarantineReason.TS_TOO_OLD),
        (0.0, NOW, QuarantineReason.TS_TOO_OLD),
        (NOW, NOW + 86400, QuarantineReason.DETECTED_FUTURE),
        (NOW, -1.0, QuarantineReason.DETECTED_TOO_OLD),
        (math.nan, NOW, QuarantineReason.TS_FUTURE),
        (math.inf, NOW, QuarantineReason.TS_FUTURE),
        (-math.inf, NOW, QuarantineReason.TS_FUTURE),
        (NOW, math.nan, QuarantineReason.DETECTED_FUTURE),
    ],
)
def test_times_outside_the_tolerance_of_the_bridges_clock_are_quarantined(
    ts: float, detected_at: float, expected: QuarantineReason | None
) -> None:
    assert check_times(ts, detected_at, NOW, POLICY) == expected


def test_the_tolerances_come_from_the_policy() -> None:
    strict = TimePolicy(max_future_s=1.0, max_age_s=60.0)
    assert check_times(NOW + 2, NOW, NOW, strict) == QuarantineReason.TS_FUTURE
    assert check_times(NOW - 61, NOW, NOW, strict) == QuarantineReason.TS_TOO_OLD


BAKERY = CampaignFacts("bakery", None, True, ("bronze", "silver", "gold"), 86400.0, 3600.0)
GOLD_ONLY = CampaignFacts("gold-points", "store-001", True, ("gold",), 86400.0)
SILVER = MemberFacts("silver", consent=True)
GOOD = OfferFacts(
    store="store-001",
    ts=NOW,
    campaign=BAKERY,
    member=SILVER,
    member_cooldown_s=4 * 3600.0,
    same_campaign_gap_s=None,
    any_offer_gap_s=None,
)


def with_(**changes: object) -> OfferFacts:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (GOOD, None),
        (with_(campaign=None), OfferRefusal.UNKNOWN_CAMPAIGN),
        (with_(campaign=dataclasses.replace(BAKERY, active=False)), OfferRefusal.CAMPAIGN_INACTIVE),
        (with_(campaign=GOLD_ONLY, store="store-002"), OfferRefusal.NOT_AT_STORE),
        (with_(member=None), OfferRefusal.UNKNOWN_MEMBER),
        (with_(member=MemberFacts("silver", consent=False)), OfferRefusal.NO_CONSENT),
        # The tier the records hold decides, whatever the gateway claimed in the event.
        (with_(campaign=GOLD_ONLY), OfferRefusal.TIER_NOT_SERVED),
        (with_(campaign=GOLD_ONLY, member=MemberFacts("gold", True)), None),
        (with_(same_campaign_gap_s=3600.0), OfferRefusal.CAMPAIGN_COOLDOWN),
        (with_(same_campaign_gap_s=0.0), OfferRefusal.CAMPAIGN_COOLDOWN),
        (with_(same_campaign_gap_s=86400.0), None),  # exactly one cooldown apart
        (with_(any_offer_gap_s=600.0), OfferRefusal.MEMBER_COOLDOWN),
        (with_(any_offer_gap_s=4 * 3600.0), None),
        (with_(any_offer_gap_s=600.0, member_cooldown_s=0.0), None),
        # The first reason in order wins: an inactive campaign before a cooldown.
        (
            with_(campaign=dataclasses.replace(BAKERY, active=False), any_offer_gap_s=1.0),
            OfferRefusal.CAMPAIGN_INACTIVE,
        ),
    ],
    ids=lambda v: "" if isinstance(v, OfferFacts) else str(v),
)
def test_an_offer_is_delivered_only_if_every_rule_holds(
    facts: OfferFacts, expected: OfferRefusal | None
) -> None:
    assert check_offer(facts) == expected


def test_an_offer_expires_its_campaigns_validity_after_it_was_issued() -> None:
    assert offer_expires_at(NOW, 3600.0) == NOW + 3600.0


# --- Visit ends ------------------------------------------------------------------------------------

T = 1_790_000_000.0


def visit_end(entered_at: float, ts: float, duration_s: float) -> wire.VisitEnd:
    return wire.VisitEnd(
        "e-1", "v-1", ts, ts + 300, "m-1", "d-1", entered_at, duration_s, "timeout", "android"
    )


@pytest.mark.parametrize(
    ("entered_at", "ts", "duration_s", "expected"),
    [
        (T, T + 620.0, 620.0, None),
        (T, T, 0.0, None),  # heard near the door only at the entry
        (T, T + 620.0, 620.4, None),  # rounding, within the tolerance
        (T, T + 620.0, 619.2, None),
        (T, T + 620.0, 618.5, ForgeryReason.WRONG_DURATION),
        (T, T + 620.0, 6200.0, ForgeryReason.WRONG_DURATION),
        (T, T + 620.0, 0.0, ForgeryReason.WRONG_DURATION),
        (T + 10.0, T, 0.0, ForgeryReason.ENDS_BEFORE_ENTRY),
        (T, T + MAX_VISIT_S, MAX_VISIT_S, None),
        (T, T + MAX_VISIT_S + 60, MAX_VISIT_S + 60, ForgeryReason.TOO_LONG),
        (0.0, 1e11, 1e11, ForgeryReason.TOO_LONG),
    ],
)
def test_a_visit_end_must_hold_together(
    entered_at: float, ts: float, duration_s: float, expected: ForgeryReason | None
) -> None:
    assert check_visit_end(visit_end(entered_at, ts, duration_s)) is expected


OWNER = Visitor("m-1", "d-1", "store-001")


@pytest.mark.parametrize(
    ("visit", "expected"),
    [
        (None, None),  # not recorded yet: checked when it comes
        (OWNER, None),
        (dataclasses.replace(OWNER, member="m-2"), ForgeryReason.OTHER_VISITOR),
        (dataclasses.replace(OWNER, device="d-2"), ForgeryReason.OTHER_VISITOR),
        (dataclasses.replace(OWNER, store="store-002"), ForgeryReason.OTHER_VISITOR),
    ],
)
def test_a_visit_end_closes_only_its_own_members_visit(
    visit: Visitor | None, expected: ForgeryReason | None
) -> None:
    assert check_visit_end_owner(OWNER, visit) is expected
