"""Eddystone-EID against the published vectors (shared/RECIPES.md, Eddystone-EID specification)."""

from __future__ import annotations

import pytest

from edge.core import eid

IK = bytes.fromhex("0102030405060708090a111213141516")


@pytest.mark.parametrize(
    ("counter", "expected"),
    [(0, "a9b76a71c5f89290"), (2000, "4144413e45fefa58")],
)
def test_published_vectors(counter: int, expected: str) -> None:
    assert eid.compute_eid(IK, 10, counter).hex() == expected


def test_eid_is_constant_within_a_window_and_changes_across() -> None:
    # K = 10: windows of 1024 s. 2000 lies in [1024, 2048).
    assert eid.compute_eid(IK, 10, 1024) == eid.compute_eid(IK, 10, 2047)
    assert eid.compute_eid(IK, 10, 1023) != eid.compute_eid(IK, 10, 1024)


def test_compute_eids_matches_single_computation_across_an_epoch_boundary() -> None:
    counters = [65536 - 1024, 65536, 65536 + 1024, 5]
    assert eid.compute_eids(IK, 10, counters) == [eid.compute_eid(IK, 10, c) for c in counters]


def test_counter_wraps_modulo_2_32() -> None:
    assert eid.counter_at(2**32 + 7.9) == 7
    assert eid.compute_eid(IK, 10, 2**32) == eid.compute_eid(IK, 10, 0)


@pytest.mark.parametrize(("key", "exponent"), [(b"short", 10), (IK, 16), (IK, -1)])
def test_bad_keys_are_refused(key: bytes, exponent: int) -> None:
    with pytest.raises(ValueError, match=r"identity key|exponent"):
        eid.compute_eid(key, exponent, 0)
