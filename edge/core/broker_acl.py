"""The Mosquitto configuration and ACL the project generates: one source for the production broker
(`cloud-bridge broker-config`) and the private brokers of the tests and the demo
(edge/adapters/mosquitto.py).

Every client presents a certificate from the chain's CA; its CN is its username
(edge/core/broker_identity.py) and `use_username_as_clientid` makes it the client id as well, so no
identity can take over another's session. The ACL grants, and nothing else:
- a gateway `C/S/G`: publish `threshold/v1/C/S/G/status` and `.../event/+`; read `.../ack`,
  `.../sync/roster` and `.../sync/campaigns`;
- a bridge instance `C/bridge/ID`: read events, statuses and shopper receipts of chain C; publish
  acks, rosters, campaigns and shopper offers of chain C, its alerts and its own status;
- a shopper app `C/shopper/T`: read `threshold/v1/C/shopper/T/offer`, publish `.../receipt`;
- an IT monitor `C/monitor/NAME`: read chain C's gateway and bridge statuses and bridge alerts.
Gateway rules are `pattern` lines (every gateway, no ACL change per gateway); bridge and monitor
identities are listed by name. Checked against Mosquitto 2.0.11: `%u` substitutes a CN containing
'/', a denied MQTT 5 publish gets PUBACK 0x87, a shared subscription (`$share/group/filter`) is
granted and delivers only what the ACL lets the subscriber read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge.core.broker_identity import (
    RESERVED_STORE_IDS,
    bridge_identity,
    monitor_identity,
)
from edge.core.wire import TOPIC_ROOT, check_id

#: The largest MQTT packet the broker accepts (`max_packet_size`, `message_size_limit`). It must
#: hold the largest roster bundle a gateway is sent: about 18 MB for a store of 100k devices.
MAX_PACKET_BYTES = 32 * 1024 * 1024
#: Messages queued per offline client before the broker drops more (its default of 1000 drops a
#: closed store's night of statuses and offers).
MAX_QUEUED_MESSAGES = 100_000


@dataclass(frozen=True, slots=True)
class ChainAcl:
    """The named identities of one chain on the broker (gateways and shoppers need no entry)."""

    chain: str
    bridge_ids: tuple[str, ...] = ("bridge-1",)
    monitors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_id(self.chain, "chain")
        for bridge_id in self.bridge_ids:
            bridge_identity(self.chain, bridge_id)
        for name in self.monitors:
            monitor_identity(self.chain, name)


@dataclass(frozen=True, slots=True)
class BrokerTlsFiles:
    """Where the broker finds the chain CA and its own certificate and key (PEM)."""

    cafile: str
    certfile: str
    keyfile: str


@dataclass(frozen=True, slots=True)
class BrokerListener:
    port: int = 8883
    bind_address: str = ""  # "" listens on every interface
    # None: plain TCP without certificates. Only for tests that ask for it explicitly.
    tls: BrokerTlsFiles | None = None


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Everything `mosquitto_config_text` needs; paths are written as given."""

    listener: BrokerListener
    acl_file: str | None
    persistence_location: str
    log_lines: tuple[str, ...] = ("log_dest syslog",)
    password_file: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


_GATEWAY_PATTERNS = (
    "pattern write {root}/%u/status",
    "pattern write {root}/%u/event/+",
    "pattern read {root}/%u/ack",
    "pattern read {root}/%u/sync/roster",
    "pattern read {root}/%u/sync/campaigns",
)
_SHOPPER_PATTERNS = (
    "pattern read {root}/%u/offer",
    "pattern write {root}/%u/receipt",
)
# The gateway patterns above also match a shopper, bridge or monitor CN (chain/shopper/T is three
# segments like chain/store/gateway). These store ids are reserved, so nothing but a forgery would
# ever use those topics: deny them outright. `deny` rules win over every grant in Mosquitto.
_RESERVED_DENIALS = (
    "pattern deny {root}/+/{reserved}/+/status",
    "pattern deny {root}/+/{reserved}/+/event/+",
    "pattern deny {root}/+/{reserved}/+/ack",
    "pattern deny {root}/+/{reserved}/+/sync/#",
)
_BRIDGE_TOPICS = (
    "topic read {root}/{chain}/+/+/event/+",
    "topic read {root}/{chain}/+/+/status",
    "topic read {root}/{chain}/shopper/+/receipt",
    "topic write {root}/{chain}/+/+/ack",
    "topic write {root}/{chain}/+/+/sync/roster",
    "topic write {root}/{chain}/+/+/sync/campaigns",
    "topic write {root}/{chain}/shopper/+/offer",
    "topic write {root}/{chain}/bridge/alerts",
    "topic write {root}/{chain}/bridge/status/{bridge_id}",
)
_MONITOR_TOPICS = (
    "topic read {root}/{chain}/+/+/status",
    "topic read {root}/{chain}/bridge/alerts",
    "topic read {root}/{chain}/bridge/status/+",
)


