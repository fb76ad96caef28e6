"""The demo's issue 11 parts: the marketer's schedule covers the simulated hour in the store's local
time, and the summary's delivery figures catch an offer to a holdout member and a webhook offer not
pushed exactly once."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from cloud_bridge.core.campaigns import CampaignSchedule, check_code, check_schedule
from cloud_bridge.core.holdout import in_holdout
from edge.core import wire
from edge.demo.marketer import local_schedule, pool_codes
from edge.demo.runner import BridgeFigures, delivery_summary
from edge.demo.shopper_apps import ReceivedOffer, receipt_fate
from edge.demo.till import redeems

LONDON = ZoneInfo("Europe/London")


def unix(*args: int) -> float:
    return dt.datetime(*args, tzinfo=LONDON).timestamp()


@pytest.mark.parametrize(
    ("start", "schedule"),
    [
        (
            unix(2026, 12, 6, 10, 56),  # a Sunday
            {
                "start": "2026-12-06",
                "end": "2026-12-08",
                "days": [1, 7],
                "hours": [["10:00", "12:00"]],
            },
        ),
        (
            unix(2026, 12, 6, 23, 50),  # the simulation crosses local midnight
            {
                "start": "2026-12-06",
                "end": "2026-12-08",
                "days": [1, 7],
                "hours": [["00:00", "01:00"], ["23:00", "24:00"]],
            },
        ),
        (
            unix(2026, 7, 1, 9, 5),  # summer time: local hours, not UTC's
            {
                "start": "2026-07-01",
                "end": "2026-07-03",
                "days": [3, 4],
                "hours": [["09:00", "11:00"]],
            },
        ),
    ],
)
def test_the_schedule_runs_in_the_stores_local_hour(
    start: float, schedule: dict[str, object]
) -> None:
    assert local_schedule(start, "Europe/London") == schedule


def test_the_schedule_is_one_the_bridge_accepts() -> None:
    start = unix(2026, 12, 6, 23, 50)
    parsed = CampaignSchedule.from_json(local_schedule(start, "Europe/London"))
    check_schedule(parsed, start)  # raises InvalidCampaign naming the field otherwise


def test_the_code_pool_is_distinct_codes_the_wire_accepts() -> None:
    codes = pool_codes(400)
    assert len(set(codes)) == 400 and codes[0] == "GIFT-0001"
    for code in codes:
        assert check_code(code) == code


def test_shoppers_open_dismiss_and_redeem_in_plausible_shares() -> None:
    ids = [f"ev-o{n:06d}" for n in range(2000)]
    fates = [receipt_fate(i) for i in ids]
    assert 0.35 < fates.count("opened") / len(ids) < 0.55
    assert 0.12 < fates.count("dismissed") / len(ids) < 0.28
    assert 0.5 < sum(map(redeems, ids)) / len(ids) < 0.7
    assert fates == [receipt_fate(i) for i in ids]  # the same every run


def offer(offer_id: str, campaign: str) -> ReceivedOffer:
    shopper = f"tok-{offer_id}"
    sent = wire.ShopperOffer(offer_id, campaign, "t", "b", "store-001", 1.0, 1.0)
    return ReceivedOffer(shopper, sent, 10.0)


def figures(**overrides: object) -> BridgeFigures:
    base: dict[str, object] = {
        "offers_by_channel": {"mqtt": 1, "webhook": 2},
        "webhook_offers": frozenset({"ev-w1", "ev-w2"}),
        "holdout_offers": frozenset({"ev-h1"}),
        "unsettled": 0,
        "opened": 1,
        "dismissed": 0,
        "redemptions": 1,
        "offers_by_campaign": {"bakery": 3},
        "holdout_pct": {"bakery": 30.0},
    }
    return BridgeFigures(**{**base, **overrides})  # type: ignore[arg-type]


def test_an_offer_to_a_holdout_member_is_counted() -> None:
    members = [f"m-{n:05d}" for n in range(200)]
    inside = next(m for m in members if in_holdout("bakery", m, 30.0))
    outside = next(m for m in members if not in_holdout("bakery", m, 30.0))
    received = [offer("ev-m1", "bakery"), offer("ev-m2", "bakery"), offer("ev-h1", "other")]
    member_of = {"tok-ev-m1": outside, "tok-ev-m2": inside, "tok-ev-h1": outside}
    pushed = {"ev-w1": 1, "ev-w2": 1}
    summary = delivery_summary(figures(), received, member_of, pushed, 0)
    # ev-m2: its member is in the bakery's holdout; ev-h1: the bridge recorded it held out.
    assert summary["offers_holdout_received"] == 2
    assert summary["offers_holdout"] == 1
    assert summary["webhook_offers_not_pushed_once"] == 0
    assert summary["offers_by_channel"] == {"mqtt": 1, "webhook": 2}


@pytest.mark.parametrize(
    ("pushed", "phone_duplicates", "not_once"),
    [
        ({"ev-w1": 1, "ev-w2": 1}, 0, 0),
        ({"ev-w1": 1}, 0, 1),  # one never reached the push service
        ({"ev-w1": 1, "ev-w2": 1, "ev-x": 1}, 0, 1),  # one the bridge did not record as sent
        ({"ev-w1": 2, "ev-w2": 1}, 0, 1),  # pushed twice
        ({"ev-w1": 1, "ev-w2": 1}, 1, 1),  # a phone got one twice
    ],
)
def test_a_webhook_offer_not_pushed_exactly_once_is_counted(
    pushed: dict[str, int], phone_duplicates: int, not_once: int
) -> None:
    summary = delivery_summary(figures(), [], {}, pushed, phone_duplicates)
    assert summary["webhook_offers_not_pushed_once"] == not_once
    assert summary["webhook_offers_pushed"] == len(pushed)
