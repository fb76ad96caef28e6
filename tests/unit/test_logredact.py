"""The log filter: Bluetooth addresses, binary bytes and key- or EID-like hex never reach a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from edge.logredact import RedactingFilter, install_redaction, redact

MAC = "5E:01:B7:3C:91:D4"
KEY_HEX = "0102030405060708090a111213141516"  # an identity key (RECIPES.md's Eddystone vector)
EID_HEX = "a9b76a71c5f89290"  # its EID at counter 0
EID = bytes.fromhex(EID_HEX)
SERVICE_DATA = repr(b"\x30\xf8" + EID)  # Eddystone-EID frame: type, TX power, EID

# Lines as bleak 3.1 (through dbus-fast) and BlueZ tools print them at DEBUG, with what must vanish.
LIBRARY_LINES = [
    (
        "bleak.backends.bluezdbus.manager",
        "received D-Bus signal: org.freedesktop.DBus.Properties.PropertiesChanged "
        "(/org/bluez/hci0/dev_5E_01_B7_3C_91_D4): ['org.bluez.Device1', {'RSSI': "
        "<dbus_fast.signature.Variant ('n', -61)>, 'ServiceData': <dbus_fast.signature.Variant "
        "('a{sv}', {'0000feaa-0000-1000-8000-00805f9b34fb': <dbus_fast.signature.Variant ('ay', "
        f"{SERVICE_DATA})>}})>}}, []]",
        ["5E_01_B7_3C_91_D4", SERVICE_DATA],
    ),
    (
        "bleak.backends.bluezdbus.manager",
        "received D-Bus signal: org.freedesktop.DBus.ObjectManager.InterfacesAdded (/): "
        "['/org/bluez/hci0/dev_5E_01_B7_3C_91_D4', {'org.bluez.Device1': {'Address': "
        f"<dbus_fast.signature.Variant ('s', '{MAC}')>, 'AddressType': "
        "<dbus_fast.signature.Variant ('s', 'random')>}}]",
        ["5E_01_B7_3C_91_D4", MAC],
    ),
    ("bleak.backends.scanner", f"{MAC.lower()}: AdvertisementData(rssi=-61)", [MAC.lower()]),
    ("btmon", f"Address: 5e-01-b7-3c-91-d4 (Resolvable)  Data: {EID_HEX}", ["5e-01-b7", EID_HEX]),
    ("some.library", f"loaded identity key {KEY_HEX.upper()}", [KEY_HEX.upper()]),
    (
        "aiosqlite",
        "executing functools.partial(<built-in method execute of sqlite3.Connection object at "
        "0x7f12fbdf9b70>, 'INSERT INTO devices (id, member_id, kind, identity_key) VALUES "
        f"(?,?,?,?)', ('d-00000', 'm-00000', 'app', {bytes.fromhex(KEY_HEX)!r}))",
        [repr(bytes.fromhex(KEY_HEX))],
    ),
]

# Lines that must come out exactly as they went in.
ORDINARY_LINES = [
    ("edge.services.uplink", "event 3f2a9c1e0b6d4e7f8a9b0c1d2e3f4a5b not sent: no connection"),
    ("edge.app", "gateway key af98dc1bbd4312aa (sealed with the key file: weaker)"),
    ("cloud_bridge.app", "signing rosters with key 9faa8b62ff340369"),
    ("cloud_bridge.adapters.sqlite_enrollment", "revoked device d-a1b2c3d4e5f60718 of member m-1"),
    ("edge.services.sync", "roster v3 applied (full bundle): 40 devices"),
    ("edge.cli", "gateway threshold/v1/demo-chain/store-001/door-1 running"),
    (
        "edge.adapters.mqtt.paho",
        "Sending SUBSCRIBE (d0, m1) [(b'threshold/v1/demo-chain/store-001/door-1/ack', {QoS=1})]",
    ),
    ("asyncio", "Using selector: EpollSelector"),
    ("some.library", "connected to 127.0.0.1:1883 at 12:34:56, fe80::1, 2026-01-02"),
    ("some.library", "service 0000feaa-0000-1000-8000-00805f9b34fb, firmware 1.2.3, crc 1a2b3c4d"),
]


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger tree whose handler has the filter, as the CLIs set up the root's."""
    out = io.StringIO()
    root = logging.getLogger("redact-test")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False
    install_redaction(root)
    install_redaction(root)  # idempotent: one filter per handler
    try:
        yield root, out
    finally:
        root.removeHandler(handler)


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.DEBUG, __file__, 1, msg, args, None)


@pytest.mark.parametrize(("name", "line", "secrets"), LIBRARY_LINES)
def test_library_lines_lose_addresses_eids_and_keys(
    name: str, line: str, secrets: list[str]
) -> None:
    rec = record(name, "%s", line)

    assert RedactingFilter().filter(rec) is True  # masks, never drops
    message = rec.getMessage()

    for secret in secrets:
        assert secret not in message
    assert message.count("(") == line.count("(")  # the rest of the line is still there


@pytest.mark.parametrize(("name", "line"), ORDINARY_LINES)
def test_ordinary_lines_are_untouched(name: str, line: str) -> None:
    rec = record(name, "%s", line)
    RedactingFilter().filter(rec)
    assert rec.getMessage() == line
    assert rec.args == (line,)  # not even re-formatted


def test_masks_keep_the_shape_of_what_was_there() -> None:
    assert redact(f"dev_5E_01_B7_3C_91_D4 {MAC} 5e-01-b7-3c-91-d4") == (
        "dev_XX_XX_XX_XX_XX_XX XX:XX:XX:XX:XX:XX XX-XX-XX-XX-XX-XX"
    )
    assert redact(f"eid {EID_HEX} key {KEY_HEX} data {SERVICE_DATA}") == (
        "eid <hex16> key <hex32> data b'…'"
    )


def test_our_own_lines_keep_hex_but_not_addresses() -> None:
    rec = record("edge.adapters.bleak_radio", "dropped an advert from %s: %s", MAC, "bad 0x12")
    RedactingFilter().filter(rec)
    assert rec.getMessage() == "dropped an advert from XX:XX:XX:XX:XX:XX: bad 0x12"


def test_records_propagated_from_child_loggers_are_masked_at_the_handler(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    root, out = logged

    root.getChild("bleak.backends.bluezdbus.scanner").debug("device %s eid %s", MAC, EID_HEX)

    assert out.getvalue() == (
        "redact-test.bleak.backends.bluezdbus.scanner: device XX:XX:XX:XX:XX:XX eid <hex16>\n"
    )


def test_a_traceback_is_masked_too(logged: tuple[logging.Logger, io.StringIO]) -> None:
    root, out = logged
    try:
        raise OSError(f"[org.bluez.Error.Failed] le-connection-abort-by-local on {MAC}")
    except OSError:
        root.getChild("bleak").exception("connect failed")

    text = out.getvalue()
    assert "Traceback" in text and "le-connection-abort-by-local on XX:XX:XX:XX:XX:XX" in text
    assert MAC not in text


def test_a_broken_format_string_is_left_for_logging_to_report() -> None:
    rec = record("some.library", "%d devices", "many")
    assert RedactingFilter().filter(rec) is True  # the handler reports it as logging always does
