"""Shopper preferences in the loyalty records (real SQLite): kept with consent, carried by rosters as
masks, explained by the campaign sync's terms, re-checked before an offer is delivered; and a change
reaching the gateways within one sync, as a delta rotating the member's devices."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SCHEMA_VERSION, SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.config import BridgeConfig, BridgeSection, PreferencesSection
from cloud_bridge.core.enrollment import EnrollRequest, InvalidRequest, NoConsent, UnknownMember
from cloud_bridge.core.preferences import (
    DEFAULT_INTERESTS,
    DEFAULT_PROMOTION_TYPES,
    PreferencesRequest,
)
from cloud_bridge.core.pseudonyms import Kind
from cloud_bridge.errors import RecordsError
from cloud_bridge.seed import DEMO_CAMPAIGNS, seed_preferences, seed_records
from edge.core import bundle, wire
from edge.core.preferences import mask_of, term_bits
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.publisher import FakePublisher

CHAIN = "acme"
STORE = "store-001"
OTHER_STORE = "store-002"
DOOR = wire.GatewayAddress(CHAIN, STORE, "door-1")
ELSEWHERE = wire.GatewayAddress(CHAIN, OTHER_STORE, "door-1")
MEMBERS = 12
APP_MEMBER = "m-00000"  # seeded with app d-00000
TAG_MEMBER = "m-00001"  # seeded with tag d-00001
NOW = T0 + 10.0
HOUR = 3600.0
DAY = 86400.0
SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)
DOOR_KEY = bundle.generate_gateway_key(random.Random("door-1").randbytes)


@dataclass
class Loyalty:
    records: SqliteLoyaltyRecords
    enrollment: SqliteEnrollment  # a connection of its own, as the API has

    async def state(
        self,
        member: str,
        interests: tuple[str, ...] = (),
        promotions: tuple[str, ...] = (),
        per_day: int = wire.MAX_OFFERS_PER_DAY,
        per_week: int = wire.MAX_OFFERS_PER_WEEK,
    ) -> None:
        request = PreferencesRequest(member, interests, promotions, per_day, per_week)
        await self.enrollment.set_preferences(request)

    async def roster_prefs(self, member: str) -> list[wire.MemberPrefs | None]:
        roster = await self.records.roster(STORE)
        return [d.prefs for d in roster.devices if d.member == member]

    async def execute(self, sql: str, *params: object) -> None:
        await self.records.connection.execute(sql, params)
        await self.records.connection.commit()


@pytest.fixture
async def loyalty(tmp_path: Path) -> AsyncIterator[Loyalty]:
    path = tmp_path / "loyalty.db"
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    enrollment: SqliteEnrollment | None = None
    try:
        await seed_records(
            records, members=MEMBERS, seed=1, stores=(STORE, OTHER_STORE), joined_at=T0 - DAY
        )
        enrollment = await SqliteEnrollment.open(path, CHAIN, data_key=TEST_DATA_KEY)
        yield Loyalty(records, enrollment)
    finally:
        if enrollment is not None:
            await enrollment.close()
        await records.close()


def decode(mask: int, terms: tuple[str, ...]) -> set[str]:
    """A roster mask read back through the campaign sync's terms, as a gateway would."""
    return {term for bit, term in enumerate(terms) if mask >> bit & 1}


# --- kept with consent --------------------------------------------------------------------------


async def test_stated_preferences_are_kept_read_back_and_forgotten(loyalty: Loyalty) -> None:
    assert await loyalty.enrollment.preferences(APP_MEMBER) is None

    await loyalty.state(APP_MEMBER, ("beauty", "home"), ("event",), 1, 3)
    stated = await loyalty.enrollment.preferences(APP_MEMBER)

    assert stated is not None
    assert (stated.interests, stated.promotion_types, stated.per_day, stated.per_week) == (
        ("beauty", "home"),
        ("event",),
        1,
        3,
    )
    assert await loyalty.enrollment.forget_preferences(APP_MEMBER) is True
    assert await loyalty.enrollment.forget_preferences(APP_MEMBER) is False
    assert await loyalty.enrollment.preferences(APP_MEMBER) is None


