"""SyncApplier: roster bundles and campaigns into a real Pipeline, persisted (sealed) in a real store."""

from __future__ import annotations

import base64
import dataclasses
import gc
import itertools
import json
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.adapters.keystore import GatewayKeys, Sealer
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.core import bundle, eid, signed, wire
from edge.core.bundle import FullRoster, RejectReason, RosterDelta
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.services import sync
from edge.services.sync import CAMPAIGNS, ROSTER, SyncApplier
from tests.factories import T0, make_campaigns, make_device
from tests.unit import test_wire_hostile as hostile

CHAIN = "acme"
STORE = "store-001"
GW = wire.GatewayAddress(CHAIN, STORE, "gw-1")
WALL_S = 1_795_000_000.0
TOPIC = f"topic {wire.roster_bundle_topic(GW)}"


def seeded(seed: object) -> Callable[[int], bytes]:
    return random.Random(str(seed)).randbytes


SIGNER = bundle.generate_signing_key(seeded("bridge"))
ROGUE_SIGNER = bundle.generate_signing_key(seeded("rogue"))
GW_KEY = bundle.generate_gateway_key(seeded("gw-1"))
OTHER_GW_KEY = bundle.generate_gateway_key(seeded("gw-2"))
ROOT = seeded("seal-root")(32)


def gateway_keys(root: bytes = ROOT, key: Any = GW_KEY) -> GatewayKeys:
    return GatewayKeys(key, Sealer.from_root(root, "file"))


_nonces = itertools.count()


def seal(
    change: bundle.RosterChange,
    version: int,
    *,
    recipient: Any = GW_KEY,
    signer: Any = SIGNER,
    gateway: str = GW.gateway,
    store: str = STORE,
) -> bytes:
    """A bundle as the bridge would build it (or a rogue with `signer`)."""
    return bundle.build_bundle(
        change,
        chain=CHAIN,
        store=store,
        gateway=gateway,
        version=version,
        recipient_public_key=recipient.public_key(),
        signing_key=signer,
        random_bytes=seeded(next(_nonces)),
    )


def full(version: int, *devices: wire.RosterDevice, **kwargs: Any) -> bytes:
    return seal(FullRoster(devices), version, **kwargs)


def delta(base: int, version: int, **changes: Any) -> bytes:
    return seal(RosterDelta(base, **changes), version)


