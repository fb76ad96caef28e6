"""The whole visit on real parts: a simulated entrance's visits end and the bridge records how long each
shopper stayed; a visit end that does not hold together is refused and counted; a gateway killed
mid-visit and restarted reports one visit and one end; the visit topic takes nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import statistics
import time
from pathlib import Path

import pytest

from cloud_bridge.core.pseudonyms import Kind
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import PahoMqtt
from edge.core import wire
from edge.core.advert import RawAdvert
from edge.core.broker_identity import gateway_identity
from edge.services.tasks import cancel_and_wait
from edge.sim.entrance import EntranceConfig, StoreEntrance
from tests.fakes.radio import walk_in, walk_out
from tests.integration.rig import CHAIN, STORE, Rig, eventually, monitor, store_rig

TIMEOUT_S = 300.0  # the gateway's default visit timeout
NOISE = b"\x02\x01\x06"  # an advert that is no EID: time passes at the door


def silence_until(t_s: float) -> list[RawAdvert]:
    """Someone else's phone heard at radio time t_s: the gateway's housekeeping runs up to then."""
    return [RawAdvert(t_s, "4A:00:00:00:00:99", -90, NOISE)]


async def recorded_ends(rig: Rig) -> list[tuple[object, ...]]:
    async with rig.records.connection.execute(
        "SELECT visit_id, member_id, platform, entered_at, ended_at, duration_s, reason "
        "FROM visit_times ORDER BY visit_id"
    ) as cursor:
        return [tuple(r) async for r in cursor]


async def test_every_visit_of_a_simulated_entrance_ends_and_the_bridge_records_its_length(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto, members=40) as rig:
        start = time.time()
        entrance = StoreEntrance(
            EntranceConfig(
                seed=7,
                start_unix_s=start,
                duration_s=900.0,
                arrivals_per_min=3.0,
                passers_per_min=6.0,
                noise_devices=10,
            ),
            rig.devices,
        )
        adverts = list(entrance.adverts())
        for _, second in itertools.groupby(adverts, key=lambda a: int(a.t_s)):
            rig.source.push(second)
        rig.source.push(silence_until(entrance.config.end_unix_s + TIMEOUT_S + 2))

        async def every_visit_ended_and_recorded() -> bool:
            visits = rig.visits
            return (
                bool(visits)
                and len([e for e in rig.events if isinstance(e, wire.VisitEnd)]) == len(visits)
                and await rig.records.count("visit_ends") == len(visits)
                and await rig.gateway.store.count() == 0
            )

        await eventually(every_visit_ended_and_recorded, "every visit ended and recorded", 60)

        ends = [e for e in rig.events if isinstance(e, wire.VisitEnd)]
        assert sorted(e.visit_id for e in ends) == sorted(v.event_id for v in rig.visits)
        assert {e.reason for e in ends} == {"timeout"}
        recorded = await recorded_ends(rig)
        assert [r[0] for r in recorded] == sorted(v.event_id for v in rig.visits)
        for _, _, platform, entered_at, ended_at, duration_s, _ in recorded:
            assert platform in ("android", "tag")
            assert duration_s == pytest.approx(ended_at - entered_at, abs=0.001)  # type: ignore[operator]
        # How long each stayed, against what the simulated shoppers really did: those who left
        # more than a minute before the run ended (the others' radio stopped with the run).
        truth = entrance.truth.time_in_store_s(entrance.config.end_unix_s - 60)
        measured = {r[1]: r[5] for r in recorded}
        errors = [
            abs(float(measured[m]) - true_s) / true_s  # type: ignore[arg-type]
            for m, true_s in truth.items()
            if m in measured
        ]
        assert len(errors) >= 5, f"too few visits to judge ({len(errors)})"
        assert statistics.median(errors) < 0.10
        status = rig.bridge.status()
        assert status.counters["forged"] == 0


async def test_visit_ends_that_do_not_hold_together_are_refused_acknowledged_and_counted(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    options = {"status_interval_s": 0.2}
    async with (
        store_rig(tmp_path, mosquitto, bridge_options=options) as rig,
        monitor(mosquitto, wire.bridge_status_filter(CHAIN), wire.BridgeStatus) as statuses,
    ):
        now = time.time()
        [visit, other] = await rig.genuine_visits(2, now - 600, "visit")
        genuine = wire.VisitEnd(
            "end-genuine",
            visit.event_id,
            now - 100,
            now,
            visit.member,
            visit.device,
            now - 620,
            520.0,
            "timeout",
            "android",
        )
        forged = [
            dataclasses.replace(genuine, event_id="end-long", duration_s=5200.0),
            dataclasses.replace(genuine, event_id="end-backwards", entered_at=now, duration_s=0),
            # Another member's visit, claimed by the second member.
            dataclasses.replace(
                genuine, event_id="end-theirs", member=other.member, device=other.device
            ),
        ]
        await rig.gateway.store.append_events([visit, other, *forged, genuine], now)
        rig.gateway.uplink.wake()

        async def outbox_empty() -> bool:
            return await rig.gateway.store.count() == 0

        await eventually(outbox_empty, "every event acknowledged")
        assert [r[0] for r in await recorded_ends(rig)] == [visit.event_id]
        assert rig.bridge.forged == 3
        refused = {q.event_id: q.reason for q in await rig.records.quarantined()}
        assert refused == {
            "end-long": "visit_end_wrong_duration",
            "end-backwards": "visit_end_before_entry",
            "end-theirs": "visit_end_other_visitor",
        }
        await eventually(
            lambda: any(s.counters.get("forged") == 3 for s in statuses),
            "the forged count on the bridge's status",
        )


async def test_a_gateway_killed_mid_visit_and_restarted_reports_one_visit_and_one_end(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        shopper = rig.devices[0]
        now = time.time()
        rig.source.push(walk_in(shopper, now))
        await rig.settled(expected_offers=1)
        [visit] = rig.visits

        await rig.restart_gateway(kill=True)  # kill -9: nothing written since the entry
        assert rig.gateway.pipeline.open_visits == 1
        rig.source.push(walk_out(shopper, now + 60))  # still inside, then leaving
        rig.source.push(silence_until(now + 60 + 29 + TIMEOUT_S + 2))

        async def ended_and_recorded() -> bool:
            return bool(await recorded_ends(rig)) and await rig.gateway.store.count() == 0

        await eventually(ended_and_recorded, "the visit's end recorded")
        assert rig.visits == [visit]  # no second entry
        assert await rig.column("SELECT event_id FROM visits") == [visit.event_id]
        [(visit_id, member, _, entered_at, ended_at, _, reason)] = await recorded_ends(rig)
        assert (visit_id, member, reason) == (visit.event_id, shopper.member, "timeout")
        assert now <= entered_at <= now + 4  # type: ignore[operator]
        assert now + 60 + 6 <= ended_at <= now + 60 + 10  # type: ignore[operator]
        # The gateway reported it under the store's pseudonym for the member.
        serials = await rig.records.serials()
        pseudonym = rig.records.pseudonyms(STORE).one(Kind.MEMBER, serials.members[member])
        assert visit.member == pseudonym


async def test_the_visit_topic_takes_visits_and_visit_ends_only(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        door_2 = wire.GatewayAddress(CHAIN, STORE, "door-2")  # a gateway's certificate: its topics
        client = PahoMqtt(mosquitto.client_settings(gateway_identity(door_2)))
        task = asyncio.create_task(client.run(), name="door-2")
        try:
            await client.wait_connected(10)
            now = time.time()
            end = wire.VisitEnd("e-1", "v-1", now, now, "m-1", "d-1", now - 60, 60.0, "timeout")
            trigger = wire.OfferTrigger("e-2", "v-1", now, now, "m-1", "d-1", "gold", "welcome")
            wrong = [
                (wire.event_topic(door_2, "visit"), trigger),
                (wire.event_topic(door_2, "visit"), wire.Ack(("e-1",))),
                (wire.event_topic(door_2, "offer"), end),
            ]
            for topic, payload in wrong:
                await client.publish(topic, wire.encode(payload))
            await eventually(lambda: rig.bridge.rejected == len(wrong), "three rejections")
        finally:
            await client.disconnect()
            await cancel_and_wait([task])
        assert await rig.records.count("events") == 0  # nothing of theirs recorded
        await rig.assert_alive_and_recording("other payloads on the visit topic")
