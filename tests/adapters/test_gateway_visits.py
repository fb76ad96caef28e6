"""The gateway's visits across restarts and quiet spells, on real SQLite files and keys, no broker.

A visit open when the gateway stops goes on after a restart within the visit timeout (one visit, one
end), or ends at its last sighting (reason "restart") if the gateway was away longer; a visit ending
while the radio is silent is still reported; a tampered open-visits table never stops a start.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from edge.adapters.keystore import provision_gateway_keys
from edge.app import Gateway
from edge.config import GatewayConfig, GatewaySection, IdentitySection, PresenceSection
from edge.core import bundle, wire
from edge.core.advert import RawAdvert
from edge.core.resolver import EidResolver
from edge.services.tasks import cancel_and_wait
from edge.sim.entrance import SimDevice
from tests.fakes.radio import FakeAdvertSource, walk_in, walk_out
from tests.integration.rig import eventually

SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)
TIMEOUT_S = 60.0
MEMBER = SimDevice("d-00001", "m-00001", random.Random("member").randbytes(16), 10, "tag")
GUARD_S = 10.0  # only a guard against hangs
NOISE = b"\x02\x01\x06"  # flags only: an advert that is no EID, as any phone nearby sends


def roster_device(device: SimDevice = MEMBER) -> wire.RosterDevice:
    return wire.RosterDevice(
        device.ref, device.member, "gold", device.identity_key, device.exponent, device.kind
    )


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    provision_gateway_keys(tmp_path, "file", "rpi-otp-private-key")
    signer = bundle.key_to_text(bundle.public_key_bytes(SIGNER))
    return GatewayConfig(
        gateway=GatewaySection(data_dir=str(tmp_path)),
        identity=IdentitySection(trusted_signers=(signer,), key_source="file"),
        presence=PresenceSection(visit_timeout_s=TIMEOUT_S),
    )


async def opened(config: GatewayConfig, now_s: float) -> tuple[Gateway, FakeAdvertSource]:
    """A gateway opened on the config's data directory, knowing MEMBER (the roster's part is not
    what these tests are about: the resolver is handed in)."""
    source = FakeAdvertSource()
    gateway = await Gateway.open(config, source)
    gateway.pipeline.resolver = EidResolver([roster_device()], now_s)
    return gateway, source


async def heard(gateway: Gateway, source: FakeAdvertSource, adverts: list[RawAdvert]) -> None:
    """Run the gateway's scan loop over `adverts`: it ends once they are processed and stored."""
    source.push(adverts)
    source.end()
    async with asyncio.timeout(GUARD_S):
        await gateway._scan()


async def outbox(gateway: Gateway) -> list[wire.Event]:
    events = []
    for entry in await gateway.store.pending(100):
        event = wire.decode(entry.payload)
        assert isinstance(event, wire.Visit | wire.VisitEnd | wire.OfferTrigger)
        events.append(event)
    return events


@pytest.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    """Gateways a test opened, closed at its end (a test may close one itself first)."""
    opened_: list[Gateway] = []
    yield opened_
    for gateway in opened_:
        await gateway.close()


