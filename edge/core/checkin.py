"""iPhone check-in: how a backgrounded iOS app identifies itself to the gateway at the door (issue 10).

A backgrounded iOS app cannot broadcast the EID frame, but iOS wakes it when it enters the store's
iBeacon region, and it may then connect to the gateway's GATT check-in service and write to it
(docs/iphone-checkin.md has the sequence and the app's side in full). Protocol version 1:

- The gateway serves `CHECKIN_SERVICE_UUID` with two characteristics:
  - `CHALLENGE_CHAR_UUID` (read): 16 random bytes, drawn afresh every `CHALLENGE_PERIOD_S`; the
    current and the previous challenge are accepted, so a read just before a rotation still works.
  - `CHECKIN_CHAR_UUID` (write with response): the check-in, exactly 20 bytes (one ATT write at the
    default MTU of 23):

        0      version (0x01)
        1..8   the app's current EID: Eddystone-EID of its identity key and exponent at its clock
        9..10  seq, big-endian: counts the writes made with this challenge, from 0
        11     rssi: the app's RSSI of the gateway (CBPeripheral.readRSSI), int8 dBm; 127 = unknown;
               taken as MIN_RSSI_DBM..MAX_RSSI_DBM (beyond: the nearest bound)
        12..19 tag = HMAC-SHA256(K, "THCI" || challenge || bytes 0..11)[:8],
               K = HMAC-SHA256(identity key, "threshold/checkin/v1")

- Same privacy as the EID advert: nothing on the air is stable (the EID rotates, the tag is keyed
  and bound to a challenge that changes every minute, iOS rotates the phone's address), and the
  gateway keeps nothing of a check-in but the presence sighting it feeds: the central's D-Bus path
  lives only in the bounded throttle table in memory, seqs only for the two live challenges.
- Same entry rule: every accepted write is one sighting of the device with its RSSI, fed to the same
  presence tracker as adverts (direction, dwell, not walking past). The app writes about once a second
  while connected, so a shopper who walks past fades out, and one who walks in stays.

Bad input is refused, counted by reason and never stored: a write of the wrong length or version
(`malformed`), over its central's rate (`throttled`), an EID the resolver does not know in the windows
in range (`unknown`: a stale token, or not enrolled here), a tag that matches neither live challenge
(`bad_tag`: forged, or computed on an expired challenge), a seq not above the last accepted one for
that device and challenge (`replayed`), no RSSI from the app nor from BlueZ (`no_signal`).

Pure: the caller passes the time, the randomness for challenges and the resolver's lookup.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from edge.core.eid import EID_LEN, compute_eid, counter_at
from edge.core.wire import RosterDevice

PROTOCOL_VERSION = 1
CHECKIN_SERVICE_UUID = "7e1a0001-5f3c-4c1e-9b7e-7468726573ff"
CHALLENGE_CHAR_UUID = "7e1a0002-5f3c-4c1e-9b7e-7468726573ff"
CHECKIN_CHAR_UUID = "7e1a0003-5f3c-4c1e-9b7e-7468726573ff"

CHALLENGE_LEN = 16
CHALLENGE_PERIOD_S = 60.0
PAYLOAD_LEN = 20
TAG_LEN = 8
RSSI_UNKNOWN = 127
#: The RSSI a sighting may carry (the Core Specification's HCI range, Vol 4 Part E §7.7.65.2):
#: an app's byte beyond it (a bug, or a lie no radio could measure) is clamped, so that neither
#: the presence tracker's smoothing nor the visit's `rssi_dbm` on the wire ever holds more.
MIN_RSSI_DBM = -127.0
MAX_RSSI_DBM = 20.0
_KEY_LABEL = b"threshold/checkin/v1"
_TAG_LABEL = b"THCI"

#: Writes a second each central may make (token bucket), and the burst it may save up. An app writes
#: about once a second; a flood from one central is refused without touching the others.
CENTRAL_RATE_PER_S = 4.0
CENTRAL_BURST = 8.0
#: Centrals remembered for throttling (least recently heard forgotten first): a door sees tens. A
#: central keeps its bucket across reconnections, so connecting again does not refill it.
MAX_CENTRALS = 1024
#: The budget new centrals' buckets are filled from: a new central starts with a full bucket while
#: it lasts, and with one write once it is spent (then refills at its own rate). So a swarm of
#: made-up addresses (an attacker connecting again and again as new devices) gets one judged write
#: per address past the budget, and never the writes of centrals already heard: a genuine iPhone
#: keeps its own rate, whatever the swarm does.
NEWCOMERS_RATE_PER_S = 200.0
NEWCOMERS_BURST = 400.0
#: Devices whose last seq is remembered per live challenge (oldest forgotten first).
MAX_SEQS = 8192


class CheckinRefusal(enum.StrEnum):
    """Why a check-in write was refused; the counters carry these names."""

    MALFORMED = "malformed"
    THROTTLED = "throttled"
    UNKNOWN = "unknown"
    BAD_TAG = "bad_tag"
    REPLAYED = "replayed"
    NO_SIGNAL = "no_signal"


# What the app sees when a write is refused: the ATT error code of the write's response (on iOS, the
# NSError's code in CBATTErrorDomain), each with one thing to do (docs/iphone-checkin.md, "Errors").
# 0x0D is the Core Specification's Invalid Attribute Value Length (Vol 3 Part F §3.4.1.1); 0x80..0x9F
# are application errors, which BlueZ 5.66 and later pass through as given; older BlueZ answers
# every application error as 0x80, so 0x80's advice works for each of them.
ATT_INVALID_VALUE_LENGTH = 0x0D
ATT_REFUSED = 0x80  # refused (older BlueZ), or the gateway failed to handle the write
ATT_BAD_TAG = 0x81
ATT_REPLAYED = 0x82
ATT_UNKNOWN = 0x83
ATT_THROTTLED = 0x84
ATT_NO_SIGNAL = 0x85
ATT_BUSY = 0x86  # the gateway has too many writes in hand (its GATT adapter says so, not the core)
ATT_ERRORS: dict[CheckinRefusal, int] = {
    CheckinRefusal.MALFORMED: ATT_INVALID_VALUE_LENGTH,
    CheckinRefusal.BAD_TAG: ATT_BAD_TAG,
    CheckinRefusal.REPLAYED: ATT_REPLAYED,
    CheckinRefusal.UNKNOWN: ATT_UNKNOWN,
    CheckinRefusal.THROTTLED: ATT_THROTTLED,
    CheckinRefusal.NO_SIGNAL: ATT_NO_SIGNAL,
}


@dataclass(frozen=True, slots=True)
class CheckinAccepted:
    """A genuine check-in: one sighting of `device` at `rssi_dbm`."""

    device: RosterDevice
    rssi_dbm: float


@dataclass(frozen=True, slots=True)
class CheckinRefused:
    reason: CheckinRefusal
    detail: str


CheckinResult = CheckinAccepted | CheckinRefused


def checkin_key(identity_key: bytes) -> bytes:
    """K: the device's check-in key, derived from its identity key (never the key itself)."""
    return hmac.new(identity_key, _KEY_LABEL, hashlib.sha256).digest()


