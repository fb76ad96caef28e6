"""Looking for identity keys, MAC addresses and EIDs in what a gateway wrote (files, logs)."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edge.core.advert import RawAdvert
from edge.core.eid import compute_eid, counter_at
from edge.core.frames import classify_advert
from edge.sim.entrance import CheckinAttempt


@dataclass
class Needles:
    """Secrets in every form they could be written in: `binary` as is, `text` case-insensitively."""

    binary: dict[bytes, str] = field(default_factory=dict)
    text: dict[bytes, str] = field(default_factory=dict)  # lowercase ASCII

    def identity_key(self, key: bytes, what: str) -> None:
        self.binary[key] = f"{what} identity key (raw)"
        self.binary[base64.b64encode(key)] = f"{what} identity key (base64)"
        self.text[key.hex().encode()] = f"{what} identity key (hex)"
        # As Python prints bytes (aiosqlite logs its parameters so at DEBUG): b'\x01\x02...'.
        self.binary[repr(key)[2:-1].encode()] = f"{what} identity key (bytes repr)"

    def mac(self, address: str, what: str) -> None:
        octets = address.lower().split(":")
        self.binary[bytes.fromhex("".join(octets))] = f"{what} MAC {address} (raw)"
        for separator in (":", "-", "", "_"):  # "_": as in BlueZ's device paths
            self.text[separator.join(octets).encode()] = f"{what} MAC {address}"

    def eid(self, value: bytes, what: str) -> None:
        self.binary[value] = f"{what} EID {value.hex()} (raw)"
        self.binary[repr(value)[2:-1].encode()] = f"{what} EID {value.hex()} (bytes repr)"
        self.text[value.hex().encode()] = f"{what} EID {value.hex()} (hex)"

    def adverts(self, adverts: Iterable[RawAdvert], what: str) -> int:
        """Add the address and EID of every advert; return how many adverts there were."""
        count = 0
        for advert in adverts:
            count += 1
            self.mac(advert.address, what)
            value = classify_advert(advert.payload).eid
            if value is not None:
                self.eid(value, what)
        return count

    def checkins(self, attempts: Iterable[CheckinAttempt], what: str) -> int:
        """Add the central (BlueZ device path, the phone's address) and the EID of every iPhone
        check-in; return how many there were."""
        count = 0
        for attempt in attempts:
            count += 1
            address = attempt.central.rsplit("/dev_", 1)[1].replace("_", ":")
            self.mac(address, what)
            device = attempt.device
            self.eid(
                compute_eid(device.identity_key, device.exponent, counter_at(attempt.t_s)), what
            )
        return count


def _hits(data: bytes, needles: dict[bytes, str]) -> set[str]:
    # One pass over the data with a 4-byte prefix index: thousands of needles, megabytes of data.
    index: dict[bytes, list[bytes]] = {}
    for needle in needles:
        assert len(needle) >= 4, needle
        index.setdefault(needle[:4], []).append(needle)
    found: set[str] = set()
    for i in range(len(data) - 3):
        candidates = index.get(data[i : i + 4])
        if candidates:
            found.update(needles[n] for n in candidates if data.startswith(n, i))
    return found


def find_secrets(data: bytes, needles: Needles) -> set[str]:
    """Which needles occur in `data`."""
    return _hits(data, needles.binary) | _hits(data.lower(), needles.text)


def scan_files(paths: Iterable[Path], needles: Needles) -> list[str]:
    """'<what> in <file>' for every needle found in any of `paths`."""
    return sorted(
        f"{what} in {path.name}"
        for path in paths
        for what in find_secrets(path.read_bytes(), needles)
    )
