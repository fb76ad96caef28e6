"""The wire contract: topics, round trips, and errors that name what is wrong."""

from __future__ import annotations

import re

import pytest

from edge.core import wire
from tests.factories import make_campaigns, make_device

GW = wire.GatewayAddress("acme", "store-042", "door-1")

PAYLOADS: list[wire.Payload] = [
    wire.Status(
        "online", 1.5, "threshold-edge 0.1.0", 3.0, 2, 7, 3, {"source": "simulated"}, {"adverts": 9}
    ),
    wire.Status(
        "online", 1.5, sync={"key_id": "af98dc1bbd4312aa", "rejections": 0, "last_rejection": None}
    ),
    wire.Status(
        "online",
        1.5,
        clock={
            "suspect": True,
            "offset_windows": None,
            "reason": "no EID resolved",
            "resolved": 0,
            "unknown_eids": 25,
        },
    ),
    wire.Visit("e1", 10.0, 11.0, "m-1", "d-1", "gold", -61.5),
    wire.OfferTrigger("e2", "e1", 10.0, 11.0, "m-1", "d-1", "gold", "gold-points"),
    wire.Ack(("e1", "e2")),
    wire.ShopperOffer("e2", "gold-points", "Double points", "Today only", "store-042", 12.0, 11.0),
    wire.RosterSync("store-042", 3, (make_device(), make_device(exponent=12))),
    make_campaigns(),
    wire.CloneAlert(
        7,
        "d-1",
        "m-1",
        "too_fast",
        "e1",
        "store-001",
        10.0,
        "e3",
        "store-002",
        310.0,
        300.0,
        262.5,
        3150.0,
        "open",
        320.0,
    ),
    wire.CloneAlert(
        8,
        "d-1",
        "m-1",
        "simultaneous",
        "e1",
        "store-001",
        10.0,
        "e4",
        "store-009",
        10.0,
        0.0,
        None,
        None,
        "revoked",
        320.0,
    ),
]

ALERT = wire.encode(PAYLOADS[-1]).decode()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.TYPE)
def test_round_trip(payload: wire.Payload) -> None:
    assert wire.decode(wire.encode(payload)) == payload


def test_topics() -> None:
    assert wire.status_topic(GW) == "threshold/v1/acme/store-042/door-1/status"
    assert wire.event_topic(GW, "offer") == "threshold/v1/acme/store-042/door-1/event/offer"
    assert wire.ack_topic(GW) == "threshold/v1/acme/store-042/door-1/ack"
    assert wire.roster_bundle_topic(GW) == "threshold/v1/acme/store-042/door-1/sync/roster"
    assert wire.campaigns_topic(GW) == "threshold/v1/acme/store-042/door-1/sync/campaigns"
    assert wire.shopper_offer_topic("acme", "ab12") == "threshold/v1/acme/shopper/ab12/offer"
    assert wire.bridge_alerts_topic("acme") == "threshold/v1/acme/bridge/alerts"
    parsed = wire.parse_event_topic("threshold/v1/acme/store-042/door-1/event/visit")
    assert parsed == wire.EventTopic(GW, "visit")
    assert wire.parse_status_topic("threshold/v1/acme/store-042/door-1/status") == GW


@pytest.mark.parametrize(
    "topic",
    [
        "threshold/v1/acme/store-042/door-1/ack",
        "threshold/v1/acme/store-042/status",
        "threshold/v2/acme/store-042/door-1/status",
        "threshold/v1/acme/Store 42/door-1/status",
    ],
)
def test_bad_status_topics(topic: str) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_status_topic(topic)


@pytest.mark.parametrize("name", ["sync", "clock"])
def test_status_sync_and_clock_must_be_objects(name: str) -> None:
    data = b'{"v":1,"type":"status","state":"online","ts":1,"%s":[1]}' % name.encode()
    with pytest.raises(wire.WireError, match=rf"field \$\.{name}: Expected `object`"):
        wire.decode(data)


@pytest.mark.parametrize(
    "topic",
    [
        "threshold/v1/acme/store-042/door-1/event/refund",
        "threshold/v2/acme/store-042/door-1/event/visit",
        "threshold/v1/acme/store-042/event/visit",
        "threshold/v1/ACME/store-042/door-1/event/visit",
    ],
)
def test_bad_event_topics(topic: str) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_event_topic(topic)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "Expected `object`, got `array`"),
        (b'{"v": 2, "type": "visit"}', "payload version 2 is not supported"),
        (b'{"v": 1, "type": "refund"}', "unknown payload type 'refund'"),
        (b'{"v": 1, "type": "ack"}', "field $.event_ids: missing"),
        (
            b'{"v": 1, "type": "ack", "event_ids": ["ok", "Not Valid"]}',
            "field $.event_ids[1]: Expected `str` that is an id",
        ),
        (
            b'{"v":1,"type":"visit","event_id":"e","ts":"x","detected_at":1,"member":"m",'
            b'"device":"d","tier":"t","rssi_dbm":1}',
            "field $.ts: Expected `float`, got `str`",
        ),
        (
            b'{"v":1,"type":"roster","store":"s","version":1,"devices":[{"ref":"d","member":"m",'
            b'"tier":"t","identity_key":"00","exponent":10}]}',
            "field $.devices[0].identity_key: Expected `str` matching regex",
        ),
    ],
)
def test_decode_errors_say_what_and_where(data: bytes, message: str) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode(data, "topic t/x")
    assert message in info.value.reason
    assert "topic t/x" in info.value.reason


def test_decode_as_checks_the_type() -> None:
    with pytest.raises(wire.WireError, match="expected a 'ack' payload, got 'status'"):
        wire.decode_as(wire.encode(PAYLOADS[1]), wire.Ack)


def test_booleans_are_not_numbers() -> None:
    data = (
        b'{"v":1,"type":"visit","event_id":"e","ts":true,"detected_at":1,"member":"m",'
        b'"device":"d","tier":"t","rssi_dbm":1}'
    )
    with pytest.raises(wire.WireError, match=r"field \$\.ts: Expected `float`, got `bool`"):
        wire.decode(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"reason":"simultaneous"', '"reason":"teleport"'), "$.reason: Invalid enum value"),
        (('"status":"revoked"', '"status":"closed"'), "$.status: Invalid enum value"),
        (('"distance_km":null,', ""), "$.distance_km: missing"),
        (('"speed_kmh":null', '"speed_kmh":"fast"'), "$.speed_kmh: Expected `float | null`"),
        (('"alert_id":8', '"alert_id":0'), "$.alert_id: Expected `int` >= 1"),
        (('"device":"d-1"', '"device":"D 1"'), "$.device: Expected `str` that is an id"),
    ],
)
def test_a_clone_alert_is_decoded_strictly(change: tuple[str, str], message: str) -> None:
    assert change[0] in ALERT
    with pytest.raises(wire.WireError, match=re.escape(message)) as info:
        wire.decode(ALERT.replace(*change).encode(), "topic threshold/v1/acme/bridge/alerts")
    assert "threshold/v1/acme/bridge/alerts" in info.value.reason
