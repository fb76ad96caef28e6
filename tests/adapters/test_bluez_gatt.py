"""The iPhone check-in GATT service (BluezCheckinService) against a fake BlueZ, through a real Gateway.

The test plays bluetoothd: after the service registers its application, it reads the application's
objects (GetManagedObjects on the registered path), finds the characteristics by UUID, and calls
ReadValue and WriteValue on them with the `device` option naming the central, as bluetoothd does for
a phone's ATT requests. The gateway behind it is the real composition root on real SQLite, with a
roster applied through its signed, sealed bundle path; time is a fake clock the test moves.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from edge.adapters.bluez_gatt import BluezCheckinService
from edge.adapters.keystore import provision_gateway_keys
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.app import Gateway
from edge.config import GatewayConfig, GatewaySection, IdentitySection
from edge.core import bundle
from edge.core.advert import RawAdvert
from edge.core.checkin import (
    CHALLENGE_CHAR_UUID,
    CHALLENGE_PERIOD_S,
    CHECKIN_CHAR_UUID,
    CHECKIN_SERVICE_UUID,
    CheckinAccepted,
    CheckinRefusal,
    CheckinRefused,
    CheckinResult,
)
from edge.core.wire import RosterDevice
from tests.factories import make_device
from tests.fakes.bluez import FakeBluez, running_fake_bluez
from tests.fakes.iphone import CHARACTERISTIC_IFACE, FAILED, FakeIPhone, registered_app
from tests.fakes.radio import FakeAdvertSource

GUARD_S = 20.0  # a guard against hanging, not a performance expectation
SIGNER = bundle.generate_signing_key(random.Random("bridge").randbytes)
T0 = 1_790_000_000 - 1_790_000_000 % 15_360  # a challenge period and an EID window start here
INVALID_LENGTH = "org.bluez.Error.InvalidValueLength"


class Clock:
    """The gateway's wall and monotonic clocks, moved by the test."""

    def __init__(self) -> None:
        self.t = float(T0)

    def wall(self) -> float:
        return self.t

    def mono(self) -> float:
        return self.t - T0 + 1000.0


@dataclass
class Door:
    gateway: Gateway
    store: SqliteGatewayStore
    clock: Clock
    members: tuple[RosterDevice, ...]
    db_path: Path


@pytest.fixture
async def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBluez]:
    async with running_fake_bluez(tmp_path / "bluez", monkeypatch) as fake:
        await fake.add_adapter("hci0")
        yield fake


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[Door]:
    """A real gateway holding a roster of three iPhone members, no broker, no radio traffic."""
    data_dir = tmp_path / "gw"
    data_dir.mkdir()
    signer = bundle.key_to_text(bundle.public_key_bytes(SIGNER))
    config = GatewayConfig(
        gateway=GatewaySection(
            chain="acme", store="store-001", id="door-1", data_dir=str(data_dir)
        ),
        identity=IdentitySection(trusted_signers=(signer,), key_source="file"),
    )
    keys, _ = provision_gateway_keys(data_dir, "file", "rpi-otp-private-key")
    members = tuple(
        make_device(identity_key=random.Random(f"member {i}").randbytes(16), kind="app")
        for i in range(3)
    )
    store = await SqliteGatewayStore.open(config.database_path)
    clock = Clock()
    try:
        gateway = Gateway(
            config,
            FakeAdvertSource(),
            store,
            keys,
            [SIGNER.public_key()],
            wall_clock=clock.wall,
            monotonic=clock.mono,
        )
        roster = bundle.build_bundle(
            bundle.FullRoster(members),
            chain="acme",
            store="store-001",
            gateway="door-1",
            version=1,
            recipient_public_key=keys.gateway_key.public_key(),
            signing_key=SIGNER,
            random_bytes=random.Random("nonce").randbytes,
        )
        assert await gateway.sync.apply_roster(roster, "test roster")
        yield Door(gateway, store, clock, members, config.database_path)
    finally:
        await store.close()


@pytest.fixture
async def served(bluez: FakeBluez, door: Door) -> AsyncIterator[BluezCheckinService]:
    service = BluezCheckinService(
        "hci0", door.gateway.checkin_challenge, door.gateway.checkin_write
    )
    door.gateway.checkin_service = service  # as Gateway.run does: its counters join the status
    try:
        assert await service.start()
        yield service
    finally:
        await service.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(GUARD_S):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


