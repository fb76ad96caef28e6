"""Signed messages: how a gateway knows an ack or a campaigns set comes from its bridge (issue 9).

Format 1 wraps any wire payload (edge/core/wire.py) in a JSON envelope::

    {"v": 1, "type": "signed", "format": 1, "signer": <bridge key id>,
     "payload": <base64 of the wire payload's bytes>, "signature": <base64, 64 bytes>}

The signature is Ed25519, by the bridge's signing key (the one that signs roster bundles), over
`DOMAIN || len(topic) (2 bytes, big-endian) || topic || payload`: the MQTT topic is covered, so a
message signed for one gateway's topic is refused on another's, and an ack cannot be replayed as
anything else. The topic is not carried: the receiver supplies the topic it subscribed to. Only the
payload's bytes are trusted, and only after the signature verifies; the envelope's own byte form is
not signed and need not be canonical.

Decoding is strict and bounded (msgspec, a size limit, unknown fields refused): a bad envelope is a
`SignedRejected` with a short `reason` code, never another exception. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.core.bundle import key_id

SIGNED_TYPE = "signed"
SIGNED_FORMAT = 1
SIGNATURE_LEN = 64  # Ed25519 (RFC 8032)
#: The largest envelope accepted: a campaigns set of a few hundred campaigns fits many times over.
MAX_SIGNED_BYTES = 256 * 1024
_DOMAIN = b"threshold/signed/1\x00"
_TOPIC_MAX = 65535  # what two length bytes can say; MQTT topics are shorter anyway


class SignedReason(StrEnum):
    """Why a signed message was refused: short codes for status topics, counters and tests."""

    UNSIGNED = "unsigned"  # a plain payload where a signed one is required
    MALFORMED = "malformed"  # not a valid envelope (not JSON, a wrong type, too big, ...)
    UNKNOWN_FORMAT = "unknown_format"  # a "v" or "format" this receiver does not speak
    UNKNOWN_SIGNER = "unknown_signer"  # signed by a key this receiver does not trust
    BAD_SIGNATURE = "bad_signature"  # forged, altered, or signed for another topic


class SignedRejected(ValueError):
    """A signed message that must not be believed: `reason` (a code), `message` (for a person)."""

    def __init__(self, reason: SignedReason, message: str) -> None:
        super().__init__(f"{message} [{reason}]")
        self.reason = reason
        self.message = message


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    type: str
    format: int
    signer: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_SIGNED_BYTES)]
    signature: Annotated[bytes, msgspec.Meta(min_length=SIGNATURE_LEN, max_length=SIGNATURE_LEN)]


class _Kind(msgspec.Struct):
    """Just enough of any JSON object to tell a plain payload from a malformed envelope."""

    type: str = ""


_DECODER = msgspec.json.Decoder(_Envelope)
_KIND_DECODER = msgspec.json.Decoder(_Kind)
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Verified:
    """A payload whose signature verified for the topic it arrived on, and who signed it."""

    payload: bytes
    signer: str  # the signing key's id


def signed_message(topic: str, payload: bytes) -> bytes:
    """The bytes the signature covers: the domain, the topic (length-prefixed) and the payload."""
    raw_topic = topic.encode("utf-8")
    if len(raw_topic) > _TOPIC_MAX:
        raise ValueError(f"topic is {len(raw_topic)} bytes, at most {_TOPIC_MAX}")
    return _DOMAIN + len(raw_topic).to_bytes(2, "big") + raw_topic + payload


def sign(payload: bytes, topic: str, signing_key: Ed25519PrivateKey) -> bytes:
    """Wrap `payload` for `topic` in a signed envelope (Ed25519 signatures are deterministic)."""
    if len(payload) > MAX_SIGNED_BYTES:
        raise ValueError(f"payload is {len(payload)} bytes, at most {MAX_SIGNED_BYTES} are signed")
    envelope = _Envelope(
        v=1,
        type=SIGNED_TYPE,
        format=SIGNED_FORMAT,
        signer=key_id(signing_key),
        payload=payload,
        signature=signing_key.sign(signed_message(topic, payload)),
    )
    return _ENCODER.encode(envelope)


def verify(
    data: bytes,
    topic: str,
    trusted_signers: Iterable[Ed25519PublicKey],
    where: str = "message",
) -> Verified:
    """The payload inside `data` if a trusted key signed it for `topic`; else SignedRejected."""
    if len(data) > 2 * MAX_SIGNED_BYTES:  # base64 makes the payload 4/3 as long, plus the fields
        raise SignedRejected(
            SignedReason.MALFORMED, f"{where}: {len(data)} bytes, too big for a signed message"
        )
    # msgspec raises RecursionError (not a DecodeError) for nesting deeper than it recurses, also
    # where it skips an unknown field: `{"a":{"a":...}}` must be a refusal, not a crashed loop.
    try:
        envelope = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        try:
            kind = _KIND_DECODER.decode(data).type
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            kind = SIGNED_TYPE
        if kind != SIGNED_TYPE:
            raise SignedRejected(
                SignedReason.UNSIGNED,
                f"{where}: a plain {kind or 'untyped'!r} payload; only a message signed by a "
                "trusted bridge key is accepted here",
            ) from None
        raise SignedRejected(
            SignedReason.MALFORMED, f"{where}: not a valid signed message: {exc}"
        ) from None
    if envelope.type != SIGNED_TYPE:
        raise SignedRejected(SignedReason.UNSIGNED, f"{where}: type {envelope.type!r}, not signed")
    if envelope.v != 1 or envelope.format != SIGNED_FORMAT:
        raise SignedRejected(
            SignedReason.UNKNOWN_FORMAT,
            f"{where}: signed message v{envelope.v} format {envelope.format} is not supported "
            f"(expected v1 format {SIGNED_FORMAT})",
        )
    trusted = {key_id(k): k for k in trusted_signers}
    signer = trusted.get(envelope.signer)
    if signer is None:
        raise SignedRejected(
            SignedReason.UNKNOWN_SIGNER,
            f"{where}: signed by key {envelope.signer}, which is not trusted (trusted: "
            f"{', '.join(sorted(trusted)) or 'none'})",
        )
    try:
        signer.verify(envelope.signature, signed_message(topic, envelope.payload))
    except InvalidSignature:
        raise SignedRejected(
            SignedReason.BAD_SIGNATURE,
            f"{where}: the signature by key {envelope.signer} does not verify for this topic "
            "(forged, altered, or signed for another topic)",
        ) from None
    return Verified(envelope.payload, envelope.signer)
