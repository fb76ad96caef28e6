"""firmware_config/profiles.py: the shipped co-processor profiles load, and mistakes name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_config.profiles import (
    DEFAULT_PATH,
    CoprocessorProfile,
    ProfileError,
    load_profiles,
    parse_profiles,
)

GOOD = """
schema_version = 1

[[firmware]]
name = "threshold-nrf52"
description = "nRF52840 dongle"
min_version = "1.2.0"
protocol = 1
link = "usb-cdc"
baudrate = 1000000
capabilities = ["passive", "active", "coded_phy"]
"""


def test_the_shipped_profiles_load() -> None:
    profiles = load_profiles()
    assert DEFAULT_PATH.name == "coprocessor_profiles.toml"
    nrf = profiles["threshold-nrf52"]
    assert nrf.min_version == (1, 2, 0)
    assert nrf.baudrate == 1_000_000
    assert nrf.protocol == 1
    assert {"passive", "active"} <= nrf.capabilities
    assert profiles["threshold-esp32"].baudrate == 115_200


def test_a_profile_parses_to_a_frozen_dataclass() -> None:
    assert parse_profiles(GOOD) == {
        "threshold-nrf52": CoprocessorProfile(
            name="threshold-nrf52",
            min_version=(1, 2, 0),
            protocol=1,
            link="usb-cdc",
            baudrate=1_000_000,
            capabilities=frozenset({"passive", "active", "coded_phy"}),
            description="nRF52840 dongle",
        )
    }
    assert parse_profiles(GOOD)["threshold-nrf52"].min_version_text == "1.2.0"


def test_description_is_optional() -> None:
    text = GOOD.replace('description = "nRF52840 dongle"\n', "")
    assert parse_profiles(text)["threshold-nrf52"].description == ""


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        ("baudrate = 1000000", "baud = 1000000", "firmware[0].baud", "unknown key"),
        ("schema_version = 1", "schema_version = 1\nvendor = 'x'", "vendor", "unknown key"),
        ("schema_version = 1", "schema_version = 2", "schema_version", "must be 1"),
        ("schema_version = 1", "", "schema_version", "must be 1"),
        ('min_version = "1.2.0"\n', "", "firmware[0].min_version", "is required"),
        ('min_version = "1.2.0"', 'min_version = "1.2"', "firmware[0].min_version", "MAJOR.MINOR"),
        ('min_version = "1.2.0"', "min_version = 1.2", "firmware[0].min_version", "a string"),
        ("protocol = 1", "protocol = 0", "firmware[0].protocol", ">= 1"),
        ("protocol = 1", "protocol = true", "firmware[0].protocol", "an integer"),
        ("baudrate = 1000000", "baudrate = 1000001", "firmware[0].baudrate", "must be one of"),
        ('link = "usb-cdc"', 'link = "usb"', "firmware[0].link", "must be one of"),
        ('name = "threshold-nrf52"', 'name = "has space"', "firmware[0].name", "HELLO fw="),
        ('"coded_phy"]', '"coded-phy"]', "firmware[0].capabilities[2]", "unknown capability"),
        ('["passive", "active", "coded_phy"]', '["active"]', "firmware[0].capabilities", "passive"),
        ("capabilities = [", "capabilities = 'passive' #", "firmware[0].capabilities", "an array"),
        ("[[firmware]]", "[firmware]", "firmware", "array of tables"),
        (
            "schema_version = 1",
            "schema_version = 1\n[[firmware]]\nname = 5",
            "firmware[0].name",
            "",
        ),
    ],
)
def test_mistakes_name_the_file_and_field(old: str, new: str, field: str, problem: str) -> None:
    assert old in GOOD
    with pytest.raises(ProfileError) as info:
        parse_profiles(GOOD.replace(old, new, 1), "profiles.toml")
    assert info.value.field == field
    assert problem in info.value.problem
    assert str(info.value).startswith(f"profiles.toml: [{field}]")


def test_a_firmware_listed_twice_is_an_error() -> None:
    twice = GOOD + GOOD[GOOD.index("[[firmware]]") :]
    with pytest.raises(
        ProfileError, match=r"\[firmware\[1\]\.name\] 'threshold-nrf52' is listed twice"
    ):
        parse_profiles(twice, "profiles.toml")


def test_invalid_toml_and_a_missing_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profiles("schema_version = ", "profiles.toml")
    missing = tmp_path / "nope.toml"
    with pytest.raises(ProfileError, match="cannot be read") as info:
        load_profiles(missing)
    assert info.value.path == str(missing)