async def outbox(door: Door) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in await door.store.pending(1000)]


def counters(door: Door) -> dict[str, int]:
    return door.gateway.status().counters


# --- the application BlueZ reads ---


async def test_registers_the_check_in_service_and_a_connectable_advertisement(
    bluez: FakeBluez, served: BluezCheckinService
) -> None:
    assert served.registered_on == "hci0"
    app = await registered_app(bluez)
    assert app.path == "/org/threshold/checkin"
    services = {
        p: i["org.bluez.GattService1"]
        for p, i in app.objects.items()
        if "org.bluez.GattService1" in i
    }
    assert list(services.values()) == [{"UUID": CHECKIN_SERVICE_UUID, "Primary": True}]
    [service_path] = services
    characteristics = {
        i[CHARACTERISTIC_IFACE]["UUID"]: i[CHARACTERISTIC_IFACE]
        for i in app.objects.values()
        if CHARACTERISTIC_IFACE in i
    }
    assert characteristics == {
        CHALLENGE_CHAR_UUID: {
            "UUID": CHALLENGE_CHAR_UUID,
            "Service": service_path,
            "Flags": ["read"],
        },
        CHECKIN_CHAR_UUID: {"UUID": CHECKIN_CHAR_UUID, "Service": service_path, "Flags": ["write"]},
    }
    # the advertisement a backgrounded iPhone's service scan finds: connectable, with the UUID
    [(client, advert_path)] = await bluez.advertisements("hci0")
    assert client == app.client
    [props] = await bluez.call(
        advert_path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
        ["org.bluez.LEAdvertisement1"],
        destination=client,
    )
    assert props["Type"].value == "peripheral"
    assert props["ServiceUUIDs"].value == [CHECKIN_SERVICE_UUID]
    assert props["Discoverable"].value is True
    assert served.counters()["checkin_served"] == served.counters()["checkin_advertised"] == 1

    await served.stop()
    assert await bluez.applications("hci0") == []
    assert await bluez.advertisements("hci0") == []


