"""Property-based tests for what the other fuzzers leave out: topics and certificate names from
the network, and nesting of any depth and shape in every decoder (the recursion msgspec does
when it skips an unknown field once escaped signed.verify). Each decoder answers its own error
type and nothing else."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core import bundle, signed, wire
from edge.core.broker_identity import IdentityError, parse_identity
from edge.services.inbox import SENDER_SEGMENTS, sender_of
from tests.unit.test_bundle import open_as

FUZZ = settings(
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PAYLOAD_CLASSES: list[Any] = [
    wire.Status,
    wire.Visit,
    wire.OfferTrigger,
    wire.Ack,
    wire.ShopperOffer,
    wire.OfferReceipt,
    wire.CampaignSync,
    wire.CloneAlert,
    wire.RosterSync,
]
# Topic segments as a hostile client writes them: ids, near-ids, wildcards, empty, unicode, long.
segments = st.one_of(
    st.from_regex(wire.ID_PATTERN, fullmatch=True),
    st.sampled_from(["", "+", "#", "$share", "event", "status", "receipt", "shopper", "visit"]),
    st.text(max_size=80),
    st.text(alphabet="ab-_/", min_size=60, max_size=70),
)
topics = st.lists(segments, min_size=0, max_size=9).map("/".join) | st.builds(
    lambda tail: f"{wire.TOPIC_ROOT}/{tail}", st.lists(segments, max_size=6).map("/".join)
)


@FUZZ
@given(topics)
def test_any_topic_parses_or_raises_only_wire_error(topic: str) -> None:
    for parse in (wire.parse_event_topic, wire.parse_status_topic, wire.parse_receipt_topic):
        try:
            parsed = parse(topic)
        except wire.WireError as exc:
            assert exc.reason
            continue
        # Whatever parses names only valid ids, and the topic it was parsed from is canonical.
        if isinstance(parsed, wire.EventTopic):
            assert wire.event_topic(parsed.gateway, parsed.kind) == topic
        elif isinstance(parsed, wire.GatewayAddress):
            assert wire.status_topic(parsed) == topic
        else:
            assert wire.shopper_receipt_topic(parsed.chain, parsed.shopper) == topic


@FUZZ
@given(topics)
def test_the_sender_of_any_topic_is_a_prefix_of_at_most_five_segments(topic: str) -> None:
    sender = sender_of(topic)
    assert topic.startswith(sender)
    assert len(sender.split("/")) <= SENDER_SEGMENTS
    rest = topic[len(sender) :]
    assert rest == "" or rest.startswith("/")


@FUZZ
@given(st.lists(segments, max_size=5).map("/".join))
def test_any_certificate_name_is_an_identity_or_an_identity_error(common_name: str) -> None:
    try:
        identity = parse_identity(common_name)
    except IdentityError:
        return
    assert identity.common_name == common_name


# Nesting: a random mix of openers (arrays, objects, fields a schema knows or does not), repeated
# to a random depth, then a random tail (closed, cut short, or junk).
_OPENERS = [
    b"[",
    b'{"a":',
    b'{"v":1,"type":"status","sync":',
    b'{"v":1,"type":"ack","event_ids":',
    b'{"v":1,"type":"visit","x":',
    b'{"v":1,"type":"signed","payload":',
    b'{"format":1,"extra":',
]


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    openers = draw(st.lists(st.sampled_from(_OPENERS), min_size=1, max_size=4))
    depth = draw(st.integers(min_value=1, max_value=20_000))
    tail = draw(st.sampled_from([b"", b"1", b"null", b"]", b"}", b'"x"}', b"]}"]))
    closers = draw(st.booleans())
    body = b"".join(openers[i % len(openers)] for i in range(depth))
    return body + (tail * depth if closers else tail)


@FUZZ
@given(nested(), st.sampled_from([None, *PAYLOAD_CLASSES]))
def test_nesting_of_any_depth_is_a_wire_error_in_every_wire_decoder(
    data: bytes, cls: type[Any] | None
) -> None:
    with contextlib.suppress(wire.WireError):
        if cls is None:
            wire.decode(data, "t")
        else:
            wire.decode_as(data, cls, "t")


@FUZZ
@given(nested())
def test_nesting_of_any_depth_is_refused_by_signed_verify(data: bytes) -> None:
    with pytest.raises(signed.SignedRejected):
        signed.verify(data, "t", [])


@FUZZ
@given(nested())
def test_nesting_of_any_depth_is_a_rejected_bundle(data: bytes) -> None:
    with pytest.raises(bundle.BundleRejected):
        open_as(data)
