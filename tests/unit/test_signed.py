"""Signed messages (edge/core/signed.py): only a trusted key's signature for this topic counts."""

from __future__ import annotations

import base64
import contextlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import bundle, signed, wire

BRIDGE = bundle.generate_signing_key(random.Random("signed-bridge").randbytes)
OTHER = bundle.generate_signing_key(random.Random("signed-other").randbytes)
TOPIC = "threshold/v1/acme/store-001/door-1/ack"
OTHER_TOPIC = "threshold/v1/acme/store-001/door-2/ack"
PAYLOAD = wire.encode(wire.Ack(("e1", "e2")))


def test_a_signed_payload_verifies_for_its_topic_and_says_who_signed() -> None:
    data = signed.sign(PAYLOAD, TOPIC, BRIDGE)
    verified = signed.verify(data, TOPIC, [OTHER.public_key(), BRIDGE.public_key()])
    assert verified.payload == PAYLOAD
    assert verified.signer == bundle.key_id(BRIDGE)
    assert json.loads(data)["signer"] == bundle.key_id(BRIDGE)


def _altered(data: bytes, **fields: object) -> bytes:
    obj = json.loads(data)
    obj.update(fields)
    return json.dumps(obj).encode()


GOOD = signed.sign(PAYLOAD, TOPIC, BRIDGE)
FORGED_PAYLOAD = _altered(
    GOOD, payload=base64.b64encode(wire.encode(wire.Ack(("e1", "e3")))).decode()
)


@pytest.mark.parametrize(
    ("data", "topic", "reason"),
    [
        (GOOD, OTHER_TOPIC, signed.SignedReason.BAD_SIGNATURE),
        (FORGED_PAYLOAD, TOPIC, signed.SignedReason.BAD_SIGNATURE),
        (signed.sign(PAYLOAD, TOPIC, OTHER), TOPIC, signed.SignedReason.UNKNOWN_SIGNER),
        (PAYLOAD, TOPIC, signed.SignedReason.UNSIGNED),
        (b'{"v":1,"type":"campaigns","version":99999999999999999999}', TOPIC, "unsigned"),
        (b"", TOPIC, signed.SignedReason.MALFORMED),
        (b"not json", TOPIC, signed.SignedReason.MALFORMED),
        (b"[" * 10_000, TOPIC, signed.SignedReason.MALFORMED),
        (b"[1, 2]", TOPIC, signed.SignedReason.MALFORMED),
        (_altered(GOOD, format=2), TOPIC, signed.SignedReason.UNKNOWN_FORMAT),
        (_altered(GOOD, v=2), TOPIC, signed.SignedReason.UNKNOWN_FORMAT),
        (_altered(GOOD, v=10**5000 // 10**4999), TOPIC, signed.SignedReason.UNKNOWN_FORMAT),
        (_altered(GOOD, extra={"deep": [[[]]]}), TOPIC, signed.SignedReason.MALFORMED),
        (_altered(GOOD, signature="AAAA"), TOPIC, signed.SignedReason.MALFORMED),
        (_altered(GOOD, signer="ZZ"), TOPIC, signed.SignedReason.MALFORMED),
        (_altered(GOOD, payload=12), TOPIC, signed.SignedReason.MALFORMED),
        (GOOD.replace(b'"format":1', b'"format":1e999'), TOPIC, signed.SignedReason.MALFORMED),
        (b" " * (3 * signed.MAX_SIGNED_BYTES), TOPIC, signed.SignedReason.MALFORMED),
        # Deep nesting where msgspec skips an unknown field raised RecursionError out of verify.
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, TOPIC, signed.SignedReason.MALFORMED),
        (b'{"type":"signed","x":' + b"[" * 10_000, TOPIC, signed.SignedReason.MALFORMED),
        (b'{"type":"ack","x":' + b'{"a":' * 10_000, TOPIC, signed.SignedReason.MALFORMED),
    ],
    ids=[
        "another-topic",
        "payload-swapped",
        "untrusted-signer",
        "plain-ack",
        "plain-huge-campaigns",
        "empty",
        "not-json",
        "deep",
        "a-list",
        "format-2",
        "version-2",
        "version-10",
        "unknown-field",
        "short-signature",
        "bad-signer-id",
        "payload-not-bytes",
        "non-finite",
        "oversized",
        "deep-unknown-field",
        "deep-in-an-envelope",
        "deep-in-a-plain-payload",
    ],
)
def test_a_message_not_signed_by_a_trusted_key_for_this_topic_is_refused(
    data: bytes, topic: str, reason: str
) -> None:
    with pytest.raises(signed.SignedRejected) as caught:
        signed.verify(data, topic, [BRIDGE.public_key()], "topic t")
    assert caught.value.reason == reason
    assert "topic t" in caught.value.message


def test_nothing_is_trusted_without_trusted_keys() -> None:
    with pytest.raises(signed.SignedRejected, match="unknown_signer"):
        signed.verify(GOOD, TOPIC, [])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_are_refused_or_verified_never_an_exception(data: bytes) -> None:
    with contextlib.suppress(signed.SignedRejected):
        signed.verify(data, TOPIC, [BRIDGE.public_key()])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=60))
def test_every_payload_round_trips_for_its_topic(payload: bytes, topic: str) -> None:
    data = signed.sign(payload, topic, BRIDGE)
    assert signed.verify(data, topic, [BRIDGE.public_key()]).payload == payload


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"[", b'{"a":', b'{"type":"signed","x":', b'{"v":1,"payload":']),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=1, max_value=20_000),
    st.sampled_from([b"", b"1", b"]", b"}", b'"x"}']),
)
def test_nesting_of_any_depth_and_shape_is_refused_never_an_exception(
    openers: list[bytes], depth: int, tail: bytes
) -> None:
    data = b"".join(openers[i % len(openers)] for i in range(depth)) + tail * depth
    with pytest.raises(signed.SignedRejected):
        signed.verify(data[: 2 * signed.MAX_SIGNED_BYTES], TOPIC, [BRIDGE.public_key()])
