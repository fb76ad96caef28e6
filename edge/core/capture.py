"""The capture format: JSON Lines, one advert per line, mirroring bleak's `AdvertisementData`.

    {"t": 1790000000.25, "address": "AA:BB:CC:DD:EE:FF", "rssi": -60,
     "manufacturer_data": {"76": "0215…"}, "service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "30…"},
     "service_uuids": [], "local_name": null, "tx_power": null}

Manufacturer data is keyed by the company id in decimal and holds the payload without the company id;
binary values are hex strings. Extra keys are ignored. docs/capture.md is the reference. Pure: text in,
`RawAdvert` out (the AD bytes re-encoded with `frames.encode_ad_fields`, as the bleak adapter does).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.core.advert import RawAdvert
from edge.core.frames import (
    AD_TYPE_MANUFACTURER_DATA,
    AD_TYPE_SERVICE_DATA_16BIT,
    AD_TYPE_SERVICE_DATA_128BIT,
    AD_TYPE_TX_POWER,
    BLUETOOTH_BASE_UUID_SUFFIX,
    encode_ad_fields,
)

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
_UUID_RE = re.compile(
    r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
)
_UUID_EXAMPLE = "0000feaa-0000-1000-8000-00805f9b34fb"
_MAX_T_S = 1e10  # the year 2286: anything later is a corrupt line, not a clock
# One AD structure carries at most 254 bytes of data (Core Supplement A §1: a one-byte length that
# also counts the type): minus the 2-byte company id, or the 16- or 128-bit service UUID.
_MAX_MANUFACTURER_DATA = 252
_MAX_SERVICE_DATA_16 = 252
_MAX_SERVICE_DATA_128 = 238

# AD types a host stack reports as fields (Bluetooth Assigned Numbers, "Common Data Types").
_AD_UUIDS16 = (0x02, 0x03)
_AD_UUIDS32 = (0x04, 0x05)
_AD_UUIDS128 = (0x06, 0x07)
_AD_SHORT_NAME = 0x08
_AD_COMPLETE_NAME = 0x09
_AD_SERVICE_DATA_32BIT = 0x20


class CaptureError(ValueError):
    """A capture line that does not follow the format: which line, which field, what is expected."""

    def __init__(self, line_no: int, field: str | None, expected: str) -> None:
        where = f"line {line_no}" if field is None else f"line {line_no}, field {field!r}"
        super().__init__(f"{where}: {expected}")
        self.line_no = line_no
        self.field = field
        self.expected = expected


@dataclass(frozen=True, slots=True)
class CaptureFields:
    """One advert as a host stack reports it (bleak's AdvertisementData), the payload of a line."""

    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    service_uuids: list[str] = field(default_factory=list)
    local_name: str | None = None
    tx_power_dbm: int | None = None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _int8(obj: dict[str, Any], key: str, line_no: int, what: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not -128 <= value <= 127:
        shown = (
            value if isinstance(value, int) and not isinstance(value, bool) else _type_name(value)
        )
        raise CaptureError(
            line_no, key, f"must be {what}, an integer from -128 to 127, got {shown}"
        )
    return value


def _hex(value: object, line_no: int, field: str, max_len: int) -> bytes:
    if not isinstance(value, str):
        raise CaptureError(line_no, field, f"must be a hex string, got {_type_name(value)}")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise CaptureError(line_no, field, "must be a hex string (pairs of 0-9, a-f)") from None
    if len(data) > max_len:
        raise CaptureError(line_no, field, f"is {len(data)} bytes, at most {max_len} fit an advert")
    return data


def _uuid(value: object, line_no: int, field: str) -> str:
    if not isinstance(value, str) or not _UUID_RE.match(value):
        raise CaptureError(line_no, field, f"must be a 128-bit UUID like {_UUID_EXAMPLE}")
    return value.lower()


def _is_uuid16(uuid: str) -> bool:
    return uuid.startswith("0000") and uuid.endswith(BLUETOOTH_BASE_UUID_SUFFIX)


def parse_capture_line(line: str, line_no: int) -> RawAdvert:
    """Parse one capture line into the advert a radio would deliver; raise CaptureError if it is wrong."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) else "too deep or too large"
        raise CaptureError(line_no, None, f"is not JSON ({problem})") from None
    if not isinstance(obj, dict):
        raise CaptureError(line_no, None, "must be a JSON object, one advert per line")
    for key in ("t", "address", "rssi"):
        if key not in obj:
            raise CaptureError(line_no, key, "is missing")

    raw_t = obj["t"]
    if isinstance(raw_t, bool) or not isinstance(raw_t, int | float):
        raise CaptureError(line_no, "t", f"must be a number (seconds), got {_type_name(raw_t)}")
    try:
        t_s = float(raw_t)
    except OverflowError:
        t_s = math.inf
    if not 0.0 <= t_s < _MAX_T_S:
        raise CaptureError(line_no, "t", "must be seconds since the Unix epoch, from 0 to 1e10")

    address = obj["address"]
    if not isinstance(address, str) or not (_MAC_RE.match(address) or _UUID_RE.match(address)):
        # The value is not echoed: it may be a device address, and this message may be logged.
        raise CaptureError(line_no, "address", "must be a Bluetooth address like AA:BB:CC:DD:EE:FF")
    rssi = _int8(obj, "rssi", line_no, "the RSSI in dBm")

    manufacturer_data: dict[int, bytes] = {}
    raw_mfg = obj.get("manufacturer_data")
    if raw_mfg is not None:
        if not isinstance(raw_mfg, dict):
            raise CaptureError(
                line_no, "manufacturer_data", f"must be an object, got {_type_name(raw_mfg)}"
            )
        for key, value in raw_mfg.items():
            where = f"manufacturer_data.{key}"
            if not (key.isascii() and key.isdigit() and len(key) <= 5 and int(key) <= 0xFFFF):
                raise CaptureError(
                    line_no, where, "must be keyed by a company id in decimal, 0 to 65535"
                )
            manufacturer_data[int(key)] = _hex(value, line_no, where, _MAX_MANUFACTURER_DATA)

    service_data: dict[str, bytes] = {}
    raw_svc = obj.get("service_data")
    if raw_svc is not None:
        if not isinstance(raw_svc, dict):
            raise CaptureError(
                line_no, "service_data", f"must be an object, got {_type_name(raw_svc)}"
            )
        for key, value in raw_svc.items():
            uuid = _uuid(key, line_no, "service_data")
            limit = _MAX_SERVICE_DATA_16 if _is_uuid16(uuid) else _MAX_SERVICE_DATA_128
            service_data[uuid] = _hex(value, line_no, f"service_data.{uuid}", limit)

    service_uuids: list[str] = []
    raw_uuids = obj.get("service_uuids")
    if raw_uuids is not None:
        if not isinstance(raw_uuids, list):
            raise CaptureError(
                line_no, "service_uuids", f"must be a list, got {_type_name(raw_uuids)}"
            )
        service_uuids = [_uuid(u, line_no, "service_uuids") for u in raw_uuids]

    local_name = obj.get("local_name")
    if local_name is not None and not isinstance(local_name, str):
        raise CaptureError(
            line_no, "local_name", f"must be a string or null, got {_type_name(local_name)}"
        )
    tx_power = None
    if obj.get("tx_power") is not None:
        tx_power = _int8(obj, "tx_power", line_no, "the TX power in dBm, or null")

    try:
        payload = encode_ad_fields(
            manufacturer_data=manufacturer_data,
            service_data=service_data,
            service_uuids=service_uuids,
            local_name=local_name,
            tx_power_dbm=tx_power,
        )
    except ValueError as exc:  # only service_uuids can still be too many for one AD structure
        raise CaptureError(line_no, "service_uuids", f"do not fit an advert ({exc})") from None
    return RawAdvert(t_s, address.upper(), rssi, payload)


def format_capture_line(
    *,
    t_s: float,
    address: str,
    rssi_dbm: int,
    manufacturer_data: Mapping[int, bytes] | None = None,
    service_data: Mapping[str, bytes] | None = None,
    service_uuids: Sequence[str] = (),
    local_name: str | None = None,
    tx_power_dbm: int | None = None,
) -> str:
    """One capture line (no newline) for an advert as a host stack reports it."""
    return json.dumps(
        {
            "t": round(t_s, 6),
            "address": address,
            "rssi": rssi_dbm,
            "manufacturer_data": {str(k): v.hex() for k, v in (manufacturer_data or {}).items()},
            "service_data": {k: v.hex() for k, v in (service_data or {}).items()},
            "service_uuids": list(service_uuids),
            "local_name": local_name,
            "tx_power": tx_power_dbm,
        },
        separators=(",", ":"),
    )


def _uuid_from_le(raw: bytes) -> str:
    """A UUID string from 2, 4 or 16 little-endian bytes as AD structures carry them."""
    if len(raw) == 16:
        h = raw[::-1].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return f"{int.from_bytes(raw, 'little'):08x}{BLUETOOTH_BASE_UUID_SUFFIX}"


def capture_fields(payload: bytes) -> CaptureFields:
    """The fields a host stack would report for raw AD bytes; never raises.

    Like BlueZ, reading stops at the first AD structure that runs past the end, and a structure too
    short for its type is skipped, so an advert recorded from raw bytes replays as what bleak would
    have delivered.
    """
    manufacturer_data: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    service_uuids: list[str] = []
    local_name: str | None = None
    tx_power: int | None = None
    i = 0
    end = len(payload)
    while i < end:
        length = payload[i]
        if length == 0 or i + 1 + length > end:
            break
        ad_type = payload[i + 1]
        data = payload[i + 2 : i + 1 + length]
        i += 1 + length
        if ad_type == AD_TYPE_SERVICE_DATA_16BIT and len(data) >= 2:
            service_data[_uuid_from_le(data[:2])] = data[2:]
        elif ad_type == AD_TYPE_MANUFACTURER_DATA and len(data) >= 2:
            manufacturer_data[data[0] | (data[1] << 8)] = data[2:]
        elif ad_type == _AD_SERVICE_DATA_32BIT and len(data) >= 4:
            service_data[_uuid_from_le(data[:4])] = data[4:]
        elif ad_type == AD_TYPE_SERVICE_DATA_128BIT and len(data) >= 16:
            service_data[_uuid_from_le(data[:16])] = data[16:]
        elif ad_type in _AD_UUIDS16 or ad_type in _AD_UUIDS32 or ad_type in _AD_UUIDS128:
            size = 2 if ad_type in _AD_UUIDS16 else 4 if ad_type in _AD_UUIDS32 else 16
            for k in range(0, len(data) - size + 1, size):
                uuid = _uuid_from_le(data[k : k + size])
                if uuid not in service_uuids:
                    service_uuids.append(uuid)
        elif ad_type == _AD_COMPLETE_NAME or (ad_type == _AD_SHORT_NAME and local_name is None):
            local_name = data.decode("utf-8", "replace")
        elif ad_type == AD_TYPE_TX_POWER and data:
            tx_power = data[0] - 256 if data[0] >= 128 else data[0]
    return CaptureFields(manufacturer_data, service_data, service_uuids, local_name, tx_power)


def format_advert_line(advert: RawAdvert) -> str:
    """The capture line for a delivered advert (its AD bytes read back into fields)."""
    fields = capture_fields(advert.payload)
    return format_capture_line(
        t_s=advert.t_s,
        address=advert.address,
        rssi_dbm=advert.rssi_dbm,
        manufacturer_data=fields.manufacturer_data,
        service_data=fields.service_data,
        service_uuids=fields.service_uuids,
        local_name=fields.local_name,
        tx_power_dbm=fields.tx_power_dbm,
    )
