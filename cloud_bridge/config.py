"""Bridge configuration: TOML → frozen dataclasses, validated once; unknown keys are errors."""

from __future__ import annotations

import ipaddress
import math
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from cloud_bridge.core.admission import DEFAULT_MAX_AGE_S, DEFAULT_MAX_FUTURE_S, TimePolicy
from cloud_bridge.core.clones import (
    DEFAULT_CLOCK_TOLERANCE_S,
    DEFAULT_MAX_SPEED_KMH,
    DEFAULT_MIN_GAP_S,
    ClonePolicy,
)
from cloud_bridge.core.preferences import (
    DEFAULT_INTERESTS,
    DEFAULT_PROMOTION_TYPES,
    VocabularyError,
    check_terms_config,
)
from cloud_bridge.core.segments import SegmentPolicy
from edge.adapters.files import read_regular_file
from edge.adapters.pki import TlsFiles, bridge_tls_files
from edge.config import MqttSection, build_dataclass, check_mqtt_section
from edge.core.wire import MAX_COUNTED_VISITS, WireError, check_id
from edge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BridgeSection:
    chain: str = "demo-chain"
    id: str = "bridge-1"
    database: str = "/var/lib/threshold/loyalty.sqlite"
    share_group: str = "threshold-bridge"
    batch: int = 200
    offer_resend_s: float = 30.0  # resend an offer the app has not confirmed after this long
    # Ignored since offers are resent until their campaign's validity_s ends (then recorded
    # expired); still accepted so existing configs load.
    offer_max_attempts: int = 5  # ignored since offers expire by validity_s; still accepted
    # Events whose ts or detected_at are further ahead of the bridge's clock, or older, are
    # quarantined (cloud_bridge/core/admission.py): acknowledged, kept aside, not counted.
    event_max_future_s: float = DEFAULT_MAX_FUTURE_S
    event_max_age_s: float = DEFAULT_MAX_AGE_S
    sync_interval_s: float = 10.0  # how often to look for roster or campaign changes to publish
    # After (re)connecting, how long to read gateways' retained statuses before publishing rosters:
    # a gateway that already holds the current roster gets nothing instead of a full bundle.
    status_grace_s: float = 2.0
    # How often this instance publishes its retained status for IT monitoring (bridge_status).
    status_interval_s: float = 10.0
    # The Ed25519 key that signs every roster bundle (0600; `cloud-bridge keygen` creates it).
    signing_key_file: str = "/var/lib/threshold/bridge-signing.key"
    # The data key sealing identity keys in the database (0600; `cloud-bridge create-db` creates
    # it beside the database). $THRESHOLD_DATA_KEY, when set, is used instead.
    data_key_file: str = "/var/lib/threshold/bridge-data.key"
    # Cloned tags (cloud_bridge/core/clones.py says why these defaults): a device seen at two stores
    # faster apart than this speed, or within clone_min_gap_s where a store has no location.
    clone_max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH
    clone_min_gap_s: float = DEFAULT_MIN_GAP_S
    clone_clock_tolerance_s: float = DEFAULT_CLOCK_TOLERANCE_S  # per gateway clock
    clone_auto_revoke: bool = False  # revoke the device at once, not only alert

    def time_policy(self) -> TimePolicy:
        return TimePolicy(max_future_s=self.event_max_future_s, max_age_s=self.event_max_age_s)

    def clone_policy(self) -> ClonePolicy:
        return ClonePolicy(
            max_speed_kmh=self.clone_max_speed_kmh,
            min_gap_s=self.clone_min_gap_s,
            clock_tolerance_s=self.clone_clock_tolerance_s,
        )


@dataclass(frozen=True, slots=True)
class ApiSection:
    """The enrollment API for the retailer's app backend (docs/enrollment-api.md)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # beyond loopback only with TLS (or insecure_plaintext = true)
    port: int = 8480
    tokens_file: str = (
        "/etc/threshold/api-tokens"  # SHA-256 hashes, made by `cloud-bridge api-token`
    )
    # HTTPS: the API's PEM certificate and key. Both empty: plain HTTP.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Plain HTTP beyond loopback (tokens and identity keys in clear on the network): a lab only.
    insecure_plaintext: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


@dataclass(frozen=True, slots=True)
class PreferencesSection:
    """The chain's preference vocabulary (cloud_bridge/core/preferences.py): what members may
    choose. Each term keeps its bit for ever: drop a term to stop offering it (members who chose it
    keep it), never rename one; at most 63 of each kind can ever be named."""

    interests: tuple[str, ...] = DEFAULT_INTERESTS
    promotion_types: tuple[str, ...] = DEFAULT_PROMOTION_TYPES


CHANNELS = ("mqtt", "webhook")


@dataclass(frozen=True, slots=True)
class ByPlatformSection:
    """The channel for visits heard from each platform; empty: the chain's [delivery] channel."""

    android: str = ""
    ios: str = ""
    tag: str = ""