async def test_the_challenge_is_the_gateways_and_rotates(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    phone = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:01")
    first = await phone.read_challenge()
    assert first == door.gateway.checkin_challenge()
    assert len(first) == 16
    door.clock.t += CHALLENGE_PERIOD_S
    assert await phone.read_challenge() != first
    # a read at an offset gets the rest (a long read); past the end is an error
    [tail] = await bluez.call(
        phone.app.challenge_path,
        CHARACTERISTIC_IFACE,
        "ReadValue",
        "a{sv}",
        [phone.options(offset=Variant("q", 10))],
        destination=phone.app.client,
    )
    assert bytes(tail) == phone.challenge[10:]
    reply = await bluez.call_message(
        phone.app.challenge_path,
        CHARACTERISTIC_IFACE,
        "ReadValue",
        "a{sv}",
        [phone.options(offset=Variant("q", 17))],
        destination=phone.app.client,
    )
    assert reply.error_name == "org.bluez.Error.InvalidOffset"
    assert served.reads == 3


# --- an iPhone walking in ---


async def test_an_iphone_that_checks_in_at_the_door_becomes_an_ios_visit(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    member = door.members[0]
    phone = await FakeIPhone.connect(bluez, member, "4A:00:00:00:00:01")
    for second in range(30):  # about once a second, reading the challenge again every 20 s
        if second % 20 == 0:
            await phone.read_challenge()
        phone.rssi_dbm = -60 + (second % 3)  # the app's readRSSI of this connection
        assert await phone.check_in(door.clock.t) is None
        door.clock.t += 1.0

    [visit] = await outbox(door)
    assert visit["type"] == "visit"
    assert visit["platform"] == "ios"
    assert (visit["member"], visit["device"], visit["tier"]) == (member.member, member.ref, "gold")
    assert T0 + 20 <= visit["ts"] <= T0 + 30  # held for min_dwell_s (20 s) after arriving
    status = counters(door)
    assert status["checkins"] == 30
    assert status["entries"] == 1
    assert status["checkin_writes"] == 30
    assert all(status[f"checkin_{r}"] == 0 for r in CheckinRefusal)
    # nothing of the phone is on disk beyond the visit: not its address, not what it wrote
    on_disk = b"".join(p.read_bytes() for p in door.db_path.parent.glob("gateway.sqlite*"))
    assert b"4A_00_00_00_00_01" not in on_disk and b"4A:00:00:00:00:01" not in on_disk
    assert phone.token(door.clock.t)[1:9] not in on_disk


async def test_an_iphone_enters_a_store_whose_radio_went_quiet(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    """Check-ins do not move radio time; a store where only iPhones are heard still sees time
    pass (the radio's last time, carried on by the monotonic clock), so dwell, challenge rotation
    and throttle refill all work."""
    gateway = door.gateway
    assert isinstance(gateway.source, FakeAdvertSource)
    gateway.source.push([RawAdvert(door.clock.t, "4A:00:00:00:00:99", -90, b"\x02\x01\x06")])
    scan = asyncio.create_task(gateway._scan(), name="scan")
    try:
        await eventually(lambda: _true(gateway.pipeline.counters.adverts == 1), "the one advert")
        phone = await FakeIPhone.connect(bluez, door.members[2], "4A:00:00:00:00:03")
        first = await phone.read_challenge()
        for _ in range(30):  # nothing else on the air
            door.clock.t += 1.0
            assert await phone.check_in(door.clock.t) is None
        [visit] = await outbox(door)
        assert visit["platform"] == "ios"
        door.clock.t += CHALLENGE_PERIOD_S
        assert await phone.read_challenge() != first
    finally:
        scan.cancel()
        await asyncio.gather(scan, return_exceptions=True)


async def test_an_iphone_walking_past_is_not_an_entry(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    phone = await FakeIPhone.connect(bluez, door.members[1], "4A:00:00:00:00:02")
    await phone.read_challenge()
    # strong by the open door, then fading behind the glass, still connected for half a minute
    walk = [-66, -62, -61, -64, -70, -78] + [-88 - (i % 8) for i in range(24)]
    for rssi in walk:
        phone.rssi_dbm = rssi
        assert await phone.check_in(door.clock.t) is None
        door.clock.t += 1.0
    assert await outbox(door) == []
    assert counters(door)["checkins"] == len(walk)


async def test_bluez_rssi_stands_in_when_the_app_has_none(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    heard = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:01", rssi_dbm=-61)
    unheard = await FakeIPhone.connect(bluez, door.members[1], "4A:00:00:00:00:02")
    for phone in (heard, unheard):
        phone.rssi_dbm = None  # readRSSI failed: the app writes 127
    assert await heard.check_in(door.clock.t) is None
    assert await unheard.check_in(door.clock.t) == "0x85"  # no_signal: nobody knows the RSSI
    assert counters(door)["checkin_no_signal"] == 1


# --- bad input: refused, counted, nothing stored ---


async def _malformed(phone: FakeIPhone, door: Door) -> str | None:
    return await phone.write(phone.token(door.clock.t)[:19])


async def _wrong_version(phone: FakeIPhone, door: Door) -> str | None:
    return await phone.write(b"\x02" + phone.token(door.clock.t)[1:])


async def _stale(phone: FakeIPhone, door: Door) -> str | None:
    # a token computed (or recorded) an hour ago: its EID's window is long gone
    return await phone.write(phone.token(door.clock.t - 3600))


async def _unknown_key(phone: FakeIPhone, door: Door) -> str | None:
    stranger = make_device(identity_key=random.Random("not enrolled").randbytes(16))
    return await phone.write(phone.token(door.clock.t, member=stranger))


async def _replayed(phone: FakeIPhone, door: Door) -> str | None:
    token = phone.token(door.clock.t, seq=4)
    assert await phone.write(token) is None  # the genuine write (a single sighting: no entry)
    door.clock.t += 1.0
    return await phone.write(token)  # the same bytes again


async def _expired_challenge(phone: FakeIPhone, door: Door) -> str | None:
    door.clock.t += 2 * CHALLENGE_PERIOD_S  # the challenge it read has expired
    return await phone.write(phone.token(door.clock.t))


async def _long_write(phone: FakeIPhone, door: Door) -> str | None:
    return await phone.write(phone.token(door.clock.t)[10:], offset=Variant("q", 10))


async def _forged_tag(phone: FakeIPhone, door: Door) -> str | None:
    token = phone.token(door.clock.t)
    return await phone.write(token[:12] + bytes(8))


@pytest.mark.parametrize(
    ("bad_write", "answer", "counter"),
    [
        (_malformed, INVALID_LENGTH, "checkin_malformed"),
        (_wrong_version, INVALID_LENGTH, "checkin_malformed"),
        (_stale, "0x83", "checkin_unknown"),
        (_unknown_key, "0x83", "checkin_unknown"),
        (_replayed, "0x82", "checkin_replayed"),
        (_expired_challenge, "0x81", "checkin_bad_tag"),
        (_forged_tag, "0x81", "checkin_bad_tag"),
        (_long_write, INVALID_LENGTH, "checkin_bad_requests"),
    ],
    ids=[
        "malformed",
        "wrong-version",
        "stale-token",
        "unknown-key",
        "replayed",
        "expired-challenge",
        "forged-tag",
        "long-write",
    ],
)
async def test_a_bad_write_is_answered_counted_and_not_stored(
    bluez: FakeBluez,
    door: Door,
    served: BluezCheckinService,
    bad_write: Callable[[FakeIPhone, Door], Awaitable[str | None]],
    answer: str,
    counter: str,
) -> None:
    phone = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:01")
    await phone.read_challenge()
    assert await bad_write(phone, door) == answer
    status = counters(door)
    assert status[counter] == 1
    assert status["checkins"] == (1 if bad_write is _replayed else 0)
    assert await door.store.count() == 0
    # the phone recovers as docs/iphone-checkin.md says: read the challenge again, go on
    await phone.read_challenge()
    phone.seq = 128
    assert await phone.check_in(door.clock.t) is None


async def test_a_flood_from_one_central_is_throttled_while_others_check_in(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    flooder = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:0F")
    shopper = await FakeIPhone.connect(bluez, door.members[1], "4A:00:00:00:00:01")
    await flooder.read_challenge()
    await shopper.read_challenge()
    for i in range(60):  # back to back, as fast as ATT lets one link write
        await flooder.check_in(door.clock.t)
        if i % 10 == 0:
            assert await shopper.check_in(door.clock.t) is None
        door.clock.t += 0.01
    assert flooder.answers.count(None) <= 10  # its burst, and a little refill
    assert flooder.answers.count("0x84") >= 50
    status = counters(door)
    assert status["checkin_throttled"] == flooder.answers.count("0x84")
    assert await door.store.count() == 0


async def test_concurrent_writes_are_each_answered_and_do_not_block_another_central(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    """Something other than ATT sending many writes at once from one central: each one is
    answered at once (accepted, throttled or busy); another central's write goes through."""
    flooder = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:0F")
    shopper = await FakeIPhone.connect(bluez, door.members[1], "4A:00:00:00:00:01")
    await flooder.read_challenge()
    await shopper.read_challenge()
    tokens = [flooder.token(door.clock.t, seq=i) for i in range(40)]
    answers = await asyncio.gather(
        *(flooder.write(t) for t in tokens[:20]),
        shopper.check_in(door.clock.t),
        *(flooder.write(t) for t in tokens[20:]),
    )
    assert answers[20] is None  # the shopper
    flood = answers[:20] + answers[21:]
    assert set(flood) <= {None, "0x84", "0x86"}
    assert flood.count(None) <= 8
    assert served.busy == flood.count("0x86")


async def test_writes_in_hand_are_bounded(bluez: FakeBluez, door: Door) -> None:
    release = asyncio.Event()

    async def slow_write(payload: bytes, central: str, rssi: float | None) -> CheckinResult:
        await release.wait()
        return CheckinAccepted(door.members[0], -60.0)

    service = BluezCheckinService("hci0", lambda: bytes(16), slow_write, max_in_flight=2)
    try:
        assert await service.start()
        phones = [
            await FakeIPhone.connect(bluez, door.members[0], f"4A:00:00:00:00:0{i}")
            for i in range(3)
        ]
        pending = [asyncio.create_task(p.write(bytes(20))) for p in phones[:2]]
        await eventually(lambda: _true(service.writes == 2), "two writes in hand")
        assert await phones[2].write(bytes(20)) == "0x86"  # busy, answered at once
        release.set()
        assert await asyncio.gather(*pending) == [None, None]
        assert service.counters()["checkin_busy"] == 1
    finally:
        await service.stop()


async def test_a_gateway_that_fails_answers_0x80_and_counts_it(
    bluez: FakeBluez, door: Door
) -> None:
    async def broken_write(payload: bytes, central: str, rssi: float | None) -> CheckinResult:
        raise OSError("disk I/O error")

    def broken_challenge() -> bytes:
        raise RuntimeError("no entropy")

    service = BluezCheckinService("hci0", broken_challenge, broken_write)
    try:
        assert await service.start()
        phone = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:01")
        reply = await bluez.call_message(
            phone.app.challenge_path,
            CHARACTERISTIC_IFACE,
            "ReadValue",
            "a{sv}",
            [phone.options()],
            destination=phone.app.client,
        )
        assert (reply.error_name, reply.body) == (FAILED, ["0x80"])
        assert await phone.write(bytes(20)) == "0x80"
        assert service.counters()["checkin_failed"] == 2
    finally:
        await service.stop()


async def test_hostile_options_are_refused_not_raised(bluez: FakeBluez, door: Door) -> None:
    seen: list[tuple[str, float | None]] = []

    async def write(payload: bytes, central: str, rssi: float | None) -> CheckinResult:
        seen.append((central, rssi))
        return CheckinRefused(CheckinRefusal.MALFORMED, "test")

    service = BluezCheckinService("hci0", lambda: bytes(16), write)
    try:
        assert await service.start()
        phone = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:01")
        weird = [
            {"offset": Variant("s", "zero")},
            {"offset": Variant("q", 1)},
        ]
        for options in weird:
            reply = await bluez.call_message(
                phone.app.checkin_path,
                CHARACTERISTIC_IFACE,
                "WriteValue",
                "aya{sv}",
                [bytes(20), options],
                destination=phone.app.client,
            )
            assert reply.error_name == INVALID_LENGTH
        # no device option, or one that is no device of the adapter, or no object path at all
        # (BlueZ's RSSI cannot be asked for it): still judged (and throttled), never a failure
        for options in (
            {},
            {"device": Variant("s", "not a path")},
            {"device": Variant("o", "/x")},
            {"device": Variant("s", "/org/bluez/hci0/dev_4A 00!")},
        ):
            reply = await bluez.call_message(
                phone.app.checkin_path,
                CHARACTERISTIC_IFACE,
                "WriteValue",
                "aya{sv}",
                [bytes(20), options],
                destination=phone.app.client,
            )
            assert reply.error_name == INVALID_LENGTH  # the verdict: malformed
        assert seen == [
            ("(no device)", None),
            ("(no device)", None),
            ("/x", None),
            ("(no device)", None),
        ]
        assert service.bad_requests == 2
        assert service.failed == 0
    finally:
        await service.stop()


# --- BlueZ coming and going ---


async def test_registers_again_after_bluez_restarts(
    bluez: FakeBluez, door: Door, served: BluezCheckinService
) -> None:
    await bluez.restart_bluez()  # the new bluetoothd knows nothing of us

    async def registered_again() -> bool:
        return (
            len(await bluez.applications("hci0")) == 1
            and len(await bluez.advertisements("hci0")) == 1
        )

    await eventually(registered_again, "the check-in service registered with the new BlueZ")
    assert served.registrations == 2
    phone = await FakeIPhone.connect(bluez, door.members[0], "4A:00:00:00:00:01")
    assert await phone.check_in(door.clock.t) is None  # and phones check in through it


async def test_registers_again_when_the_adapter_comes_back(
    bluez: FakeBluez, served: BluezCheckinService
) -> None:
    await bluez.unplug_adapter("hci0")

    async def lost() -> bool:
        return served.registered_on is None

    await eventually(lost, "the loss noticed")
    await bluez.plug_adapter("hci0")

    async def registered_again() -> bool:
        return len(await bluez.applications("hci0")) == 1 and served.advertised

    await eventually(registered_again, "the service registered on the replugged adapter")
    assert served.registrations == 2


async def test_waits_for_bluez_to_offer_the_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_fake_bluez(tmp_path / "bluez", monkeypatch) as bluez:
        service = BluezCheckinService("hci1", lambda: bytes(16), _refuse)
        try:
            assert not await service.start(wait_s=GUARD_S)  # no such adapter yet: not an error
            assert "hci1" in (service.last_error or "")
            await bluez.add_adapter("hci1", "00:1A:7D:DA:71:14")

            async def registered() -> bool:
                return len(await bluez.applications("hci1")) == 1

            await eventually(registered, "the service registered once the adapter appeared")
        finally:
            await service.stop()


async def _refuse(payload: bytes, central: str, rssi: float | None) -> CheckinResult:
    return CheckinRefused(CheckinRefusal.MALFORMED, "test")


async def _true(value: bool) -> bool:
    return value
