"""SqliteLoyaltyRecords on a real SQLite file in tmp_path, seeded with cloud_bridge.seed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import (
    SCHEMA_VERSION,
    RegisteredGateway,
    SqliteLoyaltyRecords,
)
from cloud_bridge.core.records import IncomingEvent
from cloud_bridge.errors import RecordsError
from cloud_bridge.seed import DEMO_CAMPAIGNS, seed_records
from edge.core import wire
from edge.sim.entrance import make_members
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit

CHAIN = "acme"
STORE = "store-001"
GW1 = wire.GatewayAddress(CHAIN, STORE, "gw-1")
GW2 = wire.GatewayAddress(CHAIN, STORE, "gw-2")
MEMBERS = 20
SEED = 1
NOW = T0 + 10.0
CAMPAIGNS = {c.id: c for c in DEMO_CAMPAIGNS}
BAKERY = "welcome-bakery"


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(
        tmp_path / "bridge" / "loyalty.db", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    try:
        added = await seed_records(
            opened, members=MEMBERS, seed=SEED, stores=(STORE,), joined_at=T0 - 86400
        )
        assert added == MEMBERS
        yield opened
    finally:
        await opened.close()


async def execute(records: SqliteLoyaltyRecords, sql: str, *params: object) -> None:
    """An admin's change to the loyalty database (consent withdrawn, device lost, ...)."""
    await records.connection.execute(sql, params)
    await records.connection.commit()


