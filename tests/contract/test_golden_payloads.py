"""Golden edge ↔ bridge payloads: what is on the wire today must keep decoding, and the docs match.

The roster bundle's golden copies (format 1, from bridges before issue 10, format 2, from bridges
before issue 11, and format 3) are sealed
with deterministic test keys (below): the test rebuilds them byte for byte, so any change to the
bundle formats shows up here, and opens them as the gateway would.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from edge.core import bundle, signed, wire

ROOT = Path(__file__).parents[2]
GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN = sorted(GOLDEN_DIR.glob("*.json"))
BUNDLE_GOLDEN = GOLDEN_DIR / "roster_bundle.json"  # format 1
BUNDLE_GOLDEN_2 = GOLDEN_DIR / "roster_bundle_format2.json"
BUNDLE_GOLDEN_3 = GOLDEN_DIR / "roster_bundle_format3.json"
BUNDLE_GOLDENS = {1: BUNDLE_GOLDEN, 2: BUNDLE_GOLDEN_2, 3: BUNDLE_GOLDEN_3}
SIGNED_GOLDEN = GOLDEN_DIR / "signed_ack.json"
GOLDEN_ACK_TOPIC = wire.ack_topic(wire.GatewayAddress("demo-chain", "store-001", "door-1"))

# Test keys only: derived from public seeds, never used outside this test.
GOLDEN_SIGNER = bundle.generate_signing_key(random.Random("golden-bridge").randbytes)
GOLDEN_GATEWAY = bundle.generate_gateway_key(random.Random("golden-door-1").randbytes)
GOLDEN_DEVICE = wire.RosterDevice(
    "b1f4d07e8a25c96e3f0d4a1b7c82e965",
    "5c0e9a7f31d2b84e6a0f17c3d9e2b458",
    "gold",
    bytes.fromhex("0102030405060708090a111213141516"),
    10,
)
#: The same device as format 2 carries it: an app, its member's preferences (as in roster.json).
GOLDEN_DEVICE_2 = dataclasses.replace(GOLDEN_DEVICE, kind="app", prefs=wire.MemberPrefs(5, 2, 1, 3))
#: As format 3 carries it: also the member's segments (regular) and visits (as in roster.json).
GOLDEN_DEVICE_3 = dataclasses.replace(GOLDEN_DEVICE_2, segments=2, visits=7)
GOLDEN_DEVICES = {1: GOLDEN_DEVICE, 2: GOLDEN_DEVICE_2, 3: GOLDEN_DEVICE_3}


def golden_bundle(bundle_format: int = 1) -> bytes:
    """The golden roster bundle: v3 of store-001's roster for door-1, one device."""
    return bundle.build_bundle(
        bundle.FullRoster((GOLDEN_DEVICES[bundle_format],)),
        chain="demo-chain",
        store="store-001",
        gateway="door-1",
        version=3,
        recipient_public_key=GOLDEN_GATEWAY.public_key(),
        signing_key=GOLDEN_SIGNER,
        random_bytes=random.Random("golden-bundle").randbytes,
        bundle_format=bundle_format,
    )


def golden_signed_ack() -> bytes:
    """The golden ack (ack.json) signed by the golden bridge key for door-1's ack topic."""
    ack = wire.decode((GOLDEN_DIR / "ack.json").read_bytes())
    return signed.sign(wire.encode(ack), GOLDEN_ACK_TOPIC, GOLDEN_SIGNER)


def is_bundle(obj: dict[str, Any]) -> bool:
    return obj.get("type") == bundle.BUNDLE_TYPE


def is_signed(obj: dict[str, Any]) -> bool:
    return obj.get("type") == signed.SIGNED_TYPE


@pytest.mark.parametrize(
    "path",
    [p for p in GOLDEN if p not in (*BUNDLE_GOLDENS.values(), SIGNED_GOLDEN)],
    ids=lambda p: p.stem,
)
def test_golden_payload_decodes_and_re_encodes_identically(path: Path) -> None:
    data = path.read_bytes()
    payload = wire.decode(data, str(path))
    assert json.loads(wire.encode(payload)) == json.loads(data)