def acl_text(chains: Sequence[ChainAcl]) -> str:
    """The ACL file: gateway and shopper patterns, then each chain's bridges and monitors."""
    root = TOPIC_ROOT
    lines = [
        "# Threshold broker ACL, generated by `cloud-bridge broker-config`: do not edit, regenerate.",
        "# Usernames are certificate CNs (edge/core/broker_identity.py).",
        "",
        "# Every gateway chain/store/gateway: its own status and events out; acks, roster and",
        "# campaigns in.",
        *(p.format(root=root) for p in _GATEWAY_PATTERNS),
        "# Every shopper app chain/shopper/token: its own offers in, its receipts out.",
        *(p.format(root=root) for p in _SHOPPER_PATTERNS),
        "# Reserved store ids are never gateways. (Mosquitto warns at start that these patterns",
        "# hold no %u: they are meant for every client.)",
    ]
    for reserved in sorted(RESERVED_STORE_IDS):
        lines += [d.format(root=root, reserved=reserved) for d in _RESERVED_DENIALS]
    for chain_acl in chains:
        chain = chain_acl.chain
        for bridge_id in chain_acl.bridge_ids:
            lines += ["", f"user {bridge_identity(chain, bridge_id).common_name}"]
            lines += [t.format(root=root, chain=chain, bridge_id=bridge_id) for t in _BRIDGE_TOPICS]
        for name in chain_acl.monitors:
            lines += ["", f"user {monitor_identity(chain, name).common_name}"]
            lines += [t.format(root=root, chain=chain) for t in _MONITOR_TOPICS]
    return "\n".join(lines) + "\n"


def mosquitto_config_text(settings: BrokerSettings) -> str:
    """mosquitto.conf for Mosquitto 2.0: one listener, TLS with client certificates unless the
    listener has no TLS files, the ACL, persistence saved every second, the size limits."""
    listener = settings.listener
    bind = f" {listener.bind_address}" if listener.bind_address else ""
    lines = [
        "# Threshold broker, generated by `cloud-bridge broker-config`: do not edit, regenerate.",
        f"listener {listener.port}{bind}",
    ]
    if listener.tls is not None:
        lines += [
            f"cafile {listener.tls.cafile}",
            f"certfile {listener.tls.certfile}",
            f"keyfile {listener.tls.keyfile}",
            "tls_version tlsv1.2",  # the minimum (Mosquitto 2.0); 1.3 is negotiated when offered
            "require_certificate true",
            "use_identity_as_username true",
            # The CN is the client id too: another identity cannot take over a gateway's session.
            "use_username_as_clientid true",
            "allow_anonymous false",
        ]
    elif settings.password_file is not None:
        lines += ["allow_anonymous false", f"password_file {settings.password_file}"]
    else:
        lines.append("allow_anonymous true")
    if settings.acl_file is not None:
        lines.append(f"acl_file {settings.acl_file}")
    lines += [
        "persistence true",
        f"persistence_location {settings.persistence_location.rstrip('/')}/",
        # The default of 1800 s means a kill -9 loses the last half hour of queued messages.
        "autosave_interval 1",
        # Without it the broker's small writes (PUBACKs, deliveries) wait on Nagle's algorithm
        # and the peer's delayed ACK: about 40 ms per hop on Linux.
        "set_tcp_nodelay true",
        # The default of 1000 per client silently drops the rest.
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"message_size_limit {MAX_PACKET_BYTES}",
        f"max_packet_size {MAX_PACKET_BYTES}",
        *settings.log_lines,
        *settings.extra,
    ]
    return "\n".join(lines) + "\n"
