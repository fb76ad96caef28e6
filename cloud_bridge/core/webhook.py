"""The webhook channel, sans I/O: what the bridge POSTs to the retailer's push service, how it is
signed, what each answer means, when the next attempt comes, and how fast attempts may start.

docs/webhook.md is the retailer's side of this contract. The body is versioned JSON: the offer as
the app receives it over MQTT (wire.ShopperOffer) plus the shopper's delivery token and the channel.
Every attempt carries `Idempotency-Key: <offer_id>` (the same on every attempt: the receiver drops
what it already has) and `Threshold-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`
(the timestamp inside the MAC, so a captured request cannot be replayed later than the receiver's
tolerance). Retries wait a capped exponential backoff with full jitter (edge/core/backoff.py), and
at least what a 429/503's Retry-After asks, and only while the offer is still valid: a wait drawn
past its expiry is drawn again within what is left; when what Retry-After asks goes past it, the
offer is recorded dead with why. A 429 (or a 503 with Retry-After) is the push service saying "slow
down" to the whole channel, not to one offer: ChannelPause holds every new attempt until then.
"""

from __future__ import annotations

import email.utils
import enum
import hashlib
import hmac
import json
import math
from dataclasses import dataclass

from edge.core import wire
from edge.core.backoff import backoff_s

#: The body's format version (`"v"`): a receiver refuses a version it does not know.
BODY_VERSION = 1
SIGNATURE_HEADER = "Threshold-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: How far a signature's timestamp may be from the receiver's clock (either way) by default.
DEFAULT_TOLERANCE_S = 300.0
#: The first retry waits up to this long (full jitter: anywhere from 0), doubling per attempt.
FIRST_RETRY_S = 1.0
#: How much of a refusing answer's body goes into `last_error` (characters).
EXCERPT_CHARS = 200
#: Longest signature header a verifier reads (a few v1 values during a secret rotation).
MAX_SIGNATURE_HEADER_CHARS = 1024
#: Statuses that say "not now": retried. Every other 4xx is permanent.
RETRY_STATUSES = frozenset({408, 425, 429})
#: Statuses whose Retry-After is honoured (RFC 9110 §10.2.3).
RETRY_AFTER_STATUSES = frozenset({429, 503})


class SignatureError(Exception):
    """A request whose signature does not verify; `.reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BodyError(Exception):
    """A stored offer that cannot be turned into a request body (a damaged row)."""


# --- the request ----------------------------------------------------------------------------------


def request_body(offer: wire.ShopperOffer, shopper: str, channel: str = "webhook") -> bytes:
    """The JSON body for `offer` to the shopper whose delivery token is `shopper`."""
    body = {
        "v": BODY_VERSION,
        "type": "offer",
        "channel": channel,
        "shopper": shopper,
        **offer.to_json(),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def body_from_stored(payload: bytes, shopper: str) -> bytes:
    """The body for an offer as the records keep it (its wire payload); BodyError if damaged."""
    if not shopper:
        raise BodyError("no shopper token")
    try:
        offer = wire.decode_as(payload, wire.ShopperOffer, "stored offer")
    except wire.WireError as exc:
        raise BodyError(exc.reason) from None
    return request_body(offer, shopper)


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `"<timestamp>." + body` under `secret`."""
    message = f"{timestamp}.".encode("ascii") + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def request_headers(secret: bytes, body: bytes, offer_id: str, now_s: float) -> dict[str, str]:
    """The headers of one attempt: content type, idempotency key, signature with `now_s`."""
    timestamp = int(now_s)
    return {
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: offer_id,
        SIGNATURE_HEADER: f"t={timestamp},v1={signature(secret, body, timestamp)}",
    }


def verify_signature(
    secret: bytes,
    body: bytes,
    header: str | None,
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a `Threshold-Signature` header against the body; its timestamp, or SignatureError.

    What a receiver runs on the raw body before parsing it (docs/webhook.md). Any `v1` value may
    match (several during a secret rotation); the comparison takes constant time.
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    if len(header) > MAX_SIGNATURE_HEADER_CHARS:
        raise SignatureError(f"{SIGNATURE_HEADER} is longer than {MAX_SIGNATURE_HEADER_CHARS}")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq:
            raise SignatureError(f"{SIGNATURE_HEADER}: {part.strip()[:40]!r} is not key=value")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise SignatureError(f"{SIGNATURE_HEADER}: t must be Unix seconds")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None:
        raise SignatureError(f"{SIGNATURE_HEADER}: no t= timestamp")
    if not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER}: no v1= signature")
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureError(
            f"{SIGNATURE_HEADER}: timestamp {timestamp} is {now_s - timestamp:+.0f} s from now, "
            f"beyond the {tolerance_s:g} s tolerance (a replay, or a clock off)"
        )
    expected = signature(secret, body, timestamp).encode("ascii")
    matched = False
    for candidate in candidates:
        # Every candidate is compared (no early exit on the first match).
        matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise SignatureError(f"{SIGNATURE_HEADER}: v1 does not match the body (wrong secret?)")
    return timestamp


