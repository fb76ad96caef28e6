"""Simulated iPhones checking in to a real gateway: the verifier, the pipeline and SQLite, no BlueZ.

The simulated radio plays the store (edge/sim/entrance.py) as fast as the gateway takes it, and hands
each check-in write to the simulated check-in service once radio time has reached it; the service
writes what the iOS app would through `Gateway.checkin_write`.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.adapters.keystore import provision_gateway_keys
from edge.adapters.simulated_checkin import SimulatedCheckinService
from edge.adapters.simulated_radio import SimulatedAdvertSource
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.app import Gateway
from edge.config import GatewayConfig, GatewaySection
from edge.core import bundle, wire
from edge.core.advert import RawAdvert
from edge.core.checkin import CheckinRefusal
from edge.core.resolver import EidResolver
from edge.sim import EntranceConfig, SimDevice, StoreEntrance, make_members
from edge.sim.entrance import CheckinAttempt

SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)
MEMBERS = make_members(800, seed=11)


def roster_of(members: list[SimDevice]) -> list[wire.RosterDevice]:
    return [
        wire.RosterDevice(m.ref, m.member, "gold", m.identity_key, m.exponent, m.kind)
        for m in members
    ]


@dataclass
class Run:
    entrance: StoreEntrance
    gateway: Gateway
    source: SimulatedAdvertSource
    service: SimulatedCheckinService
    events: list[wire.Event]

    def visits(self) -> list[wire.Visit]:
        return [e for e in self.events if isinstance(e, wire.Visit)]


async def play(
    tmp_path: Path, store: SqliteGatewayStore, entrance: StoreEntrance, enrolled: list[SimDevice]
) -> Run:
    """The whole simulated run through a gateway enrolling `enrolled`."""
    keys, _ = provision_gateway_keys(tmp_path / "keys", "file", "rpi-otp-private-key")
    config = GatewayConfig(gateway=GatewaySection(data_dir=str(tmp_path)))
    source = SimulatedAdvertSource(entrance.stream(), speed=float("inf"))
    gateway = Gateway(config, source, store, keys, [SIGNER.public_key()])
    gateway.pipeline.resolver = EidResolver(roster_of(enrolled), entrance.truth.start_s)
    service = SimulatedCheckinService(gateway)
    source.serve_checkins(service.deliver)
    events: list[wire.Event] = []
    gateway.listeners.append(events.extend)
    async with asyncio.timeout(120):
        await gateway._scan()  # returns when the simulation ends
    return Run(entrance, gateway, source, service, events)


@pytest.fixture
def entrance() -> StoreEntrance:
    return StoreEntrance(
        EntranceConfig(seed=3, duration_s=900.0, arrivals_s=600.0, arrivals_per_min=8.0), MEMBERS
    )


async def test_iphones_walking_in_are_recognised_through_the_verifier(
    tmp_path: Path, store: SqliteGatewayStore, entrance: StoreEntrance
) -> None:
    run = await play(tmp_path, store, entrance, MEMBERS)
    truth = entrance.truth
    platforms = truth.platforms()
    visits = run.visits()
    recognised = {v.member for v in visits}
    # Each visit says how the member was heard.
    assert all(v.platform == platforms[v.member] for v in visits)
    rates = {}
    for platform in ("android", "ios"):
        entered = truth.entered_members(platform=platform)
        assert len(entered) > 10
        rates[platform] = len(entered & recognised) / len(entered)
    assert rates["ios"] >= 0.9 * rates["android"], rates
    # iPhones walking past were woken and checked in too, and none of them counts as an entry.
    passing_iphones = {
        p.device.ref
        for p in truth.people
        if p.role == "passing" and p.platform == "ios" and p.device
    }
    written = {a.device.ref for a in entrance.checkin_attempts}
    assert len(passing_iphones & written) > 10
    assert not recognised & truth.passing_members()

    # Every write went through the verifier: accepted, or an expired challenge refused and
    # written again with a fresh one; no replay (the seqs follow the protocol), nothing throttled.
    checkin = run.gateway.checkin
    stale = sum(a.stale_challenge for a in entrance.checkin_attempts)
    assert stale > 10
    assert run.service.stale_rewrites == stale
    assert {r: n for r, n in checkin.refused.items() if n} == {CheckinRefusal.BAD_TAG: stale}
    assert checkin.accepted == run.service.accepted == len(entrance.checkin_attempts)
    assert run.gateway.pipeline.counters.checkins == checkin.accepted
    assert run.source.checkins_delivered == len(entrance.checkin_attempts)
    # Stored for the uplink like an advert's events.
    assert await store.count() == len(run.events)


async def test_iphones_not_enrolled_here_are_refused_and_leave_no_visit(
    tmp_path: Path, store: SqliteGatewayStore, entrance: StoreEntrance
) -> None:
    androids_and_tags = [m for m in MEMBERS if entrance.truth.platforms().get(m.member) != "ios"]
    run = await play(tmp_path, store, entrance, androids_and_tags)
    refused = run.gateway.checkin.refused
    assert run.gateway.checkin.accepted == 0
    assert refused[CheckinRefusal.UNKNOWN] == run.service.writes > 1000
    assert all(v.platform != "ios" for v in run.visits())
    assert run.visits()  # the Android phones and tags still walk in


async def test_a_check_in_reaches_the_gateway_once_radio_time_has_reached_it() -> None:
    entrance = StoreEntrance(EntranceConfig(seed=4, duration_s=300.0), MEMBERS)
    delivered: list[tuple[float | None, CheckinAttempt]] = []
    source = SimulatedAdvertSource(entrance.stream(), speed=float("inf"))

    async def sink(attempt: CheckinAttempt) -> None:
        delivered.append((source.radio_time_s, attempt))

    source.serve_checkins(sink)
    adverts: list[RawAdvert] = []
    async for batch in source.batches():
        adverts.extend(batch)
    assert adverts == list(entrance.adverts())
    assert [a for _, a in delivered] == list(entrance.checkin_attempts)
    last_advert_s = adverts[-1].t_s
    for radio_s, attempt in delivered:
        assert radio_s is not None
        if attempt.t_s <= last_advert_s:
            assert attempt.t_s <= radio_s < attempt.t_s + 1.0
    assert source.finished and source.checkins_unserved == 0


async def test_without_a_check_in_service_the_writes_are_counted_and_dropped() -> None:
    entrance = StoreEntrance(EntranceConfig(seed=4, duration_s=120.0), MEMBERS)
    source = SimulatedAdvertSource(entrance.stream(), speed=float("inf"))
    heard = [a async for batch in source.batches() for a in batch]
    assert heard == list(entrance.adverts())
    assert source.checkins_unserved == len(entrance.checkin_attempts) > 0
