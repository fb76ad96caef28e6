"""Every wire decoder against hostile bytes: property tests and a table of known attacks.

Whatever arrives, a decoder returns a valid payload or raises WireError naming where it came from
and the field; nothing else escapes, nothing recurses without bound, nothing huge is parsed.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core import wire

WHERE = "topic threshold/v1/acme/store-042/door-1/x"
FUZZ = settings(
    max_examples=200,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PAYLOAD_CLASSES: list[type[Any]] = [
    wire.Status,
    wire.Visit,
    wire.OfferTrigger,
    wire.Ack,
    wire.ShopperOffer,
    wire.OfferReceipt,
    wire.RosterSync,
    wire.CampaignSync,
    wire.CloneAlert,
]

# --- Strategies for valid payloads ----------------------------------------------------------------

_text_chars = st.characters(blacklist_categories=("Cs",))  # no lone surrogates: not UTF-8


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_text_chars, max_size=max_size)


ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,63}\Z")
times = st.floats(0.0, 1e11)
durations = st.floats(0.0, 1e9)
versions = st.integers(0, wire.MAX_VERSION)
counts = st.integers(0, 2**63 - 1)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(-1e15, 1e15),
    texts(100),
)
keys = texts(64)
scalar_maps = st.dictionaries(keys, scalars, max_size=8)


def rounded(strategy: st.SearchStrategy[float], digits: int) -> st.SearchStrategy[float]:
    """Floats as `to_json` rounds them, so that a round trip compares equal."""
    return strategy.map(lambda x: round(x, digits))


statuses = st.builds(
    wire.Status,
    state=st.sampled_from(["online", "offline"]),
    ts=times,
    software=texts(200),
    uptime_s=rounded(durations, 3),
    outbox_pending=counts,
    roster_version=versions,
    campaigns_version=versions,
    radio=scalar_maps,
    counters=st.dictionaries(keys, counts, max_size=8),
    sync=st.dictionaries(keys, st.one_of(scalars, scalar_maps), max_size=8),
    clock=scalar_maps,
)
bridge_statuses = st.builds(
    wire.BridgeStatus,
    state=st.sampled_from(["online", "offline"]),
    ts=times,
    bridge=ids,
    software=texts(200),
    uptime_s=rounded(durations, 3),
    counters=st.dictionaries(keys, counts, max_size=8),
)
visits = st.builds(
    wire.Visit, ids, times, times, ids, ids, ids, rounded(st.floats(-199.0, 49.0), 1)
)
triggers = st.builds(wire.OfferTrigger, ids, ids, times, times, ids, ids, ids, ids)
acks = st.builds(wire.Ack, st.lists(ids, max_size=50).map(tuple))
offers = st.builds(wire.ShopperOffer, ids, ids, texts(500), texts(4000), ids, times, times)
receipts = st.builds(wire.OfferReceipt, st.lists(ids, max_size=50).map(tuple))
devices = st.builds(
    wire.RosterDevice, ids, ids, ids, st.binary(min_size=16, max_size=16), st.integers(0, 15)
)
rosters = st.builds(wire.RosterSync, ids, versions, st.lists(devices, max_size=5).map(tuple))
campaign_specs = st.builds(
    wire.CampaignSpec,
    ids,
    texts(500),
    texts(1000),
    st.lists(ids, max_size=5).map(tuple),
    durations,
    st.integers(-(2**31), 2**31 - 1),
)
campaigns = st.builds(
    wire.CampaignSync, ids, versions, durations, st.lists(campaign_specs, max_size=5).map(tuple)
)
alerts = st.builds(
    wire.CloneAlert,
    st.integers(1, 2**63 - 1),
    ids,
    st.one_of(st.none(), ids),
    st.sampled_from(wire.CLONE_REASONS),
    ids,
    ids,
    times,
    ids,
    ids,
    times,
    rounded(durations, 3),
    st.one_of(st.none(), rounded(st.floats(0.0, 1e5), 3)),
    st.one_of(st.none(), rounded(st.floats(0.0, 1e12), 1)),
    st.sampled_from(wire.ALERT_STATUSES),
    times,
)
payloads = st.one_of(
    statuses, bridge_statuses, visits, triggers, acks, offers, receipts, rosters, campaigns, alerts
)

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        texts(40),
    ),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(texts(10), children, max_size=5)
    ),
    max_leaves=30,
)


def dumps(obj: Any) -> bytes:
    """JSON as a careless or hostile sender writes it (NaN and Infinity included)."""
    return json.dumps(obj).encode()


def decoded_or_wire_error(data: bytes, cls: type[Any] | None = None) -> None:
    """Decode; only a payload (of `cls`) or a WireError naming WHERE may come out."""
    try:
        payload = wire.decode(data, WHERE) if cls is None else wire.decode_as(data, cls, WHERE)
    except wire.WireError as exc:
        assert exc.reason.startswith(WHERE), exc.reason
        return
    assert isinstance(payload, cls or wire.Payload)


# --- Properties -------------------------------------------------------------------------------------


@FUZZ
@given(payloads)
def test_every_valid_payload_round_trips(payload: wire.Payload) -> None:
    data = wire.encode(payload)
    assert wire.decode(data, WHERE) == payload
    assert wire.decode_as(data, type(payload), WHERE) == payload


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([None, *PAYLOAD_CLASSES]))
def test_arbitrary_bytes_raise_only_wire_error(data: bytes, cls: type[Any] | None) -> None:
    decoded_or_wire_error(data, cls)


@FUZZ
@given(json_values, st.sampled_from([None, *PAYLOAD_CLASSES]))
def test_arbitrary_json_raises_only_wire_error(value: Any, cls: type[Any] | None) -> None:
    decoded_or_wire_error(dumps(value), cls)


@FUZZ
@given(
    st.dictionaries(texts(12), json_values, max_size=8),
    st.sampled_from(PAYLOAD_CLASSES),
)
def test_arbitrary_objects_of_a_known_type_raise_only_wire_error(
    fields: dict[str, Any], cls: type[Any]
) -> None:
    decoded_or_wire_error(dumps({**fields, "v": 1, "type": cls.TYPE}), cls)


@FUZZ
@given(payloads, st.data())
def test_mutated_valid_payloads_raise_only_wire_error(payload: wire.Payload, data: Any) -> None:
    obj = json.loads(wire.encode(payload))
    name = data.draw(st.sampled_from(sorted(obj)), label="field")
    how = data.draw(st.sampled_from(["replace", "drop", "nest"]), label="how")
    if how == "drop":
        del obj[name]
    elif how == "replace":
        obj[name] = data.draw(json_values, label="value")
    else:
        obj[name] = [obj[name]] if data.draw(st.booleans()) else {"x": obj[name]}
    decoded_or_wire_error(dumps(obj), type(payload))


@FUZZ
@given(payloads, st.data())
def test_spliced_valid_payloads_raise_only_wire_error(payload: wire.Payload, data: Any) -> None:
    raw = wire.encode(payload)
    start = data.draw(st.integers(0, len(raw)), label="start")
    length = data.draw(st.integers(0, len(raw) - start), label="length")
    insert = data.draw(st.binary(max_size=12), label="insert")
    decoded_or_wire_error(raw[:start] + insert + raw[start + length :], type(payload))


# --- A table of hostile payloads ----------------------------------------------------------------

VISIT = json.loads(wire.encode(wire.Visit("e-1", 10.0, 11.0, "m-1", "d-1", "gold", -61.5)))
STATUS = {"v": 1, "type": "status", "state": "online", "ts": 1795000000.0}
ACK = {"v": 1, "type": "ack", "event_ids": ["e-1"]}
ALERT = json.loads(
    wire.encode(
        wire.CloneAlert(
            7,
            "d-1",
            None,
            "too_fast",
            "e1",
            "s-1",
            10.0,
            "e3",
            "s-2",
            310.0,
            300.0,
            262.5,
            3150.0,
            "open",
            320.0,
        )
    )
)
DEEP = 100_000


class Verbatim(str):
    """JSON text to put into a payload as it is (NaN, 5,000 digits, deep nesting)."""


def raw(obj: dict[str, Any], **changes: Any) -> bytes:
    """`obj` with fields changed; a Verbatim value goes into the JSON as it is."""
    body = json.dumps({**obj, **{k: f"@@{k}@@" for k in changes}}, separators=(",", ":"))
    for k, v in changes.items():
        body = body.replace(f'"@@{k}@@"', v if isinstance(v, Verbatim) else json.dumps(v))
    return body.encode()


HOSTILE: dict[str, tuple[bytes, type[Any], str]] = {
    # (payload, the type the topic expects, what the reason must name)
    "deep-nesting-in-a-known-map": (
        raw(STATUS, radio=Verbatim("[" * DEEP + "]" * DEEP)),
        wire.Status,
        "over the 65536-byte limit",
    ),
    "deep-nesting-in-an-unknown-field": (
        raw(STATUS, extra=Verbatim("[" * 30_000 + "]" * 30_000)),
        wire.Status,
        "nested too deeply",
    ),
    "deep-nesting-in-a-roster-file": (
        raw(
            {"v": 1, "type": "roster", "store": "s", "version": 1},
            devices=Verbatim("[" * DEEP + "]" * DEEP),
        ),
        wire.RosterSync,
        "nested too deeply",
    ),
    "deep-nesting-one-level-too-many-in-sync": (
        raw(STATUS, sync=Verbatim('{"a":{"b":{"c":1}}}')),
        wire.Status,
        "$.sync[...][...]",
    ),
    "5000-digit-integer-time": (raw(VISIT, ts=Verbatim("9" * 5000)), wire.Visit, "$.ts"),
    "5000-digit-integer-counter": (
        raw(STATUS, counters=Verbatim('{"adverts":' + "9" * 5000 + "}")),
        wire.Status,
        "$.counters",
    ),
    "5000-digit-integer-version": (
        raw(STATUS, roster_version=Verbatim("1" * 5000)),
        wire.Status,
        "$.roster_version",
    ),
    "5000-digit-v": (raw(STATUS, v=Verbatim("1" * 5000)), wire.Status, "$.v"),
    "nan-rssi": (raw(VISIT, rssi_dbm=Verbatim("NaN")), wire.Visit, "not JSON"),
    "infinity-time": (raw(VISIT, ts=Verbatim("Infinity")), wire.Visit, "not JSON"),
    "overflow-to-infinity": (
        raw(VISIT, detected_at=Verbatim("1e999")),
        wire.Visit,
        "$.detected_at",
    ),
    "negative-infinity-uptime": (
        raw(STATUS, uptime_s=Verbatim("-1e999")),
        wire.Status,
        "$.uptime_s",
    ),
    "minus-zero-alert-id": (raw(ALERT, alert_id=Verbatim("-0")), wire.CloneAlert, "$.alert_id"),
    "negative-duration": (raw(ALERT, elapsed_s=-1.0), wire.CloneAlert, "$.elapsed_s"),
    "rssi-out-of-range": (raw(VISIT, rssi_dbm=-1000), wire.Visit, "$.rssi_dbm"),
    "time-before-1970": (raw(VISIT, ts=-5), wire.Visit, "$.ts"),
    "negative-version": (raw(STATUS, roster_version=-1), wire.Status, "$.roster_version"),
    "bool-for-number": (raw(VISIT, ts=True), wire.Visit, "$.ts"),
    "string-for-number": (raw(VISIT, ts="1"), wire.Visit, "$.ts"),
    "number-for-id": (raw(VISIT, member=7), wire.Visit, "$.member"),
    "string-for-list": (raw(ACK, event_ids="e-1"), wire.Ack, "$.event_ids"),
    "object-for-state": (raw(STATUS, state={"a": 1}), wire.Status, "$.state"),
    "list-in-counters": (raw(STATUS, counters={"adverts": [1]}), wire.Status, "$.counters"),
    "string-in-counters": (raw(STATUS, counters={"adverts": "1"}), wire.Status, "$.counters"),
    "oversized": (
        raw(VISIT, pad="x" * wire.MAX_PAYLOAD_BYTES),
        wire.Visit,
        "over the 65536-byte limit",
    ),
    "unknown-type": (raw(VISIT, type="refund"), wire.Visit, "unknown payload type 'refund'"),
    "missing-type": (raw({k: v for k, v in VISIT.items() if k != "type"}), wire.Visit, "$.type"),
    "other-type": (raw(ACK), wire.Visit, "expected a 'visit' payload, got 'ack'"),
    "missing-version": (raw({k: v for k, v in VISIT.items() if k != "v"}), wire.Visit, "$.v"),
    "version-2": (raw(VISIT, v=2), wire.Visit, "payload version 2 is not supported"),
    "version-true": (raw(VISIT, v=True), wire.Visit, "$.v"),
    "version-float": (raw(VISIT, v=1.0), wire.Visit, "$.v"),
    "uppercase-id": (raw(VISIT, member="M-1"), wire.Visit, "$.member"),
    "id-with-a-slash": (raw(VISIT, device="d/1"), wire.Visit, "$.device"),
    "id-with-a-wildcard": (raw(VISIT, event_id="e+"), wire.Visit, "$.event_id"),
    "empty-id": (raw(VISIT, tier=""), wire.Visit, "$.tier"),
    "65-char-id": (raw(VISIT, event_id="e" * 65), wire.Visit, "$.event_id"),
    "unicode-id": (raw(VISIT, member="mé"), wire.Visit, "$.member"),
    "bad-id-in-a-list": (
        raw(ACK, event_ids=["e-1", "e-2", "e-3", "E 4"]),
        wire.Ack,
        "$.event_ids[3]",
    ),
    "huge-ack": (
        raw(ACK, event_ids=[f"e{i}" for i in range(wire.MAX_ACK_IDS + 1)]),
        wire.Ack,
        "$.event_ids",
    ),
    "many-counters": (
        raw(STATUS, counters={f"c{i}": i for i in range(65)}),
        wire.Status,
        "$.counters",
    ),
    "long-radio-text": (raw(STATUS, radio={"last_error": "x" * 1001}), wire.Status, "$.radio"),
    "not-utf8": (b'{"v":1,"type":"visit","member":"\xff"}', wire.Visit, "not JSON"),
    "not-an-object": (b"[1,2,3]", wire.Visit, "Expected `object`"),
    "empty": (b"", wire.Visit, "not JSON"),
    "truncated": (raw(VISIT)[:-5], wire.Visit, "not JSON"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_hostile_payloads_are_refused_naming_topic_and_field(case: str) -> None:
    data, cls, named = HOSTILE[case]
    with pytest.raises(wire.WireError) as info:
        wire.decode_as(data, cls, WHERE)
    assert info.value.reason.startswith(WHERE)
    assert named in info.value.reason
    if case != "other-type":  # a valid ack, on a topic that expects a visit
        with pytest.raises(wire.WireError):
            wire.decode(data, WHERE)


def test_the_size_limit_is_checked_before_parsing() -> None:
    """An oversized payload is refused even when it is not JSON at all."""
    with pytest.raises(wire.WireError, match="over the"):
        wire.decode_as(b"\xff" * (wire.MAX_PAYLOAD_BYTES + 1), wire.Visit, WHERE)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = raw(VISIT, added_later={"a": [1, 2, {"b": None}]})
    assert wire.decode_as(data, wire.Visit, WHERE).event_id == "e-1"


def test_a_non_finite_float_never_decodes() -> None:
    for literal in ("1e999", "-1e999", "NaN", "Infinity", "-Infinity"):
        with pytest.raises(wire.WireError):
            wire.decode_as(raw(VISIT, rssi_dbm=Verbatim(literal)), wire.Visit, WHERE)
    assert math.isfinite(
        wire.decode_as(raw(VISIT, rssi_dbm=Verbatim("-0")), wire.Visit, WHERE).rssi_dbm
    )


def test_a_full_roster_at_100k_devices_fits_the_roster_limit() -> None:
    device = wire.RosterDevice("a" * 32, "b" * 32, "gold", bytes(16), 10)
    roster = wire.encode(wire.RosterSync("store-001", 1, (device,) * 100_000))
    assert len(roster) < wire.MAX_BUNDLE_BYTES
    assert len(wire.decode_as(roster, wire.RosterSync, "the saved roster").devices) == 100_000


def test_a_reason_stays_short_whatever_the_value() -> None:
    """msgspec quotes the bad value; a log line must not carry tens of kilobytes of it."""
    with pytest.raises(wire.WireError) as info:
        wire.decode_as(raw(ALERT, reason="x" * 60_000), wire.CloneAlert, WHERE)
    assert "$.reason" in info.value.reason and len(info.value.reason) < 1000
