"""Signed, sealed roster bundles: how the bridge hands one gateway its store's identity keys (issue 4).

The envelope is one canonical JSON object (sorted keys, no spaces, ASCII; binary fields base64)::

    {"v":1, "type":"roster_bundle", "format":2, "chain", "store", "gateway",
     "recipient": <gateway key id>, "signer": <bridge key id>, "version": N, "base_version": M | null,
     "kind": "full" | "delta", "nonce", "ephemeral_key", "ciphertext", "signature"}

- **Keys.** The bridge signs with Ed25519; every gateway has its own X25519 key pair. A key id is the
  first 8 bytes of SHA-256 of the raw 32-byte public key, in hex.
- **Sealed.** The body (the devices, or a delta of them, as JSON) is encrypted to the recipient
  gateway's X25519 public key: a fresh ephemeral X25519 key, HKDF-SHA256 (salt: ephemeral || recipient
  public key; info binds the format, chain, store, gateway and version) and ChaCha20-Poly1305 with the
  header (every field but the four binary ones) as associated data. The broker and the store's other
  gateways see who it is for and which version it is, never a key.
- **Signed.** Ed25519 over the canonical JSON of every field but `signature`; a receiver also requires
  the bytes to be exactly that canonical form, so a bundle that verifies is byte for byte what the
  bridge signed.
- **Opened** by `open_bundle` in this order, each failure a `BundleRejected` with a `RejectReason`:
  parse, format, signer, signature, recipient, store, gateway, version, base version, and only then
  decryption and the body. Nothing in the header is trusted before the signature is.

- **Formats.** The envelope is the same in all; the body's device rows differ. Format 1:
  `[ref, member, tier, identity_key hex, exponent]`. Format 2 (issue 10) adds what the device is and
  what its member asked for: `[ref, member, tier, identity_key hex, exponent, kind | null,
  prefs | null]`, prefs as `[interests, promotions, per_day, per_week]` (wire.MemberPrefs). Format 3
  (issue 11) adds the member's audience: `[..., kind | null, prefs | null, segments, visits]`,
  segments a mask of wire.SEGMENTS (0..7), visits 0..MAX_COUNTED_VISITS. The bridge builds format 3;
  a gateway opens all three (a retained bundle from an older bridge still applies, its devices
  without what the format lacks: no kind or preferences, segments and visits 0). A new format, not
  optional fields: rows are fixed-length arrays that format-2 gateways refuse to stretch, and a
  format-2 gateway that cannot read a bundle says so (`unknown_format`: update it) rather than
  dropping the audience unseen. The format is signed and bound into the key derivation, so a body
  cannot be read as another format.

A delta names the version it applies to (`base_version`); a gateway at another version needs a full
snapshot. The retained bundle comes back on every reconnect, so `REPLAYED_VERSION` is routine.

Pure: no clock, no I/O; randomness comes in as `random_bytes` (e.g. `os.urandom`), so tests are
deterministic. Reading and writing key files is the caller's business; this module turns their
content (raw 32 bytes, hex or base64) into keys and back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, cast

import msgspec
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from msgspec import Meta

from edge.core import wire
from edge.core.eid import check_key
from edge.core.wire import (
    MAX_BUNDLE_BYTES,
    MAX_COUNTED_VISITS,
    MAX_OFFERS_PER_DAY,
    MAX_OFFERS_PER_WEEK,
    MAX_PREFERENCE_TERMS,
    MAX_ROSTER_DEVICES,
    SEGMENTS,
    WIRE_VERSION,
    RosterDevice,
    check_id,
    decode_error,
)

BUNDLE_TYPE = "roster_bundle"
BUNDLE_FORMAT = 3  # what build_bundle writes by default
BUNDLE_FORMATS = (1, 2, 3)  # what open_bundle reads
KEY_LEN = 32  # raw Ed25519 and X25519 keys, private and public
KEY_ID_LEN = 8  # bytes of SHA-256(raw public key)
NONCE_LEN = 12  # ChaCha20-Poly1305 (RFC 8439)
TAG_LEN = 16
SIGNATURE_LEN = 64  # Ed25519 (RFC 8032)
MAX_VERSION = wire.MAX_VERSION  # fits SQLite's INTEGER and the 8 bytes the HKDF info gives it
_HKDF_INFO = b"threshold/roster-bundle"

Kind = Literal["full", "delta"]
RandomBytes = Callable[[int], bytes]
PrivateKey = Ed25519PrivateKey | X25519PrivateKey
PublicKey = Ed25519PublicKey | X25519PublicKey

_HEADER_FIELDS = (
    "v",
    "type",
    "format",
    "chain",
    "store",
    "gateway",
    "recipient",
    "signer",
    "version",
    "base_version",
    "kind",
)


# --- Keys -----------------------------------------------------------------------------------------


class KeyFormatError(ValueError):
    """Key material that is not a 32-byte key; `reason` says where and what was expected."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _random(random_bytes: RandomBytes, n: int) -> bytes:
    value = random_bytes(n)
    if len(value) != n:
        raise ValueError(f"random_bytes({n}) returned {len(value)} bytes")
    return value


