"""Advertising-data (AD) parsing and encoding for the frames Threshold meets at a store door.

Radio bytes are hostile: every length is bounds-checked and nothing raises out of `classify_advert`.
References: Bluetooth Core Supplement Part A §1 (AD structures), Eddystone protocol specification
(github.com/google/eddystone/blob/master/protocol-specification.md), Apple iBeacon spec.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

# Bluetooth Assigned Numbers, "Common Data Types".
AD_TYPE_FLAGS = 0x01
AD_TYPE_COMPLETE_16BIT_UUIDS = 0x03
AD_TYPE_COMPLETE_LOCAL_NAME = 0x09
AD_TYPE_TX_POWER = 0x0A
AD_TYPE_SERVICE_DATA_16BIT = 0x16
AD_TYPE_COMPLETE_128BIT_UUIDS = 0x07
AD_TYPE_SERVICE_DATA_128BIT = 0x21
AD_TYPE_MANUFACTURER_DATA = 0xFF
BLUETOOTH_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"

# Eddystone protocol specification: service UUID 0xFEAA, frame type in the first byte.
EDDYSTONE_UUID16 = 0xFEAA
FRAME_TYPE_UID = 0x00
FRAME_TYPE_URL = 0x10
FRAME_TYPE_TLM = 0x20
FRAME_TYPE_EID = 0x30
EID_FRAME_LEN = 10  # frame type, ranging data (int8 dBm at 0 m), 8-byte EID

# Company identifiers (Bluetooth Assigned Numbers).
COMPANY_APPLE = 0x004C
COMPANY_MICROSOFT = 0x0006
IBEACON_PREFIX = b"\x02\x15"  # Apple iBeacon: type 0x02, length 0x15
IBEACON_PAYLOAD_LEN = 23  # prefix (2) + UUID (16) + major (2) + minor (2) + measured power (1)

# Google Fast Pair announces on service UUID 0xFE2C.
FAST_PAIR_UUID16 = 0xFE2C

MAX_ADV_LEN = 255  # extended advertising caps a single report's data; legacy adverts use 31


class FrameKind(enum.Enum):
    """What an advert is, as far as the gateway cares."""

    EDDYSTONE_EID = "eddystone_eid"
    EDDYSTONE_OTHER = "eddystone_other"
    IBEACON = "ibeacon"
    NOISE = "noise"  # Apple continuity, Microsoft CDP, Fast Pair and other traffic we ignore
    OTHER = "other"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class AdFields:
    """The AD structures of one advert that Threshold reads."""

    service_data: dict[int, bytes]
    manufacturer_data: dict[int, bytes]
    local_name: str | None
    tx_power_dbm: int | None


@dataclass(frozen=True, slots=True)
class Classified:
    """The outcome of classifying one advert; `eid` is set only for well-formed EID frames."""

    kind: FrameKind
    eid: bytes | None = None
    reason: str | None = None  # why MALFORMED, for counters and the installer's scan view


def parse_ad(payload: bytes) -> AdFields | str:
    """Parse AD structures; return the fields, or a reason string when the bytes break the format."""
    if len(payload) > MAX_ADV_LEN:
        return f"advert is {len(payload)} bytes, longer than {MAX_ADV_LEN}"
    service_data: dict[int, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    local_name: str | None = None
    tx_power: int | None = None
    i = 0
    end = len(payload)
    while i < end:
        length = payload[i]
        if length == 0:  # Core Supplement A §1: a zero length ends the significant part (padding)
            break
        if i + 1 + length > end:
            return f"AD structure at byte {i} claims {length} bytes, only {end - i - 1} remain"
        ad_type = payload[i + 1]
        data = payload[i + 2 : i + 1 + length]
        if ad_type == AD_TYPE_SERVICE_DATA_16BIT:
            if len(data) < 2:
                return f"16-bit service data at byte {i} is {len(data)} bytes, needs a 2-byte UUID"
            service_data[data[0] | (data[1] << 8)] = data[2:]
        elif ad_type == AD_TYPE_MANUFACTURER_DATA:
            if len(data) < 2:
                return f"manufacturer data at byte {i} is {len(data)} bytes, needs a company id"
            manufacturer_data[data[0] | (data[1] << 8)] = data[2:]
        elif ad_type == AD_TYPE_COMPLETE_LOCAL_NAME:
            local_name = data.decode("utf-8", "replace")
        elif ad_type == AD_TYPE_TX_POWER:
            if len(data) != 1:
                return f"TX power at byte {i} is {len(data)} bytes, expected 1"
            tx_power = struct.unpack("b", data)[0]
        i += 1 + length
    return AdFields(service_data, manufacturer_data, local_name, tx_power)


def classify_eddystone(frame: bytes) -> Classified:
    """Classify the service data of UUID 0xFEAA."""
    if not frame:
        return Classified(FrameKind.MALFORMED, reason="Eddystone service data is empty")
    if frame[0] == FRAME_TYPE_EID:
        if len(frame) != EID_FRAME_LEN:
            return Classified(
                FrameKind.MALFORMED,
                reason=f"Eddystone-EID frame is {len(frame)} bytes, expected {EID_FRAME_LEN}",
            )
        return Classified(FrameKind.EDDYSTONE_EID, eid=bytes(frame[2:10]))
    return Classified(FrameKind.EDDYSTONE_OTHER)


def classify_fields(fields: AdFields) -> Classified:
    """Classify parsed AD fields."""
    eddystone = fields.service_data.get(EDDYSTONE_UUID16)
    if eddystone is not None:
        return classify_eddystone(eddystone)
    apple = fields.manufacturer_data.get(COMPANY_APPLE)
    if apple is not None and apple[:2] == IBEACON_PREFIX:
        if len(apple) != IBEACON_PAYLOAD_LEN:
            return Classified(
                FrameKind.MALFORMED,
                reason=f"iBeacon payload is {len(apple)} bytes, expected {IBEACON_PAYLOAD_LEN}",
            )
        return Classified(FrameKind.IBEACON)
    if apple is not None or COMPANY_MICROSOFT in fields.manufacturer_data:
        return Classified(FrameKind.NOISE)
    if FAST_PAIR_UUID16 in fields.service_data:
        return Classified(FrameKind.NOISE)
    return Classified(FrameKind.OTHER)


def classify_advert(payload: bytes) -> Classified:
    """Classify raw AD bytes; never raises."""
    fields = parse_ad(payload)
    if isinstance(fields, str):
        return Classified(FrameKind.MALFORMED, reason=fields)
    return classify_fields(fields)


# --- Encoding: what the simulator, and later the gateway's own iBeacon, broadcast. ---


def ad_structure(ad_type: int, data: bytes) -> bytes:
    """One AD structure: length, type, data."""
    if len(data) > 254:
        raise ValueError(f"AD data is {len(data)} bytes, at most 254 fit")
    return bytes((len(data) + 1, ad_type)) + data


FLAGS_LE_GENERAL = ad_structure(AD_TYPE_FLAGS, b"\x06")


def eddystone_advert(frame: bytes) -> bytes:
    """A connectable-less Eddystone advert carrying `frame` as 0xFEAA service data."""
    uuid = EDDYSTONE_UUID16.to_bytes(2, "little")
    return (
        FLAGS_LE_GENERAL
        + ad_structure(AD_TYPE_COMPLETE_16BIT_UUIDS, uuid)
        + ad_structure(AD_TYPE_SERVICE_DATA_16BIT, uuid + frame)
    )


def eddystone_eid_advert(eid: bytes, ranging_dbm: int = -20) -> bytes:
    """An Eddystone-EID advert."""
    if len(eid) != 8:
        raise ValueError(f"an EID is 8 bytes, got {len(eid)}")
    return eddystone_advert(bytes((FRAME_TYPE_EID,)) + struct.pack("b", ranging_dbm) + eid)


def eddystone_uid_advert(namespace: bytes, instance: bytes, ranging_dbm: int = -20) -> bytes:
    """An Eddystone-UID advert (10-byte namespace, 6-byte instance, 2 reserved bytes)."""
    return eddystone_advert(
        bytes((FRAME_TYPE_UID,)) + struct.pack("b", ranging_dbm) + namespace + instance + b"\0\0"
    )


def manufacturer_advert(company_id: int, data: bytes, flags: bool = True) -> bytes:
    """An advert with one manufacturer-specific data structure."""
    body = ad_structure(AD_TYPE_MANUFACTURER_DATA, company_id.to_bytes(2, "little") + data)
    return (FLAGS_LE_GENERAL + body) if flags else body


def ibeacon_advert(uuid: bytes, major: int, minor: int, measured_dbm: int = -59) -> bytes:
    """An Apple iBeacon advert."""
    data = IBEACON_PREFIX + uuid + struct.pack(">HHb", major, minor, measured_dbm)
    return manufacturer_advert(COMPANY_APPLE, data)


def fast_pair_advert(model_id: bytes) -> bytes:
    """A Google Fast Pair discoverable advert (3-byte model id)."""
    uuid = FAST_PAIR_UUID16.to_bytes(2, "little")
    return FLAGS_LE_GENERAL + ad_structure(AD_TYPE_SERVICE_DATA_16BIT, uuid + model_id)


def _uuid16(uuid: str) -> int | None:
    """The 16-bit short form of a UUID on the Bluetooth base UUID, else None."""
    u = uuid.lower()
    if len(u) == 36 and u.startswith("0000") and u.endswith(BLUETOOTH_BASE_UUID_SUFFIX):
        try:
            return int(u[4:8], 16)
        except ValueError:
            return None
    return None


def _uuid128_le(uuid: str) -> bytes:
    try:
        raw = bytes.fromhex(uuid.replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise ValueError(f"not a 128-bit UUID: {uuid!r}")
    return raw[::-1]  # AD structures carry UUIDs little-endian


def encode_ad_fields(
    *,
    manufacturer_data: dict[int, bytes] | None = None,
    service_data: dict[str, bytes] | None = None,
    service_uuids: list[str] | None = None,
    local_name: str | None = None,
    tx_power_dbm: int | None = None,
) -> bytes:
    """AD bytes from the fields a host stack reports (bleak's AdvertisementData, a capture line).

    BlueZ hands over parsed fields, not the raw report; re-encoding them lets every radio feed the
    pipeline the same bytes. Service UUIDs on the Bluetooth base UUID use the 16-bit forms.
    Raises ValueError on a malformed UUID or an oversized field.
    """
    out = bytearray()
    uuids16 = [u16 for u in service_uuids or () if (u16 := _uuid16(u)) is not None]
    uuids128 = [u for u in service_uuids or () if _uuid16(u) is None]
    if uuids16:
        out += ad_structure(
            AD_TYPE_COMPLETE_16BIT_UUIDS, b"".join(u.to_bytes(2, "little") for u in uuids16)
        )
    if uuids128:
        out += ad_structure(AD_TYPE_COMPLETE_128BIT_UUIDS, b"".join(map(_uuid128_le, uuids128)))
    for uuid, data in (service_data or {}).items():
        u16 = _uuid16(uuid)
        if u16 is not None:
            out += ad_structure(AD_TYPE_SERVICE_DATA_16BIT, u16.to_bytes(2, "little") + data)
        else:
            out += ad_structure(AD_TYPE_SERVICE_DATA_128BIT, _uuid128_le(uuid) + data)
    for company, data in (manufacturer_data or {}).items():
        if not 0 <= company <= 0xFFFF:
            raise ValueError(f"company id {company} is not 16-bit")
        out += ad_structure(AD_TYPE_MANUFACTURER_DATA, company.to_bytes(2, "little") + data)
    if local_name is not None:
        out += ad_structure(AD_TYPE_COMPLETE_LOCAL_NAME, local_name.encode("utf-8")[:248])
    if tx_power_dbm is not None:
        out += ad_structure(AD_TYPE_TX_POWER, struct.pack("b", max(-128, min(127, tx_power_dbm))))
    return bytes(out)