async def test_withdrawing_consent_forgets_the_preferences(loyalty: Loyalty) -> None:
    await loyalty.state(APP_MEMBER, ("beauty",))
    await loyalty.state(TAG_MEMBER, ("home",))

    await loyalty.enrollment.withdraw_consent(APP_MEMBER)
    # However consent is withdrawn (an admin's SQL too), the preferences go with it.
    await loyalty.execute("UPDATE members SET consent = 0 WHERE id = ?", TAG_MEMBER)

    assert await loyalty.enrollment.preferences(APP_MEMBER) is None
    assert await loyalty.enrollment.preferences(TAG_MEMBER) is None
    assert await loyalty.records.connection.execute_fetchall("SELECT * FROM member_prefs") == []
    # Re-enrolling gives consent again, but the old preferences do not come back.
    await loyalty.enrollment.enroll(EnrollRequest(APP_MEMBER, "app"))
    assert await loyalty.enrollment.preferences(APP_MEMBER) is None


async def test_preferences_without_consent_or_for_an_unknown_member_are_refused(
    loyalty: Loyalty,
) -> None:
    await loyalty.enrollment.withdraw_consent(APP_MEMBER)

    with pytest.raises(NoConsent):
        await loyalty.state(APP_MEMBER, ("beauty",))
    with pytest.raises(UnknownMember):
        await loyalty.state("m-nobody", ("beauty",))
    with pytest.raises(UnknownMember):
        await loyalty.enrollment.preferences("m-nobody")
    assert await loyalty.records.connection.execute_fetchall("SELECT * FROM member_prefs") == []


async def test_only_terms_the_chain_accepts_now_are_stored(loyalty: Loyalty) -> None:
    with pytest.raises(InvalidRequest) as info:
        await loyalty.state(APP_MEMBER, ("beauty", "garden"))
    assert info.value.field == "interests[1]"
    with pytest.raises(InvalidRequest) as info:
        await loyalty.state(APP_MEMBER, (), ("bogof",))
    assert info.value.field == "promotion_types[0]"
    assert await loyalty.enrollment.preferences(APP_MEMBER) is None


# --- rosters --------------------------------------------------------------------------------------


async def test_the_roster_carries_each_devices_kind_and_its_members_preferences_as_masks(
    loyalty: Loyalty,
) -> None:
    await loyalty.state(APP_MEMBER, ("beauty", "home"), ("event", "discount"), 1, 3)
    await loyalty.state(TAG_MEMBER, (), (), 0, 0)

    roster = await loyalty.records.roster(STORE)
    sync = await loyalty.records.campaigns(STORE)

    kinds = dict(await loyalty.records.connection.execute_fetchall("SELECT id, kind FROM devices"))
    assert {d.ref: d.kind for d in roster.devices} == kinds
    assert {"app", "tag"} <= set(kinds.values())
    by_member = {d.member: d.prefs for d in roster.devices}
    mine = by_member[APP_MEMBER]
    assert mine is not None and (mine.per_day, mine.per_week) == (1, 3)
    assert decode(mine.interests, sync.interest_terms) == {"beauty", "home"}
    assert decode(mine.promotions, sync.promotion_terms) == {"event", "discount"}
    assert by_member[TAG_MEMBER] == wire.MemberPrefs(0, 0, 0, 0)
    # Members who stated nothing: no preferences, every campaign of their tier.
    assert sum(p is None for p in by_member.values()) == MEMBERS - 2
    # The roster as the gateway reads it back.
    assert wire.decode_as(wire.encode(roster), wire.RosterSync) == roster


