"""Factories for test objects: override only what a test is about."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from cloud_bridge.adapters.data_key import DataKey
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.core.pseudonyms import Kind
from cloud_bridge.core.records import IncomingEvent
from edge.core import eid, frames, wire
from edge.core.advert import RawAdvert

_counter = itertools.count(1)

#: The data key sealing identity keys in the tests' loyalty databases (cloud_bridge/core/keyseal.py).
TEST_DATA_KEY = DataKey(bytes(range(32)), "the tests' data key")
T0 = 1_790_000_000.0  # a fixed radio time (Unix seconds) for tests


def make_device(**overrides: Any) -> wire.RosterDevice:
    n = next(_counter)
    fields: dict[str, Any] = {
        "ref": f"d-{n:05d}",
        "member": f"m-{n:05d}",
        "tier": "gold",
        "identity_key": n.to_bytes(16, "big"),
        "exponent": 10,
    }
    fields.update(overrides)
    return wire.RosterDevice(**fields)


def eid_advert(
    device: wire.RosterDevice, t_s: float, rssi_dbm: int = -60, address: str = "C0:FF:EE:00:00:01"
) -> RawAdvert:
    value = eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(t_s))
    return RawAdvert(t_s, address, rssi_dbm, frames.eddystone_eid_advert(value))


def make_campaigns(**overrides: Any) -> wire.CampaignSync:
    fields: dict[str, Any] = {
        "store": "store-001",
        "version": 1,
        "member_cooldown_s": 3600.0,
        "campaigns": (
            wire.CampaignSpec("gold-points", "Double points", "x", ("gold",), 86400.0, 30),
            wire.CampaignSpec(
                "bakery", "10% bakery", "y", ("bronze", "silver", "gold"), 86400.0, 10
            ),
        ),
    }
    fields.update(overrides)
    return wire.CampaignSync(**fields)


def make_visit(**overrides: Any) -> wire.Visit:
    n = next(_counter)
    fields: dict[str, Any] = {
        "event_id": f"ev-v{n:06d}",
        "ts": T0 + n,
        "detected_at": T0 + n + 0.5,
        "member": f"m-{n:05d}",
        "device": f"d-{n:05d}",
        "tier": "gold",
        "rssi_dbm": -62.0,
    }
    fields.update(overrides)
    return wire.Visit(**fields)


def make_offer_trigger(**overrides: Any) -> wire.OfferTrigger:
    n = next(_counter)
    fields: dict[str, Any] = {
        "event_id": f"ev-o{n:06d}",
        "visit_id": f"ev-v{n:06d}",
        "ts": T0 + n,
        "detected_at": T0 + n + 0.5,
        "member": f"m-{n:05d}",
        "device": f"d-{n:05d}",
        "tier": "gold",
        "campaign": "gold-points",
    }
    fields.update(overrides)
    return wire.OfferTrigger(**fields)


async def as_sent(
    records: SqliteLoyaltyRecords, gateway: wire.GatewayAddress, *events: wire.Event
) -> list[IncomingEvent]:
    """`events` (written with the records' ids) as `gateway` sends them: under its store's pseudonyms."""
    serials = await records.serials()
    pseudonyms = records.pseudonyms(gateway.store)
    sent: list[IncomingEvent] = []
    for event in events:
        member = pseudonyms.one(Kind.MEMBER, serials.members[event.member])
        device = pseudonyms.one(Kind.DEVICE, serials.devices[event.device])
        sent.append(
            IncomingEvent(gateway, dataclasses.replace(event, member=member, device=device))
        )
    return sent
