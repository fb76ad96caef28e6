"""The composition root on real files, without a broker: a provisioned gateway restarts with its roster."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge.adapters.keystore import provision_gateway_keys
from edge.adapters.mosquitto import free_loopback_port
from edge.app import Gateway
from edge.config import (
    GatewayConfig,
    GatewaySection,
    IdentitySection,
    MqttSection,
    PrivacySection,
)
from edge.core import bundle, eid, signed, wire
from edge.core.advert import RawAdvert
from edge.services.tasks import cancel_and_wait
from tests.factories import eid_advert, make_campaigns, make_device, make_offer_trigger
from tests.fakes.radio import FakeAdvertSource
from tests.integration.rig import eventually

SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)


def config_for(tmp_path: Path, **identity: object) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewaySection(
            chain="acme", store="store-001", id="door-1", data_dir=str(tmp_path)
        ),
        identity=IdentitySection(**identity),  # type: ignore[arg-type]
    )


def trusting(tmp_path: Path) -> GatewayConfig:
    signer = bundle.key_to_text(bundle.public_key_bytes(SIGNER))
    return config_for(tmp_path, trusted_signers=(signer,), key_source="file")


async def test_a_restarted_gateway_recognises_its_members_with_the_broker_down(
    tmp_path: Path,
) -> None:
    config = trusting(tmp_path)
    keys, _ = provision_gateway_keys(tmp_path, "file", "rpi-otp-private-key")
    member = make_device(identity_key=random.Random("member").randbytes(16))
    data = bundle.build_bundle(
        bundle.FullRoster((member,)),
        chain="acme",
        store="store-001",
        gateway="door-1",
        version=4,
        recipient_public_key=keys.gateway_key.public_key(),
        signing_key=SIGNER,
        random_bytes=random.Random("nonce").randbytes,
    )
    first = await Gateway.open(config, FakeAdvertSource())
    try:
        assert await first.sync.apply_roster(data, "test") is True
    finally:
        await first.close()

    again = await Gateway.open(config, FakeAdvertSource())  # no broker anywhere
    try:
        now = again.radio_now()
        value = eid.compute_eid(member.identity_key, member.exponent, eid.counter_at(now))
        assert again.pipeline.resolver.resolve(value) == member
        assert again.status().roster_version == 4
        assert again.status().sync["key_id"] == keys.key_id
    finally:
        await again.close()


async def test_a_gateway_without_keys_or_trust_does_not_open(tmp_path: Path) -> None:
    from edge.adapters.keystore import KeystoreError
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="trusted_signers"):
        await Gateway.open(config_for(tmp_path), FakeAdvertSource())
    with pytest.raises(KeystoreError, match="edge-gateway provision"):
        await Gateway.open(trusting(tmp_path), FakeAdvertSource())
    assert not (tmp_path / "gateway.sqlite").exists()  # nothing created before the keys open


async def test_a_bad_trusted_signers_file_is_named(tmp_path: Path) -> None:
    from edge.errors import ConfigError

    keys_file = tmp_path / "bridge-keys"
    keys_file.write_text("garbage\n")
    config = config_for(tmp_path, trusted_signers_file=str(keys_file))
    with pytest.raises(ConfigError, match=f"{keys_file}:1"):
        await Gateway.open(config, FakeAdvertSource())


async def test_offers_older_than_the_retention_are_forgotten_even_inside_a_longer_cooldown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(trusting(tmp_path), privacy=PrivacySection(retention_s=3600.0))
    provision_gateway_keys(tmp_path, "file", "rpi-otp-private-key")
    gateway = await Gateway.open(config, FakeAdvertSource())
    # An IT admin who shortens the retention below a week is told what it costs.
    assert any("weekly offer caps" in r.getMessage() for r in caplog.records)
    try:
        campaigns = signed.sign(
            wire.encode(make_campaigns()), wire.campaigns_topic(gateway.address), SIGNER
        )
        assert await gateway.sync.apply_campaigns(campaigns, "campaigns")  # 24 h
        now = gateway.radio_now()
        old = make_offer_trigger(member="m-00001", campaign="bakery", ts=now - 7200)
        recent = make_offer_trigger(member="m-00002", campaign="bakery", ts=now - 60)
        await gateway.store.append_events([old, recent], now)
        for offer in (old, recent):
            gateway.pipeline.offers.history.record(offer.member, offer.campaign, offer.ts)

        assert await gateway.purge_history() == 1

        assert set((await gateway.store.load_history()).last_any) == {"m-00002"}
        assert set(gateway.pipeline.offers.history.last_any) == {"m-00002"}
        # Forgotten here: the gateway may offer again within the bridge's 24 h cooldown.
        assert gateway.pipeline.offers.decide("m-00001", "gold", now) is not None
        assert gateway.pipeline.offers.decide("m-00002", "gold", now) is None
    finally:
        await gateway.close()


async def test_a_plaintext_gateway_warns_at_start_and_says_so_in_its_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provision_gateway_keys(tmp_path, "file", "rpi-otp-private-key")
    config = replace(
        trusting(tmp_path), mqtt=MqttSection(port=free_loopback_port(), insecure_plaintext=True)
    )
    assert config.mqtt_tls is None
    gateway = await Gateway.open(config, FakeAdvertSource())
    try:
        task = asyncio.create_task(gateway.run(), name="plaintext-gateway")
        await asyncio.sleep(0.2)  # no broker: it keeps trying; the warning comes first
        await cancel_and_wait([task])
        assert gateway.status().counters["mqtt_insecure_plaintext"] == 1
    finally:
        await gateway.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("INSECURE: MQTT") for w in warnings)
    tls = trusting(tmp_path)
    assert tls.mqtt_tls is not None and tls.mqtt_tls.cert_file == tmp_path / "tls" / "client.crt"


def walk_in(device: wire.RosterDevice, t0: float) -> list[RawAdvert]:
    """Strong at the door, then heard inside for a minute: an entry."""
    rssi = [-85, -80, -75, -70, -65, -62, -60] + [-60] * 240
    return [eid_advert(device, t0 + i * 0.25, r) for i, r in enumerate(rssi)]


class Door:
    """A gateway on real files running its loops (no broker), fed adverts by hand."""

    def __init__(self, gateway: Gateway, source: FakeAdvertSource) -> None:
        self.gateway, self.source = gateway, source
        self.events: list[wire.Event] = []
        gateway.listeners.append(self.events.extend)  # called once the events are stored
        self.task = asyncio.create_task(gateway.run(), name="door")

    async def visit(self, device: wire.RosterDevice, t0: float) -> str | None:
        """The member walks in at radio time t0: the campaign offered, or None."""
        before = len(self.events)
        self.source.push(walk_in(device, t0))
        await eventually(
            lambda: any(isinstance(e, wire.Visit) for e in self.events[before:]), "the visit"
        )
        offers = [e for e in self.events[before:] if isinstance(e, wire.OfferTrigger)]
        return offers[0].campaign if offers else None

    async def close(self) -> None:
        await cancel_and_wait([self.task])
        await self.gateway.close()


async def open_door(config: GatewayConfig) -> Door:
    source = FakeAdvertSource()
    return Door(await Gateway.open(config, source), source)


async def test_caps_and_rotation_carry_on_across_a_restart(tmp_path: Path) -> None:
    """A member who asked for one offer a day and two a week gets no more after a restart, and
    never the same offer while another is there (issue 10)."""
    keys, _ = provision_gateway_keys(tmp_path, "file", "rpi-otp-private-key")
    config = replace(
        trusting(tmp_path),
        mqtt=MqttSection(port=free_loopback_port(), insecure_plaintext=True),
    )
    member = make_device(
        identity_key=random.Random("member").randbytes(16),
        kind="app",
        prefs=wire.MemberPrefs(interests=0b1, promotions=0, per_day=1, per_week=2),
    )
    campaigns = make_campaigns(
        member_cooldown_s=600.0,
        campaigns=tuple(
            wire.CampaignSpec(c, c, "x", ("gold",), 3600.0, p, None, i)
            for c, p, i in (
                ("a", 30, ()),
                ("b", 20, ("womenswear",)),
                ("not-for-them", 99, ("beauty",)),
                ("c", 10, ()),
            )
        ),
        interest_terms=("womenswear", "beauty"),
    )
    day = 86_400.0
    t = time.time()

    first = await Gateway.open(config, FakeAdvertSource())
    try:
        data = bundle.build_bundle(
            bundle.FullRoster((member,)),
            chain="acme",
            store="store-001",
            gateway="door-1",
            version=1,
            recipient_public_key=keys.gateway_key.public_key(),
            signing_key=SIGNER,
            random_bytes=random.Random("nonce").randbytes,
        )
        assert await first.sync.apply_roster(data, "roster")
        topic = wire.campaigns_topic(first.address)
        assert await first.sync.apply_campaigns(
            signed.sign(wire.encode(campaigns), topic, SIGNER), "campaigns"
        )
    finally:
        await first.close()

    door = await open_door(config)
    try:
        assert await door.visit(member, t) == "a"
        assert await door.visit(member, t + 2 * 3600) is None  # one a day
        assert door.gateway.status().counters["offers_withheld_frequency"] == 1
    finally:
        await door.close()

    door = await open_door(config)  # restarted: the history comes back from the database
    try:
        assert door.gateway.pipeline.resolver.device(member.ref) == member  # prefs kept, sealed
        assert await door.visit(member, t + day - 1800) is None  # still within 24 h of "a"
        assert await door.visit(member, t + day + 600) == "b"  # not "a" again
        assert await door.visit(member, t + 3 * day) is None  # two a week
        assert await door.visit(member, t + 7 * day + 60) == "c"  # "a" is a week old
        assert door.gateway.status().counters["offers_withheld_frequency"] == 2
    finally:
        await door.close()
