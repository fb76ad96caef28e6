"""TSP/1, the line protocol of a BLE scanner co-processor: encoders and a resyncing, bounded decoder.

The spec is firmware_config/serial_protocol.md (section numbers below refer to it). Sans-I/O, in the
shape of zigpy-znp's frames.py + uart.py: bytes in, typed events out. Serial bytes are hostile (noise
on a loose cable, a baud-rate mismatch, a firmware from elsewhere): nothing here raises out of
`LineDecoder.feed`, every rejected line is counted by reason, and the decoder never holds more than
`MAX_LINE_BYTES` of an unfinished line.
"""

from __future__ import annotations

import binascii
import enum
import re
from dataclasses import dataclass, field

from edge.core.advert import RawAdvert
from edge.core.frames import MAX_ADV_LEN

PROTOCOL_NAME = "TSP"
PROTOCOL_MAJOR = 1  # §7: a host speaks exactly one major; minors only add
PROTOCOL_MINOR = 0
MAX_LINE_BYTES = 600  # §2: the bytes before "\n" ("\r" included); the longest valid ADV is 558
CHECKSUM_DIGITS = 4  # §3: "*" + CRC-16/CCITT-FALSE as 4 hex digits
RSSI_MIN_DBM = -127  # §5.2, from the HCI LE Advertising Report range (Core Vol 4 Part E §7.7.65.2)
RSSI_MAX_DBM = 20
MAX_AD_BYTES = MAX_ADV_LEN  # §5.2: one report's AD data, extended advertising included
DEVICE_MS_MODULUS = 1 << 32  # §5.2: the device clock is 32-bit milliseconds and wraps (~49.7 days)
SCAN_INTERVAL_MIN_MS = 3  # §6: BLE allows 2.5 ms .. 10.24 s; firmware rounds to 0.625 ms units
SCAN_INTERVAL_MAX_MS = 10_240

CAP_PASSIVE = "passive"  # §4: capability tokens a host acts on; unknown ones are ignored
CAP_ACTIVE = "active"
CAP_CODED_PHY = "coded_phy"
CAP_EXT_ADV = "ext_adv"
KNOWN_CAPABILITIES = frozenset({CAP_PASSIVE, CAP_ACTIVE, CAP_CODED_PHY, CAP_EXT_ADV})

# §8: error codes a TSP/1 firmware sends.
ERR_CRC = "crc"
ERR_SYNTAX = "syntax"
ERR_UNKNOWN = "unknown"
ERR_RANGE = "range"
ERR_UNSUPPORTED = "unsupported"
ERR_BUSY = "busy"
ERR_RADIO = "radio"
ERR_OVERFLOW = "overflow"

_NON_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
# What ends a line's resync: "\r" is kept, as it may be the first half of a "\r\n" split across reads.
_NOISE = re.compile(rb"[^\x20-\x7e\r]")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_DEVICE_MS = re.compile(r"[0-9A-Fa-f]{1,8}")
_ADDRESS = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
_RSSI = re.compile(r"-?[0-9]{1,3}")
_AD_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,32}")
_VERSION = re.compile(r"([0-9]{1,5})\.([0-9]{1,5})\.([0-9]{1,5})(?:[-+][0-9A-Za-z.+-]{1,32})?")
_PROTO = re.compile(r"([0-9]{1,3})(?:\.([0-9]{1,3}))?")
_ERR_CODE = re.compile(r"[a-z_]{1,24}")
_OK_COMMAND = re.compile(r"[A-Z?]{1,16}")
_MS = re.compile(r"[0-9]{1,5}")
_EXTENSION_KEY = re.compile(r"[a-z_]{1,24}")


class RejectReason(enum.Enum):
    """Why a line was dropped; the values name counters."""

    OVERSIZED = "oversized"  # longer than MAX_LINE_BYTES
    GARBAGE = "garbage"  # non-printable bytes and nothing valid after them (noise, baud mismatch)
    NO_CHECKSUM = "no_checksum"
    BAD_CHECKSUM = "bad_checksum"
    FIELD_COUNT = "field_count"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_ADDRESS = "bad_address"
    BAD_ADDRESS_TYPE = "bad_address_type"
    BAD_RSSI = "bad_rssi"
    BAD_HEX = "bad_hex"
    BAD_HELLO = "bad_hello"
    BAD_FIELD = "bad_field"  # a malformed OK/ERR line or host command parameter


