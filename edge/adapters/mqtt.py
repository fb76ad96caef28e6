"""paho-mqtt 2.x driven by the asyncio event loop, without paho's network thread.

Used by the gateway and by the cloud bridge. paho does the MQTT 5 protocol; this module gives it a
socket watched by the event loop (`add_reader`/`add_writer` call `loop_read`/`loop_write`), a task
that calls `loop_misc` every second (keepalive), and turns its callbacks into awaitable results: one
Future per message id, removed in `finally` (the aiomqtt 2.x pattern).

Delivery contract: `publish()` returns only once the broker has acknowledged the message (QoS 1)
and raises otherwise. Nothing is queued in memory while disconnected: callers keep durable outboxes
and resend after `MqttNotConnected` or `MqttPublishFailed`. A broker's PUBACK is not durability
either (see shared/RECIPES.md): end-to-end acknowledgement belongs to the wire protocol above this.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import random
import secrets
import socket
import ssl
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.adapters.files import read_regular_file
from edge.adapters.pki import PkiError, TlsFiles, common_name, load_certificate
from edge.core.backoff import Backoff
from edge.core.wire import MAX_BRIDGE_PACKET_BYTES
from edge.errors import EdgeError

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

_LOGGER = logging.getLogger(__name__)

#: How often paho's `loop_misc` runs (keepalive pings and their timeout).
MISC_INTERVAL_S = 1.0
#: A connection that lasted this long resets the reconnect backoff. A broker that accepts and then
#: drops us at once (e.g. two gateways sharing a client id take the session from each other) must
#: not be hammered at the minimum delay.
STABLE_CONNECTION_S = 10.0

#: Logged at every start of a process whose [mqtt] says insecure_plaintext = true (host, port).
INSECURE_PLAINTEXT_WARNING = (
    "INSECURE: MQTT to %s:%d in plain TCP without certificates ([mqtt] insecure_plaintext = "
    "true): anyone on this network can read every message and forge events, acks and rosters. "
    "Use TLS (README, Certificates) outside a lab"
)

# CONNACK reason codes (MQTT 5.0 §3.2.2.2) that retrying with the same settings cannot fix.
_AUTH_REFUSALS = frozenset(
    {0x86, 0x87, 0x8A, 0x8C}
)  # bad user/password, not authorized, banned, auth method
_CONFIG_REFUSALS = frozenset(
    {0x84, 0x85, 0x90, 0x95, 0x9A, 0x9B}
)  # protocol, client id, will topic/size/retain/QoS


class MqttError(EdgeError):
    """Talking to the MQTT broker failed; `reason` says what, where and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MqttNotConnected(MqttError):
    """Not connected right now; nothing was sent. Retry after the next (re)connect."""


class MqttPublishFailed(MqttError):
    """The message may or may not have reached the broker: the connection dropped before its
    PUBACK, the PUBACK did not come in time, or the broker refused it. Resend it from the outbox."""


class MqttConnectFailed(MqttError):
    """One connection attempt failed (refused, timeout, lost); `run()` retries these itself."""


class MqttAuthError(MqttError):
    """The broker refused our credentials or authorisation; `run()` raises it, not retrying."""


