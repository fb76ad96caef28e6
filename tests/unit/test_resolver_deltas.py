"""Roster deltas applied in place: add, remove, rotate, without a rebuild.

The reference is a resolver built from scratch for the roster the deltas lead to: whatever the order
of deltas, window rollovers and precomputation slices, both must resolve the same EIDs.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import eid
from edge.core.resolver import EidResolver
from edge.core.wire import MemberPrefs, RosterDevice
from tests.factories import make_device

K = 4
STEP = 1 << K
W = 1_790_000_000 - 1_790_000_000 % 4096


def eid_at(device: RosterDevice, t: float) -> bytes:
    return eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(t))


def current_eid(device: RosterDevice, t: float = W) -> bytes:
    return eid_at(device, t)


def test_added_devices_resolve_at_once_in_every_window_in_range() -> None:
    resolver = EidResolver([make_device(exponent=K)], W)
    new = [make_device(exponent=K), make_device(exponent=7)]  # an existing and a new exponent
    assert resolver.add(new, W) == 2
    assert len(resolver) == 3
    for device in new:
        step = 1 << device.exponent
        for offset in (-1, 0, 1):
            assert resolver.resolve(eid_at(device, W + offset * step)) is device
        assert resolver.resolve(eid_at(device, W + 2 * step)) is None


def test_a_device_added_while_the_window_ahead_is_being_computed_resolves_after_the_roll() -> None:
    resolver = EidResolver([make_device(exponent=K) for _ in range(10)], W)
    resolver.advance(W + STEP, max_eids=3)  # the window ahead (W + 3 STEP) is part done
    late = make_device(exponent=K)
    resolver.add([late], W + STEP)
    resolver.advance(W + 2 * STEP, max_eids=0)  # rolls; the rest of the window is caught up
    assert resolver.resolve(eid_at(late, W + 3 * STEP)) is late


def test_adding_an_enrolled_ref_or_a_bad_key_changes_nothing() -> None:
    device = make_device(exponent=K)
    resolver = EidResolver([device], W)
    fresh = make_device(exponent=K)
    with pytest.raises(ValueError, match="already enrolled"):
        resolver.add([fresh, dataclasses.replace(device, tier="silver")], W)
    with pytest.raises(ValueError, match="identity key"):
        resolver.add([fresh, make_device(identity_key=b"short")], W)
    with pytest.raises(ValueError, match="twice"):
        resolver.add([fresh, fresh], W)
    assert len(resolver) == 1 and resolver.resolve(current_eid(fresh)) is None


def test_removed_devices_stop_resolving_at_once() -> None:
    kept, gone = make_device(exponent=K), make_device(exponent=K)
    resolver = EidResolver([kept, gone], W)
    assert resolver.remove([gone.ref, "never-enrolled"]) == 1
    assert gone.ref not in resolver and len(resolver) == 1
    assert resolver.resolve(current_eid(gone)) is None
    assert resolver.resolve(current_eid(kept)) is kept


def test_a_device_removed_while_the_window_ahead_is_computed_never_comes_back() -> None:
    devices = [make_device(exponent=K) for _ in range(10)]
    resolver = EidResolver(devices, W)
    resolver.advance(W + STEP, max_eids=3)
    resolver.remove(d.ref for d in devices)
    resolver.advance(W + 2 * STEP)
    for device in devices:
        for offset in (1, 2, 3):
            assert resolver.resolve(eid_at(device, W + offset * STEP)) is None
    assert resolver.table_size == 0  # the emptied exponent group went with its tables


def test_rotation_to_a_new_key_and_exponent_retires_the_old_eids() -> None:
    device = make_device(exponent=K)
    resolver = EidResolver([device, make_device(exponent=K)], W)
    rotated = dataclasses.replace(device, identity_key=bytes(range(16)), exponent=6)
    assert resolver.rotate([rotated], W) == 1
    assert resolver.resolve(current_eid(device)) is None
    assert resolver.resolve(current_eid(rotated)) is rotated
    assert len(resolver) == 2


def test_rotation_of_attributes_alone_resolves_to_the_new_record() -> None:
    device = make_device(exponent=K, tier="bronze")
    resolver = EidResolver([device, make_device(exponent=K)], W)
    upgraded = dataclasses.replace(device, tier="gold")  # same key: the same EIDs
    resolver.rotate([upgraded], W)
    assert resolver.resolve(current_eid(device)) is upgraded
    assert resolver.collisions == 0


def test_an_update_of_preferences_resolves_to_the_new_record_without_computing_an_eid() -> None:
    device = make_device(exponent=K, kind="app")
    resolver = EidResolver([device, make_device(exponent=K)], W)
    tables = [dict(table) for table, _ in resolver._live]
    restated = dataclasses.replace(device, prefs=MemberPrefs(4, 1, 1, 3), tier="silver")

    assert resolver.update([restated]) == 1

    assert [dict(table) for table, _ in resolver._live] == tables  # no EID recomputed
    for offset in (-1, 0, 1):
        assert resolver.resolve(eid_at(device, W + offset * STEP)) is restated
    assert resolver.device(device.ref) is restated
    # Across rollovers too: the windows ahead were computed for the same key.
    resolver.advance(W + 3 * STEP)
    assert resolver.resolve(eid_at(device, W + 3 * STEP)) is restated
    resolver.update([device])  # back as it was
    assert resolver.resolve(eid_at(device, W + 3 * STEP)) is device


def test_an_update_after_which_the_device_is_removed_or_rotated_is_forgotten() -> None:
    device, other = make_device(exponent=K), make_device(exponent=K)
    resolver = EidResolver([device, other], W)
    resolver.update([dataclasses.replace(device, tier="silver")])
    resolver.update([dataclasses.replace(other, tier="silver")])
    resolver.remove([device.ref])
    assert resolver.resolve(current_eid(device)) is None and resolver.device(device.ref) is None
    new_key = dataclasses.replace(other, identity_key=bytes(15) + b"\x07")
    resolver.rotate([new_key], W)
    assert resolver.resolve(current_eid(new_key)) is new_key
    assert resolver.resolve(current_eid(other)) is None


def test_an_update_with_a_new_key_or_of_an_unknown_ref_changes_nothing() -> None:
    device, other = make_device(exponent=K), make_device(exponent=K)
    resolver = EidResolver([device, other], W)
    retiered = dataclasses.replace(device, tier="silver")
    with pytest.raises(ValueError, match="rotate it"):
        resolver.update([retiered, dataclasses.replace(other, exponent=5)])
    with pytest.raises(ValueError, match="rotate it"):
        resolver.update([retiered, dataclasses.replace(other, identity_key=bytes(16))])
    with pytest.raises(KeyError, match="not enrolled"):
        resolver.update([retiered, make_device()])
    assert resolver.resolve(current_eid(device)) is device


def test_rotating_an_unknown_ref_changes_nothing() -> None:
    device = make_device(exponent=K)
    resolver = EidResolver([device], W)
    moved = dataclasses.replace(device, identity_key=bytes(16))
    with pytest.raises(KeyError, match="not enrolled"):
        resolver.rotate([moved, make_device()], W)
    assert resolver.resolve(current_eid(device)) is device


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_deltas_match_a_fresh_build(rng: random.Random) -> None:
    """Random deltas, rollovers and slices end where a fresh build for the final roster starts."""
    exponents = (4, 5, 6)
    serials = itertools.count()  # keys stay distinct however hypothesis shrinks the random bytes
    roster = {d.ref: d for d in (make_device(exponent=rng.choice(exponents)) for _ in range(12))}
    resolver = EidResolver(roster.values(), W)
    t = W
    for _ in range(30):
        t += rng.choice((0, 1, 5, 16, 40))
        action = rng.choice(("add", "remove", "rotate", "update", "advance"))
        if action == "add":
            new = [make_device(exponent=rng.choice(exponents)) for _ in range(rng.randint(1, 3))]
            resolver.add(new, t)
            roster.update((d.ref, d) for d in new)
        elif action == "remove" and roster:
            gone = rng.sample(sorted(roster), rng.randint(1, min(3, len(roster))))
            resolver.remove(gone)
            for ref in gone:
                del roster[ref]
        elif action == "rotate" and roster:
            refs = rng.sample(sorted(roster), rng.randint(1, min(3, len(roster))))
            rotated = [
                dataclasses.replace(
                    roster[ref],
                    identity_key=rng.randbytes(12) + next(serials).to_bytes(4, "big"),
                    exponent=rng.choice(exponents),
                )
                for ref in refs
            ]
            resolver.rotate(rotated, t)
            roster.update((d.ref, d) for d in rotated)
        elif action == "update" and roster:
            refs = rng.sample(sorted(roster), rng.randint(1, min(3, len(roster))))
            updated = [
                dataclasses.replace(
                    roster[ref],
                    tier=rng.choice(("bronze", "gold")),
                    prefs=MemberPrefs(rng.randint(0, 15), 0, rng.randint(0, 3), 5),
                )
                for ref in refs
            ]
            resolver.update(updated)
            roster.update((d.ref, d) for d in updated)
        resolver.advance(t, max_eids=rng.choice((0, 1, 4)))
    fresh = EidResolver(roster.values(), t)
    assert len(resolver) == len(fresh) == len(roster)
    for device in roster.values():
        for offset in range(-2, 3):
            heard = eid_at(device, t + offset * (1 << device.exponent))
            # Equal, not necessarily the same object: an update back to the attributes the
            # resolver's tables already hold returns their (equal) copy.
            assert resolver.resolve(heard) == fresh.resolve(heard), (device.ref, offset)
