"""Gateway configuration: TOML → frozen dataclasses, validated once at start-up.

Unknown keys are errors (a typo must not silently fall back to a default). Every error names the file,
the field and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.adapters.files import read_regular_file
from edge.adapters.pki import TlsFiles, gateway_tls_files
from edge.core.broker_identity import IdentityError, check_store_id
from edge.core.bundle import KeyFormatError, load_signer_public_key
from edge.core.offers import REFRESH_MEMORY_S
from edge.core.presence import PresenceConfig
from edge.core.wire import GatewayAddress, WireError
from edge.errors import ConfigError

_PRESENCE_DEFAULTS = PresenceConfig()


@dataclass(frozen=True, slots=True)
class GatewaySection:
    chain: str = "demo-chain"
    store: str = "store-001"
    id: str = "door-1"
    data_dir: str = "/var/lib/threshold"


@dataclass(frozen=True, slots=True)
class MqttSection:
    """The broker connection (gateway and bridge): TLS with a client certificate by default."""

    host: str = "127.0.0.1"  # must be a name (or IP) in the broker's certificate
    port: int = 8883
    username: str = ""
    password: str = ""
    keepalive_s: int = 30
    # PEM files: the chain CA, this client's certificate and its key (0600). By default
    # tls/{ca.crt,client.crt,client.key} in the gateway's data_dir (`edge-gateway install-cert`
    # puts them there) or bridge-tls/{...} beside the bridge's database (`cloud-bridge ca client-cert
    # --kind bridge --out` there): a bridge and a gateway on one host never share a key.
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # Plain TCP, no certificates: anyone on the network reads and forges every message. Only for
    # a lab; logged as a WARNING at every start and shown in the gateway's status.
    insecure_plaintext: bool = False

    def tls_files(self, defaults: TlsFiles) -> TlsFiles | None:
        """The TLS files to use (None with insecure_plaintext); `defaults` for those unset."""
        if self.insecure_plaintext:
            return None
        return TlsFiles(
            Path(self.ca_file) if self.ca_file else defaults.ca_file,
            Path(self.cert_file) if self.cert_file else defaults.cert_file,
            Path(self.key_file) if self.key_file else defaults.key_file,
        )


def check_mqtt_section(mqtt: MqttSection, path: str) -> None:
    """Raise ConfigError for a bad [mqtt] section (shared by the gateway and bridge configs)."""
    if not 1 <= mqtt.port <= 65535:
        raise ConfigError(path, "mqtt.port", f"must be 1..65535, got {mqtt.port}")
    if mqtt.insecure_plaintext and (mqtt.ca_file or mqtt.cert_file or mqtt.key_file):
        raise ConfigError(
            path,
            "mqtt.insecure_plaintext",
            "is true but certificate files are set: remove insecure_plaintext to use TLS",
        )


@dataclass(frozen=True, slots=True)
class SimulatedRadioSection:
    seed: int = 1
    members: int = 300
    speed: float = 30.0  # simulated seconds per wall second
    duration_s: float = 3600.0
    arrivals_per_min: float = 6.0
    passers_per_min: float = 12.0


@dataclass(frozen=True, slots=True)
class SerialRadioSection:
    port: str = "/dev/ttyACM0"  # prefer the stable /dev/serial/by-id/... link
    baudrate: int = 1_000_000
    scan_mode: str = "passive"
    scan_interval_ms: int = 100
    scan_window_ms: int = 100
    hello_timeout_s: float = 3.0


@dataclass(frozen=True, slots=True)
class BleakRadioSection:
    adapter: str = ""  # "hci0", an adapter address, or "" for the first powered adapter
    mode: str = "auto"  # passive where BlueZ offers or_patterns monitors, else active
    # No advert for this long is a stall. Passive scanning hears only Threshold's frames, so a
    # closed store can be quiet for hours: keep this long there, or use active mode.
    stall_timeout_s: float = 900.0
    restart_limit: int = 3
    power_cycle_limit: int = 2


@dataclass(frozen=True, slots=True)
class StoreBeaconSection:
    """The store's own iBeacon, advertised through BlueZ so a backgrounded iOS app wakes up."""

    enabled: bool = False
    uuid: str = ""  # 32 hex digits (dashes allowed)
    major: int = 0
    minor: int = 0
    measured_power: int = -59
    interval_ms: int = 100


