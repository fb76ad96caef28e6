"""The demo fails loudly when a target is missed: an intruder let in, iPhones left behind, an offer
against what a shopper asked for, no visit ended or a time in store far from the truth; and for
issue 11: a channel that delivered nothing, an offer to a holdout member, a webhook offer not pushed
exactly once, receipts lost, no redemption, no report."""

from __future__ import annotations

from typing import Any

import pytest

from edge.demo.runner import failures

HEALTHY: dict[str, Any] = {
    "members_recognised": 5,
    "offers_delivered": 5,
    "offers_triggered": 7,
    "offers_holdout": 2,  # recorded for the control group, never sent
    "non_members_recognised": 0,
    "passers_by_entered": 0,
    "intruders_admitted": 0,
    "by_platform": {
        "android": {"entered": 10, "recognised": 10},
        "ios": {"entered": 10, "recognised": 9},
        "tag": {"entered": 10, "recognised": 7},
    },
    "offers_against_preferences": 0,
    "offers_over_frequency_cap": 0,
    "visits_ended": 4,
    "time_in_store_s_p50": 330.0,
    "time_in_store_s_p50_truth": 300.0,
    "offers_by_channel": {"mqtt": 3, "webhook": 2},
    "offers_holdout_received": 0,
    "webhook_offers_not_pushed_once": 0,
    "webhook_refused": {},
    "receipts": {"opened": 2, "dismissed": 1},
    "receipts_reported_by_apps": {"opened": 2, "dismissed": 1},
    "redemptions": 1,
    "redemptions_refused": {},
    "report_html_bytes": 30000,
}


def with_platform(platform: str, entered: int, recognised: int) -> dict[str, Any]:
    by_platform = {
        **HEALTHY["by_platform"],
        platform: {"entered": entered, "recognised": recognised},
    }
    return {**HEALTHY, "by_platform": by_platform}


def test_a_healthy_run_has_no_failures() -> None:
    assert failures(HEALTHY) == []


def test_an_admitted_intruder_fails_the_demo() -> None:
    assert failures({**HEALTHY, "intruders_admitted": 1}) == ["the broker let 1 intruder(s) in"]


def test_iphones_recognised_well_below_android_fail_the_demo() -> None:
    assert failures(with_platform("ios", 10, 8)) == [
        "iPhone users recognised at 80%, under 90% of Android users' 100%"
    ]
    android_80 = with_platform("android", 10, 8)
    android_80["by_platform"]["ios"] = {"entered": 20, "recognised": 15}
    assert failures(android_80) == []  # 75 % is at least 90 % of 80 %
    # Nobody of a platform walked in: nothing to compare.
    assert failures(with_platform("ios", 0, 0)) == []


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            {"offers_against_preferences": 2},
            "2 offers went against what the shopper asked for",
        ),
        (
            {"offers_over_frequency_cap": 1},
            "1 offers came more often than the shopper wanted",
        ),
        ({"visits_ended": 0, "time_in_store_s_p50": None}, "no visit ended"),
        (
            {"time_in_store_s_p50": 331.0},
            "median time in store 331 s, more than 10% off the truth's 300 s",
        ),
        (
            {"time_in_store_s_p50": 269.0},
            "median time in store 269 s, more than 10% off the truth's 300 s",
        ),
        (
            {"time_in_store_s_p50_truth": None},
            "no ended visit belongs to a shopper of the simulation",
        ),
        ({"offers_delivered": 4}, "1 offers did not arrive"),
        ({"offers_holdout": 1}, "1 offers did not arrive"),
        ({"offers_by_channel": {"mqtt": 5, "webhook": 0}}, "no offer was delivered over webhook"),
        ({"offers_by_channel": {"webhook": 5}}, "no offer was delivered over mqtt"),
        (
            {"offers_holdout_received": 1},
            "1 offers reached members in their campaign's holdout",
        ),
        (
            {"webhook_offers_not_pushed_once": 2},
            "2 webhook offers did not reach the app exactly once through the push service",
        ),
        (
            {"webhook_refused": {"signature": 1}},
            "the push service refused requests: {'signature': 1}",
        ),
        (
            {"receipts": {"opened": 1, "dismissed": 1}},
            "1 'opened' receipts the apps sent were not recorded",
        ),
        ({"redemptions": 0}, "no code was redeemed at the till"),
        (
            {"redemptions_refused": {"expired": 1}},
            "the bridge refused redemptions: {'expired': 1}",
        ),
        ({"report_html_bytes": 0}, "the HTML report was not written"),
    ],
)
def test_each_missed_target_is_named(overrides: dict[str, Any], problem: str) -> None:
    assert failures({**HEALTHY, **overrides}) == [problem]