class MqttConfigError(MqttError):
    """The broker refused our client id, will or a subscription; `run()` raises it, not retrying."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 8883
    # The CA that signed the broker's certificate, and ours. None: plain TCP, only when a config
    # says `insecure_plaintext = true`. The broker's certificate must name `host`.
    tls: TlsFiles | None = None
    # The CN our certificate must carry (the ACL grants by it): checked before connecting.
    identity: str | None = None
    client_id: str = ""  # empty: a random id, so the session survives reconnects but not a restart
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    # MQTT 5 persistent session (clean_start False) so QoS 1 messages queue while we are away.
    session_expiry_s: int = 7 * 24 * 3600
    connect_timeout_s: float = 10.0
    backoff_min_s: float = 0.2
    backoff_max_s: float = 30.0
    # MQTT 5 Maximum Packet Size (CONNECT property): the broker never sends this client a larger
    # packet (it drops the message for us), so a huge payload costs us nothing. Small by default
    # (events, statuses, receipts, offers); the gateway asks for room for its roster bundle.
    max_packet_bytes: int = MAX_BRIDGE_PACKET_BYTES


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for us when we vanish without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    """One message received on a subscription."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails: paho 2.2 drops such a socket without closing it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the broker's certificate verified against `ca_file`
    and its host name checked, our certificate presented. Raises MqttConfigError naming the file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _ClosingSSLSocket
    for path, what in (
        (files.ca_file, "ca_file (the chain CA certificate)"),
        (files.cert_file, "cert_file (this client's certificate)"),
        (files.key_file, "key_file (this client's private key)"),
    ):
        try:
            read_regular_file(path)  # OpenSSL would block for ever on a FIFO
        except OSError as exc:
            raise MqttConfigError(
                f"[mqtt] {what} {path}: {exc.strerror}; set the path in the [mqtt] section, or "
                "make the certificate (README, Certificates: `edge-gateway provision`, "
                "`cloud-bridge add-gateway --csr`, `edge-gateway install-cert`)"
            ) from None
    # The private key is this client's broker identity: refused where others may read it, as
    # every other key file is (edge/adapters/keystore.py).
    if files.key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MqttConfigError(
            f"[mqtt] key_file {files.key_file} may be read or written by group or others: "
            f"`chmod 600 {files.key_file}` (and make sure nobody else copied it)"
        )
    try:
        context.load_verify_locations(cafile=str(files.ca_file))
    except ssl.SSLError as exc:
        raise MqttConfigError(
            f"[mqtt] ca_file {files.ca_file} is not a PEM CA certificate ({exc.reason})"
        ) from None
    try:
        context.load_cert_chain(str(files.cert_file), str(files.key_file))
    except ssl.SSLError as exc:
        raise MqttConfigError(
            f"[mqtt] cert_file {files.cert_file} and key_file {files.key_file} are not a PEM "
            f"certificate and its private key ({exc.reason}); install the certificate signed for "
            "this key"
        ) from None
    return context


#: A client certificate ending sooner than this is logged at WARNING at every start.
CERT_EXPIRY_WARNING_DAYS = 30


def _check_certificate(files: TlsFiles, identity: str | None) -> None:
    """Refuse a certificate for another identity; warn of one that ends soon."""
    try:
        cert = load_certificate(files.cert_file)
    except PkiError as exc:
        raise MqttConfigError(f"[mqtt] cert_file: {exc.reason}") from None
    cn = common_name(cert.subject)
    if identity is not None and cn != identity:
        raise MqttConfigError(
            f"[mqtt] cert_file {files.cert_file} is for {cn!r}, but this process is "
            f"{identity!r}: the broker's ACL would refuse everything it sends; install the "
            "certificate made for this identity"
        )
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    if left < datetime.timedelta(days=CERT_EXPIRY_WARNING_DAYS):
        _LOGGER.warning(
            "MQTT certificate %s (%s) %s %s: make a new one (README, Certificates)",
            files.cert_file,
            cn,
            "ended" if left.total_seconds() < 0 else "ends",
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        )


# OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED.
_BROKER_CERT_TIME = frozenset({9, 10})