@dataclass(frozen=True, slots=True)
class CheckinSection:
    """The iPhone check-in GATT service (docs/iphone-checkin.md), served through BlueZ on the
    adapter named in [radio.bleak]; only with a real radio (bleak, or serial beside the Pi's own
    Bluetooth), never with the simulated one."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RadioSection:
    source: str = "simulated"
    simulated: SimulatedRadioSection = field(default_factory=SimulatedRadioSection)
    serial: SerialRadioSection = field(default_factory=SerialRadioSection)
    bleak: BleakRadioSection = field(default_factory=BleakRadioSection)


@dataclass(frozen=True, slots=True)
class PresenceSection:
    enter_dbm: float = _PRESENCE_DEFAULTS.enter_dbm
    exit_dbm: float = _PRESENCE_DEFAULTS.exit_dbm
    min_dwell_s: float = _PRESENCE_DEFAULTS.min_dwell_s
    smoothing_tau_s: float = _PRESENCE_DEFAULTS.smoothing_tau_s
    visit_timeout_s: float = _PRESENCE_DEFAULTS.visit_timeout_s
    max_gap_s: float = _PRESENCE_DEFAULTS.max_gap_s
    level_tau_s: float = _PRESENCE_DEFAULTS.level_tau_s


@dataclass(frozen=True, slots=True)
class IdentitySection:
    skew_windows: int = 1
    # The bridge's Ed25519 public keys (base64 or hex), as `cloud-bridge keygen` prints them; a
    # bundle signed by any other key is rejected. Two during a key rollover.
    trusted_signers: tuple[str, ...] = ()
    trusted_signers_file: str = ""  # or/and a file of such keys, one a line ('#' comments)
    # What seals the gateway's keys at rest: "auto" (the Pi's OTP key where readable, else a key
    # file), "otp" (refuse to run without it) or "file" (docs/security.md: weaker).
    key_source: str = "auto"
    otp_command: str = "rpi-otp-private-key"


@dataclass(frozen=True, slots=True)
class UplinkSection:
    ack_timeout_s: float = 10.0
    batch: int = 100
    status_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class PrivacySection:
    # Offer history older than this is purged from the gateway (issue 4: visit history on the gateway
    # purged after a configurable retention). It is also the refresh memory (issue 10: a returning
    # member is offered first what they have not had within it), and members' weekly caps need 7
    # days of it. Events not yet acknowledged by the bridge are in transit, not history: they stay
    # until acknowledged (docs/security.md).
    retention_s: float = REFRESH_MEMORY_S  # 30 days


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    gateway: GatewaySection = field(default_factory=GatewaySection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    radio: RadioSection = field(default_factory=RadioSection)
    presence: PresenceSection = field(default_factory=PresenceSection)
    identity: IdentitySection = field(default_factory=IdentitySection)
    uplink: UplinkSection = field(default_factory=UplinkSection)
    store_beacon: StoreBeaconSection = field(default_factory=StoreBeaconSection)
    checkin: CheckinSection = field(default_factory=CheckinSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)

    @property
    def address(self) -> GatewayAddress:
        g = self.gateway
        return GatewayAddress(g.chain, g.store, g.id)

    @property
    def presence_config(self) -> PresenceConfig:
        p = self.presence
        return PresenceConfig(
            p.enter_dbm,
            p.exit_dbm,
            p.min_dwell_s,
            p.smoothing_tau_s,
            p.visit_timeout_s,
            p.max_gap_s,
            p.level_tau_s,
        )

    @property
    def serves_checkin(self) -> bool:
        """Whether `run` serves the iPhone check-in through BlueZ: enabled, and a real radio."""
        return self.checkin.enabled and self.radio.source != "simulated"

    @property
    def data_dir(self) -> Path:
        return Path(self.gateway.data_dir)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "gateway.sqlite"

    @property
    def mqtt_tls(self) -> TlsFiles | None:
        """The broker TLS files (from [mqtt], else under data_dir/tls), None for plain TCP."""
        return self.mqtt.tls_files(gateway_tls_files(self.data_dir))


RADIO_SOURCES = ("bleak", "serial", "simulated")
KEY_SOURCES = ("auto", "otp", "file")

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def build_dataclass(cls: type[Any], raw: dict[str, Any], path: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(path, f"{where}.{key}".lstrip("."), f"unknown key; known: {known}")
    values: dict[str, Any] = {}
    for name in names & raw.keys():
        value = raw[name]
        hint = hints[name]
        field_name = f"{where}.{name}".lstrip(".")
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(path, field_name, "must be a table")
            values[name] = build_dataclass(typing.cast(type[Any], hint), value, path, field_name)
            continue
        if isinstance(hint, types.UnionType):  # not used yet; keep the loader honest if it is
            raise ConfigError(path, field_name, "unsupported field type")
        if typing.get_origin(hint) is tuple:  # tuple[str, ...]: a TOML array of strings
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(path, field_name, f"must be a list of strings, got {value!r:.60}")
            values[name] = tuple(value)
            continue
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(
                path, field_name, f"must be {_TYPE_NAMES.get(hint, hint)}, got {value!r}"
            )
        values[name] = value
    return cls(**values)


def parse_config(text: str, path: str = "<config>") -> GatewayConfig:
    """Parse and validate a gateway config; raise ConfigError naming file, field and expectation."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"is not valid TOML: {exc}") from None
    config = typing.cast(GatewayConfig, build_dataclass(GatewayConfig, raw, path, ""))
    try:
        config.address  # noqa: B018 - validates the ids
    except WireError as exc:
        raise ConfigError(path, "gateway", exc.reason) from None
    try:
        check_store_id(config.gateway.store)
    except IdentityError as exc:
        raise ConfigError(path, "gateway.store", exc.reason) from None
    source = config.radio.source
    if source not in RADIO_SOURCES:
        raise ConfigError(path, "radio.source", f"must be one of {RADIO_SOURCES}, got {source!r}")
    try:
        config.presence_config  # noqa: B018 - validates threshold relations
    except ValueError as exc:
        raise ConfigError(path, "presence", str(exc)) from None
    identity = config.identity
    if not 0 <= identity.skew_windows <= 4:
        raise ConfigError(path, "identity.skew_windows", "must be 0..4")
    for i, text in enumerate(identity.trusted_signers):
        try:
            load_signer_public_key(text, f"entry {i}")
        except KeyFormatError as exc:
            raise ConfigError(path, "identity.trusted_signers", exc.reason) from None
    if identity.key_source not in KEY_SOURCES:
        raise ConfigError(
            path,
            "identity.key_source",
            f"must be one of {KEY_SOURCES}, got {identity.key_source!r}",
        )
    if not identity.otp_command.strip():
        raise ConfigError(path, "identity.otp_command", "must name the OTP tool")
    check_mqtt_section(config.mqtt, path)
    if config.uplink.batch < 1 or config.uplink.ack_timeout_s <= 0:
        raise ConfigError(path, "uplink", "batch must be >= 1 and ack_timeout_s > 0")
    retention_s = config.privacy.retention_s
    if not (math.isfinite(retention_s) and retention_s > 0):
        raise ConfigError(
            path,
            "privacy.retention_s",
            f"must be a number of seconds > 0 (604800 keeps offer history 7 days), got {retention_s!r}",
        )
    if config.radio.simulated.speed <= 0:
        raise ConfigError(path, "radio.simulated.speed", "must be > 0")
    serial = config.radio.serial
    if serial.scan_mode not in ("passive", "active"):
        raise ConfigError(path, "radio.serial.scan_mode", "must be 'passive' or 'active'")
    if serial.baudrate <= 0 or not serial.port:
        raise ConfigError(path, "radio.serial", "port must be set and baudrate > 0")
    bleak = config.radio.bleak
    if bleak.mode not in ("auto", "passive", "active"):
        raise ConfigError(path, "radio.bleak.mode", "must be 'auto', 'passive' or 'active'")
    if bleak.stall_timeout_s <= 0 or bleak.restart_limit < 0 or bleak.power_cycle_limit < 0:
        raise ConfigError(path, "radio.bleak", "stall_timeout_s must be > 0, the limits >= 0")
    beacon = config.store_beacon
    if beacon.enabled:
        try:
            uuid = bytes.fromhex(beacon.uuid.replace("-", ""))
        except ValueError:
            uuid = b""
        if len(uuid) != 16:
            raise ConfigError(path, "store_beacon.uuid", "must be 32 hex digits (a UUID)")
        if not (0 <= beacon.major <= 0xFFFF and 0 <= beacon.minor <= 0xFFFF):
            raise ConfigError(path, "store_beacon", "major and minor must be 0..65535")
        if not -127 <= beacon.measured_power <= 20:
            raise ConfigError(path, "store_beacon.measured_power", "must be -127..20 dBm")
    return config


def load_config(path: Path) -> GatewayConfig:
    """Read and validate the config file at `path`."""
    try:
        text = read_regular_file(path)[0].decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "-", f"cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "-", f"is not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, str(path))