def generate_signing_key(random_bytes: RandomBytes) -> Ed25519PrivateKey:
    """A new bridge signing key (Ed25519) from 32 bytes of `random_bytes`."""
    return Ed25519PrivateKey.from_private_bytes(_random(random_bytes, KEY_LEN))


def generate_gateway_key(random_bytes: RandomBytes) -> X25519PrivateKey:
    """A new gateway key pair (X25519) from 32 bytes of `random_bytes`."""
    return X25519PrivateKey.from_private_bytes(_random(random_bytes, KEY_LEN))


def private_key_bytes(key: PrivateKey) -> bytes:
    """The raw 32 bytes of a private key (what a key file holds, in hex or base64)."""
    return key.private_bytes_raw()


def public_key_bytes(key: PrivateKey | PublicKey) -> bytes:
    """The raw 32 bytes of a public key, or of a private key's public half."""
    if isinstance(key, Ed25519PrivateKey | X25519PrivateKey):
        return key.public_key().public_bytes_raw()
    return key.public_bytes_raw()


def key_id(key: PrivateKey | PublicKey | bytes) -> str:
    """First 8 bytes of SHA-256 of the raw public key, hex (a private key: of its public half)."""
    raw = key if isinstance(key, bytes) else public_key_bytes(key)
    if len(raw) != KEY_LEN:
        raise ValueError(f"a public key is {KEY_LEN} bytes, got {len(raw)}")
    return hashlib.sha256(raw).digest()[:KEY_ID_LEN].hex()


def key_to_text(raw: bytes, encoding: Literal["base64", "hex"] = "base64") -> str:
    """A raw 32-byte key as text for a key file (no newline)."""
    if len(raw) != KEY_LEN:
        raise ValueError(f"a key is {KEY_LEN} bytes, got {len(raw)}")
    return raw.hex() if encoding == "hex" else base64.b64encode(raw).decode("ascii")


def key_from_text(data: bytes | str, what: str = "key") -> bytes:
    """The raw 32 bytes of a key file's content: raw bytes, 64 hex digits or base64."""
    if isinstance(data, bytes) and len(data) == KEY_LEN:
        return data
    expected = f"{KEY_LEN} raw bytes, {2 * KEY_LEN} hex digits or 44 base64 characters"
    if isinstance(data, bytes):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError(
                f"{what}: not a key ({len(data)} bytes; expected {expected})"
            ) from None
    else:
        text = data
    text = "".join(text.split())  # a trailing newline, or base64 wrapped over lines
    raw: bytes | None = None
    if len(text) == 2 * KEY_LEN:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != KEY_LEN:
        raise KeyFormatError(f"{what}: not a key ({len(text)} characters; expected {expected})")
    return raw


def load_signing_key(data: bytes | str, what: str = "bridge signing key") -> Ed25519PrivateKey:
    """The bridge's Ed25519 private key from key file content."""
    return Ed25519PrivateKey.from_private_bytes(key_from_text(data, what))


def load_signer_public_key(data: bytes | str, what: str = "bridge public key") -> Ed25519PublicKey:
    """A trusted bridge's Ed25519 public key from key file (or config) content."""
    raw = key_from_text(data, what)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyFormatError(f"{what}: not a valid Ed25519 public key") from None


def load_gateway_key(data: bytes | str, what: str = "gateway private key") -> X25519PrivateKey:
    """A gateway's X25519 private key from key file content."""
    return X25519PrivateKey.from_private_bytes(key_from_text(data, what))


def load_gateway_public_key(data: bytes | str, what: str = "gateway public key") -> X25519PublicKey:
    """A gateway's X25519 public key, as the bridge registers it."""
    return X25519PublicKey.from_public_bytes(key_from_text(data, what))


# --- Bodies and deltas ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FullRoster:
    """Every enrolled device the gateway should recognise: the snapshot that replaces its roster."""

    KIND: ClassVar[Literal["full"]] = "full"
    devices: tuple[RosterDevice, ...]