@dataclass(frozen=True, slots=True)
class DeliverySection:
    """How offers reach shoppers (docs/webhook.md): the chain's channel, optionally per platform.
    An offer's channel is fixed when the bridge records it."""

    channel: str = "mqtt"
    by_platform: ByPlatformSection = field(default_factory=ByPlatformSection)

    def channel_for(self, platform: str | None) -> str:
        """The channel for an offer to a visit heard from `platform` (None: unknown)."""
        chosen = getattr(self.by_platform, platform, "") if platform in _PLATFORMS else ""
        return chosen or self.channel

    def channels(self) -> set[str]:
        """Every channel an offer may be given."""
        return {self.channel, *(getattr(self.by_platform, p) or self.channel for p in _PLATFORMS)}


_PLATFORMS = ("android", "ios", "tag")


@dataclass(frozen=True, slots=True)
class WebhookSection:
    """The retailer's push service that offers on the webhook channel are POSTed to."""

    url: str = ""  # https; http only to a loopback host
    secret_file: str = "/etc/threshold/webhook-secret"  # the HMAC-SHA256 key (0600)
    timeout_s: float = 5.0  # the whole attempt: connect, send, answer
    rate_per_s: float = 50.0  # the channel's rate limit: attempts started per second
    concurrency: int = 16  # attempts in flight at once
    max_backoff_s: float = 300.0  # the longest wait between attempts (and Retry-After's cap)


def is_loopback(host: str) -> bool:
    """True for a host that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    bridge: BridgeSection = field(default_factory=BridgeSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    api: ApiSection = field(default_factory=ApiSection)
    preferences: PreferencesSection = field(default_factory=PreferencesSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    webhook: WebhookSection = field(default_factory=WebhookSection)  # used by the webhook channel

    @property
    def uses_webhook(self) -> bool:
        """Whether any offer may go by webhook (then [webhook] is checked and used)."""
        return "webhook" in self.delivery.channels()

    # Members' segments, computed by the bridge for campaigns to target (core/segments.py).
    segments: SegmentPolicy = field(default_factory=SegmentPolicy)

    @property
    def mqtt_tls(self) -> TlsFiles | None:
        """The broker TLS files from [mqtt] (else bridge-tls/ beside the database), None for plain
        TCP."""
        return self.mqtt.tls_files(bridge_tls_files(Path(self.bridge.database).parent))


def parse_bridge_config(text: str, path: str = "<config>") -> BridgeConfig:
    """Parse and validate; raise ConfigError naming file, field and what is expected."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"is not valid TOML: {exc}") from None
    config = typing.cast(BridgeConfig, build_dataclass(BridgeConfig, raw, path, ""))
    check_delivery(config, path)
    for name in ("chain", "id", "share_group"):
        try:
            check_id(getattr(config.bridge, name), name)
        except WireError as exc:
            raise ConfigError(path, f"bridge.{name}", exc.reason) from None
    check_mqtt_section(config.mqtt, path)
    for name in ("interests", "promotion_types"):
        try:
            check_terms_config(getattr(config.preferences, name), f"preferences.{name}")
        except VocabularyError as exc:
            raise ConfigError(path, exc.field, exc.problem) from None
    if config.bridge.batch < 1:
        raise ConfigError(path, "bridge.batch", "must be >= 1")
    api = config.api
    if bool(api.tls_cert_file) != bool(api.tls_key_file):
        raise ConfigError(
            path, "api.tls_key_file", "set both tls_cert_file and tls_key_file (or neither)"
        )
    if not (api.tls or api.insecure_plaintext or is_loopback(api.host)):
        raise ConfigError(
            path,
            "api.host",
            f"{api.host!r} is beyond loopback: set tls_cert_file and tls_key_file to serve "
            "HTTPS (tokens and identity keys cross the network), or insecure_plaintext = true",
        )
    if not 0 <= config.api.port <= 65535:
        raise ConfigError(path, "api.port", f"must be 0..65535, got {config.api.port}")
    if not config.bridge.signing_key_file:
        raise ConfigError(path, "bridge.signing_key_file", "must name the signing key file")
    if config.bridge.sync_interval_s <= 0:
        raise ConfigError(path, "bridge.sync_interval_s", "must be > 0")
    if not (math.isfinite(config.bridge.status_interval_s) and config.bridge.status_interval_s > 0):
        raise ConfigError(path, "bridge.status_interval_s", "must be > 0 (seconds)")
    if not 0 <= config.bridge.status_grace_s <= 60:
        raise ConfigError(path, "bridge.status_grace_s", "must be between 0 and 60 seconds")
    if config.bridge.offer_resend_s <= 0:
        raise ConfigError(path, "bridge.offer_resend_s", "must be > 0 (seconds)")
    b = config.bridge
    for name, value, rule in (
        ("clone_max_speed_kmh", b.clone_max_speed_kmh, "must be > 0 (km/h)"),
        ("clone_min_gap_s", b.clone_min_gap_s, "must be >= 0 (seconds)"),
        ("clone_clock_tolerance_s", b.clone_clock_tolerance_s, "must be >= 0 (seconds)"),
        ("event_max_future_s", b.event_max_future_s, "must be > 0 (seconds)"),
        ("event_max_age_s", b.event_max_age_s, "must be > 0 (seconds)"),
    ):
        ok = value > 0 if name.startswith(("clone_max", "event_")) else value >= 0
        if not (ok and math.isfinite(value)):
            raise ConfigError(path, f"bridge.{name}", f"{rule}, got {value}")
    check_segments(config.segments, path)
    return config


