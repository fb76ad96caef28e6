"""The beacon formats Threshold meets at a store door: constants, decoded frames, decoders, encoders.

Each decoder takes the bytes of one AD field (manufacturer data after the company id, or service data
after the 16-bit UUID) and returns a frozen frame, or a reason string saying what breaks the format.
No decoder raises on any input. `edge.core.frames` finds the field in an advert and picks the decoder.

Specs: Apple Proximity Beacon Specification R1 (iBeacon); AltBeacon Protocol Specification v1.0
(github.com/AltBeacon/spec); Eddystone (github.com/google/eddystone: protocol-specification.md,
eddystone-uid, eddystone-url, eddystone-tlm/tlm-plain.md and tlm-encrypted.md, eddystone-eid);
docs/beacons.md for the shopper app's frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

# Company identifiers (Bluetooth Assigned Numbers, "Company Identifiers").
COMPANY_MICROSOFT = 0x0006
COMPANY_APPLE = 0x004C
# Reserved by the Bluetooth SIG for internal use and testing. The app frame uses it until Threshold has
# a registered company id or 16-bit service UUID; docs/beacons.md says what changes then.
COMPANY_TESTING = 0xFFFF

# Apple iBeacon: manufacturer data of 0x004C starting with type 0x02, length 0x15.
IBEACON_PREFIX = b"\x02\x15"
IBEACON_PAYLOAD_LEN = 23  # prefix (2) + UUID (16) + major (2) + minor (2) + measured power (1)

# AltBeacon spec v1.0: MFG ID (any company), BEACON CODE 0xBEAC sent as BE AC, 20-byte BEACON ID,
# REFERENCE RSSI (int8, dBm at 1 m), MFG RESERVED (1 byte).
ALTBEACON_CODE = b"\xbe\xac"
ALTBEACON_PAYLOAD_LEN = 24  # code (2) + beacon id (20) + reference RSSI (1) + reserved (1)

# Eddystone protocol specification: service UUID 0xFEAA, the frame type in the first byte.
EDDYSTONE_UUID16 = 0xFEAA
FRAME_TYPE_UID = 0x00
FRAME_TYPE_URL = 0x10
FRAME_TYPE_TLM = 0x20
FRAME_TYPE_EID = 0x30
# eddystone-uid: frame type, ranging data, 10-byte namespace, 6-byte instance, 2 RFU bytes. "Existing
# UID implementations that truncate the frame to omit the RFU bytes": both lengths are accepted.
UID_FRAME_LEN = 20
UID_FRAME_LEN_NO_RFU = 18
# eddystone-url: frame type, TX power at 0 m, scheme prefix, then 0-17 bytes of encoded URL.
URL_FRAME_MIN_LEN = 3
URL_FRAME_MAX_LEN = 20
URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
URL_EXPANSIONS = (
    ".com/",
    ".org/",
    ".edu/",
    ".net/",
    ".info/",
    ".biz/",
    ".gov/",
    ".com",
    ".org",
    ".edu",
    ".net",
    ".info",
    ".biz",
    ".gov",
)
# eddystone-tlm: version 0x00 is plain telemetry, 0x01 encrypted (eTLM).
TLM_VERSION_PLAIN = 0x00
TLM_VERSION_ENCRYPTED = 0x01
TLM_PLAIN_LEN = 14  # type, version, VBATT (2), TEMP (2), ADV_CNT (4), SEC_CNT (4)
TLM_ENCRYPTED_LEN = 18  # type, version, ETLM (12), SALT (2), MIC (2)
TLM_TEMPERATURE_UNSUPPORTED = 0x8000  # tlm-plain.md: "If not supported the value should be 0x8000"
EID_FRAME_LEN = 10  # frame type, ranging data (int8 dBm at 0 m), 8-byte EID
EID_LEN = 8

# Google Fast Pair announces on service UUID 0xFE2C.
FAST_PAIR_UUID16 = 0xFE2C

# The shopper app's frame (docs/beacons.md): manufacturer data of COMPANY_TESTING.
APP_MAGIC = b"TH"
APP_FRAME_VERSION = 1
APP_FRAME_LEN = 12  # magic (2) + version (1) + flags (1) + EID (8), after the company id


@dataclass(frozen=True, slots=True)
class IBeacon:
    """An Apple iBeacon: proximity UUID, major, minor and the calibrated RSSI at 1 m."""

    uuid: bytes  # 16 bytes, in broadcast (big-endian) order
    major: int
    minor: int
    measured_power_dbm: int

    @property
    def uuid_text(self) -> str:
        """The proximity UUID in its usual 8-4-4-4-12 form, lowercase."""
        h = self.uuid.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class AltBeacon:
    """An AltBeacon: the advertiser's company id, a 20-byte beacon id and the reference RSSI at 1 m."""

    company_id: int
    beacon_id: bytes  # 20 bytes
    reference_rssi_dbm: int
    mfg_reserved: int