# --- what an attempt's result means ---------------------------------------------------------------


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # the push service has it (2xx)
    RETRY = "retry"  # not now: try again later, within validity
    PERMANENT = "permanent"  # refused for good: dead at once


class Failure(enum.Enum):
    """Ways an attempt fails without an HTTP answer (the adapter maps its library's errors)."""

    TIMEOUT = "timeout"  # no full answer within timeout_s: it may have arrived (ambiguous)
    REFUSED = "connection refused"  # nothing listening: it did not arrive
    RESET = "connection reset"  # closed mid-exchange: it may have arrived (ambiguous)
    NOT_HTTP = "not an HTTP answer"  # garbage back: it may have arrived (ambiguous)
    NETWORK = "network error"  # DNS, routing, TLS: retried


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt came to, and why, for `last_error`."""

    verdict: Verdict
    error: str | None = None  # None when delivered
    retry_after_s: float | None = None  # what the endpoint asked for (429/503), capped
    #: The endpoint asked the whole channel to slow down: a 429, or a 503 with a Retry-After.
    slow_down: bool = False


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable excerpt of an answer's body for IT to read."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:limit] + ("…" if len(text) > limit else "")


def parse_retry_after(value: str | None, now_s: float, cap_s: float) -> float | None:
    """A Retry-After header as seconds from now (delta-seconds or an HTTP date), within
    [0, cap_s]; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(int(value[:12])), cap_s)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zoneless one is read as such
        return None
    return min(max(0.0, when.timestamp() - now_s), cap_s)


def classify_response(
    status: int, retry_after: str | None, body: bytes, now_s: float, cap_s: float
) -> Result:
    """An HTTP answer: 2xx delivered; 408/425/429/5xx retried (429/503 with their Retry-After);
    any other status permanent, with its body's excerpt."""
    if 200 <= status < 300:
        return Result(Verdict.DELIVERED)
    detail = excerpt(body)
    error = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in RETRY_STATUSES or 500 <= status < 600:
        after = (
            parse_retry_after(retry_after, now_s, cap_s) if status in RETRY_AFTER_STATUSES else None
        )
        slow_down = status == 429 or (status == 503 and after is not None)
        return Result(Verdict.RETRY, error, after, slow_down)
    if 400 <= status < 500:
        return Result(Verdict.PERMANENT, f"permanent: {error}")
    # 1xx or 3xx: the push service must answer a POST with a final status, not a redirect.
    return Result(Verdict.PERMANENT, f"permanent: {error} (redirects are not followed)")


def classify_failure(failure: Failure, detail: str = "") -> Result:
    """An attempt that got no HTTP answer: always retried."""
    detail = " ".join(detail.split())[:EXCERPT_CHARS]  # one line: a parser's message has several
    return Result(Verdict.RETRY, failure.value + (f": {detail}" if detail else ""))


# --- what happens next ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_retry_s: float = FIRST_RETRY_S
    max_backoff_s: float = 300.0