def _tls_failure(exc: ssl.SSLError | str, where: str) -> MqttError:
    """What a failed TLS handshake means: our configuration, our certificate, or a passing fault."""
    reason = exc if isinstance(exc, str) else str(getattr(exc, "reason", None) or exc)
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in _BROKER_CERT_TIME:
        # The broker's certificate is out of its validity (or our clock is): fixed at the broker
        # (or by NTP), not here. Keep retrying, so that every gateway heals itself once it is
        # renewed, and keeps its events meanwhile.
        return MqttConnectFailed(
            f"the broker at {where} presented a certificate that is not valid now "
            f"({exc.verify_message}): renew it (`cloud-bridge ca server-cert`, then restart "
            "Mosquitto), or check this host's clock; retrying, events are kept until then"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MqttConfigError(
            f"the broker at {where} presented a certificate we do not trust "
            f"({exc.verify_message}): check [mqtt] ca_file (the chain CA) and that [mqtt] host is "
            "a name in the broker's certificate (`cloud-bridge ca server-cert --host`)"
        )
    if "ALERT" in reason and any(w in reason for w in ("CERTIFICATE", "UNKNOWN_CA", "ACCESS")):
        return MqttAuthError(
            f"the broker at {where} refused our certificate ({reason}): install a certificate "
            "signed by the broker's CA (`cloud-bridge add-gateway --csr`, then "
            "`edge-gateway install-cert`)"
        )
    if reason in ("WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "RECORD_LAYER_FAILURE"):
        return MqttConfigError(
            f"TLS handshake with {where} failed ({reason}): is this the broker's TLS port "
            "(8883)? Plain TCP needs `insecure_plaintext = true` in [mqtt]"
        )
    return MqttConnectFailed(
        f"TLS handshake with {where} failed: {reason} (if this lasts: is {where} the broker's "
        "TLS listener?)"
    )


class PahoMqtt:
    """One MQTT 5 connection kept up by `run()`; publish with `publish()`, receive via `on_message`.

    `on_message` and `on_disconnect` are called on the event loop, soon after paho parses the packet
    (never inside paho's parser: an exception there would desynchronise its stream). They must not
    block. `on_connect` is awaited after every (re)connect once the subscriptions are in place.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: Callable[[Message], None] | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._client_id = settings.client_id or f"threshold-{secrets.token_hex(6)}"
        self._where = f"{settings.host}:{settings.port}"
        self._tls_context: ssl.SSLContext | None = None  # made when run() starts
        # The last TLS error paho met reading the socket: a broker that refuses our certificate
        # under TLS 1.3 says so in an alert after the handshake, so the connection just closes.
        self._tls_read_error: str | None = None
        self._client = self._build_client(will)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._running = False
        self._run_task: asyncio.Task[Any] | None = None
        self._stop_requested = False
        self._run_finished = asyncio.Event()
        self._wakeup = asyncio.Event()  # cuts the backoff sleep short on disconnect()
        self._connected = False
        self._connected_at: float | None = None
        self._last_failure = "not started"
        self._misc_task: asyncio.Task[None] | None = None
        # Internal futures resolve to a value, never to an exception, so none is left unretrieved:
        # CONNACK → its reason code, or a str saying why the socket closed first.
        self._connack: asyncio.Future[tuple[ReasonCode, bool] | str] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._pending_publish: dict[int, asyncio.Future[str | None]] = {}  # mid → None or failure
        self._pending_subscribe: dict[int, asyncio.Future[list[ReasonCode] | str]] = {}
        self._connect_waiters: set[asyncio.Future[str | None]] = set()

    def _build_client(self, will: Will | None) -> mqtt.Client:
        s = self._settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.connect_timeout = s.connect_timeout_s
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.on_log = self._paho_log
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_subscribe = self._paho_subscribe
        client.on_message = self._paho_message
        client.on_socket_open = self._paho_socket_open
        client.on_socket_close = self._paho_socket_close
        client.on_socket_register_write = self._paho_socket_register_write
        client.on_socket_unregister_write = self._paho_socket_unregister_write
        return client

    @property
    def connected(self) -> bool:
        """True from a successful CONNACK (and SUBACK) until the connection is known to be gone."""
        return self._connected

    @property
    def client_id(self) -> str:
        return self._client_id

    # --- the supervisor -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected until cancelled or `disconnect()`; raises MqttAuthError and
        MqttConfigError (retrying cannot help) and retries everything else with backoff."""
        if self._running:
            raise RuntimeError(f"PahoMqtt({self._client_id}).run() is already running")
        if self._settings.tls is not None and self._tls_context is None:
            # Unreadable or mismatched certificate files: a config error, raised before connecting.
            self._tls_context = tls_context(self._settings.tls)
            _check_certificate(self._settings.tls, self._settings.identity)
            self._client.tls_set_context(self._tls_context)
        self._running = True
        self._run_task = asyncio.current_task()
        self._stop_requested = False
        self._run_finished.clear()
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        backoff = Backoff(self._settings.backoff_min_s, self._settings.backoff_max_s, random.random)
        # One thread of our own for paho's blocking connect(), shut down when run() ends, so no
        # thread outlives the client (the loop's default executor keeps one until the loop closes).
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mqtt-connect")
        outcome: BaseException | None = None
        failed_attempts = 0
        logged_reason: str | None = None
        try:
            while not self._stop_requested:
                graceful = False
                try:
                    reason = await self._connect_and_serve(executor)
                except asyncio.CancelledError:
                    graceful = True
                    raise
                except (MqttAuthError, MqttConfigError):
                    raise
                except MqttError as exc:
                    reason = exc.reason
                except Exception:
                    _LOGGER.exception("MQTT client %s to %s failed", self._client_id, self._where)
                    reason = "unexpected error (traceback above)"
                finally:
                    await self._teardown(graceful=graceful or self._stop_requested)
                if self._stop_requested:
                    break
                if (
                    self._connected_at is not None
                    and time.monotonic() - self._connected_at >= STABLE_CONNECTION_S
                ):
                    backoff.reset()
                if self._connected_at is not None:
                    failed_attempts, logged_reason = 0, None
                self._connected_at = None
                self._last_failure = reason
                delay_s = backoff.next_delay_s()
                # While the broker stays away, say so at WARNING once per new reason, then at DEBUG.
                level = logging.DEBUG if reason == logged_reason else logging.WARNING
                logged_reason = reason
                failed_attempts += 1
                _LOGGER.log(
                    level,
                    "MQTT %s: %s; reconnecting in %.2f s (attempt %d)",
                    self._where,
                    reason,
                    delay_s,
                    failed_attempts,
                )
                await self._sleep_unless_stopped(delay_s)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            self._running = False
            self._run_task = None
            executor.shutdown(wait=True)
            # Closes a socket that a connect we stopped waiting for may still have opened.
            self._hard_close("client stopped")
            reason = "the MQTT client stopped" if outcome is None else f"run() ended: {outcome!r}"
            for waiter in self._connect_waiters:
                if not waiter.done():
                    waiter.set_result(reason)
            self._run_finished.set()

    async def _connect_and_serve(self, executor: concurrent.futures.Executor) -> str:
        """One connection: connect, subscribe, call on_connect, then wait until it is lost (why)."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        self._tls_read_error = None
        # Messages paho still holds belong to futures already failed: callers resend them from their
        # outboxes, so paho must not resend its own copy after the reconnect as well.
        self._client.drop_out_messages()

        await self._open_socket(executor)
        self._misc_task = loop.create_task(self._misc_loop(), name=f"mqtt-misc[{self._client_id}]")

        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                connack = await self._connack
        except TimeoutError as exc:
            raise MqttConnectFailed(
                f"timeout: no CONNACK from {self._where} "
                f"within {self._settings.connect_timeout_s} s"
            ) from exc
        if isinstance(connack, str):
            if self._tls_read_error is not None:
                refused = _tls_failure(self._tls_read_error, self._where)
                if isinstance(refused, MqttAuthError | MqttConfigError):
                    raise refused
            raise MqttConnectFailed(f"{connack} before CONNACK")
        reason_code, session_present = connack
        if reason_code.is_failure:
            self._raise_refused(reason_code)

        await self._subscribe_all()
        self._connected = True
        self._connected_at = time.monotonic()
        _LOGGER.info(
            "MQTT connected to %s as %s (%s session)",
            self._where,
            self._client_id,
            "resumed" if session_present else "new",
        )
        for waiter in self._connect_waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._on_connect is not None:
            await self._on_connect()
        return await self._lost

    async def _open_socket(self, executor: concurrent.futures.Executor) -> None:
        """Run paho's blocking connect() (DNS, TCP, CONNECT queued) on the connect thread."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, self._blocking_connect)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread cannot be interrupted: wait for it (paho bounds it by connect_timeout_s) so
            # that the socket it may still open is closed by the teardown rather than leaked.
            await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved on purpose: we are cancelled, nobody else will
            raise
        except ssl.SSLError as exc:
            raise _tls_failure(exc, self._where) from exc
        except ConnectionRefusedError as exc:
            raise MqttConnectFailed(
                f"refused: nothing accepts connections at {self._where}"
            ) from exc
        except TimeoutError as exc:
            step = "TCP connect or TLS handshake" if self._settings.tls else "TCP connect"
            raise MqttConnectFailed(
                f"timeout: {step} with {self._where} took over "
                f"{self._settings.connect_timeout_s} s (a broker that accepts but does not answer?)"
            ) from exc
        except socket.gaierror as exc:
            raise MqttConnectFailed(
                f"cannot resolve broker host {self._settings.host!r}: {exc}"
            ) from exc
        except OSError as exc:
            raise MqttConnectFailed(f"cannot reach {self._where}: {exc}") from exc
        except ValueError as exc:  # paho's check of host and port
            raise MqttConfigError(f"invalid MQTT broker address {self._where}: {exc}") from exc

    def _blocking_connect(self) -> MQTTErrorCode:
        s = self._settings
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry_s
        properties.MaximumPacketSize = s.max_packet_bytes
        return self._client.connect(
            s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=properties
        )

    def _raise_refused(self, reason_code: ReasonCode) -> None:
        what = f"{self._where} refused the connection of {self._client_id!r}: {reason_code}"
        if reason_code.value in _AUTH_REFUSALS:
            user = self._settings.username
            raise MqttAuthError(
                f"{what} (user {user!r}); check the MQTT username/password and the broker's ACL"
            )
        if reason_code.value in _CONFIG_REFUSALS:
            raise MqttConfigError(f"{what}; check the client id and will settings")
        raise MqttConnectFailed(f"refused: {what}")

    async def _subscribe_all(self) -> None:
        """Subscribe on every connect: a broker restored from an old save may lack the session."""
        if not self._subscriptions:
            return
        loop = asyncio.get_running_loop()
        requests = [(topic, SubscribeOptions(qos=qos)) for topic, qos in self._subscriptions]
        rc, mid = self._client.subscribe(requests)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttConnectFailed(f"lost: SUBSCRIBE not sent ({mqtt.error_string(rc)})")
        future: asyncio.Future[list[ReasonCode] | str] = loop.create_future()
        self._pending_subscribe[mid] = future
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                result = await future
        except TimeoutError as exc:
            raise MqttConnectFailed(
                f"timeout: no SUBACK from {self._where} within {self._settings.connect_timeout_s} s"
            ) from exc
        finally:
            self._pending_subscribe.pop(mid, None)
        if isinstance(result, str):
            raise MqttConnectFailed(f"{result} while subscribing")
        for (topic, _), code in zip(self._subscriptions, result, strict=False):
            if code.is_failure:
                raise MqttConfigError(
                    f"{self._where} refused the subscription to {topic!r} for "
                    f"{self._client_id!r}: {code}; check the topic filter and the broker's ACL"
                )

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            self._client.loop_misc()

    async def _teardown(self, *, graceful: bool) -> None:
        """End the connection attempt: DISCONNECT if asked to, close, fail what is pending."""
        if graceful and self._client.socket() is not None:
            # DISCONNECT with reason 0: the broker discards the will. Written synchronously: the
            # socket is non-blocking and the packet is 2 bytes, so this does not wait.
            self._client.disconnect()
            self._client.loop_write()
        self._hard_close("disconnected by us" if graceful else "connection closed")
        task, self._misc_task = self._misc_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                _LOGGER.error("MQTT keepalive task failed", exc_info=task.exception())

    def _hard_close(self, reason: str) -> None:
        """Close paho's socket, if open, without a DISCONNECT (the broker publishes the will)."""
        if self._client.socket() is not None:
            # paho has no public close(); connect_async() closes the current socket, calling our
            # on_socket_close, and only stores the address for the next connect().
            s = self._settings
            self._client.connect_async(s.host, s.port, s.keepalive_s, clean_start=False)
        self._connection_ended(reason)

    async def _sleep_unless_stopped(self, delay_s: float) -> None:
        self._wakeup.clear()
        try:
            async with asyncio.timeout(delay_s):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    # --- public operations ----------------------------------------------------------------------

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Return once connected (subscriptions in place); raises MqttNotConnected on timeout or if
        `run()` stops meanwhile."""
        if self._connected:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str | None] = loop.create_future()
        self._connect_waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                failure = await waiter
        except TimeoutError as exc:
            raise MqttNotConnected(
                f"not connected to {self._where} within {timeout_s} s "
                f"(last problem: {self._last_failure})"
            ) from exc
        finally:
            self._connect_waiters.discard(waiter)
        if failure is not None:
            raise MqttNotConnected(f"not connected to {self._where}: {failure}")

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        """Publish and return once the broker acknowledged it (QoS 1: PUBACK; QoS 0: written).

        Raises MqttNotConnected at once when not connected (nothing is queued), MqttPublishFailed if
        the connection drops first, no PUBACK comes within `timeout_s`, or the broker refuses it.
        """
        if not self._connected:
            raise MqttNotConnected(
                f"not connected to {self._where}; message to {topic!r} not sent "
                f"(last problem: {self._last_failure})"
            )
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # paho's socket is gone although no on_disconnect reached us yet. paho would keep the
            # message and send it after the next connect: drop it, the caller resends it.
            self._client.drop_out_messages()
            self._connection_ended("socket closed under paho")
            raise MqttNotConnected(f"not connected to {self._where}; message to {topic!r} not sent")
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttPublishFailed(
                f"paho refused the message to {topic!r}: {mqtt.error_string(info.rc)}"
            )
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending_publish[info.mid] = future
        try:
            async with asyncio.timeout(timeout_s):
                failure = await future
        except TimeoutError as exc:
            raise MqttPublishFailed(
                f"no PUBACK from {self._where} for {topic!r} (mid {info.mid}) within {timeout_s} s"
            ) from exc
        finally:
            self._pending_publish.pop(info.mid, None)
        if failure is not None:
            raise MqttPublishFailed(f"message to {topic!r} (mid {info.mid}): {failure}")

    async def disconnect(self) -> None:
        """Disconnect gracefully (DISCONNECT: no will) and make `run()` return."""
        self._stop_requested = True
        self._wakeup.set()
        for future in (self._connack, self._lost):
            if future is not None and not future.done():
                future.set_result("disconnect requested")
        if not self._running:
            return
        if self._run_task is asyncio.current_task():
            return  # called from on_connect, inside run(): it stops when on_connect returns
        await self._run_finished.wait()

    # --- state shared by the callbacks ----------------------------------------------------------

    def _connection_ended(self, reason: str) -> None:
        """The connection is gone (or never came): fail everything that waits for the broker."""
        was_connected = self._connected
        self._connected = False
        if was_connected:
            self._last_failure = reason
        for mid, future in list(self._pending_publish.items()):
            if not future.done():
                future.set_result(f"connection ended before the PUBACK ({reason})")
            self._pending_publish.pop(mid, None)
        for future_sub in self._pending_subscribe.values():
            if not future_sub.done():
                future_sub.set_result(reason)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
        if was_connected:
            self._client.drop_out_messages()
            _LOGGER.info("MQTT disconnected from %s: %s", self._where, reason)
            if self._on_disconnect is not None and self._loop is not None:
                self._loop.call_soon(self._on_disconnect, reason)

    def _in_loop(self, func: Callable[..., object], *args: Any) -> None:
        """Run `func` on the event loop: now if on it, else soon (connect() runs on a thread)."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread_id:
            func(*args)
        else:
            self._loop.call_soon_threadsafe(func, *args)

    # --- paho callbacks (on the loop, inside loop_read/loop_write; the socket ones may be on the
    # connect thread). They must not raise: paho would stop halfway through a packet. ------------

    def _paho_socket_open(self, client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
        # paho leaves Nagle's algorithm on: a small PUBLISH then waits for the broker's delayed ACK
        # (about 40 ms on Linux). Offers are meant to arrive within seconds, events within ms.
        setsockopt = getattr(sock, "setsockopt", None)  # absent on paho's websocket wrapper
        if setsockopt is not None:
            with contextlib.suppress(OSError):
                setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._in_loop(self._watch_socket, sock)

    def _watch_socket(self, sock: SocketLike) -> None:
        assert self._loop is not None
        if self._client.socket() is sock:  # not a socket already closed again
            self._loop.add_reader(sock, self._readable, sock)

    def _readable(self, sock: SocketLike) -> None:
        self._client.loop_read()
        # TLS decrypts whole records: packets already decrypted wait in the SSL object, not in the
        # kernel, so the event loop would not wake for them. Read them now.
        pending = getattr(sock, "pending", None)
        rounds = 0
        while pending is not None and self._client.socket() is sock and pending() > 0:
            self._client.loop_read()
            rounds += 1
            if rounds >= 100_000:  # a guard: every round consumes bytes
                break

    def _paho_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        if buf.startswith("failed to receive on socket") and "SSL" in buf:
            start = buf.find("[SSL: ")
            if start >= 0:
                self._tls_read_error = buf[start + 6 :].split("]", 1)[0]

    def _paho_socket_close(self, client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
        self._in_loop(self._unwatch_socket, sock)

    def _unwatch_socket(self, sock: SocketLike) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _paho_socket_register_write(
        self, client: mqtt.Client, userdata: Any, sock: SocketLike
    ) -> None:
        self._in_loop(self._watch_writable, sock)

    def _watch_writable(self, sock: SocketLike) -> None:
        assert self._loop is not None
        if self._client.socket() is sock:
            self._loop.add_writer(sock, self._client.loop_write)

    def _paho_socket_unregister_write(
        self, client: mqtt.Client, userdata: Any, sock: SocketLike
    ) -> None:
        assert self._loop is not None
        self._in_loop(self._loop.remove_writer, sock)

    def _paho_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((reason_code, flags.session_present))

    def _paho_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            reason = f"lost: the broker sent DISCONNECT ({reason_code})"
        elif reason_code.value == 0:
            reason = "disconnected by us"
        elif reason_code.getName() == "Keep alive timeout":
            reason = f"lost: no reply to keepalive within {self._settings.keepalive_s} s"
        else:
            reason = "lost: the connection closed"
        self._connection_ended(reason)

    def _paho_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        future = self._pending_publish.get(mid)
        if future is None or future.done():
            return  # its publish() timed out or was cancelled
        # 0x10 "No matching subscribers" is a success (MQTT 5.0 §3.4.2.1); >= 0x80 are failures.
        if reason_code.is_failure:
            future.set_result(f"refused by the broker: {reason_code}")
        else:
            future.set_result(None)

    def _paho_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        future = self._pending_subscribe.get(mid)
        if future is not None and not future.done():
            future.set_result(reason_codes)

    def _paho_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is None or self._loop is None:
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            _LOGGER.warning("MQTT dropped a message whose topic is not UTF-8 (mid %d)", msg.mid)
            return
        message = Message(
            topic=topic, payload=bytes(msg.payload), retain=bool(msg.retain), qos=msg.qos
        )
        self._loop.call_soon(self._on_message, message)