async def shopper_token(records: SqliteLoyaltyRecords, member: str) -> str:
    async with records.connection.execute(
        "SELECT shopper_token FROM members WHERE id = ?", (member,)
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


def visit_and_offer(
    member: str = "m-00000", device: str = "d-00000", campaign: str = BAKERY
) -> tuple[wire.Visit, wire.OfferTrigger]:
    visit = make_visit(member=member, device=device, ts=T0, detected_at=T0 + 1)
    offer = make_offer_trigger(
        visit_id=visit.event_id,
        member=member,
        device=device,
        campaign=campaign,
        ts=T0,
        detected_at=T0 + 1,
    )
    return visit, offer


async def record_offer(
    records: SqliteLoyaltyRecords, member: str = "m-00000", campaign: str = BAKERY
) -> wire.OfferTrigger:
    _, offer = visit_and_offer(member, f"d-{member[2:]}", campaign)
    await records.record(await as_sent(records, GW1, offer), NOW)
    return offer


# --- Recording --------------------------------------------------------------------------------


async def test_a_campaigns_cooldown_holds_across_stores_and_beyond_the_gateways_memory(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.add_store("store-002", "Station Road")
    await execute(records, "UPDATE members SET tier = 'gold' WHERE id = 'm-00000'")
    elsewhere = wire.GatewayAddress(CHAIN, "store-002", "gw-1")
    week = CAMPAIGNS[BAKERY].cooldown_s
    assert week == 7 * 86400

    def bakery(ts: float, campaign: str = BAKERY) -> wire.OfferTrigger:
        return make_offer_trigger(member="m-00000", device="d-00000", campaign=campaign, ts=ts)

    first = await records.record(await as_sent(records, GW1, bakery(T0)), NOW)
    # Another store the next day: that gateway never offered it, the bridge remembers.
    next_day = await records.record(await as_sent(records, elsewhere, bakery(T0 + 86400)), NOW)
    # A gateway uploading late an offer made before the first, still within the week.
    late = await records.record(await as_sent(records, elsewhere, bakery(T0 - 3600)), NOW)
    other_campaign = await records.record(
        await as_sent(records, elsewhere, bakery(T0 + 86400, campaign="gold-double-points")), NOW
    )
    after_the_week = await records.record(await as_sent(records, GW1, bakery(T0 + week)), NOW)

    assert len(first.deliveries) == 1
    assert next_day.deliveries == [] and late.deliveries == []
    assert len(other_campaign.deliveries) == 1
    assert len(after_the_week.deliveries) == 1
    # Held back, not lost: recorded as suppressed.
    assert await records.count("offers") == 5


async def test_visit_and_offer_are_recorded_acked_and_the_offer_is_delivered(
    records: SqliteLoyaltyRecords,
) -> None:
    visit, offer = visit_and_offer("m-00000", "d-00000")
    other_visit = make_visit(member="m-00001", device="d-00001")

    sent = [*await as_sent(records, GW1, visit, offer), *await as_sent(records, GW2, other_visit)]

    outcome = await records.record(sent, NOW)

    assert outcome.acks == {
        GW1: [visit.event_id, offer.event_id],
        GW2: [other_visit.event_id],
    }
    assert outcome.new_visits == [sent[0].event, sent[2].event]
    assert outcome.new_offers == [sent[1].event]
    assert outcome.duplicates == 0
    assert await records.count("events") == 3
    assert await records.count("visits") == 2
    assert await records.count("offers") == 1

    token = await shopper_token(records, "m-00000")
    (delivery,) = outcome.deliveries
    assert delivery.offer_id == offer.event_id
    assert delivery.shopper == token
    assert delivery.topic == wire.shopper_offer_topic(CHAIN, token)
    seeded = CAMPAIGNS[BAKERY]
    assert wire.decode_as(delivery.payload, wire.ShopperOffer) == wire.ShopperOffer(
        offer_id=offer.event_id,
        campaign=BAKERY,
        title=seeded.title,
        body=seeded.body,
        store=STORE,
        issued_at=NOW,
        detected_at=offer.detected_at,
        # What it is, so the app can judge it against what the member stated.
        promotion_type="discount",
        interests=("grocery",),
        # Until when the shopper may use it (issue 11): the campaign's validity after issue.
        valid_until=NOW + seeded.validity_s,
    )


async def test_each_member_gets_their_own_shopper_topic(records: SqliteLoyaltyRecords) -> None:
    _, first = visit_and_offer("m-00002", "d-00002")
    _, second = visit_and_offer("m-00003", "d-00003")

    outcome = await records.record(await as_sent(records, GW1, first, second), NOW)

    tokens = [await shopper_token(records, m) for m in ("m-00002", "m-00003")]
    assert tokens[0] != tokens[1]
    assert [d.topic for d in outcome.deliveries] == [
        wire.shopper_offer_topic(CHAIN, t) for t in tokens
    ]


async def test_recording_the_same_batch_again_only_acks_it(
    records: SqliteLoyaltyRecords,
) -> None:
    visit, offer = visit_and_offer()
    batch = await as_sent(records, GW1, visit, offer)
    await records.record(batch, NOW)

    again = await records.record(batch, NOW + 30)

    assert again.acks == {GW1: [visit.event_id, offer.event_id]}
    assert again.duplicates == 2
    assert again.new_visits == [] and again.new_offers == [] and again.deliveries == []
    assert await records.count("events") == 2
    assert await records.count("visits") == 1
    assert await records.count("offers") == 1
    due = await records.due_deliveries(NOW + 30, resend_after_s=60, limit=10)
    assert [d.offer_id for d in due] == [offer.event_id]


async def test_events_of_a_member_who_withdrew_consent_are_acknowledged_not_recorded(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE members SET consent = 0 WHERE id = ?", "m-00004")
    visit, offer = visit_and_offer("m-00004", "d-00004")

    outcome = await records.record(await as_sent(records, GW1, visit, offer), NOW)

    # Acknowledged, so the gateway forgets them; but no visit or offer of theirs is kept.
    assert outcome.acks == {GW1: [visit.event_id, offer.event_id]}
    assert outcome.new_visits == [] and outcome.new_offers == []
    assert outcome.suppressed == 2 and outcome.deliveries == []
    assert await records.count("visits") == 0 and await records.count("offers") == 0
    assert await records.due_deliveries(NOW + 3600, 60, 10) == []


async def test_offer_for_an_inactive_campaign_is_not_delivered(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE campaigns SET active = 0 WHERE id = ?", "welcome-bakery")
    _, offer = visit_and_offer("m-00006", "d-00006")

    sent = await as_sent(records, GW1, offer)

    outcome = await records.record(sent, NOW)

    assert outcome.new_offers == [sent[0].event] and outcome.deliveries == []


async def test_every_change_a_gateway_must_hear_bumps_its_sync_version(
    records: SqliteLoyaltyRecords,
) -> None:
    roster = (await records.roster("store-001")).version
    campaigns = (await records.campaigns("store-001")).version
    assert (roster, campaigns) == (1, 1)
    await execute(records, "UPDATE members SET consent = 0 WHERE id = ?", "m-00001")
    after_consent = await records.roster("store-001")
    assert after_consent.version > roster
    assert "m-00001" not in {d.member for d in after_consent.devices}
    await execute(records, "UPDATE devices SET active = 0 WHERE id = ?", "d-00002")
    assert (await records.roster("store-001")).version > after_consent.version
    await execute(records, "UPDATE campaigns SET active = 0 WHERE id = ?", "welcome-bakery")
    assert (await records.campaigns("store-001")).version > campaigns


async def test_offer_for_an_unknown_campaign_is_suppressed(
    records: SqliteLoyaltyRecords,
) -> None:
    _, offer = visit_and_offer("m-00005", "d-00005", campaign="no-such-campaign")

    outcome = await records.record(await as_sent(records, GW1, offer), NOW)

    assert outcome.acks == {GW1: [offer.event_id]}
    assert outcome.deliveries == []
    assert await records.due_deliveries(NOW + 3600, 60, 10) == []


async def test_events_under_pseudonyms_this_store_was_never_given_are_acked_not_recorded(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.add_store("store-002", "Station Road")
    visit, offer = visit_and_offer("m-00000", "d-00000")
    elsewhere = await as_sent(records, wire.GatewayAddress(CHAIN, "store-002", "gw-1"), visit)
    replayed = IncomingEvent(GW1, elsewhere[0].event)  # another store's pseudonyms, sent here
    in_clear = IncomingEvent(GW1, offer)  # the records' own ids are not pseudonyms either
    forged = IncomingEvent(GW1, dataclasses.replace(visit, event_id="ev-forged", member="a" * 26))

    outcome = await records.record([replayed, in_clear, forged], NOW)

    assert outcome.acks == {GW1: [visit.event_id, offer.event_id, "ev-forged"]}
    assert outcome.unknown == 3
    assert outcome.new_visits == [] and outcome.new_offers == [] and outcome.deliveries == []
    assert await records.count("visits") == 0 and await records.count("offers") == 0
    assert await records.due_deliveries(NOW + 3600, 60, 10) == []


async def test_a_member_has_a_different_pseudonym_at_each_store_and_the_same_one_within_it(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.add_store("store-002", "Station Road")
    visit = make_visit(member="m-00000", device="d-00000")
    here = (await as_sent(records, GW1, visit))[0].event
    again = (await as_sent(records, GW2, visit))[0].event
    there = (await as_sent(records, wire.GatewayAddress(CHAIN, "store-002", "g"), visit))[0].event

    assert (here.member, here.device) == (again.member, again.device)
    assert here.member != there.member and here.device != there.device
    assert here.member != here.device
    roster_ids = {d.ref for d in (await records.roster(STORE)).devices}
    assert "m-00000" not in here.member and here.device not in roster_ids


async def test_a_suppressed_offer_cannot_be_marked_sent_or_received(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE members SET consent = 0 WHERE id = ?", "m-00004")
    offer = await record_offer(records, "m-00004")
    token = await shopper_token(records, "m-00004")

    await records.mark_sent([offer.event_id], NOW)

    assert await records.due_deliveries(NOW + 3600, 60, 10) == []
    assert await records.mark_received(token, [offer.event_id], NOW) == 0


# --- Delivery state ---------------------------------------------------------------------------


async def test_pending_delivery_is_due_until_sent_then_again_after_resend_time(
    records: SqliteLoyaltyRecords,
) -> None:
    offer = await record_offer(records)

    due = await records.due_deliveries(NOW, resend_after_s=60, limit=10)
    assert [d.offer_id for d in due] == [offer.event_id]
    # Not sent yet: still due later on too.
    assert [d.offer_id for d in await records.due_deliveries(NOW + 5, 60, 10)] == [offer.event_id]

    await records.mark_sent([offer.event_id], NOW + 5)

    assert await records.due_deliveries(NOW + 5, 60, 10) == []
    assert await records.due_deliveries(NOW + 64, 60, 10) == []
    resend = await records.due_deliveries(NOW + 65, 60, 10)
    assert resend == due  # the same topic and payload as the first time


async def test_an_unconfirmed_offer_is_resent_until_its_validity_ends_then_recorded_expired(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE campaigns SET validity_s = 3600 WHERE id = ?", BAKERY)
    offer = await record_offer(records)  # issued at NOW

    for attempt in range(10):  # far more than the old cap of attempts
        sent_at = NOW + attempt * 100
        assert [d.offer_id for d in await records.due_deliveries(sent_at, 60, 10)] == [
            offer.event_id
        ]
        await records.mark_sent([offer.event_id], sent_at)
    assert await records.expire_offers(NOW + 3599) == 0
    assert [d.offer_id for d in await records.due_deliveries(NOW + 3599, 60, 10)] == [
        offer.event_id
    ]

    assert await records.due_deliveries(NOW + 3600, 60, 10) == []
    assert await records.expire_offers(NOW + 3600) == 1
    async with records.connection.execute(
        "SELECT delivery FROM offers WHERE event_id = ?", (offer.event_id,)
    ) as cursor:
        assert await cursor.fetchone() == ("expired",)
    assert await records.expire_offers(NOW + 9999) == 0  # once
    token = await shopper_token(records, "m-00000")
    assert await records.mark_received(token, [offer.event_id], NOW + 4000) == 0


async def test_received_offer_is_never_due_again(records: SqliteLoyaltyRecords) -> None:
    offer = await record_offer(records)
    token = await shopper_token(records, "m-00000")
    await records.mark_sent([offer.event_id], NOW)

    confirmed = await records.mark_received(token, [offer.event_id], NOW + 1)

    assert confirmed == 1
    assert await records.due_deliveries(NOW + 10_000, 60, 10) == []
    # A late mark_sent (the PUBACK of a resend) must not bring it back.
    await records.mark_sent([offer.event_id], NOW + 2)
    assert await records.due_deliveries(NOW + 10_000, 60, 10) == []
    assert await records.mark_received(token, [offer.event_id], NOW + 3) == 0


async def test_a_pending_offer_can_be_received_before_it_is_marked_sent(
    records: SqliteLoyaltyRecords,
) -> None:
    offer = await record_offer(records)
    token = await shopper_token(records, "m-00000")

    assert await records.mark_received(token, [offer.event_id], NOW) == 1
    assert await records.due_deliveries(NOW, 60, 10) == []


async def test_receipt_from_another_shopper_changes_nothing(
    records: SqliteLoyaltyRecords,
) -> None:
    offer = await record_offer(records, "m-00000")
    someone_else = await shopper_token(records, "m-00001")

    assert await records.mark_received(someone_else, [offer.event_id], NOW) == 0
    assert await records.mark_received("0" * 24, [offer.event_id], NOW) == 0

    due = await records.due_deliveries(NOW, 60, 10)
    assert [d.offer_id for d in due] == [offer.event_id]


async def test_due_deliveries_respects_the_limit_oldest_first(
    records: SqliteLoyaltyRecords,
) -> None:
    offers = []
    for n in range(3):
        _, offer = visit_and_offer(f"m-0000{n}", f"d-0000{n}")
        await records.record(await as_sent(records, GW1, offer), NOW + n)
        offers.append(offer)

    due = await records.due_deliveries(NOW + 10, 60, limit=2)

    assert [d.offer_id for d in due] == [offers[0].event_id, offers[1].event_id]


# --- Sync payloads ----------------------------------------------------------------------------


async def test_roster_lists_every_seeded_device_with_its_key(
    records: SqliteLoyaltyRecords,
) -> None:
    roster = await records.roster(STORE)

    expected = {d.ref: d for d in make_members(MEMBERS, SEED)}
    assert roster.store == STORE
    assert roster.version == 1
    assert [d.ref for d in roster.devices] == sorted(expected)
    for device in roster.devices:
        seeded = expected[device.ref]
        assert (device.member, device.identity_key, device.exponent) == (
            seeded.member,
            seeded.identity_key,
            seeded.exponent,
        )
        assert device.tier in ("bronze", "silver", "gold")
    # What the bridge publishes, a gateway can read back.
    assert wire.decode_as(wire.encode(roster), wire.RosterSync) == roster


async def test_roster_excludes_inactive_devices_and_non_consenting_members(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE devices SET active = 0 WHERE id = ?", "d-00003")
    await execute(records, "UPDATE members SET consent = 0 WHERE id = ?", "m-00007")

    roster = await records.roster(STORE)

    refs = {d.ref for d in roster.devices}
    members = {d.member for d in roster.devices}
    assert "d-00003" not in refs
    assert "m-00007" not in members and "d-00007" not in refs
    assert len(roster.devices) == MEMBERS - 2


async def test_roster_and_campaigns_carry_the_store_versions(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(
        records,
        "UPDATE stores SET roster_version = 7, campaigns_version = 4 WHERE id = ?",
        STORE,
    )

    assert (await records.roster(STORE)).version == 7
    assert (await records.campaigns(STORE)).version == 4


async def test_campaigns_carry_tiers_cooldowns_and_the_member_cooldown(
    records: SqliteLoyaltyRecords,
) -> None:
    sync = await records.campaigns(STORE)

    assert sync.store == STORE
    assert sync.version == 1
    assert sync.member_cooldown_s == 4 * 3600.0
    assert {c.id: (c.title, c.body, c.tiers, c.cooldown_s, c.priority) for c in sync.campaigns} == {
        c.id: (c.title, c.body, tuple(c.tiers.split(",")), c.cooldown_s, c.priority)
        for c in CAMPAIGNS.values()
    }
    coffee = next(c for c in sync.campaigns if c.id == "silver-free-coffee")
    assert coffee.tiers == ("silver", "gold")
    assert wire.decode_as(wire.encode(sync), wire.CampaignSync) == sync


async def test_campaigns_leave_out_inactive_ones(records: SqliteLoyaltyRecords) -> None:
    await execute(records, "UPDATE campaigns SET active = 0 WHERE id = ?", "silver-free-coffee")

    sync = await records.campaigns(STORE)

    assert {c.id for c in sync.campaigns} == set(CAMPAIGNS) - {"silver-free-coffee"}


async def test_unknown_store_has_no_roster_or_campaigns(records: SqliteLoyaltyRecords) -> None:
    with pytest.raises(RecordsError, match="store-999"):
        await records.roster("store-999")
    with pytest.raises(RecordsError, match="store-999"):
        await records.campaigns("store-999")


async def test_stores_lists_the_seeded_store(records: SqliteLoyaltyRecords) -> None:
    assert await records.stores() == [STORE]


# --- Seeding ----------------------------------------------------------------------------------


async def test_seeding_twice_adds_nothing(records: SqliteLoyaltyRecords) -> None:
    roster_before = await records.roster(STORE)

    added = await seed_records(
        records, members=MEMBERS, seed=SEED, stores=(STORE, "store-002"), joined_at=T0
    )

    assert added == 0
    assert await records.count("members") == MEMBERS
    assert await records.count("devices") == MEMBERS
    assert await records.stores() == [STORE]
    assert await records.roster(STORE) == roster_before


async def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "loyalty.db"
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    await seed_records(records, members=MEMBERS, seed=SEED, stores=(STORE,), joined_at=T0)
    offer = await record_offer(records)
    await records.close()

    reopened = await SqliteLoyaltyRecords.open(path, CHAIN, data_key=TEST_DATA_KEY)
    try:
        again = await reopened.record(await as_sent(reopened, GW1, offer), NOW + 60)
        due = await reopened.due_deliveries(NOW + 60, 60, 10)
    finally:
        await reopened.close()

    assert again.duplicates == 1 and again.deliveries == []
    assert [d.offer_id for d in due] == [offer.event_id]


# --- Gateways (migration 2) -------------------------------------------------------------------

GW_KEY = bytes(range(32))
NEW_KEY = bytes(range(1, 33))


async def test_a_gateway_is_registered_rekeyed_listed_and_removed(
    records: SqliteLoyaltyRecords,
) -> None:
    assert await records.add_gateway(STORE, "door-1", GW_KEY, T0) == "added"
    assert await records.add_gateway(STORE, "door-1", GW_KEY, T0) == "unchanged"
    assert await records.add_gateway(STORE, "door-2", GW_KEY, T0) == "added"
    assert await records.add_gateway(STORE, "door-1", NEW_KEY, T0) == "replaced"

    assert await records.gateways() == [
        RegisteredGateway(STORE, "door-1", NEW_KEY),
        RegisteredGateway(STORE, "door-2", GW_KEY),
    ]
    assert await records.remove_gateway(STORE, "door-2") is True
    assert await records.remove_gateway(STORE, "door-2") is False
    assert [g.gateway for g in await records.gateways()] == ["door-1"]


async def test_a_gateway_of_an_unknown_store_is_refused(records: SqliteLoyaltyRecords) -> None:
    with pytest.raises(RecordsError, match="add-store"):
        await records.add_gateway("store-999", "door-1", GW_KEY, T0)
    assert await records.gateways() == []


async def test_a_version_1_database_is_migrated_and_keeps_its_records(tmp_path: Path) -> None:
    import sqlite3

    from cloud_bridge.adapters.sqlite_records import _MIGRATIONS

    path = tmp_path / "loyalty.db"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO stores (id, name) VALUES (?, 'High Street')", (STORE,))
    conn.commit()
    conn.close()

    records = await SqliteLoyaltyRecords.open(path, CHAIN)
    try:
        assert await records.stores() == [STORE]
        assert await records.gateways() == []
        assert await records.add_gateway(STORE, "door-1", GW_KEY, T0) == "added"
        async with records.connection.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
    finally:
        await records.close()
    assert row is not None and row[0] == SCHEMA_VERSION


# --- Admission (cloud_bridge/core/admission.py) through the records -----------------------------


async def suppressed_reasons(records: SqliteLoyaltyRecords) -> dict[str, str | None]:
    async with records.connection.execute(
        "SELECT event_id, suppressed_reason FROM offers WHERE delivery = 'suppressed'"
    ) as cursor:
        return {r[0]: r[1] async for r in cursor}


async def test_a_refused_offer_is_recorded_suppressed_with_the_reason_never_delivered(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.add_store("store-002", "Station Road")
    await execute(records, "UPDATE members SET tier = 'bronze' WHERE id = 'm-00001'")
    await execute(records, "UPDATE members SET tier = 'gold' WHERE id = 'm-00002'")
    elsewhere = wire.GatewayAddress(CHAIN, "store-002", "gw-1")

    def trigger(member: str, campaign: str, ts: float, tier: str = "gold") -> wire.OfferTrigger:
        device = f"d-{member[2:]}"
        return make_offer_trigger(member=member, device=device, campaign=campaign, ts=ts, tier=tier)

    # A bronze member whose gateway claims gold: the records' tier decides.
    claimed_gold = trigger("m-00001", "gold-double-points", T0)
    # A gold member: one offer, then another campaign at another store within the member cooldown.
    first = trigger("m-00002", "gold-double-points", T0)
    too_soon = trigger("m-00002", BAKERY, T0 + 600)
    unknown = trigger("m-00003", "no-such-campaign", T0)
    outcome = await records.record(
        [
            *await as_sent(records, GW1, claimed_gold, first, unknown),
            *await as_sent(records, elsewhere, too_soon),
        ],
        NOW,
    )

    assert [d.offer_id for d in outcome.deliveries] == [first.event_id]
    assert await suppressed_reasons(records) == {
        claimed_gold.event_id: "tier_not_served",
        too_soon.event_id: "member_cooldown",
        unknown.event_id: "unknown_campaign",
    }
    # Outside the member cooldown (4 h by default) the other campaign goes.
    later = trigger("m-00002", BAKERY, T0 + 5 * 3600)
    assert (
        len((await records.record(await as_sent(records, elsewhere, later), NOW)).deliveries) == 1
    )


async def test_a_quarantined_event_is_acked_kept_aside_and_not_counted(
    records: SqliteLoyaltyRecords,
) -> None:
    visit, offer = visit_and_offer()
    sent = [
        dataclasses.replace(e, quarantine="ts_future") for e in await as_sent(records, GW1, visit)
    ]
    sent += [
        dataclasses.replace(e, quarantine="ts_too_old") for e in await as_sent(records, GW1, offer)
    ]

    outcome = await records.record(sent, NOW)
    again = await records.record(sent, NOW + 1)

    assert outcome.acks == {GW1: [visit.event_id, offer.event_id]}
    assert outcome.quarantined == 2 and again.duplicates == 2
    assert outcome.new_visits == [] and outcome.new_offers == [] and outcome.deliveries == []
    assert await records.count("visits") == 0 and await records.count("offers") == 0
    held = {q.event_id: q for q in await records.quarantined()}
    assert {e: q.reason for e, q in held.items()} == {
        visit.event_id: "ts_future",
        offer.event_id: "ts_too_old",
    }
    assert held[visit.event_id].to_json()["event"]["event_id"] == visit.event_id
    assert held[visit.event_id].gateway == "gw-1" and held[visit.event_id].ts == visit.ts


async def test_a_version_5_database_keeps_its_offers_and_gains_validity_and_quarantine(
    tmp_path: Path,
) -> None:
    import sqlite3

    from cloud_bridge.adapters.sqlite_records import _MIGRATIONS

    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:5]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO stores (id, name) VALUES (?, 'High Street')", (STORE,))
    conn.execute(
        "INSERT INTO campaigns (id, title, body, tiers, cooldown_s) VALUES ('c', 't', 'b', 'gold', 60)"
    )
    for n, state in enumerate(("sent", "received", "suppressed")):
        conn.execute(
            "INSERT INTO events (event_id, kind, store_id, gateway, received_at) "
            "VALUES (?, 'offer', ?, 'gw-1', ?)",
            (f"ev-{n}", STORE, T0),
        )
        conn.execute(
            "INSERT INTO offers (event_id, visit_id, member_id, campaign_id, store_id, gateway, ts, "
            "detected_at, recorded_at, delivery) VALUES (?, 'v', 'm', 'c', ?, 'gw-1', ?, ?, ?, ?)",
            (f"ev-{n}", STORE, T0, T0, T0, state),
        )
    conn.commit()
    conn.close()

    records = await SqliteLoyaltyRecords.open(path, CHAIN, data_key=TEST_DATA_KEY)
    try:
        async with records.connection.execute(
            "SELECT event_id, delivery, suppressed_reason, expires_at FROM offers ORDER BY event_id"
        ) as cursor:
            offers = [tuple(r) async for r in cursor]
        async with records.connection.execute("SELECT validity_s FROM campaigns") as cursor:
            validity = [r[0] async for r in cursor]
        assert await records.expire_offers(T0 + 3600) == 1  # the one still sent
        assert await records.count("quarantine") == 0
    finally:
        await records.close()
    assert offers == [
        ("ev-0", "sent", None, T0 + 3600),
        ("ev-1", "received", None, T0 + 3600),
        ("ev-2", "suppressed", "unknown", T0 + 3600),
    ]
    assert validity == [3600.0]


# --- One transaction at a time on the connection --------------------------------------------------


async def test_a_rollback_elsewhere_never_undoes_part_of_a_batch_being_recorded(
    records: SqliteLoyaltyRecords,
) -> None:
    # Coroutines share the connection: before its operations were serialized, a failed
    # add-gateway's rollback landing in the middle of `record` discarded the batch's first rows,
    # and `record` then committed the rest and acknowledged them all.
    visits = [
        make_visit(member=f"m-{i % MEMBERS:05d}", device=f"d-{i % MEMBERS:05d}") for i in range(200)
    ]
    sent = await as_sent(records, GW1, *visits)

    async def unknown_store() -> None:
        for _ in range(20):
            with pytest.raises(RecordsError):
                await records.add_gateway("store-404", "gw-1", bytes(32), NOW)

    outcome, _ = await asyncio.gather(records.record(sent, NOW), unknown_store())

    assert len(outcome.acks[GW1]) == len(visits)
    assert await records.count("visits") == len(visits)
