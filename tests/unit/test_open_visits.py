"""Open visits read back from disk are hostile: every field is checked and the bad one named."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.core.visits import OpenVisit, OpenVisitError, open_visit_from_row

GOOD = ("v-1", "m-00001", "d-00001", "ios", 1000.0, 1200.0, 1250.0)


def test_a_good_row_decodes_and_round_trips() -> None:
    visit = open_visit_from_row(GOOD)
    assert visit == OpenVisit("v-1", "m-00001", "d-00001", "ios", 1000.0, 1200.0, 1250.0)
    assert open_visit_from_row(visit.row()) == visit
    assert open_visit_from_row((*GOOD[:3], None, 1000, 1000, 1000)).platform is None


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (0, "V-1", "visit_id: not an id"),
        (0, None, "visit_id: not an id"),
        (0, b"v-1", "visit_id: not an id"),
        (1, "m" * 65, "member: not an id"),
        (2, 7, "device: not an id"),
        (3, "windows", "platform: not one of android, ios, tag"),
        (3, 1, "platform: not one of"),
        (4, "1000", "entered_at: not a number"),
        (4, True, "entered_at: not a number"),
        (4, math.nan, "entered_at: nan is not a time"),
        (5, math.inf, "last_near: inf is not a time"),
        (6, -1.0, "last_heard: -1.0 is not a time"),
        (6, 1e12, "last_heard: 1000000000000.0 is not a time"),
        (5, 900.0, "times out of order"),
        (6, 1100.0, "times out of order"),
    ],
)
def test_a_bad_field_is_named(index: int, value: object, reason: str) -> None:
    row = list(GOOD)
    row[index] = value
    with pytest.raises(OpenVisitError) as raised:
        open_visit_from_row(row)
    assert raised.value.reason.startswith(reason)


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(OpenVisitError, match="6 columns, expected 7"):
        open_visit_from_row(GOOD[:6])


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.binary(max_size=80),
)


@given(st.lists(_VALUES, min_size=0, max_size=9))
def test_any_row_decodes_or_is_refused_with_a_reason(row: list[object]) -> None:
    try:
        visit = open_visit_from_row(row)
    except OpenVisitError as exc:
        assert exc.reason
    else:
        assert visit.entered_at_s <= visit.last_near_s <= visit.last_heard_s
