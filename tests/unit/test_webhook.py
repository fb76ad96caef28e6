"""The webhook channel's pure core: body, signature and its verification, what each answer means,
the retry schedule within validity, the rate limit and the channel's pause; the one backoff; the
channel's config."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import hmac
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_bridge.config import BridgeConfig, DeliverySection, parse_bridge_config
from cloud_bridge.core.webhook import (
    BodyError,
    ChannelPause,
    Failure,
    Next,
    Result,
    RetryPolicy,
    SignatureError,
    TokenBucket,
    Verdict,
    body_from_stored,
    classify_failure,
    classify_response,
    next_step,
    parse_retry_after,
    request_body,
    request_headers,
    validity_ran_out,
    verify_signature,
)
from edge.core import wire
from edge.core.backoff import Backoff, backoff_s
from edge.errors import ConfigError

SECRET = b"whsec-0123456789abcdef0123456789"
NOW = 1_790_000_000.0
OFFER = wire.ShopperOffer(
    offer_id="ev-o000001",
    campaign="welcome-bakery",
    title="A croissant on us",
    body="Show this at the bakery — today only.",
    store="store-001",
    issued_at=NOW,
    detected_at=NOW - 1,
    promotion_type="free_gift",
    interests=("grocery",),
    deep_link="threshold://offers/ev-o000001",
    valid_until=NOW + 3600,
)


# --- body and signature ---------------------------------------------------------------------------


def test_the_body_is_the_apps_offer_plus_shopper_and_channel_versioned() -> None:
    body = json.loads(request_body(OFFER, "tok-abc"))
    assert body == {
        "v": 1,
        "type": "offer",
        "channel": "webhook",
        "shopper": "tok-abc",
        **OFFER.to_json(),
    }
    # The same stored offer gives the same bytes on every attempt.
    stored = wire.encode(OFFER)
    assert body_from_stored(stored, "tok-abc") == body_from_stored(stored, "tok-abc")
    assert json.loads(body_from_stored(stored, "tok-abc")) == body


def test_a_damaged_stored_offer_is_a_body_error() -> None:
    with pytest.raises(BodyError):
        body_from_stored(b'{"v":1,"type":"offer","offer_id":7}', "tok")


def test_the_headers_carry_the_offer_id_and_a_signature_anyone_can_recompute() -> None:
    body = request_body(OFFER, "tok-abc")
    headers = request_headers(SECRET, body, OFFER.offer_id, NOW + 0.9)
    assert headers["Idempotency-Key"] == "ev-o000001"
    assert headers["Content-Type"] == "application/json"
    t, v1 = headers["Threshold-Signature"].split(",")
    assert t == f"t={int(NOW)}"
    # Recomputed as docs/webhook.md tells the retailer to.
    expected = hmac.new(SECRET, f"{int(NOW)}.".encode() + body, hashlib.sha256).hexdigest()
    assert v1 == f"v1={expected}"
    assert verify_signature(SECRET, body, headers["Threshold-Signature"], NOW + 10) == int(NOW)


@pytest.mark.parametrize(
    ("secret", "body_change", "now_offset_s", "reason"),
    [
        (b"another-secret-of-the-same-length", None, 0, "does not match"),
        (SECRET, b" ", 0, "does not match"),  # one byte added
        (SECRET, None, 301, "beyond the 300 s tolerance"),  # a replay, later
        (SECRET, None, -301, "beyond the 300 s tolerance"),  # from the future
    ],
)
def test_a_wrong_secret_a_tampered_body_or_a_stale_timestamp_is_refused(
    secret: bytes, body_change: bytes | None, now_offset_s: float, reason: str
) -> None:
    body = request_body(OFFER, "tok-abc")
    header = request_headers(SECRET, body, OFFER.offer_id, NOW)["Threshold-Signature"]
    received = body + body_change if body_change else body
    with pytest.raises(SignatureError, match=reason):
        verify_signature(secret, received, header, NOW + now_offset_s)


def test_a_tampered_price_is_refused() -> None:
    body = request_body(OFFER, "tok-abc")
    header = request_headers(SECRET, body, OFFER.offer_id, NOW)["Threshold-Signature"]
    forged = body.replace(b"A croissant on us", b"A car on us")
    with pytest.raises(SignatureError):
        verify_signature(SECRET, forged, header, NOW)


def test_any_v1_may_match_during_a_secret_rotation() -> None:
    body = b"{}"
    good = request_headers(SECRET, body, "x", NOW)["Threshold-Signature"]
    t, v1 = good.split(",")
    assert verify_signature(SECRET, body, f"{t},v1={'0' * 64},{v1}", NOW) == int(NOW)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no Threshold-Signature"),
        ("", "no Threshold-Signature"),
        ("v1=abc", "no t="),
        (f"t={int(NOW)}", "no v1="),
        ("t=soon,v1=abc", "Unix seconds"),
        ("t=-5,v1=abc", "Unix seconds"),
        ("garbage", "not key=value"),
        ("t=1," + "v1=a," * 300, "longer than"),
    ],
)
def test_a_malformed_signature_header_says_what_is_wrong(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_signature(SECRET, b"{}", header, NOW)


@settings(max_examples=300, derandomize=True)
@given(st.binary(max_size=200), st.text(max_size=300))
def test_verification_never_fails_other_than_with_a_signature_error(
    body: bytes, header: str
) -> None:
    with contextlib.suppress(SignatureError):
        verify_signature(SECRET, body, header, NOW)


def test_the_retailers_few_lines_in_the_docs_verify_what_the_bridge_signs() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "webhook.md").read_text(encoding="utf-8")
    snippet = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # our own documentation's example
    verify = namespace["verify"]
    body = request_body(OFFER, "tok-abc")
    header = request_headers(SECRET, body, OFFER.offer_id, time.time())["Threshold-Signature"]
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify(b"another secret", body, header)
    stale = request_headers(SECRET, body, OFFER.offer_id, time.time() - 600)["Threshold-Signature"]
    assert not verify(SECRET, body, stale)


# --- what an answer means -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (408, Verdict.RETRY),
        (425, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (400, Verdict.PERMANENT),
        (401, Verdict.PERMANENT),
        (403, Verdict.PERMANENT),
        (404, Verdict.PERMANENT),
        (410, Verdict.PERMANENT),
        (422, Verdict.PERMANENT),
        (301, Verdict.PERMANENT),
    ],
)
def test_each_status_is_delivered_retried_or_dead(status: int, verdict: Verdict) -> None:
    result = classify_response(status, None, b"why\nnot", NOW, 300)
    assert result.verdict is verdict
    if verdict is Verdict.PERMANENT:
        assert result.error is not None and result.error.startswith(f"permanent: HTTP {status}")
        assert "why not" in result.error  # the body's excerpt, on one line
    if verdict is Verdict.DELIVERED:
        assert result.error is None


def test_a_long_refusal_keeps_a_short_excerpt() -> None:
    result = classify_response(400, None, b"x" * 100_000, NOW, 300)
    assert result.error is not None and len(result.error) < 260


@pytest.mark.parametrize(
    ("status", "header", "after_s"),
    [
        (429, "7", 7.0),
        (503, "7", 7.0),
        (429, "86400", 300.0),  # capped at max_backoff_s
        (429, email.utils.formatdate(NOW + 42, usegmt=True), 42.0),
        (503, email.utils.formatdate(NOW - 42, usegmt=True), 0.0),  # already past
        (429, "soon", None),
        (429, None, None),
        (500, "7", None),  # only 429 and 503 say when
    ],
)
def test_retry_after_in_seconds_or_as_a_date_is_honoured_and_capped(
    status: int, header: str | None, after_s: float | None
) -> None:
    result = classify_response(status, header, b"", NOW, 300.0)
    assert result.verdict is Verdict.RETRY
    if after_s is None:
        assert result.retry_after_s is None
    else:
        assert result.retry_after_s == pytest.approx(after_s)


def test_a_zoneless_date_is_not_a_retry_after() -> None:
    assert parse_retry_after("2026-12-06 10:00:00", NOW, 300) is None


@pytest.mark.parametrize("failure", list(Failure))
def test_every_failure_without_an_answer_is_retried(failure: Failure) -> None:
    result = classify_failure(failure, "Bad status line:\n  b'SSH-2.0'\n    ^")
    assert result.verdict is Verdict.RETRY
    assert result.error is not None and result.error.startswith(failure.value)
    assert "\n" not in result.error


# --- the schedule ---------------------------------------------------------------------------------

POLICY = RetryPolicy(first_retry_s=1.0, max_backoff_s=300.0)
FAILED = Result(Verdict.RETRY, "HTTP 500")


def test_delivered_is_sent_and_counts_the_attempt() -> None:
    step = next_step(Result(Verdict.DELIVERED), 2, NOW, NOW + 3600, POLICY, 0.5)
    assert step.next is Next.SENT and step.attempts == 3


def test_a_permanent_refusal_is_dead_at_once() -> None:
    step = next_step(
        Result(Verdict.PERMANENT, "permanent: HTTP 400"), 0, NOW, NOW + 3600, POLICY, 0
    )
    assert (step.next, step.attempts, step.error) == (Next.DEAD, 1, "permanent: HTTP 400")


@pytest.mark.parametrize("attempts_before", range(12))
def test_retries_back_off_exponentially_with_full_jitter_up_to_the_cap(
    attempts_before: int,
) -> None:
    ceiling = min(300.0, 1.0 * 2**attempts_before)
    low = next_step(FAILED, attempts_before, NOW, NOW + 86400, POLICY, 0.0)
    high = next_step(FAILED, attempts_before, NOW, NOW + 86400, POLICY, 0.999999)
    assert low.next is Next.RETRY and low.at == NOW  # full jitter: may come at once
    assert high.at is not None and high.at == pytest.approx(NOW + ceiling, rel=1e-5)
    assert high.error == "HTTP 500"


def test_retry_after_replaces_the_backoff_capped() -> None:
    asked = Result(Verdict.RETRY, "HTTP 429", retry_after_s=42.0)
    assert next_step(asked, 0, NOW, NOW + 3600, POLICY, 0.0).at == NOW + 42.0
    tight = RetryPolicy(max_backoff_s=10.0)
    assert next_step(asked, 0, NOW, NOW + 3600, tight, 0.0).at == NOW + 10.0


def test_a_retry_after_of_zero_or_past_does_not_undo_the_backoff() -> None:
    # An endpoint answering every attempt 429 with `Retry-After: 0` (or a date already past) was
    # tried again at once, every time: the backoff still applies, Retry-After can only lengthen it.
    for asked_s in (0.0, 1.0):
        asked = Result(Verdict.RETRY, "HTTP 429", retry_after_s=asked_s)
        step = next_step(asked, 5, NOW, NOW + 3600, POLICY, 0.5)
        assert step.next is Next.RETRY and step.at is not None
        assert step.at - NOW == pytest.approx(16.0)


def test_a_backoff_drawn_past_validity_retries_within_what_is_left() -> None:
    # After ten failures the backoff is drawn up to 300 s; with 60 s of validity left a draw past
    # it made the offer dead at once (80 % of the time), though the endpoint could be tried
    # again within the validity the retries are promised.
    step = next_step(FAILED, 10, NOW, NOW + 60, POLICY, 0.9)
    assert step.next is Next.RETRY and step.at is not None
    assert step.at - NOW == pytest.approx(54.0)
    asked = Result(Verdict.RETRY, "HTTP 429", retry_after_s=30.0)
    step = next_step(asked, 10, NOW, NOW + 60, POLICY, 0.9)
    assert step.next is Next.RETRY and step.at is not None
    assert step.at - NOW == pytest.approx(57.0)  # never before what the endpoint asked


def test_an_attempt_that_would_start_after_validity_is_not_scheduled() -> None:
    asked = Result(Verdict.RETRY, "HTTP 429: slow down", retry_after_s=120.0)
    step = next_step(asked, 2, NOW, NOW + 60, POLICY, 0.5)
    assert step.next is Next.DEAD and step.attempts == 3
    assert step.error == "validity ran out after 3 attempts: last error: HTTP 429: slow down"
    assert validity_ran_out(1, None) == "validity ran out after 1 attempt: last error: none"


def test_the_project_has_one_backoff_with_equal_and_full_jitter() -> None:
    assert backoff_s(0, 0.5, 30, 0.0) == 0.25  # equal jitter: at least half
    assert backoff_s(3, 0.5, 30, 0.999) == pytest.approx(4.0, rel=1e-3)
    assert backoff_s(40, 0.5, 30, 0.0, "full") == 0.0
    assert backoff_s(40, 0.5, 30, 0.5, "full") == 15.0
    draws = iter([0.0, 0.0, 0.0, 0.0])
    reconnect = Backoff(1.0, 4.0, lambda: next(draws))
    assert [reconnect.next_delay_s() for _ in range(3)] == [0.5, 1.0, 2.0]
    reconnect.reset()
    assert reconnect.next_delay_s() == 0.5


# --- the rate limit -------------------------------------------------------------------------------


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, now_s=0.0)
    assert [bucket.take(0.0) for _ in range(10)] == [0.0] * 10
    assert bucket.take(0.0) == pytest.approx(0.1)  # nothing taken
    assert bucket.take(0.1) == 0.0
    assert bucket.take(0.1) > 0


def test_reservations_queue_behind_each_other_and_a_clock_step_back_refills_nothing() -> None:
    bucket = TokenBucket(rate_per_s=4, now_s=100.0, burst=1)
    waits = [bucket.reserve(100.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert bucket.reserve(50.0) == pytest.approx(1.0)


@settings(max_examples=200, derandomize=True)
@given(st.floats(min_value=0.5, max_value=500), st.integers(min_value=1, max_value=400))
def test_over_any_span_no_more_start_than_the_rate_allows(rate: float, n: int) -> None:
    bucket = TokenBucket(rate, now_s=0.0)
    starts = []
    now = 0.0
    rng = random.Random(n)
    for _ in range(n):
        now += rng.random() * 2 / rate
        starts.append(now + bucket.reserve(now))
    span = starts[-1] - starts[0]
    assert len(starts) <= bucket.burst + span * rate + 1e-6


def test_after_a_pause_the_bucket_starts_again_at_the_rate_not_with_a_burst() -> None:
    bucket = TokenBucket(rate_per_s=10, now_s=0.0)
    bucket.restart(60.0)  # a minute's pause saved up a full burst of ten
    assert bucket.take(60.0) == 0.0
    assert bucket.take(60.0) == pytest.approx(0.1)
    bucket.restart(60.0)  # nothing saved up: nothing taken away
    assert bucket.take(60.1) == 0.0


# --- the channel's pause --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "header", "slow_down"),
    [
        (429, "30", True),
        (429, None, True),  # "too many" even without saying how long
        (429, "soon", True),
        (503, "30", True),
        (503, None, False),  # an outage of this offer's attempt, not a request to wait
        (500, "30", False),
        (408, None, False),
        (200, "30", False),
    ],
)
def test_a_429_or_a_503_with_retry_after_asks_the_whole_channel_to_slow_down(
    status: int, header: str | None, slow_down: bool
) -> None:
    assert classify_response(status, header, b"", NOW, 300.0).slow_down is slow_down


def test_a_slow_down_pauses_the_channel_until_retry_after_capped_then_it_resumes_once() -> None:
    pause = ChannelPause(RetryPolicy(first_retry_s=1.0, max_backoff_s=120.0))
    assert pause.remaining_s(10.0) == 0.0 and not pause.resumed(10.0)
    assert not pause.note(Result(Verdict.RETRY, "HTTP 500"), 10.0)  # not a slow-down
    assert not pause.note(Result(Verdict.DELIVERED), 10.0)
    assert pause.note(classify_response(429, "30", b"", NOW, 120.0), 10.0)
    assert pause.remaining_s(10.0) == 30.0 and pause.remaining_s(25.0) == 15.0
    assert pause.pauses == 1
    # A shorter ask does not shorten it; a longer one lengthens it (still one pause), capped.
    assert not pause.note(classify_response(429, "5", b"", NOW, 120.0), 12.0)
    assert pause.note(classify_response(503, "3600", b"", NOW, 3600.0), 20.0)
    assert pause.until_s == 140.0 and pause.pauses == 1
    assert not pause.resumed(139.0)
    assert pause.resumed(140.0) and not pause.resumed(141.0)  # reported once
    # A 429 without Retry-After: the first retry's wait.
    assert pause.note(classify_response(429, None, b"", NOW, 120.0), 200.0)
    assert pause.remaining_s(200.0) == 1.0 and pause.pauses == 2
    # Retry-After: 0 asks for no pause.
    assert not pause.note(classify_response(429, "0", b"", NOW, 120.0), 300.0)
    assert pause.pauses == 2 and pause.remaining_s(300.0) == 0.0


# --- the channel's config -------------------------------------------------------------------------


def test_the_channel_is_the_chains_unless_the_platform_has_its_own() -> None:
    config = parse_bridge_config(
        '[delivery]\nchannel = "mqtt"\n[delivery.by_platform]\nios = "webhook"\n'
        '[webhook]\nurl = "https://push.example.com/threshold"\nsecret_file = "/etc/s"\n'
    )
    assert config.delivery.channel_for("ios") == "webhook"
    assert config.delivery.channel_for("android") == "mqtt"
    assert config.delivery.channel_for(None) == "mqtt"
    assert config.delivery.channel_for("tag") == "mqtt"
    assert config.uses_webhook
    assert not BridgeConfig().uses_webhook
    assert DeliverySection(channel="webhook").channel_for("android") == "webhook"
    defaults = config.webhook
    assert (defaults.timeout_s, defaults.rate_per_s, defaults.concurrency) == (5.0, 50.0, 16)
    assert defaults.max_backoff_s == 300.0


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('[delivery]\nchannel = "sms"\n', "delivery.channel", "must be one of mqtt, webhook"),
        ('[delivery.by_platform]\nios = "push"\n', "delivery.by_platform.ios", "must be one of"),
        ('[delivery.by_platform]\nwatch = "mqtt"\n', "delivery.by_platform.watch", "unknown key"),
        ('[delivery]\nchannel = "webhook"\n', "webhook.url", "no url"),
        (
            '[delivery]\nchannel = "webhook"\n[webhook]\nurl = "http://push.example.com/x"\n',
            "webhook.url",
            "plain http beyond loopback",
        ),
        ('[webhook]\nurl = "http://10.0.0.5/x"\n', "webhook.url", "plain http beyond loopback"),
        ('[webhook]\nurl = "ftp://push.example.com/"\n', "webhook.url", "https://"),
        ('[webhook]\nurl = "https://u:p@push.example.com/"\n', "webhook.url", "credentials"),
        ('[webhook]\nurl = "https://push.example.com:99999/"\n', "webhook.url", "not a URL"),
        ('[webhook]\nsecret = "x"\n', "webhook.secret", "unknown key"),
        (
            '[delivery]\nchannel = "webhook"\n[webhook]\nurl = "https://a.example/"\n'
            "timeout_s = 0\n",
            "webhook.timeout_s",
            "must be > 0",
        ),
        (
            '[delivery]\nchannel = "webhook"\n[webhook]\nurl = "https://a.example/"\n'
            "rate_per_s = -1\n",
            "webhook.rate_per_s",
            "must be > 0",
        ),
        (
            '[delivery]\nchannel = "webhook"\n[webhook]\nurl = "https://a.example/"\n'
            "concurrency = 0\n",
            "webhook.concurrency",
            "1..1024",
        ),
        (
            '[delivery]\nchannel = "webhook"\n[webhook]\nurl = "https://a.example/"\n'
            'secret_file = ""\n',
            "webhook.secret_file",
            "HMAC key",
        ),
    ],
)
def test_a_bad_delivery_config_names_the_key(text: str, field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bridge_config(text, "bridge.toml")
    assert caught.value.field == field
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://localhost/x", "http://[::1]/"]
)
def test_plain_http_is_allowed_to_loopback(url: str) -> None:
    config = parse_bridge_config(f'[delivery]\nchannel = "webhook"\n[webhook]\nurl = "{url}"\n')
    assert config.webhook.url == url