@pytest.mark.parametrize("bundle_format", sorted(BUNDLE_GOLDENS))
def test_golden_roster_bundle_is_rebuilt_byte_for_byte_and_opens(bundle_format: int) -> None:
    data = BUNDLE_GOLDENS[bundle_format].read_bytes()
    assert data == golden_bundle(bundle_format)
    assert json.loads(data)["format"] == bundle_format
    opened = bundle.open_bundle(
        data,
        gateway_private_key=GOLDEN_GATEWAY,
        trusted_signer_public_keys=[GOLDEN_SIGNER.public_key()],
        expected_chain="demo-chain",
        expected_store="store-001",
        expected_gateway="door-1",
        current_version=2,
    )
    assert opened.version == 3
    device = GOLDEN_DEVICES[bundle_format]
    assert opened.roster_after({}) == {device.ref: device}


def test_golden_signed_ack_is_rebuilt_byte_for_byte_and_verifies_only_for_its_topic() -> None:
    data = SIGNED_GOLDEN.read_bytes()
    assert data == golden_signed_ack()
    verified = signed.verify(data, GOLDEN_ACK_TOPIC, [GOLDEN_SIGNER.public_key()])
    assert wire.decode_as(verified.payload, wire.Ack).event_ids[0].startswith("4f1c")
    other = GOLDEN_ACK_TOPIC.replace("door-1", "door-2")
    with pytest.raises(signed.SignedRejected, match="bad_signature"):
        signed.verify(data, other, [GOLDEN_SIGNER.public_key()])


def test_an_old_status_without_sync_or_clock_still_decodes() -> None:
    """Statuses from before bundles (0.1.0's first payloads) carry no `sync` or `clock` object."""
    old = json.loads((GOLDEN_DIR / "status_online.json").read_bytes())
    del old["sync"], old["clock"]
    status = wire.decode_as(json.dumps(old).encode(), wire.Status)
    assert status.sync == {} and status.clock == {}
    assert status.roster_version == old["roster_version"]


def test_payloads_from_before_issue_10_still_decode() -> None:
    """Visits, campaigns and rosters from gateways and bridges before iPhone check-in and
    preferences carry no platform, kind, prefs, promotion type, interests or terms."""
    visit = json.loads((GOLDEN_DIR / "visit.json").read_bytes())
    del visit["platform"]
    assert wire.decode_as(json.dumps(visit).encode(), wire.Visit).platform is None
    campaigns = json.loads((GOLDEN_DIR / "campaigns.json").read_bytes())
    del campaigns["interest_terms"], campaigns["promotion_terms"]
    for campaign in campaigns["campaigns"]:
        del campaign["promotion_type"], campaign["interests"]
    sync = wire.decode_as(json.dumps(campaigns).encode(), wire.CampaignSync)
    assert sync.interest_terms == () and sync.campaigns[0].promotion_type is None
    roster = json.loads((GOLDEN_DIR / "roster.json").read_bytes())
    for device in roster["devices"]:
        del device["kind"], device["prefs"], device["segments"], device["visits"]
    old = wire.decode_as(json.dumps(roster).encode(), wire.RosterSync)
    assert old.devices[0].kind is None and old.devices[0].prefs is None


_ISSUE_11_CAMPAIGN_FIELDS = (
    "schedule",
    "per_member_day",
    "per_member_week",
    "gateway_budgets",
    "segments",
    "min_visits",
    "max_visits",
)