@dataclass(frozen=True, slots=True)
class EddystoneUid:
    """An Eddystone-UID: 10-byte namespace and 6-byte instance; ranging data is dBm at 0 m."""

    ranging_dbm: int
    namespace: bytes
    instance: bytes


@dataclass(frozen=True, slots=True)
class EddystoneUrl:
    """An Eddystone-URL, expanded to the full URL it stands for."""

    tx_power_dbm: int  # at 0 m
    url: str


@dataclass(frozen=True, slots=True)
class EddystoneTlm:
    """Plain Eddystone telemetry (version 0); None where the beacon does not support a field."""

    battery_mv: int | None
    temperature_c: float | None
    adv_count: int
    uptime_s: float  # SEC_CNT is in units of 0.1 s since power-on or reboot


@dataclass(frozen=True, slots=True)
class EddystoneEtlm:
    """Encrypted Eddystone telemetry (version 1): recognised, not decrypted (it needs the EID key)."""

    etlm: bytes  # 12 bytes of AES-EAX ciphertext
    salt: int
    mic: int


@dataclass(frozen=True, slots=True)
class EddystoneEid:
    """An Eddystone-EID: the 8-byte ephemeral identifier of the current rotation window."""

    ranging_dbm: int
    eid: bytes


@dataclass(frozen=True, slots=True)
class AppFrame:
    """The shopper app's frame: the same 8-byte EID as Eddystone-EID, in manufacturer data."""

    version: int
    flags: int  # reserved: senders set 0, receivers ignore every bit
    eid: bytes


class NoiseSource(enum.Enum):
    """Traffic recognised so it can be counted and ignored; never decoded."""

    APPLE_CONTINUITY = "apple_continuity"
    MICROSOFT_CDP = "microsoft_cdp"
    GOOGLE_FAST_PAIR = "google_fast_pair"


@dataclass(frozen=True, slots=True)
class Noise:
    """An advert from a phone, laptop or accessory that is not a beacon: who sent it, nothing more."""

    source: NoiseSource


NOISE_APPLE = Noise(NoiseSource.APPLE_CONTINUITY)
NOISE_MICROSOFT = Noise(NoiseSource.MICROSOFT_CDP)
NOISE_FAST_PAIR = Noise(NoiseSource.GOOGLE_FAST_PAIR)

Frame: TypeAlias = (
    IBeacon
    | AltBeacon
    | EddystoneUid
    | EddystoneUrl
    | EddystoneTlm
    | EddystoneEtlm
    | EddystoneEid
    | AppFrame
    | Noise
)


def _int8(value: int) -> int:
    return value - 256 if value >= 128 else value


# --- Decoders: the bytes of one AD field in, a frame or the reason it is broken out. ---


def decode_ibeacon(data: bytes) -> IBeacon | str:
    """Decode Apple manufacturer data (after the company id) that starts with IBEACON_PREFIX."""
    if len(data) != IBEACON_PAYLOAD_LEN:
        return f"iBeacon payload is {len(data)} bytes, expected {IBEACON_PAYLOAD_LEN}"
    return IBeacon(
        uuid=data[2:18],
        major=(data[18] << 8) | data[19],
        minor=(data[20] << 8) | data[21],
        measured_power_dbm=_int8(data[22]),
    )


def decode_altbeacon(company_id: int, data: bytes) -> AltBeacon | str:
    """Decode manufacturer data (after the company id) that starts with ALTBEACON_CODE."""
    if len(data) != ALTBEACON_PAYLOAD_LEN:
        return f"AltBeacon payload is {len(data)} bytes, expected {ALTBEACON_PAYLOAD_LEN}"
    return AltBeacon(
        company_id=company_id,
        beacon_id=data[2:22],
        reference_rssi_dbm=_int8(data[22]),
        mfg_reserved=data[23],
    )


