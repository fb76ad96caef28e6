"""Members' segments and counted visits (cloud_bridge/core/segments.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.config import parse_bridge_config
from cloud_bridge.core.segments import (
    DAY_S,
    LAPSED_BIT,
    NEW_BIT,
    NO_VISITS,
    REGULAR_BIT,
    Audience,
    SegmentPolicy,
    audience,
)
from edge.core import wire
from edge.errors import ConfigError

NOW = 1_790_000_000.0
POLICY = SegmentPolicy()  # new 30 days, regular 4 visits in 30 days, lapsed after 60 days


def days_ago(*days: float) -> list[float]:
    return [NOW - d * DAY_S for d in days]


@pytest.mark.parametrize(
    ("visits", "segments", "counted"),
    [
        ([], ("new",), 0),  # never heard: new
        (days_ago(3), ("new",), 1),
        (days_ago(29, 20, 10, 2), ("new", "regular"), 4),  # first visit within 30 days, 4 in 30
        (days_ago(40, 25, 20, 10, 2), ("regular",), 5),
        (days_ago(40, 31, 10, 2), (), 4),  # 3 in the last 30 days: not regular yet
        (days_ago(100, 61), ("lapsed",), 2),
        (days_ago(100, 59), (), 2),
        (days_ago(400, 200), ("lapsed",), 1),  # the visit 400 days ago no longer counts
        (days_ago(400), ("lapsed",), 0),
    ],
)
def test_segments_from_visit_times(
    visits: list[float], segments: tuple[str, ...], counted: int
) -> None:
    found = audience(visits, NOW, POLICY)
    assert found.names() == segments
    assert found.visits == counted


def test_the_policy_moves_the_boundaries() -> None:
    policy = SegmentPolicy(new_days=7, regular_visits=2, regular_days=7, lapsed_days=14)
    assert audience(days_ago(10, 5), NOW, policy) == Audience(0, 2)
    assert audience(days_ago(6, 5), NOW, policy) == Audience(NEW_BIT | REGULAR_BIT, 2)
    assert audience(days_ago(15), NOW, policy) == Audience(LAPSED_BIT, 1)


def test_a_regular_lapses_with_time_alone() -> None:
    visits = days_ago(45, 20, 15, 10, 5)
    assert audience(visits, NOW, POLICY).names() == ("regular",)
    assert audience(visits, NOW + 70 * DAY_S, POLICY).names() == ("lapsed",)


def test_counted_visits_are_capped() -> None:
    many = [NOW - i * 60 for i in range(wire.MAX_COUNTED_VISITS + 50)]
    assert audience(many, NOW, POLICY).visits == wire.MAX_COUNTED_VISITS


def test_never_heard_is_new_with_no_visits() -> None:
    assert audience([], NOW, POLICY) == NO_VISITS == Audience(NEW_BIT, 0)


@given(st.lists(st.floats(NOW - 800 * DAY_S, NOW + 300), max_size=40))
def test_any_history_gives_a_mask_and_count_the_wire_accepts(visits: list[float]) -> None:
    found = audience(visits, NOW, POLICY)
    assert 0 <= found.segments < 2 ** len(wire.SEGMENTS)
    assert 0 <= found.visits <= min(len(visits), wire.MAX_COUNTED_VISITS)
    # Lapsed and recently heard exclude each other; no visits is only "new".
    assert not (found.segments & LAPSED_BIT and found.segments & REGULAR_BIT)
    assert wire.RosterDevice("d", "m", "t", bytes(16), 10, segments=found.segments).segments >= 0


def test_the_config_section_takes_the_parameters() -> None:
    config = parse_bridge_config(
        "[segments]\nnew_days = 14\nregular_visits = 3\nregular_days = 21\nlapsed_days = 90\n"
    )
    assert config.segments == SegmentPolicy(14, 3, 21, 90)
    assert parse_bridge_config("").segments == SegmentPolicy()


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("new_days = 0", "segments.new_days"),
        ("regular_visits = -1", "segments.regular_visits"),
        ("regular_days = 400", "segments.regular_days"),
        ("lapsed_days = 1.5", "segments.lapsed_days"),
        ("lapsed = 3", "segments.lapsed"),
    ],
)
def test_bad_segment_parameters_are_refused_naming_the_field(line: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bridge_config(f"[segments]\n{line}\n", "bridge.toml")
    assert caught.value.field == field