async def test_a_preference_change_moves_the_roster_version_and_rotates_the_members_devices(
    loyalty: Loyalty,
) -> None:
    await loyalty.enrollment.enroll(EnrollRequest(APP_MEMBER, "tag"))  # a second device
    before = await loyalty.records.roster(STORE)
    elsewhere = (await loyalty.records.roster(OTHER_STORE)).version

    await loyalty.state(APP_MEMBER, ("beauty",), (), 2, 5)
    after = await loyalty.records.roster(STORE)

    assert after.version > before.version
    assert (await loyalty.records.roster(OTHER_STORE)).version > elsewhere
    change = bundle.plan_sync(
        {d.ref: d for d in before.devices}, {d.ref: d for d in after.devices}, before.version
    )
    assert isinstance(change, bundle.RosterDelta)
    assert change.add == () and change.remove == ()
    mine = sorted(d.ref for d in after.devices if d.member == APP_MEMBER)
    assert len(mine) == 2
    assert [d.ref for d in change.rotate] == mine
    assert all(d.prefs is not None and d.prefs.per_day == 2 for d in change.rotate)


async def test_stating_the_same_preferences_again_changes_nothing(loyalty: Loyalty) -> None:
    await loyalty.state(APP_MEMBER, ("beauty",), ("event",), 1, 3)
    stated = await loyalty.enrollment.preferences(APP_MEMBER)
    version = (await loyalty.records.roster(STORE)).version

    await loyalty.state(APP_MEMBER, ("beauty",), ("event",), 1, 3)

    assert (await loyalty.records.roster(STORE)).version == version
    assert await loyalty.enrollment.preferences(APP_MEMBER) == stated  # updated_at too


async def test_preferences_of_a_member_without_an_active_device_move_no_roster(
    loyalty: Loyalty,
) -> None:
    await loyalty.enrollment.revoke("d-00000")
    version = (await loyalty.records.roster(STORE)).version

    await loyalty.state(APP_MEMBER, ("beauty",))

    assert (await loyalty.records.roster(STORE)).version == version
    assert await loyalty.enrollment.preferences(APP_MEMBER) is not None


async def test_a_change_reaches_a_gateway_within_one_sync_as_a_delta(loyalty: Loyalty) -> None:
    """Through the bridge's sync (a FakePublisher for the broker), opened as the gateway would."""
    records = loyalty.records
    await records.add_gateway(STORE, DOOR.gateway, bundle.public_key_bytes(DOOR_KEY), T0)
    bridge = Bridge(BridgeConfig(BridgeSection(chain=CHAIN)), records, records, SIGNER)
    broker = FakePublisher()
    bridge.mqtt = broker  # type: ignore[assignment]
    await bridge.publish_sync()
    full_version = (await records.roster(STORE)).version

    await loyalty.state(TAG_MEMBER, ("home",), ("discount",), 1, 2)
    await bridge.publish_sync()

    topic = wire.roster_bundle_topic(DOOR)
    bundles = [m.payload for m in broker.messages if m.topic == topic]
    assert len(bundles) == 2
    opened = bundle.open_bundle(
        bundles[-1],
        gateway_private_key=DOOR_KEY,
        trusted_signer_public_keys=[SIGNER.public_key()],
        expected_chain=CHAIN,
        expected_store=STORE,
        expected_gateway=DOOR.gateway,
        current_version=full_version,
    )
    assert opened.kind == "delta" and opened.version > full_version
    assert isinstance(opened.change, bundle.RosterDelta)
    serial = (await records.serials()).devices["d-00001"]
    pseudonym = records.pseudonyms(STORE).one(Kind.DEVICE, serial)
    assert [d.ref for d in opened.change.rotate] == [pseudonym]
    assert opened.change.add == () and opened.change.remove == ()


async def test_pseudonymized_rosters_keep_kind_and_preferences(loyalty: Loyalty) -> None:
    from cloud_bridge.core.pseudonyms import pseudonymize

    await loyalty.state(TAG_MEMBER, ("home",), ("discount",), 1, 2)
    roster = await loyalty.records.roster(STORE)
    full = bundle.plan_sync(None, {d.ref: d for d in roster.devices}, None)

    sent = pseudonymize(full, await loyalty.records.serials(), loyalty.records.pseudonyms(STORE))

    assert isinstance(sent, bundle.FullRoster)
    by_key = {d.identity_key: d for d in roster.devices}
    for device in sent.devices:
        source = by_key[device.identity_key]
        assert device.ref != source.ref and device.member != source.member
        assert (device.kind, device.prefs) == (source.kind, source.prefs)


# --- the vocabulary and the campaign sync -------------------------------------------------------