class AddressType(enum.Enum):
    PUBLIC = "public"
    RANDOM = "random"


class ScanMode(enum.Enum):
    PASSIVE = "passive"
    ACTIVE = "active"


# --- Events (device → host) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """§4: who the firmware is, which protocol it speaks and what it can do."""

    firmware: str
    version: str
    proto_major: int
    proto_minor: int
    capabilities: frozenset[str]

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        """The numeric MAJOR.MINOR.PATCH of `version` (validated when decoded)."""
        return parse_version(self.version) or (0, 0, 0)

    @property
    def protocol(self) -> str:
        return f"{PROTOCOL_NAME}/{self.proto_major}.{self.proto_minor}"


@dataclass(frozen=True, slots=True)
class AdvertLine:
    """§5: one advertising report; `device_ms` is the device's wrapping clock, for ordering only."""

    device_ms: int
    address: str  # upper-case, colon-separated, most significant byte first
    address_type: AddressType
    rssi_dbm: int
    payload: bytes
    extensions: tuple[tuple[str, str], ...] = ()  # §7: optional key=value fields of later minors

    def to_raw_advert(self, t_s: float) -> RawAdvert:
        """The advert as the pipeline takes it, stamped with the host's receipt time `t_s`."""
        return RawAdvert(t_s, self.address, self.rssi_dbm, self.payload)


@dataclass(frozen=True, slots=True)
class ErrorLine:
    """§8: an error, in reply to a command or unsolicited."""

    code: str
    text: str


@dataclass(frozen=True, slots=True)
class Ok:
    """§6: a command succeeded; `command` names it (SCAN, STOP)."""

    command: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that was dropped, with a short printable description for logs."""

    reason: RejectReason
    detail: str


Event = Hello | AdvertLine | ErrorLine | Ok | Rejected


# --- Host commands (host → device) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloRequest:
    """`HELLO?`: the device answers with its HELLO line."""


@dataclass(frozen=True, slots=True)
class ScanCommand:
    """`SCAN mode interval_ms window_ms`: start (or retune) scanning."""

    mode: ScanMode
    interval_ms: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class StopCommand:
    """`STOP`: stop scanning."""


HostCommand = HelloRequest | ScanCommand | StopCommand


# --- Framing ------------------------------------------------------------------------------------


def checksum(body: bytes) -> str:
    """§3: CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the bytes before "*", 4 upper-case hex."""
    return f"{binascii.crc_hqx(body, 0xFFFF):04X}"


def frame_line(body: str) -> bytes:
    """One line on the wire: body, "*", checksum, "\\n". Raises ValueError on a body TSP cannot carry."""
    try:
        raw = body.encode("ascii")
    except UnicodeEncodeError:
        raw = b"\x00"
    if _NON_PRINTABLE.search(raw) or not raw:
        raise ValueError(f"a TSP line is printable ASCII and not empty, got {body!r}")
    if len(raw) + 1 + CHECKSUM_DIGITS > MAX_LINE_BYTES:
        raise ValueError(f"a TSP line is at most {MAX_LINE_BYTES} bytes, got {len(raw) + 5}")
    return raw + b"*" + checksum(raw).encode("ascii") + b"\n"


def parse_version(text: str) -> tuple[int, int, int] | None:
    """MAJOR.MINOR.PATCH[-suffix] → the numbers, or None."""
    m = _VERSION.fullmatch(text)
    if m is None:
        return None
    return int(m[1]), int(m[2]), int(m[3])


def _describe(line: bytes) -> str:
    text = repr(line[:60])
    return text if len(line) <= 60 else text + "…"


def _unframe(line: bytes) -> str | Rejected:
    """Check the checksum of a printable line; return the body text."""
    star = line.rfind(b"*")
    if star < 0:
        return Rejected(RejectReason.NO_CHECKSUM, f"no '*' checksum: {_describe(line)}")
    body, given = line[:star], line[star + 1 :].decode("ascii")
    if _HEX4.fullmatch(given) is None:
        return Rejected(RejectReason.BAD_CHECKSUM, f"checksum {given!r} is not 4 hex digits")
    expected = checksum(body)
    if given.upper() != expected:
        return Rejected(
            RejectReason.BAD_CHECKSUM,
            f"checksum {given} != {expected} computed: {_describe(line)}",
        )
    return body.decode("ascii")


# --- Encoders: host commands --------------------------------------------------------------------


def encode_hello_request() -> bytes:
    return frame_line("HELLO?")


def encode_stop() -> bytes:
    return frame_line("STOP")


def encode_scan(mode: ScanMode, interval_ms: int, window_ms: int) -> bytes:
    """`SCAN`; raises ValueError when the parameters are outside §6's ranges."""
    if not SCAN_INTERVAL_MIN_MS <= interval_ms <= SCAN_INTERVAL_MAX_MS:
        raise ValueError(
            f"scan interval {interval_ms} ms is outside "
            f"{SCAN_INTERVAL_MIN_MS}..{SCAN_INTERVAL_MAX_MS} ms"
        )
    if not SCAN_INTERVAL_MIN_MS <= window_ms <= interval_ms:
        raise ValueError(
            f"scan window {window_ms} ms must be {SCAN_INTERVAL_MIN_MS}..{interval_ms} ms "
            "(at most the interval)"
        )
    return frame_line(f"SCAN {mode.value} {interval_ms} {window_ms}")


