"""BluezIBeaconAdvertiser against a fake BlueZ (python-dbusmock on a private system bus)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.bluez_advertiser import BluezIBeaconAdvertiser
from edge.core import frames
from tests.fakes.bluez import FakeBluez, FakeBluezError, running_fake_bluez

GUARD_S = 20.0  # a guard against hanging, not a performance expectation
STORE_UUID = bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0")
MAJOR, MINOR, POWER = 0x0102, 0xA0B0, -59


@pytest.fixture
async def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBluez]:
    async with running_fake_bluez(tmp_path, monkeypatch) as fake:
        yield fake


@pytest.fixture
async def advertiser(bluez: FakeBluez) -> AsyncIterator[BluezIBeaconAdvertiser]:
    adv = BluezIBeaconAdvertiser("hci0", STORE_UUID, MAJOR, MINOR, POWER, interval_ms=200)
    try:
        yield adv
    finally:
        await adv.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until it holds; fail naming `what` if the guard runs out."""
    try:
        async with asyncio.timeout(GUARD_S):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


async def registered_properties(bluez: FakeBluez, adapter: str = "hci0") -> dict[str, Any]:
    """Read the registered advertisement's properties back from its owner over D-Bus."""
    [(client, path)] = await bluez.advertisements(adapter)
    [props] = await bluez.call(
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
        ["org.bluez.LEAdvertisement1"],
        destination=client,
    )
    return {name: variant.value for name, variant in props.items()}


def expected_payload() -> bytes:
    fields = frames.parse_ad(frames.ibeacon_advert(STORE_UUID, MAJOR, MINOR, POWER))
    assert not isinstance(fields, str)
    return fields.manufacturer_data[frames.COMPANY_APPLE]


async def test_registers_a_broadcast_ibeacon_with_the_exact_bytes(
    bluez: FakeBluez, advertiser: BluezIBeaconAdvertiser
) -> None:
    await bluez.add_adapter("hci0")
    assert await advertiser.start()
    assert advertiser.registered_on == "hci0"

    [(client, path)] = await bluez.advertisements("hci0")
    assert path == advertiser.object_path
    props = await registered_properties(bluez)
    assert props["Type"] == "broadcast"
    mfr = {company: bytes(v.value) for company, v in props["ManufacturerData"].items()}
    assert mfr == {frames.COMPANY_APPLE: expected_payload()}
    # and spelled out: type 0x02, length 0x15, UUID, major, minor (big-endian), measured power
    assert mfr[0x004C] == b"\x02\x15" + STORE_UUID + struct.pack(">HHb", MAJOR, MINOR, POWER)
    assert props["MinInterval"] == props["MaxInterval"] == 200

    await advertiser.stop()
    assert await bluez.advertisements("hci0") == []  # unregistered
    with pytest.raises(FakeBluezError):  # and withdrawn from the bus
        await bluez.call(
            path,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            "s",
            ["org.bluez.LEAdvertisement1"],
            destination=client,
        )


async def test_registers_again_after_bluez_restarts(
    bluez: FakeBluez, advertiser: BluezIBeaconAdvertiser
) -> None:
    await bluez.add_adapter("hci0")
    assert await advertiser.start()

    await bluez.restart_bluez()  # the new bluetoothd knows nothing of us

    async def registered_again() -> bool:
        return len(await bluez.advertisements("hci0")) == 1

    await eventually(registered_again, "the iBeacon registered with the new BlueZ")
    props = await registered_properties(bluez)
    assert bytes(props["ManufacturerData"][0x004C].value) == expected_payload()
    assert advertiser.registrations == 2


async def test_registers_again_when_the_adapter_comes_back(
    bluez: FakeBluez, advertiser: BluezIBeaconAdvertiser
) -> None:
    await bluez.add_adapter("hci0")
    assert await advertiser.start()

    await bluez.unplug_adapter("hci0")  # BlueZ calls Release() on the advertisement

    async def lost() -> bool:
        return advertiser.registered_on is None

    await eventually(lost, "the loss noticed")
    await bluez.plug_adapter("hci0")

    async def registered_again() -> bool:
        return len(await bluez.advertisements("hci0")) == 1

    await eventually(registered_again, "the iBeacon registered on the replugged adapter")
    assert advertiser.registrations == 2


async def test_waits_for_bluez_to_offer_the_adapter(
    bluez: FakeBluez, advertiser: BluezIBeaconAdvertiser
) -> None:
    assert not await advertiser.start(wait_s=GUARD_S)  # no adapter yet: not an error
    assert "hci0" in (advertiser.last_error or "")
    await bluez.add_adapter("hci0")

    async def registered() -> bool:
        return len(await bluez.advertisements("hci0")) == 1

    await eventually(registered, "the iBeacon registered once the adapter appeared")


@pytest.mark.parametrize(
    ("uuid", "major", "minor", "power", "interval_ms", "problem"),
    [
        (b"\x00" * 15, 1, 1, -59, 100, "16 bytes"),
        (STORE_UUID, 70_000, 1, -59, 100, "major"),
        (STORE_UUID, 1, -1, -59, 100, "minor"),
        (STORE_UUID, 1, 1, -200, 100, "measured power"),
        (STORE_UUID, 1, 1, -59, 5, "interval"),
    ],
    ids=["short-uuid", "major", "minor", "power", "interval"],
)
def test_rejects_an_invalid_ibeacon(
    uuid: bytes, major: int, minor: int, power: int, interval_ms: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        BluezIBeaconAdvertiser("hci0", uuid, major, minor, power, interval_ms)