@dataclass(frozen=True, slots=True)
class RosterDelta:
    """Changes from `base_version`: devices to add, refs to forget, entries to replace (a new key,
    tier, kind, preferences, segments or visits)."""

    KIND: ClassVar[Literal["delta"]] = "delta"
    base_version: int
    add: tuple[RosterDevice, ...] = ()
    remove: tuple[str, ...] = ()
    rotate: tuple[RosterDevice, ...] = ()

    @property
    def size(self) -> int:
        """How many devices this delta touches."""
        return len(self.add) + len(self.remove) + len(self.rotate)


RosterChange = FullRoster | RosterDelta


class DeltaConflict(ValueError):
    """A delta that does not fit the roster it is applied to; `ref` names the device."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(reason)
        self.ref = ref
        self.reason = reason


def _first_repeat(refs: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for ref in refs:
        if ref in seen:
            return ref
        seen.add(ref)
    return None


def _repeated_ref(delta: RosterDelta) -> str | None:
    """A ref named twice in one delta (in one list or across add/remove/rotate), or None."""
    return _first_repeat(
        itertools.chain((d.ref for d in delta.add), delta.remove, (d.ref for d in delta.rotate))
    )


def apply_delta(current: Mapping[str, RosterDevice], delta: RosterDelta) -> dict[str, RosterDevice]:
    """The roster after `delta`, as a new dict; DeltaConflict if it does not fit `current`."""
    repeated = _repeated_ref(delta)
    if repeated is not None:
        raise DeltaConflict(repeated, f"the delta names device {repeated!r} more than once")
    result = dict(current)
    for ref in delta.remove:
        if result.pop(ref, None) is None:
            raise DeltaConflict(ref, f"the delta removes device {ref!r}, which is not enrolled")
    for device in delta.rotate:
        if device.ref not in result:
            raise DeltaConflict(
                device.ref, f"the delta rotates device {device.ref!r}, which is not enrolled"
            )
        result[device.ref] = device
    for device in delta.add:
        if device.ref in result:
            raise DeltaConflict(
                device.ref, f"the delta adds device {device.ref!r}, which is already enrolled"
            )
        result[device.ref] = device
    return result


def _row_1(device: RosterDevice) -> list[Any]:
    # Rows, not objects: a third smaller at 100k devices. The order is part of the format.
    return [device.ref, device.member, device.tier, device.identity_key.hex(), device.exponent]


def _row_2(device: RosterDevice) -> list[Any]:
    prefs = None if device.prefs is None else device.prefs.to_json()
    return [*_row_1(device), device.kind, prefs]


def _row_3(device: RosterDevice) -> list[Any]:
    return [*_row_2(device), device.segments, device.visits]


_ROW_WRITERS = {1: _row_1, 2: _row_2, 3: _row_3}


def _check_format(bundle_format: int) -> None:
    if bundle_format not in BUNDLE_FORMATS:
        raise ValueError(f"bundle format must be one of {BUNDLE_FORMATS}, got {bundle_format!r}")


def encode_body(change: RosterChange, bundle_format: int = BUNDLE_FORMAT) -> bytes:
    """The plaintext a bundle seals: JSON, each device a row (format 1: [ref, member, tier,
    identity_key hex, exponent]; format 2 adds kind and prefs; format 3 segments and visits)."""
    _check_format(bundle_format)
    row = _ROW_WRITERS[bundle_format]
    body: dict[str, Any]
    if isinstance(change, FullRoster):
        body = {"devices": [row(d) for d in change.devices]}
    else:
        body = {
            "add": [row(d) for d in change.add],
            "remove": list(change.remove),
            "rotate": [row(d) for d in change.rotate],
        }
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def plan_sync(
    previous: Mapping[str, RosterDevice] | None,
    current: Mapping[str, RosterDevice],
    previous_version: int | None,
) -> RosterChange:
    """What to send a gateway at `previous` (None: unknown): a delta when it is smaller, else a full.

    A device whose key, tier, kind, preferences, segments or visits changed is rotated: a
    preference or audience change reaches the gateway in the next delta.
    """
    for ref, device in current.items():
        if device.ref != ref:
            raise ValueError(f"roster entry {ref!r} holds device {device.ref!r}")
    full = FullRoster(tuple(current[ref] for ref in sorted(current)))
    if previous is None or previous_version is None:
        return full
    delta = RosterDelta(
        base_version=previous_version,
        add=tuple(current[ref] for ref in sorted(current.keys() - previous.keys())),
        remove=tuple(sorted(previous.keys() - current.keys())),
        rotate=tuple(
            current[ref]
            for ref in sorted(current.keys() & previous.keys())
            if current[ref] != previous[ref]
        ),
    )
    return delta if len(encode_body(delta)) < len(encode_body(full)) else full


# --- Rejections ---------------------------------------------------------------------------------------


class RejectReason(StrEnum):
    """Why a gateway refused a bundle: short codes for its status topic and for tests."""

    TRUNCATED = "truncated"  # empty, or JSON that stops early
    MALFORMED = "malformed"  # not JSON, a missing or mistyped field, not canonical
    UNKNOWN_FORMAT = "unknown_format"  # "v" or "format" this gateway does not speak
    UNKNOWN_TYPE = "unknown_type"  # not a roster bundle at all
    UNKNOWN_SIGNER = "unknown_signer"  # signed by a key this gateway does not trust
    BAD_SIGNATURE = "bad_signature"  # forged or altered
    WRONG_RECIPIENT = "wrong_recipient"  # sealed to another gateway's key
    WRONG_STORE = "wrong_store"  # for another chain or store
    WRONG_GATEWAY = "wrong_gateway"  # for another gateway of this store
    STALE_VERSION = "stale_version"  # older than the roster in force
    REPLAYED_VERSION = "replayed_version"  # the version in force (retained copies come back)
    BASE_MISMATCH = "base_mismatch"  # a delta from another version: needs a full snapshot
    DECRYPT_FAILED = "decrypt_failed"  # signed, but this gateway's key does not open it
    BAD_BODY = "bad_body"  # opened, but the devices inside are invalid
    DELTA_CONFLICT = "delta_conflict"  # a delta that does not fit the roster in force


class BundleRejected(ValueError):
    """A bundle the gateway must not apply: `reason` (a code), `message` (for a person)."""

    def __init__(self, reason: RejectReason, message: str, version: int | None = None) -> None:
        super().__init__(f"{message} [{reason}]")
        self.reason = reason
        self.message = message
        self.version = version  # the bundle's claimed version, where it could be read


# --- Envelope ---------------------------------------------------------------------------------------


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The one byte form of an envelope: sorted keys, no whitespace, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _derive_key(
    shared: bytes,
    ephemeral_public: bytes,
    recipient_public: bytes,
    bundle_format: int,
    chain: str,
    store: str,
    gateway: str,
    version: int,
) -> bytes:
    # Ids are [a-z0-9_-], so NUL separates them unambiguously.
    info = b"\x00".join(
        (
            _HKDF_INFO,
            bundle_format.to_bytes(2, "big"),
            chain.encode("ascii"),
            store.encode("ascii"),
            gateway.encode("ascii"),
            version.to_bytes(8, "big"),
        )
    )
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public + recipient_public,
        info=info,
    )
    return hkdf.derive(shared)


def _check_device(device: RosterDevice, bundle_format: int) -> None:
    for value, name in ((device.ref, "ref"), (device.member, "member"), (device.tier, "tier")):
        check_id(value, f"device {name}")
    check_key(device.identity_key, device.exponent)
    if bundle_format < 3 and (device.segments or device.visits):
        raise ValueError(
            f"device {device.ref!r} has segments or visits, which format {bundle_format} cannot "
            "carry"
        )
    if bundle_format == 1:
        if device.kind is not None or device.prefs is not None:
            raise ValueError(
                f"device {device.ref!r} has a kind or preferences, which format 1 cannot carry"
            )
        return
    audience: tuple[tuple[object, str, int], ...] = (
        (device.segments, "segments", 2 ** len(SEGMENTS) - 1),
        (device.visits, "visits", MAX_COUNTED_VISITS),
    )
    for number, field_name, high in audience:
        if type(number) is not int or not 0 <= number <= high:
            raise ValueError(
                f"device {device.ref!r}: {field_name} must be 0..{high}, got {number!r}"
            )
    if device.kind not in (None, "app", "tag"):
        raise ValueError(f"device {device.ref!r}: kind {device.kind!r} is not app, tag or None")
    prefs = device.prefs
    if prefs is not None:
        mask_max = 2**MAX_PREFERENCE_TERMS - 1
        checks: tuple[tuple[object, str, int], ...] = (
            (prefs.interests, "interests", mask_max),
            (prefs.promotions, "promotions", mask_max),
            (prefs.per_day, "per_day", MAX_OFFERS_PER_DAY),
            (prefs.per_week, "per_week", MAX_OFFERS_PER_WEEK),
        )
        for number, field_name, high in checks:
            if type(number) is not int or not 0 <= number <= high:
                raise ValueError(
                    f"device {device.ref!r}: prefs {field_name} must be 0..{high}, got {number!r}"
                )


def build_bundle(
    change: RosterChange,
    *,
    chain: str,
    store: str,
    gateway: str,
    version: int,
    recipient_public_key: X25519PublicKey,
    signing_key: Ed25519PrivateKey,
    random_bytes: RandomBytes,
    bundle_format: int = BUNDLE_FORMAT,
) -> bytes:
    """Seal `change` to one gateway's key and sign it: the bytes to publish (bridge side).

    `bundle_format` 1 or 2 only for gateways too old for 3 (and tests): format 1 cannot carry kind
    or preferences, neither segments or visits, and they refuse devices that have them.
    """
    _check_format(bundle_format)
    for value, name in ((chain, "chain"), (store, "store"), (gateway, "gateway")):
        check_id(value, name)
    if not 1 <= version <= MAX_VERSION:
        raise ValueError(f"bundle version must be 1..{MAX_VERSION}, got {version}")
    base_version: int | None = None
    if isinstance(change, RosterDelta):
        base_version = change.base_version
        if not 0 <= base_version < version:
            raise ValueError(f"a delta's base version must be 0..{version - 1}, got {base_version}")
        devices = change.add + change.rotate
        repeated = _repeated_ref(change)
        for ref in change.remove:
            check_id(ref, "removed device ref")
    else:
        devices = change.devices
        repeated = _first_repeat(d.ref for d in devices)
    if repeated is not None:
        raise ValueError(f"device {repeated!r} appears more than once in the bundle")
    for device in devices:
        _check_device(device, bundle_format)

    recipient_public = recipient_public_key.public_bytes_raw()
    header: dict[str, Any] = {
        "v": WIRE_VERSION,
        "type": BUNDLE_TYPE,
        "format": bundle_format,
        "chain": chain,
        "store": store,
        "gateway": gateway,
        "recipient": key_id(recipient_public),
        "signer": key_id(signing_key),
        "version": version,
        "base_version": base_version,
        "kind": change.KIND,
    }
    ephemeral = X25519PrivateKey.from_private_bytes(_random(random_bytes, KEY_LEN))
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    key = _derive_key(
        ephemeral.exchange(recipient_public_key),
        ephemeral_public,
        recipient_public,
        bundle_format,
        chain,
        store,
        gateway,
        version,
    )
    nonce = _random(random_bytes, NONCE_LEN)
    ciphertext = ChaCha20Poly1305(key).encrypt(
        nonce, encode_body(change, bundle_format), canonical_json(header)
    )
    unsigned = {
        **header,
        "nonce": _b64(nonce),
        "ephemeral_key": _b64(ephemeral_public),
        "ciphertext": _b64(ciphertext),
    }
    signature = signing_key.sign(canonical_json(unsigned))
    return canonical_json({**unsigned, "signature": _b64(signature)})


@dataclass(frozen=True, slots=True)
class _Envelope:
    """A parsed, well-formed but not yet verified envelope."""

    header: dict[str, Any]
    format: int
    chain: str
    store: str
    gateway: str
    recipient: str
    signer: str
    version: int
    base_version: int | None
    kind: Kind
    nonce: bytes
    ephemeral_key: bytes
    ciphertext: bytes
    signature: bytes
    signed: bytes


_KeyIdText = Annotated[str, Meta(pattern=f"^[0-9a-f]{{{2 * KEY_ID_LEN}}}$")]
_Scalar = int | float | str | bool | None


class _BundleHead(msgspec.Struct, frozen=True):
    """What decides which checks follow: the type, the format, and the version claimed."""

    type: _Scalar = None
    v: _Scalar = None
    format: _Scalar = None
    version: _Scalar = None


class _WireEnvelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The envelope: every field required, nothing else allowed; binary fields base64."""

    v: int
    type: str
    format: int
    chain: wire.Id
    store: wire.Id
    gateway: wire.Id
    recipient: _KeyIdText
    signer: _KeyIdText
    version: Annotated[int, Meta(ge=1, le=MAX_VERSION)]
    base_version: Annotated[int, Meta(ge=0, le=MAX_VERSION)] | None
    kind: Kind
    nonce: Annotated[bytes, Meta(min_length=NONCE_LEN, max_length=NONCE_LEN)]
    ephemeral_key: Annotated[bytes, Meta(min_length=KEY_LEN, max_length=KEY_LEN)]
    ciphertext: Annotated[bytes, Meta(min_length=TAG_LEN)]
    signature: Annotated[bytes, Meta(min_length=SIGNATURE_LEN, max_length=SIGNATURE_LEN)]