def _tag(key: bytes, challenge: bytes, head: bytes) -> bytes:
    return hmac.new(key, _TAG_LABEL + challenge + head, hashlib.sha256).digest()[:TAG_LEN]


def checkin_payload(
    identity_key: bytes,
    exponent: int,
    unix_s: float,
    challenge: bytes,
    seq: int,
    rssi_dbm: int | None,
) -> bytes:
    """The 20 bytes an app writes: what the iOS app computes (and the simulated one does)."""
    if len(challenge) != CHALLENGE_LEN:
        raise ValueError(f"a challenge is {CHALLENGE_LEN} bytes, got {len(challenge)}")
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"seq must be 0..65535, got {seq}")
    rssi = RSSI_UNKNOWN if rssi_dbm is None else max(-128, min(126, int(rssi_dbm)))
    eid = compute_eid(identity_key, exponent, counter_at(unix_s))
    head = bytes((PROTOCOL_VERSION,)) + eid + seq.to_bytes(2, "big") + (rssi & 0xFF).to_bytes(1)
    return head + _tag(checkin_key(identity_key), challenge, head)


class _Bucket:
    __slots__ = ("t_s", "tokens")

    def __init__(self, tokens: float, t_s: float) -> None:
        self.tokens = tokens
        self.t_s = t_s


