"""The composition root on real files, without a broker: a provisioned gateway restarts with its roster."""

from __future__ import annotations

import asyncio
import logging
import random
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
from edge.services.tasks import cancel_and_wait
from tests.factories import make_campaigns, make_device, make_offer_trigger
from tests.fakes.radio import FakeAdvertSource

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
    tmp_path: Path,
) -> None:
    config = replace(trusting(tmp_path), privacy=PrivacySection(retention_s=3600.0))
    provision_gateway_keys(tmp_path, "file", "rpi-otp-private-key")
    gateway = await Gateway.open(config, FakeAdvertSource())
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