async def test_the_campaign_sync_says_what_each_campaign_serves_and_the_terms_in_bit_order(
    loyalty: Loyalty,
) -> None:
    sync = await loyalty.records.campaigns(STORE)

    assert sync.interest_terms == DEFAULT_INTERESTS
    assert sync.promotion_terms == DEFAULT_PROMOTION_TYPES
    served = {c.id: (c.promotion_type, c.interests) for c in sync.campaigns}
    assert served == {
        c.id: (c.promotion_type, tuple(i for i in c.interests.split(",") if i))
        for c in DEMO_CAMPAIGNS
    }
    assert served["welcome-bakery"] == ("discount", ("grocery",))
    assert served["late-night-opening"] == ("event", ())
    # What the bridge publishes (signed), a gateway reads back.
    assert wire.decode_as(wire.encode(sync), wire.CampaignSync) == sync
    assert len(wire.encode(sync)) < wire.MAX_PAYLOAD_BYTES


async def test_a_campaign_row_with_a_term_that_is_not_an_id_is_left_out_of_the_sync(
    loyalty: Loyalty, caplog: pytest.LogCaptureFixture
) -> None:
    await loyalty.execute(
        "UPDATE campaigns SET interests = 'home,Home Decor' WHERE id = 'home-tech-sale'"
    )
    await loyalty.execute(
        "UPDATE campaigns SET promotion_type = '20% off' WHERE id = 'welcome-bakery'"
    )

    sync = await loyalty.records.campaigns(STORE)

    # The rest still reach the gateways: one bad row does not make them refuse the whole set.
    assert {c.id for c in sync.campaigns} == {c.id for c in DEMO_CAMPAIGNS} - {
        "home-tech-sale",
        "welcome-bakery",
    }
    assert wire.decode_as(wire.encode(sync), wire.CampaignSync) == sync
    assert "campaign 'home-tech-sale'" in caplog.text and "not published" in caplog.text


async def test_a_vocabulary_change_keeps_every_bit_and_reaches_the_campaign_sync(
    loyalty: Loyalty,
) -> None:
    records = loyalty.records
    await loyalty.state(APP_MEMBER, ("beauty",))
    before = await records.campaigns(STORE)

    # "beauty" dropped from the config, "garden" added.
    interests = (*(t for t in DEFAULT_INTERESTS if t != "beauty"), "garden")
    await records.sync_preference_terms(interests, DEFAULT_PROMOTION_TYPES)
    after = await records.campaigns(STORE)

    assert after.version > before.version
    assert after.interest_terms == (*DEFAULT_INTERESTS, "garden")  # beauty keeps its place
    assert after.promotion_terms == before.promotion_terms
    # The API no longer accepts it; the member who chose it keeps it, on the same bit.
    with pytest.raises(InvalidRequest):
        await loyalty.state(TAG_MEMBER, ("beauty",))
    await loyalty.state(TAG_MEMBER, ("garden",))
    (mine,) = await loyalty.roster_prefs(APP_MEMBER)
    assert mine is not None and decode(mine.interests, after.interest_terms) == {"beauty"}
    (theirs,) = await loyalty.roster_prefs(TAG_MEMBER)
    assert theirs is not None and theirs.interests == 1 << len(DEFAULT_INTERESTS)
    # Back in the config: the same bit, nothing new in the sync.
    await records.sync_preference_terms((*interests, "beauty"), DEFAULT_PROMOTION_TYPES)
    assert (await records.campaigns(STORE)).interest_terms == after.interest_terms
    await loyalty.state(TAG_MEMBER, ("beauty",))


async def test_more_terms_than_a_mask_holds_stop_the_bridge_with_what_to_do(
    loyalty: Loyalty,
) -> None:
    many = tuple(f"i{n}" for n in range(wire.MAX_PREFERENCE_TERMS - len(DEFAULT_INTERESTS) + 1))

    with pytest.raises(RecordsError, match=r"\[preferences.interests\].*at most 63"):
        await loyalty.records.sync_preference_terms(
            (*DEFAULT_INTERESTS, *many), DEFAULT_PROMOTION_TYPES
        )

    assert (await loyalty.records.campaigns(STORE)).interest_terms == DEFAULT_INTERESTS


