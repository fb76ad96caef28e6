"""Config files: defaults, and errors that name the file, the field and what is expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.config import load_config, parse_config
from edge.errors import ConfigError


def test_defaults_and_overrides() -> None:
    config = parse_config(
        '[gateway]\nchain = "acme"\nstore = "s-1"\nid = "door-2"\n[mqtt]\nport = 8883\n'
    )
    assert config.address.prefix == "threshold/v1/acme/s-1/door-2"
    assert config.mqtt.port == 8883
    assert config.presence_config.enter_dbm == -70.0
    assert config.privacy.retention_s == 30 * 86400.0  # 30 days: the refresh memory (issue 10)
    assert parse_config("[privacy]\nretention_s = 3600\n").privacy.retention_s == 3600.0


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("[gateway]\nchian = 'x'\n", "gateway.chian", "unknown key"),
        ("[mqtt]\nport = '1883'\n", "mqtt.port", "must be an integer"),
        ("[mqtt]\nport = 70000\n", "mqtt.port", "1..65535"),
        ("[presence]\nenter_dbm = -90\n", "presence", "must not be above enter_dbm"),
        ("[radio.bleak]\nmode = 'loud'\n", "radio.bleak.mode", "must be 'auto'"),
        ("[store_beacon]\nenabled = true\nuuid = 'xyz'\n", "store_beacon.uuid", "32 hex digits"),
        ("[radio]\nsource = 'wifi'\n", "radio.source", "must be one of"),
        ("[gateway]\nid = 'Door 1'\n", "gateway", "not a valid id"),
        ("[uplink]\nbatch = 0\n", "uplink", "batch must be >= 1"),
        ("[presence]\nmin_dwell_s = true\n", "presence.min_dwell_s", "must be a number"),
        ("mqtt = 3\n", "mqtt", "must be a table"),
        ("[gateway\n", "-", "not valid TOML"),
        ("[privacy]\nretention_s = 0\n", "privacy.retention_s", "must be a number of seconds > 0"),
        ("[privacy]\nretention_s = inf\n", "privacy.retention_s", "> 0"),
        ("[privacy]\nretention_s = '24h'\n", "privacy.retention_s", "must be a number"),
        ("[privacy]\nretain_s = 60\n", "privacy.retain_s", "unknown key; known: retention_s"),
        ("[checkin]\nenabled = 1\n", "checkin.enabled", "must be true or false"),
        ("[checkin]\nadapter = 'hci1'\n", "checkin.adapter", "unknown key; known: enabled"),
    ],
)
def test_bad_config_names_file_field_and_expectation(text: str, field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/threshold/gateway.toml")
    assert info.value.field == field
    assert problem in info.value.problem
    assert str(info.value).startswith("/etc/threshold/gateway.toml: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "nope.toml")


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "firmware_config" / "gateway.example.toml"
    assert load_config(example).address.gateway == "door-1"


def test_serial_radio_is_built_from_the_config() -> None:
    from edge.adapters.serial_radio import SerialAdvertSource
    from edge.app import build_radio

    config = parse_config(
        "[radio]\nsource = 'serial'\n[radio.serial]\nport = '/dev/serial/by-id/usb-nrf'\n"
        "baudrate = 115200\nscan_mode = 'active'\n"
    )
    source = build_radio(config)
    assert isinstance(source, SerialAdvertSource)
    assert source.name == "serial"


def test_serial_scan_mode_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[radio]\nsource = 'serial'\n[radio.serial]\nscan_mode = 'loud'\n", "g.toml")
    assert info.value.field == "radio.serial.scan_mode"


def test_bleak_radio_is_built_from_the_config() -> None:
    from edge.adapters.bleak_radio import BleakAdvertSource
    from edge.app import build_radio

    config = parse_config("[radio]\nsource = 'bleak'\n[radio.bleak]\nadapter = 'hci0'\n")
    source = build_radio(config)
    assert isinstance(source, BleakAdvertSource) and source.name == "bleak"


SIGNER_HEX = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 test 1


def test_trusted_signers_and_key_source_are_read() -> None:
    config = parse_config(
        f'[identity]\ntrusted_signers = ["{SIGNER_HEX}"]\nkey_source = "otp"\n'
        'otp_command = "/usr/bin/rpi-otp-private-key"\n'
    )
    assert config.identity.trusted_signers == (SIGNER_HEX,)
    assert config.identity.key_source == "otp"
    assert config.data_dir == Path("/var/lib/threshold")


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('[identity]\ntrusted_signers = "abc"\n', "identity.trusted_signers", "list of strings"),
        ("[identity]\ntrusted_signers = [1]\n", "identity.trusted_signers", "list of strings"),
        (
            '[identity]\ntrusted_signers = ["abc"]\n',
            "identity.trusted_signers",
            "entry 0: not a key",
        ),
        ('[identity]\nkey_source = "tpm"\n', "identity.key_source", "must be one of"),
        ('[identity]\notp_command = " "\n', "identity.otp_command", "OTP tool"),
    ],
)
def test_bad_identity_settings_are_named(text: str, field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.toml")
    assert info.value.field == field
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("text", "serves"),
    [
        ("[radio]\nsource = 'bleak'\n", True),  # on by default with the Pi's own Bluetooth
        ("[radio]\nsource = 'serial'\n", True),  # beside a co-processor, on the Pi's own adapter
        ("[radio]\nsource = 'simulated'\n", False),  # the demo: never BlueZ
        ("[radio]\nsource = 'simulated'\n[checkin]\nenabled = true\n", False),
        ("[radio]\nsource = 'bleak'\n[checkin]\nenabled = false\n", False),
    ],
)
def test_the_iphone_check_in_is_served_with_a_real_radio_unless_disabled(
    text: str, serves: bool
) -> None:
    from edge.adapters.bluez_gatt import BluezCheckinService
    from edge.app import build_checkin_service

    config = parse_config(text + "[radio.bleak]\nadapter = 'hci1'\n")
    assert config.serves_checkin is serves
    service = build_checkin_service(config, lambda: bytes(16), _never_called)
    assert isinstance(service, BluezCheckinService) is serves
    if service is not None:
        assert service.adapter == "hci1"  # the bleak radio's adapter


async def _never_called(payload: bytes, central: str, link_rssi_dbm: float | None) -> Any:
    raise AssertionError("no write in a config test")