class Next(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Step:
    """The offer after an attempt: sent, retried at `at` (Unix s), or dead with `error`."""

    next: Next
    attempts: int  # attempts made, this one included
    at: float | None = None
    error: str | None = None


def next_step(
    result: Result,
    attempts_before: int,
    now_s: float,
    expires_at: float,
    policy: RetryPolicy,
    draw: float,
) -> Step:
    """Where an offer goes after one more attempt; `draw` is uniform in [0, 1) (the jitter)."""
    attempts = attempts_before + 1
    if result.verdict is Verdict.DELIVERED:
        return Step(Next.SENT, attempts)
    error = result.error or "failed"
    if result.verdict is Verdict.PERMANENT:
        return Step(Next.DEAD, attempts, error=error)
    delay_s = backoff_s(
        attempts - 1, policy.first_retry_s, policy.max_backoff_s, draw, jitter="full"
    )
    # What the endpoint asks (429/503's Retry-After) is the least wait.
    asked_s = 0.0
    if result.retry_after_s is not None:
        asked_s = min(result.retry_after_s, policy.max_backoff_s)
    # Not a replacement for backing off: an endpoint answering 429 with `Retry-After: 0` (or a
    # date past) every time would be tried again at once, every time, until the offer expired.
    delay_s = max(delay_s, asked_s)
    if not (math.isfinite(now_s + asked_s) and now_s + asked_s < expires_at):
        return Step(Next.DEAD, attempts, error=validity_ran_out(attempts, error))
    at = now_s + delay_s
    if not (math.isfinite(at) and at < expires_at):
        # The backoff drew a time past the validity, though the endpoint may be tried again
        # before it: the same jitter within what is left, rather than giving up early.
        at = now_s + asked_s + draw * (expires_at - now_s - asked_s)
    return Step(Next.RETRY, attempts, at=at, error=error)


def validity_ran_out(attempts: int, last_error: str | None) -> str:
    """Why an offer whose validity ended before it could be delivered is dead."""
    plural = "" if attempts == 1 else "s"
    return f"validity ran out after {attempts} attempt{plural}: last error: {last_error or 'none'}"


# --- the channel's rate limit ---------------------------------------------------------------------


class TokenBucket:
    """At most `rate_per_s` starts a second on average, `burst` at once; the clock is the caller's."""

    def __init__(self, rate_per_s: float, now_s: float, burst: float | None = None) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError("rate_per_s must be > 0")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.burst
        self._last_s = now_s

    def _refill(self, now_s: float) -> None:
        elapsed = max(0.0, now_s - self._last_s)  # a clock stepping back refills nothing
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        self._last_s = max(self._last_s, now_s)

    def take(self, now_s: float) -> float:
        """Take a token: 0.0 when taken, else how long until one is there (nothing taken)."""
        self._refill(now_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s

    def restart(self, now_s: float) -> None:
        """Forget the tokens saved up beyond one (after a pause: back at the rate, no burst)."""
        self._refill(now_s)
        self._tokens = min(self._tokens, 1.0)

    def reserve(self, now_s: float) -> float:
        """Take a token now or in advance: how long to wait before using it (0.0: at once).
        Reservations queue up: each waits for the tokens of those before it."""
        self._refill(now_s)
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate_per_s


# --- the channel's pause --------------------------------------------------------------------------


class ChannelPause:
    """The whole channel held back after the push service said "slow down" (`Result.slow_down`).

    A 429 is about the sender, not the offer: the next offer in line would get the same answer.
    Every new attempt waits until what Retry-After asks (at most `max_backoff_s`; a 429 without
    one: `first_retry_s`); attempts in flight finish, offers keep their place in the queue, and
    nothing is recorded against them. A later answer may lengthen the pause, never shorten it.
    When it ends, attempts start again at the rate limit, without the burst saved up meanwhile
    (`resumed`). The clock is the caller's (a monotonic one: a wall clock stepping back would
    lengthen a pause).
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.until_s: float | None = None  # on the caller's clock; None: never paused
        self.pauses = 0  # pauses begun (a lengthened one counts once)
        self._held = False  # a pause began and its end has not been reported by `resumed`

    def pause_s(self, result: Result) -> float:
        """How long `result` holds the channel: 0.0 when it does not ask the channel to wait."""
        if not result.slow_down:
            return 0.0
        if result.retry_after_s is None:
            return self.policy.first_retry_s
        return min(max(0.0, result.retry_after_s), self.policy.max_backoff_s)

    def note(self, result: Result, now_s: float) -> bool:
        """Take an attempt's result into account; True if it paused the channel (or longer)."""
        until = now_s + self.pause_s(result)
        if not (math.isfinite(until) and until > now_s):
            return False
        if self.until_s is not None and until <= self.until_s:
            return False
        if self.remaining_s(now_s) == 0.0:
            self.pauses += 1
        self.until_s = until
        self._held = True
        return True

    def remaining_s(self, now_s: float) -> float:
        """How long new attempts still wait (0.0: not paused)."""
        if self.until_s is None:
            return 0.0
        return max(0.0, self.until_s - now_s)

    def resumed(self, now_s: float) -> bool:
        """True once when a pause has ended (to restart the rate limit), else False."""
        if self._held and self.remaining_s(now_s) == 0.0:
            self._held = False
            return True
        return False
