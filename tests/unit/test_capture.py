"""The capture format (docs/capture.md): lines in, adverts out; adverts in, lines out."""

from __future__ import annotations

import json

import pytest

from edge.core import frames
from edge.core.advert import RawAdvert
from edge.core.capture import (
    CaptureError,
    CaptureFields,
    capture_fields,
    format_advert_line,
    format_capture_line,
    parse_capture_line,
)
from edge.core.frames import FrameKind
from edge.sim.entrance import EntranceConfig, StoreEntrance, make_members

FEAA = "0000feaa-0000-1000-8000-00805f9b34fb"
EID = bytes.fromhex("a9b76a71c5f89290")
IBEACON = "0215" + "f7826da64fa24e988024bc5b71e0893e" + "0001" + "0002" + "c5"


def line(**fields: object) -> str:
    base: dict[str, object] = {
        "t": 1_790_000_000.25,
        "address": "aa:bb:cc:dd:ee:ff",
        "rssi": -60,
        "manufacturer_data": {},
        "service_data": {},
        "service_uuids": [],
        "local_name": None,
        "tx_power": None,
    }
    base.update(fields)
    return json.dumps(base)


def test_the_documented_ibeacon_line() -> None:
    advert = parse_capture_line(line(manufacturer_data={"76": IBEACON}), 1)
    assert advert == RawAdvert(
        1_790_000_000.25,
        "AA:BB:CC:DD:EE:FF",  # addresses are normalised to upper case
        -60,
        bytes.fromhex("1aff4c00" + IBEACON),  # company id 76 = 0x004C, little-endian
    )
    assert frames.classify_advert(advert.payload).kind is FrameKind.IBEACON


def test_an_eddystone_eid_line_carries_its_eid() -> None:
    advert = parse_capture_line(
        line(service_data={FEAA: "30ec" + EID.hex()}, service_uuids=[FEAA]), 1
    )
    assert advert.payload == bytes.fromhex("0303aafe" + "0d16aafe30ec" + EID.hex())
    assert frames.classify_advert(advert.payload).eid == EID


def test_extra_keys_are_ignored_and_optional_keys_may_be_missing() -> None:
    text = json.dumps(
        {"t": 5, "address": "AA:BB:CC:DD:EE:FF", "rssi": -90, "adapter": "hci0", "platform": {}}
    )
    advert = parse_capture_line(text, 1)
    assert (advert.t_s, advert.rssi_dbm, advert.payload) == (5.0, -90, b"")


def test_name_tx_power_and_128_bit_uuids_are_encoded() -> None:
    nus = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
    advert = parse_capture_line(
        line(service_uuids=[nus], local_name="Door", tx_power=-4, service_data={nus: "01"}), 1
    )
    fields = capture_fields(advert.payload)
    assert (fields.service_uuids, fields.local_name, fields.tx_power_dbm) == ([nus], "Door", -4)
    assert fields.service_data == {nus: b"\x01"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "line 9: is not JSON"),
        ("[1, 2]", "line 9: must be a JSON object"),
        (
            json.dumps({"address": "AA:BB:CC:DD:EE:FF", "rssi": -60}),
            "line 9, field 't': is missing",
        ),
        (line(t="soon"), "line 9, field 't': must be a number (seconds), got a string"),
        (line(t=-1), "field 't': must be seconds since the Unix epoch"),
        (line(t=10**400), "field 't': must be seconds since the Unix epoch"),
        (line(address="somewhere"), "field 'address': must be a Bluetooth address like"),
        (line(address=17), "field 'address': must be a Bluetooth address"),
        (line(rssi=-60.5), "field 'rssi': must be the RSSI in dBm, an integer from -128 to 127"),
        (line(rssi=True), "field 'rssi': must be the RSSI in dBm"),
        (line(rssi=300), "got 300"),
        (line(manufacturer_data=[]), "field 'manufacturer_data': must be an object, got a list"),
        (line(manufacturer_data={"0x4c": "00"}), "'manufacturer_data.0x4c': must be keyed by"),
        (line(manufacturer_data={"65536": "00"}), "company id in decimal, 0 to 65535"),
        (line(manufacturer_data={"76": "zz"}), "'manufacturer_data.76': must be a hex string"),
        (line(manufacturer_data={"76": 12}), "must be a hex string, got a number"),
        (line(manufacturer_data={"76": "00" * 253}), "is 253 bytes, at most 252 fit"),
        (line(service_data={"feaa": "00"}), "field 'service_data': must be a 128-bit UUID like"),
        (line(service_data={FEAA: "0"}), f"field 'service_data.{FEAA}': must be a hex string"),
        (line(service_uuids="feaa"), "field 'service_uuids': must be a list, got a string"),
        (line(service_uuids=[FEAA, 7]), "field 'service_uuids': must be a 128-bit UUID"),
        (line(local_name=5), "field 'local_name': must be a string or null, got a number"),
        (line(tx_power="high"), "field 'tx_power': must be the TX power in dBm, or null"),
        (line(service_uuids=[f"{n:08x}-0000-0000-0000-000000000000" for n in range(16)]), "fit"),
    ],
)
def test_broken_lines_name_line_field_and_expectation(text: str, message: str) -> None:
    with pytest.raises(CaptureError) as caught:
        parse_capture_line(text, 9)
    assert caught.value.line_no == 9
    assert message in str(caught.value)


