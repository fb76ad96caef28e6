"""Roster bundle format 3 (issue 11): each member's segments and visit count travel to the gateway.

Round trips, older formats still opening, the daily audience changes travelling as rotations, and
hostile rows refused naming the row and field.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from unittest import mock

import pytest

from edge.core import bundle, wire
from edge.core.bundle import FullRoster, RejectReason, RosterDelta
from tests.factories import make_device
from tests.unit.test_bundle import open_as, roster, seal
from tests.unit.test_bundle_hostile import rejected

KEY = "0" * 32
AUDIENCE = [
    make_device(
        kind=("app", "tag", None)[i % 3],
        prefs=(wire.MemberPrefs(5, 2, 1, 3), None)[i % 2],
        segments=i % 8,
        visits=(0, 1, 7, 1000)[i % 4],
    )
    for i in range(8)
]


def test_format_3_carries_segments_and_visits_both_ways() -> None:
    data = seal(FullRoster(tuple(AUDIENCE)), 1)
    assert json.loads(data)["format"] == 3 == bundle.BUNDLE_FORMAT
    after = open_as(data).roster_after({})
    assert after == roster(*AUDIENCE)
    assert [after[d.ref].segments for d in AUDIENCE] == list(range(8))
    assert after[AUDIENCE[3].ref].visits == 1000


def test_a_change_of_segments_or_visits_alone_travels_as_a_rotation() -> None:
    """Segments change daily and visits with every visit: a small delta, no new key."""
    previous = roster(*AUDIENCE)
    became_regular = dataclasses.replace(AUDIENCE[1], segments=0b010)
    visited = dataclasses.replace(AUDIENCE[2], visits=AUDIENCE[2].visits + 1)
    current = previous | {d.ref: d for d in (became_regular, visited)}

    change = bundle.plan_sync(previous, current, previous_version=1)

    assert change == RosterDelta(1, rotate=(became_regular, visited))
    assert open_as(seal(change, 2), current_version=1).roster_after(previous) == current


@pytest.mark.parametrize("bundle_format", [1, 2])
def test_older_formats_still_open_their_devices_in_no_segment_with_no_visits(
    bundle_format: int,
) -> None:
    plain = [make_device() for _ in range(2)]
    if bundle_format == 2:
        plain = [dataclasses.replace(d, kind="app", prefs=wire.MemberPrefs(1)) for d in plain]
    data = seal(FullRoster(tuple(plain)), 1, bundle_format=bundle_format)
    after = open_as(data).roster_after({})
    assert after == roster(*plain)
    assert all((d.segments, d.visits) == (0, 0) for d in after.values())


@pytest.mark.parametrize("bundle_format", [1, 2])
def test_older_formats_cannot_carry_an_audience_and_say_so(bundle_format: int) -> None:
    device = make_device(segments=0b100)
    with pytest.raises(ValueError, match=f"format {bundle_format} cannot carry"):
        seal(FullRoster((device,)), 1, bundle_format=bundle_format)
    with pytest.raises(ValueError, match=f"format {bundle_format} cannot carry"):
        seal(FullRoster((make_device(visits=3),)), 1, bundle_format=bundle_format)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"segments": 8}, "segments must be 0..7"),
        ({"segments": -1}, "segments must be 0..7"),
        ({"segments": True}, "segments must be 0..7"),
        ({"visits": 1001}, "visits must be 0..1000"),
        ({"visits": -1}, "visits must be 0..1000"),
        ({"visits": 2.0}, "visits must be 0..1000"),
    ],
)
def test_the_bridge_refuses_to_build_an_out_of_range_audience(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        seal(FullRoster((make_device(**overrides),)), 1)


GOOD = ["d-0", "m-0", "gold", KEY, 10, "app", [5, 2, 1, 3], 2, 7]
# Format 3 rows: [ref, member, tier, key, exponent, kind, prefs, segments, visits]; (row, field).
HOSTILE_ROWS: dict[str, tuple[list[Any], str]] = {
    "format-2-row": (["d-1", "m-1", "gold", KEY, 10, "app", None], "$.devices[0]"),
    "eight-fields": (["d-1", "m-1", "gold", KEY, 10, "app", None, 1], "$.devices[0]"),
    "ten-fields": (["d-1", "m-1", "gold", KEY, 10, "app", None, 1, 1, 1], "$.devices[0]"),
    "segments-8": (["d-1", "m-1", "gold", KEY, 10, "app", None, 8, 0], "$.devices[0][7]"),
    "segments-negative": (["d-1", "m-1", "gold", KEY, 10, "app", None, -1, 0], "$.devices[0][7]"),
    "segments-huge": (["d-1", "m-1", "gold", KEY, 10, None, None, 10**30, 0], "$.devices[0][7]"),
    "segments-float": (["d-1", "m-1", "gold", KEY, 10, "tag", None, 1.5, 0], "$.devices[0][7]"),
    "segments-true": (["d-1", "m-1", "gold", KEY, 10, "tag", None, True, 0], "$.devices[0][7]"),
    "segments-names": (
        ["d-1", "m-1", "gold", KEY, 10, "tag", None, ["regular"], 0],
        "$.devices[0][7]",
    ),
    "segments-null": (["d-1", "m-1", "gold", KEY, 10, "tag", None, None, 0], "$.devices[0][7]"),
    "visits-1001": (["d-1", "m-1", "gold", KEY, 10, "app", None, 0, 1001], "$.devices[0][8]"),
    "visits-negative": (["d-1", "m-1", "gold", KEY, 10, "app", None, 0, -3], "$.devices[0][8]"),
    "visits-string": (["d-1", "m-1", "gold", KEY, 10, "app", None, 0, "7"], "$.devices[0][8]"),
}


@pytest.mark.parametrize("case", HOSTILE_ROWS, ids=str)
def test_hostile_format_3_rows_are_rejected_naming_the_row_and_field(case: str) -> None:
    bad, field = HOSTILE_ROWS[case]
    body = json.dumps({"devices": [bad, GOOD]}).encode()
    with mock.patch.object(bundle, "encode_body", lambda *_: body):
        data = seal(FullRoster((make_device(),)), 1)
    rejection = rejected(data)
    assert rejection.reason is RejectReason.BAD_BODY
    assert f"field {field}" in rejection.message, rejection.message
    assert "format 3" in rejection.message and "segments 0..7" in rejection.message
    assert "new, regular, lapsed" in rejection.message and "visits 0..1000" in rejection.message


def test_the_good_row_alone_opens() -> None:
    """The hostile cases differ from an accepted body only in their bad row."""
    body = json.dumps({"devices": [GOOD]}).encode()
    with mock.patch.object(bundle, "encode_body", lambda *_: body):
        data = seal(FullRoster((make_device(),)), 1)
    [device] = open_as(data).roster_after({}).values()
    assert (device.ref, device.kind, device.segments, device.visits) == ("d-0", "app", 2, 7)
    assert device.prefs == wire.MemberPrefs(5, 2, 1, 3)


def test_hostile_rows_in_a_format_3_delta_name_the_list() -> None:
    bad = ["d-1", "m-1", "gold", KEY, 10, "app", None, 0, 5000]
    body = json.dumps({"add": [], "remove": [], "rotate": [bad]}).encode()
    with mock.patch.object(bundle, "encode_body", lambda *_: body):
        data = seal(RosterDelta(1), 2)
    rejection = rejected(data, current_version=1)
    assert rejection.reason is RejectReason.BAD_BODY
    assert "field $.rotate[0][8]" in rejection.message