def decode_eddystone_uid(frame: bytes) -> EddystoneUid | str:
    """Decode 0xFEAA service data of frame type 0x00."""
    if len(frame) not in (UID_FRAME_LEN, UID_FRAME_LEN_NO_RFU):
        return (
            f"Eddystone-UID frame is {len(frame)} bytes, expected {UID_FRAME_LEN} "
            f"(or {UID_FRAME_LEN_NO_RFU} without the reserved bytes)"
        )
    # The RFU bytes "must be 0x00"; a beacon that sets them is still identifiable, so they are ignored.
    return EddystoneUid(ranging_dbm=_int8(frame[1]), namespace=frame[2:12], instance=frame[12:18])


# Each encoded URL byte: an expansion (0x00-0x0D), itself (printable ASCII 0x21-0x7E), or None
# (0x0E-0x20 and 0x7F-0xFF are "Reserved for Future Use").
_URL_BYTES: tuple[str | None, ...] = tuple(
    URL_EXPANSIONS[b] if b < len(URL_EXPANSIONS) else (chr(b) if 0x21 <= b <= 0x7E else None)
    for b in range(256)
)


def decode_eddystone_url(frame: bytes) -> EddystoneUrl | str:
    """Decode 0xFEAA service data of frame type 0x10, expanding the scheme and the expansion codes."""
    if not URL_FRAME_MIN_LEN <= len(frame) <= URL_FRAME_MAX_LEN:
        return (
            f"Eddystone-URL frame is {len(frame)} bytes, expected "
            f"{URL_FRAME_MIN_LEN}-{URL_FRAME_MAX_LEN}"
        )
    scheme = frame[2]
    if scheme >= len(URL_SCHEMES):
        return f"Eddystone-URL scheme prefix 0x{scheme:02x} is reserved (0x00-0x03 are defined)"
    parts = [URL_SCHEMES[scheme]]
    for offset in range(3, len(frame)):
        text = _URL_BYTES[frame[offset]]
        if text is None:
            return f"Eddystone-URL byte 0x{frame[offset]:02x} at offset {offset} is a reserved code"
        parts.append(text)
    return EddystoneUrl(tx_power_dbm=_int8(frame[1]), url="".join(parts))


def decode_eddystone_tlm(frame: bytes) -> EddystoneTlm | EddystoneEtlm | str:
    """Decode 0xFEAA service data of frame type 0x20: plain TLM (version 0) or eTLM (version 1)."""
    if len(frame) < 2:
        return f"Eddystone-TLM frame is {len(frame)} bytes, needs a version byte"
    version = frame[1]
    if version == TLM_VERSION_PLAIN:
        if len(frame) != TLM_PLAIN_LEN:
            return f"Eddystone-TLM frame is {len(frame)} bytes, expected {TLM_PLAIN_LEN}"
        battery = int.from_bytes(frame[2:4], "big")
        raw_temp = int.from_bytes(frame[4:6], "big")
        temperature = None
        if raw_temp != TLM_TEMPERATURE_UNSUPPORTED:  # signed 8.8 fixed point
            temperature = (raw_temp - 0x10000 if raw_temp & 0x8000 else raw_temp) / 256.0
        return EddystoneTlm(
            battery_mv=battery or None,  # "If not supported ... the value should be zeroed"
            temperature_c=temperature,
            adv_count=int.from_bytes(frame[6:10], "big"),
            uptime_s=int.from_bytes(frame[10:14], "big") / 10.0,
        )
    if version == TLM_VERSION_ENCRYPTED:
        if len(frame) != TLM_ENCRYPTED_LEN:
            return f"Eddystone-eTLM frame is {len(frame)} bytes, expected {TLM_ENCRYPTED_LEN}"
        return EddystoneEtlm(
            etlm=frame[2:14],
            salt=int.from_bytes(frame[14:16], "big"),
            mic=int.from_bytes(frame[16:18], "big"),
        )
    return f"Eddystone-TLM version 0x{version:02x} is unknown (0x00 plain, 0x01 encrypted)"


def decode_eddystone_eid(frame: bytes) -> EddystoneEid | str:
    """Decode 0xFEAA service data of frame type 0x30."""
    if len(frame) != EID_FRAME_LEN:
        return f"Eddystone-EID frame is {len(frame)} bytes, expected {EID_FRAME_LEN}"
    return EddystoneEid(ranging_dbm=_int8(frame[1]), eid=frame[2:10])


