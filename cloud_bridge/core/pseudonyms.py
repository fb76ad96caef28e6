"""Per-store pseudonyms: how members and devices appear to gateways and on the wire.

A gateway never learns a member's or a device's id in the loyalty records. Each store sees every
member and device under a pseudonym of its own: 32 hex digits that look random, differ from
store to store (two stores' events cannot be linked by them), and stay the same within a store (so
a member's cooldowns work there). Only the bridge, which holds the chain's pseudonym secret, can
compute one or map one back.

The pseudonym is a keyed pseudorandom permutation, not a truncated HMAC: AES-256 of one 16-byte
block holding the record's serial number, under a key derived per store (HKDF-SHA256 of the secret,
the chain and the store). To anyone without the key it is as opaque and unlinkable as a keyed hash;
the bridge maps it back by decrypting, so it needs no table of stores × members (at 500 stores and
500,000 members such a table would hold half a billion rows). The block's seven zero bytes are
checked on the way back, so a forged or garbled pseudonym is refused, not mapped to a stranger.

Pure: no I/O; the secret and the serials come from the records.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.core.bundle import FullRoster, RosterChange, RosterDelta
from edge.core.wire import RosterDevice

SECRET_BYTES = 32
PSEUDONYM_CHARS = 32  # 16 bytes in lowercase hex (bytes.hex is C; base64.b32encode is Python)
_BLOCK = struct.Struct(">B7xQ")  # kind, seven zero bytes, serial
_SERIAL_MAX = 2**64 - 1


class Kind(IntEnum):
    """What a pseudonym stands for: the kind is inside the block, so a device's cannot pass as a
    member's."""

    DEVICE = 1
    MEMBER = 2


def store_key(secret: bytes, chain: str, store: str) -> bytes:
    """The AES-256 key for one store's pseudonyms."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a pseudonym secret is {SECRET_BYTES} bytes, got {len(secret)}")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"threshold/v1 pseudonym {chain}/{store}".encode(),
    ).derive(secret)


class StorePseudonyms:
    """One store's pseudonyms, both ways."""

    def __init__(self, key: bytes) -> None:
        # ECB on single, distinct blocks is exactly a keyed permutation of each block: no block is
        # ever repeated under this key with a different meaning, so ECB's weakness does not apply.
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())

    def encode(self, kind: Kind, serials: Sequence[int]) -> list[str]:
        """The pseudonyms of `serials` (one call, one pass of AES over all of them)."""
        for serial in serials:
            if not 0 < serial <= _SERIAL_MAX:
                raise ValueError(f"serial {serial} is out of range")
        encryptor = self._cipher.encryptor()
        data = encryptor.update(b"".join(_BLOCK.pack(kind, s) for s in serials))
        text = data.hex()
        return [text[i : i + 32] for i in range(0, len(text), 32)]

    def one(self, kind: Kind, serial: int) -> str:
        return self.encode(kind, [serial])[0]

    def decode(self, kind: Kind, pseudonym: str) -> int | None:
        """The serial behind `pseudonym`, or None if it is not one of this store's of that kind."""
        if len(pseudonym) != PSEUDONYM_CHARS:
            return None
        try:
            block = bytes.fromhex(pseudonym)
        except ValueError:
            return None
        if block.hex() != pseudonym:
            return None  # a second spelling (upper case, spaces): one member, one pseudonym
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(block)
        found, serial = _BLOCK.unpack(plain)
        if found != kind or plain[1:8] != bytes(7) or serial == 0:
            return None
        return int(serial)


@dataclass(frozen=True, slots=True)
class Serials:
    """The serial number of every device and member in a roster, by their ids in the records."""

    devices: Mapping[str, int]
    members: Mapping[str, int]


def pseudonymize(change: RosterChange, serials: Serials, store: StorePseudonyms) -> RosterChange:
    """`change` (in the records' ids) as one store's gateways get it: every id a pseudonym.

    KeyError if a device or member has no serial (the records and the roster disagree).
    """

    def devices(items: Iterable[RosterDevice]) -> tuple[RosterDevice, ...]:
        items = list(items)
        refs = store.encode(Kind.DEVICE, [serials.devices[d.ref] for d in items])
        members = store.encode(Kind.MEMBER, [serials.members[d.member] for d in items])
        out = [  # kind and preferences travel as they are: no id in them
            dataclasses.replace(d, ref=r, member=m)
            for d, r, m in zip(items, refs, members, strict=True)
        ]
        # Sorted by pseudonym: the order says nothing about the records' ids.
        return tuple(sorted(out, key=lambda d: d.ref))

    if isinstance(change, FullRoster):
        return FullRoster(devices(change.devices))
    removed = store.encode(Kind.DEVICE, [serials.devices[ref] for ref in change.remove])
    return RosterDelta(
        base_version=change.base_version,
        add=devices(change.add),
        remove=tuple(sorted(removed)),
        rotate=devices(change.rotate),
    )
