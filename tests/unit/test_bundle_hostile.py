"""Roster bundles against hostile bytes: a gateway only ever answers BundleRejected with a reason."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core import bundle
from edge.core.bundle import BundleRejected, FullRoster, RejectReason
from tests.factories import make_device
from tests.unit.test_bundle import FULL_V1, SIGNER, open_as, seal

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIELDS = sorted(json.loads(FULL_V1))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def resigned(changes: dict[str, Any], drop: str | None = None) -> bytes:
    """FULL_V1 with `changes` (and without `drop`), signed again by the bridge's key."""
    obj = {**json.loads(FULL_V1), **changes}
    obj = {k: v for k, v in obj.items() if k not in ("signature", drop)}
    signature = SIGNER.sign(bundle.canonical_json(obj))
    return bundle.canonical_json({**obj, "signature": base64.b64encode(signature).decode()})


def rejected(data: bytes, **open_args: Any) -> BundleRejected:
    with pytest.raises(BundleRejected) as info:
        open_as(data, **open_args)
    assert info.value.message
    return info.value


@FUZZ
@given(st.sampled_from(FIELDS), json_values)
def test_any_value_in_any_signed_field_is_only_ever_rejected(name: str, value: Any) -> None:
    if name == "signature":
        return  # resign replaces it
    try:
        data = resigned({name: value})
    except ValueError:  # NaN, Infinity: canonical JSON cannot carry them (nor can the bridge)
        return
    with contextlib.suppress(BundleRejected):
        open_as(data)


@FUZZ
@given(st.sampled_from(FIELDS), st.booleans())
def test_a_dropped_or_duplicated_field_is_rejected(name: str, duplicate: bool) -> None:
    if duplicate or name == "signature":  # resigned() would sign it again
        value = json.dumps(json.loads(FULL_V1)[name]).encode()
        data = FULL_V1[:-1] + b',"' + name.encode() + b'":' + value + b"}"
    else:
        data = resigned({}, drop=name)
    assert rejected(data).reason in (
        RejectReason.MALFORMED,
        RejectReason.UNKNOWN_TYPE,
        RejectReason.UNKNOWN_FORMAT,
    )


@FUZZ
@given(json_values)
def test_any_decrypted_body_is_only_ever_rejected_as_bad_body(body: Any) -> None:
    plaintext = json.dumps(body).encode()
    with mock.patch.object(bundle, "encode_body", lambda *_: plaintext):
        data = seal(FullRoster((make_device(),)), 1)
    try:
        opened = open_as(data)
    except BundleRejected as exc:
        assert exc.reason is RejectReason.BAD_BODY, exc.message
    else:
        assert isinstance(opened.change, FullRoster)


DEEP = 100_000
HOSTILE_BODIES = {
    "deep-nesting": b'{"devices":' + b"[" * DEEP + b"]" * DEEP + b"}",
    "5000-digit-exponent": b'{"devices":[["d-1","m-1","gold","'
    + b"0" * 32
    + b'",'
    + b"9" * 5000
    + b"]]}",
    "nan-exponent": b'{"devices":[["d-1","m-1","gold","' + b"0" * 32 + b'",NaN]]}',
    "bool-exponent": b'{"devices":[["d-1","m-1","gold","' + b"0" * 32 + b'",true]]}',
    "short-row": b'{"devices":[["d-1","m-1","gold"]]}',
    "bad-ref": b'{"devices":[["D 1","m-1","gold","' + b"0" * 32 + b'",10]]}',
    "extra-field": b'{"devices":[],"note":1}',
    "not-an-object": b"[]",
}


@pytest.mark.parametrize("case", HOSTILE_BODIES, ids=str)
def test_hostile_format_1_bodies_are_rejected_naming_the_field(case: str) -> None:
    with mock.patch.object(bundle, "encode_body", lambda *_: HOSTILE_BODIES[case]):
        data = seal(FullRoster((make_device(),)), 1, bundle_format=1)
    rejection = rejected(data)
    assert rejection.reason is RejectReason.BAD_BODY
    assert "invalid body" in rejection.message