def encode_command(command: HostCommand) -> bytes:
    match command:
        case HelloRequest():
            return encode_hello_request()
        case StopCommand():
            return encode_stop()
        case ScanCommand(mode, interval_ms, window_ms):
            return encode_scan(mode, interval_ms, window_ms)


# --- Encoders: device lines (a firmware's side; the simulated firmware in tests uses them) -------


def encode_hello(
    firmware: str,
    version: str,
    capabilities: tuple[str, ...] | frozenset[str] = (CAP_PASSIVE,),
    proto: str = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
) -> bytes:
    caps = ",".join(sorted(capabilities) if isinstance(capabilities, frozenset) else capabilities)
    return frame_line(f"HELLO fw={firmware} ver={version} proto={proto} caps={caps}")


def encode_advert(
    device_ms: int,
    address: str,
    address_type: AddressType,
    rssi_dbm: int,
    payload: bytes,
    extensions: tuple[tuple[str, str], ...] = (),
) -> bytes:
    ad = payload.hex().upper() if payload else "-"
    ext = "".join(f" {key}={value}" for key, value in extensions)
    return frame_line(
        f"ADV {device_ms % DEVICE_MS_MODULUS:X} {address.upper()} {address_type.value} "
        f"{rssi_dbm} {ad}{ext}"
    )


def encode_ok(command: str) -> bytes:
    return frame_line(f"OK {command}")


def encode_error(code: str, text: str = "") -> bytes:
    return frame_line(f"ERR {code} {text}" if text else f"ERR {code}")


# --- Line parsers -------------------------------------------------------------------------------


