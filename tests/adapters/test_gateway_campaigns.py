"""The gateway's budget share and members' campaign caps survive a power cut (issue 11).

The real Gateway on real SQLite files and keys, no broker: signed campaigns in the store's time
zone, members walking in through the scan loop, the database closed without the gateway's own
close (a power cut), and a new gateway opened on the same files.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.adapters.keystore import provision_gateway_keys
from edge.app import Gateway
from edge.config import GatewayConfig, GatewaySection, IdentitySection, PresenceSection
from edge.core import bundle, signed, wire
from edge.core.resolver import EidResolver
from edge.sim.entrance import SimDevice
from tests.fakes.radio import FakeAdvertSource, walk_in

SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)
GUARD_S = 10.0  # only a guard against hangs
TIMEOUT_S = 60.0
MEMBERS = [
    SimDevice(f"d-0000{n}", f"m-0000{n}", random.Random(f"member-{n}").randbytes(16), 10, "tag")
    for n in range(1, 4)
]
# Friday 5 June 2026, 10:00 in Paris: radio time for every advert (fixed, so that no test run
# straddles the store's midnight).
T = datetime(2026, 6, 5, 8, 0, tzinfo=UTC).timestamp()


def campaigns(gateway: str) -> wire.CampaignSync:
    """A promotion with one offer a day for this door, and an everyday offer once a day a member."""
    return wire.CampaignSync(
        "store-001",
        1,
        0.0,
        (
            wire.CampaignSpec(
                "promo", "t", "b", ("gold",), 0.0, 9, gateway_budgets=((gateway, 1), ("door-2", 5))
            ),
            wire.CampaignSpec("everyday", "t", "b", ("gold",), 0.0, 1, per_member_day=1),
        ),
        timezone="Europe/Paris",
    )


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    provision_gateway_keys(tmp_path, "file", "rpi-otp-private-key")
    signer = bundle.key_to_text(bundle.public_key_bytes(SIGNER))
    return GatewayConfig(
        gateway=GatewaySection(store="store-001", id="door-1", data_dir=str(tmp_path)),
        identity=IdentitySection(trusted_signers=(signer,), key_source="file"),
        presence=PresenceSection(visit_timeout_s=TIMEOUT_S),
    )


@pytest.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    """Gateways a test opened, closed at its end (unless the test cut their power)."""
    opened: list[Gateway] = []
    yield opened
    for gateway in opened:
        await gateway.close()


async def opened(
    config: GatewayConfig, gateways: list[Gateway]
) -> tuple[Gateway, FakeAdvertSource]:
    """A gateway on the config's files, knowing MEMBERS (handed in: the roster is not the point)."""
    source = FakeAdvertSource()
    gateway = await Gateway.open(config, source)
    gateways.append(gateway)
    gateway.pipeline.resolver = EidResolver(
        [wire.RosterDevice(m.ref, m.member, "gold", m.identity_key, m.exponent) for m in MEMBERS],
        T,
    )
    return gateway, source


async def entries(
    gateway: Gateway, source: FakeAdvertSource, *walks: tuple[SimDevice, float]
) -> list[str]:
    """Members walking in (one after another, each at its time): the campaigns offered."""
    before = {e.event_id for e in await outbox(gateway)}
    for n, (member, t0) in enumerate(walks):
        source.push(walk_in(member, t0, address=f"4A:00:00:00:00:{n + 10:02X}"))
    source.end()
    async with asyncio.timeout(GUARD_S):
        await gateway._scan()
    return [
        e.campaign
        for e in await outbox(gateway)
        if isinstance(e, wire.OfferTrigger) and e.event_id not in before
    ]


async def outbox(gateway: Gateway) -> list[wire.Event]:
    events = []
    for entry in await gateway.store.pending(100):
        event = wire.decode(entry.payload)
        assert isinstance(event, wire.Visit | wire.VisitEnd | wire.OfferTrigger)
        events.append(event)
    return events


async def test_a_power_cut_resets_neither_the_budget_nor_a_member_s_daily_cap(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    first, source = await opened(config, gateways)
    signed_campaigns = signed.sign(
        wire.encode(campaigns("door-1")), wire.campaigns_topic(first.address), SIGNER
    )
    assert await first.sync.apply_campaigns(signed_campaigns, "sync/campaigns")
    one, two, three = MEMBERS
    # The first member takes this door's one promotion; the second gets the everyday offer.
    assert await entries(first, source, (one, T), (two, T + 60)) == ["promo", "everyday"]
    await first.store.close()  # the power is cut: nothing but what each batch committed
    gateways.remove(first)

    again, source = await opened(config, gateways)
    assert again.sync.campaigns_version == 1  # restored from its signed copy
    # After the visit timeout: the second member again, and a third. Without the saved history
    # the second would get the promotion (the budget reset) and the third the promotion too.
    later = T + 2 * TIMEOUT_S + 120
    assert await entries(again, source, (two, later), (three, later + 60)) == ["everyday"]
    counters = again.status().counters
    assert counters["offers_withheld_budget"] == 1  # the second: promo spent, everyday capped
    assert counters["offers"] == 1


async def test_a_door_the_budget_does_not_name_sends_none_of_it(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    gateway, source = await opened(config, gateways)
    only_door_2 = signed.sign(
        wire.encode(campaigns("door-2")), wire.campaigns_topic(gateway.address), SIGNER
    )
    assert await gateway.sync.apply_campaigns(only_door_2, "sync/campaigns")
    one, two, _ = MEMBERS
    assert await entries(gateway, source, (one, T), (two, T + 60)) == ["everyday", "everyday"]


async def test_campaigns_in_a_time_zone_the_gateway_lacks_are_refused_in_its_status(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    gateway, _ = await opened(config, gateways)
    unknown = wire.CampaignSync("store-001", 2, 0.0, (), timezone="Mars/Olympus_Mons")
    data = signed.sign(wire.encode(unknown), wire.campaigns_topic(gateway.address), SIGNER)
    assert await gateway.sync.apply_campaigns(data, "sync/campaigns") is False
    rejection = gateway.status().sync["last_rejection"]
    assert rejection["what"] == "campaigns" and rejection["reason"] == "unknown_timezone"
    assert "field $.timezone: time zone 'Mars/Olympus_Mons'" in rejection["message"]
    assert gateway.status().campaigns_version == 0
    assert await gateway.store.load_sync("campaigns") is None  # never saved: not restored either