async def test_the_bridge_takes_its_vocabulary_from_the_config_at_start(
    loyalty: Loyalty,
) -> None:
    records = loyalty.records
    config = BridgeConfig(
        BridgeSection(chain=CHAIN),
        preferences=PreferencesSection(("home", "pets"), ("discount",)),
    )
    bridge = Bridge(config, records, records, SIGNER)
    bridge.mqtt = FakePublisher()  # type: ignore[assignment]

    async def stop() -> None:
        raise _Started

    bridge._run_loops = stop  # type: ignore[method-assign]
    with pytest.raises(_Started):
        await bridge.run()

    vocabulary = await records.vocabulary()
    assert vocabulary.accepted("interest") == ("home", "pets")
    assert vocabulary.accepted("promotion") == ("discount",)
    assert vocabulary.in_bit_order("interest") == (*DEFAULT_INTERESTS, "pets")


class _Started(Exception):
    """The bridge got as far as its loops."""


# --- the re-check before delivering ---------------------------------------------------------------


async def offer(
    loyalty: Loyalty,
    member: str,
    campaign: str,
    ts: float,
    gateway: wire.GatewayAddress = DOOR,
    now_s: float = NOW,
) -> tuple[wire.OfferTrigger, bool]:
    """Record an offer the gateway triggered (the bridge's clock at `now_s`); whether the bridge
    delivers it."""
    trigger = make_offer_trigger(member=member, device=f"d-{member[2:]}", campaign=campaign, ts=ts)
    outcome = await loyalty.records.record(await as_sent(loyalty.records, gateway, trigger), now_s)
    return trigger, [d.offer_id for d in outcome.deliveries] == [trigger.event_id]


async def suppressed(loyalty: Loyalty) -> dict[str, str]:
    rows = await loyalty.records.connection.execute_fetchall(
        "SELECT event_id, suppressed_reason FROM offers WHERE delivery = 'suppressed'"
    )
    return {r[0]: r[1] for r in rows}


async def test_an_offer_against_the_members_current_preferences_is_suppressed(
    loyalty: Loyalty,
) -> None:
    # The gateway's roster may be older than what the member says now.
    await loyalty.state(APP_MEMBER, ("beauty",), ("event",))

    bakery, bakery_sent = await offer(loyalty, APP_MEMBER, "welcome-bakery", T0)  # discount
    masterclass, masterclass_sent = await offer(
        loyalty, APP_MEMBER, "beauty-masterclass", T0 + 5 * HOUR
    )

    assert not bakery_sent and masterclass_sent
    assert await suppressed(loyalty) == {bakery.event_id: "preferences"}
    # The delivered offer tells the app what it is.
    (row,) = await loyalty.records.connection.execute_fetchall(
        "SELECT delivery_payload FROM offers WHERE event_id = ?", (masterclass.event_id,)
    )
    payload = wire.decode_as(bytes(row[0]), wire.ShopperOffer)
    assert (payload.promotion_type, payload.interests) == ("event", ("beauty",))


async def test_the_caps_hold_across_stores_and_late_uploads(loyalty: Loyalty) -> None:
    await loyalty.state(APP_MEMBER, per_day=1, per_week=2)
    late = 5 * HOUR  # beyond the seeded member cooldown (4 h)

    _, first_sent = await offer(loyalty, APP_MEMBER, "welcome-bakery", T0)
    # Another store, another campaign, the same day: over one a day.
    second, second_sent = await offer(loyalty, APP_MEMBER, "home-tech-sale", T0 + late, ELSEWHERE)
    # A gateway uploading late an offer from the evening before: the same day as the first.
    earlier, earlier_sent = await offer(loyalty, APP_MEMBER, "new-season-style", T0 - late)
    # Recorded as they happen: a day later by the bridge's clock too.
    _, next_day_sent = await offer(loyalty, APP_MEMBER, "home-tech-sale", T0 + DAY, now_s=NOW + DAY)
    # Two offers in the week already: a third on another day is over two a week.
    third_day, third_day_sent = await offer(
        loyalty, APP_MEMBER, "late-night-opening", T0 + 2 * DAY + late, now_s=NOW + 2 * DAY + late
    )

    assert (first_sent, second_sent, earlier_sent, next_day_sent, third_day_sent) == (
        True,
        False,
        False,
        True,
        False,
    )
    assert await suppressed(loyalty) == {
        second.event_id: "frequency",
        earlier.event_id: "frequency",
        third_day.event_id: "frequency",
    }
    # The week after the first: room again.
    _, sent = await offer(
        loyalty,
        APP_MEMBER,
        "gift-with-purchase",
        T0 + 7 * DAY + late,
        now_s=NOW + 7 * DAY + late,
    )
    assert sent


