"""The demo fails loudly when the broker lets an intruder in."""

from __future__ import annotations

from edge.demo.runner import failures

HEALTHY = {
    "members_recognised": 5,
    "offers_delivered": 5,
    "offers_triggered": 5,
    "non_members_recognised": 0,
    "passers_by_entered": 0,
    "intruders_admitted": 0,
}


def test_a_healthy_run_has_no_failures() -> None:
    assert failures(HEALTHY) == []


def test_an_admitted_intruder_fails_the_demo() -> None:
    assert failures({**HEALTHY, "intruders_admitted": 1}) == ["the broker let 1 intruder(s) in"]