async def test_a_restart_within_the_timeout_carries_the_visit_on_one_visit_one_end(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    now = time.time()
    first, source = await opened(config, now)
    gateways.append(first)
    await heard(first, source, walk_in(MEMBER, now - 36))  # in the store, last heard ~now
    [visit] = await outbox(first)
    assert isinstance(visit, wire.Visit)
    await first.close()  # a planned restart (an upgrade): the last times are written
    gateways.remove(first)

    again, source = await opened(config, time.time())
    gateways.append(again)
    assert again.pipeline.open_visits == 1 and await outbox(again) == [visit]
    t = time.time()
    await heard(again, source, walk_out(MEMBER, t))  # heard again: the same visit, leaving
    assert again.pipeline.counters.entries == 0
    # Someone else's phone, after the timeout: housekeeping ends the visit.
    await heard(again, source, [RawAdvert(t + 29 + TIMEOUT_S + 2, "4A:00:00:00:00:09", -80, NOISE)])

    events = await outbox(again)
    assert [type(e) for e in events] == [wire.Visit, wire.VisitEnd]
    end = events[1]
    assert isinstance(end, wire.VisitEnd)
    assert (end.visit_id, end.reason, end.platform) == (visit.event_id, "timeout", "tag")
    assert end.entered_at == pytest.approx(now - 36, abs=4)  # from before the restart
    assert t + 6 <= end.ts <= t + 10  # passing the door on the way out, after it
    assert again.status().counters["visits_ended"] == 1


async def test_a_gateway_killed_mid_visit_and_away_longer_than_the_timeout_ends_it_at_restart(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    t0 = time.time() - TIMEOUT_S - 100  # the gateway is back 100 s after the timeout ran out
    first, source = await opened(config, t0)
    gateways.append(first)
    await heard(first, source, walk_in(MEMBER, t0))
    [visit] = await outbox(first)
    await first.store.close()  # killed: nothing written since the entry
    gateways.remove(first)

    again, _ = await opened(config, time.time())
    gateways.append(again)
    events = await outbox(again)
    assert [type(e) for e in events] == [wire.Visit, wire.VisitEnd]
    end = events[1]
    assert isinstance(end, wire.VisitEnd)
    assert (end.visit_id, end.reason) == (visit.event_id, "restart")
    # At its last sighting as written at the entry (the batch's last), not when it was noticed.
    assert t0 + 20 <= end.ts <= t0 + 35 and end.detected_at >= t0 + TIMEOUT_S + 100
    assert end.duration_s == pytest.approx(end.ts - end.entered_at)
    assert again.pipeline.open_visits == 0
    await again.close()
    gateways.remove(again)

    third, _ = await opened(config, time.time())  # the end was stored: it is not reported twice
    gateways.append(third)
    assert [e.event_id for e in await outbox(third)] == [visit.event_id, end.event_id]


async def test_a_tampered_open_visits_table_is_dropped_counted_and_the_gateway_starts(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    first, _ = await opened(config, time.time())
    await first.close()
    with sqlite3.connect(config.database_path) as conn:
        conn.executemany(
            "INSERT INTO open_visits VALUES (?,?,?,?,?,?,?)",
            [
                ("v-1", "m-1", "d-1", "ios", "NaN", 1.0, 2.0),
                ("v-2", "m-2", "d-2", "ios", 3.0, 2.0, 1.0),
                ("v-3", "x" * 200, "d-3", "ios", 1.0, 2.0, 3.0),
            ],
        )
    conn.close()

    again, _ = await opened(config, time.time())
    gateways.append(again)
    assert again.status().counters["open_visits_dropped"] == 3
    assert again.pipeline.open_visits == 0 and await outbox(again) == []


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_visit_that_ends_while_the_radio_is_silent_is_reported(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    now = time.time()
    gateway, source = await opened(config, now)
    gateways.append(gateway)
    await heard(gateway, source, walk_in(MEMBER, now))
    # The gateway's clocks from here on are the test's: the store falls silent.
    wall, mono = FakeClock(now + 40), FakeClock(1000.0)
    gateway._wall, gateway._mono = wall, mono
    gateway._last_batch_mono = mono.now
    housekeeping = asyncio.create_task(gateway.housekeep_while_quiet(), name="housekeeping")
    try:
        wall.now += TIMEOUT_S + 10
        mono.now += TIMEOUT_S + 10

        async def ended() -> bool:
            return any(isinstance(e, wire.VisitEnd) for e in await outbox(gateway))

        await eventually(ended, "the visit's end, with no advert heard")
    finally:
        await cancel_and_wait([housekeeping])
    [visit, end] = await outbox(gateway)
    assert isinstance(end, wire.VisitEnd) and end.visit_id == visit.event_id
    assert end.reason == "timeout" and end.detected_at == wall.now
    assert await gateway.store.load_open_visits() == ([], 0)


async def test_open_visits_are_written_every_few_seconds_of_radio_time(
    config: GatewayConfig, gateways: list[Gateway]
) -> None:
    now = time.time()
    gateway, source = await opened(config, now)
    gateways.append(gateway)
    await heard(gateway, source, walk_in(MEMBER, now))
    [saved], _ = await gateway.store.load_open_visits()
    # Heard on, deep in the store, for a minute: written as it goes, not only at close.
    deep = [replace(a, t_s=now + 36 + i, rssi_dbm=-90) for i, a in enumerate(walk_in(MEMBER, now))]
    await heard(gateway, source, deep[:40])
    [later], _ = await gateway.store.load_open_visits()
    assert later.visit_id == saved.visit_id
    assert later.last_heard_s > saved.last_heard_s + 30
    assert later.last_near_s == saved.last_near_s  # faint: not near the door