async def test_the_caps_hold_for_when_the_bridge_delivers_not_only_for_radio_time(
    loyalty: Loyalty,
) -> None:
    # The shopper receives an offer when the bridge delivers it: offers a day apart by radio time
    # but uploaded together (a gateway offline overnight, or with its clock days behind) must not
    # reach them together.
    await loyalty.state(APP_MEMBER, per_day=1, per_week=7)

    _, yesterday_sent = await offer(loyalty, APP_MEMBER, "welcome-bakery", T0 - DAY)
    today, today_sent = await offer(loyalty, APP_MEMBER, "home-tech-sale", T0)
    # A gateway of another store whose clock is three days behind.
    behind, behind_sent = await offer(
        loyalty, APP_MEMBER, "new-season-style", T0 - 3 * DAY, ELSEWHERE
    )

    assert (yesterday_sent, today_sent, behind_sent) == (True, False, False)
    assert await suppressed(loyalty) == {today.event_id: "frequency", behind.event_id: "frequency"}
    # A day later by the bridge's clock, the next one is delivered.
    _, sent = await offer(loyalty, APP_MEMBER, "late-night-opening", T0 + DAY, now_s=NOW + DAY)
    assert sent


async def test_offers_not_yet_delivered_are_held_to_the_preferences_stated_since(
    loyalty: Loyalty,
) -> None:
    # Admitted while the app was offline; the member then changes what they want before the
    # bridge could deliver (or redeliver) them: they must not arrive now.
    await loyalty.state(APP_MEMBER, ("beauty", "home"), ())
    await loyalty.state(TAG_MEMBER)
    masterclass, _ = await offer(loyalty, APP_MEMBER, "beauty-masterclass", T0)  # beauty
    sale, _ = await offer(loyalty, APP_MEMBER, "home-tech-sale", T0 + 5 * HOUR)  # home
    sent, _ = await offer(loyalty, TAG_MEMBER, "late-night-opening", T0)
    await loyalty.records.mark_sent([masterclass.event_id, sent.event_id], NOW)

    await loyalty.state(APP_MEMBER, ("home",), ())
    await loyalty.state(TAG_MEMBER, per_day=0, per_week=0)

    due = await loyalty.records.due_deliveries(NOW + 60, resend_after_s=30, limit=100)
    assert [d.offer_id for d in due] == [sale.event_id]  # still what the member wants
    assert await suppressed(loyalty) == {
        masterclass.event_id: "preferences",
        sent.event_id: "frequency",
    }


async def test_an_offer_withdrawn_after_it_was_sent_still_counts_against_the_caps(
    loyalty: Loyalty,
) -> None:
    # Handed to the broker, it may have reached the app though no receipt came back.
    await loyalty.state(APP_MEMBER, ("beauty", "home"), (), 1, 7)
    masterclass, _ = await offer(loyalty, APP_MEMBER, "beauty-masterclass", T0)
    await loyalty.records.mark_sent([masterclass.event_id], NOW)
    await loyalty.state(APP_MEMBER, ("home",), (), 1, 7)

    sale, sent = await offer(
        loyalty, APP_MEMBER, "home-tech-sale", T0 + 5 * HOUR, now_s=NOW + 5 * HOUR
    )

    assert not sent
    assert await suppressed(loyalty) == {
        masterclass.event_id: "preferences",
        sale.event_id: "frequency",
    }