_HEAD = msgspec.json.Decoder(_BundleHead)
_ENVELOPE = msgspec.json.Decoder(_WireEnvelope)


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not float


def _parse_envelope(data: bytes, where: str) -> _Envelope:
    if not data:
        raise BundleRejected(RejectReason.TRUNCATED, f"{where}: empty payload")
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleRejected(
            RejectReason.MALFORMED,
            f"{where}: {len(data)} bytes, over the {MAX_BUNDLE_BYTES}-byte limit",
        )
    if not data.isascii():  # canonical form is ASCII
        raise BundleRejected(RejectReason.MALFORMED, f"{where}: not JSON (not ASCII)")
    try:
        head = _HEAD.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        # A canonical envelope is flat, so it ends with its only '}': anything else was cut short.
        cut = isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError)
        if cut and not data.rstrip().endswith(b"}"):
            raise BundleRejected(
                RejectReason.TRUNCATED, f"{where}: cut short after {len(data)} bytes"
            ) from None
        raise BundleRejected(RejectReason.MALFORMED, decode_error(where, exc).reason) from None
    if head.type != BUNDLE_TYPE:
        raise BundleRejected(
            RejectReason.UNKNOWN_TYPE,
            f"{where}: type {head.type!r:.40} is not {BUNDLE_TYPE!r}",
        )
    v, fmt = head.v, head.format
    if not (_is_int(v) and v == WIRE_VERSION and _is_int(fmt) and fmt in BUNDLE_FORMATS):
        raise BundleRejected(
            RejectReason.UNKNOWN_FORMAT,
            f"{where}: v {v!r:.20} format {fmt!r:.20} is not supported (expected v 1, format "
            f"{' or '.join(map(str, BUNDLE_FORMATS))}); update this gateway's software",
        )
    claimed = head.version if isinstance(head.version, int) and _is_int(head.version) else None

    def malformed(what: str) -> BundleRejected:
        return BundleRejected(RejectReason.MALFORMED, f"{where}: {what}", claimed)

    try:
        env = _ENVELOPE.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise malformed(decode_error(where, exc).reason.removeprefix(f"{where}: ")) from None
    version, kind, base = env.version, env.kind, env.base_version
    if kind == "full" and base is not None:
        raise malformed("a full bundle has base_version null")
    if kind == "delta" and not (base is not None and 0 <= base < version):
        raise malformed(f"a delta's base_version must be an integer 0..{version - 1}")
    header: dict[str, Any] = {name: getattr(env, name) for name in _HEADER_FIELDS}
    unsigned = {
        **header,
        "nonce": _b64(env.nonce),
        "ephemeral_key": _b64(env.ephemeral_key),
        "ciphertext": _b64(env.ciphertext),
    }
    # The one byte form: also refuses repeated keys, whitespace and non-canonical base64.
    if canonical_json({**unsigned, "signature": _b64(env.signature)}) != data:
        raise malformed("not in canonical form (sorted keys, no whitespace, ASCII)")
    return _Envelope(
        header=header,
        format=env.format,
        chain=env.chain,
        store=env.store,
        gateway=env.gateway,
        recipient=env.recipient,
        signer=env.signer,
        version=version,
        base_version=base,
        kind=kind,
        nonce=env.nonce,
        ephemeral_key=env.ephemeral_key,
        ciphertext=env.ciphertext,
        signature=env.signature,
        signed=canonical_json(unsigned),
    )