def decode_app_frame(data: bytes) -> AppFrame | str:
    """Decode COMPANY_TESTING manufacturer data (after the company id) that starts with APP_MAGIC."""
    if len(data) < 3:
        return f"app frame is {len(data)} bytes, needs a version byte"
    version = data[2]
    if version != APP_FRAME_VERSION:
        return f"app frame version {version} is not supported (this gateway reads version 1)"
    if len(data) != APP_FRAME_LEN:
        return f"app frame is {len(data)} bytes, expected {APP_FRAME_LEN}"
    return AppFrame(version=version, flags=data[3], eid=data[4:12])


# --- Encoders: the inverse of each decoder, for the simulator, tests and the app's reference. ---


def _pack_int8(value: int) -> int:
    if not -128 <= value <= 127:
        raise ValueError(f"{value} does not fit a signed byte")
    return value & 0xFF


def encode_ibeacon(uuid: bytes, major: int, minor: int, measured_dbm: int = -59) -> bytes:
    """iBeacon manufacturer data (after the company id)."""
    if len(uuid) != 16:
        raise ValueError(f"an iBeacon UUID is 16 bytes, got {len(uuid)}")
    return (
        IBEACON_PREFIX
        + uuid
        + major.to_bytes(2, "big")
        + minor.to_bytes(2, "big")
        + bytes((_pack_int8(measured_dbm),))
    )


def encode_altbeacon(beacon_id: bytes, reference_rssi_dbm: int = -59, reserved: int = 0) -> bytes:
    """AltBeacon manufacturer data (after the company id)."""
    if len(beacon_id) != 20:
        raise ValueError(f"an AltBeacon id is 20 bytes, got {len(beacon_id)}")
    return ALTBEACON_CODE + beacon_id + bytes((_pack_int8(reference_rssi_dbm), reserved))


def encode_eddystone_url(url: str, tx_power_dbm: int = -20) -> bytes:
    """An Eddystone-URL frame for `url`, using the longest scheme and expansions that match.

    Raises ValueError when the scheme is not http(s) or the encoding exceeds 17 bytes.
    """
    for scheme in sorted(range(len(URL_SCHEMES)), key=lambda i: -len(URL_SCHEMES[i])):
        prefix = URL_SCHEMES[scheme]
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            break
    else:
        raise ValueError(f"URL {url!r} does not start with one of {URL_SCHEMES}")
    by_length = sorted(enumerate(URL_EXPANSIONS), key=lambda p: -len(p[1]))
    out = bytearray((FRAME_TYPE_URL, _pack_int8(tx_power_dbm), scheme))
    i = 0
    while i < len(rest):
        for code, text in by_length:
            if rest.startswith(text, i):
                out.append(code)
                i += len(text)
                break
        else:
            char = ord(rest[i])
            if not 0x21 <= char <= 0x7E:
                raise ValueError(f"URL {url!r} has a character Eddystone-URL cannot carry")
            out.append(char)
            i += 1
    if len(out) > URL_FRAME_MAX_LEN:
        raise ValueError(f"URL {url!r} encodes to {len(out) - 3} bytes, at most 17 fit")
    return bytes(out)


def encode_eddystone_tlm(
    battery_mv: int | None, temperature_c: float | None, adv_count: int, uptime_s: float
) -> bytes:
    """A plain (version 0) Eddystone-TLM frame."""
    temp = TLM_TEMPERATURE_UNSUPPORTED
    if temperature_c is not None:
        temp = round(temperature_c * 256) & 0xFFFF  # signed 8.8 fixed point, two's complement
    return (
        bytes((FRAME_TYPE_TLM, TLM_VERSION_PLAIN))
        + (battery_mv or 0).to_bytes(2, "big")
        + temp.to_bytes(2, "big")
        + adv_count.to_bytes(4, "big")
        + round(uptime_s * 10).to_bytes(4, "big")
    )


def encode_eddystone_etlm(etlm: bytes, salt: int, mic: int) -> bytes:
    """An encrypted (version 1) Eddystone-TLM frame from already-encrypted telemetry."""
    if len(etlm) != 12:
        raise ValueError(f"eTLM ciphertext is 12 bytes, got {len(etlm)}")
    return (
        bytes((FRAME_TYPE_TLM, TLM_VERSION_ENCRYPTED))
        + etlm
        + salt.to_bytes(2, "big")
        + mic.to_bytes(2, "big")
    )


def encode_app_frame(eid: bytes, flags: int = 0) -> bytes:
    """The shopper app's manufacturer data (after the company id COMPANY_TESTING)."""
    if len(eid) != EID_LEN:
        raise ValueError(f"an EID is {EID_LEN} bytes, got {len(eid)}")
    return APP_MAGIC + bytes((APP_FRAME_VERSION, flags)) + eid