def _parse_hello(fields: list[str]) -> Hello | Rejected:
    values: dict[str, str] = {}
    for token in fields[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key or key in values:
            return Rejected(
                RejectReason.BAD_HELLO, f"HELLO field {token!r} is not a unique key=value"
            )
        values[key] = value  # §7: unknown keys are ignored
    firmware, version, proto = values.get("fw"), values.get("ver"), values.get("proto")
    if firmware is None or _TOKEN.fullmatch(firmware) is None:
        return Rejected(RejectReason.BAD_HELLO, f"HELLO fw={firmware!r} is missing or malformed")
    if version is None or parse_version(version) is None:
        return Rejected(RejectReason.BAD_HELLO, f"HELLO ver={version!r} is not MAJOR.MINOR.PATCH")
    m = _PROTO.fullmatch(proto or "")
    if m is None:
        return Rejected(RejectReason.BAD_HELLO, f"HELLO proto={proto!r} is not MAJOR[.MINOR]")
    caps = frozenset(c for c in values.get("caps", "").split(",") if c)
    return Hello(firmware, version, int(m[1]), int(m[2] or 0), caps)


def _parse_advert(fields: list[str]) -> AdvertLine | Rejected:
    if len(fields) < 6:
        return Rejected(RejectReason.FIELD_COUNT, f"ADV has {len(fields) - 1} fields, needs 5")
    _, ms, address, address_type, rssi, ad = fields[:6]
    extensions: list[tuple[str, str]] = []
    for token in fields[6:]:
        key, sep, value = token.partition("=")
        if not sep or _EXTENSION_KEY.fullmatch(key) is None:
            return Rejected(
                RejectReason.FIELD_COUNT, f"ADV has an extra field {token[:24]!r}, not key=value"
            )
        extensions.append((key, value))
    if _DEVICE_MS.fullmatch(ms) is None:
        return Rejected(RejectReason.BAD_TIMESTAMP, f"ADV timestamp {ms[:24]!r} is not 1-8 hex")
    if _ADDRESS.fullmatch(address) is None:
        return Rejected(RejectReason.BAD_ADDRESS, f"ADV address {address[:24]!r} is malformed")
    try:
        kind = AddressType(address_type)
    except ValueError:
        return Rejected(
            RejectReason.BAD_ADDRESS_TYPE, f"ADV address type {address_type[:24]!r} is unknown"
        )
    if _RSSI.fullmatch(rssi) is None or not RSSI_MIN_DBM <= int(rssi) <= RSSI_MAX_DBM:
        return Rejected(
            RejectReason.BAD_RSSI,
            f"ADV RSSI {rssi[:24]!r} is not an integer in {RSSI_MIN_DBM}..{RSSI_MAX_DBM} dBm",
        )
    if ad == "-":
        payload = b""
    elif _AD_HEX.fullmatch(ad) is None or len(ad) > 2 * MAX_AD_BYTES:
        return Rejected(
            RejectReason.BAD_HEX,
            f"ADV data is not 1..{MAX_AD_BYTES} bytes of hex ({len(ad)} characters)",
        )
    else:
        payload = bytes.fromhex(ad)
    return AdvertLine(int(ms, 16), address.upper(), kind, int(rssi), payload, tuple(extensions))


def _parse_error(body: str) -> ErrorLine | Rejected:
    parts = body.split(" ", 2)
    if len(parts) < 2 or _ERR_CODE.fullmatch(parts[1]) is None:
        return Rejected(RejectReason.BAD_FIELD, f"ERR line without a valid code: {body[:60]!r}")
    return ErrorLine(parts[1], parts[2] if len(parts) == 3 else "")


def _parse_ok(fields: list[str]) -> Ok | Rejected:
    if len(fields) != 2:
        return Rejected(RejectReason.FIELD_COUNT, f"OK has {len(fields) - 1} fields, needs 1")
    if _OK_COMMAND.fullmatch(fields[1]) is None:
        return Rejected(RejectReason.BAD_FIELD, f"OK names no command: {fields[1][:24]!r}")
    return Ok(fields[1])


def parse_device_line(line: bytes) -> Event | None:
    """One printable line from the device → an event, a Rejected, or None for an unknown line type.

    §7: a line type this host does not know (added by a later minor) is ignored, not an error.
    """
    body = _unframe(line)
    if isinstance(body, Rejected):
        return body
    fields = body.split(" ")
    match fields[0]:
        case "ADV":
            return _parse_advert(fields)
        case "HELLO":
            return _parse_hello(fields)
        case "OK":
            return _parse_ok(fields)
        case "ERR":
            return _parse_error(body)
        case _:
            return None


def parse_host_line(line: bytes) -> HostCommand | Rejected | None:
    """One printable line from the host → a command, a Rejected, or None for an unknown command."""
    body = _unframe(line)
    if isinstance(body, Rejected):
        return body
    fields = body.split(" ")
    match fields:
        case ["HELLO?"]:
            return HelloRequest()
        case ["STOP"]:
            return StopCommand()
        case ["SCAN", mode, interval, window]:
            try:
                scan_mode = ScanMode(mode)
            except ValueError:
                return Rejected(RejectReason.BAD_FIELD, f"SCAN mode {mode[:24]!r} is unknown")
            if _MS.fullmatch(interval) is None or _MS.fullmatch(window) is None:
                return Rejected(RejectReason.BAD_FIELD, "SCAN interval and window are integer ms")
            interval_ms, window_ms = int(interval), int(window)
            if not (SCAN_INTERVAL_MIN_MS <= window_ms <= interval_ms <= SCAN_INTERVAL_MAX_MS):
                return Rejected(
                    RejectReason.BAD_FIELD, f"SCAN {interval_ms} {window_ms} out of range"
                )
            return ScanCommand(scan_mode, interval_ms, window_ms)
        case ["SCAN", *_]:
            return Rejected(RejectReason.FIELD_COUNT, f"SCAN has {len(fields) - 1} fields, needs 3")
        case _:
            return None


# --- The resyncing, bounded line buffer ---------------------------------------------------------


def _last_noise(data: bytes) -> int:
    """Index of the last byte that cannot be in a line (outside 0x20..0x7E and not "\r"), or -1."""
    if _NOISE.search(data) is None:
        return -1
    m = _NOISE.search(data[::-1])
    assert m is not None
    return len(data) - 1 - m.start()


@dataclass(frozen=True, slots=True)
class Line:
    """A complete line (printable, unless a stray "\r"); `garbled` when noise before it was dropped."""

    text: bytes
    garbled: bool


class LineBuffer:
    """Splits a byte stream into printable lines, resyncing after noise; holds ≤ max_line_bytes.

    §2: lines end with "\\n" (a "\\r" before it is dropped). Any other non-printable byte cannot be part
    of a line, so everything up to the last one is dropped and the line restarts after it: a good line
    right after a burst of noise (a device reset, a baud change) survives without a newline between
    them. A printable run longer than the limit is dropped up to the next newline and counted.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buf = bytearray()
        self._discarding = False  # inside an oversized line: drop until a newline
        self._garbled = False  # the current line lost bytes to noise

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial line (a new connection starts clean)."""
        self._buf.clear()
        self._discarding = False
        self._garbled = False

    def feed(self, data: bytes) -> list[Line | RejectReason]:
        """Complete lines in `data` (after what was buffered), and OVERSIZED for each dropped one."""
        out: list[Line | RejectReason] = []
        pos, end = 0, len(data)
        while pos < end:
            nl = data.find(b"\n", pos)
            terminated = nl >= 0
            segment = data[pos : nl if terminated else end]
            pos = nl + 1 if terminated else end
            cut = _last_noise(segment)
            if cut >= 0:  # noise: restart the line after it
                segment = segment[cut + 1 :]
                self._buf.clear()
                self._discarding = False
                self._garbled = True
            if self._discarding:
                if terminated:
                    self._discarding = False
                continue
            if len(self._buf) + len(segment) > self._max:
                out.append(RejectReason.OVERSIZED)
                self._buf.clear()
                self._garbled = False
                self._discarding = not terminated
                continue
            self._buf += segment
            if terminated:
                if self._buf.endswith(b"\r"):
                    del self._buf[-1]
                out.append(Line(bytes(self._buf), self._garbled))
                self._buf.clear()
                self._garbled = False
        return out


# --- The decoder --------------------------------------------------------------------------------


@dataclass(slots=True)
class DecodeCounters:
    """What the decoder has seen since it was made; `rejected` is keyed by reason."""

    lines: int = 0  # complete lines, good or bad (empty lines are not counted)
    events: int = 0
    resynced: int = 0  # good lines recovered from after noise on the same line
    ignored: int = 0  # valid lines of an unknown type (§7), skipped
    rejected: dict[RejectReason, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "events": self.events,
            "resynced": self.resynced,
            "ignored": self.ignored,
            "rejected": {reason.value: n for reason, n in self.rejected.items()},
        }


class LineDecoder:
    """Device bytes → events. `feed` never raises; rejected lines come back as `Rejected` and count."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._lines = LineBuffer(max_line_bytes)
        self.counters = DecodeCounters()

    @property
    def buffered_bytes(self) -> int:
        return self._lines.buffered_bytes

    def reset(self) -> None:
        """Drop a partial line; counters stay."""
        self._lines.reset()

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for item in self._lines.feed(data):
            event: Event | None
            if isinstance(item, RejectReason):
                event = Rejected(item, f"a line longer than {MAX_LINE_BYTES} bytes was dropped")
            elif not item.text:
                if not item.garbled:
                    continue  # §2: empty lines are allowed (a host sends one to flush)
                event = Rejected(RejectReason.GARBAGE, "a line of non-printable bytes")
            else:
                event = parse_device_line(item.text)
                if item.garbled:
                    if event is None or isinstance(event, Rejected):
                        event = Rejected(
                            RejectReason.GARBAGE,
                            f"noise, then {_describe(item.text)}",
                        )
                    else:
                        self.counters.resynced += 1
            self._count(event)
            if event is not None:
                events.append(event)
        return events

    def _count(self, event: Event | None) -> None:
        c = self.counters
        c.lines += 1
        if event is None:
            c.ignored += 1
        elif isinstance(event, Rejected):
            c.rejected[event.reason] = c.rejected.get(event.reason, 0) + 1
        else:
            c.events += 1


def device_ms_before(a: int, b: int) -> bool:
    """Whether device time `a` is before `b` on the wrapping 32-bit clock (serial-number arithmetic)."""
    return a != b and (b - a) % DEVICE_MS_MODULUS < DEVICE_MS_MODULUS // 2