class _BodyError(Exception):
    """Internal: the decrypted body is not valid; becomes BundleRejected(BAD_BODY)."""


# A device row of format 1: [ref, member, tier, identity_key hex, exponent]; format 2 adds
# kind ("app" | "tag" | null) and prefs ([interests, promotions, per_day, per_week] | null).
_Row1 = tuple[wire.Id, wire.Id, wire.Id, wire.HexKey, wire.Exponent]
_Row2 = tuple[
    wire.Id,
    wire.Id,
    wire.Id,
    wire.HexKey,
    wire.Exponent,
    wire.DeviceKind | None,
    wire.WirePrefs | None,
]
# Format 3 adds segments (a mask of wire.SEGMENTS) and visits (0..MAX_COUNTED_VISITS).
_Row3 = tuple[
    wire.Id,
    wire.Id,
    wire.Id,
    wire.HexKey,
    wire.Exponent,
    wire.DeviceKind | None,
    wire.WirePrefs | None,
    Annotated[int, Meta(ge=0, le=2 ** len(SEGMENTS) - 1)],
    Annotated[int, Meta(ge=0, le=MAX_COUNTED_VISITS)],
]
_Rows1 = Annotated[list[_Row1], Meta(max_length=MAX_ROSTER_DEVICES)]
_Rows2 = Annotated[list[_Row2], Meta(max_length=MAX_ROSTER_DEVICES)]
_Rows3 = Annotated[list[_Row3], Meta(max_length=MAX_ROSTER_DEVICES)]
_Removed = Annotated[list[wire.Id], Meta(max_length=MAX_ROSTER_DEVICES)]
_ROW_LAYOUT_1 = "a device is [ref, member, tier, identity_key (32 hex digits), exponent 0..15]"
_ROW_LAYOUT_2 = (
    "a device is [ref, member, tier, identity_key (32 hex digits), exponent 0..15, "
    '"app" | "tag" | null, [interests mask, promotions mask, per_day 0..'
    f"{MAX_OFFERS_PER_DAY}, per_week 0..{MAX_OFFERS_PER_WEEK}] | null]"
)
_ROW_LAYOUT_3 = (
    f"{_ROW_LAYOUT_2.removesuffix(']')}, segments 0..{2 ** len(SEGMENTS) - 1} (a mask of "
    f"{', '.join(SEGMENTS)}), visits 0..{MAX_COUNTED_VISITS}]"
)


