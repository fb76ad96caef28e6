"""An iPhone checks in through the running gateway: config → Gateway.run → the GATT service on the
fake BlueZ → presence → outbox → Mosquitto → the bridge's records; and the status counts it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge.adapters.mosquitto import MosquittoProcess
from edge.core.advert import RawAdvert
from edge.core.checkin import CheckinRefusal
from tests.fakes.bluez import running_fake_bluez
from tests.fakes.iphone import FakeIPhone
from tests.integration.rig import eventually, status_monitor, store_rig

NOISE = b"\x02\x01\x06"  # a flags-only advert: moves radio time, nobody's identity


async def test_an_iphone_checked_in_at_the_door_is_recorded_by_the_bridge(
    tmp_path: Path, mosquitto: MosquittoProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_fake_bluez(tmp_path / "bluez", monkeypatch) as bluez:
        await bluez.add_adapter("hci0")
        async with store_rig(tmp_path, mosquitto, radio_source="bleak") as rig:
            gateway = rig.gateway

            def serving() -> bool:
                service = gateway.checkin_service
                return service is not None and service.advertised

            await eventually(serving, "the check-in service registered with BlueZ")
            member = rig.devices[0]
            phone = await FakeIPhone.connect(bluez, member, "4A:00:00:00:00:01")
            stranger = await FakeIPhone.connect(bluez, rig.devices[1], "4A:00:00:00:00:02")
            t = time.time()
            await phone.read_challenge()
            await stranger.read_challenge()
            for second in range(25):
                # the door's other traffic sets radio time, one second a step
                rig.source.push([RawAdvert(t + second, "4A:00:00:00:00:99", -90, NOISE)])
                await eventually(
                    lambda n=second + 1: gateway.pipeline.counters.adverts >= n,
                    "the advert",
                )
                assert await phone.check_in(t + second) is None
            # a replay and a forgery on the way: refused, and nothing comes of them
            assert await stranger.write(phone.token(t + 24, seq=3)) == "0x82"
            assert await stranger.write(stranger.token(t + 24)[:12] + bytes(8)) == "0x81"

            async def recorded() -> bool:
                return bool(await rig.column("SELECT event_id FROM visits"))

            await eventually(recorded, "the visit recorded by the bridge")
            [visit] = rig.visits
            assert visit.platform == "ios"
            assert await rig.column("SELECT member_id FROM visits") == [member.member]
            assert await rig.column("SELECT event_id FROM visits") == [visit.event_id]

            await gateway.publish_status()
            async with status_monitor(mosquitto, gateway.address) as statuses:
                await eventually(lambda: bool(statuses), "the gateway's status")
            counters = statuses[-1].counters
            assert counters["checkins"] == 25
            assert counters[f"checkin_{CheckinRefusal.REPLAYED}"] == 1
            assert counters[f"checkin_{CheckinRefusal.BAD_TAG}"] == 1
            assert counters["checkin_served"] == counters["checkin_advertised"] == 1
            assert counters["entries"] == 1
        # the gateway stopped: it withdrew its application and advertisement from BlueZ
        assert await bluez.applications("hci0") == []
        assert await bluez.advertisements("hci0") == []
