"""Identity keys sealed at rest: AES-256-GCM under the bridge's data key, bound to the device's id.

The loyalty database holds every enrolled device's Eddystone-EID identity key; whoever copies the file
(a backup, a stolen disk) would otherwise track every member. Each key is sealed with the data key (an
envelope key kept outside the database: a 0600 file or the environment), with the device's id as
associated data, so a sealed key moved to another device's row does not open. A check value sealed
the same way tells a wrong data key at start-up, before any roster is built from it. Pure: the caller
injects the randomness for nonces.

Sealed layout (45 bytes): version 0x01 ‖ 12-byte nonce ‖ AES-GCM(16-byte key) ‖ 16-byte tag.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_BYTES = 32  # AES-256
SEAL_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
IDENTITY_KEY_BYTES = 16
SEALED_KEY_BYTES = 1 + NONCE_BYTES + IDENTITY_KEY_BYTES + TAG_BYTES
_AAD_PREFIX = b"threshold identity key v1\x00"
_CHECK_AAD = b"threshold data key check v1"
_CHECK_PLAIN = bytes(IDENTITY_KEY_BYTES)

RandomBytes = Callable[[int], bytes]


class SealError(ValueError):
    """A data key or a sealed key is wrong; `.reason` says how (no key material in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_data_key(text: str) -> bytes:
    """A data key written as 64 hex digits or as base64 of 32 bytes; SealError otherwise."""
    text = text.strip()
    if len(text) == 2 * DATA_KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != DATA_KEY_BYTES:
        raise SealError(f"a data key is {DATA_KEY_BYTES} bytes as 64 hex digits or base64")
    return key


def data_key_text(key: bytes) -> str:
    """How a data key is written to its file: 64 hex digits."""
    return key.hex()


class IdentityKeySealer:
    """Seals and opens identity keys under one data key."""

    def __init__(self, data_key: bytes, random_bytes: RandomBytes) -> None:
        if len(data_key) != DATA_KEY_BYTES:
            raise SealError(f"a data key is {DATA_KEY_BYTES} bytes, got {len(data_key)}")
        self._aead = AESGCM(data_key)
        self._random_bytes = random_bytes

    def seal(self, device_id: str, identity_key: bytes) -> bytes:
        if len(identity_key) != IDENTITY_KEY_BYTES:
            raise SealError(f"an identity key is {IDENTITY_KEY_BYTES} bytes")
        return self._seal(identity_key, _AAD_PREFIX + device_id.encode())

    def open(self, device_id: str, sealed: bytes) -> bytes:
        """The identity key sealed for `device_id`; SealError if the data key or the id is wrong,
        or the bytes were changed."""
        return self._open(sealed, _AAD_PREFIX + device_id.encode(), f"device {device_id}")

    def check_value(self) -> bytes:
        """A value that only this data key opens, stored beside the sealed keys."""
        return self._seal(_CHECK_PLAIN, _CHECK_AAD)

    def matches(self, check_value: bytes) -> bool:
        """Whether `check_value` was made with this data key."""
        try:
            plain = self._open(check_value, _CHECK_AAD, "the data key check")
        except SealError:
            return False
        return hmac.compare_digest(plain, _CHECK_PLAIN)

    def _seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = self._random_bytes(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise SealError("the random source gave a short nonce")
        return bytes([SEAL_VERSION]) + nonce + self._aead.encrypt(nonce, plain, aad)

    def _open(self, sealed: bytes, aad: bytes, what: str) -> bytes:
        if len(sealed) != SEALED_KEY_BYTES or sealed[0] != SEAL_VERSION:
            raise SealError(f"{what}: not a sealed key of version {SEAL_VERSION}")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise SealError(f"{what}: the sealed key does not open with this data key") from None