def test_an_invalid_address_is_not_echoed() -> None:
    # The message may be logged or shown; a device address must not appear in it.
    with pytest.raises(CaptureError) as caught:
        parse_capture_line(line(address="12:34:56:78:9A:BC:DE"), 1)
    assert "12:34" not in str(caught.value)


def test_format_then_parse_round_trips() -> None:
    text = format_capture_line(
        t_s=1_790_000_000.123456,
        address="C0:FF:EE:00:00:01",
        rssi_dbm=-71,
        manufacturer_data={0xFFFF: b"TH\x01\x00" + EID},
        service_data={FEAA: b"\x30\xec" + EID},
        service_uuids=[FEAA],
        local_name="tag",
        tx_power_dbm=-8,
    )
    assert "\n" not in text
    obj = json.loads(text)
    assert obj["manufacturer_data"] == {"65535": "54480100" + EID.hex()}
    advert = parse_capture_line(text, 1)
    assert (advert.t_s, advert.address, advert.rssi_dbm) == (
        1_790_000_000.123456,
        "C0:FF:EE:00:00:01",
        -71,
    )
    fields = capture_fields(advert.payload)
    assert fields.manufacturer_data == {0xFFFF: b"TH\x01\x00" + EID}
    assert fields.service_data == {FEAA: b"\x30\xec" + EID}
    assert (fields.local_name, fields.tx_power_dbm) == ("tag", -8)


def test_recorded_simulator_traffic_replays_to_the_same_frames() -> None:
    entrance = StoreEntrance(
        EntranceConfig(seed=3, duration_s=60, noise_devices=40), make_members(50, 3)
    )
    adverts = list(entrance.adverts())
    assert adverts
    for n, advert in enumerate(adverts, 1):
        replayed = parse_capture_line(format_advert_line(advert), n)
        before = frames.classify_advert(advert.payload)
        after = frames.classify_advert(replayed.payload)
        assert (after.kind, after.eid, after.frame) == (before.kind, before.eid, before.frame)
        assert (replayed.address, replayed.rssi_dbm) == (advert.address, advert.rssi_dbm)
        assert replayed.t_s == pytest.approx(advert.t_s, abs=1e-6)


def test_recording_raw_bytes_stops_where_a_host_stack_would() -> None:
    # Manufacturer data, then a structure that claims more bytes than remain: like BlueZ, keep the
    # first and drop the rest rather than refuse the whole advert.
    payload = bytes.fromhex("05ff59000102" + "09ff4c00")
    fields = capture_fields(payload)
    assert fields.manufacturer_data == {0x0059: b"\x01\x02"}
    # Structures too short for their type are skipped; the rest is read.
    short = capture_fields(bytes.fromhex("0116" + "02ff4c" + "020af8"))
    assert short == CaptureFields(tx_power_dbm=-8)