class _FullBody1(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    devices: _Rows1


class _DeltaBody1(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    add: _Rows1
    remove: _Removed
    rotate: _Rows1


class _FullBody2(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    devices: _Rows2


class _DeltaBody2(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    add: _Rows2
    remove: _Removed
    rotate: _Rows2


class _FullBody3(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    devices: _Rows3


class _DeltaBody3(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    add: _Rows3
    remove: _Removed
    rotate: _Rows3


_BODY_DECODERS: dict[tuple[int, Kind], msgspec.json.Decoder[Any]] = {
    (1, "full"): msgspec.json.Decoder(_FullBody1),
    (1, "delta"): msgspec.json.Decoder(_DeltaBody1),
    (2, "full"): msgspec.json.Decoder(_FullBody2),
    (2, "delta"): msgspec.json.Decoder(_DeltaBody2),
    (3, "full"): msgspec.json.Decoder(_FullBody3),
    (3, "delta"): msgspec.json.Decoder(_DeltaBody3),
}
_ROW_LAYOUTS = {1: _ROW_LAYOUT_1, 2: _ROW_LAYOUT_2, 3: _ROW_LAYOUT_3}


_KINDS: dict[str | None, wire.DeviceKind | None] = {"app": "app", "tag": "tag", None: None}


class _Interned:
    """Rows to devices: members who stated the same preferences share one MemberPrefs object (the
    defaults, "no offers", a popular few), and kinds are the module's constants, not a string per
    device."""

    def __init__(self) -> None:
        self._prefs: dict[tuple[int, int, int, int], wire.MemberPrefs] = {}

    def devices(self, rows: list[_Row1] | list[_Row2] | list[_Row3]) -> tuple[RosterDevice, ...]:
        out: list[RosterDevice] = []
        for row in rows:
            r, m, t, k, e = row[:5]
            kind: wire.DeviceKind | None = None
            prefs: wire.MemberPrefs | None = None
            segments = visits = 0
            if len(row) >= 7:
                kind, wire_prefs = _KINDS[row[5]], row[6]
                if wire_prefs is not None:
                    prefs = self._prefs.get(wire_prefs)
                    if prefs is None:
                        prefs = self._prefs[wire_prefs] = wire.MemberPrefs(*wire_prefs)
            if len(row) == 9:
                segments, visits = cast(_Row3, row)[7:]
            out.append(RosterDevice(r, m, t, bytes.fromhex(k), e, kind, prefs, segments, visits))
        return tuple(out)


def _parse_body(plaintext: bytes, envelope: _Envelope) -> RosterChange:
    try:
        body = _BODY_DECODERS[envelope.format, envelope.kind].decode(plaintext)
    except (msgspec.DecodeError, RecursionError) as exc:
        reason = decode_error(f"the {envelope.kind} body (format {envelope.format})", exc).reason
        raise _BodyError(f"{reason} ({_ROW_LAYOUTS[envelope.format]})") from None
    interned = _Interned()
    if isinstance(body, _FullBody1 | _FullBody2 | _FullBody3):
        devices = interned.devices(body.devices)
        if len({d.ref for d in devices}) != len(devices):
            raise _BodyError("a device ref appears more than once")
        return FullRoster(devices)
    assert envelope.base_version is not None  # checked by _parse_envelope for a delta
    delta = RosterDelta(
        envelope.base_version,
        add=interned.devices(body.add),
        remove=tuple(body.remove),
        rotate=interned.devices(body.rotate),
    )
    repeated = _repeated_ref(delta)
    if repeated is not None:
        raise _BodyError(f"device {repeated!r} appears more than once in the delta")
    return delta


@dataclass(frozen=True, slots=True)
class OpenedBundle:
    """A verified, decrypted bundle: what the gateway applies to move to `version`."""

    chain: str
    store: str
    gateway: str
    version: int
    signer: str  # key id of the bridge key that signed it
    change: RosterChange

    @property
    def kind(self) -> Kind:
        return self.change.KIND

    def roster_after(self, current: Mapping[str, RosterDevice]) -> dict[str, RosterDevice]:
        """The roster at `version`: the snapshot, or `current` (at the base version) plus the delta."""
        if isinstance(self.change, FullRoster):
            return {d.ref: d for d in self.change.devices}
        try:
            return apply_delta(current, self.change)
        except DeltaConflict as exc:
            raise BundleRejected(
                RejectReason.DELTA_CONFLICT,
                f"delta to version {self.version}: {exc.reason}; the gateway needs a full snapshot",
                self.version,
            ) from None


def open_bundle(
    data: bytes,
    *,
    gateway_private_key: X25519PrivateKey,
    trusted_signer_public_keys: Iterable[Ed25519PublicKey],
    expected_chain: str,
    expected_store: str,
    expected_gateway: str,
    current_version: int,
    where: str = "roster bundle",
) -> OpenedBundle:
    """Verify, then decrypt, a bundle for this gateway; BundleRejected(reason) if it must not apply."""
    env = _parse_envelope(data, where)
    ident = f"{where} v{env.version} ({env.kind})"

    def reject(reason: RejectReason, message: str) -> BundleRejected:
        return BundleRejected(reason, f"{ident}: {message}", env.version)

    trusted = {key_id(k): k for k in trusted_signer_public_keys}
    signer = trusted.get(env.signer)
    if signer is None:
        raise reject(
            RejectReason.UNKNOWN_SIGNER,
            f"signed by key {env.signer}, which this gateway does not trust (trusted: "
            f"{', '.join(sorted(trusted)) or 'none'}); add the bridge's public key to its config",
        )
    try:
        signer.verify(env.signature, env.signed)
    except InvalidSignature:
        raise reject(
            RejectReason.BAD_SIGNATURE,
            f"the signature by key {env.signer} does not match: forged or altered on the way",
        ) from None
    own_id = key_id(gateway_private_key)
    if env.recipient != own_id:
        raise reject(
            RejectReason.WRONG_RECIPIENT,
            f"sealed to key {env.recipient}, not this gateway's key {own_id}; "
            "register this gateway's public key with the bridge",
        )
    if (env.chain, env.store) != (expected_chain, expected_store):
        raise reject(
            RejectReason.WRONG_STORE,
            f"for store {env.chain}/{env.store}, this gateway is in {expected_chain}/{expected_store}; "
            "check gateway.chain and gateway.store in its config and the bridge's registry",
        )
    if env.gateway != expected_gateway:
        raise reject(
            RejectReason.WRONG_GATEWAY,
            f"for gateway {env.gateway!r}, this gateway is {expected_gateway!r}; "
            "check gateway.id in its config and the bridge's registry",
        )
    if env.version < current_version:
        raise reject(
            RejectReason.STALE_VERSION, f"older than the roster in force (v{current_version})"
        )
    if env.version == current_version:
        raise reject(RejectReason.REPLAYED_VERSION, "this version is already in force")
    if env.kind == "delta" and env.base_version != current_version:
        raise reject(
            RejectReason.BASE_MISMATCH,
            f"a delta from v{env.base_version}, but this gateway has v{current_version}: "
            "it needs a full snapshot",
        )
    try:
        key = _derive_key(
            gateway_private_key.exchange(X25519PublicKey.from_public_bytes(env.ephemeral_key)),
            env.ephemeral_key,
            public_key_bytes(gateway_private_key),
            env.format,
            env.chain,
            env.store,
            env.gateway,
            env.version,
        )
        plaintext = ChaCha20Poly1305(key).decrypt(
            env.nonce, env.ciphertext, canonical_json(env.header)
        )
    except (InvalidTag, ValueError):  # ValueError: a low-order ephemeral key (all-zero secret)
        raise reject(
            RejectReason.DECRYPT_FAILED,
            f"signed, but this gateway's key {own_id} does not open it; "
            "the bridge sealed it with a wrong key",
        ) from None
    try:
        change = _parse_body(plaintext, env)
    except _BodyError as exc:
        raise reject(RejectReason.BAD_BODY, f"invalid body: {exc}") from None
    return OpenedBundle(env.chain, env.store, env.gateway, env.version, env.signer, change)
