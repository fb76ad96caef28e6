"""Campaign management in the loyalty records on a real SQLite file (issue 11): every change is one
transaction that moves the campaigns_version of exactly the stores whose sync it changes; the sync
carries each store's time zone, schedules in it, its gateways' budget shares and the audience; code
pools are unique chain-wide, added all or none."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import SCHEMA_VERSION, SqliteLoyaltyRecords
from cloud_bridge.core.campaigns import (
    ArchivedCampaign,
    CampaignChange,
    CampaignDefinition,
    CampaignExists,
    CampaignSchedule,
    InvalidCampaign,
    UnknownCampaign,
    UnknownStore,
)
from edge.core import wire

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
STORES = ("s1", "s2", "s3")
KEY = bytes(32)
BASE = CampaignDefinition(
    id="winter",
    title="Winter sale",
    body="30% off coats",
    tiers=("gold",),
    cooldown_s=3600.0,
    priority=1,
    validity_s=900.0,
)


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(tmp_path / "loyalty.db", "acme", create=True)
    try:
        for store in STORES:
            await opened.add_store(store, f"Store {store}")
        yield opened
    finally:
        await opened.close()


async def versions(records: SqliteLoyaltyRecords) -> dict[str, int]:
    return {store: (await records.campaigns(store)).version for store in STORES}


async def moved(records: SqliteLoyaltyRecords, before: dict[str, int]) -> set[str]:
    after = await versions(records)
    return {store for store in STORES if after[store] != before[store]}


def spec(sync: wire.CampaignSync, campaign: str) -> wire.CampaignSpec:
    return next(c for c in sync.campaigns if c.id == campaign)


async def test_a_change_moves_only_the_stores_it_targets_before_or_after(
    records: SqliteLoyaltyRecords,
) -> None:
    start = await versions(records)
    await records.create_campaign(dataclasses.replace(BASE, stores=("s1",)), NOW)
    assert await moved(records, start) == {"s1"}

    start = await versions(records)
    await records.update_campaign("winter", CampaignChange(stores=("s2",)), NOW + 1)
    assert await moved(records, start) == {"s1", "s2"}  # s1 loses it, s2 gains it

    start = await versions(records)
    await records.update_campaign("winter", CampaignChange(title="Coats"), NOW + 2)
    assert await moved(records, start) == {"s2"}

    start = await versions(records)
    await records.update_campaign("winter", CampaignChange(stores=()), NOW + 3)
    # s1 and s3 gain it; s2 had it already and its sync is the same: no new version to sign.
    assert await moved(records, start) == {"s1", "s3"}

    start = await versions(records)
    await records.set_campaign_status("winter", "pause", NOW + 4)
    await records.update_campaign("winter", CampaignChange(title="Paused coats"), NOW + 5)
    after_pause = await moved(records, start)
    assert after_pause == set(STORES)  # the pause took it out of every sync...
    start = await versions(records)
    await records.update_campaign("winter", CampaignChange(body="Still paused"), NOW + 6)
    assert await moved(records, start) == set()  # ...and a paused campaign's text is in none


async def test_store_tags_target_stores_and_a_tag_change_moves_whose_sync_changes(
    records: SqliteLoyaltyRecords,
) -> None:
    start = await versions(records)
    await records.create_campaign(dataclasses.replace(BASE, store_tags=("north",)), NOW)
    assert await moved(records, start) == set()  # no store has the tag yet: nobody's sync

    start = await versions(records)
    await records.set_store_tags("s2", ("north", "mall"))
    assert await moved(records, start) == {"s2"}
    assert [c.id for c in (await records.campaigns("s2")).campaigns] == ["winter"]
    assert (await records.campaigns("s1")).campaigns == ()

    start = await versions(records)
    await records.set_store_tags("s3", ("mall",))  # no campaign is for malls
    assert await moved(records, start) == set()
    facts = await records.store_facts("s3")
    assert facts is not None and facts.tags == ("mall",)

    start = await versions(records)
    await records.set_store_tags("s2", ())
    assert await moved(records, start) == {"s2"}
    assert (await records.campaigns("s2")).campaigns == ()


async def test_the_sync_carries_the_time_zone_schedule_caps_and_audience(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.set_store_timezone("s1", "Europe/Paris")
    await records.create_campaign(
        dataclasses.replace(
            BASE,
            schedule=CampaignSchedule(
                "2027-03-28T02:30", "2027-04-01", (7, 1), (("09:00", "12:00"),)
            ),
            per_member_day=1,
            per_member_week=2,
            segments=("lapsed", "new"),
            min_visits=2,
            max_visits=20,
        ),
        NOW,
    )
    paris, utc = await records.campaigns("s1"), await records.campaigns("s2")
    assert (paris.timezone, utc.timezone) == ("Europe/Paris", "UTC")
    got = spec(paris, "winter")
    assert got.schedule == wire.Schedule(
        # 02:30 does not exist in Paris that night: it starts at 03:30 CEST (01:30 UTC).
        datetime(2027, 3, 28, 1, 30, tzinfo=UTC).timestamp(),
        datetime(2027, 3, 31, 22, 0, tzinfo=UTC).timestamp(),
        (7, 1),
        ((540, 720),),
    )
    assert spec(utc, "winter").schedule == wire.Schedule(
        datetime(2027, 3, 28, 2, 30, tzinfo=UTC).timestamp(),
        datetime(2027, 4, 1, tzinfo=UTC).timestamp(),
        (7, 1),
        ((540, 720),),
    )
    assert (got.per_member_day, got.per_member_week) == (1, 2)
    assert got.segments == ("new", "lapsed") and (got.min_visits, got.max_visits) == (2, 20)
    assert got.gateway_budgets is None
    # What the gateway decodes is what the bridge meant.
    assert wire.decode(wire.encode(paris), wire.CampaignSync) == paris

    start = await versions(records)
    await records.set_store_timezone("s2", "America/New_York")
    assert await moved(records, start) == {"s2"}
    assert spec(await records.campaigns("s2"), "winter").schedule != spec(utc, "winter").schedule


async def test_a_daily_budget_is_split_over_every_gateway_and_gateways_move_the_shares(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.set_store_tags("s3", ("north",))
    await records.create_campaign(
        dataclasses.replace(BASE, stores=("s1",), store_tags=("north",), daily_budget=10), NOW
    )
    await records.create_campaign(dataclasses.replace(BASE, id="other", stores=("s2",)), NOW)
    assert spec(await records.campaigns("s1"), "winter").gateway_budgets == ()  # no gateway yet

    start = await versions(records)
    for store, gateway in (("s1", "gw-a"), ("s1", "gw-b"), ("s3", "gw-a")):
        await records.add_gateway(store, gateway, KEY, NOW)
    assert await moved(records, start) == {"s1", "s3"}  # s2's campaign has no budget
    s1, s3 = await records.campaigns("s1"), await records.campaigns("s3")
    assert spec(s1, "winter").gateway_budgets == (("gw-a", 4), ("gw-b", 3))
    assert spec(s3, "winter").gateway_budgets == (("gw-a", 3),)

    start = await versions(records)
    assert await records.add_gateway("s2", "gw-a", KEY, NOW) == "added"
    assert await moved(records, start) == set()  # s2 is not the budgeted campaign's

    start = await versions(records)
    assert await records.remove_gateway("s1", "gw-b")
    assert await moved(records, start) == {"s1", "s3"}
    assert spec(await records.campaigns("s1"), "winter").gateway_budgets == (("gw-a", 5),)
    assert spec(await records.campaigns("s3"), "winter").gateway_budgets == (("gw-a", 5),)


async def test_refusals_name_the_field_and_write_nothing(records: SqliteLoyaltyRecords) -> None:
    start = await versions(records)
    with pytest.raises(InvalidCampaign) as caught:
        await records.create_campaign(dataclasses.replace(BASE, stores=("s1", "s9")), NOW)
    assert caught.value.field == "stores[1]" and "s9" in caught.value.problem
    with pytest.raises(InvalidCampaign) as caught:
        await records.create_campaign(
            dataclasses.replace(BASE, schedule=CampaignSchedule(None, "2026-01-01")), NOW
        )
    assert caught.value.field == "schedule.end"
    with pytest.raises(InvalidCampaign) as caught:
        await records.set_store("s1", timezone="Europe/Pariss", tags=("north",))
    assert caught.value.field == "timezone"
    with pytest.raises(InvalidCampaign) as caught:
        await records.set_store("s1", tags=("north", "North"))
    assert caught.value.field == "tags[1]"
    with pytest.raises(UnknownStore):
        await records.set_store("s9", timezone="UTC")
    assert await records.campaign_list() == []
    assert await moved(records, start) == set()
    facts = await records.store_facts("s1")
    assert facts is not None and (facts.timezone, facts.tags) == ("UTC", ())

    await records.create_campaign(BASE, NOW)
    with pytest.raises(CampaignExists):
        await records.create_campaign(BASE, NOW)
    with pytest.raises(UnknownCampaign):
        await records.update_campaign("spring", CampaignChange(title="x"), NOW)
    await records.set_campaign_status("winter", "archive", NOW)
    with pytest.raises(ArchivedCampaign):
        await records.update_campaign("winter", CampaignChange(title="x"), NOW)
    with pytest.raises(ArchivedCampaign):
        await records.set_campaign_status("winter", "resume", NOW)


async def test_an_update_keeps_an_ended_schedule_but_refuses_setting_one(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.create_campaign(
        dataclasses.replace(BASE, schedule=CampaignSchedule(None, "2026-12-08")), NOW
    )
    later = NOW + 7 * 86400
    updated = await records.update_campaign("winter", CampaignChange(title="Late"), later)
    assert updated.definition.schedule == CampaignSchedule(None, "2026-12-08")
    with pytest.raises(InvalidCampaign) as caught:
        await records.update_campaign(
            "winter", CampaignChange(schedule=CampaignSchedule(None, "2026-12-09")), later
        )
    assert caught.value.field == "schedule.end"


async def test_every_field_is_stored_and_read_back(records: SqliteLoyaltyRecords) -> None:
    full = dataclasses.replace(
        BASE,
        stores=("s1",),
        store_tags=("north",),
        image_url="https://cdn.example/w.png",
        deep_link="acme://offers/winter",
        code="WINTER30",
        segments=("regular",),
        min_visits=0,
        max_visits=3,
        schedule=CampaignSchedule("2026-12-10", None, (), (("17:00", "24:00"),)),
        per_member_day=0,
        per_member_week=5,
        daily_budget=0,
        holdout_pct=33.3,
    )
    created = await records.create_campaign(full, NOW)
    read = await records.campaign("winter")
    assert read is not None and read.definition == full and read == created
    assert (read.created_at, read.updated_at) == (NOW, NOW)
    cleared = await records.update_campaign(
        "winter",
        CampaignChange(clear=frozenset({"schedule", "code", "holdout_pct"})),
        NOW + 60,
    )
    assert cleared.created_at == NOW and cleared.updated_at == NOW + 60
    again = await records.campaign("winter")
    assert again is not None and again.definition == dataclasses.replace(
        full, schedule=None, code=None, holdout_pct=0.0
    )


async def test_code_pools_are_unique_in_the_chain_and_added_all_or_none(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.create_campaign(BASE, NOW)
    await records.create_campaign(dataclasses.replace(BASE, id="fixed", code="FIXED-1"), NOW)
    counts = await records.add_campaign_codes("winter", ["A1", "A2", "A3"], NOW)
    assert (counts.total, counts.given_out, counts.free) == (3, 0, 3)

    for codes, field, problem in (
        (["B1", "A2"], "codes[1]", "already used by campaign 'winter'"),
        (["B1", "B2", "B1"], "codes[2]", "named twice"),
        (["B1", "FIXED-1"], "codes[1]", "already used by campaign 'fixed'"),
        (["B1", "bad code"], "codes[1]", "not a redemption code"),
        ([], "codes", "no code"),
    ):
        with pytest.raises(InvalidCampaign) as caught:
            await records.add_campaign_codes("winter", codes, NOW)
        assert (caught.value.field, problem in caught.value.problem) == (field, True)
    assert (await records.campaign_code_counts("winter")).total == 3  # nothing half-added

    with pytest.raises(InvalidCampaign) as caught:
        await records.add_campaign_codes("fixed", ["C1"], NOW)
    assert caught.value.field == "codes"  # one code for all, or a pool
    with pytest.raises(InvalidCampaign) as caught:
        await records.update_campaign("winter", CampaignChange(code="W1"), NOW)
    assert caught.value.field == "code"
    with pytest.raises(InvalidCampaign) as caught:
        await records.create_campaign(dataclasses.replace(BASE, id="dup", code="A1"), NOW)
    assert caught.value.field == "code" and "winter" in caught.value.problem
    with pytest.raises(UnknownCampaign):
        await records.campaign_code_counts("nope")

    await records.connection.execute("UPDATE campaign_codes SET offer_id = 'o-1' WHERE code = 'A1'")
    await records.connection.commit()
    counts = await records.campaign_code_counts("winter")
    assert (counts.total, counts.given_out, counts.free) == (3, 1, 2)
    await records.set_campaign_status("winter", "archive", NOW)
    with pytest.raises(ArchivedCampaign):
        await records.add_campaign_codes("winter", ["Z1"], NOW)


async def test_a_hand_edited_bad_row_is_left_out_of_the_sync_not_the_others(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.create_campaign(BASE, NOW)
    await records.create_campaign(dataclasses.replace(BASE, id="broken"), NOW)
    start = await versions(records)
    await records.connection.execute(
        'UPDATE campaigns SET schedule = \'{"hours": [["12:00", "09:00"]]}\' WHERE id = \'broken\''
    )
    await records.connection.commit()
    assert await moved(records, start) == set(STORES)  # a hand edit still reaches the gateways
    assert [c.id for c in (await records.campaigns("s1")).campaigns] == ["winter"]
    await records.connection.execute("UPDATE stores SET timezone = 'Mars/Base' WHERE id = 's2'")
    await records.connection.commit()
    await records.update_campaign(
        "winter", CampaignChange(schedule=CampaignSchedule(days=(1,))), NOW + 1
    )
    sync = await records.campaigns("s2")
    assert sync.timezone == "UTC" and sync.campaigns == ()  # not at the wrong hours


async def test_a_version_11_database_keeps_its_campaigns_and_hand_edits_still_reach_gateways(
    tmp_path: Path,
) -> None:
    import sqlite3

    from cloud_bridge.adapters.sqlite_records import _MIGRATIONS

    path = tmp_path / "v11.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:11]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 11")
    conn.executemany("INSERT INTO stores (id, name) VALUES (?, '')", [(s,) for s in STORES])
    conn.execute(
        "INSERT INTO campaigns (id, store_id, title, body, tiers, cooldown_s) "
        "VALUES ('old', 's1', 't', 'b', 'gold', 60)"
    )
    conn.commit()
    conn.close()

    records = await SqliteLoyaltyRecords.open(path, "acme")
    try:
        (version,) = await records.connection.execute_fetchall("PRAGMA user_version")
        assert version[0] == SCHEMA_VERSION
        old = await records.campaign("old")
        assert old is not None and old.definition.stores == ("s1",) and old.created_at is None
        start = await versions(records)
        await records.connection.execute("UPDATE campaigns SET title = 'hand' WHERE id = 'old'")
        await records.connection.commit()
        assert await moved(records, start) == {"s1"}  # a hand edit: the trigger, as before
        start = await versions(records)
        await records.update_campaign("old", CampaignChange(title="by the bridge"), NOW)
        assert await moved(records, start) == {"s1"}  # now listed in campaign_stores
        assert (await records.campaign("old")) is not None
    finally:
        await records.close()


async def test_whether_a_campaign_runs_at_a_store_by_id_tag_or_everywhere(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.set_store_tags("s2", ("north",))
    await records.create_campaign(dataclasses.replace(BASE, id="all"), NOW)
    await records.create_campaign(dataclasses.replace(BASE, id="named", stores=("s1",)), NOW)
    await records.create_campaign(
        dataclasses.replace(BASE, id="tagged", store_tags=("north",)), NOW
    )
    await records.create_campaign(
        dataclasses.replace(BASE, id="both", stores=("s3",), store_tags=("north",)), NOW
    )
    runs = {
        c: {s for s in STORES if await records.campaign_targets_store(c, s)}
        for c in ("all", "named", "tagged", "both")
    }
    assert runs == {
        "all": {"s1", "s2", "s3"},
        "named": {"s1"},
        "tagged": {"s2"},
        "both": {"s2", "s3"},
    }
    for c, stores in runs.items():  # the same as the syncs say
        assert stores == {
            s for s in STORES if c in {x.id for x in (await records.campaigns(s)).campaigns}
        }
    assert await records.campaign_targets_store("nope", "s1") is None


async def test_another_process_cannot_change_a_campaign_between_a_change_s_read_and_write(
    records: SqliteLoyaltyRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI and the bridge's API are two processes on one file. Each change reads the campaign
    # (and whether a code is free) and then writes: the other's write must not land in between,
    # or it is lost (a body) or a code is given to two campaigns.
    await records.create_campaign(BASE, NOW)
    other = sqlite3.connect(tmp_path / "loyalty.db", timeout=0, isolation_level=None)
    writes = [
        "UPDATE campaigns SET body = 'Other body', updated_at = 1 WHERE id = 'winter'",
        "UPDATE campaigns SET code = 'SHARED', updated_at = 2 WHERE id = 'winter'",
    ]
    landed: list[str] = []
    checked = records._checked

    async def check_then_let_the_other_write(
        definition: CampaignDefinition, now_s: float | None
    ) -> CampaignDefinition:
        found = await checked(definition, now_s)
        write = writes.pop(0)
        try:
            other.execute(write)
            landed.append(write)
        except sqlite3.OperationalError as exc:  # the change holds the write lock
            assert "locked" in str(exc)
        return found

    monkeypatch.setattr(records, "_checked", check_then_let_the_other_write)
    try:
        await records.update_campaign("winter", CampaignChange(title="Coats"), NOW + 1)
        await records.create_campaign(
            dataclasses.replace(BASE, id="spring", code="SHARED"), NOW + 2
        )
    finally:
        other.close()
    assert not writes
    winter, spring = await records.campaign("winter"), await records.campaign("spring")
    assert winter is not None and spring is not None
    assert winter.definition.title == "Coats"
    if any("body" in write for write in landed):  # it got in: it must not be lost
        assert winter.definition.body == "Other body"
    assert winter.definition.code != spring.definition.code  # a till names only the code


async def test_a_change_that_would_make_a_store_s_sync_too_big_for_its_gateways_is_refused(
    records: SqliteLoyaltyRecords,
) -> None:
    # Every gateway refuses a campaign sync over wire.MAX_PAYLOAD_BYTES whole: past it, none of
    # the store's campaign changes would reach its gateways again.
    long = dataclasses.replace(BASE, body="b" * 3900, stores=("s1",))
    created = 0
    with pytest.raises(InvalidCampaign) as caught:
        for i in range(40):
            await records.create_campaign(dataclasses.replace(long, id=f"long-{i:02d}"), NOW)
            created += 1
    assert caught.value.field == "campaign"
    assert "store 's1'" in caught.value.problem and "pause or archive" in caught.value.problem
    assert 10 < created < 40
    before = await versions(records)
    assert await records.campaign(f"long-{created:02d}") is None  # nothing written

    sync = await records.campaigns("s1")
    assert len(sync.campaigns) == created
    assert wire.decode_as(wire.encode(sync), wire.CampaignSync) == sync  # what a gateway does
    # Other stores are not held back; pausing one at the full store makes room for another.
    await records.create_campaign(dataclasses.replace(long, id="other", stores=("s2",)), NOW)
    await records.set_campaign_status("long-00", "pause", NOW + 1)
    await records.create_campaign(dataclasses.replace(long, id=f"long-{created:02d}"), NOW + 2)
    assert (await moved(records, before)) == {"s1", "s2"}