def check_delivery(config: BridgeConfig, path: str) -> None:
    """[delivery] names known channels; a webhook channel needs [webhook] url and secret_file."""
    delivery = config.delivery
    for name, value in (
        ("channel", delivery.channel),
        *((f"by_platform.{p}", getattr(delivery.by_platform, p)) for p in _PLATFORMS),
    ):
        if value not in CHANNELS and not (value == "" and name != "channel"):
            raise ConfigError(
                path, f"delivery.{name}", f"must be one of {', '.join(CHANNELS)}, got {value!r}"
            )
    section = config.webhook
    if not config.uses_webhook:
        if section.url:
            check_webhook_url(section.url, path)
        return
    if not section.url:
        raise ConfigError(
            path,
            "webhook.url",
            "[delivery] sends offers by webhook but [webhook] has no url: set it to the push "
            "service's https:// URL (and secret_file to the HMAC key; docs/webhook.md)",
        )
    check_webhook_url(section.url, path)
    if not section.secret_file:
        raise ConfigError(path, "webhook.secret_file", "must name the file holding the HMAC key")
    for name, rule in (
        ("timeout_s", "must be > 0 (seconds)"),
        ("rate_per_s", "must be > 0 (attempts per second)"),
        ("max_backoff_s", "must be > 0 (seconds)"),
    ):
        value = getattr(section, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(path, f"webhook.{name}", f"{rule}, got {value}")
    if not 1 <= section.concurrency <= 1024:
        raise ConfigError(
            path, "webhook.concurrency", f"must be 1..1024, got {section.concurrency}"
        )


def check_webhook_url(url: str, path: str) -> None:
    """https to anywhere, http only to this machine; ConfigError naming `webhook.url`."""
    parsed = urllib.parse.urlsplit(url)
    try:
        host = parsed.hostname or ""
        parsed.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ConfigError(path, "webhook.url", f"{url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("https", "http") or not host:
        raise ConfigError(
            path,
            "webhook.url",
            f"must be an https:// URL of the retailer's push service, got {url!r}",
        )
    if parsed.scheme == "http" and not is_loopback(host):
        raise ConfigError(
            path,
            "webhook.url",
            f"{url!r} is plain http beyond loopback: offers and their signatures would cross the "
            "network in clear; use https:// (http only to 127.0.0.1, ::1 or localhost)",
        )
    if parsed.username or parsed.password:
        raise ConfigError(
            path, "webhook.url", "must not carry credentials: the signature authenticates"
        )


#: The most days a `[segments]` window may span, and the most visits `regular_visits` may ask for.
_SEGMENT_LIMITS = {
    "new_days": 365,
    "regular_visits": MAX_COUNTED_VISITS,
    "regular_days": 365,
    "lapsed_days": 3650,
}


def check_segments(policy: SegmentPolicy, path: str) -> None:
    """`[segments]`: whole days and a visit count, each from 1 up to its limit."""
    for name, most in _SEGMENT_LIMITS.items():
        value = getattr(policy, name)
        if not 1 <= value <= most:
            raise ConfigError(path, f"segments.{name}", f"must be 1..{most}, got {value}")


def load_bridge_config(path: Path) -> BridgeConfig:
    try:
        text = read_regular_file(path)[0].decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "-", f"cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "-", f"is not UTF-8 text (byte {exc.start})") from None
    return parse_bridge_config(text, str(path))