def forged(data: bytes) -> bytes:
    """The bundle with one ciphertext bit flipped, signature left as it was: a forger's edit."""
    obj = json.loads(data)
    raw = bytearray(base64.b64decode(obj["ciphertext"]))
    raw[0] ^= 0x01
    obj["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    return bundle.canonical_json(obj)


def make_pipeline() -> Pipeline:
    ids = (f"ev{n}" for n in itertools.count())
    return Pipeline(
        EidResolver([], T0),
        PresenceTracker(PresenceConfig()),
        OfferEngine(None),
        lambda: next(ids),
    )


def make_applier(
    pipeline: Pipeline, store: SqliteGatewayStore, keys: GatewayKeys | None = None
) -> SyncApplier:
    return SyncApplier(
        pipeline,
        store,
        GW,
        skew_windows=1,
        radio_now=lambda: T0,
        keys=keys or gateway_keys(),
        trusted_signers=[SIGNER.public_key()],
        wall_clock=lambda: WALL_S,
    )


def signed_for_gateway(payload: bytes, signer: Any = SIGNER, gw: wire.GatewayAddress = GW) -> bytes:
    """`payload` signed as the bridge publishes campaigns: for the gateway's campaigns topic."""
    return signed.sign(payload, wire.campaigns_topic(gw), signer)


def campaigns_bytes(version: int, **overrides: Any) -> bytes:
    return signed_for_gateway(wire.encode(make_campaigns(version=version, **overrides)))


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


_keys = random.Random("device-keys")


def keyed_device(**overrides: Any) -> wire.RosterDevice:
    """A device with a random-looking key (the factory's counter keys are mostly zero bytes)."""
    return make_device(identity_key=_keys.randbytes(16), **overrides)


def secrets_of(*devices: wire.RosterDevice) -> dict[str, bytes]:
    return {
        **{f"{d.ref} key": d.identity_key for d in devices},
        **{f"{d.ref} key (hex)": d.identity_key.hex().encode() for d in devices},
    }


def files_holding(directory: Path, needles: dict[str, bytes]) -> list[str]:
    found = []
    for path in directory.iterdir():
        data = path.read_bytes()
        found += [f"{what} in {path.name}" for what, needle in needles.items() if needle in data]
    return found


@pytest.fixture
def pipeline() -> Pipeline:
    return make_pipeline()


@pytest.fixture
def applier(pipeline: Pipeline, store: SqliteGatewayStore) -> SyncApplier:
    return make_applier(pipeline, store)


# --- Applying bundles -----------------------------------------------------------------------------


async def test_a_full_bundle_is_applied_and_saved_sealed(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore, db_path: Path
) -> None:
    alice, bob = keyed_device(), keyed_device(exponent=8)

    assert await applier.apply_roster(full(3, alice, bob), TOPIC) is True

    assert recognises(pipeline, alice) and recognises(pipeline, bob)
    assert applier.roster_version == 3
    assert applier.last_rejection is None
    saved = await store.load_sync(ROSTER)
    assert saved is not None and saved.startswith(b"TSEAL")
    assert files_holding(db_path.parent, secrets_of(alice, bob)) == []


async def test_a_delta_adds_removes_and_rotates_on_top_of_the_roster_in_force(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    revoked, rotated, stays = make_device(), make_device(), make_device()
    await applier.apply_roster(full(1, revoked, rotated, stays), TOPIC)
    new_key = make_device(ref=rotated.ref, member=rotated.member, identity_key=b"\x42" * 16)
    joiner = make_device()

    applied = await applier.apply_roster(
        delta(1, 2, add=(joiner,), remove=(revoked.ref,), rotate=(new_key,)), TOPIC
    )

    assert applied is True
    assert applier.roster_version == 2
    assert not recognises(pipeline, revoked)  # revocation took effect within one sync
    assert not recognises(pipeline, rotated) and recognises(pipeline, new_key)
    assert recognises(pipeline, stays) and recognises(pipeline, joiner)


async def test_a_change_of_preferences_applies_in_place_and_the_next_entry_honours_it(
    applier: SyncApplier, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restated preference reaches the gateway within one sync, without recomputing EIDs."""
    member, revoked, other = keyed_device(kind="app"), keyed_device(), keyed_device()
    await applier.apply_roster(full(1, member, revoked, other), TOPIC)
    resolver = pipeline.resolver
    quiet = dataclasses.replace(member, prefs=wire.MemberPrefs(0, 0, 0, 0), tier="silver")
    built: list[int] = []
    monkeypatch.setattr(sync, "EidResolver", lambda *a, **k: built.append(1))  # must not be built
    monkeypatch.setattr(resolver, "_fill", lambda *a, **k: built.append(2))  # nor any EID

    assert await applier.apply_roster(delta(1, 2, rotate=(quiet,), remove=(revoked.ref,)), TOPIC)

    assert built == [] and pipeline.resolver is resolver and applier.roster_version == 2
    assert recognises(pipeline, quiet) and not recognises(pipeline, revoked)
    assert recognises(pipeline, other)
    assert applier.roster_devices() == (quiet, other)  # as saved (sealed) for a restart


async def test_a_delta_with_a_new_key_still_builds_a_new_resolver(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    member, other = keyed_device(), keyed_device()
    await applier.apply_roster(full(1, member, other), TOPIC)
    resolver = pipeline.resolver
    new_key = dataclasses.replace(member, identity_key=b"\x42" * 16, prefs=wire.MemberPrefs(1))
    restated = dataclasses.replace(other, prefs=wire.MemberPrefs(2))

    assert await applier.apply_roster(delta(1, 2, rotate=(new_key, restated)), TOPIC)

    assert pipeline.resolver is not resolver
    assert recognises(pipeline, new_key) and recognises(pipeline, restated)
    assert not recognises(pipeline, member)


async def test_a_retained_copy_of_the_roster_in_force_is_ignored_quietly(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    member = make_device()
    data = full(2, member)
    await applier.apply_roster(data, TOPIC)

    assert await applier.apply_roster(data, TOPIC) is False

    assert applier.last_rejection is None and applier.rejections == 0
    assert recognises(pipeline, member)


async def test_an_empty_payload_is_a_cleared_retained_bundle_and_changes_nothing(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    member = make_device()
    await applier.apply_roster(full(2, member), TOPIC)

    assert await applier.apply_roster(b"", TOPIC) is False

    assert applier.last_rejection is None
    assert recognises(pipeline, member) and applier.roster_version == 2


async def test_bundles_are_opened_off_the_event_loop(
    applier: SyncApplier, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real_open = bundle.open_bundle

    def spy(*args: Any, **kwargs: Any) -> bundle.OpenedBundle:
        threads.append(threading.current_thread())
        return real_open(*args, **kwargs)

    monkeypatch.setattr(sync.bundle, "open_bundle", spy)

    await applier.apply_roster(full(1, make_device()), TOPIC)

    assert threads and threads[0] is not threading.main_thread()


# --- Rejections -----------------------------------------------------------------------------------


def bad_bundles(current: wire.RosterDevice) -> dict[str, tuple[Callable[[], bytes], RejectReason]]:
    """case → (bundle, reason) for a gateway holding v5 of a roster with `current`."""
    other = make_device()
    return {
        "forged-signature": (lambda: forged(full(6, other)), RejectReason.BAD_SIGNATURE),
        "unknown-signer": (
            lambda: full(6, other, signer=ROGUE_SIGNER),
            RejectReason.UNKNOWN_SIGNER,
        ),
        "wrong-recipient": (
            lambda: full(6, other, recipient=OTHER_GW_KEY),
            RejectReason.WRONG_RECIPIENT,
        ),
        "stale-version": (lambda: full(4, other), RejectReason.STALE_VERSION),
        "truncated": (lambda: full(6, other)[:200], RejectReason.TRUNCATED),
        "malformed": (lambda: b"not a bundle}", RejectReason.MALFORMED),
        "plain-roster": (
            lambda: wire.encode(wire.RosterSync(STORE, 6, (other,))),
            RejectReason.UNKNOWN_TYPE,
        ),
        "other-gateway": (lambda: full(6, other, gateway="gw-2"), RejectReason.WRONG_GATEWAY),
        "other-store": (lambda: full(6, other, store="store-002"), RejectReason.WRONG_STORE),
        "delta-from-another-version": (
            lambda: delta(3, 6, add=(other,)),
            RejectReason.BASE_MISMATCH,
        ),
        "delta-that-does-not-fit": (
            lambda: delta(5, 6, add=(current,)),
            RejectReason.DELTA_CONFLICT,
        ),
    }


@pytest.mark.parametrize("case", list(bad_bundles(make_device())))
async def test_a_bad_bundle_is_rejected_with_its_reason_and_the_last_good_roster_is_kept(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore, case: str
) -> None:
    member = make_device()
    await applier.apply_roster(full(5, member), TOPIC)
    saved = await store.load_sync(ROSTER)
    make_bad, reason = bad_bundles(member)[case]

    assert await applier.apply_roster(make_bad(), TOPIC) is False

    rejection = applier.last_rejection
    assert rejection is not None
    assert (rejection.what, rejection.reason) == ("roster", reason.value)
    assert rejection.at == WALL_S
    assert applier.status_json()["last_rejection"]["reason"] == reason.value
    assert applier.rejections == 1
    assert recognises(pipeline, member)
    assert applier.roster_version == 5
    assert await store.load_sync(ROSTER) == saved


async def test_a_rejection_names_the_topic_and_the_claimed_version(applier: SyncApplier) -> None:
    await applier.apply_roster(forged(full(7, make_device())), TOPIC)

    rejection = applier.last_rejection
    assert rejection is not None
    assert rejection.version == 7
    assert wire.roster_bundle_topic(GW) in rejection.message
    assert rejection.to_json()["version"] == 7


async def test_a_good_bundle_after_a_rejected_one_is_applied(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    member = make_device()
    await applier.apply_roster(full(5, member, recipient=OTHER_GW_KEY), TOPIC)

    assert await applier.apply_roster(full(5, member), TOPIC) is True

    assert recognises(pipeline, member)
    assert applier.roster_version == 5
    assert applier.status_json()["rejections"] == 1  # the history stays for monitoring


async def test_status_names_the_gateway_key(applier: SyncApplier) -> None:
    assert applier.status_json() == {
        "key_id": bundle.key_id(GW_KEY),
        "rejections": 0,
        "last_rejection": None,
    }


# --- Restart --------------------------------------------------------------------------------------


async def test_saved_roster_and_campaigns_are_restored_after_a_restart(db_path: Path) -> None:
    member = keyed_device(kind="app", prefs=wire.MemberPrefs(5, 2, 1, 3))
    revoked = keyed_device(kind="tag")
    store = await SqliteGatewayStore.open(db_path)
    first = make_applier(make_pipeline(), store)
    await first.apply_roster(full(3, member, revoked), TOPIC)
    await first.apply_roster(delta(3, 4, remove=(revoked.ref,)), TOPIC)
    await first.apply_campaigns(campaigns_bytes(6), "campaigns")
    await store.close()

    # The broker is down: only what the gateway saved is there.
    reopened = await SqliteGatewayStore.open(db_path)
    try:
        pipeline = make_pipeline()
        fresh = make_applier(pipeline, reopened)
        await fresh.restore()
        # The bridge's retained delta to v5 applies on top of the restored v4.
        joiner = keyed_device(kind="tag", prefs=wire.MemberPrefs(per_day=0, per_week=0))
        assert await fresh.apply_roster(delta(4, 5, add=(joiner,)), TOPIC) is True
    finally:
        await reopened.close()

    assert recognises(pipeline, member) and recognises(pipeline, joiner)
    assert not recognises(pipeline, revoked)
    assert campaign_ids(pipeline) == {"gold-points", "bakery"}
    assert fresh.roster_devices() == (member, joiner)  # kinds and preferences included
    assert (fresh.roster_version, fresh.campaigns_version) == (5, 6)
    assert fresh.synced.is_set()
    assert files_holding(db_path.parent, secrets_of(member, revoked, joiner)) == []


async def test_a_roster_sealed_with_another_key_is_not_restored_and_a_full_bundle_recovers(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    member = make_device()
    store = await SqliteGatewayStore.open(db_path)
    await make_applier(make_pipeline(), store).apply_roster(full(3, member), TOPIC)
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        pipeline = make_pipeline()
        # The card in another Pi: its OTP key derives another sealing key.
        moved = make_applier(pipeline, reopened, gateway_keys(root=bytes(range(32))))
        await moved.restore()
        assert moved.roster_version == 0 and len(pipeline.resolver) == 0
        assert "saved roster not restored" in caplog.text
        assert await moved.apply_roster(full(4, member), TOPIC) is True
    finally:
        await reopened.close()

    assert recognises(pipeline, member)


async def test_restore_with_nothing_saved_leaves_the_gateway_unsynced(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    await applier.restore()

    assert (applier.roster_version, applier.campaigns_version) == (0, 0)
    assert not applier.synced.is_set()
    assert len(pipeline.resolver) == 0


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


async def test_campaigns_at_the_version_in_force_are_ignored_quietly(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore
) -> None:
    good = campaigns_bytes(3)
    await applier.apply_campaigns(good, "v3")
    only_bakery = (wire.CampaignSpec("bakery", "t", "b", ("gold",), 60.0, 1),)

    applied = await applier.apply_campaigns(campaigns_bytes(3, campaigns=only_bakery), "same")

    assert applied is False
    assert campaign_ids(pipeline) == {"gold-points", "bakery"}
    assert applier.campaigns_version == 3
    assert applier.last_rejection is None
    assert await store.load_sync(CAMPAIGNS) == good


def bad_campaigns() -> dict[str, tuple[bytes, str, str]]:
    """case → (payload, reason code, what the message must name) for campaigns to refuse."""
    plain = wire.encode(make_campaigns(version=9))
    huge = wire.encode(make_campaigns(version=2**62))
    negative = make_campaigns().campaigns[0].to_json() | {"cooldown_s": -1}
    bad_tiers = make_campaigns().campaigns[0].to_json() | {"tiers": "gold"}
    other_gw = wire.GatewayAddress(CHAIN, STORE, "gw-2")
    return {
        "unsigned": (plain, "unsigned", "plain 'campaigns' payload"),
        "unsigned-huge-version": (huge, "unsigned", "plain 'campaigns' payload"),
        "rogue-signer": (signed_for_gateway(huge, ROGUE_SIGNER), "unknown_signer", "not trusted"),
        "another-gateways-topic": (
            signed_for_gateway(plain, gw=other_gw),
            "bad_signature",
            "another topic",
        ),
        "older-version-replayed": (campaigns_bytes(0), "stale_version", "a replay"),
        "other-store": (campaigns_bytes(9, store="store-002"), "wrong_store", "store-002"),
        "malformed-json": (b"[campaigns", "malformed", "not a valid signed message"),
        "malformed-inside": (signed_for_gateway(b"[campaigns"), "malformed", "field $"),
        "wrong-type": (
            signed_for_gateway(wire.encode(wire.RosterSync(STORE, 9, (make_device(),)))),
            "malformed",
            "expected a 'campaigns' payload",
        ),
        "negative-cooldown": (
            signed_for_gateway(tampered(plain, campaigns=[negative])),
            "malformed",
            "$.campaigns[0].cooldown_s",
        ),
        "tiers-not-a-list": (
            signed_for_gateway(tampered(plain, campaigns=[bad_tiers])),
            "malformed",
            "$.campaigns[0].tiers",
        ),
        "member-cooldown-missing": (
            signed_for_gateway(tampered(plain, member_cooldown_s=None)),
            "malformed",
            "$.member_cooldown_s",
        ),
        # Issue 11: schedules and local days need the store's zone; never read in UTC instead.
        "unknown-time-zone": (
            campaigns_bytes(9, timezone="Mars/Olympus_Mons"),
            "unknown_timezone",
            "'Mars/Olympus_Mons' is not in this gateway's tz database",
        ),
        "the-gateway-s-own-zone": (
            campaigns_bytes(9, timezone="localtime"),
            "unknown_timezone",
            "'localtime' is not a place's civil time",
        ),
    }


@pytest.mark.parametrize("case", list(bad_campaigns()))
async def test_bad_campaigns_are_rejected_naming_why_and_the_last_good_set_is_kept(
    applier: SyncApplier, pipeline: Pipeline, store: SqliteGatewayStore, case: str
) -> None:
    good = campaigns_bytes(1)
    await applier.apply_campaigns(good, "good campaigns")
    bad, reason, named = bad_campaigns()[case]

    assert await applier.apply_campaigns(bad, "sync/campaigns") is False

    rejection = applier.last_rejection
    assert rejection is not None
    assert (rejection.what, rejection.reason) == ("campaigns", reason)
    assert named in rejection.message
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


async def test_a_cooldown_longer_than_the_retention_is_logged_once_at_campaign_sync(
    pipeline: Pipeline, store: SqliteGatewayStore, caplog: pytest.LogCaptureFixture
) -> None:
    applier = SyncApplier(
        pipeline,
        store,
        GW,
        skew_windows=1,
        radio_now=lambda: T0,
        keys=gateway_keys(),
        trusted_signers=[SIGNER.public_key()],
        retention_s=43_200.0,  # 12 h; make_campaigns' campaigns cool down for 24 h, members 1 h
    )
    caplog.set_level(logging.DEBUG, logger="edge.services.sync")

    await applier.apply_campaigns(campaigns_bytes(1), "v1")
    await applier.apply_campaigns(campaigns_bytes(2), "v2")  # the same cooldowns again
    await applier.apply_campaigns(campaigns_bytes(3, member_cooldown_s=86400.0), "v3")
    await applier.apply_campaigns(campaigns_bytes(4, member_cooldown_s=86400.0), "v4")

    told = [
        r for r in caplog.records if r.levelno >= logging.INFO and "retention_s" in r.getMessage()
    ]
    campaigns, member = told
    # Campaign cooldowns: the bridge holds them beyond the gateway's memory, so only INFO.
    assert campaigns.levelno == logging.INFO
    assert "43200 s): bakery, gold-points; the gateway holds them" in campaigns.getMessage()
    # The member cooldown (24 h here) only the gateway keeps: a WARNING.
    assert member.levelno == logging.WARNING
    assert "member cooldown is 86400 s" in member.getMessage()


async def test_campaign_terms_missing_from_the_vocabulary_are_logged_once(
    applier: SyncApplier, caplog: pytest.LogCaptureFixture
) -> None:
    odd = wire.CampaignSpec("odd", "t", "b", ("gold",), 0.0, 1, "loyalty-day", ("garden",))
    for version in (1, 2):
        await applier.apply_campaigns(
            campaigns_bytes(version, campaigns=(odd,), interest_terms=("home",)), "campaigns"
        )
    told = [r.getMessage() for r in caplog.records if "missing from" in r.getMessage()]
    assert len(told) == 1 and "garden, loyalty-day" in told[0]


async def test_cooldowns_within_the_retention_are_not_logged(
    applier: SyncApplier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.services.sync")

    await applier.apply_campaigns(campaigns_bytes(1), "v1")

    assert not [r for r in caplog.records if "retention_s" in r.getMessage()]


async def test_a_full_roster_is_frozen_out_of_garbage_collection_and_a_delta_is_not(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    devices = [make_device() for _ in range(3)]
    await applier.apply_roster(full(1, *devices[:2]), TOPIC)
    frozen = pipeline.resolver

    # The permanent generation: skipped by every collection, listed by none.
    assert gc.get_freeze_count() > 0
    assert not any(o is frozen for o in gc.get_objects())

    await applier.apply_roster(delta(1, 2, add=(devices[2],)), TOPIC)
    assert any(o is pipeline.resolver for o in gc.get_objects())


# --- Synced -----------------------------------------------------------------------------------


async def test_synced_only_once_both_roster_and_campaigns_are_in_force(
    applier: SyncApplier,
) -> None:
    await applier.apply_roster(full(1, make_device()), TOPIC)
    assert not applier.synced.is_set()

    await applier.apply_campaigns(b"not json", "campaigns")
    assert not applier.synced.is_set()

    await applier.apply_campaigns(campaigns_bytes(1), "campaigns")
    assert applier.synced.is_set()


async def test_campaigns_alone_do_not_make_the_gateway_synced(applier: SyncApplier) -> None:
    await applier.apply_campaigns(campaigns_bytes(1), "campaigns")
    await applier.apply_roster(full(1, make_device(), recipient=OTHER_GW_KEY), TOPIC)

    assert not applier.synced.is_set()


@settings(
    max_examples=60,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile.campaigns, st.data())
async def test_any_valid_campaign_set_however_odd_applies_or_is_refused_never_raised(
    applier: SyncApplier, pipeline: Pipeline, campaigns: wire.CampaignSync, data: Any
) -> None:
    """Huge cooldowns, odd priorities, unknown tiers: applied or refused, and offers still work."""
    if data.draw(st.booleans(), label="this store"):
        campaigns = dataclasses.replace(campaigns, store=STORE)
    applied = await applier.apply_campaigns(wire.encode(campaigns), "sync/campaigns")
    if applied:
        assert pipeline.offers.version == campaigns.version and campaigns.store == STORE
    tier = data.draw(st.sampled_from(["gold", *(t for c in campaigns.campaigns for t in c.tiers)]))
    pipeline.offers.decide("m-1", tier, WALL_S)


# --- Issue 11: the roster's audience in place, the store's time zone ---------------------------------


async def test_a_change_of_segments_or_visits_applies_in_place_and_the_next_entry_honours_it(
    applier: SyncApplier, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments and visit counts change daily and with every visit: no EID is recomputed."""
    regulars_only = (
        wire.CampaignSpec("regulars", "t", "b", ("gold",), 0.0, 1, segments=("regular",)),
    )
    await applier.apply_campaigns(campaigns_bytes(1, campaigns=regulars_only), "v1")
    member, other = keyed_device(segments=0b001, visits=1), keyed_device()
    await applier.apply_roster(full(1, member, other), TOPIC)
    resolver = pipeline.resolver
    built: list[int] = []
    monkeypatch.setattr(sync, "EidResolver", lambda *a, **k: built.append(1))  # must not be built
    monkeypatch.setattr(resolver, "_fill", lambda *a, **k: built.append(2))  # nor any EID
    found = pipeline.resolver.resolve(
        eid.compute_eid(member.identity_key, member.exponent, eid.counter_at(T0))
    )
    assert found is not None and found.segments == 0b001
    assert pipeline.offers.decide(found.member, found.tier, T0, segments=found.segments) is None

    became_regular = dataclasses.replace(member, segments=0b010, visits=4)
    assert await applier.apply_roster(delta(1, 2, rotate=(became_regular,)), TOPIC)

    assert built == [] and pipeline.resolver is resolver and applier.roster_version == 2
    assert recognises(pipeline, became_regular)
    found = pipeline.resolver.resolve(
        eid.compute_eid(member.identity_key, member.exponent, eid.counter_at(T0))
    )
    assert found == became_regular
    decision = pipeline.offers.decide(
        found.member, found.tier, T0, segments=found.segments, visits=found.visits
    )
    assert decision is not None and decision.campaign.id == "regulars"
    assert applier.roster_devices() == (became_regular, other)  # as saved (sealed)


async def test_campaigns_are_read_in_the_store_s_time_zone(
    applier: SyncApplier, pipeline: Pipeline
) -> None:
    lunch = wire.Schedule(hours=((12 * 60, 14 * 60),))
    only_at_lunch = (wire.CampaignSpec("lunch", "t", "b", ("gold",), 0.0, 1, schedule=lunch),)
    paris = campaigns_bytes(1, campaigns=only_at_lunch, timezone="Europe/Paris")
    assert await applier.apply_campaigns(paris, "v1")
    assert str(pipeline.offers.zone) == "Europe/Paris"
    noon_in_utc = 1_780_660_800.0  # 2026-06-05 12:00 UTC: 14:00 in Paris, lunch is over
    assert pipeline.offers.decide("m-1", "gold", noon_in_utc) is None
    assert pipeline.offers.decide("m-1", "gold", noon_in_utc - 3600) is not None