KEY = "0" * 32
# Format 2 rows: [ref, member, tier, key, exponent, kind, prefs]; (row, the field named).
HOSTILE_ROWS = {
    "six-fields": (["d-1", "m-1", "gold", KEY, 10, "app"], "$.devices[0]"),
    "eight-fields": (["d-1", "m-1", "gold", KEY, 10, "app", None, 1], "$.devices[0]"),
    "format-1-row": (["d-1", "m-1", "gold", KEY, 10], "$.devices[0]"),
    "unknown-kind": (["d-1", "m-1", "gold", KEY, 10, "phone", None], "$.devices[0][5]"),
    "kind-as-number": (["d-1", "m-1", "gold", KEY, 10, 1, None], "$.devices[0][5]"),
    "prefs-object": (["d-1", "m-1", "gold", KEY, 10, "app", {"per_day": 1}], "$.devices[0][6]"),
    "prefs-three": (["d-1", "m-1", "gold", KEY, 10, "app", [0, 0, 1]], "$.devices[0][6]"),
    "prefs-five": (["d-1", "m-1", "gold", KEY, 10, "app", [0, 0, 1, 1, 1]], "$.devices[0][6]"),
    "negative-mask": (["d-1", "m-1", "gold", KEY, 10, "app", [-1, 0, 1, 1]], "$.devices[0][6][0]"),
    "mask-64-bits": (
        ["d-1", "m-1", "gold", KEY, 10, "app", [0, 2**63, 1, 1]],
        "$.devices[0][6][1]",
    ),
    "huge-mask": (["d-1", "m-1", "gold", KEY, 10, "tag", [10**40, 0, 1, 1]], "$.devices[0][6][0]"),
    "float-mask": (["d-1", "m-1", "gold", KEY, 10, "app", [1.5, 0, 1, 1]], "$.devices[0][6][0]"),
    "per-day-25": (["d-1", "m-1", "gold", KEY, 10, "app", [0, 0, 25, 100]], "$.devices[0][6][2]"),
    "per-day-negative": (
        ["d-1", "m-1", "gold", KEY, 10, None, [0, 0, -1, 1]],
        "$.devices[0][6][2]",
    ),
    "per-day-true": (["d-1", "m-1", "gold", KEY, 10, "app", [0, 0, True, 1]], "$.devices[0][6][2]"),
    "per-week-101": (["d-1", "m-1", "gold", KEY, 10, "app", [0, 0, 1, 101]], "$.devices[0][6][3]"),
    "per-week-string": (
        ["d-1", "m-1", "gold", KEY, 10, "app", [0, 0, 1, "3"]],
        "$.devices[0][6][3]",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_ROWS, ids=str)
def test_hostile_format_2_rows_are_rejected_naming_the_row_and_field(case: str) -> None:
    bad, field = HOSTILE_ROWS[case]
    good = ["d-0", "m-0", "gold", KEY, 10, "app", [5, 2, 1, 3]]
    body = json.dumps({"devices": [bad, good]}).encode()
    with mock.patch.object(bundle, "encode_body", lambda *_: body):
        data = seal(FullRoster((make_device(),)), 1, bundle_format=2)
    rejection = rejected(data)
    assert rejection.reason is RejectReason.BAD_BODY
    assert f"field {field}" in rejection.message, rejection.message
    assert "format 2" in rejection.message and "per_day 0..24" in rejection.message


def test_hostile_rows_in_a_format_2_delta_name_the_list() -> None:
    body = json.dumps(
        {"add": [], "remove": [], "rotate": [["d-1", "m-1", "gold", KEY, 10, "app", [0, 0, 0, -3]]]}
    ).encode()
    with mock.patch.object(bundle, "encode_body", lambda *_: body):
        data = seal(bundle.RosterDelta(1), 2)
    rejection = rejected(data, current_version=1)
    assert rejection.reason is RejectReason.BAD_BODY
    assert "field $.rotate[0][6][3]" in rejection.message


HOSTILE_ENVELOPES = {
    "deep-nesting": FULL_V1[:-1] + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}",
    "5000-digit-version": FULL_V1.replace(b'"version":1', b'"version":' + b"1" * 5000),
    "overflowing-version": FULL_V1.replace(b'"version":1', b'"version":1e999'),
    "nan-version": FULL_V1.replace(b'"version":1', b'"version":NaN'),
    "minus-zero-version": FULL_V1.replace(b'"version":1', b'"version":-0'),
    "oversized": FULL_V1[:-1] + b',"x":"' + b"a" * bundle.MAX_BUNDLE_BYTES + b'"}',
    "not-ascii": FULL_V1.replace(b'"door-1"', '"döor-1"'.encode()),
    "wrong-type-chain": FULL_V1.replace(b'"chain":"acme"', b'"chain":7'),
}


@pytest.mark.parametrize("case", HOSTILE_ENVELOPES, ids=str)
def test_hostile_envelopes_are_rejected_as_malformed(case: str) -> None:
    data = HOSTILE_ENVELOPES[case]
    assert data != FULL_V1
    assert rejected(data).reason is RejectReason.MALFORMED


def test_a_malformed_field_is_named() -> None:
    rejection = rejected(resigned({"nonce": "AAAA"}))
    assert "$.nonce" in rejection.message
    rejection = rejected(resigned({"store": "Store 1"}))
    assert "$.store" in rejection.message
