"""SyncApplier: roster and campaign payloads into a real Pipeline, persisted in a real store."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.core import eid, wire
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.services.sync import CAMPAIGNS, ROSTER, SyncApplier
from tests.factories import T0, make_campaigns, make_device

STORE = "store-001"
GW = wire.GatewayAddress("acme", STORE, "gw-1")


def make_pipeline() -> Pipeline:
    ids = (f"ev{n}" for n in itertools.count())
    return Pipeline(
        EidResolver([], T0),
        PresenceTracker(PresenceConfig()),
        OfferEngine(None),
        lambda: next(ids),
    )


def make_applier(pipeline: Pipeline, store: SqliteGatewayStore) -> SyncApplier:
    return SyncApplier(pipeline, store, GW, skew_windows=1, radio_now=lambda: T0)


def roster_bytes(version: int, *devices: wire.RosterDevice, store: str = STORE) -> bytes:
    return wire.encode(wire.RosterSync(store=store, version=version, devices=devices))


def campaigns_bytes(version: int, **overrides: Any) -> bytes:
    return wire.encode(make_campaigns(version=version, **overrides))


def tampered(data: bytes, **changes: Any) -> bytes:
    """A payload with some top-level fields changed, as a buggy or hostile publisher might send."""
    obj = json.loads(data)
    obj.update(changes)
    return json.dumps(obj).encode()


def recognises(pipeline: Pipeline, device: wire.RosterDevice) -> bool:
    """Whether the gateway would recognise `device` broadcasting its current EID."""
    value = eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(T0))
    return pipeline.resolver.resolve(value) == device


def campaign_ids(pipeline: Pipeline) -> set[str]:
    return {c.id for c in pipeline.offers.campaigns}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteGatewayStore]:
    opened = await SqliteGatewayStore.open(db_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def pipeline() -> Pipeline:
    return make_pipeline()


@pytest.fixture
def applier(pipeline: Pipeline, store: SqliteGatewayStore) -> SyncApplier:
    return make_applier(pipeline, store)


# --- Roster -----------------------------------------------------------------------------------


async def test_valid_roster_is_applied_and_persisted(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore
) -> None:
    alice, bob = make_device(), make_device(exponent=8)
    data = roster_bytes(3, alice, bob)

    assert await applier.apply_roster(data, "test roster") is True

    assert recognises(pipeline, alice) and recognises(pipeline, bob)
    assert applier.roster_version == 3
    assert applier.last_rejection is None
    assert await store.load_sync(ROSTER) == data


async def test_new_roster_replaces_the_old_one(applier: SyncApplier, pipeline: Pipeline) -> None:
    leaver, stayer, joiner = make_device(), make_device(), make_device()
    await applier.apply_roster(roster_bytes(1, leaver, stayer), "v1")

    assert await applier.apply_roster(roster_bytes(2, stayer, joiner), "v2") is True

    assert not recognises(pipeline, leaver)
    assert recognises(pipeline, stayer) and recognises(pipeline, joiner)
    assert applier.roster_version == 2


async def test_saved_roster_and_campaigns_are_restored_after_a_restart(db_path: Path) -> None:
    member = make_device()
    roster, campaigns = roster_bytes(4, member), campaigns_bytes(6)
    store = await SqliteGatewayStore.open(db_path)
    first = make_applier(make_pipeline(), store)
    await first.apply_roster(roster, "roster")
    await first.apply_campaigns(campaigns, "campaigns")
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        pipeline = make_pipeline()
        fresh = make_applier(pipeline, reopened)
        await fresh.restore()
        saved = (await reopened.load_sync(ROSTER), await reopened.load_sync(CAMPAIGNS))
    finally:
        await reopened.close()

    assert recognises(pipeline, member)
    assert campaign_ids(pipeline) == {"gold-points", "bakery"}
    assert (fresh.roster_version, fresh.campaigns_version) == (4, 6)
    assert fresh.synced.is_set()
    assert saved == (roster, campaigns)


async def test_restore_with_nothing_saved_leaves_the_gateway_unsynced(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    await applier.restore()

    assert (applier.roster_version, applier.campaigns_version) == (0, 0)
    assert not applier.synced.is_set()
    assert len(pipeline.resolver) == 0


@pytest.mark.parametrize("older_version", [2, 1], ids=["equal", "lower"])
async def test_roster_with_an_older_or_equal_version_is_ignored(
    applier: SyncApplier,
    pipeline: Pipeline,
    store: SqliteGatewayStore,
    older_version: int,
) -> None:
    current, other = make_device(), make_device()
    good = roster_bytes(2, current)
    await applier.apply_roster(good, "v2")

    assert await applier.apply_roster(roster_bytes(older_version, other), "older") is False

    assert recognises(pipeline, current) and not recognises(pipeline, other)
    assert applier.roster_version == 2
    assert applier.last_rejection is None  # a retained copy of what we have is not an error
    assert await store.load_sync(ROSTER) == good


def bad_rosters(device: wire.RosterDevice) -> dict[str, tuple[bytes, str]]:
    """case → (payload, what last_rejection must name) for rosters the gateway must refuse."""
    valid = roster_bytes(9, device)
    short_key = device.to_json() | {"identity_key": "00" * 15}
    non_hex_key = device.to_json() | {"identity_key": "zz" * 16}
    return {
        "other-store": (roster_bytes(9, device, store="store-002"), "store-002"),
        "malformed-json": (b'{"v":1,"type":"roster","store":', "not JSON"),
        "not-utf8": (b"\xff\xfe\x00", "not JSON"),
        "wrong-type": (campaigns_bytes(9), "expected a 'roster' payload"),
        "wrong-wire-version": (tampered(valid, v=2), "version 2"),
        "short-identity-key": (tampered(valid, devices=[short_key]), "'identity_key'"),
        "non-hex-identity-key": (tampered(valid, devices=[non_hex_key]), "'identity_key'"),
        "version-not-integer": (tampered(valid, version="9"), "'version'"),
    }


@pytest.mark.parametrize("case", list(bad_rosters(make_device())))
async def test_bad_roster_is_rejected_naming_why_and_the_last_good_one_is_kept(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore, case: str
) -> None:
    member = make_device()
    good = roster_bytes(1, member)
    await applier.apply_roster(good, "good roster")
    bad, reason = bad_rosters(make_device())[case]

    assert await applier.apply_roster(bad, "sync/roster") is False

    assert applier.last_rejection is not None
    assert reason in applier.last_rejection
    assert recognises(pipeline, member)
    assert applier.roster_version == 1
    assert await store.load_sync(ROSTER) == good


async def test_rejection_message_names_where_the_payload_came_from(
    applier: SyncApplier,
) -> None:
    await applier.apply_roster(b"{", "threshold/v1/acme/store-001/sync/roster")

    assert applier.last_rejection is not None
    assert "threshold/v1/acme/store-001/sync/roster" in applier.last_rejection


async def test_a_good_roster_after_a_rejected_one_is_applied(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    member = make_device()
    await applier.apply_roster(roster_bytes(5, member, store="store-002"), "wrong store")

    assert await applier.apply_roster(roster_bytes(5, member), "right store") is True

    assert recognises(pipeline, member)
    assert applier.roster_version == 5


# --- Campaigns --------------------------------------------------------------------------------


async def test_valid_campaigns_are_applied_and_persisted(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore
) -> None:
    data = campaigns_bytes(2)

    assert await applier.apply_campaigns(data, "campaigns") is True

    assert campaign_ids(pipeline) == {"gold-points", "bakery"}
    assert pipeline.offers.version == 2
    assert applier.campaigns_version == 2
    assert await store.load_sync(CAMPAIGNS) == data
    # In force: a gold member walking in now gets the gold campaign.
    decision = pipeline.offers.decide("m-00001", "gold", T0)
    assert decision is not None and decision.campaign.id == "gold-points"


@pytest.mark.parametrize("older_version", [3, 2], ids=["equal", "lower"])
async def test_campaigns_with_an_older_or_equal_version_are_ignored(
    applier: SyncApplier,
    pipeline: Pipeline,
    store: SqliteGatewayStore,
    older_version: int,
) -> None:
    good = campaigns_bytes(3)
    await applier.apply_campaigns(good, "v3")
    only_bakery = (wire.CampaignSpec("bakery", "t", "b", ("gold",), 60.0, 1),)

    applied = await applier.apply_campaigns(
        campaigns_bytes(older_version, campaigns=only_bakery), "older"
    )

    assert applied is False
    assert campaign_ids(pipeline) == {"gold-points", "bakery"}
    assert applier.campaigns_version == 3
    assert applier.last_rejection is None
    assert await store.load_sync(CAMPAIGNS) == good


def bad_campaigns() -> dict[str, tuple[bytes, str]]:
    """case → (payload, what last_rejection must name) for campaigns the gateway must refuse."""
    valid = campaigns_bytes(9)
    negative = make_campaigns().campaigns[0].to_json() | {"cooldown_s": -1}
    bad_tiers = make_campaigns().campaigns[0].to_json() | {"tiers": "gold"}
    return {
        "other-store": (campaigns_bytes(9, store="store-002"), "store-002"),
        "malformed-json": (b"[campaigns", "not JSON"),
        "wrong-type": (roster_bytes(9, make_device()), "expected a 'campaigns' payload"),
        "negative-cooldown": (tampered(valid, campaigns=[negative]), "'cooldown_s'"),
        "tiers-not-a-list": (tampered(valid, campaigns=[bad_tiers]), "'tiers'"),
        "member-cooldown-missing": (
            tampered(valid, member_cooldown_s=None),
            "'member_cooldown_s'",
        ),
    }


@pytest.mark.parametrize("case", list(bad_campaigns()))
async def test_bad_campaigns_are_rejected_naming_why_and_the_last_good_set_is_kept(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore, case: str
) -> None:
    good = campaigns_bytes(1)
    await applier.apply_campaigns(good, "good campaigns")
    bad, reason = bad_campaigns()[case]

    assert await applier.apply_campaigns(bad, "sync/campaigns") is False

    assert applier.last_rejection is not None
    assert reason in applier.last_rejection
    assert campaign_ids(pipeline) == {"gold-points", "bakery"}
    assert applier.campaigns_version == 1
    assert await store.load_sync(CAMPAIGNS) == good


async def test_new_campaigns_keep_the_offer_history(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    await applier.apply_campaigns(campaigns_bytes(1), "v1")
    first = pipeline.offers.decide("m-00001", "gold", T0)
    assert first is not None

    await applier.apply_campaigns(campaigns_bytes(2, member_cooldown_s=600.0), "v2")

    # Still inside the (new) member cooldown: a campaign update must not reset it into spam.
    assert pipeline.offers.decide("m-00001", "gold", T0 + 300) is None


# --- Synced -----------------------------------------------------------------------------------


async def test_synced_only_once_both_roster_and_campaigns_are_in_force(
    applier: SyncApplier,
) -> None:
    await applier.apply_roster(roster_bytes(1, make_device()), "roster")
    assert not applier.synced.is_set()

    await applier.apply_campaigns(b"not json", "campaigns")
    assert not applier.synced.is_set()

    await applier.apply_campaigns(campaigns_bytes(1), "campaigns")
    assert applier.synced.is_set()


async def test_campaigns_alone_do_not_make_the_gateway_synced(applier: SyncApplier) -> None:
    await applier.apply_campaigns(campaigns_bytes(1), "campaigns")
    await applier.apply_roster(roster_bytes(1, make_device(), store="store-002"), "roster")

    assert not applier.synced.is_set()
