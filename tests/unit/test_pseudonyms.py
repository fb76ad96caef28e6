"""Per-store pseudonyms: opaque, unlinkable between stores, and only the bridge maps them back."""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.core.pseudonyms import (
    PSEUDONYM_CHARS,
    Kind,
    Serials,
    StorePseudonyms,
    pseudonymize,
    store_key,
)
from edge.core import wire
from edge.core.bundle import FullRoster, RosterDelta, apply_delta
from tests.factories import make_device

SECRET = random.Random("pseudonyms").randbytes(32)
HIGH_STREET = StorePseudonyms(store_key(SECRET, "acme", "store-001"))
STATION_ROAD = StorePseudonyms(store_key(SECRET, "acme", "store-002"))


@given(st.integers(min_value=1, max_value=2**64 - 1), st.sampled_from(Kind))
def test_a_pseudonym_maps_back_to_its_serial_and_is_a_valid_wire_id(
    serial: int, kind: Kind
) -> None:
    pseudonym = HIGH_STREET.one(kind, serial)

    assert len(pseudonym) == PSEUDONYM_CHARS
    assert wire.check_id(pseudonym, "member") == pseudonym
    assert HIGH_STREET.decode(kind, pseudonym) == serial


def test_pseudonyms_differ_between_stores_kinds_and_chains_and_not_within_a_store() -> None:
    other_chain = StorePseudonyms(store_key(SECRET, "other", "store-001"))
    other_secret = StorePseudonyms(store_key(bytes(32), "acme", "store-001"))
    seen = {
        HIGH_STREET.one(Kind.MEMBER, 7),
        STATION_ROAD.one(Kind.MEMBER, 7),
        HIGH_STREET.one(Kind.DEVICE, 7),
        other_chain.one(Kind.MEMBER, 7),
        other_secret.one(Kind.MEMBER, 7),
    }

    assert len(seen) == 5
    assert HIGH_STREET.one(Kind.MEMBER, 7) == HIGH_STREET.one(Kind.MEMBER, 7)
    # Neighbouring serials give unrelated pseudonyms: nothing to sort or count by.
    first, second = HIGH_STREET.encode(Kind.MEMBER, [1, 2])
    assert sum(a == b for a, b in zip(first, second, strict=True)) < PSEUDONYM_CHARS // 2


def test_another_stores_pseudonym_or_another_kind_is_refused_not_misread() -> None:
    station = STATION_ROAD.one(Kind.MEMBER, 7)
    device = HIGH_STREET.one(Kind.DEVICE, 7)

    assert HIGH_STREET.decode(Kind.MEMBER, station) is None
    assert HIGH_STREET.decode(Kind.MEMBER, device) is None
    assert HIGH_STREET.decode(Kind.DEVICE, device) == 7


@pytest.mark.parametrize(
    "text",
    [
        "",
        "m-00001",  # a records id, not a pseudonym
        "a" * PSEUDONYM_CHARS,  # well formed, but no block of ours
        "g" * PSEUDONYM_CHARS,  # not hex
        "0" * PSEUDONYM_CHARS,  # hex, but no block of ours
        "a" * (PSEUDONYM_CHARS - 1),
        "a" * (PSEUDONYM_CHARS + 1),
    ],
)
def test_garbage_is_refused(text: str) -> None:
    assert HIGH_STREET.decode(Kind.MEMBER, text) is None


def test_a_second_spelling_of_a_pseudonym_is_refused() -> None:
    # bytes.fromhex would read these as the same block: one member would have two pseudonyms.
    pseudonym = HIGH_STREET.one(Kind.MEMBER, 7)
    respelled = [pseudonym.upper(), pseudonym[:2] + " " + pseudonym[2:-1]]

    assert pseudonym.upper() != pseudonym
    assert [HIGH_STREET.decode(Kind.MEMBER, r) for r in respelled] == [None, None]


def test_random_pseudonym_shaped_strings_are_refused() -> None:
    rng = random.Random(4)
    alphabet = string.hexdigits.lower()[:16]
    forged = ["".join(rng.choices(alphabet, k=PSEUDONYM_CHARS)) for _ in range(2000)]
    assert [f for f in forged if HIGH_STREET.decode(Kind.MEMBER, f) is not None] == []


def test_serials_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        HIGH_STREET.one(Kind.MEMBER, 0)
    with pytest.raises(ValueError, match="out of range"):
        HIGH_STREET.one(Kind.MEMBER, 2**64)
    with pytest.raises(ValueError, match="32 bytes"):
        store_key(b"short", "acme", "store-001")


def test_a_roster_change_leaves_with_pseudonyms_only_and_applies_consistently() -> None:
    devices = [make_device(member="m-1"), make_device(member="m-1"), make_device(member="m-2")]
    serials = Serials(
        devices={d.ref: 10 + i for i, d in enumerate(devices)}, members={"m-1": 1, "m-2": 2}
    )
    full = pseudonymize(FullRoster(tuple(devices)), serials, HIGH_STREET)
    assert isinstance(full, FullRoster)
    held = {d.ref: d for d in full.devices}
    assert [d.ref for d in full.devices] == sorted(held)
    assert not {d.ref for d in devices} & held.keys()
    assert len({d.member for d in full.devices}) == 2  # one member, two devices: one pseudonym
    assert {d.identity_key for d in full.devices} == {d.identity_key for d in devices}

    rotated = wire.RosterDevice(devices[2].ref, "m-2", "gold", bytes(16), 12)
    delta = pseudonymize(
        RosterDelta(base_version=3, add=(), remove=(devices[0].ref,), rotate=(rotated,)),
        serials,
        HIGH_STREET,
    )
    assert isinstance(delta, RosterDelta)
    after = apply_delta(held, delta)

    assert len(after) == 2
    assert HIGH_STREET.one(Kind.DEVICE, 10) not in after
    assert after[HIGH_STREET.one(Kind.DEVICE, 12)].identity_key == bytes(16)


def test_kind_and_preferences_travel_unchanged_under_pseudonyms() -> None:
    """A member's stated preferences reach the gateway with the store's pseudonyms (issue 10)."""
    prefs = wire.MemberPrefs(5, 2, 1, 3)
    app = make_device(member="m-1", kind="app", prefs=prefs)
    tag = make_device(member="m-2", kind="tag")
    serials = Serials(devices={app.ref: 1, tag.ref: 2}, members={"m-1": 1, "m-2": 2})
    full = pseudonymize(FullRoster((app, tag)), serials, HIGH_STREET)
    assert isinstance(full, FullRoster)
    by_ref = {d.ref: d for d in full.devices}
    assert by_ref[HIGH_STREET.one(Kind.DEVICE, 1)].prefs == prefs
    assert by_ref[HIGH_STREET.one(Kind.DEVICE, 1)].kind == "app"
    assert by_ref[HIGH_STREET.one(Kind.DEVICE, 2)].kind == "tag"
    assert by_ref[HIGH_STREET.one(Kind.DEVICE, 2)].prefs is None