async def test_no_offers_means_none_but_visits_still_count(loyalty: Loyalty) -> None:
    await loyalty.state(TAG_MEMBER, per_day=0, per_week=0)

    trigger, sent = await offer(loyalty, TAG_MEMBER, "late-night-opening", T0)

    assert not sent
    assert await suppressed(loyalty) == {trigger.event_id: "frequency"}
    outcome = await loyalty.records.record(
        await as_sent(
            loyalty.records,
            DOOR,
            make_visit(member=TAG_MEMBER, device="d-00001", ts=T0),
        ),
        NOW,
    )
    assert len(outcome.new_visits) == 1


async def test_suppressed_offers_and_other_members_offers_do_not_count_against_the_caps(
    loyalty: Loyalty,
) -> None:
    await loyalty.state(APP_MEMBER, ("beauty",), (), 1, 1)
    await offer(loyalty, APP_MEMBER, "welcome-bakery", T0)  # refused: not their interest
    await offer(loyalty, TAG_MEMBER, "beauty-masterclass", T0)  # someone else's

    _, sent = await offer(loyalty, APP_MEMBER, "beauty-masterclass", T0 + 5 * HOUR)

    assert sent


async def test_the_outcome_counts_refused_offers_by_reason(loyalty: Loyalty) -> None:
    await loyalty.state(APP_MEMBER, ("beauty",), (), 0, 0)
    triggers = [
        make_offer_trigger(member=APP_MEMBER, device="d-00000", campaign=c, ts=T0 + n * DAY)
        for n, c in enumerate(("welcome-bakery", "beauty-masterclass", "no-such-campaign"))
    ]

    outcome = await loyalty.records.record(await as_sent(loyalty.records, DOOR, *triggers), NOW)

    assert outcome.deliveries == []
    assert outcome.refused_offers == {
        "preferences": 1,
        "frequency": 1,
        "unknown_campaign": 1,
    }


# --- the previous schema ------------------------------------------------------------------------


async def test_a_version_7_database_gains_preferences_and_keeps_its_campaigns(
    tmp_path: Path,
) -> None:
    from cloud_bridge.adapters.sqlite_records import _MIGRATIONS

    path = tmp_path / "v7.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:7]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("INSERT INTO stores (id, name) VALUES (?, 'High Street')", (STORE,))
    conn.execute(
        "INSERT INTO campaigns (id, title, body, tiers, cooldown_s) "
        "VALUES ('c', 't', 'b', 'gold', 60)"
    )
    conn.execute(
        "INSERT INTO members (id, name, tier, shopper_token, joined_at) "
        "VALUES ('m-1', '', 'gold', 'tok', ?)",
        (T0,),
    )
    conn.commit()
    conn.close()

    records = await SqliteLoyaltyRecords.open(path, CHAIN, data_key=TEST_DATA_KEY)
    try:
        (version,) = await records.connection.execute_fetchall("PRAGMA user_version")
        sync = await records.campaigns(STORE)
        roster_before = (await records.roster(STORE)).version
        await records.sync_preference_terms(("home",), ("discount",))
        enrollment = SqliteEnrollment(records.connection, chain=CHAIN, owner=None)
        await enrollment.set_preferences(PreferencesRequest("m-1", ("home",), (), 1, 1))
        stated = await enrollment.preferences("m-1")
        roster_after = (await records.roster(STORE)).version
    finally:
        await records.close()
    assert version[0] == SCHEMA_VERSION
    # An existing campaign declares nothing: no promotion type, a general offer.
    assert [(c.id, c.promotion_type, c.interests) for c in sync.campaigns] == [("c", None, ())]
    assert sync.interest_terms == () and sync.promotion_terms == ()
    assert stated is not None and stated.interests == ("home",)
    assert roster_after == roster_before  # m-1 has no device: no roster carries them


