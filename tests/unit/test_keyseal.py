"""Sealing identity keys under the data key: round trip, binding to the device, wrong keys."""

from __future__ import annotations

import base64
import os

import pytest

from cloud_bridge.core.keyseal import (
    SEALED_KEY_BYTES,
    IdentityKeySealer,
    SealError,
    data_key_text,
    parse_data_key,
)

DATA_KEY = bytes(range(32))
IDENTITY_KEY = bytes.fromhex("0102030405060708090a111213141516")


def sealer(key: bytes = DATA_KEY) -> IdentityKeySealer:
    return IdentityKeySealer(key, os.urandom)


def test_a_sealed_key_opens_for_its_device_and_holds_no_key_in_clear() -> None:
    sealed = sealer().seal("d-0001", IDENTITY_KEY)

    assert len(sealed) == SEALED_KEY_BYTES
    assert IDENTITY_KEY not in sealed
    assert sealer().open("d-0001", sealed) == IDENTITY_KEY
    assert sealer().seal("d-0001", IDENTITY_KEY) != sealed  # a fresh nonce each time


@pytest.mark.parametrize(
    "case", ["other device", "other data key", "flipped bit", "truncated", "other version"]
)
def test_a_sealed_key_does_not_open_when_anything_is_wrong(case: str) -> None:
    sealed = sealer().seal("d-0001", IDENTITY_KEY)
    device, key = "d-0001", DATA_KEY
    if case == "other device":
        device = "d-0002"
    elif case == "other data key":
        key = bytes(32)
    elif case == "flipped bit":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif case == "truncated":
        sealed = sealed[:-1]
    else:
        sealed = b"\x02" + sealed[1:]

    with pytest.raises(SealError) as caught:
        sealer(key).open(device, sealed)

    assert IDENTITY_KEY.hex() not in caught.value.reason


def test_the_check_value_tells_the_right_data_key_from_a_wrong_one() -> None:
    check = sealer().check_value()

    assert sealer().matches(check)
    assert not sealer(bytes(32)).matches(check)
    assert not sealer().matches(b"garbage")


@pytest.mark.parametrize(
    "text",
    [
        DATA_KEY.hex(),
        DATA_KEY.hex().upper(),
        base64.b64encode(DATA_KEY).decode(),
        " \n" + DATA_KEY.hex() + "\n",
    ],
)
def test_a_data_key_is_read_as_hex_or_base64(text: str) -> None:
    assert parse_data_key(text) == DATA_KEY


@pytest.mark.parametrize("text", ["", "00" * 16, "zz" * 32, base64.b64encode(bytes(31)).decode()])
def test_a_data_key_of_the_wrong_size_or_form_is_refused(text: str) -> None:
    with pytest.raises(SealError, match="32 bytes"):
        parse_data_key(text)


def test_a_data_key_is_written_as_hex() -> None:
    assert parse_data_key(data_key_text(DATA_KEY)) == DATA_KEY
