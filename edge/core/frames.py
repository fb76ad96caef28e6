"""Advertising-data (AD) parsing, frame classification and advert encoders.

Radio bytes are hostile: every length is bounds-checked and nothing raises out of `classify_advert`.
The beacon formats themselves (decoded frames, decoders) live in `edge.core.beacons`; this module finds
the AD field a format travels in and says what the advert is. References: Bluetooth Core Supplement
Part A §1 (AD structures); the specs listed in `edge.core.beacons`; docs/beacons.md.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from edge.core import beacons
from edge.core.beacons import ALTBEACON_CODE as ALTBEACON_CODE
from edge.core.beacons import APP_MAGIC as APP_MAGIC
from edge.core.beacons import COMPANY_APPLE as COMPANY_APPLE
from edge.core.beacons import COMPANY_MICROSOFT as COMPANY_MICROSOFT
from edge.core.beacons import COMPANY_TESTING as COMPANY_TESTING
from edge.core.beacons import EDDYSTONE_UUID16 as EDDYSTONE_UUID16
from edge.core.beacons import EID_FRAME_LEN as EID_FRAME_LEN
from edge.core.beacons import FAST_PAIR_UUID16 as FAST_PAIR_UUID16
from edge.core.beacons import FRAME_TYPE_EID as FRAME_TYPE_EID
from edge.core.beacons import FRAME_TYPE_TLM as FRAME_TYPE_TLM
from edge.core.beacons import FRAME_TYPE_UID as FRAME_TYPE_UID
from edge.core.beacons import FRAME_TYPE_URL as FRAME_TYPE_URL
from edge.core.beacons import IBEACON_PAYLOAD_LEN as IBEACON_PAYLOAD_LEN
from edge.core.beacons import IBEACON_PREFIX as IBEACON_PREFIX
from edge.core.beacons import Frame

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

MAX_ADV_LEN = 255  # extended advertising caps a single report's data; legacy adverts use 31


class FrameKind(enum.Enum):
    """What an advert is, as far as the gateway cares."""

    IBEACON = "ibeacon"
    ALTBEACON = "altbeacon"
    EDDYSTONE_UID = "eddystone_uid"
    EDDYSTONE_URL = "eddystone_url"
    EDDYSTONE_TLM = "eddystone_tlm"  # plain TLM and encrypted eTLM alike
    EDDYSTONE_EID = "eddystone_eid"
    APP = "app"  # the shopper app's frame (docs/beacons.md); carries an EID like EDDYSTONE_EID
    NOISE = "noise"  # Apple continuity, Microsoft CDP, Fast Pair: recognised, not decoded
    OTHER = "other"  # well-formed, none of the above (including Eddystone frame types not listed)
    MALFORMED = "malformed"


#: The six beacon formats `edge-gateway replay` reports one by one.
BEACON_KINDS = (
    FrameKind.IBEACON,
    FrameKind.ALTBEACON,
    FrameKind.EDDYSTONE_UID,
    FrameKind.EDDYSTONE_URL,
    FrameKind.EDDYSTONE_TLM,
    FrameKind.EDDYSTONE_EID,
)


@dataclass(frozen=True, slots=True)
class AdFields:
    """The AD structures of one advert that Threshold reads."""

    service_data: dict[int, bytes]
    manufacturer_data: dict[int, bytes]
    local_name: str | None
    tx_power_dbm: int | None


@dataclass(frozen=True, slots=True)
class Classified:
    """The outcome of classifying one advert.

    `eid` is set only for well-formed EID-bearing frames (Eddystone-EID and the app frame); `frame` holds
    the decoded frame of a well-formed beacon or the source of recognised noise.
    """

    kind: FrameKind
    eid: bytes | None = None
    reason: str | None = None  # why MALFORMED, for counters and the installer's scan view
    frame: Frame | None = None


_OTHER = Classified(FrameKind.OTHER)
_NOISE_APPLE = Classified(FrameKind.NOISE, frame=beacons.NOISE_APPLE)
_NOISE_MICROSOFT = Classified(FrameKind.NOISE, frame=beacons.NOISE_MICROSOFT)
_NOISE_FAST_PAIR = Classified(FrameKind.NOISE, frame=beacons.NOISE_FAST_PAIR)


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


def _malformed(reason: str) -> Classified:
    return Classified(FrameKind.MALFORMED, reason=reason)


def classify_eddystone(frame: bytes) -> Classified:
    """Classify the service data of UUID 0xFEAA by its frame type."""
    if not frame:
        return _malformed("Eddystone service data is empty")
    frame_type = frame[0]
    if frame_type == FRAME_TYPE_EID:
        eid = beacons.decode_eddystone_eid(frame)
        if isinstance(eid, str):
            return _malformed(eid)
        return Classified(FrameKind.EDDYSTONE_EID, eid=eid.eid, frame=eid)
    if frame_type == FRAME_TYPE_UID:
        uid = beacons.decode_eddystone_uid(frame)
        if isinstance(uid, str):
            return _malformed(uid)
        return Classified(FrameKind.EDDYSTONE_UID, frame=uid)
    if frame_type == FRAME_TYPE_URL:
        url = beacons.decode_eddystone_url(frame)
        if isinstance(url, str):
            return _malformed(url)
        return Classified(FrameKind.EDDYSTONE_URL, frame=url)
    if frame_type == FRAME_TYPE_TLM:
        tlm = beacons.decode_eddystone_tlm(frame)
        if isinstance(tlm, str):
            return _malformed(tlm)
        return Classified(FrameKind.EDDYSTONE_TLM, frame=tlm)
    # 0x40 is reserved by the spec; other values are not Eddystone frame types we know of.
    return _OTHER


def classify_manufacturer_data(manufacturer_data: dict[int, bytes]) -> Classified | None:
    """Classify manufacturer-specific data; None when none of it is a format Threshold knows."""
    app = manufacturer_data.get(COMPANY_TESTING)
    if app is not None and app[:2] == APP_MAGIC:
        decoded = beacons.decode_app_frame(app)
        if isinstance(decoded, str):
            return _malformed(decoded)
        return Classified(FrameKind.APP, eid=decoded.eid, frame=decoded)
    apple = manufacturer_data.get(COMPANY_APPLE)
    if apple is not None and apple[:2] == IBEACON_PREFIX:
        ibeacon = beacons.decode_ibeacon(apple)
        if isinstance(ibeacon, str):
            return _malformed(ibeacon)
        return Classified(FrameKind.IBEACON, frame=ibeacon)
    for company, data in manufacturer_data.items():
        if data[:2] == ALTBEACON_CODE:  # any company id: the beacon's maker puts its own
            alt = beacons.decode_altbeacon(company, data)
            if isinstance(alt, str):
                return _malformed(alt)
            return Classified(FrameKind.ALTBEACON, frame=alt)
    if apple is not None:
        return _NOISE_APPLE
    if COMPANY_MICROSOFT in manufacturer_data:
        return _NOISE_MICROSOFT
    return None


def classify_fields(fields: AdFields) -> Classified:
    """Classify parsed AD fields: Eddystone first, then manufacturer data, then Fast Pair; never raises.

    One advert normally carries one of these; when it carries several, that order decides.
    """
    eddystone = fields.service_data.get(EDDYSTONE_UUID16)
    if eddystone is not None:
        return classify_eddystone(eddystone)
    if fields.manufacturer_data:
        classified = classify_manufacturer_data(fields.manufacturer_data)
        if classified is not None:
            return classified
    if FAST_PAIR_UUID16 in fields.service_data:
        return _NOISE_FAST_PAIR
    return _OTHER


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


COMPANY_RADIUS_NETWORKS = 0x0118  # the AltBeacon spec's example MFG ID


def altbeacon_advert(
    beacon_id: bytes, reference_rssi_dbm: int = -59, company_id: int = COMPANY_RADIUS_NETWORKS
) -> bytes:
    """An AltBeacon advert (20-byte beacon id)."""
    return manufacturer_advert(company_id, beacons.encode_altbeacon(beacon_id, reference_rssi_dbm))


def eddystone_url_advert(url: str, tx_power_dbm: int = -20) -> bytes:
    """An Eddystone-URL advert; raises ValueError for a URL the format cannot carry."""
    return eddystone_advert(beacons.encode_eddystone_url(url, tx_power_dbm))


def eddystone_tlm_advert(
    battery_mv: int | None, temperature_c: float | None, adv_count: int, uptime_s: float
) -> bytes:
    """A plain (version 0) Eddystone-TLM advert."""
    return eddystone_advert(
        beacons.encode_eddystone_tlm(battery_mv, temperature_c, adv_count, uptime_s)
    )


def eddystone_etlm_advert(etlm: bytes, salt: int, mic: int) -> bytes:
    """An encrypted (version 1) Eddystone-TLM advert."""
    return eddystone_advert(beacons.encode_eddystone_etlm(etlm, salt, mic))


def app_advert(eid: bytes, flags: int = 0) -> bytes:
    """The shopper app's advert: its EID in manufacturer data of COMPANY_TESTING (docs/beacons.md)."""
    return manufacturer_advert(COMPANY_TESTING, beacons.encode_app_frame(eid, flags))


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
