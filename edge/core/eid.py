"""Eddystone-EID: the rotating, privacy-preserving identifier enrolled devices broadcast.

Implements the "EID computation" of the Eddystone-EID specification
(github.com/google/eddystone/tree/master/eddystone-eid, "Ephemeral Identifier"):

- temporary key  TK  = AES-128(IK, 11 x 0x00 || 0xFF || 0x00 0x00 || counter[31:16])
- ephemeral id   EID = AES-128(TK, 11 x 0x00 || K || counter with its low K bits cleared)[:8]

The counter is Unix time in seconds, modulo 2**32; K is the rotation exponent (the EID changes every
2**K seconds).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

IDENTITY_KEY_LEN = 16
EID_LEN = 8
MIN_EXPONENT = 0
MAX_EXPONENT = 15  # spec: K is 0..15
COUNTER_MODULUS = 2**32


def counter_at(unix_s: float) -> int:
    """The EID counter for a Unix time in seconds (spec: seconds, mod 2**32)."""
    return int(unix_s) % COUNTER_MODULUS


def window_start(counter: int, exponent: int) -> int:
    """The counter with its low `exponent` bits cleared: the start of its rotation window."""
    return (counter >> exponent) << exponent


def _aes_block(key: bytes, blocks: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES128(key), modes.ECB()).encryptor()
    return encryptor.update(blocks)


def _tk_block(counter: int) -> bytes:
    return bytes(11) + b"\xff\x00\x00" + ((counter >> 16) & 0xFFFF).to_bytes(2, "big")


def _eid_block(counter: int, exponent: int) -> bytes:
    return bytes(11) + bytes((exponent,)) + window_start(counter, exponent).to_bytes(4, "big")


def check_key(identity_key: bytes, exponent: int) -> None:
    """Raise ValueError unless the key is 16 bytes and the exponent is 0..15."""
    if len(identity_key) != IDENTITY_KEY_LEN:
        raise ValueError(f"identity key must be {IDENTITY_KEY_LEN} bytes, got {len(identity_key)}")
    if not MIN_EXPONENT <= exponent <= MAX_EXPONENT:
        raise ValueError(f"rotation exponent must be 0..15, got {exponent}")


def temporary_key(identity_key: bytes, counter: int) -> bytes:
    """The temporary key for the 2**16-second epoch that holds `counter`."""
    return _aes_block(identity_key, _tk_block(counter))


def compute_eid(identity_key: bytes, exponent: int, counter: int) -> bytes:
    """The 8-byte EID a device with this key broadcasts at `counter` (seconds mod 2**32)."""
    check_key(identity_key, exponent)
    counter %= COUNTER_MODULUS
    return _aes_block(temporary_key(identity_key, counter), _eid_block(counter, exponent))[:EID_LEN]


def compute_eids(identity_key: bytes, exponent: int, counters: list[int]) -> list[bytes]:
    """EIDs for several counters, sharing temporary keys between counters of one epoch.

    The resolver calls this for the previous, current and next window of every enrolled device, so the
    cost per device is what bounds a roster rebuild: one AES context per distinct key.
    """
    check_key(identity_key, exponent)
    by_epoch: dict[int, list[int]] = {}
    for counter in counters:
        counter %= COUNTER_MODULUS
        by_epoch.setdefault(counter >> 16, []).append(counter)
    eids: dict[int, bytes] = {}
    ik_cipher = Cipher(algorithms.AES128(identity_key), modes.ECB()).encryptor()
    for epoch_counters in by_epoch.values():
        tk = ik_cipher.update(_tk_block(epoch_counters[0]))
        blocks = b"".join(_eid_block(c, exponent) for c in epoch_counters)
        out = _aes_block(tk, blocks)
        for i, counter in enumerate(epoch_counters):
            eids[counter] = out[i * 16 : i * 16 + EID_LEN]
    return [eids[c % COUNTER_MODULUS] for c in counters]
