"""The demo's door test of the broker: clients a store network may hold try to connect, and must fail.

Three intruders knock: an anonymous MQTT client in plain TCP, one that speaks TLS but shows no
certificate, and one with a certificate from a CA that is not the chain's. Each must be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.mqtt import MqttAuthError, MqttConfigError, MqttSettings, PahoMqtt
from edge.adapters.pki import LocalPki, TlsFiles
from edge.core.broker_identity import gateway_identity
from edge.core.wire import GatewayAddress

#: MQTT 5 CONNECT, clean start, keepalive 60 s, no client id (the broker would assign one).
_CONNECT_V5 = bytes.fromhex("101000044d5154540502003c000000")
_CONNACK = 0x20
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Knock:
    """One intruder's attempt: who, and whether the broker let it in."""

    who: str
    admitted: bool
    how: str


def _raw_connect(broker: MosquittoProcess, context: ssl.SSLContext | None) -> Knock:
    """CONNECT without a certificate (TLS when `context`, else plain TCP); admitted on a CONNACK
    that says success."""
    who = (
        "anonymous client, TLS without a certificate" if context else "anonymous client, plain TCP"
    )
    try:
        with contextlib.ExitStack() as stack:
            sock: socket.socket = stack.enter_context(
                socket.create_connection((broker.host, broker.port), timeout=PROBE_TIMEOUT_S)
            )
            if context is not None:
                # The TLS socket takes the connection over: it is the one to close.
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname="localhost"))
            sock.sendall(_CONNECT_V5)
            reply = sock.recv(16)
    except (OSError, ssl.SSLError) as exc:
        return Knock(who, False, f"refused: {type(exc).__name__}")
    if len(reply) >= 4 and reply[0] == _CONNACK and reply[3] == 0:
        return Knock(who, True, "CONNACK success")
    return Knock(who, False, "refused: connection closed" if not reply else "refused: CONNACK")


async def _foreign_certificate(
    broker: MosquittoProcess, workdir: Path, victim: GatewayAddress
) -> Knock:
    """A client posing as gateway `victim`, with a well-formed certificate from a CA of its own."""
    who = "client with a certificate from a foreign CA"
    foreign = LocalPki(workdir / "foreign-ca", "foreign").client_files(gateway_identity(victim))
    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        tls=TlsFiles(broker.pki.ca_file, foreign.cert_file, foreign.key_file),
        connect_timeout_s=PROBE_TIMEOUT_S,
    )
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S * 2):
            await PahoMqtt(settings).run()
    except (MqttAuthError, MqttConfigError) as exc:
        return Knock(who, False, f"refused: {exc.reason[:80]}")
    except TimeoutError:
        return Knock(who, False, "refused: never connected")
    return Knock(who, True, "connected")


async def knock(broker: MosquittoProcess, workdir: Path, victim: GatewayAddress) -> list[Knock]:
    """Every intruder's attempt on `broker`, in turn."""
    tls = ssl.create_default_context(cafile=str(broker.pki.ca_file))
    return [
        await asyncio.to_thread(_raw_connect, broker, None),
        await asyncio.to_thread(_raw_connect, broker, tls),
        await _foreign_certificate(broker, workdir, victim),
    ]