def test_the_seeded_preferences_are_deterministic_varied_and_valid() -> None:
    from cloud_bridge.core.preferences import parse_preferences_request

    members = [f"m-{n:05d}" for n in range(400)]
    stated = seed_preferences(members, seed=7)

    assert stated == seed_preferences(reversed(members), seed=7)
    assert stated != seed_preferences(members, seed=8)
    assert 0.6 < len(stated) / len(members) < 0.8
    requests = [parse_preferences_request(m, body) for m, body in stated.items()]
    assert sum(r.no_offers for r in requests) >= 10
    assert sum(r.per_day == 1 for r in requests) >= 20
    assert any(r.interests for r in requests) and any(not r.interests for r in requests)
    bits = term_bits(DEFAULT_INTERESTS)
    assert all(mask_of(r.interests, bits).bit_count() == len(r.interests) for r in requests)
    assert all(set(r.promotion_types) <= set(DEFAULT_PROMOTION_TYPES) for r in requests)


def test_the_seeded_campaigns_give_a_member_with_preferences_several_to_rotate_through() -> None:
    """Most campaigns are open to every tier and most stated preferences leave several."""
    from cloud_bridge.core.preferences import parse_preferences_request
    from edge.core.preferences import campaign_matches

    assert len(DEMO_CAMPAIGNS) >= 5
    assert len({c.promotion_type for c in DEMO_CAMPAIGNS}) == len(DEFAULT_PROMOTION_TYPES)
    specs = [
        wire.CampaignSpec(
            c.id,
            c.title,
            c.body,
            tuple(c.tiers.split(",")),
            c.cooldown_s,
            c.priority,
            c.promotion_type,
            tuple(i for i in c.interests.split(",") if i),
        )
        for c in DEMO_CAMPAIGNS
    ]
    assert sum("bronze" in s.tiers for s in specs) > len(specs) / 2
    interests, promotions = term_bits(DEFAULT_INTERESTS), term_bits(DEFAULT_PROMOTION_TYPES)
    eligible = []
    for member, body in seed_preferences([f"m-{n:05d}" for n in range(300)], seed=7).items():
        request = parse_preferences_request(member, body)
        if request.no_offers:
            continue
        prefs = wire.MemberPrefs(
            mask_of(request.interests, interests), mask_of(request.promotion_types, promotions)
        )
        eligible.append(
            sum(
                campaign_matches(s, prefs, interests, promotions)
                for s in specs
                if "bronze" in s.tiers
            )
        )
    eligible.sort()
    assert eligible[len(eligible) // 2] >= 2  # the median member has a choice


async def test_the_bridge_status_counts_offers_refused_for_preferences_and_frequency(
    loyalty: Loyalty,
) -> None:
    """Events through the bridge's record loop, as the broker hands them over."""
    import asyncio

    from edge.adapters.mqtt import Message
    from tests.integration.rig import eventually

    records = loyalty.records
    await records.add_gateway(STORE, DOOR.gateway, bundle.public_key_bytes(DOOR_KEY), T0)
    # The bridge's clock just after the offers' radio times: nothing is quarantined.
    config = BridgeConfig(BridgeSection(chain=CHAIN))
    bridge = Bridge(config, records, records, SIGNER, lambda: T0 + 11 * HOUR)
    bridge.mqtt = FakePublisher()  # type: ignore[assignment]
    await loyalty.state(APP_MEMBER, ("beauty",), (), 1, 1)
    triggers = [
        make_offer_trigger(member=APP_MEMBER, device="d-00000", campaign=c, ts=T0 + n * 5 * HOUR)
        for n, c in enumerate(("welcome-bakery", "beauty-masterclass", "late-night-opening"))
    ]
    loop = asyncio.create_task(bridge._process_inbox(), name="test-bridge-record")
    try:
        for incoming in await as_sent(records, DOOR, *triggers):
            bridge._on_message(
                Message(wire.event_topic(DOOR, "offer"), wire.encode(incoming.event), False, 1)
            )
        await eventually(
            lambda: bridge.recorded + bridge.quarantined == 3, "the three offers recorded"
        )
        assert bridge.quarantined == 0
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    counters = bridge.status().counters
    assert counters["offers_suppressed"] == 2
    assert counters["offers_suppressed_preferences"] == 1  # the bakery: not their interest
    assert counters["offers_suppressed_frequency"] == 1  # the third: over one a day