def test_payloads_from_before_issue_11_still_decode_without_limits() -> None:
    """Campaign syncs, offers, receipts and rosters from before campaign management carry no
    schedule, caps, budgets, audience, time zone, content, receipt status or segments: they decode
    to "no limit", UTC, no content, `received` and no segment."""
    campaigns = json.loads((GOLDEN_DIR / "campaigns.json").read_bytes())
    del campaigns["timezone"]
    for campaign in campaigns["campaigns"]:
        for name in _ISSUE_11_CAMPAIGN_FIELDS:
            del campaign[name]
    sync = wire.decode_as(json.dumps(campaigns).encode(), wire.CampaignSync)
    assert sync.timezone == "UTC"
    spec = sync.campaigns[0]
    assert spec.schedule is None and spec.gateway_budgets is None and spec.segments == ()
    assert spec.per_member_day is None and spec.min_visits is None
    offer = json.loads((GOLDEN_DIR / "shopper_offer.json").read_bytes())
    for name in ("image_url", "deep_link", "code", "valid_until"):
        del offer[name]
    decoded = wire.decode_as(json.dumps(offer).encode(), wire.ShopperOffer)
    assert decoded.code is None and decoded.valid_until is None
    receipt = json.loads((GOLDEN_DIR / "offer_receipt.json").read_bytes())
    del receipt["status"]
    assert wire.decode_as(json.dumps(receipt).encode(), wire.OfferReceipt).status == "received"
    roster = json.loads((GOLDEN_DIR / "roster.json").read_bytes())
    for device in roster["devices"]:
        del device["segments"], device["visits"]
    old = wire.decode_as(json.dumps(roster).encode(), wire.RosterSync)
    assert old.devices[0].segments == 0 and old.devices[0].visits == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "Europe/../../etc/passwd"),
        ("timezone", ""),
    ],
)
def test_a_campaign_sync_with_a_hostile_time_zone_is_refused(field: str, value: object) -> None:
    campaigns = json.loads((GOLDEN_DIR / "campaigns.json").read_bytes())
    campaigns[field] = value
    with pytest.raises(wire.WireError, match=field):
        wire.decode_as(json.dumps(campaigns).encode(), wire.CampaignSync)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schedule", {"days": [0]}),
        ("schedule", {"days": [8]}),
        ("schedule", {"hours": [[0, 1441]]}),
        ("schedule", {"hours": [[-1, 60]]}),
        ("schedule", {"starts_at": -5}),
        ("per_member_day", -1),
        ("gateway_budgets", [["door-1", -3]]),
        ("gateway_budgets", [["Door 1", 3]]),
        ("segments", ["vip"]),
        ("min_visits", -2),
    ],
)
def test_a_campaign_with_an_out_of_range_limit_is_refused(field: str, value: object) -> None:
    campaigns = json.loads((GOLDEN_DIR / "campaigns.json").read_bytes())
    campaigns["campaigns"][0][field] = value
    with pytest.raises(wire.WireError, match=field):
        wire.decode_as(json.dumps(campaigns).encode(), wire.CampaignSync)


def test_every_payload_type_has_a_golden_copy() -> None:
    types = {json.loads(p.read_bytes())["type"] for p in GOLDEN}
    assert types == {
        "status",
        "visit",
        "visit_end",
        "offer_trigger",
        "ack",
        "offer",
        "offer_receipt",
        "roster",
        "roster_bundle",
        "signed",
        "campaigns",
        "clone_alert",
    }


def test_docs_show_every_golden_payload_and_decodable_examples() -> None:
    doc = (ROOT / "docs" / "mqtt.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    documented = [json.loads(b) for b in blocks]
    for obj in documented:
        if is_bundle(obj):
            assert bundle.canonical_json(obj) in {golden_bundle(f) for f in BUNDLE_GOLDENS}
        elif is_signed(obj):
            assert obj == json.loads(golden_signed_ack())
        else:
            wire.decode(json.dumps(obj).encode(), "docs/mqtt.md")
    for path in GOLDEN:
        assert json.loads(path.read_bytes()) in documented, f"docs/mqtt.md lacks {path.name}"


def test_docs_name_every_topic() -> None:
    doc = (ROOT / "docs" / "mqtt.md").read_text()
    for suffix in (
        "/status",
        "/event/visit",
        "/event/offer",
        "/ack",
        "{gateway}/sync/roster",
        "{gateway}/sync/campaigns",
        "/shopper/{shopper}/offer",
        "{chain}/bridge/alerts",
    ):
        assert suffix in doc, f"docs/mqtt.md does not name the topic ending {suffix}"
    assert "{store}/sync/roster" not in doc, "the store-level plain roster topic is gone"
    assert "{store}/sync/campaigns" not in doc, "the store-level plain campaigns topic is gone"