class CheckinVerifier:
    """Checks check-in writes: throttle by central, parse, resolve, verify the tag, refuse replays.

    `random_bytes` draws challenges; `resolve` is the resolver's EID lookup (the same windows in
    range as adverts, so a token from an old window is `unknown`).
    """

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        resolve: Callable[[bytes], RosterDevice | None],
        period_s: float = CHALLENGE_PERIOD_S,
        rate_per_s: float = CENTRAL_RATE_PER_S,
        burst: float = CENTRAL_BURST,
    ) -> None:
        if period_s <= 0 or rate_per_s <= 0 or burst < 1:
            raise ValueError("period_s > 0, rate_per_s > 0 and burst >= 1")
        self._random = random_bytes
        self._resolve = resolve
        self._period_s = period_s
        self._rate = rate_per_s
        self._burst = burst
        self._epoch: int | None = None
        self._current = b""
        self._previous: bytes | None = None
        # Last accepted seq per (device ref) for the current and the previous challenge.
        self._seqs: dict[bytes, OrderedDict[str, int]] = {}
        self._centrals: OrderedDict[str, _Bucket] = OrderedDict()
        self._newcomers = _Bucket(NEWCOMERS_BURST, float("-inf"))
        self.accepted = 0
        self.refused: dict[CheckinRefusal, int] = dict.fromkeys(CheckinRefusal, 0)

    @property
    def tracked_centrals(self) -> int:
        """Centrals whose write rate is remembered (at most MAX_CENTRALS)."""
        return len(self._centrals)

    @property
    def tracked_seqs(self) -> int:
        """Last seqs remembered, over the live challenges (at most MAX_SEQS each)."""
        return sum(len(seqs) for seqs in self._seqs.values())

    def challenge(self, now_s: float) -> bytes:
        """The challenge an app reads now (drawn afresh every period)."""
        epoch = int(now_s // self._period_s)
        if epoch != self._epoch:
            fresh = self._random(CHALLENGE_LEN)
            if len(fresh) != CHALLENGE_LEN:
                raise ValueError(f"random_bytes({CHALLENGE_LEN}) returned {len(fresh)} bytes")
            # Only the challenge of the epoch just before stays valid: after a longer pause, none.
            previous = self._current if self._epoch == epoch - 1 and self._current else None
            self._previous = previous
            self._current = fresh
            self._epoch = epoch
            self._seqs = {c: self._seqs.get(c, OrderedDict()) for c in (fresh, previous) if c}
        return self._current

    def verify(
        self, payload: bytes, central: str, now_s: float, link_rssi_dbm: float | None = None
    ) -> CheckinResult:
        """Judge one write from `central` (BlueZ's device path); never raises on any bytes."""
        result = self._verify(payload, central, now_s, link_rssi_dbm)
        if isinstance(result, CheckinAccepted):
            self.accepted += 1
        else:
            self.refused[result.reason] += 1
        return result

    def _verify(
        self, payload: bytes, central: str, now_s: float, link_rssi_dbm: float | None
    ) -> CheckinResult:
        if not self._take_token(central, now_s):
            return CheckinRefused(CheckinRefusal.THROTTLED, "over the central's write rate")
        if len(payload) != PAYLOAD_LEN or payload[0] != PROTOCOL_VERSION:
            return CheckinRefused(
                CheckinRefusal.MALFORMED,
                f"{len(payload)} bytes, version {payload[0] if payload else None}: "
                f"expected {PAYLOAD_LEN} bytes of version {PROTOCOL_VERSION}",
            )
        device = self._resolve(payload[1 : 1 + EID_LEN])
        if device is None:
            return CheckinRefused(
                CheckinRefusal.UNKNOWN, "EID not enrolled in the windows in range"
            )
        self.challenge(now_s)  # rotate if due
        head, tag = payload[:-TAG_LEN], payload[-TAG_LEN:]
        key = checkin_key(device.identity_key)
        matched = None
        for challenge in (self._current, self._previous):
            if challenge and hmac.compare_digest(_tag(key, challenge, head), tag):
                matched = challenge
                break
        if matched is None:
            return CheckinRefused(CheckinRefusal.BAD_TAG, "tag matches no live challenge")
        seq = int.from_bytes(payload[9:11], "big")
        seqs = self._seqs.setdefault(matched, OrderedDict())
        last = seqs.get(device.ref)
        if last is not None and seq <= last:
            return CheckinRefused(CheckinRefusal.REPLAYED, f"seq {seq} not above {last}")
        rssi_byte = payload[11]
        rssi: float | None = None
        if rssi_byte != RSSI_UNKNOWN:
            rssi = float(rssi_byte - 256 if rssi_byte > 127 else rssi_byte)
        elif link_rssi_dbm is not None and math.isfinite(link_rssi_dbm):
            rssi = float(link_rssi_dbm)
        if rssi is None:
            return CheckinRefused(CheckinRefusal.NO_SIGNAL, "no RSSI from the app nor from BlueZ")
        rssi = max(MIN_RSSI_DBM, min(MAX_RSSI_DBM, rssi))
        seqs[device.ref] = seq
        seqs.move_to_end(device.ref)
        if len(seqs) > MAX_SEQS:
            seqs.popitem(last=False)
        return CheckinAccepted(device, rssi)

    def _take_token(self, central: str, now_s: float) -> bool:
        bucket = self._centrals.get(central)
        if bucket is None:
            newcomers = self._newcomers
            newcomers.tokens = min(
                NEWCOMERS_BURST,
                newcomers.tokens + max(0.0, now_s - newcomers.t_s) * NEWCOMERS_RATE_PER_S,
            )
            newcomers.t_s = now_s
            tokens = self._burst if newcomers.tokens >= self._burst else 1.0
            newcomers.tokens = max(0.0, newcomers.tokens - tokens)
            bucket = _Bucket(tokens, now_s)
            self._centrals[central] = bucket
            if len(self._centrals) > MAX_CENTRALS:
                self._centrals.popitem(last=False)
        else:
            self._centrals.move_to_end(central)
            elapsed = max(0.0, now_s - bucket.t_s)
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.t_s = now_s
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
