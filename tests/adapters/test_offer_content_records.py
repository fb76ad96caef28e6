"""What the bridge records for an offer trigger (issue 11): holdout, content and codes, campaign caps
across stores, and a campaign paused after the gateway decided. Real SQLite, seeded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.core.holdout import in_holdout
from cloud_bridge.core.records import RecordOutcome
from cloud_bridge.seed import DEMO_CAMPAIGNS, seed_records
from edge.core import wire
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_offer_trigger

CHAIN = "acme"
STORE = "store-001"
OTHER = "store-002"
BAKERY = "welcome-bakery"  # every tier, seeded with a 7-day cooldown that these tests lift
MEMBERS = 40
NOW = T0 + 10.0
VALIDITY_S = {c.id: c.validity_s for c in DEMO_CAMPAIGNS}[BAKERY]


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(
        tmp_path / "loyalty.db", CHAIN, create=True, data_key=TEST_DATA_KEY
    )
    try:
        await seed_records(opened, members=MEMBERS, seed=1, stores=(STORE,), joined_at=T0 - 86400)
        await opened.add_store(OTHER, "Station Road")
        # Only the rules under test: no cooldowns between offers.
        await execute(opened, "UPDATE campaigns SET cooldown_s = 0")
        await execute(opened, "UPDATE settings SET value = '0' WHERE key = 'member_cooldown_s'")
        yield opened
    finally:
        await opened.close()


async def execute(records: SqliteLoyaltyRecords, sql: str, *params: object) -> None:
    await records.connection.execute(sql, params)
    await records.connection.commit()


async def rows(
    records: SqliteLoyaltyRecords, sql: str, *params: object
) -> list[tuple[object, ...]]:
    async with records.connection.execute(sql, params) as cursor:
        return [tuple(r) async for r in cursor]


def member(n: int) -> str:
    return f"m-{n:05d}"


async def trigger(
    records: SqliteLoyaltyRecords,
    n: int,
    ts: float = T0,
    store: str = STORE,
    now_s: float = NOW,
    campaign: str = BAKERY,
) -> tuple[wire.OfferTrigger, RecordOutcome]:
    offer = make_offer_trigger(
        member=member(n), device=f"d-{n:05d}", campaign=campaign, ts=ts, detected_at=ts + 1
    )
    gateway = wire.GatewayAddress(CHAIN, store, "gw-1")
    return offer, await records.record(await as_sent(records, gateway, offer), now_s)


async def offer_row(records: SqliteLoyaltyRecords, offer_id: str) -> tuple[object, ...]:
    (row,) = await rows(
        records,
        "SELECT delivery, suppressed_reason, code, shopper_token, delivery_payload, expires_at "
        "FROM offers WHERE event_id = ?",
        offer_id,
    )
    return row


# --- holdout ----------------------------------------------------------------------------------


async def test_members_in_the_holdout_are_recorded_never_sent_and_the_others_are_sent(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(
        records, "UPDATE campaigns SET holdout_pct = 50, code = 'BAKE10' WHERE id = ?", BAKERY
    )
    expected = {n: in_holdout(BAKERY, member(n), 50) for n in range(MEMBERS)}
    assert 0 < sum(expected.values()) < MEMBERS  # both groups exist among the seeded members

    held = 0
    for n in range(MEMBERS):
        offer, outcome = await trigger(records, n)
        delivery, reason, code, token, payload, _ = await offer_row(records, offer.event_id)
        assert outcome.new_offers and outcome.refused_offers == {}
        if expected[n]:
            held += 1
            assert (delivery, reason, code, token, payload) == ("holdout", None, None, None, None)
            assert outcome.deliveries == [] and outcome.holdout == 1
        else:
            assert (delivery, code) == ("pending", "BAKE10")
            assert len(outcome.deliveries) == 1 and outcome.holdout == 0
    assert held == sum(expected.values())


async def test_the_same_member_is_held_out_at_every_store(records: SqliteLoyaltyRecords) -> None:
    await execute(records, "UPDATE campaigns SET holdout_pct = 50 WHERE id = ?", BAKERY)
    n = next(n for n in range(MEMBERS) if in_holdout(BAKERY, member(n), 50))
    here, _ = await trigger(records, n, ts=T0)
    there, _ = await trigger(records, n, ts=T0 + 86400, store=OTHER)
    assert (await offer_row(records, here.event_id))[0] == "holdout"
    assert (await offer_row(records, there.event_id))[0] == "holdout"


async def test_a_campaign_without_holdout_sends_every_admitted_offer(
    records: SqliteLoyaltyRecords,
) -> None:
    for n in range(10):
        _offer, outcome = await trigger(records, n)
        assert outcome.holdout == 0 and len(outcome.deliveries) == 1


# --- content and codes --------------------------------------------------------------------------


async def test_the_offer_carries_the_campaigns_picture_link_code_and_validity(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(
        records,
        "UPDATE campaigns SET image_url = 'https://cdn.example.com/bakery.jpg', "
        "deep_link = 'acmeapp://offers/bakery', code = 'BAKE10' WHERE id = ?",
        BAKERY,
    )
    offer, outcome = await trigger(records, 0)

    (delivery,) = outcome.deliveries
    sent = wire.decode_as(delivery.payload, wire.ShopperOffer)
    assert sent.image_url == "https://cdn.example.com/bakery.jpg"
    assert sent.deep_link == "acmeapp://offers/bakery"
    assert sent.code == "BAKE10"
    assert sent.valid_until == NOW + VALIDITY_S
    row = await offer_row(records, offer.event_id)
    assert row[2] == "BAKE10" and row[5] == sent.valid_until


async def test_a_pool_gives_each_offer_its_own_code_then_runs_out(
    records: SqliteLoyaltyRecords, caplog: pytest.LogCaptureFixture
) -> None:
    for i, code in enumerate(("BAKE-0001", "BAKE-0002")):
        await execute(
            records,
            "INSERT INTO campaign_codes (code, campaign_id, added_at) VALUES (?, ?, ?)",
            code,
            BAKERY,
            T0 + i,
        )
    given = []
    for n in range(2):
        offer, outcome = await trigger(records, n)
        (delivery,) = outcome.deliveries
        code = wire.decode_as(delivery.payload, wire.ShopperOffer).code
        given.append(code)
        assert await rows(records, "SELECT offer_id FROM campaign_codes WHERE code = ?", code) == [
            (offer.event_id,)
        ]
        assert (await offer_row(records, offer.event_id))[2] == code
    assert given == ["BAKE-0001", "BAKE-0002"]

    exhausted = []
    for n in (2, 3):
        offer, outcome = await trigger(records, n)
        assert outcome.deliveries == []
        assert outcome.refused_offers == {"codes_exhausted": 1}
        exhausted.append(await offer_row(records, offer.event_id))
    assert [r[:3] for r in exhausted] == [("suppressed", "codes_exhausted", None)] * 2
    # Logged once for the campaign, not once per offer.
    assert sum("every code of its pool" in r.getMessage() for r in caplog.records) == 1

    # Codes added later are given out again.
    await execute(
        records,
        "INSERT INTO campaign_codes (code, campaign_id, added_at) VALUES ('BAKE-0003', ?, ?)",
        BAKERY,
        T0 + 5,
    )
    _, outcome = await trigger(records, 4)
    (delivery,) = outcome.deliveries
    assert wire.decode_as(delivery.payload, wire.ShopperOffer).code == "BAKE-0003"


async def test_a_member_in_the_holdout_takes_no_code_from_the_pool(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE campaigns SET holdout_pct = 50 WHERE id = ?", BAKERY)
    await execute(
        records,
        "INSERT INTO campaign_codes (code, campaign_id, added_at) VALUES ('ONLY-ONE', ?, ?)",
        BAKERY,
        T0,
    )
    held = next(n for n in range(MEMBERS) if in_holdout(BAKERY, member(n), 50))
    sent = next(n for n in range(MEMBERS) if not in_holdout(BAKERY, member(n), 50))
    await trigger(records, held)
    offer, outcome = await trigger(records, sent)
    assert len(outcome.deliveries) == 1
    assert await rows(records, "SELECT offer_id FROM campaign_codes") == [(offer.event_id,)]


async def test_a_code_edited_by_hand_into_garbage_is_never_sent(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE campaigns SET code = 'no spaces allowed' WHERE id = ?", BAKERY)
    _offer, outcome = await trigger(records, 0)
    assert outcome.deliveries == [] and outcome.refused_offers == {"invalid_code": 1}


# --- campaign caps across stores -----------------------------------------------------------------


def local(zone: str, *when: int) -> float:
    return datetime(*when, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


async def test_once_a_day_holds_across_stores_in_the_stores_local_day(
    records: SqliteLoyaltyRecords,
) -> None:
    zone = "America/New_York"
    await execute(records, "UPDATE stores SET timezone = ?", zone)
    await execute(records, "UPDATE campaigns SET per_member_day = 1 WHERE id = ?", BAKERY)
    evening = local(zone, 2026, 3, 10, 22, 0)
    later_that_evening = local(zone, 2026, 3, 10, 23, 30)  # 03:30 UTC: another day in UTC
    next_morning = local(zone, 2026, 3, 11, 8, 0)

    _first, one = await trigger(records, 0, ts=evening, now_s=evening)
    second, two = await trigger(records, 0, ts=later_that_evening, store=OTHER, now_s=evening)
    _third, three = await trigger(records, 0, ts=next_morning, store=OTHER, now_s=evening)

    assert len(one.deliveries) == 1
    assert two.deliveries == [] and two.refused_offers == {"campaign_cap": 1}
    assert (await offer_row(records, second.event_id))[:2] == ("suppressed", "campaign_cap")
    assert len(three.deliveries) == 1


async def test_a_weekly_cap_counts_any_seven_days_at_every_store(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE campaigns SET per_member_week = 2 WHERE id = ?", BAKERY)
    day = 86400.0
    delivered = []
    for ts, store in (
        (T0, STORE),
        (T0 + 2 * day, OTHER),
        (T0 + 4 * day, STORE),
        (T0 + 8 * day, OTHER),
    ):
        _, outcome = await trigger(records, 0, ts=ts, store=store, now_s=ts)
        delivered.append(len(outcome.deliveries))
    # The third is the third in 7 days; the fourth is 6 days after the second: its week holds
    # only that one (the suppressed third does not count).
    assert delivered == [1, 1, 0, 1]


async def test_a_late_upload_counts_against_the_offers_after_it(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(records, "UPDATE campaigns SET per_member_week = 1 WHERE id = ?", BAKERY)
    _, first = await trigger(records, 0, ts=T0 + 86400)
    _, late = await trigger(records, 0, ts=T0, store=OTHER)  # decided earlier, uploaded later
    assert len(first.deliveries) == 1
    assert late.refused_offers == {"campaign_cap": 1}


async def test_holdout_offers_count_against_the_cap_as_the_gateway_counted_them(
    records: SqliteLoyaltyRecords,
) -> None:
    await execute(
        records, "UPDATE campaigns SET per_member_day = 1, holdout_pct = 100 WHERE id = ?", BAKERY
    )
    _, first = await trigger(records, 0, ts=T0)
    _, second = await trigger(records, 0, ts=T0 + 60, store=OTHER)
    assert first.holdout == 1
    assert second.holdout == 0 and second.refused_offers == {"campaign_cap": 1}


# --- a campaign paused after the gateway decided ---------------------------------------------------


async def test_a_trigger_decided_before_the_pause_is_honoured_one_after_is_not(
    records: SqliteLoyaltyRecords,
) -> None:
    paused_at = T0 + 600
    await records.set_campaign_status(BAKERY, "pause", paused_at)
    _before, honoured = await trigger(records, 0, ts=paused_at - 60, now_s=paused_at + 300)
    _after, refused = await trigger(records, 1, ts=paused_at + 60, now_s=paused_at + 300)
    assert len(honoured.deliveries) == 1
    assert refused.deliveries == [] and refused.refused_offers == {"campaign_inactive": 1}

    await records.set_campaign_status(BAKERY, "archive", paused_at + 900)
    _, archived_late = await trigger(records, 2, ts=paused_at + 1000, now_s=paused_at + 1100)
    assert archived_late.refused_offers == {"campaign_inactive": 1}


async def test_a_trigger_of_an_unknown_campaign_is_recorded_suppressed(
    records: SqliteLoyaltyRecords,
) -> None:
    offer, outcome = await trigger(records, 0, campaign="never-was")
    assert outcome.refused_offers == {"unknown_campaign": 1}
    assert (await offer_row(records, offer.event_id))[:2] == ("suppressed", "unknown_campaign")


async def test_a_store_time_zone_edited_into_garbage_counts_days_in_utc(
    records: SqliteLoyaltyRecords, caplog: pytest.LogCaptureFixture
) -> None:
    await execute(records, "UPDATE stores SET timezone = 'Mars/Olympus_Mons'")
    await execute(records, "UPDATE campaigns SET per_member_day = 1 WHERE id = ?", BAKERY)
    evening = local("UTC", 2026, 3, 10, 23, 0)
    _, first = await trigger(records, 0, ts=evening, now_s=evening)
    _, after_utc_midnight = await trigger(records, 0, ts=evening + 7200, now_s=evening)
    _, same_utc_day = await trigger(records, 0, ts=evening + 9000, now_s=evening)
    assert len(first.deliveries) == len(after_utc_midnight.deliveries) == 1
    assert same_utc_day.refused_offers == {"campaign_cap": 1}
    assert sum("not an IANA zone" in r.getMessage() for r in caplog.records) == 1


# --- targeting --------------------------------------------------------------------------------


async def test_a_trigger_from_a_store_the_campaign_does_not_run_at_is_refused(
    records: SqliteLoyaltyRecords,
) -> None:
    """A campaign targeted by store tag runs where the tag is: a trigger for it from another
    store's gateway (which never had it in its sync) is recorded suppressed, never sent."""
    await execute(records, "INSERT INTO store_tags (store_id, tag) VALUES (?, 'north')", STORE)
    await execute(
        records, "UPDATE campaigns SET store_id = NULL, store_tags = 'north' WHERE id = ?", BAKERY
    )
    here, _ = await trigger(records, 1, ts=T0, store=STORE)
    there, outcome = await trigger(records, 2, ts=T0, store=OTHER)
    assert (await offer_row(records, here.event_id))[0] == "pending"
    delivery, reason, *_ = await offer_row(records, there.event_id)
    assert (delivery, reason) == ("suppressed", "campaign_not_at_store")
    assert outcome.deliveries == [] and outcome.refused_offers == {"campaign_not_at_store": 1}
