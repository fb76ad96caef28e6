"""A campaign's holdout (cloud_bridge/core/holdout.py): deterministic, and the share it promises."""

from __future__ import annotations

import hashlib
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_bridge.core.holdout import holdout_point, in_holdout

IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=64)


def test_the_point_is_the_agreed_hash() -> None:
    # The formula every helper relies on (the report's control group): spelled out once more.
    digest = hashlib.sha256(b"threshold-holdout:spring-sale:m-00042").digest()
    assert (
        holdout_point("spring-sale", "m-00042") == int.from_bytes(digest[:8], "big") / 2**64 * 100
    )


@given(campaign=IDS, member=IDS)
def test_nobody_at_zero_everybody_at_a_hundred(campaign: str, member: str) -> None:
    assert not in_holdout(campaign, member, 0)
    assert not in_holdout(campaign, member, -5)
    assert not in_holdout(campaign, member, math.nan)
    assert in_holdout(campaign, member, 100)


@given(campaign=IDS, member=IDS, low=st.floats(0, 100), high=st.floats(0, 100))
def test_a_larger_share_keeps_everyone_a_smaller_one_held(
    campaign: str, member: str, low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)
    if in_holdout(campaign, member, low):
        assert in_holdout(campaign, member, high)
    assert in_holdout(campaign, member, high) == in_holdout(campaign, member, high)


@settings(max_examples=30, deadline=None)
@given(campaign=IDS, pct=st.floats(1, 99))
def test_over_many_members_the_share_held_out_is_close_to_the_percentage(
    campaign: str, pct: float
) -> None:
    n = 20_000
    held = sum(in_holdout(campaign, f"m-{i:06d}", pct) for i in range(n))
    # Binomial: 5 standard deviations (a false failure about once in 3 million runs).
    sd = math.sqrt(n * pct / 100 * (1 - pct / 100))
    assert abs(held - n * pct / 100) < 5 * sd


def test_campaigns_draw_independent_groups() -> None:
    members = [f"m-{i:06d}" for i in range(20_000)]
    a = {m for m in members if in_holdout("spring-sale", m, 50)}
    b = {m for m in members if in_holdout("autumn-sale", m, 50)}
    # Independent halves overlap on about a quarter of the members, not on all or none.
    assert abs(len(a & b) / len(members) - 0.25) < 0.02
